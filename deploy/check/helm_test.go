package check

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
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

// ciSecrets are the Secrets the example values name, as the cluster would
// hold them.
func ciSecrets(t *testing.T) map[string]map[string]string {
	pki := testPKI(t)
	return map[string]map[string]string{
		"zk-credentials": {
			"zkhosts":     "zk-0.zk:2181,zk-1.zk:2181,zk-2.zk:2181/apps",
			"zk-user":     "scheduler",
			"zk-password": "s3cret",
		},
		"exporter-zk-client-tls": {"ca.crt": pki.caPEM, "tls.crt": pki.certPEM, "tls.key": pki.keyPEM},
	}
}

// TestHelmModes renders each example values file and checks the objects,
// the wrapping and the security context; then runs the pod's containers
// with the real lockex, as the kubelet would, up to lockex's configuration
// checks.
func TestHelmModes(t *testing.T) {
	tests := []struct {
		file     string
		mode     string // mutex, semaphore, plain
		hardened bool
		route    bool // routeToActive
		cost     bool // deletionCost (alone)
		kinds    []string
	}{
		{"singleton-values.yaml", "mutex", false, false, false, []string{"PodDisruptionBudget", "Deployment", "Pod"}},
		{"semaphore-values.yaml", "semaphore", false, false, false, []string{"PodDisruptionBudget", "Service", "Deployment", "PrometheusRule", "ServiceMonitor", "Pod"}},
		{"plain-values.yaml", "plain", false, false, false, []string{"PodDisruptionBudget", "Service", "Deployment"}},
		{"route-to-active-values.yaml", "mutex", false, true, false, []string{"PodDisruptionBudget", "ServiceAccount", "Role", "RoleBinding", "Service", "Deployment", "Pod"}},
		{"deletion-cost-values.yaml", "mutex", false, false, true, []string{"PodDisruptionBudget", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Pod"}},
		{"hardened-values.yaml", "mutex", true, false, false, []string{"PodDisruptionBudget", "ServiceAccount", "Deployment", "Pod"}},
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
				wrapped:  tc.mode != "plain",
				workload: append(slices.Clone(v.Command), v.Args...),
				hardened: tc.hardened,
				token:    tc.route || tc.cost,
			})
			checkSelectors(t, objs, dep)
			checkSecretModes(t, &dep.Spec.Template.Spec)
			if v.Replicas != nil && *dep.Spec.Replicas != *v.Replicas {
				t.Errorf("replicas %d, want %d", *dep.Spec.Replicas, *v.Replicas)
			}
			checkStrategy(t, dep)
			if tc.mode == "plain" {
				return
			}

			checkIdentity(t, &dep.Spec.Template.Spec, main)
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
			if tc.route {
				checkRouteToActive(t, objs, dep)
			} else if got := flagValue(flags, "--active-label"); got != "" {
				t.Errorf("--active-label %q without routeToActive", got)
			}
			// routeToActive turns the deletion cost on too: it has the
			// rights already, and a Service's holder is the pod a rollout
			// should delete last.
			if got := slices.Contains(flags, "--deletion-cost"); got != (tc.route || tc.cost) {
				t.Errorf("--deletion-cost in lockex's flags: %t, want %t", got, tc.route || tc.cost)
			}
			if tc.route || tc.cost {
				checkPodPatching(t, objs, dep)
			}

			secrets := ciSecrets(t)
			r := newPodRun(t, &dep.Spec.Template.Spec, objs, secrets)
			r.install()
			if code, out := r.validate(); code != 0 || !strings.HasPrefix(out, "lockex ") {
				t.Errorf("lockex rejects the rendered configuration: exit %d\n%s", code, out)
			}
			checkTestHook(t, objs, dep, secrets)
		})
	}
	for _, f := range ciValues(t) {
		if !seen[filepath.Base(f)] {
			t.Errorf("%s is linted but not checked here", f)
		}
	}
}

