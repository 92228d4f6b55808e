package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
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

// tickerWithChild is ticker (never ignoring TERM) that first starts a
// background child appending "bg" records, with the same who and token,
// every 10ms until it is killed: its main process ends after hold and
// leaves the child running, for lockex to stop before it lets go.
func tickerWithChild(logPath, who string, hold time.Duration) []string {
	w := ticker(logPath, who, hold, false)
	child := fmt.Sprintf(`(while :; do echo "bg $(date +%%s%%N) %s $LOCKEX_FENCING_TOKEN" >> %s; sleep 0.01; done) &`, who, logPath)
	return []string{"sh", "-c", child + "\n" + w[2]}
}

// run is one workload's time under the lock, as its records show it: the
// records of every process of the run (its main process, a background
// child, a kazoo peer's second thread) by their common who and token.
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

// judgeSemaphore checks a semaphore of size n's log: at no instant were
// more than n runs between their first and last record. The count rises
// only when a run starts, so each start is checked against the runs that
// still write at or after it. A run whose every write from that start on
// is excused (it was frozen then, as judge's excused says) is stale there
// rather than running, and is left out from then on; its writes from then
// on are counted as stale.
func judgeSemaphore(runs []*run, n int, excused func(who string, from, to int64) bool) verdict {
	v := verdict{runs: len(runs), overlap: overlapOf(runs)}
	stale := map[*run]bool{}
	for i, s := range runs {
		at := s.first
		var running []*run
		for _, r := range runs[:i] {
			if r.last >= at && !stale[r] {
				running = append(running, r)
			}
		}
		if len(running) < n {
			continue
		}
		still := running[:0]
		for _, r := range running {
			if frozenFrom(r, at, excused) {
				stale[r] = true
				for _, w := range r.at {
					if w >= at {
						v.stale++
					}
				}
				continue
			}
			still = append(still, r)
		}
		if len(still) < n {
			continue
		}
		names := make([]string, len(still))
		for j, r := range still {
			last := int64(0)
			for _, w := range r.at {
				last = max(last, w)
			}
			names[j] = fmt.Sprintf("%s (token %d, wrote until %s after)", r.who, r.token, time.Duration(last-at))
		}
		v.problems = append(v.problems, fmt.Sprintf("%s (token %d) started at %d while %d of %d leases ran: %s",
			s.who, s.token, at, len(still), n, strings.Join(names, ", ")))
	}
	return v
}

// frozenFrom reports whether each of r's writes at or after at is excused,
// as judge excuses a holder's writes after a newer one started.
func frozenFrom(r *run, at int64, excused func(who string, from, to int64) bool) bool {
	if excused == nil {
		return false
	}
	lastBefore := r.first
	for _, w := range r.at {
		if w < at {
			lastBefore = max(lastBefore, w)
		}
	}
	for _, w := range r.at {
		if w >= at && !excused(r.who, lastBefore, w) {
			return false
		}
	}
	return true
}

