package check

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// scheme knows every kind the chart and the kustomizations may emit; any
// other kind is an error.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme, rbacv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// manifests are the objects of one rendering, decoded.
type manifests []runtime.Object

// decodeStrict splits a multi-document YAML stream and decodes each object
// into its Go API type, as the API server would, but stricter: an unknown or
// duplicate field, a field in the wrong case, a value of the wrong type or
// an unknown kind is an error.
func decodeStrict(t *testing.T, stream []byte) manifests {
	t.Helper()
	var objs manifests
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("split YAML: %v", err)
		}
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			t.Fatalf("YAML: %v\n%s", err, doc)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue // only comments
		}
		var tm struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
			t.Fatalf("apiVersion and kind: %v\n%s", err, doc)
		}
		gv, err := schema.ParseGroupVersion(tm.APIVersion)
		if err != nil {
			t.Fatalf("apiVersion %q: %v", tm.APIVersion, err)
		}
		obj, err := scheme.New(gv.WithKind(tm.Kind))
		if err != nil {
			t.Fatalf("%s %s: not a kind these checks know: %v\n%s", tm.APIVersion, tm.Kind, err, doc)
		}
		strict, err := kjson.UnmarshalStrict(js, obj)
		if err != nil {
			t.Fatalf("decode %s: %v\n%s", tm.Kind, err, doc)
		}
		if len(strict) > 0 {
			t.Fatalf("decode %s strictly: %v\n%s", tm.Kind, errors.Join(strict...), doc)
		}
		objs = append(objs, obj)
	}
	if len(objs) == 0 {
		t.Fatal("no objects rendered")
	}
	return objs
}

// kinds lists the objects' kinds, in order, for comparing with a want list.
func (ms manifests) kinds() []string {
	var ks []string
	for _, o := range ms {
		ks = append(ks, o.GetObjectKind().GroupVersionKind().Kind)
	}
	return ks
}

// only returns the single object of type T; none or several fail the test.
func only[T runtime.Object](t *testing.T, ms manifests) T {
	t.Helper()
	found := all[T](ms)
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T, got %d (kinds: %v)", zero, len(found), ms.kinds())
	}
	return found[0]
}

func all[T runtime.Object](ms manifests) []T {
	var found []T
	for _, o := range ms {
		if v, ok := o.(T); ok {
			found = append(found, v)
		}
	}
	return found
}