// checkIdentity: lockex is told who it is by the downward API, and its
// container's own name as a literal, and runs as its container's PID 1 (no
// PID namespace shared with the pod), so that a restart of the container
// takes over from its dead earlier incarnation (docs/design.md §3.4).
func checkIdentity(t *testing.T, spec *corev1.PodSpec, main *corev1.Container) {
	t.Helper()
	fields := map[string]string{}
	literal := map[string]string{}
	for _, e := range main.Env {
		switch {
		case e.ValueFrom == nil:
			literal[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			fields[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	for name, path := range map[string]string{"LOCKEX_POD_NAME": "metadata.name", "LOCKEX_POD_NAMESPACE": "metadata.namespace", "LOCKEX_POD_UID": "metadata.uid", "LOCKEX_POD_IP": "status.podIP"} {
		if fields[name] != path {
			t.Errorf("%s: want the downward API's %s, got env %+v", name, path, main.Env)
		}
	}
	if literal["LOCKEX_CONTAINER_NAME"] != main.Name {
		t.Errorf("LOCKEX_CONTAINER_NAME %q, want the container's own name %q", literal["LOCKEX_CONTAINER_NAME"], main.Name)
	}
	if a := argv(main); len(a) == 0 || a[0] != lockexMount+"/lockex" {
		t.Errorf("the main container runs %q, not lockex as its PID 1", a)
	}
	if spec.ShareProcessNamespace != nil && *spec.ShareProcessNamespace || spec.HostPID {
		t.Errorf("the pod shares a PID namespace: lockex would not be PID 1")
	}
}

// checkStrategy: a rolling update that keeps a standby, whatever the
// routing: a surge pod first, or, when hard anti-affinity leaves no node
// for one, an old pod stopped first.
func checkStrategy(t *testing.T, dep *appsv1.Deployment) {
	t.Helper()
	st := dep.Spec.Strategy
	if st.Type != appsv1.RollingUpdateDeploymentStrategyType || st.RollingUpdate == nil ||
		st.RollingUpdate.MaxSurge == nil || st.RollingUpdate.MaxUnavailable == nil {
		t.Fatalf("strategy %+v, want RollingUpdate with maxSurge and maxUnavailable", st)
	}
	surge, unavailable := st.RollingUpdate.MaxSurge.IntValue(), st.RollingUpdate.MaxUnavailable.IntValue()
	hard := false
	if a := dep.Spec.Template.Spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		hard = len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) > 0
	}
	switch {
	case hard && (surge != 0 || unavailable != 1):
		t.Errorf("hard anti-affinity: maxSurge %d, maxUnavailable %d; a surge pod finds no node with one node per replica: want 0 and 1", surge, unavailable)
	case !hard && (surge != 1 || unavailable != 0):
		t.Errorf("maxSurge %d, maxUnavailable %d: want 1 and 0, a new standby before an old pod stops", surge, unavailable)
	}
}

// checkRouteToActive: the Service selects the label lockex keeps on its
// active pod, and lockex is told to keep it.
func checkRouteToActive(t *testing.T, objs manifests, dep *appsv1.Deployment) {
	t.Helper()
	main := &dep.Spec.Template.Spec.Containers[0]
	a := argv(main)
	flags := a[:slices.Index(a, "--")]
	key, value, ok := strings.Cut(flagValue(flags, "--active-label"), "=")
	if !ok {
		t.Fatalf("routeToActive: lockex argv %q has no --active-label key=value", a)
	}
	if got := flagValue(flags, "--active-http"); got != "http://127.0.0.1:8080/ready" {
		t.Errorf("--active-http %q, want the workload's own readiness, http://127.0.0.1:8080/ready", got)
	}
	for _, svc := range all[*corev1.Service](objs) {
		if svc.Spec.PublishNotReadyAddresses {
			continue // the metrics Service
		}
		if svc.Spec.Selector[key] != value {
			t.Errorf("Service %s selector %v: want %s=%s, the label of the active pods", svc.Name, svc.Spec.Selector, key, value)
		}
		if dep.Spec.Template.Labels[key] != "" {
			t.Errorf("the pod template carries %s itself: every pod would be selected", key)
		}
	}
}

// checkPodPatching: lockex patches its own pod (the label of
// routeToActive, the deletion cost) and reads and patches the pod of a
// holder it took over from: it is told its pod's name by the downward API,
// and the pod's service account may get and patch pods, and nothing more.
func checkPodPatching(t *testing.T, objs manifests, dep *appsv1.Deployment) {
	t.Helper()
	main := &dep.Spec.Template.Spec.Containers[0]
	i := slices.IndexFunc(main.Env, func(e corev1.EnvVar) bool { return e.Name == "LOCKEX_POD_NAME" })
	if i < 0 || main.Env[i].ValueFrom == nil || main.Env[i].ValueFrom.FieldRef == nil || main.Env[i].ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("LOCKEX_POD_NAME: want the downward API's metadata.name, got %+v", main.Env)
	}
	sa := dep.Spec.Template.Spec.ServiceAccountName
	if sa == "" || only[*corev1.ServiceAccount](t, objs).Name != sa {
		t.Fatalf("pods run as service account %q, not the one rendered", sa)
	}
	role := only[*rbacv1.Role](t, objs)
	binding := only[*rbacv1.RoleBinding](t, objs)
	if binding.RoleRef.Kind != "Role" || binding.RoleRef.Name != role.Name ||
		len(binding.Subjects) != 1 || binding.Subjects[0].Kind != "ServiceAccount" || binding.Subjects[0].Name != sa {
		t.Errorf("RoleBinding %+v does not bind Role %s to ServiceAccount %s", binding, role.Name, sa)
	}
	var patch, get bool
	for _, rule := range role.Rules {
		if slices.Contains(rule.APIGroups, "") && slices.Contains(rule.Resources, "pods") {
			patch = patch || slices.Contains(rule.Verbs, "patch")
			get = get || slices.Contains(rule.Verbs, "get")
		}
		extra := slices.DeleteFunc(slices.Clone(rule.Verbs), func(v string) bool { return v == "get" || v == "patch" })
		if len(extra) > 0 || !slices.Equal(rule.APIGroups, []string{""}) || !slices.Equal(rule.Resources, []string{"pods"}) {
			t.Errorf("Role rule %+v grants more than getting and patching pods", rule)
		}
	}
	if !patch || !get {
		t.Errorf("Role %+v: lockex cannot get and patch pods (get %v, patch %v)", role.Rules, get, patch)
	}
}

// checkSecretModes: lockex reads its Secret files as whatever user the
// workload's image runs as: readable by all, or by the group when the pod
// gives an fsGroup.
func checkSecretModes(t *testing.T, spec *corev1.PodSpec) {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Secret == nil || !strings.HasPrefix(v.Name, "lockex-") {
			continue
		}
		mode := int32(0o644)
		if v.Secret.DefaultMode != nil {
			mode = *v.Secret.DefaultMode
		}
		fsGroup := spec.SecurityContext != nil && spec.SecurityContext.FSGroup != nil
		if mode&0o004 == 0 && !(fsGroup && mode&0o040 != 0) {
			t.Errorf("Secret volume %s: mode %#o, unreadable by a workload user that does not own it (fsGroup: %v)", v.Name, mode, fsGroup)
		}
	}
}

