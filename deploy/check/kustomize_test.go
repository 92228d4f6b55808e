package check

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func kustomizeBuild(t *testing.T, dir string) manifests {
	t.Helper()
	return decodeStrict(t, run(t, "kustomize", "build", filepath.Join(kustDir, dir)))
}

// lockexConfig is the ConfigMap lockex reads its LOCKEX_ variables from.
func lockexConfig(t *testing.T, objs manifests, c *corev1.Container) *corev1.ConfigMap {
	t.Helper()
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil {
		t.Fatalf("container %s: want envFrom one ConfigMap, got %+v", c.Name, c.EnvFrom)
	}
	r := &podRun{t: t, objs: objs}
	return r.configMap(c.EnvFrom[0].ConfigMapRef.Name)
}

func TestKustomize(t *testing.T) {
	tests := []struct {
		dir       string
		namespace string
		kinds     []string
		replicas  int32
		config    map[string]string // LOCKEX_ variables the overlay sets
		hardened  bool
		token     bool // lockex patches its pod: the route-to-active component
	}{
		{"base", "", []string{"ConfigMap", "Deployment", "PodDisruptionBudget"}, 2, nil, false, false},
		{"overlays/example", "lockex-example",
			[]string{"Namespace", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "PrometheusRule", "ServiceMonitor"}, 3,
			map[string]string{"LOCKEX_CONCURRENT": "2", "LOCKEX_LOCKPATH": "lockex/lockex-example"}, true, false},
		{"overlays/route-to-active", "lockex-web",
			[]string{"Namespace", "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Service", "Deployment", "PodDisruptionBudget"}, 2,
			map[string]string{"LOCKEX_ACTIVE_LABEL": "lockex.io/active=true", "LOCKEX_DELETION_COST": "true"}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.dir, func(t *testing.T) {
			objs := kustomizeBuild(t, tc.dir)
			if got, want := slices.Sorted(slices.Values(objs.kinds())), slices.Sorted(slices.Values(tc.kinds)); !slices.Equal(got, want) {
				t.Errorf("kinds %v, want %v", got, want)
			}
			for _, o := range objs {
				m, err := meta.Accessor(o)
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := o.(*corev1.Namespace); !ok && m.GetNamespace() != tc.namespace {
					t.Errorf("%T %s: namespace %q, want %q", o, m.GetName(), m.GetNamespace(), tc.namespace)
				}
			}
			dep := only[*appsv1.Deployment](t, objs)
			main := &dep.Spec.Template.Spec.Containers[0]
			// The container's command is lockex's, ending in --; its args
			// are the workload, which an overlay replaces on its own.
			if n := len(main.Command); n == 0 || main.Command[n-1] != "--" {
				t.Errorf("command %q: want lockex's, ending in --", main.Command)
			}
			checkPod(t, &dep.Spec.Template, podWant{wrapped: true, workload: main.Args, hardened: tc.hardened, token: tc.token})
			checkIdentity(t, &dep.Spec.Template.Spec, main)
			checkSelectors(t, objs, dep)
			if tc.token {
				checkPodPatching(t, objs, dep)
				for _, b := range all[*rbacv1.RoleBinding](objs) {
					for _, s := range b.Subjects {
						if s.Namespace != tc.namespace {
							t.Errorf("RoleBinding %s binds %s of namespace %q, want the overlay's %q", b.Name, s.Name, s.Namespace, tc.namespace)
						}
					}
				}
			}
			if *dep.Spec.Replicas != tc.replicas {
				t.Errorf("replicas %d, want %d", *dep.Spec.Replicas, tc.replicas)
			}
			cfg := lockexConfig(t, objs, main)
			for k, v := range tc.config {
				if cfg.Data[k] != v {
					t.Errorf("%s=%q, want %q", k, cfg.Data[k], v)
				}
			}

			r := newPodRun(t, &dep.Spec.Template.Spec, objs, nil)
			r.install()
			if code, out := r.validate(); code != 0 || !strings.HasPrefix(out, "lockex ") {
				t.Errorf("lockex rejects the kustomized configuration: exit %d\n%s", code, out)
			}
		})
	}
}

