package kubetest

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// logTailBytes is how much of a component's log a failure quotes: enough
// for the last few errors, short enough to read in a test's output.
const logTailBytes = 3000

// daemon is one component process (etcd, kube-apiserver), its output in a
// log file of its own.
type daemon struct {
	name    string
	logFile string
	exited  chan struct{} // closed once the process has exited
	err     error         // how it exited, once exited is closed
}

// startDaemon starts path with args, logging to logFile. The process is
// killed, and waited for, when the test ends, and by the kernel when the
// test binary dies first (a timeout's panic, a SIGKILL).
func startDaemon(t testing.TB, name, path, logFile string, args ...string) *daemon {
	t.Helper()
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("kubetest: starting %s: %v", name, err)
	}
	d := &daemon{name: name, logFile: logFile, exited: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		f.Close()
		close(d.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-d.exited
	})
	return d
}

// exitedErr returns how the process ended, or nil while it runs.
func (d *daemon) exitedErr() error {
	select {
	case <-d.exited:
		return fmt.Errorf("%s exited: %v", d.name, d.err)
	default:
		return nil
	}
}

func (d *daemon) logTail() string {
	b, err := os.ReadFile(d.logFile)
	if err != nil {
		return fmt.Sprintf("--- %s: %v ---\n", d.logFile, err)
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
	}
	return fmt.Sprintf("--- end of %s ---\n%s\n", d.logFile, b)
}