// checkTestHook: the helm test is lockex --status, from the lockex image,
// against the release's lock, reaching ZooKeeper as the pods do; it is no
// pod the Deployment, the budget or a Service would count; and the real
// lockex accepts its configuration.
func checkTestHook(t *testing.T, objs manifests, dep *appsv1.Deployment, secrets map[string]map[string]string) {
	t.Helper()
	pod := only[*corev1.Pod](t, objs)
	if pod.Annotations["helm.sh/hook"] != "test" {
		t.Fatalf("Pod %s: annotations %v, want helm.sh/hook: test", pod.Name, pod.Annotations)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("test pod restartPolicy %q, want Never: its exit code is the result", pod.Spec.RestartPolicy)
	}
	spec := &dep.Spec.Template.Spec
	c := &pod.Spec.Containers[0]
	if c.Image != spec.InitContainers[0].Image || len(c.Command) != 0 {
		t.Errorf("test container: image %s command %q, want the lockex image %s through its entrypoint", c.Image, c.Command, spec.InitContainers[0].Image)
	}
	if len(c.Args) == 0 || c.Args[0] != "--status" {
		t.Fatalf("test container args %q, want --status first", c.Args)
	}
	podLabels := labels.Set(pod.Labels)
	if labels.SelectorFromSet(dep.Spec.Selector.MatchLabels).Matches(podLabels) {
		t.Errorf("test pod labels %v match the Deployment's selector", pod.Labels)
	}
	for _, pdb := range all[*policyv1.PodDisruptionBudget](objs) {
		if labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels).Matches(podLabels) {
			t.Errorf("test pod labels %v match the budget's selector", pod.Labels)
		}
	}
	for _, svc := range all[*corev1.Service](objs) {
		if labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			t.Errorf("test pod labels %v match Service %s", pod.Labels, svc.Name)
		}
	}
	checkRestricted(t, c.Name, orEmpty(pod.Spec.SecurityContext), c.SecurityContext)

	// The same lock and the same way to ZooKeeper as the workload's lockex.
	main := &spec.Containers[0]
	ma := argv(main)
	mflags := ma[1:slices.Index(ma, "--")]
	for _, f := range []string{"--zkhosts", "--lockpath", "--lockid", "--concurrent", "--zk-password-file", "--zk-tls-ca", "--zk-tls-cert", "--zk-tls-key"} {
		if got, want := flagValue(c.Args, f), flagValue(mflags, f); got != want {
			t.Errorf("test pod %s %q, the pods' %q", f, got, want)
		}
	}
	r := newPodRun(t, &pod.Spec, objs, secrets)
	tenv, menv := r.env(c), newPodRun(t, spec, objs, secrets).env(main)
	for _, k := range []string{"LOCKEX_ZKHOSTS", "LOCKEX_ZK_USER"} {
		if tenv[k] != menv[k] {
			t.Errorf("test pod %s=%q, the pods' %q", k, tenv[k], menv[k])
		}
	}
	run := append([]string{lockexBin}, r.mapArgs(c, c.Args)...)
	if code, out := r.exec(c, append(run, "--version")); code != 0 || !strings.HasPrefix(out, "lockex ") {
		t.Errorf("lockex rejects the test pod's configuration: exit %d\n%s", code, out)
	}
}

