package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/zktest"
)

// TestSoak runs a fleet of contenders on one lock under a random schedule
// of faults and checks, from the workloads' own records, that the lock's
// promise held: for the mutex, that no two ran at once; for the semaphore
// (-c 2, with kazoo Semaphore peers in the fleet), that no more than two
// did. A frozen holder's stale writes, within its freeze and the grace it
// takes lockex to stop it once resumed, are the one exception.
//
// The two kinds run one after the other, each for LOCKEX_SOAK (default
// 1m; make soak runs longer); LOCKEX_SOAK_SEED sets the seed (default: from
// the clock), printed so that a failing schedule can be run again.
func TestSoak(t *testing.T) {
	length := time.Minute
	if v := os.Getenv("LOCKEX_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("LOCKEX_SOAK=%q: %v", v, err)
		}
		length = d
	}
	seed := time.Now().UnixNano()
	if v := os.Getenv("LOCKEX_SOAK_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("LOCKEX_SOAK_SEED=%q: %v", v, err)
		}
	}
	fmt.Printf("soak: %s per kind, seed %d (LOCKEX_SOAK_SEED=%d to repeat)\n", length, seed, seed)
	for _, k := range soakKinds {
		t.Run(k.name, func(t *testing.T) {
			s := newSoak(t, seed, k)
			s.run(length)
			s.report(t)
		})
	}
}

// A soakKind is a lock and the fleet that contends for it.
type soakKind struct {
	name  string
	size  int // 1: a Lock; more: a Semaphore of this size (-c)
	fleet []contender
}

// contender is one member of the fleet, which runs again and again.
type contender struct {
	name string
	how  runner
	// fullStderr gives lockex a stderr pipe that is full and never read,
	// as under a supervisor that stopped reading its logs.
	fullStderr bool
	// health gives lockex a --health-cmd that fails at random (soakHealth):
	// some of its runs end with the workload stopped for its health (77).
	health bool
	// standby gives lockex a --standby-cmd that fails at random
	// (soakStandby): it leaves the queue, replaces its session and queues
	// again while the soak's faults go on.
	standby bool
}

// soakHealth is the health check of the health-gated contenders: each
// check fails with a chance of 1 in 4, and two failures in a row (about
// every 3s at 5 checks a second) stop the workload, a stop with the grace
// and SIGKILL of a loss, racing the soak's faults.
var soakHealth = []string{"--health-cmd", "sh -c 'case $(cat /proc/sys/kernel/random/uuid) in [0-3]*) exit 1;; esac'",
	"--health-period", "200ms", "--health-failure-threshold", "2"}

// soakStandby is the standby check of the standby-gated contenders: each
// check fails with a chance of 1 in 4, and two failures in a row (about
// every 1.6s at 10 checks a second) take a queued standby out of the
// queue, racing grants and the soak's faults.
var soakStandby = []string{"--standby-cmd", "sh -c 'case $(cat /proc/sys/kernel/random/uuid) in [0-3]*) exit 1;; esac'",
	"--health-period", "100ms", "--health-failure-threshold", "2"}

type runner int

const (
	// onHost runs lockex as a child of the test, neither PID 1 nor a
	// subreaper. Half of its runs' workloads leave a background child too:
	// when lockex is killed with SIGKILL, the parent-death signal ends the
	// workload's main process, and lockex's guardian the rest of its
	// process group and cgroup.
	onHost runner = iota
	// asPID1 runs lockex as PID 1 of a PID namespace of its own (unshare
	// --pid --fork --mount-proc), as in a container. Half of its runs'
	// workloads leave a background child that writes records until it is
	// killed; when lockex is killed with SIGKILL, the kernel kills every
	// process of the namespace with its init.
	asPID1
	// kazooPeer is kazoo_peer.py's sem-ticker: python3-kazoo's Semaphore
	// on the same path, half of its runs with a second writing thread.
	kazooPeer
)

