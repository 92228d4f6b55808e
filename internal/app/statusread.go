package app

import (
	"context"
	"errors"

	"github.com/lockex/lockex/internal/status"
)

// readLock reads the lock through the session of the round under way, for
// /status: the same read as --status, on the connection this lockex
// already has, so a replica that can reach ZooKeeper can always say who
// holds. It never waits for a session.
func (l *zkLocker) readLock(ctx context.Context) (*status.Lock, error) {
	l.shared.Lock()
	s := l.session
	l.shared.Unlock()
	if s == nil {
		return nil, errors.New("no zookeeper session")
	}
	c, err := s.Inspect(ctx, l.cfg.Path)
	if err != nil {
		return nil, err
	}
	return status.NewLock(c, l.cfg.Concurrent), nil
}
