package check

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

var (
	// alertsFile is the rule file; the chart's PrometheusRule embeds it and
	// the kustomize monitoring component copies it.
	alertsFile = filepath.Join("..", "helm", "lockex", "files", "lockex-alerts.yaml")
	// alertTests are the rules' unit tests, in promtool's format.
	alertTests = filepath.Join("testdata", "lockex-alerts.test.yaml")
)

// runbookBase is where every alert's runbook_url points, followed by the
// alert's anchor in docs/runbooks.md.
const runbookBase = "https://github.com/lockex/lockex/blob/main/docs/runbooks.md"

// crashLoopInit is the init container by which LockexCrashLooping tells
// lockex's pods from others.
const crashLoopInit = "lockex-install"

// promtool runs the pinned promtool (installed by TestMain's script) and
// fails the test with its whole output when it fails; promtool reports test
// failures on stdout, errors on stderr.
func promtool(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatalf("promtool is not installed (scripts/install-deploy-tools.sh installs it): %v", err)
	}
	out, err := exec.Command("promtool", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// readRuleSpec decodes a rule file strictly into the PrometheusRule spec
// type, so an unknown field is an error here as it is for promtool.
func readRuleSpec(t *testing.T, path string) monitoringv1.PrometheusRuleSpec {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var spec monitoringv1.PrometheusRuleSpec
	if strict, err := kjson.UnmarshalStrict(js, &spec); err != nil || len(strict) > 0 {
		t.Fatalf("%s: %v %v", path, err, strict)
	}
	return spec
}

// TestAlertRules: promtool accepts the rule file and the rules as the chart
// and the kustomize component render them, and the three say the same.
// Every alert has a severity, a summary, a description and a runbook_url to
// its own section of docs/runbooks.md.
func TestAlertRules(t *testing.T) {
	promtool(t, "check", "rules", alertsFile)
	want := readRuleSpec(t, alertsFile)

	rendered := map[string]*monitoringv1.PrometheusRule{
		"chart":     only[*monitoringv1.PrometheusRule](t, helmTemplate(t, "rel", "ns", "--values", filepath.Join(chartDir, "ci", "semaphore-values.yaml"))),
		"kustomize": only[*monitoringv1.PrometheusRule](t, kustomizeBuild(t, "overlays/example")),
	}
	for name, pr := range rendered {
		if diff := cmp.Diff(want, pr.Spec); diff != "" {
			t.Errorf("%s PrometheusRule differs from %s (-file +%s):\n%s", name, alertsFile, name, diff)
		}
		b, err := yaml.Marshal(pr.Spec)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), name+"-rules.yaml")
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		promtool(t, "check", "rules", f)
	}

	runbooks, err := os.ReadFile(filepath.Join(repoRoot, "docs", "runbooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]bool{} // anchors of the alerts' sections
	for line := range strings.Lines(string(runbooks)) {
		if h, ok := strings.CutPrefix(strings.TrimSpace(line), "## Lockex"); ok {
			sections["lockex"+strings.ToLower(h)] = true
		}
	}
	var names []string
	for _, g := range want.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("recording rule %q: only alerts expected", r.Record)
				continue
			}
			names = append(names, r.Alert)
			if r.Labels["severity"] == "" {
				t.Errorf("%s: no severity label", r.Alert)
			}
			for _, a := range []string{"summary", "description"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			anchor := strings.ToLower(r.Alert)
			if got, want := r.Annotations["runbook_url"], runbookBase+"#"+anchor; got != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, got, want)
			}
			if !sections[anchor] {
				t.Errorf("%s: docs/runbooks.md has no section \"## %s\"", r.Alert, r.Alert)
			}
			delete(sections, anchor)
		}
	}
	for anchor := range sections {
		t.Errorf("docs/runbooks.md: section #%s is for no alert", anchor)
	}
	wantNames := []string{"LockexCrashLooping", "LockexLockLost", "LockexNoHolder", "LockexTooManyHolders", "LockexZooKeeperDisconnected"}
	if !slices.Equal(slices.Sorted(slices.Values(names)), wantNames) {
		t.Errorf("alerts %v, want %v", names, wantNames)
	}
}

