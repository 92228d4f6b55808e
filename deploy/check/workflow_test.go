package check

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// releaseWorkflow cannot run here (it pushes to a registry with the forge's
// credentials); it is linted and checked against the chart instead.
var releaseWorkflow = filepath.Join(".github", "workflows", "release.yaml")

// TestReleaseWorkflowLint: the pinned actionlint accepts the release
// workflow: its syntax, expressions, permissions, action inputs, and (with
// shellcheck) the shell scripts of its run steps.
func TestReleaseWorkflowLint(t *testing.T) {
	for _, tool := range []string{"actionlint", "shellcheck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (scripts/install-deploy-tools.sh installs it): %v", tool, err)
		}
	}
	shellcheck, _ := exec.LookPath("shellcheck")
	cmd := exec.Command("actionlint", "-no-color", "-shellcheck", shellcheck, releaseWorkflow)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("actionlint %s: %v\n%s", releaseWorkflow, err, out)
	}
}

// TestReleaseWorkflowPublishesTheDefaults: what the release pushes is what
// the chart and the kustomize base pull by default (the image at the chart's
// appVersion, the chart under its OCI repository), and every action is
// pinned by a full commit SHA with the tag it was in a comment.
func TestReleaseWorkflowPublishesTheDefaults(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, releaseWorkflow))
	if err != nil {
		t.Fatal(err)
	}
	var wf struct {
		Jobs map[string]struct {
			Env map[string]string `json:"env"`
		} `json:"jobs"`
	}
	if err := yaml.Unmarshal(raw, &wf); err != nil {
		t.Fatalf("%s: %v", releaseWorkflow, err)
	}
	env := wf.Jobs["release"].Env
	if env == nil {
		t.Fatalf("%s: no job \"release\" with an env", releaseWorkflow)
	}

	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &chart); err != nil {
		t.Fatal(err)
	}
	want := env["IMAGE_REPO"] + ":" + chart.AppVersion
	if env["KO_DOCKER_REPO"] != env["IMAGE_REPO"] {
		t.Errorf("ko pushes to %q, the workflow signs %q", env["KO_DOCKER_REPO"], env["IMAGE_REPO"])
	}
	defaults := map[string]*appsv1.Deployment{
		"chart":          only[*appsv1.Deployment](t, helmTemplate(t, "rel", "ns", "--values", filepath.Join(chartDir, "ci", "singleton-values.yaml"))),
		"kustomize base": only[*appsv1.Deployment](t, kustomizeBuild(t, "base")),
	}
	for name, dep := range defaults {
		for _, c := range dep.Spec.Template.Spec.InitContainers {
			if c.Name == crashLoopInit && c.Image != want {
				t.Errorf("%s pulls lockex from %q by default; the release publishes %q", name, c.Image, want)
			}
		}
	}
	if got, want := env["CHART_REPO"], "oci://ghcr.io/lockex/charts"; got != want {
		t.Errorf("the chart is pushed to %q, want %q (where the README says it is)", got, want)
	}

	pinned := regexp.MustCompile(`^\s*(- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d[\w.-]*$`)
	uses := 0
	for line := range strings.Lines(string(raw)) {
		line = strings.TrimRight(line, "\n")
		if !strings.Contains(line, "uses:") || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		uses++
		if !pinned.MatchString(line) {
			t.Errorf("%s: %q: want owner/repo@<full commit SHA> # <tag>", releaseWorkflow, strings.TrimSpace(line))
		}
	}
	if uses == 0 {
		t.Errorf("%s uses no actions", releaseWorkflow)
	}
}
