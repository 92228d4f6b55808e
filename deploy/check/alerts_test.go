package check

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
	"sigs.k8s.io/yaml"
)

// alertsFile is the rule file; the chart's PrometheusRule embeds it and the
// kustomize monitoring component copies it.
var alertsFile = filepath.Join("..", "helm", "lockex", "files", "lockex-alerts.yaml")

var promParser = parser.NewParser(parser.Options{})

// parseRules parses a rule file as Prometheus and promtool check rules do:
// unknown fields, a bad PromQL expression or annotation template are errors.
func parseRules(t *testing.T, content []byte) *rulefmt.RuleGroups {
	t.Helper()
	groups, errs := rulefmt.Parse(content, false, model.UTF8Validation, promParser, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("rules: %v", errs)
	}
	return groups
}

// ruleFileOf turns a PrometheusRule's spec into a rule file.
func ruleFileOf(t *testing.T, pr *monitoringv1.PrometheusRule) []byte {
	t.Helper()
	b, err := yaml.Marshal(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAlertRulesParse: the rule file, the chart's PrometheusRule and the
// kustomize one parse with Prometheus's own parser and say the same; every
// alert has a severity and runbook text; and every series and label the
// expressions use is one the real lockex exports.
func TestAlertRulesParse(t *testing.T) {
	file, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	want := parseRules(t, file)

	chart := only[*monitoringv1.PrometheusRule](t, helmTemplate(t, "rel", "ns", "--values", filepath.Join(chartDir, "ci", "semaphore-values.yaml")))
	kust := only[*monitoringv1.PrometheusRule](t, kustomizeBuild(t, "overlays/example"))
	for name, pr := range map[string]*monitoringv1.PrometheusRule{"chart": chart, "kustomize": kust} {
		if diff := cmp.Diff(want, parseRules(t, ruleFileOf(t, pr))); diff != "" {
			t.Errorf("%s PrometheusRule differs from %s (-file +%s):\n%s", name, alertsFile, name, diff)
		}
	}

	exported := scrapeLockex(t)
	var names []string
	for _, g := range want.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
			if r.Alert == "" {
				t.Errorf("recording rule %q: only alerts expected", r.Record)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["runbook"] == "" {
				t.Errorf("%s: want a severity label and summary and runbook annotations", r.Alert)
			}
			expr, err := promParser.ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("%s: %v", r.Alert, err)
			}
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				switch n := n.(type) {
				case *parser.VectorSelector:
					if _, ok := exported[n.Name]; !ok {
						t.Errorf("%s: lockex exports no %s", r.Alert, n.Name)
					}
				case *parser.AggregateExpr:
					for _, l := range n.Grouping {
						if !exportedLabel(exported, l) {
							t.Errorf("%s: lockex exports no label %q", r.Alert, l)
						}
					}
				}
				return nil
			})
		}
	}
	wantNames := []string{"LockexLockLost", "LockexNoHolder", "LockexTooManyHolders", "LockexZooKeeperDisconnected"}
	if !slices.Equal(slices.Sorted(slices.Values(names)), wantNames) {
		t.Errorf("alerts %v, want %v", names, wantNames)
	}
}

func exportedLabel(exported map[string]map[string]bool, l string) bool {
	for _, ls := range exported {
		if ls[l] {
			return true
		}
	}
	return false
}

