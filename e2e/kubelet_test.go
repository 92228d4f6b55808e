package e2e

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/kubetest"
	"github.com/lockex/lockex/internal/podlabel"
)

// kubelet stands in for the kubelet of the one node of a control plane
// with a real kube-controller-manager: the ReplicaSet controller creates
// and deletes the pods, and for each pod it creates kubelet binds it to
// the node and runs, on the host, the lockex its container would run,
// with the pod's name and a token of the pod's service account bound to
// the pod. It reports the pod Ready while lockex's /readyz answers 200 (the
// chart's readiness probe), and when the controller deletes the pod it
// sends lockex SIGTERM, SIGKILL after the pod's grace period, and removes
// the pod once lockex has exited. Every lockex runs a ticker workload
// writing to one log, named by its pod.
//
// It acts only when sync is called, from the test's goroutine (until).
type kubelet struct {
	t       *testing.T
	api     *kubeAPI
	zk      string // ZooKeeper hosts
	ns      string
	node    string
	logPath string
	args    []string           // lockex's, before "--"
	costs   bool               // args has --deletion-cost
	service string             // a Service whose endpoints describe shows; "" for none
	pods    map[string]*podRun // by uid
	order   []string           // uids in the order their lockex started
}

// podRun is one pod as kubelet runs it.
type podRun struct {
	name, uid string
	version   string // the pod's "version" label
	ip        string // reported in the pod's status; never sent to
	grace     time.Duration
	lockex    *observed
	ready     bool      // as last reported
	termAt    time.Time // when SIGTERM went; zero before
}

// podSelector picks the test Deployment's pods.
const podSelector = "app%3Dweb"

func newKubelet(t *testing.T, api *kubeAPI, zkHosts, ns string, args ...string) *kubelet {
	k := &kubelet{t: t, api: api, zk: zkHosts, ns: ns, node: "node-1",
		logPath: t.TempDir() + "/log", args: args, costs: slices.Contains(args, "--deletion-cost"), pods: map[string]*podRun{}}
	api.CreateNode(t, k.node)
	return k
}

// sync does one round of what a kubelet does for every pod.
func (k *kubelet) sync() {
	t := k.t
	t.Helper()
	for _, p := range k.api.Pods(t, k.ns, podSelector) {
		r := k.pods[p.Metadata.UID]
		switch {
		case r == nil && p.Deleting():
			// Deleted before anything ran for it.
			k.api.FinishDeletion(t, k.ns, p.Metadata.Name, p.Metadata.UID)
		case r == nil:
			if p.Spec.NodeName == "" {
				k.api.BindPod(t, k.ns, p.Metadata.Name, k.node)
			}
			k.start(p)
		case p.Deleting():
			k.stop(r)
		default:
			// The readiness probe: /readyz, while lockex runs.
			ready := false
			select {
			case <-r.lockex.done:
			default:
				code, _ := r.lockex.get(t, "/readyz")
				ready = code == http.StatusOK
			}
			if ready != r.ready {
				k.api.SetPodRunning(t, k.ns, r.name, r.ip, ready)
				r.ready = ready
			}
		}
	}
}

func (k *kubelet) start(p kubetest.Pod) {
	t := k.t
	t.Helper()
	grace := 30 * time.Second
	if g := p.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	r := &podRun{name: p.Metadata.Name, uid: p.Metadata.UID, version: p.Metadata.Labels["version"], grace: grace,
		// Distinct among the few pods alive at once.
		ip: kubetest.PodIP(len(k.order))}
	env := []string{
		"KUBERNETES_SERVICE_HOST=" + k.api.Host(), "KUBERNETES_SERVICE_PORT=" + k.api.Port(),
		"LOCKEX_SERVICEACCOUNT_DIR=" + k.api.serviceAccountDir(t, k.ns, p.Spec.ServiceAccountName, r.name, r.uid),
		"LOCKEX_POD_NAMESPACE=" + k.ns, "LOCKEX_POD_NAME=" + r.name,
	}
	args := append(append([]string{"-z", k.zk}, k.args...), "--")
	r.lockex = startObserved(t, env, append(args, ticker(k.logPath, r.name, 0, false)...)...)
	k.pods[r.uid] = r
	k.order = append(k.order, r.uid)
}

// stop is the kubelet's part of a deletion: SIGTERM, SIGKILL once the
// grace period is over, and the pod's removal once lockex has exited.
func (k *kubelet) stop(r *podRun) {
	t := k.t
	t.Helper()
	if r.termAt.IsZero() {
		_ = r.lockex.cmd.Process.Signal(syscall.SIGTERM)
		r.termAt = time.Now()
	}
	select {
	case <-r.lockex.done:
		k.api.FinishDeletion(t, k.ns, r.name, r.uid)
	default:
		if time.Since(r.termAt) > r.grace {
			t.Errorf("pod %s: lockex still runs %v after SIGTERM; SIGKILL", r.name, r.grace)
			_ = r.lockex.cmd.Process.Kill()
		}
	}
}

