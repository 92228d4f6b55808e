package zktest

import "syscall"

// sysProcAttr has the kernel kill the JVM when the test binary dies, which
// covers what t.Cleanup cannot: a test timeout's panic, or a SIGKILL. (The
// signal follows the death of the OS thread that started the JVM, see
// go.dev/issue/27505; Go ends a thread only when a goroutine exits while
// locked to it, which tests hardly do.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