var soakKinds = []soakKind{
	{"mutex", 1, []contender{
		{"c0", onHost, false, false, false}, {"c1", onHost, true, false, true}, {"c2", asPID1, false, false, true}, {"c3", asPID1, false, true, false},
	}},
	{"semaphore", 2, []contender{
		{"c0", onHost, false, true, false}, {"c1", onHost, true, false, true}, {"c2", asPID1, false, false, true}, {"c3", asPID1, false, true, false},
		{"k0", kazooPeer, false, false, false}, {"k1", kazooPeer, false, false, false},
	}},
}

// soakGrace is how long after its lockex is resumed a frozen run's writes
// are excused: the kill grace (lossFlags) and a second.
const soakGrace = 2 * time.Second

// soakDrain bounds the wait, after the soak's length, for the last runs to
// end; a run still going then is killed and reported.
const soakDrain = 45 * time.Second

type soak struct {
	t       *testing.T
	kind    soakKind
	rng     *rand.Rand   // the faults'
	rngs    []*rand.Rand // each contender's holds and children
	ens     *zktest.Cluster
	proxies [][]*zktest.Proxy // [contender][server]
	stderr  []*os.File        // [contender]: its full pipe, or nil
	logPath string

	// repairs tracks the undoing of faults (a pass, a resume, a restart),
	// which must be over before the soak reports and the cluster goes.
	repairs sync.WaitGroup

	mu       sync.Mutex
	running  []*soakRun     // each contender's current run, nil between runs
	frozen   []freezeWindow // when each run was frozen
	faults   map[string]int
	exits    map[string]map[int]int // by "lockex" or "kazoo"
	wedged   []string               // runs killed soakDrain after the end
	serverUp []bool
	// events is the schedule as it happened, and logs each run's stderr,
	// for explaining a violation.
	events []string
	logs   map[string]*started
	began  time.Time
}

type soakRun struct {
	who   string
	how   runner
	child bool // its workload leaves a background writer
	lx    *started
}

type freezeWindow struct {
	who      string
	from, to int64 // unix ns
}

func newSoak(t *testing.T, seed int64, kind soakKind) *soak {
	s := &soak{
		t:       t,
		kind:    kind,
		rng:     rand.New(rand.NewPCG(uint64(seed), uint64(kind.size)<<8)),
		ens:     zktest.StartEnsemble(t, 3, zktest.SessionTimeouts(400*time.Millisecond, 20*time.Second), zktest.Partitions()),
		logPath: filepath.Join(t.TempDir(), "log"),
		running: make([]*soakRun, len(kind.fleet)),
		stderr:  make([]*os.File, len(kind.fleet)),
		faults:  map[string]int{},
		exits:   map[string]map[int]int{"lockex": {}, "kazoo": {}},
		logs:    map[string]*started{},
	}
	for i, c := range kind.fleet {
		// One stream each, so that a seed repeats each one's choices
		// however the contenders' runs interleave.
		s.rngs = append(s.rngs, rand.New(rand.NewPCG(uint64(seed), uint64(kind.size)<<8|uint64(i+1))))
		var ps []*zktest.Proxy
		for _, srv := range s.ens.Servers {
			ps = append(ps, zktest.StartProxy(t, srv.Addr()))
		}
		s.proxies = append(s.proxies, ps)
		if c.fullStderr {
			s.stderr[i] = fullPipe(t)
		}
	}
	s.serverUp = slices.Repeat([]bool{true}, len(s.ens.Servers))
	return s
}

