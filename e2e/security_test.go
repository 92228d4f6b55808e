package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/lockex/lockex/internal/zktest"
)

// password is unlikely to appear anywhere by chance.
const password = "pw-7f3a9c1e-secret"

// TestDigestAuth: with the right password lockex holds the lock, its nodes
// are creator-only (an unauthenticated client can neither delete them nor,
// without --zk-acl-world-read, read them), and the password appears
// nowhere: not in any output (the debug log included), /metrics, --status,
// the process title or the workload's environment. A wrong password is 69.
func TestDigestAuth(t *testing.T) {
	zkc := startZK(t)
	// The lock path's parent is for the lockex user alone, as an operator
	// would set it up.
	admin := zkClient(t, zkc.Hosts())
	if err := admin.AddAuth("digest", []byte("lockex:"+password)); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Create("/lockex", nil, 0, zk.DigestACL(zk.PermAll, "lockex", password)); err != nil {
		t.Fatal(err)
	}
	anon := zkClient(t, zkc.Hosts())
	auth := []string{"-z", zkc.Hosts(), "--zk-user", "lockex", "--log-level", "debug"}
	var output strings.Builder // everything lockex printed or served, for the grep

	for _, worldRead := range []bool{false, true} {
		name := map[bool]string{false: "creator-only", true: "world-read"}[worldRead]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"-i", name, "--zk-password", password}, auth...)
			if worldRead {
				args = append(args, "--zk-acl-world-read")
			}
			lx := startObserved(t, []string{"D=" + dir}, append(args, "--", "sh", "-c", `
env > "$D/env"
tr '\0' ' ' < /proc/$PPID/cmdline > "$D/cmdline"
echo "$LOCKEX_LOCK_NODE" > "$D/node"
exec sleep 1000`)...)
			node := waitFile(t, filepath.Join(dir, "node"))

			if err := anon.Delete(node, -1); !errors.Is(err, zk.ErrNoAuth) {
				t.Errorf("unauthenticated delete of %s: %v, want %v", node, err, zk.ErrNoAuth)
			}
			_, _, err := anon.Get(node)
			if worldRead && err != nil {
				t.Errorf("unauthenticated read with --zk-acl-world-read: %v", err)
			}
			if !worldRead && !errors.Is(err, zk.ErrNoAuth) {
				t.Errorf("unauthenticated read: %v, want %v", err, zk.ErrNoAuth)
			}

			cmdline := waitFile(t, filepath.Join(dir, "cmdline"))
			if !strings.Contains(cmdline, "--zk-password") || strings.Contains(cmdline, password) {
				t.Errorf("process title %q: want --zk-password without the password", cmdline)
			}
			output.WriteString(cmdline)
			env, _ := os.ReadFile(filepath.Join(dir, "env"))
			output.Write(env)
			_, metrics := lx.get(t, "/metrics")
			output.WriteString(metrics)

			r := lockex(t, []string{"LOCKEX_ZK_PASSWORD=" + password}, append([]string{"-i", name, "--status", "--output", "json"}, auth...)...)
			if r.code != 0 || !strings.Contains(r.stdout, `"held": true`) {
				t.Errorf("--status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			output.WriteString(r.stdout + r.stderr)

			_ = lx.cmd.Process.Signal(syscall.SIGTERM)
			if code := lx.wait(t, 10*time.Second); code != 143 {
				t.Errorf("exit %d after SIGTERM, want 143", code)
			}
			output.WriteString(lx.stderr.String())
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		r := lockex(t, []string{"LOCKEX_ZK_PASSWORD=wrong-" + password}, append(append([]string{"-i", "wrong"}, auth...), "--", "true")...)
		if r.code != 69 || !strings.Contains(r.stderr, "not authorized") {
			t.Errorf("exit %d, want 69 saying not authorized; log:\n%s", r.code, r.stderr)
		}
		output.WriteString(r.stdout + r.stderr)
		if ok, _, err := admin.Exists("/lockex/wrong"); err != nil || ok {
			t.Errorf("/lockex/wrong exists: %v (%v); a refused run must leave nothing", ok, err)
		}
	})

	t.Run("password file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(file, []byte(password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := lockex(t, nil, append(append([]string{"-i", "file", "--zk-password-file", file}, auth...), "--", "true")...)
		if r.code != 0 {
			t.Errorf("exit %d; log:\n%s", r.code, r.stderr)
		}
		output.WriteString(r.stdout + r.stderr)
	})

	if strings.Contains(output.String(), password) {
		t.Errorf("the password appears in lockex's output:\n%s", output.String())
	}
	if !strings.Contains(output.String(), "lock acquired") {
		t.Error("the grep saw no log at all")
	}
}

// TestTLS: lockex reaches ZooKeeper's secure client port when the server's
// certificate verifies against --zk-tls-ca, and with a client certificate
// when the server demands one; an untrusted server is 69 at once, naming
// the reason, and a missing client certificate is 69 too.
func TestTLS(t *testing.T) {
	for _, clientAuth := range []string{"none", "need"} {
		t.Run("clientAuth "+clientAuth, func(t *testing.T) {
			zkc := zktest.Start(t, zktest.TLS(clientAuth), zktest.SessionTimeouts(400*time.Millisecond, 20*time.Second))
			certs := zkc.TLS
			base := []string{"-z", zkc.SecureHosts(), "-i", "tls", "-T", "5s"}
			client := []string{"--zk-tls-cert", certs.ClientCert, "--zk-tls-key", certs.ClientKey}
			var output strings.Builder
			run := func(flags ...string) result {
				r := lockex(t, nil, append(append(base, flags...), "--", "true")...)
				output.WriteString(r.stdout + r.stderr)
				return r
			}

			var r result
			if clientAuth == "need" {
				r = run(append([]string{"--zk-tls-ca", certs.CA}, client...)...)
			} else {
				r = run("--zk-tls-ca", certs.CA)
			}
			if r.code != 0 {
				t.Errorf("trusted: exit %d; log:\n%s", r.code, r.stderr)
			}

			r = run(append([]string{"--zk-tls-ca", certs.OtherCA}, client...)...)
			if r.code != 69 || !strings.Contains(r.stderr, "certificate signed by unknown authority") || r.took > 3*time.Second {
				t.Errorf("untrusted server: exit %d after %s, want 69 at once naming the reason; log:\n%s", r.code, r.took, r.stderr)
			}

			if clientAuth == "need" {
				r = run("--zk-tls-ca", certs.CA)
				if r.code != 69 || !strings.Contains(r.stderr, "certificate") {
					t.Errorf("no client certificate: exit %d, want 69 naming the certificate; log:\n%s", r.code, r.stderr)
				}
			}
			key, err := os.ReadFile(certs.ClientKey)
			if err != nil {
				t.Fatal(err)
			}
			secret := strings.Split(strings.TrimSpace(string(key)), "\n")[1] // a line of the key itself
			if strings.Contains(output.String(), secret) {
				t.Error("the client key appears in lockex's output")
			}
		})
	}
}
