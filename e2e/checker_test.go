package e2e

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ticker is a workload that appends "start", then a "tick" every 10ms, and
// after hold (0: never) "end", each as "<kind> <unix ns> <who> <token>", to
// the shared log. With ignoreTerm it must be killed.
func ticker(logPath, who string, hold time.Duration, ignoreTerm bool) []string {
	rec := func(kind string) string {
		return fmt.Sprintf(`echo "%s $(date +%%s%%N) %s $LOCKEX_FENCING_TOKEN" >> %s`, kind, who, logPath)
	}
	script := rec("start") + "\n"
	if ignoreTerm {
		script = `trap "" TERM` + "\n" + script
	}
	script += fmt.Sprintf("end=$(( $(date +%%s%%N) + %d ))\n", hold.Nanoseconds())
	loop := "while :"
	if hold > 0 {
		loop = `while [ "$(date +%s%N)" -lt "$end" ]`
	}
	script += loop + "; do " + rec("tick") + "; sleep 0.01; done\n" + rec("end")
	return []string{"sh", "-c", script}
}

// run is one workload's time under the lock, as its records show it.
type run struct {
	who         string
	token       int64
	first, last int64   // its first and last record
	at          []int64 // every record's time, in order
}

// readRuns groups a log's records by writer, ordered by first record.
func readRuns(t *testing.T, logPath string) []*run {
	t.Helper()
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	byKey := map[string]*run{}
	var runs []*run
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 4 {
			t.Fatalf("bad record %q", sc.Text())
		}
		at, err1 := strconv.ParseInt(fields[1], 10, 64)
		token, err2 := strconv.ParseInt(fields[3], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("bad record %q", sc.Text())
		}
		key := fields[2] + "/" + fields[3]
		r := byKey[key]
		if r == nil {
			r = &run{who: fields[2], token: token, first: at}
			byKey[key] = r
			runs = append(runs, r)
		}
		r.at = append(r.at, at)
		r.first, r.last = min(r.first, at), max(r.last, at)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].first < runs[j].first })
	return runs
}

// verdict is what the checker found in a mutex's log.
type verdict struct {
	runs    int
	overlap int // most runs writing at one instant, stale writes included
	// stale counts writes made after a holder with a larger token had
	// started: a resource that checks fencing tokens rejects them.
	stale    int
	problems []string
}

// judge checks a mutex's log: fencing tokens grow from one holder to the
// next, and no holder writes once a newer one has started, unless excused
// says why it could not have known (it was frozen between its last write
// before the newer holder started and this write). Such a stale write
// carries a lower token than the current holder's, which is what fencing
// tokens are for.
func judge(runs []*run, excused func(who string, from, to int64) bool) verdict {
	v := verdict{runs: len(runs), overlap: overlapOf(runs)}
	for i := 1; i < len(runs); i++ {
		if runs[i].token <= runs[i-1].token {
			v.problems = append(v.problems, fmt.Sprintf("fencing token went from %d (%s) to %d (%s)",
				runs[i-1].token, runs[i-1].who, runs[i].token, runs[i].who))
		}
	}
	for i, r := range runs {
		// The first start of a holder with a larger token.
		var newer *run
		for _, o := range runs[i+1:] {
			if o.token > r.token && (newer == nil || o.first < newer.first) {
				newer = o
			}
		}
		if newer == nil {
			continue
		}
		lastBefore := r.first
		for _, at := range r.at {
			if at < newer.first {
				lastBefore = max(lastBefore, at)
				continue
			}
			v.stale++
			if excused == nil || !excused(r.who, lastBefore, at) {
				v.problems = append(v.problems, fmt.Sprintf("%s (token %d) wrote %s after %s (token %d) started",
					r.who, r.token, time.Duration(at-newer.first), newer.who, newer.token))
				break
			}
		}
	}
	return v
}

// overlapOf is the most runs that were between their first and last
// record at one instant.
func overlapOf(runs []*run) int {
	ivs := make([]interval, len(runs))
	for i, r := range runs {
		ivs[i] = interval{who: r.who, start: r.first, end: r.last, token: r.token}
	}
	return maxOverlap(ivs)
}

// mustBeOneAtATime fails the test unless the log shows one holder at a time.
func mustBeOneAtATime(t *testing.T, logPath string) verdict {
	t.Helper()
	v := judge(readRuns(t, logPath), nil)
	for _, p := range v.problems {
		t.Error(p)
	}
	return v
}
