package check

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"golang.org/x/mod/modfile"
	"sigs.k8s.io/yaml"
)

// The image itself is built from the Dockerfile and run by the Kubernetes
// kit (deploy/kube, TestDockerfileImage), with its two base images replaced
// by stand-ins made there, since no registry answers here. What is left to
// check without a build: BuildKit's own lint, and the base images the
// Dockerfile names by default.

// testVersion is the version make build stamps in for these checks.
const testVersion = "v0.0.0-deploy-check"

// dockerfileArgs lints the Dockerfile with BuildKit's parser and linter
// (what docker build --check reports fails the test) and returns its
// global ARGs' defaults.
func dockerfileArgs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile: %s", w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, _ []parser.Range) {
		t.Errorf("Dockerfile lint %s: %s", rule, msg)
	}})
	_, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	args := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				args[kv.Key] = *kv.Value
			}
		}
	}
	return args
}

// TestDockerfileDefaults: the Go image the build stage names by default is
// new enough for go.mod, and the runtime base is distroless static.
func TestDockerfileDefaults(t *testing.T) {
	args := dockerfileArgs(t)
	goImage := args["GO_IMAGE"]
	_, tag, _ := strings.Cut(goImage, ":")
	imageGo, _, _ := strings.Cut(tag, "-")
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.ParseLax("go.mod", gomod, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !goAtLeast(imageGo, mf.Go.Version) {
		t.Errorf("GO_IMAGE %q: Go %q, but go.mod says go %s", goImage, imageGo, mf.Go.Version)
	}
	if b := args["BASE_IMAGE"]; !strings.Contains(b, "distroless/static") {
		t.Errorf("BASE_IMAGE %q, want a distroless static image", b)
	}
}

// goAtLeast reports whether Go version have (1.26) covers want (1.26.0).
func goAtLeast(have, want string) bool {
	h, w := strings.Split(have, "."), strings.Split(want, ".")
	for i := 0; i < len(w); i++ {
		if i >= len(h) {
			return true // "1.26" is the newest 1.26.x
		}
		hn, err1 := strconv.Atoi(h[i])
		wn, err2 := strconv.Atoi(w[i])
		if err1 != nil || err2 != nil {
			return false
		}
		if hn != wn {
			return hn > wn
		}
	}
	return true
}

func splitAssignments(words []string) (map[string]string, []string) {
	env := map[string]string{}
	for len(words) > 0 {
		k, v, ok := strings.Cut(words[0], "=")
		if !ok || strings.HasPrefix(k, "-") {
			break
		}
		env[k] = v
		words = words[1:]
	}
	return env, words
}

// makeBuild is make build's recipe, as make itself expands it.
func makeBuild(t *testing.T) (env map[string]string, argv []string) {
	t.Helper()
	out := run(t, "make", "-s", "-n", "--no-print-directory", "-C", repoRoot, "build", "VERSION="+testVersion, "GO=go")
	words, err := shell.NewLex('\\').ProcessWords(strings.TrimSpace(string(out)), shell.EnvsFromSlice(nil))
	if err != nil {
		t.Fatalf("make -n build: %q: %v", out, err)
	}
	return splitAssignments(words)
}

// without drops "-o file" from a go build argv.
func withoutOutput(argv []string) (rest []string, out string) {
	i := slices.Index(argv, "-o")
	if i < 0 || i+1 >= len(argv) {
		return argv, ""
	}
	return slices.Concat(argv[:i], argv[i+2:]), argv[i+1]
}

// koConfig is the part of .ko.yaml these checks read.
type koConfig struct {
	DefaultBaseImage string   `json:"defaultBaseImage"`
	DefaultPlatforms []string `json:"defaultPlatforms"`
	Builds           []struct {
		ID      string   `json:"id"`
		Dir     string   `json:"dir"`
		Main    string   `json:"main"`
		Env     []string `json:"env"`
		Flags   []string `json:"flags"`
		Ldflags []string `json:"ldflags"`
	} `json:"builds"`
}

// TestKoConfig: ko builds the binary make build builds, with the same
// flags and environment, on the Dockerfile's runtime base.
func TestKoConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, ".ko.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ko koConfig
	if err := yaml.UnmarshalStrict(b, &ko); err != nil {
		t.Fatalf(".ko.yaml: %v", err)
	}
	if len(ko.Builds) != 1 {
		t.Fatalf(".ko.yaml: %d builds, want 1", len(ko.Builds))
	}
	kb := ko.Builds[0]
	menv, margv := makeBuild(t)
	margv, _ = withoutOutput(margv)
	if pkg := margv[len(margv)-1]; kb.Main != pkg {
		t.Errorf(".ko.yaml main %q, make build builds %q", kb.Main, pkg)
	}
	for k, v := range menv {
		if !slices.Contains(kb.Env, k+"="+v) {
			t.Errorf(".ko.yaml env %q lacks make build's %s=%s", kb.Env, k, v)
		}
	}
	// make build's flags: -ldflags X moves to ldflags, the rest to flags.
	var wantFlags []string
	var wantLd string
	for i := 2; i < len(margv)-1; i++ {
		if margv[i] == "-ldflags" {
			wantLd = margv[i+1]
			i++
			continue
		}
		wantFlags = append(wantFlags, margv[i])
	}
	if !slices.Equal(kb.Flags, wantFlags) {
		t.Errorf(".ko.yaml flags %q, make build %q", kb.Flags, wantFlags)
	}
	ld := strings.ReplaceAll(strings.Join(kb.Ldflags, " "), "{{.Env.VERSION}}", testVersion)
	if ld != wantLd {
		t.Errorf(".ko.yaml ldflags (VERSION=%s) %q, make build %q", testVersion, ld, wantLd)
	}
	if want := dockerfileArgs(t)["BASE_IMAGE"]; ko.DefaultBaseImage != want {
		t.Errorf(".ko.yaml defaultBaseImage %q, the Dockerfile's runtime base %q", ko.DefaultBaseImage, want)
	}
}
