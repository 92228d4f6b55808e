package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// results are the figures the closing note reasons about.
type results struct {
	binSize                         int64
	binSizeBeforeKube               int64 // at beforeKubeMode
	exists, rtt, coldRTT            summary
	createDelete, bare, forkExec    summary
	workloadExit                    summary // the hold helper's own exit, without lockex
	startWall, startAfter, trueWall summary
	handoff, handoffRT              summary
	sinceOutput, sinceOutputFloor   summary    // the handoff from the workload's last output
	ownExit                         summary    // the workload's own exit, within the handoffs
	handoffFloor                    summary    // handoff / floor
	floor                           float64    // bare handoff + fork/exec, medians
	handoffLegs                     [4]float64 // medians: reap, delete, acquire, fork
	ensembleHandoff, ensembleRatio  summary
	ensembleFloor                   float64
	startPackets, startWrites       summary
	takeover, takeoverRatio         summary
	restart, restartBare            summary // crash-restart takeover with the identity, and without
	restartBareRatio                summary
	granted                         time.Duration
	herd                            []herdResult
	leaseRate, leaseGap             summary
	hwm, cpu                        summary
}

// The limits the closing note holds the figures to (issue 8).
const (
	handoffLimitRT    = 3.0
	handoffFloorGoal  = 2.0 // issue 13: the handoff at most twice its floor, measured in the same run
	takeoverLimit     = 1.1
	rssLimitMiB       = 15.0
	herdGrowthAllowed = 1.0 // packets per handoff more at 200 waiters than at 10
)

// report prints the table and writes the Markdown report.
func (b *bench) report() {
	took := time.Since(b.began).Round(time.Second)
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	for _, s := range b.sections {
		fmt.Fprintf(w, "%s\n", s.title)
		fmt.Fprintf(w, "  figure\tn\tmedian\tp99\tmin\tmax\tagainst the limit\n")
		for _, f := range s.figures {
			cells := spread(f)
			fmt.Fprintf(w, "  %s\t%d\t%s\t%s\t%s\t%s\t%s\n", f.name, len(f.values), cells[0], cells[1], cells[2], cells[3], f.limit)
		}
	}
	w.Flush()
	note := b.closingNote()
	fmt.Printf("\n%s\nfull run: %s\n", note, took)

	out := os.Getenv("LOCKEX_BENCH_OUT")
	if out == "" {
		out = filepath.Join("..", "docs", "benchmarks.md")
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(out, []byte(b.markdown(took, note)), 0o644); err != nil {
		b.t.Fatal(err)
	}
	abs, _ := filepath.Abs(out)
	fmt.Printf("report written to %s\n", abs)
}

func (b *bench) markdown(took time.Duration, note string) string {
	var s strings.Builder
	m := b.machine
	fmt.Fprintf(&s, "# lockex benchmarks\n\n")
	fmt.Fprintf(&s, "Written by `make bench` (the `bench/` package); run it again rather than edit this file. ")
	fmt.Fprintf(&s, "Every figure is measured on this machine against a real ZooKeeper started for the run, and set against what ZooKeeper itself allows here. ")
	fmt.Fprintf(&s, "Figures taken on a busy machine are noisy: compare the load averages below with the number of CPUs.\n\n")
	fmt.Fprintf(&s, "| | |\n|---|---|\n")
	fmt.Fprintf(&s, "| date | %s (the run took %s) |\n", b.began.Format("2006-01-02 15:04 MST"), took)
	fmt.Fprintf(&s, "| CPU | %s, %d logical CPUs |\n", m.cpu, m.cores)
	fmt.Fprintf(&s, "| memory | %s |\n", m.memory)
	fmt.Fprintf(&s, "| kernel | %s |\n", m.kernel)
	fmt.Fprintf(&s, "| ZooKeeper | %s; standalone, tickTime 200ms, session timeouts 400ms–20s, data on %s |\n", b.zkVersion, m.tempFS)
	fmt.Fprintf(&s, "| lockex | `%s` (its `--version`), built as `make build` does |\n", b.lockexVersion())
	fmt.Fprintf(&s, "| load average (1, 5, 15 min) | %s at the start, %s at the end |\n\n", m.loadavg1, loadavg())
	fmt.Fprintf(&s, "n is the number of runs; p99 is nearest-rank, so with fewer than 100 runs it is the maximum. ")
	fmt.Fprintf(&s, "Times from lockex's log are its JSON log's own timestamps (nanoseconds, the same clock as the bench's).\n")
	for _, sec := range b.sections {
		fmt.Fprintf(&s, "\n## %s\n\n", sec.title)
		fmt.Fprintf(&s, "| figure | n | median | p99 | min | max | against the limit |\n|---|--:|--:|--:|--:|--:|---|\n")
		for _, f := range sec.figures {
			cells := spread(f)
			fmt.Fprintf(&s, "| %s | %d | %s | %s | %s | %s | %s |\n", mdName(f.name), len(f.values), cells[0], cells[1], cells[2], cells[3], f.limit)
		}
		fmt.Fprintf(&s, "\nHow:\n\n")
		for _, f := range sec.figures {
			if f.how != "" {
				fmt.Fprintf(&s, "- **%s**: %s\n", strings.TrimSpace(f.name), f.how)
			}
		}
	}
	fmt.Fprintf(&s, "\n## Closing note\n\n%s\n", note)
	return s.String()
}

// spread is a figure's median, p99, min and max as printed; a figure taken
// once has only the first.
func spread(f figure) [4]string {
	sum, u := f.summary(), f.unit
	if sum.n == 1 {
		return [4]string{u.format(sum.median)}
	}
	return [4]string{u.format(sum.median), u.format(sum.p99), u.format(sum.min), u.format(sum.max)}
}

// mdName keeps a figure's indentation (its place in a breakdown) visible in
// a Markdown table.
func mdName(name string) string {
	trimmed := strings.TrimLeft(name, " ")
	return strings.Repeat("&nbsp;", len(name)-len(trimmed)) + trimmed
}

func (b *bench) lockexVersion() string {
	out, err := execOutput(b.bin, "--version")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(out)
}