// logOf writes records ("kind at who token" lines) to a log and reads its
// runs back, as the soak does.
func logOf(t *testing.T, records ...string) []*run {
	t.Helper()
	p := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(p, []byte(strings.Join(records, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return readRuns(t, p)
}

// frozenAt excuses who's writes as the soak does for a freeze from..to
// (unix ns here, small numbers) with a grace of 20.
func frozenAt(who string, from, to int64) func(string, int64, int64) bool {
	return func(w string, a, b int64) bool {
		return w == who && a < to && b >= from && b <= to+20
	}
}

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name     string
		records  []string
		excused  func(string, int64, int64) bool
		problems int
		stale    int
	}{
		{"one after the other", []string{"start 10 a 1", "tick 20 a 1", "end 30 a 1", "start 40 b 2", "end 50 b 2"}, nil, 0, 0},
		{"overlap", []string{"start 10 a 1", "start 20 b 2", "end 30 a 1", "end 40 b 2"}, nil, 1, 1},
		{"token went down", []string{"start 10 a 2", "end 20 a 2", "start 30 b 1", "end 40 b 1"}, nil, 1, 0},
		{"a background child's write is its run's", []string{"start 10 a 1", "end 20 a 1", "bg 35 a 1", "start 30 b 2", "end 40 b 2"}, nil, 1, 1},
		{"frozen, within the grace", []string{"start 10 a 1", "tick 12 a 1", "start 30 b 2", "tick 45 a 1", "end 50 b 2"}, frozenAt("a", 15, 40), 0, 1},
		{"frozen, past the grace", []string{"start 10 a 1", "tick 12 a 1", "start 30 b 2", "tick 45 a 1", "tick 70 a 1", "end 80 b 2"}, frozenAt("a", 15, 40), 1, 2},
		{"thawed before the next started", []string{"start 10 a 1", "tick 42 a 1", "start 45 b 2", "tick 50 a 1", "end 60 b 2"}, frozenAt("a", 15, 40), 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := judge(logOf(t, tc.records...), tc.excused)
			if len(v.problems) != tc.problems || v.stale != tc.stale {
				t.Errorf("problems %q, stale %d; want %d problems, %d stale", v.problems, v.stale, tc.problems, tc.stale)
			}
		})
	}
}

func TestJudgeSemaphore(t *testing.T) {
	for _, tc := range []struct {
		name     string
		n        int
		records  []string
		excused  func(string, int64, int64) bool
		problems int
		stale    int
	}{
		{"two of two", 2, []string{"start 10 a 1", "start 20 b 2", "end 30 a 1", "start 35 c 3", "end 40 b 2", "end 50 c 3"}, nil, 0, 0},
		{"three of two", 2, []string{"start 10 a 1", "start 20 b 2", "start 25 c 3", "end 30 a 1", "end 40 b 2", "end 50 c 3"}, nil, 1, 0},
		{"touching is not overlapping", 2, []string{"start 10 a 1", "start 20 b 2", "end 30 a 1", "start 31 c 3", "end 40 b 2", "end 50 c 3"}, nil, 0, 0},
		{"a background child's write is its run's", 2, []string{"start 10 a 1", "start 20 b 2", "end 30 a 1", "bg 36 a 1", "start 35 c 3", "end 40 b 2", "end 50 c 3"}, nil, 1, 0},
		{"one of one is the mutex", 1, []string{"start 10 a 1", "start 20 b 2", "end 30 a 1", "end 40 b 2"}, nil, 1, 0},
		{"frozen, within the grace", 2, []string{"start 10 a 1", "tick 12 a 1", "start 20 b 2", "start 30 c 3", "tick 45 a 1", "end 50 b 2", "end 60 c 3"}, frozenAt("a", 15, 40), 0, 1},
		{"frozen, past the grace", 2, []string{"start 10 a 1", "tick 12 a 1", "start 20 b 2", "start 30 c 3", "tick 45 a 1", "tick 70 a 1", "end 80 b 2", "end 90 c 3"}, frozenAt("a", 15, 40), 1, 0},
		{"frozen long before", 2, []string{"start 10 a 1", "tick 12 a 1", "start 20 b 2", "start 30 c 3", "tick 45 a 1", "end 50 b 2", "end 60 c 3"}, frozenAt("b", 0, 5), 1, 0},
		// Once stale, a run stays out of the count: its thawed writes
		// before lockex stops it do not make a later start a violation.
		{"stale stays stale", 2, []string{"start 10 a 1", "tick 12 a 1", "start 20 b 2", "start 30 c 3", "tick 45 a 1", "end 46 b 2", "start 50 d 4", "tick 55 a 1", "end 60 c 3", "end 70 d 4"}, frozenAt("a", 15, 40), 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := judgeSemaphore(logOf(t, tc.records...), tc.n, tc.excused)
			if len(v.problems) != tc.problems || v.stale != tc.stale {
				t.Errorf("problems %q, stale %d; want %d problems, %d stale", v.problems, v.stale, tc.problems, tc.stale)
			}
		})
	}
}