// scrapeLockex starts the real lockex with --http-addr against a ZooKeeper
// address nobody answers (it serves /metrics while it tries to connect),
// and returns the lockex_ series names it exports with their label names.
func scrapeLockex(t *testing.T) map[string]map[string]bool {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// A port just freed, so connecting to ZooKeeper there is refused.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	cmd := exec.Command(lockexBin, "-z", deadAddr, "-T", "20s", "--http-addr", addr, "-i", "scrape", "--", "true")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	var body io.ReadCloser
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil && resp.StatusCode == http.StatusOK {
			body = resp.Body
			break
		}
		if err == nil {
			resp.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("lockex /metrics at %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer body.Close()
	tp := expfmt.NewTextParser(model.UTF8Validation)
	families, err := tp.TextToMetricFamilies(body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	exported := map[string]map[string]bool{}
	for name, mf := range families {
		if !strings.HasPrefix(name, "lockex_") {
			continue
		}
		ls := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				ls[l.GetName()] = true
			}
		}
		exported[name] = ls
	}
	if len(exported) == 0 {
		t.Fatal("lockex exported no lockex_ series")
	}
	return exported
}

// alertCase is a promtool-style unit test: series in the promqltest load
// notation (one sample every 30s, as the ServiceMonitor scrapes), and the
// alerts firing at given times after the first sample.
type alertCase struct {
	name   string
	series string
	want   map[time.Duration][]string // time → the firing alerts' labels, as {a="b", ...}
}

// evalInterval is how often the rules are evaluated, the Prometheus
// operator's default.
const evalInterval = 30 * time.Second

// TestAlerts evaluates the rules against synthetic series as promtool test
// rules does, with Prometheus's own rule manager and PromQL engine: from
// the first sample on, every evalInterval, checking which alerts fire.
func TestAlerts(t *testing.T) {
	tests := map[string][]alertCase{
		"LockexLockLost": {
			{
				name: "a loss fires at once, then resolves",
				series: `lockex_lock_lost_total{lock="/lockex/a",reason="session_expired",instance="p1"} 0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1
					lockex_lock_lost_total{lock="/lockex/a",reason="node_deleted",instance="p1"} 0x23`,
				want: map[time.Duration][]string{
					60 * time.Second:  nil,
					90 * time.Second:  {`{alertname="LockexLockLost", instance="p1", lock="/lockex/a", reason="session_expired", severity="warning"}`},
					300 * time.Second: {`{alertname="LockexLockLost", instance="p1", lock="/lockex/a", reason="session_expired", severity="warning"}`},
					420 * time.Second: nil,
				},
			},
			{
				// lockex exits 76 after a loss; the restarted container
				// starts again from 0, which is a counter reset, not a loss.
				name:   "a loss seen once before the restart",
				series: `lockex_lock_lost_total{lock="/lockex/a",reason="suspend_deadline",instance="p1"} 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0`,
				want: map[time.Duration][]string{
					60 * time.Second:  {`{alertname="LockexLockLost", instance="p1", lock="/lockex/a", reason="suspend_deadline", severity="warning"}`},
					120 * time.Second: {`{alertname="LockexLockLost", instance="p1", lock="/lockex/a", reason="suspend_deadline", severity="warning"}`},
					480 * time.Second: nil,
				},
			},
			{
				name: "new instances start at 0: silent",
				series: `lockex_lock_lost_total{lock="/lockex/a",reason="session_expired",instance="p1"} 0x20
					lockex_lock_lost_total{lock="/lockex/a",reason="session_expired",instance="p2"} _x5 0x15`,
				want: map[time.Duration][]string{0: nil, 150 * time.Second: nil, 300 * time.Second: nil, 600 * time.Second: nil},
			},
		},
		"LockexNoHolder": {
			{
				name: "all waiting for 5 minutes fires",
				series: `lockex_lock_held{lock="/lockex/a",instance="p1"} 0x20
					lockex_lock_held{lock="/lockex/a",instance="p2"} 0x20`,
				want: map[time.Duration][]string{
					270 * time.Second: nil,
					300 * time.Second: {`{alertname="LockexNoHolder", lock="/lockex/a", severity="critical"}`},
				},
			},
			{
				name: "a holder: silent",
				series: `lockex_lock_held{lock="/lockex/a",instance="p1"} 1x20
					lockex_lock_held{lock="/lockex/a",instance="p2"} 0x20`,
				want: map[time.Duration][]string{300 * time.Second: nil, 600 * time.Second: nil},
			},
			{
				name: "a handover of two minutes: silent",
				series: `lockex_lock_held{lock="/lockex/a",instance="p1"} 1x5 0x15
					lockex_lock_held{lock="/lockex/a",instance="p2"} 0x9 1x11`,
				want: map[time.Duration][]string{150 * time.Second: nil, 300 * time.Second: nil, 450 * time.Second: nil, 600 * time.Second: nil},
			},
			{
				name: "one lock without a holder, another with one",
				series: `lockex_lock_held{lock="/lockex/a",instance="p1"} 0x20
					lockex_lock_held{lock="/lockex/b",instance="p2"} 1x20`,
				want: map[time.Duration][]string{
					360 * time.Second: {`{alertname="LockexNoHolder", lock="/lockex/a", severity="critical"}`},
				},
			},
		},
		"LockexTooManyHolders": {
			{
				name: "two holders of a lock fire after a minute",
				series: `lockex_lock_held{lock="/lockex/a",instance="p1"} 1x10
					lockex_lock_held{lock="/lockex/a",instance="p2"} 0 0 1x8
					lockex_lock_max_holders{lock="/lockex/a",instance="p1"} 1x10
					lockex_lock_max_holders{lock="/lockex/a",instance="p2"} 1x10`,
				want: map[time.Duration][]string{
					90 * time.Second:  nil,
					120 * time.Second: {`{alertname="LockexTooManyHolders", lock="/lockex/a", severity="critical"}`},
				},
			},
			{
				// The old holder's last sample still says 1 for one scrape
				// after the new one took over.
				name: "a handover seen for one scrape: silent",
				series: `lockex_lock_held{lock="/lockex/a",instance="p1"} 1 1 1 1 0 0 0 0 0 0
					lockex_lock_held{lock="/lockex/a",instance="p2"} 0 0 0 1 1 1 1 1 1 1
					lockex_lock_max_holders{lock="/lockex/a",instance="p1"} 1x10
					lockex_lock_max_holders{lock="/lockex/a",instance="p2"} 1x10`,
				want: map[time.Duration][]string{90 * time.Second: nil, 120 * time.Second: nil, 150 * time.Second: nil, 270 * time.Second: nil},
			},
			{
				name: "a semaphore of 2 with 2 holders: silent",
				series: `lockex_lock_held{lock="/lockex/s",instance="p1"} 1x10
					lockex_lock_held{lock="/lockex/s",instance="p2"} 1x10
					lockex_lock_held{lock="/lockex/s",instance="p3"} 0x10
					lockex_lock_max_holders{lock="/lockex/s",instance="p1"} 2x10
					lockex_lock_max_holders{lock="/lockex/s",instance="p2"} 2x10
					lockex_lock_max_holders{lock="/lockex/s",instance="p3"} 2x10`,
				want: map[time.Duration][]string{120 * time.Second: nil, 270 * time.Second: nil},
			},
			{
				name: "a semaphore of 2 with 3 holders fires",
				series: `lockex_lock_held{lock="/lockex/s",instance="p1"} 1x10
					lockex_lock_held{lock="/lockex/s",instance="p2"} 1x10
					lockex_lock_held{lock="/lockex/s",instance="p3"} 1x10
					lockex_lock_max_holders{lock="/lockex/s",instance="p1"} 2x10
					lockex_lock_max_holders{lock="/lockex/s",instance="p2"} 2x10
					lockex_lock_max_holders{lock="/lockex/s",instance="p3"} 2x10`,
				want: map[time.Duration][]string{
					30 * time.Second: nil,
					60 * time.Second: {`{alertname="LockexTooManyHolders", lock="/lockex/s", severity="critical"}`},
				},
			},
		},
		"LockexZooKeeperDisconnected": {
			{
				name:   "disconnected for over a minute fires",
				series: `lockex_zk_connected{lock="/lockex/a",instance="p1"} 1 1 0 0 0 0 0 0 1 1`,
				want: map[time.Duration][]string{
					90 * time.Second:  nil,
					120 * time.Second: {`{alertname="LockexZooKeeperDisconnected", instance="p1", lock="/lockex/a", severity="warning"}`},
					240 * time.Second: nil,
				},
			},
			{
				name: "a short disconnect: silent",
				series: `lockex_zk_connected{lock="/lockex/a",instance="p1"} 1 1 0 0 1 1 0 1 1 1
					lockex_zk_connected{lock="/lockex/a",instance="p2"} 1x10`,
				want: map[time.Duration][]string{60 * time.Second: nil, 120 * time.Second: nil, 210 * time.Second: nil, 270 * time.Second: nil},
			},
		},
	}

	file, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	groups := parseRules(t, file)
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if len(tests[r.Alert]) == 0 {
				t.Errorf("alert %s has no unit test", r.Alert)
			}
		}
	}
	for alert, cases := range tests {
		for _, tc := range cases {
			t.Run(alert+"/"+tc.name, func(t *testing.T) {
				got := evalAlerts(t, alertsFile, alert, tc.series, slices.Collect(maps.Keys(tc.want)))
				for at, want := range tc.want {
					if diff := cmp.Diff(want, got[at]); diff != "" {
						t.Errorf("at %v (-want +got):\n%s", at, diff)
					}
				}
			})
		}
	}
}