// unitTests is the part of promtool's test file that the checks below read.
type unitTests struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		Name        string `json:"name"`
		InputSeries []struct {
			Series string `json:"series"`
		} `json:"input_series"`
		AlertRuleTests []struct {
			Alertname string `json:"alertname"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// TestAlertUnitTests runs the rules' unit tests with promtool test rules,
// after checking that they test what is shipped: the rule file itself,
// every alert firing at least once, and lockex's series as the real lockex
// exports them (names and labels).
func TestAlertUnitTests(t *testing.T) {
	b, err := os.ReadFile(alertTests)
	if err != nil {
		t.Fatal(err)
	}
	var ut unitTests
	if err := yaml.Unmarshal(b, &ut); err != nil {
		t.Fatalf("%s: %v", alertTests, err)
	}
	if len(ut.RuleFiles) != 1 || filepath.Join(filepath.Dir(alertTests), ut.RuleFiles[0]) != filepath.Clean(alertsFile) {
		t.Fatalf("%s: rule_files %v, want the one rule file %s", alertTests, ut.RuleFiles, alertsFile)
	}

	fired := map[string]bool{}
	for _, tg := range ut.Tests {
		for _, at := range tg.AlertRuleTests {
			if len(at.ExpAlerts) > 0 {
				fired[at.Alertname] = true
			}
		}
	}
	for _, g := range readRuleSpec(t, alertsFile).Groups {
		for _, r := range g.Rules {
			if !fired[r.Alert] {
				t.Errorf("%s: no unit test in %s expects it to fire", r.Alert, alertTests)
			}
		}
	}

	exported := scrapeLockex(t)
	// Labels that Prometheus adds to every target's series.
	target := map[string]bool{"namespace": true, "pod": true, "instance": true, "job": true}
	for _, tg := range ut.Tests {
		for _, in := range tg.InputSeries {
			name, labels := parseSeries(t, in.Series)
			if !strings.HasPrefix(name, "lockex_") {
				continue
			}
			have, ok := exported[name]
			if !ok {
				t.Errorf("test %q: lockex exports no %s", tg.Name, name)
				continue
			}
			for l := range labels {
				if !target[l] && !have[l] {
					t.Errorf("test %q: lockex exports %s without a label %q", tg.Name, name, l)
				}
			}
		}
	}
	for _, g := range readRuleSpec(t, alertsFile).Groups {
		for _, r := range g.Rules {
			for _, name := range regexp.MustCompile(`\blockex_[a-z_]+`).FindAllString(r.Expr.String(), -1) {
				if _, ok := exported[name]; !ok {
					t.Errorf("%s: lockex exports no %s", r.Alert, name)
				}
			}
		}
	}

	out := promtool(t, "test", "rules", alertTests)
	t.Logf("promtool test rules %s:\n%s", alertTests, out)
}

// TestCrashLoopSelectsLockexPods: LockexCrashLooping knows lockex's pods by
// their init container, so the chart (in every mode that runs lockex) and the
// kustomize base must render one of that name.
func TestCrashLoopSelectsLockexPods(t *testing.T) {
	var expr string
	for _, g := range readRuleSpec(t, alertsFile).Groups {
		for _, r := range g.Rules {
			if r.Alert == "LockexCrashLooping" {
				expr = r.Expr.String()
			}
		}
	}
	if !strings.Contains(expr, `kube_pod_init_container_info{container="`+crashLoopInit+`"}`) {
		t.Fatalf("LockexCrashLooping does not select pods by their %s init container:\n%s", crashLoopInit, expr)
	}
	pods := map[string]*appsv1.Deployment{
		"kustomize base": only[*appsv1.Deployment](t, kustomizeBuild(t, "base")),
	}
	for _, mode := range []string{"singleton", "semaphore", "route-to-active"} {
		values := filepath.Join(chartDir, "ci", mode+"-values.yaml")
		pods["chart "+mode] = only[*appsv1.Deployment](t, helmTemplate(t, "rel", "ns", "--values", values))
	}
	for name, dep := range pods {
		found := slices.ContainsFunc(dep.Spec.Template.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == crashLoopInit })
		if !found {
			t.Errorf("%s: no init container %q, so LockexCrashLooping would not see its pods crash-loop", name, crashLoopInit)
		}
	}
}

// parseSeries reads a series as promtool's input_series names it,
// name{label="value",...}, with the text exposition format's own parser.
func parseSeries(t *testing.T, s string) (string, map[string]string) {
	t.Helper()
	tp := expfmt.NewTextParser(model.UTF8Validation)
	families, err := tp.TextToMetricFamilies(strings.NewReader(s + " 0\n"))
	if err != nil || len(families) != 1 {
		t.Fatalf("series %q: %v", s, err)
	}
	for name, mf := range families {
		labels := map[string]string{}
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		return name, labels
	}
	panic("unreachable")
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
	var body []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				body = b
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("lockex /metrics at %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	tp := expfmt.NewTextParser(model.UTF8Validation)
	families, err := tp.TextToMetricFamilies(bufio.NewReader(bytes.NewReader(body)))
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