func orEmpty(p *corev1.PodSecurityContext) *corev1.PodSecurityContext {
	if p == nil {
		return &corev1.PodSecurityContext{}
	}
	return p
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
	// An active pod: what lockex labels with --active-label.
	active := maps.Clone(podLabels)
	label := flagValue(argv(&dep.Spec.Template.Spec.Containers[0]), "--active-label")
	if label == "" && len(main.EnvFrom) == 1 && main.EnvFrom[0].ConfigMapRef != nil {
		// kustomize's: in the ConfigMap lockex reads its variables from.
		label = lockexConfig(t, objs, main).Data["LOCKEX_ACTIVE_LABEL"]
	}
	if key, value, ok := strings.Cut(label, "="); ok {
		active[key] = value
	}
	for _, svc := range services {
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(active) {
			t.Errorf("Service %s selector %v misses the (active) pods %v", svc.Name, svc.Spec.Selector, active)
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
		{"singleton Service to standbys", []string{"--set", "command={/app}", "--set", "service.enabled=true", "--set", "service.ports[0].port=80"},
			"needs routeToActive: true. Without it the Service would send traffic to standbys"},
		{"semaphore Service to standbys", []string{"--set", "command={/app}", "--set", "singleton=false", "--set", "concurrency=2", "--set", "service.enabled=true", "--set", "service.ports[0].port=80"},
			"needs routeToActive: true"},
		{"routeToActive without an account", []string{"--set", "command={/app}", "--set", "routeToActive=true"}, "routeToActive needs a service account that may get and patch pods"},
		{"routeToActive without lockex", []string{"--set", "command={/app}", "--set", "singleton=false", "--set", "routeToActive=true"}, "routeToActive needs lockex"},
		{"deletionCost without an account", []string{"--set", "command={/app}", "--set", "deletionCost=true"}, "deletionCost needs a service account that may get and patch pods"},
		{"deletionCost without lockex", []string{"--set", "command={/app}", "--set", "singleton=false", "--set", "deletionCost=true"}, "deletionCost needs lockex"},
		{"two checks", []string{"--set", "command={/app}", "--set", "activeCheck.httpGet.port=80", "--set", "activeCheck.tcpSocket.port=80"}, "give httpGet or tcpSocket, not both"},
		{"check port name unknown", []string{"--set", "command={/app}", "--set", "activeCheck.tcpSocket.port=http"}, `activeCheck.tcpSocket.port "http": no port of that name in ports`},
		{"check without port", []string{"--set", "command={/app}", "--set", "activeCheck.httpGet.path=/ready"}, "activeCheck.httpGet.port is required"},
		{"check path relative", []string{"--set", "command={/app}", "--set", "activeCheck.httpGet.port=80", "--set", "activeCheck.httpGet.path=ready"}, `activeCheck.httpGet.path "ready": want an absolute path`},
		{"two health checks", []string{"--set", "command={/app}", "--set", "healthCheck.httpGet.port=80", "--set", "healthCheck.exec.command={/check}"}, "give httpGet or exec, not both"},
		{"health check without port", []string{"--set", "command={/app}", "--set", "healthCheck.httpGet.path=/healthz"}, "healthCheck.httpGet.port is required"},
		{"health check path relative", []string{"--set", "command={/app}", "--set", "healthCheck.httpGet.port=80", "--set", "healthCheck.httpGet.path=healthz"}, `healthCheck.httpGet.path "healthz": want an absolute path`},
		{"two standby checks", []string{"--set", "command={/app}", "--set", "healthCheck.standby.httpGet.port=80", "--set", "healthCheck.standby.exec.command={/check}"}, "healthCheck.standby: give httpGet or exec, not both"},
		{"standby check without port", []string{"--set", "command={/app}", "--set", "healthCheck.standby.httpGet.path=/fit"}, "healthCheck.standby.httpGet.port is required"},
		{"health check threshold 0", []string{"--set", "command={/app}", "--set", "healthCheck.exec.command={/check}", "--set", "healthCheck.failureThreshold=0"}, "failureThreshold"},
		{"tls without secret", []string{"--set", "command={/app}", "--set", "zookeeper.tls.enabled=true"}, "zookeeper.tls.enabled needs zookeeper.tls.secretName"},
		{"bad digest", []string{"--set", "command={/app}", "--set", "image.digest=latest"}, "digest"},
		{"port out of range", []string{"--set", "command={/app}", "--set", "metrics.port=70000"}, "port"},
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

// TestHelmImages: tags given as numbers render as written, a digest pins
// the image (without a made-up tag), and the lockex image defaults to the
// chart's appVersion, the tag the release publishes.
func TestHelmImages(t *testing.T) {
	chart, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(chart, &meta); err != nil || meta.AppVersion == "" {
		t.Fatalf("Chart.yaml appVersion: %q, %v", meta.AppVersion, err)
	}
	digest := "sha256:" + strings.Repeat("ab", 32)
	numeric := filepath.Join(t.TempDir(), "numeric-values.yaml")
	if err := os.WriteFile(numeric, []byte("image:\n  tag: 2\nlockexImage:\n  tag: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"--set", "image.repository=registry.example.com/app", "--set", "command={/app}", "--set", "zookeeper.hosts=zk:2181"}
	for _, tc := range []struct {
		name          string
		args          []string
		image, lockex string
	}{
		{"defaults", nil, "registry.example.com/app:latest", "ghcr.io/lockex/lockex:" + meta.AppVersion},
		{"--set tag=1.0", []string{"--set", "image.tag=1.0"}, "registry.example.com/app:1.0", ""},
		{"--set tag=2 (a number)", []string{"--set", "image.tag=2", "--set", "lockexImage.tag=3"}, "registry.example.com/app:2", "ghcr.io/lockex/lockex:3"},
		{"tag: 2 in a values file", []string{"--values", numeric}, "registry.example.com/app:2", "ghcr.io/lockex/lockex:3"},
		{"digest", []string{"--set", "image.digest=" + digest, "--set", "lockexImage.digest=" + digest},
			"registry.example.com/app@" + digest, "ghcr.io/lockex/lockex@" + digest},
		{"tag and digest", []string{"--set", "image.tag=1.4.2", "--set", "image.digest=" + digest}, "registry.example.com/app:1.4.2@" + digest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := helmTemplate(t, "rel", "ns", append(slices.Clone(base), tc.args...)...)
			spec := only[*appsv1.Deployment](t, objs).Spec.Template.Spec
			if got := spec.Containers[0].Image; got != tc.image {
				t.Errorf("workload image %q, want %q", got, tc.image)
			}
			if got := spec.InitContainers[0].Image; tc.lockex != "" && got != tc.lockex {
				t.Errorf("lockex image %q, want %q", got, tc.lockex)
			}
			if got := only[*corev1.Pod](t, objs).Spec.Containers[0].Image; got != spec.InitContainers[0].Image {
				t.Errorf("helm test image %q, want the lockex image %q", got, spec.InitContainers[0].Image)
			}
		})
	}
}

// TestHelmPort: lockex's port is one value, used by --http-addr, the
// container port, the probes, the metrics Service and the ServiceMonitor;
// its default is none of the ports apps and exporters commonly take.
func TestHelmPort(t *testing.T) {
	semaphore := filepath.Join(chartDir, "ci", "semaphore-values.yaml")
	def := lockexPort(t, &only[*appsv1.Deployment](t, helmTemplate(t, "rel", "ns", "--values", semaphore)).Spec.Template.Spec.Containers[0])
	// Web apps' and Prometheus' (9090) ports, and the exporters' range.
	for _, taken := range []int32{80, 443, 3000, 5000, 8000, 8080, 8081, 8443, 8888, 9000} {
		if def == taken {
			t.Errorf("default port %d is a common app port", def)
		}
	}
	if def >= 9090 && def <= 9999 {
		t.Errorf("default port %d is in Prometheus' and its exporters' range", def)
	}
	objs := helmTemplate(t, "rel", "ns", "--values", semaphore, "--set", "metrics.port=7001")
	dep := only[*appsv1.Deployment](t, objs)
	main := checkPod(t, &dep.Spec.Template, podWant{wrapped: true, workload: []string{"/bin/worker", "--queue", "batch", "--parallel", "4"}})
	if got := lockexPort(t, main); got != 7001 {
		t.Errorf("--http-addr port %d, want 7001", got)
	}
	checkSelectors(t, objs, dep) // the probes, the metrics Service and the ServiceMonitor on lockex's port
	for _, svc := range all[*corev1.Service](objs) {
		if svc.Spec.PublishNotReadyAddresses && (len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 7001) {
			t.Errorf("metrics Service ports %+v, want 7001", svc.Spec.Ports)
		}
	}
}

// TestHelmActiveCheck: activeCheck renders as lockex's --active-http or
// --active-tcp, from inside the pod, with a port number or name, and the
// probe's timing; lockex accepts each.
func TestHelmActiveCheck(t *testing.T) {
	base := []string{"--set", "image.repository=example/app", "--set", "command={/app}", "--set", "zookeeper.hosts=zk:2181",
		"--set", "ports[0].name=http", "--set", "ports[0].containerPort=8080"}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"none", nil, nil},
		{"http by name", []string{"--set", "activeCheck.httpGet.path=/ready", "--set", "activeCheck.httpGet.port=http"},
			[]string{"--active-http=http://127.0.0.1:8080/ready", "--active-period=1s", "--active-timeout=1s", "--active-failure-threshold=3"}},
		{"https by number", []string{"--set", "activeCheck.httpGet.port=8443", "--set", "activeCheck.httpGet.scheme=HTTPS",
			"--set", "activeCheck.periodSeconds=2", "--set", "activeCheck.timeoutSeconds=3", "--set", "activeCheck.failureThreshold=1"},
			[]string{"--active-http=https://127.0.0.1:8443/", "--active-period=2s", "--active-timeout=3s", "--active-failure-threshold=1"}},
		{"tcp", []string{"--set", "activeCheck.tcpSocket.port=5432"}, []string{"--active-tcp=127.0.0.1:5432"}},
		{"tcp ipv6 host", []string{"--set", "activeCheck.tcpSocket.port=5432", "--set", "activeCheck.tcpSocket.host=::1"}, []string{"--active-tcp=[::1]:5432"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := helmTemplate(t, "rel", "ns", append(slices.Clone(base), tc.args...)...)
			dep := only[*appsv1.Deployment](t, objs)
			a := argv(&dep.Spec.Template.Spec.Containers[0])
			var got []string
			for _, f := range a[:slices.Index(a, "--")] {
				if strings.HasPrefix(f, "--active-") {
					got = append(got, f)
				}
			}
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("lockex flags %q lack %q", got, w)
				}
			}
			if len(tc.want) == 0 && len(got) != 0 {
				t.Errorf("no activeCheck: flags %q", got)
			}
			r := newPodRun(t, &dep.Spec.Template.Spec, objs, nil)
			r.install()
			if code, out := r.validate(); code != 0 {
				t.Errorf("lockex rejects %q: exit %d\n%s", got, code, out)
			}
		})
	}
}

