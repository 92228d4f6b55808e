package proc

import (
	"errors"
	"os"
	"strconv"
	"syscall"
)

// stderrFd is the descriptor the workload and the guardian get as their
// stderr: lockex's own, unless SplitStderr set it aside.
var stderrFd = 2

// SplitStderr keeps lockex from hanging on a stderr that nobody drains as
// it crashes. A Go panic, a fatal error, or a signal such as SIGABRT makes
// the runtime stop every goroutine and write a trace to descriptor 2; on a
// full pipe that write waits for ever, and lockex, neither alive (its
// session expires, and the next holder starts) nor dead (neither the
// parent-death signal nor the guardian fires), would leave the workload
// running beside the next holder.
//
// Where stderr is a pipe, a FIFO or a terminal, descriptor 2 becomes a
// file description of its own of the same file, with O_NONBLOCK set on it
// alone: what the runtime writes reaches stderr while stderr drains, and
// is dropped once it does not, and lockex dies as it should. The original
// description, which the workload shares, is unchanged: SplitStderr
// returns it, for the log writer (whose queue never blocks anyway), and
// the workload and the guardian get it as their stderr. A regular file
// never blocks; a socket (journald's stream, say) cannot be reopened, and
// stays as it is.
//
// main calls it before anything else is started. The guardian gets the
// same arrangement from lockex before it execs (startGuardLocked), so
// that it has it from its first instruction on.
func SplitStderr() *os.File {
	nb, err := nonBlocking(2)
	if err != nil {
		return os.Stderr
	}
	defer syscall.Close(nb)
	orig, _, errno := syscall.Syscall(syscall.SYS_FCNTL, 2, syscall.F_DUPFD_CLOEXEC, 3)
	if errno != 0 {
		return os.Stderr
	}
	if err := syscall.Dup3(nb, 2, 0); err != nil {
		syscall.Close(int(orig))
		return os.Stderr
	}
	stderrFd = int(orig)
	return os.NewFile(orig, "/dev/stderr")
}

var errNotReopened = errors.New("neither a pipe, a FIFO nor a terminal")

// nonBlocking opens a file description of its own, close-on-exec and
// with O_NONBLOCK, of the pipe, FIFO or terminal that descriptor fd is.
func nonBlocking(fd int) (int, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return -1, err
	}
	if m := st.Mode & syscall.S_IFMT; m != syscall.S_IFIFO && m != syscall.S_IFCHR {
		return -1, errNotReopened
	}
	return syscall.Open("/proc/self/fd/"+strconv.Itoa(fd), syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
}
