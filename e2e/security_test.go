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
