package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// TestReadmeByHand: the README's Deployment wrapped by hand decodes
// strictly, wraps as the chart does, and the real lockex accepts it.
func TestReadmeByHand(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "### Wrapping an existing Deployment by hand")
	_, rest, ok2 := strings.Cut(rest, "```yaml\n")
	block, _, ok3 := strings.Cut(rest, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README.md: no yaml block under \"### Wrapping an existing Deployment by hand\"")
	}
	js, err := yaml.YAMLToJSONStrict([]byte("apiVersion: apps/v1\nkind: Deployment\n" + block))
	if err != nil {
		t.Fatalf("README example: %v", err)
	}
	var dep appsv1.Deployment
	if strict, err := kjson.UnmarshalStrict(js, &dep); err != nil || len(strict) > 0 {
		t.Fatalf("README example: %v %v", err, strict)
	}
	main := &dep.Spec.Template.Spec.Containers[0]
	checkPod(t, &dep.Spec.Template, podWant{wrapped: true, workload: main.Args, sketch: true})
	checkIdentity(t, &dep.Spec.Template.Spec, main)
	r := newPodRun(t, &dep.Spec.Template.Spec, nil, nil)
	r.install()
	if code, out := r.validate(); code != 0 || !strings.HasPrefix(out, "lockex ") {
		t.Errorf("lockex rejects the README example: exit %d\n%s", code, out)
	}
}