// TestHelmHealthCheck: healthCheck renders as lockex's --health-url or
// --health-cmd, each word of the command in single quotes (a quote in a
// word closes them, is escaped, and opens them again), so that lockex
// splits them back as given, with the probe's timing; lockex accepts each.
func TestHelmHealthCheck(t *testing.T) {
	base := []string{"--set", "image.repository=example/app", "--set", "command={/app}", "--set", "zookeeper.hosts=zk:2181",
		"--set", "ports[0].name=http", "--set", "ports[0].containerPort=8080"}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"none", nil, nil},
		{"http by name", []string{"--set", "healthCheck.httpGet.path=/healthz", "--set", "healthCheck.httpGet.port=http"},
			[]string{"--health-url=http://127.0.0.1:8080/healthz", "--health-period=10s", "--health-timeout=1s", "--health-failure-threshold=3", "--health-start-period=0s"}},
		{"exec", []string{"--set-json", `healthCheck.exec.command=["/app/check","--say","it's $ok | fine"]`,
			"--set", "healthCheck.periodSeconds=5", "--set", "healthCheck.timeoutSeconds=2", "--set", "healthCheck.failureThreshold=1",
			"--set", "healthCheck.startPeriodSeconds=60"},
			[]string{`--health-cmd='/app/check' '--say' 'it'\''s $ok | fine'`,
				"--health-period=5s", "--health-timeout=2s", "--health-failure-threshold=1", "--health-start-period=60s"}},
		{"standby alone", []string{"--set-json", `healthCheck.standby.exec.command=["test","-d","/data/it's"]`, "--set", "healthCheck.periodSeconds=2"},
			[]string{`--standby-cmd='test' '-d' '/data/it'\''s'`, "--health-period=2s", "--health-timeout=1s", "--health-failure-threshold=3"}},
		{"standby by url, with a health check", []string{"--set", "healthCheck.standby.httpGet.path=/fit", "--set", "healthCheck.standby.httpGet.port=9000",
			"--set", "healthCheck.httpGet.path=/healthz", "--set", "healthCheck.httpGet.port=http"},
			[]string{"--standby-url=http://127.0.0.1:9000/fit", "--health-url=http://127.0.0.1:8080/healthz", "--health-period=10s", "--health-start-period=0s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := helmTemplate(t, "rel", "ns", append(slices.Clone(base), tc.args...)...)
			dep := only[*appsv1.Deployment](t, objs)
			a := argv(&dep.Spec.Template.Spec.Containers[0])
			var got []string
			for _, f := range a[:slices.Index(a, "--")] {
				if strings.HasPrefix(f, "--health-") || strings.HasPrefix(f, "--standby-") {
					got = append(got, f)
				}
			}
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("lockex flags %q lack %q", got, w)
				}
			}
			if len(tc.want) == 0 && len(got) != 0 {
				t.Errorf("no healthCheck: flags %q", got)
			}
			if slices.ContainsFunc(got, func(f string) bool { return strings.HasPrefix(f, "--health-start-period") }) !=
				slices.ContainsFunc(got, func(f string) bool {
					return strings.HasPrefix(f, "--health-url") || strings.HasPrefix(f, "--health-cmd")
				}) {
				t.Errorf("flags %q: --health-start-period only with the workload's health check", got)
			}
			r := newPodRun(t, &dep.Spec.Template.Spec, objs, nil)
			r.install()
			if code, out := r.validate(); code != 0 {
				t.Errorf("lockex rejects %q: exit %d\n%s", got, code, out)
			}
		})
	}
}

