package kube

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestDockerfileImage checks the image the Dockerfile builds by running
// it; see checkLockexImage.
func TestDockerfileImage(t *testing.T) {
	checkLockexImage(t, images(t).lockex, "/lockex")
}

// TestKoImage checks the image ko builds from .ko.yaml, as the release
// publishes it, the same way: only the binary's path differs.
func TestKoImage(t *testing.T) {
	checkLockexImage(t, images(t).ko, "/ko-app/lockex")
}

// checkLockexImage runs a lockex image: it reports the version it was
// built with, runs as a numeric non-root user (runAsNonRoot can check only
// a number), its entrypoint is the binary at path and nothing else, that
// binary is byte for byte the one make build makes with the same VERSION,
// and it installs itself the way the chart's init container asks it to.
func checkLockexImage(t *testing.T, img, path string) {
	out := string(run(t, "podman", "run", "--rm", "--network", "host", img, "--version"))
	if !strings.HasPrefix(out, "lockex "+testVersion+" ") {
		t.Errorf("%s --version: %q, want lockex %s", img, out, testVersion)
	}

	var cfg []struct {
		Config struct {
			User       string
			Entrypoint []string
			Cmd        []string
		}
	}
	if err := json.Unmarshal(run(t, "podman", "image", "inspect", img), &cfg); err != nil || len(cfg) != 1 {
		t.Fatalf("podman image inspect %s: %v", img, err)
	}
	c := cfg[0].Config
	uid, _, _ := strings.Cut(c.User, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("image user %q, want a numeric non-root uid", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{path}) || len(c.Cmd) != 0 {
		t.Errorf("entrypoint %q, cmd %q: want the binary alone, [%q], so that the chart's args reach it", c.Entrypoint, c.Cmd, path)
	}

	dir := t.TempDir()
	fromImage := filepath.Join(dir, "from-image")
	ctr := strings.TrimSpace(string(run(t, "podman", "create", img)))
	_, cpErr := runErr("podman", "cp", ctr+":"+path, fromImage)
	run(t, "podman", "rm", ctr)
	if cpErr != nil {
		t.Fatal(cpErr)
	}
	if made := makeBuild(t, filepath.Join(dir, "make-build")); !sameFile(t, fromImage, made) {
		t.Errorf("the image's %s differs from make build's binary (VERSION=%s): the image ships another build", path, testVersion)
	}

	// As the chart's init container runs it: the image's own user, a
	// read-only root, no capabilities, into an emptyDir.
	install := filepath.Join(dir, "install")
	if err := os.Mkdir(install, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(install, 0o777) // an emptyDir is world-writable; the umask is not
	run(t, "podman", "run", "--rm", "--network", "host", "--read-only", "--read-only-tmpfs=false", "--cap-drop", "ALL",
		"--security-opt", "no-new-privileges", "-v", install+":/install", img, "--install", "/install")
	st, err := os.Stat(filepath.Join(install, "lockex"))
	if err != nil {
		t.Fatalf("after --install /install: %v", err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("installed lockex has mode %v, want 0755 (any uid may run it)", st.Mode().Perm())
	}
	if v := string(run(t, filepath.Join(install, "lockex"), "--version")); !strings.HasPrefix(v, "lockex "+testVersion+" ") {
		t.Errorf("the installed copy's --version: %q", v)
	}
}

// makeBuild runs make build's recipe, as make expands it with the test's
// VERSION, writing the binary to out instead of the repository's bin/.
func makeBuild(t *testing.T, out string) string {
	t.Helper()
	recipe := strings.TrimSpace(string(run(t, "make", "-s", "-n", "--no-print-directory", "-C", repoRoot, "build", "VERSION="+testVersion)))
	const target = " -o bin/lockex "
	if strings.Count(recipe, target) != 1 {
		t.Fatalf("make -n build: %q: want one %q to redirect", recipe, strings.TrimSpace(target))
	}
	cmd := exec.Command("sh", "-c", strings.Replace(recipe, target, " -o '"+out+"' ", 1))
	cmd.Dir = repoRoot
	// The Dockerfile's build context has no .git, so its go build stamps no
	// VCS information; make build in a checkout would, where GOFLAGS allows.
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build's recipe: %v\n%s", err, b)
	}
	return out
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}
