package kube

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// buildKo builds the image .ko.yaml describes with ko itself, as the
// release builds it, and loads it into podman as ref. ko reads its base
// image from a registry and pushes what it builds to one; none answers
// here, so both go through a registry (Debian's docker-registry) that runs
// on 127.0.0.1 for the build only: the base is the stand-in for distroless
// static:nonroot (KO_DEFAULTBASEIMAGE overrides .ko.yaml's), for this
// machine's platform alone. Everything else is .ko.yaml's.
func buildKo(ref, base string) (err error) {
	dir, err := os.MkdirTemp("", "lockex-kube-ko-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	port, err := freeLoopbackPort()
	if err != nil {
		return err
	}
	registry := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(dir, "registry.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: %s}}
http: {addr: %s}
`, filepath.Join(dir, "storage"), registry)), 0o644); err != nil {
		return err
	}
	log, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	reg := exec.Command("docker-registry", "serve", cfg)
	reg.Stdout, reg.Stderr = log, log
	reg.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := reg.Start(); err != nil {
		return fmt.Errorf("starting docker-registry: %w", err)
	}
	defer func() {
		reg.Process.Kill()
		reg.Wait()
	}()
	if err := waitHTTP("http://"+registry+"/v2/", 30*time.Second); err != nil {
		b, _ := os.ReadFile(log.Name())
		return fmt.Errorf("docker-registry on %s: %w\n%s", registry, err, b)
	}

	pushedBase := registry + "/static:nonroot"
	if _, err := runErr("podman", "push", "--tls-verify=false", base, pushedBase); err != nil {
		return err
	}
	ko := exec.Command("ko", "build", "--bare", "--platform=linux/"+runtime.GOARCH, "--tags="+testVersion, "--sbom=none", "./cmd/lockex")
	ko.Dir = repoRoot
	ko.Env = append(os.Environ(),
		"KO_DOCKER_REPO="+registry+"/lockex", "KO_DEFAULTBASEIMAGE="+pushedBase, "KO_CONFIG_PATH="+repoRoot,
		"VERSION="+testVersion,
		// As in TestDockerfileImage: no VCS stamp, so that the binary can
		// be compared with make build's.
		"GOFLAGS=-buildvcs=false")
	var stdout, stderr bytes.Buffer
	ko.Stdout, ko.Stderr = &stdout, &stderr
	if err := ko.Run(); err != nil {
		return fmt.Errorf("ko build: %w\n%s", err, stderr.String())
	}
	built := strings.TrimSpace(stdout.String())
	id, err := runErr("podman", "pull", "--quiet", "--tls-verify=false", built)
	if err != nil {
		return err
	}
	// Removed by its id, with both its names, when the run ends.
	madeMu.Lock()
	madeImages = append(madeImages, strings.TrimSpace(string(id)))
	madeMu.Unlock()
	_, err = runErr("podman", "tag", built, ref)
	return err
}

func waitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
