package kubetest

import "syscall"

// sysProcAttr has the kernel kill a component when the test binary dies,
// which covers what t.Cleanup cannot: a test timeout's panic, or a SIGKILL.
// (The signal follows the death of the OS thread that started it, see
// go.dev/issue/27505; Go ends a thread only when a goroutine exits while
// locked to it, which tests hardly do.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
