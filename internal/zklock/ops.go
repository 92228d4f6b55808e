package zklock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"
)

// retryable reports whether err is a connection problem after which the
// same operation may succeed: the request may or may not have been applied.
func retryable(err error) bool {
	var op *net.OpError
	switch {
	case errors.Is(err, zk.ErrConnectionClosed), errors.Is(err, zk.ErrNoServer),
		errors.Is(err, zk.ErrSessionExpired), errors.Is(err, zk.ErrSessionMoved):
		return true
	case errors.As(err, &op):
		// go-zookeeper hands the caller the error of a write that failed
		// (conn.go, sendData), a reset or broken pipe when the server
		// died, then drops the connection and makes another.
		return true
	}
	for _, cause := range []error{syscall.EPIPE, syscall.ECONNRESET, os.ErrDeadlineExceeded, net.ErrClosed, io.EOF, io.ErrUnexpectedEOF} {
		if errors.Is(err, cause) {
			return true
		}
	}
	return false
}

// retrier counts consecutive connection failures of one recipe. A success
// resets it, so a waiter that rides out many short outages keeps waiting,
// while one that cannot get a single answer gives up after Retries.
type retrier struct {
	s        *Session
	failures int
	// changed closes at the first change of the session's state after the
	// round began (round); nil if no round was marked.
	changed <-chan struct{}
}

// round marks the start of a round of requests.
func (r *retrier) round() { _, _, r.changed = r.s.current() }

// again decides after a failed round: nil means try again (the session is
// usable by now); an error wrapping ErrUnreachable means give up.
func (r *retrier) again(ctx context.Context, what string, err error) error {
	if errors.Is(err, zk.ErrNoAuth) {
		return fmt.Errorf("%w: %s: %v (check --zk-user and the password, and the ACL of the lock path)", ErrNotAuthorized, what, err)
	}
	if !retryable(err) {
		return fmt.Errorf("%s: %w", what, err)
	}
	r.failures++
	if r.failures > r.s.opts.Retries {
		return fmt.Errorf("%w: %s: %v (%d retries)", ErrUnreachable, what, err, r.s.opts.Retries)
	}
	r.s.log.Warn("zookeeper operation failed, retrying", "op", what, "err", err, "retry", r.failures)
	wctx, cancel := context.WithTimeout(ctx, r.s.opts.ConnectTimeout)
	defer cancel()
	if state, _, _ := r.s.current(); state == zk.StateHasSession && r.changed != nil {
		// A write error reaches us before go-zookeeper has dropped the
		// connection it happened on; a retry sent now would wait for the
		// next connection and, with a single server, be failed (ErrNoServer)
		// before it. Wait until the session has been seen to change.
		select {
		case <-r.changed:
		case <-wctx.Done():
		}
	}
	if werr := r.s.WaitConnected(wctx); werr != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %s: %v, and no session within %s", ErrUnreachable, what, err, r.s.opts.ConnectTimeout)
	}
	return nil
}

func (r *retrier) ok() { r.failures = 0 }

// ensurePath creates p and its parents (the chroot's too) as persistent
// nodes, as kazoo's ensure_path does. It reports whether p already existed.
func (s *Session) ensurePath(p string, data []byte) (existed bool, err error) {
	return s.ensure(s.abs(p), data)
}

func (s *Session) ensure(serverPath string, data []byte) (bool, error) {
	_, err := s.conn.Create(serverPath, data, 0, s.acl)
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, zk.ErrNodeExists):
		return true, nil
	case errors.Is(err, zk.ErrNoNode) && path.Dir(serverPath) != "/":
		if _, err := s.ensure(path.Dir(serverPath), nil); err != nil {
			return false, err
		}
		return s.ensure(serverPath, data)
	}
	return false, fmt.Errorf("create %s: %w", serverPath, err)
}

// children lists p's child names.
func (s *Session) children(p string) ([]string, error) {
	names, _, err := s.conn.Children(s.abs(p))
	return names, err
}

// owned returns the stat of node p if it exists and belongs to this
// session. A node of an earlier session of ours can still be listed for a
// moment after that session expired (CURATOR-498); it is never ours.
func (s *Session) owned(p string) (*zk.Stat, bool, error) {
	ok, stat, err := s.conn.Exists(s.abs(p))
	if err != nil || !ok {
		return nil, false, err
	}
	return stat, stat.EphemeralOwner == s.ID(), nil
}

// deleteNode deletes p now, without waiting longer than the connect
// timeout: if ZooKeeper cannot be reached, closing the session (which
// lockex does next) removes the node as well.
func (s *Session) deleteNode(p string) error {
	done := make(chan error, 1)
	go func() { done <- s.conn.Delete(s.abs(p), -1) }()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", p, err)
	case <-time.After(s.opts.ConnectTimeout):
		return fmt.Errorf("delete %s: no answer within %s", p, s.opts.ConnectTimeout)
	}
}

// newPrefix is a kazoo-style node prefix: 32 hex digits of a random UUID.
func newPrefix() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return hex.EncodeToString(b[:])
}

func join(parent, name string) string { return parent + "/" + name }

func hasPrefixIn(names []string, prefix string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// existsUntilGone is ExistsW of server path sp whose channel ignores the
// node's data changes: it fires with the first other event (the deletion,
// or the watch's end with a lost connection), or with a data change whose
// watch could not be set again. A holder rewrites its node every
// granted/heartbeats (Lease.beat); a waiter woken by each beat would list
// the lock again, and log again that it waits, twenty times a session
// timeout, though only a deletion changes what it waits for. Once stop is
// closed, the watch is no longer set again. With data not nil, the first
// watch is set by a GetW instead, in the same one round trip, and *data is
// the node's data: who the waiter waits behind.
func (s *Session) existsUntilGone(sp string, data *[]byte, stop <-chan struct{}) (bool, *zk.Stat, <-chan zk.Event, error) {
	var (
		ok    bool
		stat  *zk.Stat
		watch <-chan zk.Event
		err   error
	)
	if data != nil {
		// A GetW of an existing node sets the watch an ExistsW sets (data
		// changes and the deletion); of a missing one, none, which
		// ExistsW's caller would not use either.
		*data, stat, watch, err = s.conn.GetW(sp)
		ok = err == nil
		if errors.Is(err, zk.ErrNoNode) {
			err = nil
		}
	} else {
		ok, stat, watch, err = s.conn.ExistsW(sp)
	}
	if err != nil || !ok {
		return ok, stat, nil, err
	}
	gone := make(chan zk.Event, 1)
	go func() {
		for {
			var ev zk.Event
			select {
			case ev = <-watch:
			case <-stop:
				return
			}
			if ev.Type == zk.EventNodeDataChanged {
				ok, _, next, err := s.conn.ExistsW(sp)
				if err == nil && ok {
					watch = next
					continue
				}
			}
			gone <- ev
			return
		}
	}()
	return true, stat, gone, nil
}