// evalAlerts loads series, evaluates the rule file's groups every
// evalInterval from 0 to the last time asked for, and returns the alert's
// firing instances at each time asked for, as label strings. It fails the
// test if an evaluation errs or an annotation does not expand.
func evalAlerts(t *testing.T, ruleFile, alert, series string, at []time.Duration) map[time.Duration][]string {
	t.Helper()
	for _, a := range at {
		if a%evalInterval != 0 {
			t.Fatalf("%v is not a multiple of the evaluation interval %v", a, evalInterval)
		}
	}
	var lines []string
	for l := range strings.Lines(series) {
		lines = append(lines, "  "+strings.TrimSpace(l))
	}
	suite, err := promqltest.NewLazyLoader("load 30s\n"+strings.Join(lines, "\n"), promqltest.LazyLoaderOpts{
		EnableAtModifier: true, EnableNegativeOffset: true,
	})
	if err != nil {
		t.Fatalf("load series: %v", err)
	}
	defer suite.Close()

	mgr := rules.NewManager(&rules.ManagerOptions{
		QueryFunc:    rules.EngineQueryFunc(suite.QueryEngine(), suite.Storage()),
		AppendableV2: suite.Storage(),
		Context:      context.Background(),
		NotifyFunc:   func(context.Context, string, ...*rules.Alert) {},
		Logger:       slog.New(slog.DiscardHandler),
		Parser:       promParser,
	})
	loaded, errs := mgr.LoadGroups(evalInterval, labels.EmptyLabels(), "", nil, false, ruleFile)
	if len(errs) > 0 {
		t.Fatalf("load rules: %v", errs)
	}
	var found bool
	for _, g := range loaded {
		for _, r := range g.Rules() {
			if ar, ok := r.(*rules.AlertingRule); ok {
				ar.SetRestored(true)
				found = found || ar.Name() == alert
			}
		}
	}
	if !found {
		t.Fatalf("no alert %s in %s", alert, ruleFile)
	}

	slices.Sort(at)
	got := map[time.Duration][]string{}
	start := time.Unix(0, 0).UTC()
	for ts := time.Duration(0); ts <= at[len(at)-1]; ts += evalInterval {
		suite.WithSamplesTill(start.Add(ts), func(err error) {
			if err != nil {
				t.Fatalf("samples till %v: %v", ts, err)
			}
			for _, g := range loaded {
				g.Eval(suite.Context(), start.Add(ts))
				for _, r := range g.Rules() {
					if err := r.LastError(); err != nil {
						t.Fatalf("rule %s at %v: %v", r.Name(), ts, err)
					}
				}
			}
		})
		if !slices.Contains(at, ts) {
			continue
		}
		var firing []string
		for _, g := range loaded {
			for _, r := range g.Rules() {
				ar, ok := r.(*rules.AlertingRule)
				if !ok || ar.Name() != alert {
					continue
				}
				for _, a := range ar.ActiveAlerts() {
					if a.State != rules.StateFiring {
						continue
					}
					a.Annotations.Range(func(l labels.Label) {
						if strings.Contains(l.Value, "error expanding") || strings.Contains(l.Value, "<no value>") {
							t.Errorf("%s annotation %s: %s", alert, l.Name, l.Value)
						}
					})
					if s := a.Annotations.Get("summary"); !strings.Contains(s, a.Labels.Get("lock")) {
						t.Errorf("%s summary %q does not name the lock", alert, s)
					}
					firing = append(firing, a.Labels.String())
				}
			}
		}
		sort.Strings(firing)
		got[ts] = firing
	}
	return got
}