// until syncs every 50ms until cond holds, failing the test after d.
func (k *kubelet) until(d time.Duration, what string, cond func() bool) {
	k.t.Helper()
	deadline := time.Now().Add(d)
	for {
		k.sync()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("not within %s: %s\n%s", d, what, k.describe())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// running are the pods whose lockex runs and whose deletion has not
// begun, in the order their lockex started.
func (k *kubelet) running() []*podRun {
	var rs []*podRun
	for _, uid := range k.order {
		r := k.pods[uid]
		select {
		case <-r.lockex.done:
			continue
		default:
		}
		if r.termAt.IsZero() {
			rs = append(rs, r)
		}
	}
	return rs
}

// holder is the one running pod whose lockex answers /active with 200, or
// nil if none does; more than one fails the test.
func (k *kubelet) holder() *podRun {
	k.t.Helper()
	var active []*podRun
	for _, r := range k.running() {
		if code, _ := r.lockex.get(k.t, "/active"); code == http.StatusOK {
			active = append(active, r)
		}
	}
	if len(active) > 1 {
		k.t.Fatalf("%d pods active at once:\n%s", len(active), k.describe())
	}
	if len(active) == 0 {
		return nil
	}
	return active[0]
}

// settled reports whether the pods are as a rollout leaves them: n pods,
// all of version, Ready and running lockex, one of them the holder, and
// the pods' label and (with --deletion-cost) deletion cost saying which.
func (k *kubelet) settled(n int, version string) bool {
	k.t.Helper()
	pods := k.api.Pods(k.t, k.ns, podSelector)
	if len(pods) != n {
		return false
	}
	h := k.holder()
	if h == nil {
		return false
	}
	for _, p := range pods {
		if p.Metadata.Labels["version"] != version || !p.Ready() || p.Deleting() {
			return false
		}
		isHolder := p.Metadata.Name == h.name
		wantCost := map[bool]string{true: podlabel.HolderCost, false: podlabel.StandbyCost}[isHolder]
		_, labelled := p.Metadata.Labels[activeLabel]
		if (k.costs && p.Metadata.Annotations[podlabel.DeletionCostAnnotation] != wantCost) || labelled != isHolder {
			return false
		}
	}
	return true
}

// endpoint is one address of a Service's EndpointSlices.
type endpoint struct {
	ip, pod string
	ready   bool
}

// endpoints lists what the EndpointSlice controller made of Service
// service's selector: every endpoint of every slice labelled with its name.
func (k *kubelet) endpoints(service string) []endpoint {
	k.t.Helper()
	var list struct {
		Items []struct {
			Endpoints []struct {
				Addresses  []string `json:"addresses"`
				Conditions struct {
					Ready *bool `json:"ready"`
				} `json:"conditions"`
				TargetRef *struct {
					Name string `json:"name"`
				} `json:"targetRef"`
			} `json:"endpoints"`
		} `json:"items"`
	}
	k.api.Get(k.t, "/apis/discovery.k8s.io/v1/namespaces/"+k.ns+"/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D"+service, &list)
	var eps []endpoint
	for _, slice := range list.Items {
		for _, e := range slice.Endpoints {
			ep := endpoint{ip: strings.Join(e.Addresses, ","), ready: e.Conditions.Ready != nil && *e.Conditions.Ready}
			if e.TargetRef != nil {
				ep.pod = e.TargetRef.Name
			}
			eps = append(eps, ep)
		}
	}
	return eps
}

// routesToHolder reports whether Service service has exactly one
// endpoint, ready, at the holder's address.
func (k *kubelet) routesToHolder(service string) bool {
	k.t.Helper()
	h := k.holder()
	eps := k.endpoints(service)
	return h != nil && len(eps) == 1 && eps[0].ready && eps[0].pod == h.name && eps[0].ip == h.ip
}

// runsSince are the workload runs, by pod name, that started at or after
// t0.
func (k *kubelet) runsSince(t0 time.Time) []*run {
	k.t.Helper()
	if _, err := os.Stat(k.logPath); err != nil {
		return nil
	}
	var rs []*run
	for _, r := range readRuns(k.t, k.logPath) {
		if r.first >= t0.UnixNano() {
			rs = append(rs, r)
		}
	}
	return rs
}

// versionOf is the version of the pod that ran r.
func (k *kubelet) versionOf(r *run) string {
	for _, p := range k.pods {
		if p.name == r.who {
			return p.version
		}
	}
	return ""
}

// describe is the pods as the API server and kubelet see them, for a
// failure's message.
func (k *kubelet) describe() string {
	var b strings.Builder
	for _, p := range k.api.Pods(k.t, k.ns, podSelector) {
		fmt.Fprintf(&b, "%s ip=%s version=%s ready=%t deleting=%t cost=%s %s=%s\n", p.Metadata.Name, p.Status.PodIP, p.Metadata.Labels["version"],
			p.Ready(), p.Deleting(), p.Metadata.Annotations[podlabel.DeletionCostAnnotation], activeLabel, p.Metadata.Labels[activeLabel])
	}
	if k.service != "" {
		fmt.Fprintf(&b, "Service %s's endpoints: %+v\n", k.service, k.endpoints(k.service))
	}
	b.WriteString("lockex started, in order:")
	for _, uid := range k.order {
		b.WriteString(" " + k.pods[uid].name)
	}
	return b.String()
}