// fullPipe returns the write end of a pipe that is full and that nothing
// reads until the test ends: a write to it blocks, as on a stderr whose
// reader has stopped reading.
func fullPipe(t *testing.T) *os.File {
	t.Helper()
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for _, n := range []int{len(chunk), 1} { // pages, then the last bytes
		for {
			if _, err := syscall.Write(fds[1], chunk[:n]); err == syscall.EAGAIN {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
	}
	// Blocking, as a pipe handed down by a parent is.
	if err := syscall.SetNonblock(fds[1], false); err != nil {
		t.Fatal(err)
	}
	w := os.NewFile(uintptr(fds[1]), "full stderr")
	t.Cleanup(func() {
		w.Close()
		syscall.Close(fds[0])
	})
	return w
}

// run lets the contenders take turns for length while faults are injected,
// then lets everything recover and waits for the last runs to end.
func (s *soak) run(length time.Duration) {
	s.began = time.Now()
	end := s.began.Add(length)
	var wg sync.WaitGroup
	for i := range s.running {
		wg.Go(func() { s.contend(i, end) })
	}
	for time.Now().Before(end) {
		time.Sleep(time.Duration(500+s.rng.IntN(1500)) * time.Millisecond)
		s.inject()
	}
	wg.Wait()
	s.repairs.Wait()
}

// contend runs contender i again and again until end.
func (s *soak) contend(i int, end time.Time) {
	c := s.kind.fleet[i]
	hosts := make([]string, len(s.proxies[i]))
	for j, p := range s.proxies[i] {
		hosts[j] = p.Addr()
	}
	for n := 1; time.Now().Before(end); n++ {
		who := fmt.Sprintf("%s.%d", c.name, n)
		rng := s.rngs[i]
		// Short runs make many handoffs; long ones outlive the deadline a
		// fault starts, so that faults end in losses too.
		hold := time.Duration(50+rng.IntN(350)) * time.Millisecond
		if rng.IntN(2) == 0 {
			hold = time.Duration(1000+rng.IntN(4000)) * time.Millisecond
		}
		// Host contenders start no background child (see onHost).
		child := rng.IntN(2) == 0
		r := &soakRun{who: who, how: c.how, child: child, lx: s.start(i, strings.Join(hosts, ","), who, hold, child)}
		s.mu.Lock()
		s.running[i] = r
		s.logs[who] = r.lx
		s.event("%s starts (hold %s)", who, hold)
		s.mu.Unlock()
		select {
		case <-r.lx.done:
		case <-time.After(time.Until(end.Add(soakDrain))):
			s.mu.Lock()
			s.wedged = append(s.wedged, who)
			s.mu.Unlock()
			r.kill()
			<-r.lx.done
		}
		code := r.lx.code
		if r.how == asPID1 && code == 1 && strings.Contains(r.lx.stderr.String(), "sigprocmask unblock failed") {
			// util-linux 2.38's unshare passes on the signal that ended
			// lockex by raising it itself, which for SIGKILL fails
			// (signal(SIGKILL, SIG_DFL) is refused): it says so, exits 1.
			code = 137
		}
		s.mu.Lock()
		s.running[i] = nil
		s.event("%s exits %d", who, code)
		s.exits[r.program()][code]++
		s.mu.Unlock()
		switch {
		case code == 0, code == 69, code == 76, code == 137: // done, unreachable, lost, killed by the soak
		case code == 77 && c.health: // stopped for its health
		default:
			s.t.Errorf("%s: exit %d; log:\n%s", who, code, r.lx.stderr)
		}
	}
}

// start starts one run of contender i: lockex, on the host or as PID 1,
// with a ticker workload, or a kazoo peer; child asks for a background
// writer.
func (s *soak) start(i int, hosts, who string, hold time.Duration, child bool) *started {
	c := s.kind.fleet[i]
	if c.how == kazooPeer {
		bg := "0"
		if child {
			bg = "1"
		}
		return startCmd(s.t, exec.Command(python, "testdata/kazoo_peer.py", hosts, "sem-ticker", "/lockex/soak", who,
			strconv.Itoa(s.kind.size), s.logPath, who, fmt.Sprintf("%.3f", hold.Seconds()), bg, "4"))
	}
	workload := ticker(s.logPath, who, hold, false)
	if child {
		workload = tickerWithChild(s.logPath, who, hold)
	}
	args := append([]string{"-z", hosts, "-i", "soak", "-c", strconv.Itoa(s.kind.size), "-T", "3s"}, lossFlags...)
	if c.health {
		args = append(args, soakHealth...)
	}
	if c.standby {
		args = append(args, soakStandby...)
	}
	args = append(append(args, "--"), workload...)
	cmd := exec.Command(lockexBin, args...)
	if c.how == asPID1 {
		// --kill-child: if the test dies, lockex and its namespace go too.
		cmd = exec.Command("unshare", append([]string{"--pid", "--fork", "--mount-proc", "--kill-child", lockexBin}, args...)...)
	}
	if s.stderr[i] != nil {
		cmd.Stderr = s.stderr[i]
	}
	return startCmd(s.t, cmd)
}

// program is what a run's exit code is lockex's or kazoo's.
func (r *soakRun) program() string {
	if r.how == kazooPeer {
		return "kazoo"
	}
	return "lockex"
}

// pid is the process that holds the lock: lockex itself (for asPID1, the
// child of unshare), or the kazoo peer; 0 when there is none (yet).
func (r *soakRun) pid() int {
	pid := r.lx.cmd.Process.Pid
	if r.how != asPID1 {
		return pid
	}
	if kids := childrenOf(pid); len(kids) == 1 {
		return kids[0]
	}
	return 0
}

// kill kills a run with SIGKILL: for asPID1, lockex and unshare.
func (r *soakRun) kill() {
	if pid := r.pid(); pid != 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = r.lx.cmd.Process.Kill()
}

// inject applies one random fault and, in the background, its repair.
func (s *soak) inject() {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Every draw is made whatever the state, so that a seed repeats the
	// kinds and lengths of the faults; only whom they hit depends on timing.
	i, toHolder := s.rng.IntN(len(s.running)), s.rng.IntN(10) < 7
	d := time.Duration(500+s.rng.IntN(5500)) * time.Millisecond // up to 1.5 session timeouts
	kind, j := s.rng.IntN(8), s.rng.IntN(len(s.ens.Servers))
	if h, ok := s.holder(); ok && toHolder {
		i = h // most faults hit a holder, where they matter most
	}
	switch kind {
	case 0, 1:
		name, fault := "stall", (*zktest.Proxy).Stall
		if kind == 1 {
			name, fault = "cut", (*zktest.Proxy).Cut
		}
		s.faults[name]++
		s.event("%s %s for %s", name, s.kind.fleet[i].name, d)
		for _, p := range s.proxies[i] {
			fault(p)
		}
		s.after(d, func() {
			for _, p := range s.proxies[i] {
				p.Pass()
			}
			s.mu.Lock()
			s.event("pass %s", s.kind.fleet[i].name)
			s.mu.Unlock()
		})
	case 2:
		if r := s.running[i]; r != nil {
			if pid := r.pid(); pid != 0 {
				// Told apart, to show that SIGKILL hit a lockex with a
				// background child under it.
				name := "kill -9"
				switch {
				case r.how == asPID1 && r.child:
					name = "kill -9 (PID 1 with a child)"
				case r.how == onHost && r.child:
					name = "kill -9 (host, with a child)"
				}
				s.faults[name]++
				s.event("kill -9 %s", r.who)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	case 3:
		if r := s.running[i]; r != nil {
			if pid := r.pid(); pid != 0 {
				s.faults["freeze"]++
				s.event("freeze %s for %s", r.who, d)
				s.repairs.Go(func() { s.freeze(r.who, pid, d) })
			}
		}
	case 4, 5, 6, 7:
		if slices.Contains(s.serverUp, false) {
			return // one member down at a time: the ensemble keeps a quorum
		}
		srv := s.ens.Servers[j]
		var repair func() error
		switch kind {
		case 4:
			s.faults["server kill"]++
			_ = srv.Kill()
			repair = srv.Start
		case 5:
			s.faults["server pause"]++
			if err := srv.Pause(); err != nil {
				s.t.Errorf("pausing server %d: %v", srv.ID(), err)
			}
			repair = func() error { return resume(srv) }
		case 6, 7:
			// 6 cuts a member from the leader alone (a follower then
			// stops serving; the leader, still followed by one, goes on),
			// 7 from both others (a leader so cut loses its quorum: the
			// 1|2 split). Clients' own links stay up throughout.
			var cut *zktest.Cut
			var err error
			leader, lerr := s.ens.Leader()
			switch {
			case kind == 6 && lerr == nil && leader != srv:
				s.faults["partition follower|leader"]++
				cut, err = s.ens.Cut([]*zktest.Server{srv}, []*zktest.Server{leader})
			case kind == 6:
				return // no leader to cut from, or srv leads
			default:
				s.faults["partition 1|2"]++
				cut, err = s.ens.Isolate(srv)
			}
			if err != nil {
				s.t.Errorf("partitioning server %d: %v", srv.ID(), err)
				return
			}
			repair = func() error {
				if err := cut.Heal(); err != nil {
					return err
				}
				return serving(srv)
			}
		}
		s.serverUp[j] = false
		s.event("server %d down for %s", srv.ID(), d)
		s.after(d, func() {
			if err := repair(); err != nil {
				s.t.Errorf("server %d: %v", srv.ID(), err)
			}
			s.mu.Lock()
			s.serverUp[j] = true
			s.event("server %d serves again", srv.ID())
			s.mu.Unlock()
		})
	}
}

// resume lets a paused member run again and returns once it serves: until
// then the ensemble has one member fewer, and taking another would leave
// it without a quorum.
func resume(srv *zktest.Server) error {
	if err := srv.Resume(); err != nil {
		return err
	}
	return serving(srv)
}

// serving waits until srv serves again, as leader or follower.
func serving(srv *zktest.Server) error {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if mode, err := srv.Mode(); err == nil && (mode == "leader" || mode == "follower") {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("not serving 30s after its fault was repaired (mode %q, %v)", mode, err)
		}
	}
}

// after runs a repair after d, counted in s.repairs.
func (s *soak) after(d time.Duration, repair func()) {
	s.repairs.Add(1)
	time.AfterFunc(d, func() {
		defer s.repairs.Done()
		repair()
	})
}

// holder is the contender that wrote the log's last record.
func (s *soak) holder() (int, bool) {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return 0, false
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) != 4 {
		return 0, false
	}
	name, _, _ := strings.Cut(f[2], ".")
	i := slices.IndexFunc(s.kind.fleet, func(c contender) bool { return c.name == name })
	return i, i >= 0
}

// freeze stops a run's lock holder (lockex, or the kazoo peer), then
// lockex's workload, as a paused container, for d; the workload is
// resumed first.
func (s *soak) freeze(who string, pid int, d time.Duration) {
	from := time.Now()
	if syscall.Kill(pid, syscall.SIGSTOP) != nil {
		return
	}
	// Once lockex is stopped its children cannot change.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, state := statOf(pid); state == 'T' || state == 0 {
			break
		}
	}
	kids := childrenOf(pid)
	for _, k := range kids {
		_ = syscall.Kill(-k, syscall.SIGSTOP)
	}
	time.Sleep(d)
	for _, k := range kids {
		_ = syscall.Kill(-k, syscall.SIGCONT)
	}
	_ = syscall.Kill(pid, syscall.SIGCONT)
	s.mu.Lock()
	s.frozen = append(s.frozen, freezeWindow{who, from.UnixNano(), time.Now().UnixNano()})
	s.event("thaw %s", who)
	s.mu.Unlock()
}