// TestHelmSecurity: the hardened profile is one value away, keys given by
// hand win over it, and a /tmp of the user's own is not mounted twice.
func TestHelmSecurity(t *testing.T) {
	base := []string{"--set", "image.repository=example/app", "--set", "command={/app}", "--set", "zookeeper.hosts=zk:2181"}
	render := func(t *testing.T, args ...string) *corev1.PodSpec {
		return &only[*appsv1.Deployment](t, helmTemplate(t, "rel", "ns", append(slices.Clone(base), args...)...)).Spec.Template.Spec
	}
	t.Run("default", func(t *testing.T) {
		spec := render(t)
		checkSecurity(t, spec, podWant{})
	})
	t.Run("hardened", func(t *testing.T) {
		spec := render(t, "--set", "hardened=true")
		checkSecurity(t, spec, podWant{hardened: true})
		if psc := spec.SecurityContext; psc.RunAsUser != nil || psc.FSGroup != nil {
			t.Errorf("hardened: %+v picks a user; the image's own numeric user (or podSecurityContext) decides", psc)
		}
	})
	t.Run("hardened, user's keys win", func(t *testing.T) {
		spec := render(t, "--set", "hardened=true", "--set", "securityContext.readOnlyRootFilesystem=false", "--set", "podSecurityContext.runAsUser=1000")
		sc, psc := spec.Containers[0].SecurityContext, spec.SecurityContext
		if sc.ReadOnlyRootFilesystem == nil || *sc.ReadOnlyRootFilesystem || psc.RunAsUser == nil || *psc.RunAsUser != 1000 {
			t.Errorf("given keys lost: container %+v, pod %+v", sc, psc)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("hardened keys not given are lost: %+v", sc)
		}
	})
	t.Run("hardened, own /tmp", func(t *testing.T) {
		spec := render(t, "--set", "hardened=true", "--set", "volumes[0].name=scratch", "--set", "volumes[0].emptyDir.medium=Memory",
			"--set", "volumeMounts[0].name=scratch", "--set", "volumeMounts[0].mountPath=/tmp/")
		var at []string
		for _, m := range spec.Containers[0].VolumeMounts {
			if filepath.Clean(m.MountPath) == "/tmp" {
				at = append(at, m.Name)
			}
		}
		if !slices.Equal(at, []string{"scratch"}) {
			t.Errorf("mounts at /tmp: %q, want only the user's scratch", at)
		}
	})
	t.Run("service account", func(t *testing.T) {
		objs := helmTemplate(t, "rel", "ns", append(slices.Clone(base), "--set", "serviceAccount.create=true",
			"--set", "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/x", "--set", "serviceAccount.automountToken=true")...)
		sa := only[*corev1.ServiceAccount](t, objs)
		dep := only[*appsv1.Deployment](t, objs)
		if sa.Annotations["eks.amazonaws.com/role-arn"] != "arn:aws:iam::1:role/x" || dep.Spec.Template.Spec.ServiceAccountName != sa.Name {
			t.Errorf("ServiceAccount %+v, pods run as %q", sa.ObjectMeta, dep.Spec.Template.Spec.ServiceAccountName)
		}
		if a := dep.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || !*a {
			t.Error("serviceAccount.automountToken: the token is not mounted")
		}
		named := only[*appsv1.Deployment](t, helmTemplate(t, "rel", "ns", append(slices.Clone(base), "--set", "serviceAccount.name=existing")...))
		if got := named.Spec.Template.Spec.ServiceAccountName; got != "existing" {
			t.Errorf("serviceAccount.name=existing: pods run as %q", got)
		}
	})
}

