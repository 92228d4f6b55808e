package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/lockex/lockex/internal/status"
)

// ReadLock reads who holds the lock and who waits, through this lockex's
// own ZooKeeper session.
type ReadLock func(ctx context.Context) (*status.Lock, error)

const (
	// lockReadMax bounds a read of the lock: /status is for people and
	// dashboards, and must answer while ZooKeeper does not.
	lockReadMax = 2 * time.Second
	// lockReadFresh is how long a read is served again: many callers,
	// one read a second at most on the session the lock depends on.
	lockReadFresh = time.Second
)

// statusBody is /status's answer (docs/design.md §8).
type statusBody struct {
	Instance       status.Instance `json:"instance"`
	Lock           *status.Lock    `json:"lock,omitempty"`
	ZooKeeperError string          `json:"zookeeper_error,omitempty"`
}

// lockView shares reads of the lock among /status's callers: at most one
// in flight, and one younger than lockReadFresh served again.
type lockView struct {
	read ReadLock

	mu     sync.Mutex
	last   *lockRead // the last read that ended
	flight *lockRead // the read under way, nil if none
}

type lockRead struct {
	lock     *status.Lock
	err      error
	at       time.Time // when it ended
	deadline time.Time // when its callers stop waiting for it
	done     chan struct{}
}

// get returns a read of the lock no older than lockReadFresh, waiting at
// most until the read's deadline or ctx's end. A read that outlives its
// deadline (go-zookeeper queues requests while disconnected) keeps the
// place: later callers wait for it, none starts another beside it.
func (v *lockView) get(ctx context.Context) (*status.Lock, error) {
	v.mu.Lock()
	if r := v.last; r != nil && time.Since(r.at) < lockReadFresh {
		v.mu.Unlock()
		return r.lock, r.err
	}
	r := v.flight
	if r == nil {
		r = &lockRead{deadline: time.Now().Add(lockReadMax), done: make(chan struct{})}
		v.flight = r
		go v.run(r)
	}
	v.mu.Unlock()
	timer := time.NewTimer(max(time.Until(r.deadline), 0))
	defer timer.Stop()
	select {
	case <-r.done:
		return r.lock, r.err
	case <-timer.C:
		return nil, fmt.Errorf("no answer from zookeeper within %s", lockReadMax)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run reads with a context of its own: a caller that goes away does not
// cancel the read the others wait for.
func (v *lockView) run(r *lockRead) {
	ctx, cancel := context.WithDeadline(context.Background(), r.deadline)
	defer cancel()
	r.lock, r.err = v.read(ctx)
	if errors.Is(r.err, context.DeadlineExceeded) {
		r.err = fmt.Errorf("no answer from zookeeper within %s", lockReadMax)
	}
	r.at = time.Now()
	v.mu.Lock()
	v.last, v.flight = r, nil
	v.mu.Unlock()
	close(r.done)
}

// statusPage answers /status: 200 with this instance's state and the lock
// as ZooKeeper has it, or, when ZooKeeper cannot be read, the reason in
// zookeeper_error instead of the lock. It is information, never a probe.
func statusPage(snapshot func() status.Snapshot, view *lockView) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := snapshot()
		body := statusBody{Instance: s.Instance()}
		switch {
		case view == nil:
			body.ZooKeeperError = "this lockex does not read the lock"
		case !s.Connected:
			// No session yet, or disconnected: a read would only wait.
			body.ZooKeeperError = "not connected to zookeeper"
		default:
			lock, err := view.get(r.Context())
			if err != nil {
				body.ZooKeeperError = err.Error()
			} else {
				body.Lock = lock
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(body)
	})
}