// TestKustomizeMatchesChart: the kustomize base is the chart with its
// defaults. The pod (but for names and labels), the budget and lockex's
// settings (flags in the chart, LOCKEX_ variables in kustomize) must agree,
// so a fix to one that the other lacks fails here.
func TestKustomizeMatchesChart(t *testing.T) {
	kobjs := kustomizeBuild(t, "base")
	kdep := only[*appsv1.Deployment](t, kobjs)
	kmain := &kdep.Spec.Template.Spec.Containers[0]
	cfg := lockexConfig(t, kobjs, kmain)

	// The chart, given what the base leaves to the user: image, workload,
	// ZooKeeper hosts, lock name.
	image, tag, _ := strings.Cut(kmain.Image, ":")
	hobjs := helmTemplate(t, "rel", "ns",
		"--set", "image.repository="+image, "--set", "image.tag="+tag,
		"--set-json", "command="+jsonList(t, kmain.Args),
		"--set", "zookeeper.hosts="+cfg.Data["LOCKEX_ZKHOSTS"],
		"--set", "lock.path="+cfg.Data["LOCKEX_LOCKPATH"], "--set", "lock.id="+cfg.Data["LOCKEX_LOCKID"])
	hdep := only[*appsv1.Deployment](t, hobjs)
	hmain := &hdep.Spec.Template.Spec.Containers[0]

	// lockex's settings: every flag the chart passes is the variable
	// kustomize sets, or a flag in the base's command.
	ha := argv(hmain)
	for _, f := range ha[1:slices.Index(ha, "--")] {
		name, val, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		if slices.Contains(kmain.Command, f) {
			continue
		}
		env := "LOCKEX_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if got, ok := cfg.Data[env]; !ok || got != val {
			t.Errorf("chart passes %s; kustomize base has %s=%q", f, env, got)
		}
	}

	// The pods, with what legitimately differs taken out.
	norm := func(d *appsv1.Deployment) appsv1.DeploymentSpec {
		s := *d.Spec.DeepCopy()
		s.Selector = nil
		s.Template.ObjectMeta = metav1.ObjectMeta{}
		if a := s.Template.Spec.Affinity; a != nil && a.PodAntiAffinity != nil {
			for i := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
				a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[i].PodAffinityTerm.LabelSelector = nil
			}
		}
		c := &s.Template.Spec.Containers[0]
		c.Command, c.Args, c.Env, c.EnvFrom = nil, nil, nil, nil
		return s
	}
	if diff := cmp.Diff(norm(hdep), norm(kdep)); diff != "" {
		t.Errorf("chart (-) and kustomize base (+) Deployments differ:\n%s", diff)
	}
	hpdb := only[*policyv1.PodDisruptionBudget](t, hobjs).Spec
	kpdb := only[*policyv1.PodDisruptionBudget](t, kobjs).Spec
	hpdb.Selector, kpdb.Selector = nil, nil
	if diff := cmp.Diff(hpdb, kpdb); diff != "" {
		t.Errorf("chart (-) and kustomize base (+) PodDisruptionBudgets differ:\n%s", diff)
	}

	// The hardened component (in the example overlay, as user 65534)
	// matches the chart's hardened: true.
	mobjs := kustomizeBuild(t, "overlays/example")
	hhard := only[*appsv1.Deployment](t, helmTemplate(t, "rel", "ns",
		"--set", "image.repository=busybox", "--set", "command={sh}", "--set", "zookeeper.hosts=zk:2181",
		"--set", "hardened=true", "--set", "podSecurityContext.runAsUser=65534")).Spec.Template.Spec
	khard := only[*appsv1.Deployment](t, mobjs).Spec.Template.Spec
	if diff := cmp.Diff(hhard.SecurityContext, khard.SecurityContext); diff != "" {
		t.Errorf("hardened pod securityContext: chart (-) and kustomize (+) differ:\n%s", diff)
	}
	if diff := cmp.Diff(hhard.Containers[0].SecurityContext, khard.Containers[0].SecurityContext); diff != "" {
		t.Errorf("hardened container securityContext: chart (-) and kustomize (+) differ:\n%s", diff)
	}
	if diff := cmp.Diff(hhard.Containers[0].VolumeMounts, khard.Containers[0].VolumeMounts); diff != "" {
		t.Errorf("hardened mounts: chart (-) and kustomize (+) differ:\n%s", diff)
	}

	// The route-to-active component matches the chart's routeToActive:
	// lockex's flags, the rights, where the token is mounted, and what the
	// Service selects.
	robjs := kustomizeBuild(t, "overlays/route-to-active")
	rdep := only[*appsv1.Deployment](t, robjs)
	rcfg := lockexConfig(t, robjs, &rdep.Spec.Template.Spec.Containers[0])
	hrta := helmTemplate(t, "rel", "ns",
		"--set", "image.repository=busybox", "--set", "command={sh}", "--set", "zookeeper.hosts=zk:2181",
		"--set", "routeToActive=true", "--set", "serviceAccount.create=true", "--set", "service.enabled=true",
		"--set-json", `ports=[{"name":"http","containerPort":8080}]`,
		"--set-json", `service.ports=[{"name":"http","port":80,"targetPort":"http"}]`)
	hrdep := only[*appsv1.Deployment](t, hrta)
	for _, f := range argv(&hrdep.Spec.Template.Spec.Containers[0]) {
		name, val, hasVal := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		if name != "active-label" && name != "deletion-cost" {
			continue
		}
		if !hasVal { // a bare boolean flag
			val = "true"
		}
		env := "LOCKEX_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if got := rcfg.Data[env]; got != val {
			t.Errorf("chart passes %s; the route-to-active component has %s=%q", f, env, got)
		}
	}
	if diff := cmp.Diff(only[*rbacv1.Role](t, hrta).Rules, only[*rbacv1.Role](t, robjs).Rules); diff != "" {
		t.Errorf("chart (-) and route-to-active (+) Role rules differ:\n%s", diff)
	}
	if diff := cmp.Diff(only[*corev1.ServiceAccount](t, hrta).AutomountServiceAccountToken, only[*corev1.ServiceAccount](t, robjs).AutomountServiceAccountToken); diff != "" {
		t.Errorf("chart (-) and route-to-active (+) ServiceAccount automount differ:\n%s", diff)
	}
	if diff := cmp.Diff(hrdep.Spec.Template.Spec.AutomountServiceAccountToken, rdep.Spec.Template.Spec.AutomountServiceAccountToken); diff != "" {
		t.Errorf("chart (-) and route-to-active (+) pod token mounting differ:\n%s", diff)
	}
	hsel, ksel := only[*corev1.Service](t, hrta).Spec.Selector, only[*corev1.Service](t, robjs).Spec.Selector
	if hsel["lockex.io/active"] != "true" || ksel["lockex.io/active"] != hsel["lockex.io/active"] {
		t.Errorf("Service selectors: chart %v, route-to-active %v; both want lockex.io/active=true", hsel, ksel)
	}
	if diff := cmp.Diff(hrdep.Spec.Strategy, rdep.Spec.Strategy); diff != "" {
		t.Errorf("chart (-) and route-to-active (+) strategies differ:\n%s", diff)
	}

	// The monitoring component matches the chart's.
	hmon := helmTemplate(t, "rel", "ns", "--values", filepath.Join(chartDir, "ci", "semaphore-values.yaml"))
	hsm := only[*monitoringv1.ServiceMonitor](t, hmon).Spec.Endpoints
	ksm := only[*monitoringv1.ServiceMonitor](t, mobjs).Spec.Endpoints
	if diff := cmp.Diff(hsm, ksm); diff != "" {
		t.Errorf("chart (-) and kustomize (+) ServiceMonitor endpoints differ:\n%s", diff)
	}
}

func jsonList(t *testing.T, l []string) string {
	t.Helper()
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
