package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/lockex/lockex/internal/config"
	"github.com/lockex/lockex/internal/exitcode"
	"github.com/lockex/lockex/internal/identity"
	"github.com/lockex/lockex/internal/proc"
	"github.com/lockex/lockex/internal/supervisor"
	"github.com/lockex/lockex/internal/zklock"
)

var (
	_ supervisor.Locker  = (*zkLocker)(nil)
	_ supervisor.Lease   = (*zklock.Lease)(nil)
	_ supervisor.Process = (*proc.Process)(nil)
)

// zkLocker connects to ZooKeeper and takes the configured recipe, and turns
// zklock's errors into the exit codes of docs/design.md §2.
type zkLocker struct {
	cfg     *config.Config
	log     *slog.Logger
	obs     zklock.SessionObserver
	session *zklock.Session
	data    string // the identity written into this lockex's nodes
	// labels is told what the pod's labeler learns from the lock; nil
	// without one.
	labels lockWatcher
	// shared guards session for readers beside the supervisor (/status);
	// the supervisor's own goroutine alone changes it.
	shared sync.Mutex
}

func newLocker(cfg *config.Config, log *slog.Logger, obs zklock.SessionObserver) *zkLocker {
	return &zkLocker{cfg: cfg, log: log, obs: obs}
}

// Connect makes a session, after closing any earlier one: each round of
// --requeue has its own, so no node of an earlier round's is left to queue
// ahead of it.
func (l *zkLocker) Connect(ctx context.Context) error {
	c := l.cfg
	l.Close()
	opts := sessionOptions(c, l.log, l.obs)
	if l.labels != nil {
		opts.Behind = l.labels.Behind
	}
	var self identity.Identity
	opts.EarlierSelf, self = earlierSelf(c.Identity(version()), l.log)
	l.data = self.String()
	s, err := zklock.Connect(ctx, opts)
	if err != nil {
		return classify(err)
	}
	l.shared.Lock()
	l.session = s
	l.shared.Unlock()
	if l.labels != nil {
		l.labels.Session(s.SureUntil)
	}
	if granted := s.Granted(); c.KillGrace.D() >= zklock.MaxStopGrace(granted) {
		return exitcode.With(exitcode.Usage, fmt.Errorf(
			"--kill-grace %s leaves no room: it must be less than %s, 55%% of the session timeout the server granted, %s (asked for %s)",
			c.KillGrace, zklock.MaxStopGrace(granted), granted, c.SessionTimeout))
	}
	return nil
}

func (l *zkLocker) Acquire(ctx context.Context, blocking bool) (supervisor.Lease, error) {
	c := l.cfg
	id := l.data
	var (
		lease *zklock.Lease
		err   error
	)
	if c.Concurrent > 1 {
		lease, err = zklock.NewSemaphore(l.session, c.Path, id, c.Concurrent).Acquire(ctx, blocking)
	} else {
		lease, err = zklock.NewMutex(l.session, c.Path, id).Acquire(ctx, blocking)
	}
	if err != nil {
		return nil, classify(err)
	}
	if l.labels != nil {
		return &announcedLease{Lease: lease, labels: l.labels}, nil
	}
	return lease, nil
}

// lockWatcher is what a pod's labeler learns from the lock
// (podlabel.Labeler): whose pods it may have to correct once it holds
// (zklock.Options.Behind), each session's SureUntil, which bounds when a
// read of such a pod still counts as made while holding, and that a
// release begins, after which none does.
type lockWatcher interface {
	Behind(data []byte)
	Session(sureUntil func() time.Time)
	Releasing()
}

// announcedLease tells labels before it releases: a read made from then
// on no longer counts as made while holding, though the status says held
// until the delete was answered, and the next holder may hold and label
// its pod before that.
type announcedLease struct {
	*zklock.Lease
	labels lockWatcher
}

func (a *announcedLease) Release() error {
	a.labels.Releasing()
	return a.Lease.Release()
}

// earlierSelf recognises the nodes of this container's earlier
// incarnations (docs/design.md §3.4), or is nil when self cannot tell them
// from another live lockex's: without a pod UID and a container name, or
// when lockex is not PID 1 of its PID namespace (a pod that shares one,
// a process started in the container beside PID 1), or when another live
// lockex holds this identity's claim (claimIdentity). It returns the
// identity to write: without the pod UID when the claim is not this
// lockex's, so that the claim's holder never takes its nodes for a dead
// incarnation's either.
func earlierSelf(self identity.Identity, log *slog.Logger) (func([]byte) bool, identity.Identity) {
	if self.UID == "" || self.Container == "" {
		return nil, self
	}
	if self.PID != 1 {
		log.Info("not PID 1 of a PID namespace: nodes of an earlier incarnation of this container wait for their session to expire",
			"pid", self.PID, "pod_uid", self.UID, "container", self.Container)
		return nil, self
	}
	if err := claimIdentity(self); err != nil {
		log.Warn("another live lockex may have this container's identity: nodes of an earlier incarnation wait for their session to expire",
			"pod_uid", self.UID, "container", self.Container, "err", err)
		self.UID = ""
		return nil, self
	}
	return func(data []byte) bool {
		other, ok := identity.Parse(string(data))
		return ok && self.CanTakeOver(other)
	}, self
}

// sessionOptions are the ZooKeeper session's options for cfg.
func sessionOptions(cfg *config.Config, log *slog.Logger, obs zklock.SessionObserver) zklock.Options {
	return zklock.Options{
		Servers:        cfg.Servers,
		Chroot:         cfg.Chroot,
		SessionTimeout: cfg.SessionTimeout.D(),
		ConnectTimeout: cfg.Timeout.D(),
		Attempts:       cfg.Retry,
		Retries:        cfg.LockRetry,
		StopGrace:      cfg.KillGrace.D(),
		Logger:         log,
		Observer:       obs,
		User:           cfg.ZKUser,
		Password:       cfg.ZKPassword,
		WorldRead:      cfg.ZKACLWorldRead,
		TLS:            cfg.TLS,
		HeldSince:      identity.WithSince,
	}
}

// Close ends the session, which deletes any node of ours still there.
func (l *zkLocker) Close() {
	if l.session != nil {
		l.session.Close()
		l.shared.Lock()
		l.session = nil
		l.shared.Unlock()
	}
}

func classify(err error) error {
	switch {
	case errors.Is(err, zklock.ErrBusy):
		return exitcode.With(exitcode.Busy, err)
	case errors.Is(err, zklock.ErrSizeMismatch):
		return exitcode.With(exitcode.Usage, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err // the supervisor knows why it cancelled
	}
	// Unreachable, refused auth, or any other answer but the lock.
	return exitcode.With(exitcode.Unavailable, err)
}
