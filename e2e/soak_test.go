package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
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

// TestSoak runs contenders on one lock under a random schedule of faults
// and checks, from the workloads' own records, that no two ever ran at once
// (a frozen holder's stale writes, which carry a lower fencing token, are
// the one exception). LOCKEX_SOAK sets its length (default 1m; make soak
// runs longer), LOCKEX_SOAK_SEED its seed (default: from the clock); the
// seed is printed so that a failing schedule can be run again.
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
	fmt.Printf("soak: %s, seed %d (LOCKEX_SOAK_SEED=%d to repeat)\n", length, seed, seed)

	s := newSoak(t, seed, 4)
	s.run(length)
	s.report(t)
}

type soak struct {
	t       *testing.T
	rng     *rand.Rand
	ens     *zktest.Cluster
	proxies [][]*zktest.Proxy // [contender][server]
	logPath string

	// repairs tracks the undoing of faults (a pass, a resume, a restart),
	// which must be over before the soak reports and the cluster goes.
	repairs sync.WaitGroup

	mu       sync.Mutex
	running  []*soakRun     // each contender's current lockex, nil between runs
	frozen   []freezeWindow // when each run's lockex and workload were frozen
	faults   map[string]int
	exits    map[int]int
	serverUp []bool
}

type soakRun struct {
	who string
	lx  *started
}

type freezeWindow struct {
	who      string
	from, to int64 // unix ns
}

func newSoak(t *testing.T, seed int64, contenders int) *soak {
	s := &soak{
		t:       t,
		rng:     rand.New(rand.NewPCG(uint64(seed), 0x10cce)),
		ens:     zktest.StartEnsemble(t, 3, zktest.SessionTimeouts(400*time.Millisecond, 20*time.Second)),
		logPath: filepath.Join(t.TempDir(), "log"),
		running: make([]*soakRun, contenders),
		faults:  map[string]int{},
		exits:   map[int]int{},
	}
	for range contenders {
		var ps []*zktest.Proxy
		for _, srv := range s.ens.Servers {
			ps = append(ps, zktest.StartProxy(t, srv.Addr()))
		}
		s.proxies = append(s.proxies, ps)
	}
	s.serverUp = slices.Repeat([]bool{true}, len(s.ens.Servers))
	return s
}

// run lets the contenders take turns for length while faults are injected,
// then lets everything recover and waits for the last runs to end.
func (s *soak) run(length time.Duration) {
	end := time.Now().Add(length)
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

// contend runs lockex for contender i again and again until end.
func (s *soak) contend(i int, end time.Time) {
	hosts := make([]string, len(s.proxies[i]))
	for j, p := range s.proxies[i] {
		hosts[j] = p.Addr()
	}
	for n := 1; time.Now().Before(end); n++ {
		who := fmt.Sprintf("c%d.%d", i, n)
		s.mu.Lock()
		// Short runs make many handoffs; long ones outlive the deadline a
		// fault starts, so that faults end in losses too.
		hold := time.Duration(50+s.rng.IntN(350)) * time.Millisecond
		if s.rng.IntN(2) == 0 {
			hold = time.Duration(1000+s.rng.IntN(4000)) * time.Millisecond
		}
		s.mu.Unlock()
		args := append([]string{"-z", strings.Join(hosts, ","), "-i", "soak", "-T", "3s"}, lossFlags...)
		lx := startLockex(s.t, nil, append(append(args, "--"), ticker(s.logPath, who, hold, false)...)...)
		s.mu.Lock()
		s.running[i] = &soakRun{who: who, lx: lx}
		s.mu.Unlock()
		code := lx.wait(s.t, 2*time.Minute)
		s.mu.Lock()
		s.running[i] = nil
		s.exits[code]++
		s.mu.Unlock()
		switch code {
		case 0, 69, 76, 137: // done, unreachable, lost, killed by the soak
		default:
			s.t.Errorf("%s: exit %d; log:\n%s", who, code, lx.stderr)
		}
	}
}

// inject applies one random fault and, in the background, its repair.
func (s *soak) inject() {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.rng.IntN(len(s.running))
	if h, ok := s.holder(); ok && s.rng.IntN(10) < 7 {
		i = h // most faults hit the holder, where they matter most
	}
	d := time.Duration(500+s.rng.IntN(5500)) * time.Millisecond // up to 1.5 session timeouts
	switch kind := s.rng.IntN(5); kind {
	case 0, 1:
		name, fault := "stall", (*zktest.Proxy).Stall
		if kind == 1 {
			name, fault = "cut", (*zktest.Proxy).Cut
		}
		s.faults[name]++
		for _, p := range s.proxies[i] {
			fault(p)
		}
		s.after(d, func() {
			for _, p := range s.proxies[i] {
				p.Pass()
			}
		})
	case 2:
		if r := s.running[i]; r != nil {
			s.faults["kill -9"]++
			_ = r.lx.cmd.Process.Kill()
		}
	case 3:
		if r := s.running[i]; r != nil {
			s.faults["freeze"]++
			s.repairs.Go(func() { s.freeze(r, d) })
		}
	case 4:
		j := s.rng.IntN(len(s.ens.Servers))
		if slices.Contains(s.serverUp, false) {
			return // one member down at a time: the ensemble keeps a quorum
		}
		s.faults["server kill"]++
		s.serverUp[j] = false
		srv := s.ens.Servers[j]
		_ = srv.Kill()
		s.after(d, func() {
			if err := srv.Start(); err != nil {
				s.t.Errorf("restarting server %d: %v", srv.ID(), err)
			}
			s.mu.Lock()
			s.serverUp[j] = true
			s.mu.Unlock()
		})
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
	var i, n int
	if len(f) != 4 {
		return 0, false
	}
	if _, err := fmt.Sscanf(f[2], "c%d.%d", &i, &n); err != nil || i >= len(s.running) {
		return 0, false
	}
	return i, true
}

// freeze stops a run's lockex, then its workload, as a paused container,
// for d; the workload is resumed first.
func (s *soak) freeze(r *soakRun, d time.Duration) {
	pid := r.lx.cmd.Process.Pid
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
	s.frozen = append(s.frozen, freezeWindow{r.who, from.UnixNano(), time.Now().UnixNano()})
	s.mu.Unlock()
}

// report judges the log and prints what happened.
func (s *soak) report(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	runs := readRuns(t, s.logPath)
	v := judge(runs, func(who string, from, to int64) bool {
		// A frozen run may write after a newer holder started only until
		// lockex, resumed, stops it: within the kill grace and a second.
		for _, f := range s.frozen {
			if f.who == who && from < f.to && to >= f.from && to <= f.to+int64(2*time.Second) {
				return true
			}
		}
		return false
	})
	var faults, exits []string
	total := 0
	for k, n := range s.faults {
		faults = append(faults, fmt.Sprintf("%s %d", k, n))
		total += n
	}
	for code, n := range s.exits {
		exits = append(exits, fmt.Sprintf("%d×%d", n, code))
	}
	sort.Strings(faults)
	sort.Strings(exits)
	fmt.Printf("soak: %d runs (%d handoffs), %d faults (%s), exits %s, stale writes %d, overlap violations %d\n",
		v.runs, max(v.runs-1, 0), total, strings.Join(faults, ", "), strings.Join(exits, " "), v.stale, len(v.problems))
	for _, p := range v.problems {
		t.Error(p)
	}
	if v.runs < 2 {
		t.Errorf("only %d runs: the soak did not exercise handoffs", v.runs)
	}
}
