package proc

import (
	"bufio"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lockex/lockex/internal/logging"
)

// The guardian is lockex re-executed from /proc/self/exe as GuardName, in
// a process group of its own. Should lockex die without stopping what it
// started (SIGKILL, the OOM killer, a crash), the parent-death signal ends
// the workload's main process only; its background children would run on
// beside the next holder once the session expires. The guardian outlives
// lockex to kill them.
//
// Its stdin is a pipe whose only writer is lockex, one line a message:
//
//	guard group PGID     guard cgroup PATH
//	forget group PGID    forget cgroup PATH
//	done
//
// done means lockex leaves nothing running: the guardian exits. End of
// file without done means lockex is gone (the kernel closes the pipe
// however a process dies): the guardian kills every group and cgroup it
// still guards, at once, and exits.
//
// A process group's id is free for reuse once the group is empty, so the
// guardian forgets a group as soon as it sees it gone, and lockex forgets
// its workload's group once it has stopped it.

// GuardName is the guardian's argv[0] and command name.
const GuardName = "lockex-guard"

const (
	// guardPoll is how often the guardian looks for groups that are gone,
	// to forget them before their id can be reused.
	guardPoll = time.Second
	// guardKillMax bounds how long the guardian waits for what it killed
	// to die (a process in uninterruptible sleep dies when it wakes).
	guardKillMax = 10 * time.Second
	// guardFlushMax bounds how long the guardian, exiting, waits for its
	// last lines to reach stderr.
	guardFlushMax = time.Second
)

// guardLogFd is the guardian's third argument when lockex gave it its
// stderr, to log to, as descriptor 3 (startGuardLocked).
const guardLogFd = "3"

// canGuard is set in a binary whose main calls Guardian first: only such a
// binary, re-executed, becomes a guardian and not a second lockex (or a
// second run of a test binary).
var canGuard atomic.Bool

// Guardian runs the guardian if args[0] names it, and returns its exit
// code and true. Otherwise it returns false at once. main calls it before
// anything else.
func Guardian(args []string) (code int, isGuardian bool) {
	if len(args) == 0 || args[0] != GuardName {
		canGuard.Store(true)
		return 0, false
	}
	format := "text"
	if len(args) > 1 {
		format = args[1]
	}
	// The guardian shares lockex's stderr, which may be a pipe nobody
	// drains: its lines, written to descriptor 3, are queued, never waited
	// for, and flushed for a bounded time as it exits. Its descriptor 2
	// never blocks: should it crash, it dies rather than hang on its
	// trace, so that lockex can start another (SplitStderr).
	out := os.Stderr
	if len(args) > 2 && args[2] == guardLogFd {
		out = os.NewFile(3, "/dev/stderr")
	}
	logs := logging.NewWriter(out, logging.QueueLines)
	code = runGuardian(logging.New(logs, format, "info"))
	logs.Flush(guardFlushMax)
	return code, true
}

func runGuardian(log *slog.Logger) int {
	// The guardian outlives lockex by design: no job control, terminal
	// hangup, polite request or stray signal whose default is to end a
	// process may stop it first. SIGKILL (and SIGSTOP) cannot be ignored.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
		syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGPIPE,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGALRM, syscall.SIGVTALRM,
		syscall.SIGXCPU, syscall.SIGXFSZ, syscall.SIGIO, syscall.SIGPWR, syscall.SIGSTKFLT)
	// exec named it after /proc/self/exe: "exe". ps and pkill see this.
	_ = os.WriteFile("/proc/self/comm", []byte(GuardName), 0)

	var st syscall.Stat_t
	if err := syscall.Fstat(0, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		log.Error(GuardName + " is started by lockex, with a pipe as its stdin")
		return 2
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()

	g := guarded{groups: map[int]bool{}, cgroups: map[string]bool{}}
	tick := time.NewTicker(guardPoll)
	defer tick.Stop()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				return g.killAll(log)
			}
			if line == "done" {
				return 0
			}
			g.apply(line)
		case <-tick.C:
			g.forgetGone()
		}
	}
}

