package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// measureSemaphore lets 50 contenders through a semaphore of 5 leases, each
// running a 10ms workload, and counts the leases handed out per second.
func (b *bench) measureSemaphore() {
	b.section(fmt.Sprintf("Semaphore: %d leases, %d contenders, %s workload", semaphoreSize, semaphoreContenders, semaphoreWork))
	var rates, gaps []float64
	for run := range semaphoreRuns {
		rate, g := b.semaphoreRun(run)
		rates = append(rates, rate)
		gaps = append(gaps, g...)
	}
	b.r.leaseRate = b.add(figure{name: "leases handed out per second", unit: perSecond, values: rates,
		limit: fmt.Sprintf("workload alone allows %.0f/s", float64(semaphoreSize)/semaphoreWork.Seconds()),
		how: fmt.Sprintf("%d lockex `-c %d` on a fresh lock per run; the workload (this test binary as a helper) first opens a FIFO, which blocks until the bench opens it for writing, then sleeps %s. Once %d hold a lease (their workloads blocked) and the other %d are queued on the semaphore's `-__lock__` mutex, the bench opens the FIFO. Leases granted after that (their `lock acquired` lines) divided by the time from the opening to the last grant; one value per run.",
			semaphoreContenders, semaphoreSize, semaphoreWork, semaphoreSize, semaphoreContenders-semaphoreSize)}).summary()
	b.r.leaseGap = b.add(figure{name: "  time between consecutive grants", unit: seconds, values: gaps,
		limit: fmtRT(gaps, b.r.rtt.median),
		how:   "The gaps between consecutive `lock acquired` times after the opening, over all runs: lease taking is serialised by the mutex."}).summary()
}

func (b *bench) semaphoreRun(run int) (rate float64, gaps []float64) {
	id := fmt.Sprintf("bench-semaphore-%d", run)
	fifo := filepath.Join(b.tmp, id+".gate")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		b.t.Fatal(err)
	}
	args := []string{"-z", b.addr, "-i", id, "-c", fmt.Sprint(semaphoreSize), "--log-format", "json", "--", b.helper}
	env := []string{helperEnv + "=gate", gateEnv + "=" + fifo, workEnv + "=" + semaphoreWork.String()}
	all := make([]*lockex, semaphoreContenders)
	for i := range all {
		all[i] = b.run(args, env, nil)
	}
	// Queued: the leases all taken, their workloads started (and by now
	// blocked on the gate), and everyone else in the mutex's queue.
	queued := func() bool {
		working := 0
		for _, l := range all {
			if _, ok := l.find("workload started"); ok {
				working++
			}
		}
		return working == semaphoreSize && len(b.children("/lockex/"+id)) == semaphoreSize &&
			len(b.children("/lockex/"+id+"-__lock__")) == semaphoreContenders-semaphoreSize
	}
	for deadline := time.Now().Add(2 * time.Minute); !queued(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.t.Fatalf("semaphore %s: contenders not queued within 2m", id)
		}
	}
	time.Sleep(watchSettle)
	opened := time.Now()
	gate, err := os.OpenFile(fifo, os.O_WRONLY, 0) // returns once a reader waits: five do
	if err != nil {
		b.t.Fatal(err)
	}
	defer gate.Close()
	var grants []time.Time
	for _, l := range all {
		l.end(2 * time.Minute)
		if code := l.exitCode(); code != 0 {
			b.t.Fatalf("semaphore contender exited %d; its log:\n%s", code, l.log())
		}
		if ev, ok := l.find("lock acquired"); ok && ev.at.After(opened) {
			grants = append(grants, ev.at)
		}
	}
	slices.SortFunc(grants, func(x, y time.Time) int { return x.Compare(y) })
	if len(grants) == 0 {
		b.t.Fatalf("semaphore %s: no lease granted after the gate opened", id)
	}
	for i := 1; i < len(grants); i++ {
		gaps = append(gaps, grants[i].Sub(grants[i-1]).Seconds())
	}
	return float64(len(grants)) / grants[len(grants)-1].Sub(opened).Seconds(), gaps
}
