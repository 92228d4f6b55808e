package app

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/lockex/lockex/internal/config"
	"github.com/lockex/lockex/internal/exitcode"
	"github.com/lockex/lockex/internal/status"
	"github.com/lockex/lockex/internal/zklock"
)

// statusFree is --status's exit code for a lock nobody holds, so that a
// script can ask `if lockex --status ...` as it would ask `test`.
const statusFree = 1

// runStatus prints who holds the lock of cfg and who waits for it, and
// returns 0 if it is held, 1 if it is free, or 69 if ZooKeeper could not be
// read. It only reads: an operator may point it at any production lock,
// and a lock path that does not exist is not created.
func runStatus(ctx context.Context, cfg *config.Config, stdout io.Writer, log *slog.Logger) int {
	log = log.With("lock", cfg.Path)
	s, err := zklock.Connect(ctx, sessionOptions(cfg, log, nil))
	if err != nil {
		log.Error("cannot reach zookeeper", "err", err)
		return exitcode.Unavailable
	}
	defer s.Close()
	c, err := s.Inspect(ctx, cfg.Path)
	if err != nil {
		// Unreachable after the session was made, or refused (auth).
		log.Error("cannot read the lock", "err", err)
		return exitcode.Unavailable
	}
	st := status.NewLock(c, cfg.Concurrent)
	if cfg.Output == "json" {
		err = st.WriteJSON(stdout)
	} else {
		err = st.WriteTable(stdout, time.Now())
	}
	if err != nil {
		log.Error("cannot write the status", "err", err)
	}
	if !st.Held {
		return statusFree
	}
	return exitcode.OK
}
