package kube

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/zktest"
)

// The lock's timings in every scenario. zktest's server grants sessions of
// at most 4s (20 ticks of 200ms); the grace must stay under 55% of it.
const (
	sessionTimeout = 4 * time.Second
	killGrace      = "2s"
	// startTimeout bounds the wait for a pod's workload: lockex connects
	// and takes a free lock in well under a second, but the machine is
	// shared.
	startTimeout = 60 * time.Second
)

// scenario is one test's world: a ZooKeeper server on 127.0.0.1, a witness
// the workloads report to, and a release of the chart.
type scenario struct {
	t   *testing.T
	zk  *zktest.Cluster
	w   *witness
	rel *release
}

// scene is what a scenario runs: the workload's image, the lockex image
// (the Dockerfile's or ko's), whether the workload writes /tmp first (as
// the scenarios of the chart's defaults require), and ZooKeeper's options.
type scene struct {
	workload, lockex func(kitImages) string
	writeTmp         bool
	zk               []zktest.Option
}

// newScenario starts ZooKeeper and the witness, and prepares a release
// named for the test with the kit's values for su.
func newScenario(t *testing.T, short string, su scene) *scenario {
	t.Helper()
	img := images(t)
	s := &scenario{t: t, zk: zktest.Start(t, su.zk...), w: newWitness(t)}
	values := kitValues(su.workload(img), su.lockex(img), s.zk.Hosts(), s.w.script(su.writeTmp))
	s.rel = newRelease(t, "k"+runID+"-"+short, values)
	return s
}

// kitValues are the values every scenario starts from: the workload image
// and its command (script, run by sh), the lockex image, ZooKeeper's hosts
// and the lock's timings.
func kitValues(workload, lockex, hosts, script string) map[string]any {
	repo, tag := splitRef(workload)
	lrepo, ltag := splitRef(lockex)
	return map[string]any{
		"image":       map[string]any{"repository": repo, "tag": tag},
		"lockexImage": map[string]any{"repository": lrepo, "tag": ltag},
		"command":     []string{"/bin/sh", "-c", script},
		"zookeeper":   map[string]any{"hosts": hosts},
		"lock":        map[string]any{"sessionTimeout": sessionTimeout.String(), "killGrace": killGrace},
	}
}

// withSemaphore: two leases, three replicas.
func withSemaphore(v map[string]any) {
	v["singleton"] = false
	v["concurrency"] = 2
	v["replicaCount"] = 3
}

func splitRef(ref string) (repo, tag string) {
	i := strings.LastIndex(ref, ":")
	return ref[:i], ref[i+1:]
}

// start plays n replicas.
func (s *scenario) start(n int) []*pod {
	var pods []*pod
	for i := range n {
		pods = append(pods, s.rel.start(i))
	}
	return pods
}

// noCrash fails the wait when a replica's workload container exited or
// restarted.
func (s *scenario) noCrash() error {
	for _, p := range s.rel.pods {
		if err := p.crashed(s.t); err != nil {
			return err
		}
	}
	return nil
}

// waitRunning waits until exactly n workloads run and returns them.
func (s *scenario) waitRunning(n int, what string) []string {
	s.t.Helper()
	return s.w.wait(s.t, what, startTimeout, func(ids []string) bool { return len(ids) == n }, s.noCrash)
}

// pod returns the replica whose witness id is id.
func (s *scenario) pod(id string) *pod {
	s.t.Helper()
	for _, p := range s.rel.pods {
		if id == p.name {
			return p
		}
	}
	s.t.Fatalf("witness id %q is no replica's", id)
	return nil
}

