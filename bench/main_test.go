// Package bench measures lockex against a real local ZooKeeper, the way
// users feel it: start-up, graceful handoff, crash takeover, the herd of
// waiters, semaphore throughput and the footprint of a holder, each side by
// side with the physical limit (one ZooKeeper round trip, the session
// timeout). `make bench` runs it, prints a table and writes
// docs/benchmarks.md.
//
// It is an opt-in report, not a test: TestBench is skipped unless
// LOCKEX_BENCH=1 (an environment gate, unlike the rest of the suite,
// because it takes minutes and its numbers only mean something on a quiet
// machine), so `make test` never runs it, and nothing in it passes or
// fails on a number.
//
// Environment: LOCKEX_BENCH=1 runs it; LOCKEX_BENCH_VERSION is stamped
// into the lockex binary it builds (make passes its VERSION);
// LOCKEX_BENCH_OUT is where the report goes (default
// ../docs/benchmarks.md, from this directory).
package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"testing"
	"time"
)

// The test binary doubles as the workload that lockex runs, chosen by
// BENCH_HELPER (not LOCKEX_-prefixed: lockex reads those as its flags).
const (
	helperEnv = "BENCH_HELPER" // "hold" or "gate"
	gateEnv   = "BENCH_GATE"   // gate: the FIFO to open
	workEnv   = "BENCH_WORK"   // gate: how long to work once through it
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "hold":
		os.Exit(hold())
	case "gate":
		os.Exit(gate())
	}
	os.Exit(m.Run())
}

// hold is a workload that runs until its stdin (lockex's, which the bench
// holds the other end of) reaches end of file, then prints the moment it
// exits, so the bench can time a handoff from the workload's own end.
func hold() int {
	_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	fmt.Printf("exit %d\n", time.Now().UnixNano())
	return 0
}

// gate is a workload that blocks until the bench opens the FIFO for
// writing (opening a FIFO to read waits for a writer), then works for a
// while: the semaphore's contenders all queue up first and are then let go
// at once.
func gate() int {
	work, err := time.ParseDuration(os.Getenv(workEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "gate:", err)
		return 2
	}
	f, err := os.OpenFile(os.Getenv(gateEnv), os.O_RDONLY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gate:", err)
		return 2
	}
	f.Close()
	time.Sleep(work)
	return 0
}
