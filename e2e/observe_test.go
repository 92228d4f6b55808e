package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lockex/lockex/internal/zktest"
)

// observed is a lockex started with --http-addr and JSON logs.
type observed struct {
	*started
	base string // http://host:port
}

func startObserved(t *testing.T, env []string, args ...string) *observed {
	t.Helper()
	s := startLockex(t, env, append([]string{"--http-addr", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	o := &observed{started: s}
	eventually(t, 10*time.Second, "lockex serves http", func() bool {
		for _, line := range logLines(t, s) {
			if line["msg"] == "serving probes and metrics" {
				o.base = "http://" + line["addr"].(string)
				return true
			}
		}
		return false
	})
	return o
}

// logLines parses lockex's JSON log so far, failing on a line that is not
// a JSON object.
func logLines(t *testing.T, s *started) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s.stderr.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

// get returns a path's status code and body.
func (o *observed) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(o.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// probes checks the three probes' codes.
func (o *observed) probes(t *testing.T, healthz, readyz, active int) {
	t.Helper()
	for path, want := range map[string]int{"/healthz": healthz, "/readyz": readyz, "/active": active} {
		if code, body := o.get(t, path); code != want {
			t.Errorf("%s: %d %q, want %d", path, code, body, want)
		}
	}
}

// metrics scrapes /metrics and parses it as Prometheus does.
func (o *observed) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	_, body := o.get(t, "/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return families
}

// want is one expected lockex_ series: its type, labels besides lock, and
// value (for a histogram, the sample count).
type want struct {
	typ    dto.MetricType
	labels map[string]string
	value  float64
}

// check compares the scrape with ws, and checks every lockex_ series has
// the lock label.
func check(t *testing.T, families map[string]*dto.MetricFamily, lock string, ws map[string]want) {
	t.Helper()
	for name, w := range ws {
		f := families[name]
		if f == nil {
			t.Errorf("%s missing", name)
			continue
		}
		if f.GetType() != w.typ {
			t.Errorf("%s is a %s, want %s", name, f.GetType(), w.typ)
		}
		found := false
		for _, m := range f.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			match := labels["lock"] == lock
			for k, v := range w.labels {
				match = match && labels[k] == v
			}
			if !match {
				continue
			}
			found = true
			var got float64
			switch w.typ {
			case dto.MetricType_GAUGE:
				got = m.GetGauge().GetValue()
			case dto.MetricType_COUNTER:
				got = m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				got = float64(m.GetHistogram().GetSampleCount())
			}
			if got != w.value {
				t.Errorf("%s%v = %v, want %v", name, w.labels, got, w.value)
			}
		}
		if !found {
			t.Errorf("%s has no series with lock=%q and %v", name, lock, w.labels)
		}
	}
	for name, f := range families {
		if !strings.HasPrefix(name, "lockex_") {
			continue
		}
		for _, m := range f.Metric {
			if !slices.ContainsFunc(m.Label, func(l *dto.LabelPair) bool { return l.GetName() == "lock" && l.GetValue() == lock }) {
				t.Errorf("%s series without lock=%q: %v", name, lock, m.Label)
			}
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if families[name] == nil {
			t.Errorf("%s missing: the Go and process collectors are not registered", name)
		}
	}
}

func gauge(v float64) want   { return want{typ: dto.MetricType_GAUGE, value: v} }
func counter(v float64) want { return want{typ: dto.MetricType_COUNTER, value: v} }
func lost(reason string, v float64) want {
	return want{typ: dto.MetricType_COUNTER, labels: map[string]string{"reason": reason}, value: v}
}

// TestObservability follows a holder (behind a fault proxy) and a waiter
// through holding, waiting, suspended, reconnected and lost, checking the
// probes, every metric of docs/design.md §8 and §9 and the JSON log in each state.
func TestObservability(t *testing.T) {
	zk := startZK(t)
	proxy := zktest.StartProxy(t, zk.Servers[0].Addr())
	const lock = "/lockex/obs"
	logPath := filepath.Join(t.TempDir(), "log")
	a := startObserved(t, nil, lossArgs(proxy.Addr(), "obs", ticker(logPath, "a", 0, true))...)
	waitRecord(t, logPath, "a")

	t.Run("holding", func(t *testing.T) {
		a.probes(t, 200, 200, 200)
		check(t, a.metrics(t), lock, map[string]want{
			"lockex_lock_held": gauge(1), "lockex_workload_running": gauge(1), "lockex_zk_connected": gauge(1),
			"lockex_workload_ready":   gauge(1),
			"lockex_lock_max_holders": gauge(1), "lockex_lock_contenders": gauge(1),
			"lockex_lock_wait_seconds":    {typ: dto.MetricType_HISTOGRAM, value: 1},
			"lockex_lock_lost_total":      lost("suspend_deadline", 0),
			"lockex_zk_disconnects_total": counter(0), "lockex_zk_session_expirations_total": counter(0),
			"lockex_earlier_nodes_deleted_total": counter(0),
			"lockex_build_info":                  {typ: dto.MetricType_GAUGE, labels: map[string]string{"goversion": goVersion(t)}, value: 1},
		})
		for _, reason := range []string{"session_expired", "node_deleted", "suspend_deadline"} {
			check(t, a.metrics(t), lock, map[string]want{"lockex_lock_lost_total": lost(reason, 0)})
		}
	})

	b := startObserved(t, nil, lossArgs(zk.Hosts(), "obs", ticker(logPath, "b", 100*time.Millisecond, false))...)
	t.Run("waiting", func(t *testing.T) {
		// Waiting from the moment it is connected; queued once its recipe
		// has seen the lock taken.
		eventually(t, 10*time.Second, "b is queued", func() bool { _, body := b.get(t, "/active"); return strings.Contains(body, "contenders ahead") })
		b.probes(t, 200, 200, 503)
		if _, body := b.get(t, "/active"); !strings.Contains(body, "waiting for "+lock+" (1 contenders ahead)") {
			t.Errorf("/active says %q", body)
		}
		check(t, b.metrics(t), lock, map[string]want{
			"lockex_lock_held": gauge(0), "lockex_workload_running": gauge(0), "lockex_zk_connected": gauge(1),
			"lockex_workload_ready":  gauge(0),
			"lockex_lock_contenders": gauge(2), "lockex_lock_wait_seconds": {typ: dto.MetricType_HISTOGRAM, value: 0},
		})
	})

	t.Run("suspended and reconnected", func(t *testing.T) {
		proxy.Cut()
		eventually(t, 5*time.Second, "a is suspended", func() bool { code, _ := a.get(t, "/readyz"); return code == 503 })
		a.probes(t, 200, 503, 200)
		check(t, a.metrics(t), lock, map[string]want{
			"lockex_lock_held": gauge(1), "lockex_workload_running": gauge(1), "lockex_zk_connected": gauge(0),
			"lockex_zk_disconnects_total": counter(1),
		})
		proxy.Pass()
		eventually(t, 5*time.Second, "a reconnects", func() bool { code, _ := a.get(t, "/readyz"); return code == 200 })
		check(t, a.metrics(t), lock, map[string]want{"lockex_zk_connected": gauge(1), "lockex_lock_lost_total": lost("suspend_deadline", 0)})
	})

	t.Run("lost", func(t *testing.T) {
		proxy.Cut()
		// The workload ignores SIGTERM: lockex is in the lost state for the
		// kill grace (1s) before it exits.
		eventually(t, 10*time.Second, "a lost the lock", func() bool { code, _ := a.get(t, "/healthz"); return code == 503 })
		families := a.metrics(t)
		a.probes(t, 503, 503, 503)
		check(t, families, lock, map[string]want{
			"lockex_lock_held": gauge(0), "lockex_workload_running": gauge(0), "lockex_zk_connected": gauge(0),
			"lockex_lock_lost_total": lost("suspend_deadline", 1),
		})
		// Stopped and released, lockex waits for one more scrape before it
		// exits 76: else no Prometheus would see the counter go up.
		eventually(t, 10*time.Second, "a waits for a scrape", func() bool {
			return strings.Contains(a.stderr.String(), "serving /metrics until the next scrape")
		})
		select {
		case <-a.done:
			t.Fatalf("exited %d before a scrape saw the loss", a.code)
		case <-time.After(300 * time.Millisecond):
		}
		check(t, a.metrics(t), lock, map[string]want{"lockex_lock_lost_total": lost("suspend_deadline", 1)})
		if code := a.wait(t, 10*time.Second); code != 76 {
			t.Fatalf("exit %d, want 76", code)
		}
	})

	t.Run("next holder", func(t *testing.T) {
		if code := b.wait(t, 20*time.Second); code != 0 {
			t.Fatalf("b exit %d; log:\n%s", code, b.stderr)
		}
	})

	t.Run("json log", func(t *testing.T) {
		checkLog(t, a.started, lock, map[string][]string{
			"connecting to zookeeper": {"servers", "session_timeout"},
			"connected to zookeeper":  {"server", "session_id", "session_timeout"},
			"lock acquired":           {"node", "fencing_token", "waited"},
			"workload started":        {"pid"},
			"suspended: disconnected from zookeeper; the workload runs on while the session may be alive": nil,
			"reconnected to zookeeper with the same session":                                              {"server"},
			"lock lost; stopping the workload":                                                            {"reason", "err"},
			"lock released":                                                                               nil,
		})
		checkLog(t, b.started, lock, map[string][]string{
			"waiting for the lock": {"ahead"},
			"lock acquired":        {"waited"},
			"workload exited":      {"code"},
			"lock released":        nil,
		})
	})
}

// checkLog checks every line of a JSON log has time, level, msg and the
// lock, and that each message in msgs appears with its fields.
func checkLog(t *testing.T, s *started, lock string, msgs map[string][]string) {
	t.Helper()
	seen := map[string]map[string]any{}
	for _, line := range logLines(t, s) {
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := line[k]; !ok {
				t.Errorf("log line without %s: %v", k, line)
			}
		}
		if line["lock"] != lock && line["msg"] != "serving probes and metrics" {
			t.Errorf("log line without lock=%s: %v", lock, line)
		}
		seen[line["msg"].(string)] = line
	}
	for msg, fields := range msgs {
		line, ok := seen[msg]
		if !ok {
			t.Errorf("no %q line in:\n%s", msg, s.stderr)
			continue
		}
		for _, f := range fields {
			if _, ok := line[f]; !ok {
				t.Errorf("%q line without %s: %v", msg, f, line)
			}
		}
	}
}

// TestSemaphoreMetrics: -c 3 reports max holders 3 and a held lease.
func TestSemaphoreMetrics(t *testing.T) {
	zk := startZK(t)
	c := startObserved(t, nil, "-z", zk.Hosts(), "-i", "obs-sem", "-c", "3", "--", "sleep", "1000")
	eventually(t, 10*time.Second, "the lease is held", func() bool { code, _ := c.get(t, "/active"); return code == 200 })
	check(t, c.metrics(t), "/lockex/obs-sem", map[string]want{
		"lockex_lock_max_holders": gauge(3), "lockex_lock_held": gauge(1), "lockex_lock_contenders": gauge(1),
	})
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	c.wait(t, 10*time.Second)
}

func goVersion(t *testing.T) string {
	t.Helper()
	r := lockex(t, nil, "--version")
	f := strings.Fields(r.stdout)
	if len(f) != 3 {
		t.Fatalf("--version printed %q", r.stdout)
	}
	return f[2]
}