// waitProbe waits until the pod's probe of path answers code.
func (s *scenario) waitProbe(p *pod, port int, path string, code int) {
	s.t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		got, body, err := p.get(port, path)
		if err == nil && got == code {
			return
		}
		if err := s.noCrash(); err != nil {
			s.t.Fatalf("waiting for %s %s to answer %d: %v", p.name, path, code, err)
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s %s: %d %q (%v), want %d within %v", p.name, path, got, body, err, code, startTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// expectProbe asks the pod's lockex for path once and checks the code.
func (s *scenario) expectProbe(p *pod, port int, path string, code int, role string) {
	s.t.Helper()
	got, body, err := p.get(port, path)
	if err != nil || got != code {
		s.t.Errorf("%s (%s) %s: %d %q (%v), want %d", p.name, role, path, got, body, err, code)
	}
}

// singletonDefaults: two replicas of singleton: true with the chart's
// defaults and an ordinary image that writes /tmp. Exactly one workload
// runs, as the image's own user, and the other replica is a Ready standby.
func singletonDefaults(t *testing.T, short string, image func(kitImages) string, uid int) {
	s := newScenario(t, short, scene{workload: image, lockex: koImage, writeTmp: true})
	holder, standby := s.handover()
	if got := s.w.uid(holder.name); got != strconv.Itoa(uid) {
		t.Errorf("the workload runs as uid %s, want %d: the image's own user", got, uid)
	}
	s.checkProbes(holder, standby)
	if now, most := s.w.now(); len(now) != 1 || most != 1 {
		t.Errorf("running %q, at most %d at once: want exactly one\n%s", now, most, s.w.log())
	}
}

// checkProbes asks the holder's and the standby's lockex what the kubelet
// asks, at the paths and ports the chart renders, and the three paths the
// README documents: /healthz and /readyz 200 on both (connected, holding
// or waiting), /active 200 on the holder alone.
func (s *scenario) checkProbes(holder, standby *pod) {
	t := s.t
	t.Helper()
	for _, p := range []*pod{holder, standby} {
		role := map[bool]string{true: "holder", false: "standby"}[p == holder]
		livePath, livePort := p.probe(t, "liveness")
		readyPath, readyPort := p.probe(t, "readiness")
		if livePath != "/healthz" || readyPath != "/readyz" {
			t.Errorf("%s: probes %s and %s, want /healthz and /readyz (README: a waiting standby must be Ready)", p.name, livePath, readyPath)
		}
		if livePort != p.port || readyPort != p.port {
			t.Errorf("%s: probes on ports %d and %d, lockex serves on %d", p.name, livePort, readyPort, p.port)
		}
		s.expectProbe(p, livePort, livePath, 200, role)
		s.expectProbe(p, readyPort, readyPath, 200, role)
		s.expectProbe(p, p.port, "/healthz", 200, role)
		s.expectProbe(p, p.port, "/readyz", 200, role)
		s.expectProbe(p, p.port, "/active", map[bool]int{true: 200, false: 503}[p == holder], role)
	}
}

// TestSingletonRootImage: an image that runs as root (no USER) and writes
// /tmp, as most do.
func TestSingletonRootImage(t *testing.T) {
	singletonDefaults(t, "root", func(i kitImages) string { return i.root }, 0)
}

// TestSingletonNonRootImage: an image whose USER is a non-root uid of its
// own, writing /tmp.
func TestSingletonNonRootImage(t *testing.T) {
	singletonDefaults(t, "nonroot", func(i kitImages) string { return i.nonroot }, appUID)
}

// nonroot is the image of the scenarios that test lockex's mechanisms
// rather than the chart's defaults: it runs whatever uid the chart gives
// it, and their workload does not write /tmp.
func nonroot(i kitImages) string { return i.nonroot }

// The two lockex images: the chart's default lockexImage is the one the
// release builds with ko, so the scenarios of the defaults run that; the
// others run the Dockerfile's.
func koImage(i kitImages) string         { return i.ko }
func dockerfileImage(i kitImages) string { return i.lockex }

// TestProbes: the probes of a holder and a standby answer as documented.
// Its workload writes nothing, so that it runs whatever the chart does to
// /tmp.
func TestProbes(t *testing.T) {
	s := newScenario(t, "probes", scene{workload: nonroot, lockex: koImage})
	holder, standby := s.handover()
	s.checkProbes(holder, standby)
}

// handover starts two replicas, waits for the holder and a Ready standby,
// and returns them.
func (s *scenario) handover() (holder, standby *pod) {
	pods := s.start(2)
	ids := s.waitRunning(1, "the holder's workload")
	holder = s.pod(ids[0])
	standby = pods[0]
	if holder == pods[0] {
		standby = pods[1]
	}
	path, port := standby.probe(s.t, "readiness")
	s.waitProbe(standby, port, path, 200)
	s.expectProbe(standby, standby.port, "/active", 503, "standby")
	return holder, standby
}

// TestStopHolder: podman pod stop of the holder (SIGTERM, as a rolling
// update or a drain sends) → lockex stops its workload and releases the
// lock, and the standby's workload starts at once, long before the
// holder's session could have expired.
func TestStopHolder(t *testing.T) {
	s := newScenario(t, "stop", scene{workload: nonroot, lockex: dockerfileImage})
	holder, standby := s.handover()
	run(t, "podman", "pod", "stop", holder.name)
	s.w.wait(t, "the standby's workload", startTimeout, func(ids []string) bool {
		return len(ids) == 1 && s.pod(ids[0]) == standby
	}, nil)
	_, ended := s.w.times(holder.name)
	started, _ := s.w.times(standby.name)
	gap := started.Sub(ended)
	t.Logf("the holder's workload ended, the standby's started %v later", gap)
	if ended.IsZero() || gap < 0 {
		t.Errorf("the standby's workload started before the holder's ended\n%s", s.w.log())
	}
	if gap >= sessionTimeout {
		t.Errorf("the standby started %v after the holder ended, not before the session timeout (%v): the lock was not released\n%s", gap, sessionTimeout, s.w.log())
	}
	if _, most := s.w.now(); most != 1 {
		t.Errorf("%d workloads ran at once\n%s", most, s.w.log())
	}
}

// TestKillHolder: SIGKILL of every process of the holder's pod (a node
// that dies) → nothing releases the lock; the standby's workload starts
// once the holder's session expires, and never before its workload died.
func TestKillHolder(t *testing.T) {
	s := newScenario(t, "kill", scene{workload: nonroot, lockex: dockerfileImage})
	holder, standby := s.handover()
	killed := time.Now()
	run(t, "podman", "pod", "kill", "--signal", "KILL", holder.name)
	s.w.wait(t, "the standby's workload", sessionTimeout+startTimeout, func(ids []string) bool {
		return len(ids) == 1 && s.pod(ids[0]) == standby
	}, nil)
	_, ended := s.w.times(holder.name)
	started, _ := s.w.times(standby.name)
	t.Logf("SIGKILL at %s; the holder's workload ended %v later; the standby's started %v after the kill (session timeout %v)",
		killed.Format("15:04:05.000"), ended.Sub(killed), started.Sub(killed), sessionTimeout)
	if ended.IsZero() || started.Before(ended) {
		t.Errorf("the standby's workload started before the holder's ended\n%s", s.w.log())
	}
	if _, most := s.w.now(); most != 1 {
		t.Errorf("%d workloads ran at once\n%s", most, s.w.log())
	}
}

// TestSemaphore: concurrency: 2 with three replicas → two workloads run,
// never three; when one holder's pod stops, the third takes its lease.
func TestSemaphore(t *testing.T) {
	s := newScenario(t, "sem", scene{workload: nonroot, lockex: dockerfileImage})
	withSemaphore(s.rel.values)
	pods := s.start(3)
	ids := s.waitRunning(2, "two workloads")
	var waiting *pod
	for _, p := range pods {
		s.waitProbe(p, p.port, "/readyz", 200)
		holds := false
		for _, id := range ids {
			holds = holds || s.pod(id) == p
		}
		if !holds {
			waiting = p
		}
	}
	s.expectProbe(waiting, waiting.port, "/active", 503, "waiting")
	run(t, "podman", "pod", "stop", s.pod(ids[0]).name)
	s.w.wait(t, "the waiting replica's workload", startTimeout, func(now []string) bool {
		for _, id := range now {
			if s.pod(id) == waiting {
				return len(now) == 2
			}
		}
		return false
	}, nil)
	if _, most := s.w.now(); most != 2 {
		t.Errorf("at most %d workloads at once, want 2\n%s", most, s.w.log())
	}
}
