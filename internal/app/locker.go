package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/lockex/lockex/internal/config"
	"github.com/lockex/lockex/internal/exitcode"
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
}

func newLocker(cfg *config.Config, log *slog.Logger, obs zklock.SessionObserver) *zkLocker {
	return &zkLocker{cfg: cfg, log: log, obs: obs}
}

func (l *zkLocker) Connect(ctx context.Context) error {
	c := l.cfg
	s, err := zklock.Connect(ctx, sessionOptions(c, l.log, l.obs))
	if err != nil {
		return classify(err)
	}
	l.session = s
	if granted := s.Granted(); c.KillGrace.D() >= zklock.MaxStopGrace(granted) {
		return exitcode.With(exitcode.Usage, fmt.Errorf(
			"--kill-grace %s leaves no room: it must be less than %s, 57.5%% of the session timeout the server granted, %s (asked for %s)",
			c.KillGrace, zklock.MaxStopGrace(granted), granted, c.SessionTimeout))
	}
	return nil
}

func (l *zkLocker) Acquire(ctx context.Context, blocking bool) (supervisor.Lease, error) {
	c := l.cfg
	id := config.Identifier()
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
	return lease, nil
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
	}
}

// close ends the session, which deletes any node of ours still there.
func (l *zkLocker) close() {
	if l.session != nil {
		l.session.Close()
		l.session = nil
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
