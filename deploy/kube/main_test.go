package kube

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

var (
	repoRoot string // the lockex repository
	chartDir string // deploy/helm/lockex
	// runID is in the name of every image, pod and secret this run makes,
	// so that nothing of another run (or of a user) is touched, and what
	// a crashed run left behind can be told apart.
	runID string
)

// TestMain installs what the kit needs with the project's own scripts (a
// no-op when the pinned versions are there) and removes the images the run
// built. A missing tool fails the run; nothing is skipped.
func TestMain(m *testing.M) {
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, "kube kit: setup:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := removeLeftovers(); err != nil {
		fmt.Fprintln(os.Stderr, "kube kit: cleanup:", err)
		code = 1
	}
	if err := removeImages(); err != nil {
		fmt.Fprintln(os.Stderr, "kube kit: cleanup:", err)
		code = 1
	}
	os.Exit(code)
}

func setup() error {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	chartDir = filepath.Join(repoRoot, "deploy", "helm", "lockex")
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	runID = hex.EncodeToString(b)

	for _, script := range []string{"install-deploy-tools.sh", "install-k8s-tools.sh"} {
		path := filepath.Join(repoRoot, "scripts", script)
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(path)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w\n%s", path, err, stderr.String())
		}
		bin := strings.TrimSpace(stdout.String())
		os.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	for _, tool := range []string{"podman", "helm", "kube-apiserver", "etcd", "ko", "docker-registry", busybox} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing after scripts/install-k8s-tools.sh: %w", tool, err)
		}
	}
	return nil
}

// run runs a tool and returns its stdout; a failure fails the test with
// the tool's stderr.
func run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runErr runs a tool and returns its stdout, or an error that quotes the
// command and its stderr.
func runErr(name string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// removeLeftovers removes any pod, container or podman secret of this run
// that a test left behind, and reports them: each test removes its own.
func removeLeftovers() error {
	var left []string
	for _, kind := range []string{"pod", "container", "secret"} {
		args := []string{kind, "ls", "--format", "{{.Name}}"}
		if kind == "container" {
			args = []string{kind, "ls", "--all", "--format", "{{.Names}}"}
		}
		out, err := runErr("podman", args...)
		if err != nil {
			return err
		}
		for _, name := range strings.Fields(string(out)) {
			if !strings.Contains(name, runID) {
				continue
			}
			left = append(left, kind+" "+name)
			rm := []string{kind, "rm", "--force", name}
			if kind == "secret" {
				rm = []string{kind, "rm", name}
			}
			exec.Command("podman", rm...).Run()
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("tests left behind (now removed): %s", strings.Join(left, ", "))
	}
	return nil
}