// guarded is what the guardian kills if lockex dies.
type guarded struct {
	groups  map[int]bool
	cgroups map[string]bool
}

func (g *guarded) apply(line string) {
	verb, rest, _ := strings.Cut(line, " ")
	kind, item, _ := strings.Cut(rest, " ")
	keep := verb == "guard"
	switch kind {
	case "group":
		if pgid, err := strconv.Atoi(item); err == nil && pgid > 1 {
			setOrDelete(g.groups, pgid, keep)
		}
	case "cgroup":
		if item != "" {
			setOrDelete(g.cgroups, item, keep)
		}
	}
}

func setOrDelete[K comparable](m map[K]bool, k K, set bool) {
	if set {
		m[k] = true
	} else {
		delete(m, k)
	}
}

// forgetGone drops the groups that have no member left, zombies included:
// from now on their id may name someone else's group.
func (g *guarded) forgetGone() {
	for pgid := range g.groups {
		if syscall.Kill(-pgid, 0) == syscall.ESRCH {
			delete(g.groups, pgid)
		}
	}
}

// dropEmptyCgroups removes, quietly, the cgroups with nothing in them:
// lockex removes a workload's cgroup only after its release
// (retireLocked), and a lockex killed between the two left nothing
// running in it. Only once lockex is gone: until then an empty cgroup may
// be the next workload's, guarded before the fork into it (Start), and
// one that ended is lockex's to remove.
func (g *guarded) dropEmptyCgroups() {
	for cg := range g.cgroups {
		if populated, err := cgroupPopulated(cg); err == nil && !populated && removeCgroup(cg) == nil {
			delete(g.cgroups, cg)
		}
	}
}

// killAll kills everything still guarded, and returns once it is gone or
// guardKillMax has passed. A cgroup goes with everything in it, daemons
// that left the workload's group included; its directory is removed.
func (g *guarded) killAll(log *slog.Logger) int {
	g.forgetGone()
	g.dropEmptyCgroups()
	if len(g.groups) == 0 && len(g.cgroups) == 0 {
		return 0
	}
	// Kill first, tell after: nothing said may delay the kill.
	deadline := time.Now().Add(guardKillMax)
	killed := g.attrs()
	var refused []any
	for cg := range g.cgroups {
		if err := killCgroup(cg); err != nil {
			refused = append(refused, cg, err)
		}
	}
	for pgid := range g.groups {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	log.Warn("lockex is gone and left its workload running; killed what it started", killed...)
	for i := 0; i < len(refused); i += 2 {
		log.Error("cannot kill a cgroup", "cgroup", refused[i], "err", refused[i+1])
	}
	for {
		for pgid := range g.groups {
			// Checked before each kill: once empty, the id is not ours.
			if groupAlive(pgid) {
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
			} else {
				delete(g.groups, pgid)
			}
		}
		for cg := range g.cgroups {
			if populated, err := cgroupPopulated(cg); err == nil && populated {
				continue
			}
			if err := removeCgroup(cg); err != nil {
				log.Warn("cannot remove a cgroup", "cgroup", cg, "err", err)
			}
			delete(g.cgroups, cg)
		}
		if len(g.groups) == 0 && len(g.cgroups) == 0 {
			return 0
		}
		if time.Now().After(deadline) {
			log.Error("still running after SIGKILL", append(g.attrs(), "waited", guardKillMax)...)
			return 1
		}
		time.Sleep(stopPoll)
	}
}

// attrs names what is guarded, for a log line.
func (g *guarded) attrs() []any {
	var attrs []any
	if len(g.groups) > 0 {
		attrs = append(attrs, "process_groups", slices.Sorted(maps.Keys(g.groups)))
	}
	if len(g.cgroups) > 0 {
		attrs = append(attrs, "cgroups", slices.Sorted(maps.Keys(g.cgroups)))
	}
	return attrs
}