// report judges the log and prints what happened.
func (s *soak) report(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	runs := readRuns(t, s.logPath)
	excused := func(who string, from, to int64) bool {
		// A frozen run may write after a newer holder started only until
		// lockex, resumed, stops it: within the kill grace and a second.
		for _, f := range s.frozen {
			if f.who == who && from < f.to && to >= f.from && to <= f.to+int64(soakGrace) {
				return true
			}
		}
		return false
	}
	var v verdict
	if s.kind.size == 1 {
		v = judge(runs, excused)
	} else {
		v = judgeSemaphore(runs, s.kind.size, excused)
	}
	var faults []string
	total := 0
	for k, n := range s.faults {
		faults = append(faults, fmt.Sprintf("%s %d", k, n))
		total += n
	}
	sort.Strings(faults)
	var exits []string
	for _, prog := range []string{"lockex", "kazoo"} {
		var codes []string
		for code, n := range s.exits[prog] {
			codes = append(codes, fmt.Sprintf("%d×%d", n, code))
		}
		if len(codes) > 0 {
			sort.Strings(codes)
			exits = append(exits, prog+" "+strings.Join(codes, " "))
		}
	}
	// Left the queue for the standby check, as far as logs that were read
	// tell (not those of a full stderr).
	leaves := 0
	for _, lx := range s.logs {
		leaves += strings.Count(lx.stderr.String(), "standby check failed; left the queue")
	}
	fmt.Printf("soak %s (%d contenders, at most %d at once): %d runs (%d with a background writer), %d faults (%s), exits %s, standby leaves %d, wedged %d, stale writes %d, violations %d\n",
		s.kind.name, len(s.kind.fleet), s.kind.size, v.runs, s.withBackground(), total, strings.Join(faults, ", "),
		strings.Join(exits, "; "), leaves, len(s.wedged), v.stale, len(v.problems))
	for _, p := range v.problems {
		t.Error(p)
	}
	if len(v.problems) > 0 {
		s.explain(t, v.problems)
	}
	if len(s.wedged) > 0 {
		t.Errorf("still running %s after the soak's end, killed: %s", soakDrain, strings.Join(s.wedged, " "))
	}
	if v.runs < 2 {
		t.Errorf("only %d runs: the soak did not exercise handoffs", v.runs)
	}
	if s.kind.size > 1 {
		if v.overlap < s.kind.size {
			t.Errorf("at most %d runs at once: the soak did not fill the semaphore's %d leases", v.overlap, s.kind.size)
		}
		var kazoo, lx int
		for _, r := range runs {
			if strings.HasPrefix(r.who, "k") {
				kazoo++
			} else {
				lx++
			}
		}
		if kazoo == 0 || lx == 0 {
			t.Errorf("%d lockex and %d kazoo runs: the fleet did not mix", lx, kazoo)
		}
	}
}

// withBackground counts the runs that have records of a background writer.
func (s *soak) withBackground() int {
	b, _ := os.ReadFile(s.logPath)
	runs := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "bg" {
			runs[f[2]+"/"+f[3]] = true
		}
	}
	return len(runs)
}

// event notes what just happened, with the time since the soak began and
// the unix time the log's records carry; s.mu is held.
func (s *soak) event(format string, args ...any) {
	now := time.Now()
	s.events = append(s.events, fmt.Sprintf("%8.3fs %d %s", now.Sub(s.began).Seconds(), now.UnixNano(), fmt.Sprintf(format, args...)))
}

// explain logs, for violations, the schedule as it happened and the
// stderr of every run they name.
func (s *soak) explain(t *testing.T, problems []string) {
	t.Logf("schedule:\n%s", strings.Join(s.events, "\n"))
	named := map[string]bool{}
	for _, p := range problems {
		for _, w := range strings.FieldsFunc(p, func(r rune) bool { return r == ' ' || r == '(' || r == ',' || r == ':' }) {
			if lx := s.logs[w]; lx != nil && !named[w] {
				named[w] = true
				t.Logf("%s's stderr:\n%s", w, lx.stderr)
			}
		}
	}
}
