package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReviewCtrlZPastTheSession (review): Ctrl-Z stops the workload and
// lockex as one job (TestTerminalJobControl). Left stopped longer than the
// session timeout, the session expires and the next holder starts. fg
// continues lockex, which must not continue its workload: the lock it ran
// under is gone, and a newer holder runs. Its workload may never write
// again once the newer one has started.
//
// Before the supervisor decided whether to continue the workload, lockex
// continued it as soon as it was continued itself (proc.suspend), and
// noticed the loss and killed it 2-8ms later: a workload that acts the
// moment it runs again (this one, a bash loop with no fork) wrote in
// those milliseconds in 1 run of 15.
func TestReviewCtrlZPastTheSession(t *testing.T) {
	zk := startZK(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "log")
	script := filepath.Join(dir, "a.sh")
	// As ticker, without the sleep or a fork (bash's clock): a record
	// the moment it runs again.
	tick := fmt.Sprintf(`while :; do echo "tick ${EPOCHREALTIME/./}000 a $LOCKEX_FENCING_TOKEN" >> %s; done`, logPath)
	if err := os.WriteFile(script, []byte(tick), 0o644); err != nil {
		t.Fatal(err)
	}
	term, shell := startOnTerminal(t, []string{"PS1=$ ", "HISTFILE=/dev/null"}, "bash", "--norc", "--noprofile", "-i")
	term.expect(t, "$ ")
	term.typ(t, fmt.Sprintf("%s %s bash %s\n", lockexBin, strings.Join(lossArgs(zk.Hosts(), "tty-freeze", nil), " "), script))
	waitRecord(t, logPath, "a")
	term.waitForeground(t, "bash")

	term.typ(t, "\x1a")
	term.expect(t, "Stopped")
	b := startLockex(t, nil, lossArgs(zk.Hosts(), "tty-freeze", ticker(logPath, "b", 3*time.Second, false))...)
	waitRecord(t, logPath, "b")

	term.typ(t, "fg\n")
	term.typ(t, "echo exit:$?\n")
	term.expect(t, "exit:")
	if code := b.wait(t, 20*time.Second); code != 0 {
		t.Errorf("b exit %d; log:\n%s", code, b.stderr)
	}
	mustBeOneAtATime(t, logPath)
	t.Logf("the terminal shows:\n%s", term)
	term.typ(t, "exit\n")
	shell.wait(t, 10*time.Second)
}
