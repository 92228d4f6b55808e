package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/lockex/lockex/internal/zktest"
)

// How many times each figure is taken. Together they keep a full run near
// four minutes on a 2-core machine, well under make bench's ten; the
// footprint's idle minute and the takeovers (each a 2s session timeout)
// are most of it.
const (
	rttRuns          = 2000 // exists, and getData
	coldRuns         = 200  // getData, and the bare handoff, after coldIdle
	createDeleteRuns = 500
	startRuns        = 100 // lockex -- true
	trueRuns         = 200
	handoffRuns      = 100
	exitRuns         = 100 // the handoff's workload exiting, without lockex
	ensembleRuns     = 50  // the handoff on a 3-member ensemble
	takeoverRuns     = 20
	restartRuns      = 12 // each way: with the container's identity, and without
	semaphoreRuns    = 8
	footprintHolders = 5
	warmups          = 3 // runs of each kind not counted: the JVM warms up too

	idleWindow = time.Minute // footprint: CPU counted over this long
	// coldIdle is how long client and server idle before a "cold" round
	// trip: long enough for their threads to sleep, as lockex's do
	// between a handoff's steps.
	coldIdle = 20 * time.Millisecond
	// takeover: asked of every contender, so a run lasts about 2s; the
	// server's tick is 200ms.
	takeoverSession = 2 * time.Second
	takeoverGrace   = 500 * time.Millisecond
	// herd: waiters ask for the largest session timeout the server grants,
	// so their pings (every third of it) disturb the packet count least.
	herdSession = 20 * time.Second
	// semaphore: its leases, its contenders and their workload.
	semaphoreSize       = 5
	semaphoreContenders = 50
	semaphoreWork       = 10 * time.Millisecond
)

var herdSizes = []int{10, 50, 200}

// bench is one run of every measurement against one ZooKeeper server.
type bench struct {
	t      *testing.T
	began  time.Time
	bin    string // the stripped release build of lockex
	helper string // this test binary, run by lockex as a workload
	tmp    string

	zk   *zktest.Cluster
	addr string
	conn *zk.Conn // the bench's own session, for the limits and for looking
	peer *zk.Conn // a second one, for the bare handoff

	machine   machine
	zkVersion string
	sections  []*section
	r         results
}

// section is a group of figures in the report.
type section struct {
	title   string
	figures []figure
}

func (b *bench) section(title string) {
	b.sections = append(b.sections, &section{title: title})
}

func (b *bench) add(f figure) figure {
	s := b.sections[len(b.sections)-1]
	s.figures = append(s.figures, f)
	sum := f.summary()
	fmt.Printf("  %-52s n=%-5d median %-12s p99 %-12s min %-12s max %s\n",
		f.name, sum.n, f.unit.format(sum.median), f.unit.format(sum.p99), f.unit.format(sum.min), f.unit.format(sum.max))
	return f
}

// TestBench runs every measurement and writes the report. See the package
// comment for why it is gated on LOCKEX_BENCH=1.
func TestBench(t *testing.T) {
	if os.Getenv("LOCKEX_BENCH") != "1" {
		t.Skip("an opt-in report, not a test: run `make bench` (LOCKEX_BENCH=1)")
	}
	helper, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{t: t, began: time.Now(), helper: helper, tmp: t.TempDir(), machine: readMachine()}
	b.build()
	if os.Getenv("LOCKEX_BENCH_ONLY") == "size" {
		fmt.Printf("stripped binary: %d B now, %d B before the Kubernetes mode (%s)\n", b.r.binSize, b.r.binSizeBeforeKube, beforeKubeMode)
		return
	}
	b.startZK()
	b.zkVersion = b.serverVersion()
	fmt.Printf("lockex %s (%s), ZooKeeper %s at %s; load average %s\n",
		b.bin, b.machine.goVer, b.zkVersion, b.addr, b.machine.loadavg1)

	b.measureLimits()
	// While working on one section: its figures on the terminal only; the
	// report needs every figure.
	switch os.Getenv("LOCKEX_BENCH_ONLY") {
	case "handoff": // and its floor
		b.measureHandoff()
		return
	case "restart":
		b.measureRestart()
		return
	}
	b.measureStart()
	b.measureHandoff()
	b.measureTakeover()
	b.measureRestart()
	b.measureHerd()
	b.measureSemaphore()
	b.measureFootprint()
	// Last: its three JVMs would disturb the figures above.
	b.measureEnsembleHandoff()

	b.report()
}

// beforeKubeMode is the commit before the one that taught lockex to patch
// its pod (--active-label, then --deletion-cost): issue 15 asks what that
// costs in binary size, so the bench builds both.
const beforeKubeMode = "45cd57c^"

// build makes lockex exactly as `make build` does: static, trimmed paths,
// no symbol table or debug information; and lockex as it was before the
// Kubernetes mode, from the repository's history, the same way.
func (b *bench) build() {
	version := os.Getenv("LOCKEX_BENCH_VERSION")
	if version == "" {
		version = "bench"
	}
	b.bin = filepath.Join(b.tmp, "lockex")
	b.r.binSize = b.buildAt("..", b.bin, version)

	old := filepath.Join(b.tmp, "before-kube-mode")
	if err := os.Mkdir(old, 0o755); err != nil {
		b.t.Fatal(err)
	}
	// git archive | tar: the tree of that commit, without touching the
	// work tree the bench runs from.
	export := exec.Command("sh", "-c", `git -C .. archive --format=tar "$1" | tar -x -C "$2"`, "sh", beforeKubeMode, old)
	if out, err := export.CombinedOutput(); err != nil {
		b.t.Fatalf("exporting %s for the size before the Kubernetes mode (a shallow clone lacks it): %v\n%s", beforeKubeMode, err, out)
	}
	b.r.binSizeBeforeKube = b.buildAt(old, filepath.Join(b.tmp, "lockex-before-kube-mode"), version)
}

// buildAt builds ./cmd/lockex of the module at dir into bin and returns
// its size.
func (b *bench) buildAt(dir, bin, version string) int64 {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(goTool, "build", "-trimpath",
		"-ldflags", "-s -w -X github.com/lockex/lockex/internal/app.Version="+version,
		"-o", bin, "./cmd/lockex")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.t.Fatalf("building lockex in %s: %v\n%s", dir, err, out)
	}
	st, err := os.Stat(bin)
	if err != nil {
		b.t.Fatal(err)
	}
	return st.Size()
}
