// Package app wires lockex together: configuration, logger, ZooKeeper
// session and lock recipe, workload and supervisor. It holds no policy.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/lockex/lockex/internal/config"
	"github.com/lockex/lockex/internal/exitcode"
	"github.com/lockex/lockex/internal/httpapi"
	"github.com/lockex/lockex/internal/logging"
	"github.com/lockex/lockex/internal/metrics"
	"github.com/lockex/lockex/internal/proc"
	"github.com/lockex/lockex/internal/status"
	"github.com/lockex/lockex/internal/supervisor"
)

// Version is stamped at build time with -ldflags "-X ...app.Version=v1.2.3".
var Version = "dev"

// forwarded are the signals lockex passes on to the workload's process
// group. SIGCHLD and SIGPIPE are lockex's own, and SIGURG is the Go
// runtime's preemption signal: none of them is ever forwarded.
var forwarded = []os.Signal{
	syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
}

// logFlushMax bounds the wait, as lockex exits, for its last log lines to
// be written: a stderr nobody drains must not hold up the exit.
const logFlushMax = time.Second

// Main runs lockex with args (without the program name) and environ, and
// returns its exit code.
func Main(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	// Every log line goes through logs, which never blocks: lockex logs on
	// its way to stopping the workload and releasing the lock.
	logs := logging.NewWriter(stderr, logging.QueueLines)
	defer logs.Flush(logFlushMax)
	cfg, err := config.Parse(args, environ, stdout)
	if errors.Is(err, config.ErrHelp) {
		return exitcode.OK
	}
	if err != nil {
		// In the format asked for, if that much parsed: a log pipeline
		// that expects JSON sees the first line of a misconfigured pod.
		logging.New(logs, config.RequestedLogFormat(args, environ), "info").Error("bad usage", "err", err)
		return exitcode.Usage
	}
	hideSecrets(len(cfg.Command), cfg.ZKPassword)
	log := logging.New(logs, cfg.LogFormat, cfg.LogLevel)
	if !cfg.IsMode() {
		log = log.With("lock", cfg.Path)
	}

	switch {
	case cfg.Version:
		fmt.Fprintf(stdout, "lockex %s %s\n", version(), runtime.Version())
		return exitcode.OK
	case cfg.Status:
		return runStatus(ctx, cfg, stdout, log)
	case cfg.Install != "":
		if err := install(cfg.Install); err != nil {
			log.Error("install failed", "dir", cfg.Install, "err", err)
			return exitcode.Usage
		}
		return exitcode.OK
	}

	path, err := proc.Resolve(cfg.Command[0], getenv(environ, "PATH"))
	if err != nil {
		log.Error("cannot run the command", "err", err)
		return exitcode.Of(err)
	}

	reaper, err := proc.NewReaper(log, cfg.Subreaper)
	if err != nil {
		log.Error("cannot reap orphans", "err", err)
		return exitcode.Usage
	}
	defer reaper.Close()
	// The guardian starts while lockex connects and waits, not inside the
	// handoff (design.md §6.3).
	go reaper.Prepare()

	signals := make(chan os.Signal, 16)
	signal.Notify(signals, forwarded...)
	defer signal.Stop(signals)

	// One record of the state; the log lines, the metrics and the probes
	// all come from it.
	m, registry := metrics.New(cfg.Path, cfg.Concurrent, version(), logs.Dropped)
	env := workloadEnv(environ)
	health := newHealthCheck(cfg, reaper, env)
	active := newActiveFollowers(cfg, log, health, m.PodPatchFailed)
	rec := status.New(log, cfg.Path, cfg.Concurrent, active.observe(m.Observe))
	active.start(ctx, rec)
	defer active.stop()
	locker := newLocker(cfg, log, rec)
	var srv *httpapi.Server
	if cfg.HTTPAddr != "" {
		// Before the lock is sought: a waiting standby answers its probes.
		srv, err = httpapi.Start(cfg.HTTPAddr, rec.Snapshot, locker.readLock, registry, log)
		if err != nil {
			log.Error("cannot serve probes and metrics", "err", err)
			return exitcode.Usage
		}
		defer srv.Close()
	}

	standby := newStandbyCheck(cfg, reaper, env)
	standby.start(ctx, rec)
	defer standby.stop()

	locker.labels = active.lockWatcher()
	// Closed before the server, as before /status read through it: the
	// session's end does not wait for a request in flight.
	defer locker.Close()
	code := supervisor.Run(ctx, supervisor.Config{
		Locker: locker,
		Start: func(env []string) (supervisor.Process, error) {
			return reaper.Start(path, cfg.Command, env)
		},
		Env:          env,
		Signals:      signals,
		Health:       health.Verdicts(),
		Standby:      standby.forSupervisor(),
		LockTimeout:  cfg.LockWait(),
		BusyExitCode: cfg.BusyExitCode,
		MinHold:      cfg.MinHold.D(),
		MaxRuntime:   cfg.MaxRuntime.D(),
		Requeue:      supervisor.Requeue{On: cfg.Requeue, Backoff: cfg.RequeueBackoff.D(), MaxBackoff: cfg.RequeueMax.D()},
		KillSignal:   cfg.KillSignal.Sys(),
		KillGrace:    cfg.KillGrace.D(),
		Drain:        active.drain(log),
		Observer:     rec,
		Log:          log,
	})
	if s := rec.Snapshot(); (s.LockLost || s.Unhealthy) && s.State == supervisor.Released && srv != nil {
		// Any loss in the last round, also one during --min-hold, where
		// the exit code is the workload's, and a stop for the workload's
		// health: each counted by a metric nobody would see rise otherwise
		// (not one in an earlier round of --requeue: lockex served
		// /metrics through the backoff since). The workload is stopped and
		// the lock given back; the session goes now, so a node of ours
		// cannot hold up the next holder meanwhile.
		locker.Close()
		lingerForScrape(srv, signals, log)
	}
	return code
}

// lingerMax bounds how long lockex waits, after losing the lock, for
// Prometheus to scrape it once more.
const lingerMax = time.Minute

// lingerForScrape keeps /metrics up after a lock loss or a stop for the
// workload's health until it has been scraped once (at most lingerMax, or
// until a signal): lockex_lock_lost_total or
// lockex_workload_unhealthy_total goes up as lockex is about to exit, and
// without this one scrape no Prometheus would ever see it, and the
// lock-lost alert would never fire.
func lingerForScrape(srv *httpapi.Server, signals <-chan os.Signal, log *slog.Logger) {
	log.Info("serving /metrics until the next scrape, so that the loss or the unhealthy stop is seen", "at_most", lingerMax)
	timer := time.NewTimer(lingerMax)
	defer timer.Stop()
	for {
		select {
		case <-srv.Scraped():
			return
		case <-timer.C:
			return
		case sig := <-signals:
			if supervisor.Stops(sig) {
				return
			}
		}
	}
}

// getenv is os.Getenv over environ: the last KEY= wins, as in execve.
func getenv(environ []string, key string) string {
	for i := len(environ) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(environ[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

func version() string {
	if Version != "dev" {
		return Version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return Version
}

// install copies the running executable to dir/lockex, for init containers
// that put lockex into a volume shared with any image.
func install(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	src, err := os.Open(self)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(dir, ".lockex-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dir+"/lockex")
}
