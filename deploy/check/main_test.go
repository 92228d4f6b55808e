package check

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Paths the tests share, set once by TestMain.
var (
	repoRoot  string // the lockex repository
	chartDir  string // deploy/helm/lockex
	kustDir   string // deploy/kustomize
	lockexBin string // lockex built from this repository, as make build builds it
)

// TestMain installs helm and kustomize with the project's own script (a
// no-op when the pinned versions are there), puts them first on PATH, and
// builds the lockex binary that the rendered manifests are run against.
func TestMain(m *testing.M) {
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, "deploy checks: setup:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(filepath.Dir(lockexBin))
	os.Exit(code)
}

func setup() error {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	chartDir = filepath.Join(repoRoot, "deploy", "helm", "lockex")
	kustDir = filepath.Join(repoRoot, "deploy", "kustomize")

	script := filepath.Join(repoRoot, "scripts", "install-deploy-tools.sh")
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(script)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", script, err, stderr.String())
	}
	bin := strings.TrimSpace(stdout.String())
	os.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	dir, err := os.MkdirTemp("", "lockex-deploy-check-")
	if err != nil {
		return err
	}
	lockexBin = filepath.Join(dir, "lockex")
	build := exec.Command("go", "build", "-trimpath", "-o", lockexBin, "./cmd/lockex")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/lockex: %w\n%s", err, out)
	}
	return nil
}

// run runs a tool and returns its stdout; a failure fails the test with
// the tool's stderr.
func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// runFail runs a tool that must fail, and returns its stderr.
func runFail(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatalf("%s %s: succeeded, want an error", name, strings.Join(args, " "))
	}
	return stderr.String()
}
