package check

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// values is the part of a values file the assertions read.
type values struct {
	Command     []string `json:"command"`
	Args        []string `json:"args"`
	Singleton   *bool    `json:"singleton"`
	Concurrency int      `json:"concurrency"`
	Replicas    *int32   `json:"replicaCount"`
	Lock        struct {
		Path string `json:"path"`
		ID   string `json:"id"`
	} `json:"lock"`
}

func readValues(t *testing.T, file string) values {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var v values
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return v
}

func helmTemplate(t *testing.T, release, namespace string, args ...string) manifests {
	t.Helper()
	all := append([]string{"template", release, chartDir, "--namespace", namespace}, args...)
	return decodeStrict(t, run(t, "helm", all...))
}

// ciValues are the chart's example values, one per way of using it; each is
// linted, rendered and checked.
func ciValues(t *testing.T) []string {
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci/*-values.yaml in %s: %v", chartDir, err)
	}
	return files
}

func TestHelmLint(t *testing.T) {
	run(t, "helm", "lint", "--strict", chartDir, "--set", "image.repository=example/app", "--set", "command={/app}", "--set", "zookeeper.hosts=zk:2181")
	for _, f := range ciValues(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			run(t, "helm", "lint", "--strict", chartDir, "--values", f)
		})
	}
}

// TestHelmModes renders each example values file and checks the objects,
// the wrapping and the pod's hardening; then runs the pod's containers with
// the real lockex, as the kubelet would, up to lockex's configuration checks.
func TestHelmModes(t *testing.T) {
	secrets := map[string]map[string]string{
		"zk-credentials": {
			"zkhosts":     "zk-0.zk:2181,zk-1.zk:2181,zk-2.zk:2181/apps",
			"zk-user":     "scheduler",
			"zk-password": "s3cret",
		},
	}
	tests := []struct {
		file      string
		mode      string // mutex, semaphore, plain
		readiness string
		kinds     []string
	}{
		{"singleton-values.yaml", "mutex", "/readyz", []string{"PodDisruptionBudget", "Deployment"}},
		{"semaphore-values.yaml", "semaphore", "/readyz", []string{"PodDisruptionBudget", "Service", "Deployment", "PrometheusRule", "ServiceMonitor"}},
		{"plain-values.yaml", "plain", "", []string{"PodDisruptionBudget", "Service", "Deployment"}},
		{"route-to-active-values.yaml", "mutex", "/active", []string{"Service", "Deployment"}},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		seen[tc.file] = true
		t.Run(strings.TrimSuffix(tc.file, "-values.yaml"), func(t *testing.T) {
			file := filepath.Join(chartDir, "ci", tc.file)
			v := readValues(t, file)
			const release, ns = "rel", "team-a"
			objs := helmTemplate(t, release, ns, "--values", file)
			slices.Sort(tc.kinds)
			if got := slices.Sorted(slices.Values(objs.kinds())); !slices.Equal(got, tc.kinds) {
				t.Errorf("kinds %v, want %v", got, tc.kinds)
			}

			dep := only[*appsv1.Deployment](t, objs)
			main := checkPod(t, &dep.Spec.Template, podWant{
				wrapped:   tc.mode != "plain",
				workload:  append(slices.Clone(v.Command), v.Args...),
				readiness: tc.readiness,
			})
			checkSelectors(t, objs, dep)
			if v.Replicas != nil && *dep.Spec.Replicas != *v.Replicas {
				t.Errorf("replicas %d, want %d", *dep.Spec.Replicas, *v.Replicas)
			}

			switch st := dep.Spec.Strategy; {
			case tc.readiness == "/active":
				if st.Type != appsv1.RecreateDeploymentStrategyType {
					t.Errorf("routeToActive: strategy %s, want Recreate", st.Type)
				}
			case st.Type != appsv1.RollingUpdateDeploymentStrategyType || st.RollingUpdate == nil ||
				st.RollingUpdate.MaxUnavailable == nil || st.RollingUpdate.MaxUnavailable.IntValue() != 0:
				t.Errorf("strategy %+v, want RollingUpdate with maxUnavailable 0", st)
			}
			if tc.mode == "plain" {
				return
			}

			a := argv(main)
			flags := a[:slices.Index(a, "--")]
			wantPath := v.Lock.Path
			if wantPath == "" {
				wantPath = "lockex/" + ns
			}
			wantID := v.Lock.ID
			if wantID == "" {
				wantID = dep.Name
			}
			if got := flagValue(flags, "--lockpath"); got != wantPath {
				t.Errorf("--lockpath %q, want %q", got, wantPath)
			}
			if got := flagValue(flags, "--lockid"); got != wantID {
				t.Errorf("--lockid %q, want %q (fixed, not derived from the command)", got, wantID)
			}
			conc := flagValue(flags, "--concurrent")
			switch {
			case tc.mode == "semaphore" && conc != "2":
				t.Errorf("semaphore: --concurrent %q, want 2", conc)
			case tc.mode == "mutex" && conc != "" && conc != "1":
				t.Errorf("singleton: --concurrent %q", conc)
			}

			r := newPodRun(t, &dep.Spec.Template.Spec, objs, secrets)
			r.install()
			if code, out := r.validate(); code != 0 || !strings.HasPrefix(out, "lockex ") {
				t.Errorf("lockex rejects the rendered configuration: exit %d\n%s", code, out)
			}
		})
	}
	for _, f := range ciValues(t) {
		if !seen[filepath.Base(f)] {
			t.Errorf("%s is linted but not checked here", f)
		}
	}
}

// checkSelectors: the budget, the Services and the ServiceMonitor select
// what they should.
func checkSelectors(t *testing.T, objs manifests, dep *appsv1.Deployment) {
	t.Helper()
	podLabels := labels.Set(dep.Spec.Template.Labels)
	if !labels.SelectorFromSet(dep.Spec.Selector.MatchLabels).Matches(podLabels) {
		t.Errorf("Deployment selector %v does not match its pods %v", dep.Spec.Selector.MatchLabels, podLabels)
	}
	for _, pdb := range all[*policyv1.PodDisruptionBudget](objs) {
		if !labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels).Matches(podLabels) {
			t.Errorf("PodDisruptionBudget selector %v misses the pods %v", pdb.Spec.Selector.MatchLabels, podLabels)
		}
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
			t.Errorf("PodDisruptionBudget: want maxUnavailable 1 (one pod at a time), got %+v", pdb.Spec)
		}
		if p := pdb.Spec.UnhealthyPodEvictionPolicy; p == nil || *p != policyv1.AlwaysAllow {
			t.Errorf("PodDisruptionBudget: a pod that is not Ready is no standby; want unhealthyPodEvictionPolicy AlwaysAllow")
		}
	}
	main := &dep.Spec.Template.Spec.Containers[0]
	services := all[*corev1.Service](objs)
	for _, svc := range services {
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			t.Errorf("Service %s selector %v misses the pods %v", svc.Name, svc.Spec.Selector, podLabels)
		}
		for _, p := range svc.Spec.Ports {
			containerPort(t, main, p.TargetPort)
		}
	}
	for _, sm := range all[*monitoringv1.ServiceMonitor](objs) {
		var target *corev1.Service
		for _, svc := range services {
			if labels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(labels.Set(svc.Labels)) {
				if target != nil {
					t.Errorf("ServiceMonitor %s selects Services %s and %s", sm.Name, target.Name, svc.Name)
				}
				target = svc
			}
		}
		if target == nil {
			t.Fatalf("ServiceMonitor %s selects no Service", sm.Name)
		}
		if !target.Spec.PublishNotReadyAddresses {
			t.Errorf("metrics Service %s: standbys that are not Ready would not be scraped; want publishNotReadyAddresses", target.Name)
		}
		for _, ep := range sm.Spec.Endpoints {
			i := slices.IndexFunc(target.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port })
			if i < 0 {
				t.Errorf("ServiceMonitor endpoint port %q is not a port of Service %s", ep.Port, target.Name)
				continue
			}
			port := containerPort(t, main, target.Spec.Ports[i].TargetPort)
			if main.LivenessProbe == nil || containerPort(t, main, main.LivenessProbe.HTTPGet.Port) != port {
				t.Errorf("ServiceMonitor scrapes port %d, not lockex's", port)
			}
			if ep.Path != "/metrics" {
				t.Errorf("ServiceMonitor path %q, want /metrics", ep.Path)
			}
		}
	}
}

// TestHelmRefuses: values that cannot work fail the rendering with a message
// that names the value to fix.
func TestHelmRefuses(t *testing.T) {
	base := []string{"--set", "image.repository=example/app", "--set", "zookeeper.hosts=zk:2181"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "command is required"},
		{"no image", []string{"--set", "image.repository=", "--set", "command={/app}"}, "image.repository is required"},
		{"no zookeeper", []string{"--set", "command={/app}", "--set", "zookeeper.hosts="}, "zookeeper.hosts is required"},
		{"singleton with concurrency", []string{"--set", "command={/app}", "--set", "concurrency=3"}, "singleton: false"},
		{"auth without secret", []string{"--set", "command={/app}", "--set", "zookeeper.auth.enabled=true", "--set", "zookeeper.auth.user=u"}, "zookeeper.existingSecret"},
		{"misspelt value", []string{"--set", "command={/app}", "--set", "singelton=false"}, "singelton"},
		{"bad duration", []string{"--set", "command={/app}", "--set", "lock.killGrace=3x"}, "killGrace"},
		{"monitoring without lockex", []string{"--set", "command={/app}", "--set", "singleton=false", "--set", "metrics.serviceMonitor.enabled=true"}, "needs lockex"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"template", "rel", chartDir}, base...)
			stderr := runFail(t, "helm", append(args, tc.args...)...)
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q does not mention %q", stderr, tc.want)
			}
		})
	}
}

// TestHelmLockexRejects shows the run of the rendered pod has teeth: a kill
// grace that leaves no room renders, but the copied lockex refuses it.
func TestHelmLockexRejects(t *testing.T) {
	objs := helmTemplate(t, "rel", "ns", "--values", filepath.Join(chartDir, "ci", "singleton-values.yaml"),
		"--set", "lock.sessionTimeout=10s", "--set", "lock.killGrace=9s")
	dep := only[*appsv1.Deployment](t, objs)
	r := newPodRun(t, &dep.Spec.Template.Spec, objs, nil)
	r.install()
	code, out := r.validate()
	if code != 64 || !strings.Contains(out, "kill-grace") {
		t.Errorf("kill grace 9s of 10s: exit %d, want 64 naming --kill-grace\n%s", code, out)
	}
}

// TestLockexVariables: every LOCKEX_ variable the chart or kustomize sets
// is a flag of the real lockex (docs/design.md §1: LOCKEX_ + the long name), so none is
// silently ignored.
func TestLockexVariables(t *testing.T) {
	help := string(run(t, lockexBin, "--help"))
	var renders []manifests
	for _, f := range ciValues(t) {
		renders = append(renders, helmTemplate(t, "rel", "ns", "--values", f))
	}
	for _, dir := range []string{"base", "overlays/example"} {
		renders = append(renders, decodeStrict(t, run(t, "kustomize", "build", filepath.Join(kustDir, dir))))
	}
	names := map[string]bool{}
	for _, objs := range renders {
		for _, dep := range all[*appsv1.Deployment](objs) {
			for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
				names[e.Name] = true
			}
		}
		for _, cm := range all[*corev1.ConfigMap](objs) {
			for k := range cm.Data {
				names[k] = true
			}
		}
	}
	checked := 0
	for name := range names {
		flag, ok := strings.CutPrefix(name, "LOCKEX_")
		if !ok {
			continue
		}
		checked++
		flag = "--" + strings.ReplaceAll(strings.ToLower(flag), "_", "-")
		if !strings.Contains(help, flag+" ") && !strings.Contains(help, flag+"[") {
			t.Errorf("%s: lockex --help lists no %s", name, flag)
		}
	}
	if checked == 0 {
		t.Error("no LOCKEX_ variables found: the check checked nothing")
	}
}

// TestHelmNotes renders NOTES.txt, which helm template leaves out, for each
// example: a copy of the chart renders it through tpl into a ConfigMap.
func TestHelmNotes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lockex")
	run(t, "cp", "-r", chartDir, dir)
	if err := os.Rename(filepath.Join(dir, "templates", "NOTES.txt"), filepath.Join(dir, "notes.src")); err != nil {
		t.Fatal(err)
	}
	tmpl := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n    {{- tpl (.Files.Get \"notes.src\") . | nindent 4 }}\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "notes-check.yaml"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range ciValues(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			v := readValues(t, f)
			out := run(t, "helm", "template", "rel", dir, "--namespace", "ns", "--values", f, "--show-only", "templates/notes-check.yaml")
			notes := only[*corev1.ConfigMap](t, decodeStrict(t, out)).Data["notes"]
			wrapped := v.Singleton == nil || *v.Singleton || v.Concurrency > 0
			if wrapped != strings.Contains(notes, "--status") {
				t.Errorf("notes (lockex: %v):\n%s", wrapped, notes)
			}
		})
	}
}
