package zklock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/go-zookeeper/zk"
)

// TestRetryable: connection trouble, in whatever form go-zookeeper hands it
// over, is worth a retry on the same session; answers from ZooKeeper and
// our own ends are not.
func TestRetryable(t *testing.T) {
	writeErr := func(err error) error {
		return &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", err)}
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection closed", zk.ErrConnectionClosed, true},
		{"no server", zk.ErrNoServer, true},
		{"session expired", zk.ErrSessionExpired, true},
		{"session moved", zk.ErrSessionMoved, true},
		{"broken pipe", writeErr(syscall.EPIPE), true},
		{"connection reset", writeErr(syscall.ECONNRESET), true},
		{"write timeout", &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}, true},
		{"closed connection", &net.OpError{Op: "write", Net: "tcp", Err: net.ErrClosed}, true},
		{"end of stream", io.EOF, true},
		{"cut off mid-packet", io.ErrUnexpectedEOF, true},
		{"wrapped", fmt.Errorf("lock /p: %w", writeErr(syscall.EPIPE)), true},
		{"no node", zk.ErrNoNode, false},
		{"node exists", zk.ErrNodeExists, false},
		{"bad version", zk.ErrBadVersion, false},
		{"not authorized", zk.ErrNoAuth, false},
		{"client closing", zk.ErrClosing, false},
		{"context cancelled", context.Canceled, false},
		{"context deadline", context.DeadlineExceeded, false},
		{"size mismatch", ErrSizeMismatch, false},
		{"anything else", errors.New("zk: invalid path"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryable(tc.err); got != tc.want {
				t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
