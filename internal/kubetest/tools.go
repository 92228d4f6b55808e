package kubetest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// modulePath names the repository root's module. deploy/ is a module of
// its own inside the repository, so the nearest go.mod above a test's
// directory is not always the root's.
const modulePath = "github.com/lockex/lockex"

// installScript installs, at pinned versions, every tool a control plane
// runs; it is a no-op once they are there.
const installScript = "scripts/install-k8s-tools.sh"

var (
	installOnce sync.Once
	installBin  string // the directory the script prints, for tools it built
	installErr  error
)

// toolPath returns the path of a control-plane tool, having the project's
// install script install it first (once per test binary). The script's own
// bin directory wins over PATH, so that the pinned build runs even where
// another version is installed.
func toolPath(t testing.TB, name string) string {
	t.Helper()
	installOnce.Do(func() { installBin, installErr = install() })
	if installErr != nil {
		t.Fatalf("kubetest: %v", installErr)
	}
	if p, err := exec.LookPath(filepath.Join(installBin, name)); err == nil {
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("kubetest: %s is missing after %s: %v", name, installScript, err)
	}
	return p
}

func install() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, installScript)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(script)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s (it installs etcd and kube-apiserver): %w\n%s", script, err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// repoRoot finds the repository from the test's working directory, which
// go test sets to the package's directory (e2e/, deploy/kube/, ...).
// Unlike the source file's path from runtime.Caller, it holds under
// -trimpath too.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if isModuleRoot(filepath.Join(d, "go.mod")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod of module %s in %s or above", modulePath, dir)
		}
	}
}

func isModuleRoot(goMod string) bool {
	f, err := os.Open(goMod)
	if err != nil {
		return false
	}
	defer f.Close()
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		if fields := strings.Fields(lines.Text()); len(fields) == 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == modulePath
		}
	}
	return false
}
