// Package exitcode is lockex's written contract for its own exit codes
// (docs/design.md §2). Every other code lockex returns is the workload's.
package exitcode

import (
	"errors"
	"syscall"
)

const (
	OK          = 0
	Usage       = 64  // EX_USAGE: bad flag, value, lock path or semaphore size
	Unavailable = 69  // EX_UNAVAILABLE: ZooKeeper unreachable or auth failed before the lock was held
	Busy        = 75  // EX_TEMPFAIL: lock not acquired; --busy-exit-code overrides it
	LockLost    = 76  // the lock was lost while the workload ran
	Unhealthy   = 77  // the workload failed its health check (--health-url, --health-cmd) and was stopped
	MaxRuntime  = 124 // --max-runtime passed and lockex stopped the workload, as GNU timeout(1) exits
	CannotExec  = 126 // the command exists but cannot be executed
	NotFound    = 127 // the command was not found
	signalBase  = 128
)

// Signal is the code for a process ended by sig, the shell's 128+N.
func Signal(sig syscall.Signal) int { return signalBase + int(sig) }

// Error carries the exit code that the failure it wraps must end lockex with.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// With wraps err so that Of(err) returns code.
func With(code int, err error) error { return &Error{Code: code, Err: err} }

// Of returns the exit code carried by err, and 1 for an error that carries
// none (a bug: every failure lockex expects has a code of its own).
func Of(err error) int {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 1
}