// TestHelmTLS: TLS to ZooKeeper from a cert-manager Secret: its keys
// mounted under fixed names, lockex's flags pointing at them; with
// clientCertificate: false the CA alone.
func TestHelmTLS(t *testing.T) {
	base := []string{"--set", "image.repository=example/app", "--set", "command={/app}", "--set", "zookeeper.hosts=zk:2281",
		"--set", "zookeeper.tls.enabled=true", "--set", "zookeeper.tls.secretName=zk-client-tls"}
	pki := testPKI(t)
	secrets := map[string]map[string]string{"zk-client-tls": {"ca.crt": pki.caPEM, "tls.crt": pki.certPEM, "tls.key": pki.keyPEM}}
	for _, tc := range []struct {
		name  string
		args  []string
		files []string
	}{
		{"mutual", nil, []string{"ca.crt", "tls.crt", "tls.key"}},
		{"CA only", []string{"--set", "zookeeper.tls.clientCertificate=false"}, []string{"ca.crt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := helmTemplate(t, "rel", "ns", append(slices.Clone(base), tc.args...)...)
			dep := only[*appsv1.Deployment](t, objs)
			spec := &dep.Spec.Template.Spec
			main := &spec.Containers[0]
			a := argv(main)
			flags := a[:slices.Index(a, "--")]
			var got []string
			for _, f := range []string{"--zk-tls-ca", "--zk-tls-cert", "--zk-tls-key"} {
				p := flagValue(flags, f)
				if p == "" {
					continue
				}
				got = append(got, filepath.Base(p))
				vol := volume(t, spec, mountedVolume(t, main, filepath.Dir(p)))
				if vol.Secret == nil || vol.Secret.SecretName != "zk-client-tls" {
					t.Errorf("%s %s: not from Secret zk-client-tls: %+v", f, p, vol)
				}
			}
			if !slices.Equal(got, tc.files) {
				t.Errorf("TLS files %q, want %q", got, tc.files)
			}
			checkSecretModes(t, spec)
			r := newPodRun(t, spec, objs, secrets)
			r.install()
			if code, out := r.validate(); code != 0 {
				t.Errorf("lockex rejects the TLS files: exit %d\n%s", code, out)
			}
			checkTestHook(t, objs, dep, secrets)
		})
	}
}
