package kube

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// portValue is the chart value that sets lockex's port: every replica gets
// its own, since all of them share the host's network.
var portValue = []string{"metrics", "port"}

// release is one helm release of the chart whose replicas run as pods on
// podman. Each replica is the chart rendered with its own lockex port (a
// chart value) and witness id (the chart's env), turned into a Pod the way
// the Deployment controller would, and played with podman kube play on the
// host's network. What podman does not do as the kubelet does is done here
// (see adapt), and only that.
type release struct {
	t        *testing.T
	name     string
	dir      string
	values   map[string]any
	secrets  map[string]map[string]string // Secrets in the release's namespace, by name
	pods     []*pod                       // the Deployment's replicas
	hooks    []*pod                       // the test Pods helm test ran
	rendered int                          // helm template runs, which name their values files
	podmanSe []string                     // podman secrets made for the pods' env
}

const namespace = "kit"

// pod is one replica, or one run of the test Pod.
type pod struct {
	name     string
	port     int         // lockex's; none for the test Pod
	rendered *corev1.Pod // one replica of the Deployment's template, or the test Pod, as rendered
}

// appContainer is podman's name for the pod's workload container.
func (p *pod) appContainer() string { return p.name + "-" + p.rendered.Spec.Containers[0].Name }

func newRelease(t *testing.T, name string, values map[string]any) *release {
	r := &release{t: t, name: name, dir: t.TempDir(), values: values, secrets: map[string]map[string]string{}}
	t.Cleanup(r.cleanup)
	return r
}

// manifest is one document helm template rendered.
type manifest struct {
	Kind     string
	Metadata struct{ Annotations map[string]string }
	doc      []byte
}

// manifests runs helm template with the release's values and the overlay,
// and returns what it renders, test hooks included, as helm install would
// install them.
func (r *release) manifests(overlay map[string]any) []manifest {
	t := r.t
	t.Helper()
	args := []string{"template", r.name, chartDir, "--namespace", namespace}
	for i, v := range []map[string]any{r.values, overlay} {
		b, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(r.dir, fmt.Sprintf("values-%d-%d.yaml", r.rendered, i))
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", f)
	}
	r.rendered++
	out := run(t, "helm", args...)
	var ms []manifest
	rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("helm template output: %v", err)
		}
		m := manifest{doc: doc}
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatalf("helm template output: %v\n%s", err, doc)
		}
		if m.Kind != "" {
			ms = append(ms, m)
		}
	}
	return ms
}

// render returns the Deployment rendered with the release's values and the
// overlay.
func (r *release) render(overlay map[string]any) *appsv1.Deployment {
	t := r.t
	t.Helper()
	var dep *appsv1.Deployment
	for _, m := range r.manifests(overlay) {
		if m.Kind == "Deployment" {
			dep = &appsv1.Deployment{}
			if err := yaml.Unmarshal(m.doc, dep); err != nil {
				t.Fatalf("Deployment: %v", err)
			}
		}
	}
	if dep == nil {
		t.Fatal("helm template rendered no Deployment")
	}
	return dep
}

// testHook returns the Pod that helm test runs, rendered with the
// release's values.
func (r *release) testHook() *corev1.Pod {
	t := r.t
	t.Helper()
	var hook *corev1.Pod
	for _, m := range r.manifests(nil) {
		if m.Kind != "Pod" || m.Metadata.Annotations["helm.sh/hook"] != "test" {
			continue
		}
		if hook != nil {
			t.Fatalf("helm template rendered more than one test Pod: %s and another", hook.Name)
		}
		hook = &corev1.Pod{}
		if err := yaml.Unmarshal(m.doc, hook); err != nil {
			t.Fatalf("test Pod: %v", err)
		}
	}
	if hook == nil {
		t.Fatal("helm template rendered no Pod with annotation helm.sh/hook: test")
	}
	return hook
}

// start renders replica i and plays it. The pod's name is also its
// witness id.
func (r *release) start(i int) *pod {
	t := r.t
	t.Helper()
	p := &pod{name: fmt.Sprintf("%s-%d", r.name, i), port: freePort(t)}
	overlay := map[string]any{"env": []map[string]string{{"name": "WITNESS_ID", "value": p.name}}}
	set(overlay, portValue, p.port)
	dep := r.render(overlay)
	tmpl := dep.Spec.Template
	p.rendered = &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: tmpl.ObjectMeta,
		Spec:       tmpl.Spec,
	}
	p.rendered.Name = p.name
	r.pods = append(r.pods, p)
	r.play(p)
	return p
}

// play adapts the pod's rendered Pod and plays it.
func (r *release) play(p *pod) {
	t := r.t
	t.Helper()
	spec := p.rendered.DeepCopy()
	r.adapt(p, spec)
	b, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(r.dir, p.name+".yaml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "podman", "kube", "play", "--network", "host", file)
}

// runTestHook runs the release's test Pod as helm test does after an
// install, to its end, and returns its exit code and what it printed.
// Each run is a pod of its own, named for the run: helm would delete the
// earlier one first (before-hook-creation), the kit leaves it to cleanup.
func (r *release) runTestHook() (int, string) {
	t := r.t
	t.Helper()
	hook := r.testHook()
	p := &pod{name: fmt.Sprintf("%s-%d", hook.Name, len(r.hooks)), rendered: hook}
	p.rendered.Name = p.name
	r.hooks = append(r.hooks, p)
	r.play(p)
	deadline := time.Now().Add(startTimeout)
	for {
		st := p.state(t)
		if st.RestartCount > 0 {
			t.Fatalf("test pod %s: container %s restarted %d times: restartPolicy Never not kept", p.name, p.appContainer(), st.RestartCount)
		}
		if st.Status == "exited" {
			out, err := exec.Command("podman", "logs", p.appContainer()).CombinedOutput()
			if err != nil {
				t.Fatalf("podman logs %s: %v\n%s", p.appContainer(), err, out)
			}
			return st.ExitCode, string(out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("test pod %s: container %s is %s, not exited within %v", p.name, p.appContainer(), st.Status, startTimeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// adapt turns the rendered pod into what podman 4.3 runs as the kubelet
// would run the rendered one:
//   - each init container runs first with podman run, as the pod would run
//     it (podman kube play's own init containers race and hang: "failed to
//     remove once init container");
//   - emptyDir and Secret volumes become host directories laid out as the
//     kubelet lays them out (a world-writable directory; the Secret's keys
//     as files, with the mode and fsGroup ownership asked for), so the init
//     container and the pod share them (podman's secret volumes are neither
//     decoded nor projected by items, and crash on a missing optional);
//   - Secrets for env become podman secrets in the form podman reads;
//   - the downward API's metadata.namespace becomes the namespace's name
//     (podman resolves metadata.name and metadata.uid, the pod's ID, which
//     a restart of a container in the pod keeps, but not the namespace),
//     and status.podIP, which podman refuses, the host's loopback address,
//     as the kubelet gives a pod on the host's network the host's address
//     (lockex only writes it into its nodes);
//   - containerPorts are dropped (podman maps them, and host networking
//     refuses mappings);
//   - probes are dropped (podman would run them from systemd timers, which
//     this host has not); the tests ask them instead, as the kubelet would;
//   - runAsNonRoot is checked against the image as the kubelet checks it,
//     since podman does not;
//   - the fsGroup joins the supplementalGroups, as the kubelet gives it to
//     every container, since podman ignores it.
func (r *release) adapt(p *pod, spec *corev1.Pod) {
	t := r.t
	t.Helper()
	if sc := spec.Spec.SecurityContext; sc != nil && sc.FSGroup != nil {
		sc.SupplementalGroups = append(sc.SupplementalGroups, *sc.FSGroup)
	}
	hostDirs := map[string]string{}
	for i, v := range spec.Spec.Volumes {
		dir := filepath.Join(r.dir, p.name, "volumes", v.Name)
		switch {
		case v.EmptyDir != nil:
			r.emptyDir(dir, spec.Spec.SecurityContext)
		case v.Secret != nil:
			r.projectSecret(dir, v.Secret, spec.Spec.SecurityContext)
		default:
			t.Fatalf("pod %s: volume %s: the kit runs only emptyDir and secret volumes", p.name, v.Name)
		}
		hostDirs[v.Name] = dir
		spec.Spec.Volumes[i].VolumeSource = corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir}}
	}
	for _, c := range spec.Spec.InitContainers {
		r.checkNonRoot(p, c, spec.Spec.SecurityContext)
		r.runInit(p, c, spec.Spec.SecurityContext, hostDirs)
	}
	spec.Spec.InitContainers = nil
	for i := range spec.Spec.Containers {
		c := &spec.Spec.Containers[i]
		r.checkNonRoot(p, *c, spec.Spec.SecurityContext)
		c.Ports = nil
		c.LivenessProbe, c.ReadinessProbe, c.StartupProbe = nil, nil, nil
		for j := range c.Env {
			if ref := c.Env[j].ValueFrom; ref != nil && ref.SecretKeyRef != nil {
				ref.SecretKeyRef.Name = r.podmanSecret(p, ref.SecretKeyRef.Name)
			}
			if ref := c.Env[j].ValueFrom; ref != nil && ref.FieldRef != nil {
				switch ref.FieldRef.FieldPath {
				case "metadata.namespace":
					c.Env[j].Value, c.Env[j].ValueFrom = namespace, nil
				case "status.podIP":
					c.Env[j].Value, c.Env[j].ValueFrom = "127.0.0.1", nil
				}
			}
		}
	}
}

// emptyDir lays out an emptyDir as the kubelet does: world-writable, and
// with an fsGroup, owned by that group with the setgid bit.
func (r *release) emptyDir(dir string, sc *corev1.PodSecurityContext) {
	t := r.t
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	mode := os.FileMode(0o777)
	if sc != nil && sc.FSGroup != nil {
		if err := os.Chown(dir, 0, int(*sc.FSGroup)); err != nil {
			t.Fatal(err)
		}
		mode |= os.ModeSetgid
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}

// projectSecret writes a Secret volume's files as the kubelet does: the
// items asked for (all keys without items), with their mode (else the
// default mode, else 0644), owned by root and, with an fsGroup, by that
// group, which may then read them.
func (r *release) projectSecret(dir string, v *corev1.SecretVolumeSource, sc *corev1.PodSecurityContext) {
	t := r.t
	data, ok := r.secrets[v.SecretName]
	if !ok {
		if v.Optional != nil && *v.Optional {
			data = map[string]string{}
		} else {
			t.Fatalf("secret volume: no Secret %q in the namespace (the kubelet would not start the pod)", v.SecretName)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mode := int32(0o644)
	if v.DefaultMode != nil {
		mode = *v.DefaultMode
	}
	items := v.Items
	if len(items) == 0 {
		for k := range data {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
	}
	for _, it := range items {
		val, ok := data[it.Key]
		if !ok {
			t.Fatalf("secret volume: Secret %q has no key %q", v.SecretName, it.Key)
		}
		m := mode
		if it.Mode != nil {
			m = *it.Mode
		}
		f := filepath.Join(dir, it.Path)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(val), 0o600); err != nil {
			t.Fatal(err)
		}
		if sc != nil && sc.FSGroup != nil {
			if err := os.Chown(f, 0, int(*sc.FSGroup)); err != nil {
				t.Fatal(err)
			}
			m |= 0o440
		}
		if err := os.Chmod(f, os.FileMode(m)); err != nil {
			t.Fatal(err)
		}
	}
}

// podmanSecret makes a podman secret holding Secret name's data in the form
// podman 4.3 reads for env (a JSON object of base64 values), and returns
// its name, unique to the run and pod.
func (r *release) podmanSecret(p *pod, name string) string {
	t := r.t
	data, ok := r.secrets[name]
	if !ok {
		t.Fatalf("env: no Secret %q in the namespace (the kubelet would not start the pod)", name)
	}
	enc := map[string]string{}
	for k, v := range data {
		enc[k] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	b, err := json.Marshal(enc)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(r.dir, p.name+"-secret-"+name+".json")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	ps := p.name + "-" + name
	run(t, "podman", "secret", "create", ps, f)
	r.podmanSe = append(r.podmanSe, ps)
	return ps
}

// user returns the uid and gid a container runs as, from its security
// context over the pod's; nil where neither sets one.
func user(c corev1.Container, sc *corev1.PodSecurityContext) (uid, gid *int64) {
	if sc != nil {
		uid, gid = sc.RunAsUser, sc.RunAsGroup
	}
	if c.SecurityContext != nil {
		if c.SecurityContext.RunAsUser != nil {
			uid = c.SecurityContext.RunAsUser
		}
		if c.SecurityContext.RunAsGroup != nil {
			gid = c.SecurityContext.RunAsGroup
		}
	}
	return uid, gid
}

// checkNonRoot refuses a container the kubelet would refuse to start
// (CreateContainerConfigError) under runAsNonRoot.
func (r *release) checkNonRoot(p *pod, c corev1.Container, sc *corev1.PodSecurityContext) {
	t := r.t
	var nonRoot *bool
	if sc != nil {
		nonRoot = sc.RunAsNonRoot
	}
	if c.SecurityContext != nil && c.SecurityContext.RunAsNonRoot != nil {
		nonRoot = c.SecurityContext.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		return
	}
	if uid, _ := user(c, sc); uid != nil {
		if *uid == 0 {
			t.Fatalf("pod %s, container %s: the kubelet refuses it: container's runAsUser breaks non-root policy", p.name, c.Name)
		}
		return
	}
	var cfg []struct{ Config struct{ User string } }
	if err := json.Unmarshal(run(t, "podman", "image", "inspect", c.Image), &cfg); err != nil || len(cfg) != 1 {
		t.Fatalf("podman image inspect %s: %v", c.Image, err)
	}
	u, _, _ := strings.Cut(cfg[0].Config.User, ":")
	switch n, err := strconv.Atoi(u); {
	case u == "" || u == "root" || (err == nil && n == 0):
		t.Fatalf("pod %s, container %s: the kubelet refuses it: container has runAsNonRoot and image will run as root", p.name, c.Name)
	case err != nil:
		t.Fatalf("pod %s, container %s: the kubelet refuses it: container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root", p.name, c.Name, u)
	}
}

// runInit runs an init container to completion with podman run, with the
// user, groups, file system, capabilities and mounts the pod gives it.
func (r *release) runInit(p *pod, c corev1.Container, sc *corev1.PodSecurityContext, hostDirs map[string]string) {
	t := r.t
	t.Helper()
	args := []string{"run", "--rm", "--network", "host", "--name", p.name + "-init-" + c.Name}
	if uid, gid := user(c, sc); uid != nil {
		u := strconv.FormatInt(*uid, 10)
		if gid != nil {
			u += ":" + strconv.FormatInt(*gid, 10)
		}
		args = append(args, "--user", u)
	}
	if sc != nil {
		for _, g := range sc.SupplementalGroups { // with the fsGroup (see adapt)
			args = append(args, "--group-add", strconv.FormatInt(g, 10))
		}
	}
	if s := c.SecurityContext; s != nil {
		if s.ReadOnlyRootFilesystem != nil && *s.ReadOnlyRootFilesystem {
			// Kubernetes mounts no tmpfs on a read-only root; podman would.
			args = append(args, "--read-only", "--read-only-tmpfs=false")
		}
		if s.AllowPrivilegeEscalation != nil && !*s.AllowPrivilegeEscalation {
			args = append(args, "--security-opt", "no-new-privileges")
		}
		if s.Privileged != nil && *s.Privileged {
			args = append(args, "--privileged")
		}
		if s.Capabilities != nil {
			for _, cp := range s.Capabilities.Drop {
				args = append(args, "--cap-drop", string(cp))
			}
			for _, cp := range s.Capabilities.Add {
				args = append(args, "--cap-add", string(cp))
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Fatalf("init container %s: env %s from a source: the kit passes only values", c.Name, e.Name)
		}
		args = append(args, "--env", e.Name+"="+e.Value)
	}
	for _, m := range c.VolumeMounts {
		dir, ok := hostDirs[m.Name]
		if !ok || m.SubPath != "" {
			t.Fatalf("init container %s: mount %+v: the kit mounts whole volumes of the pod only", c.Name, m)
		}
		v := dir + ":" + m.MountPath
		if m.ReadOnly {
			v += ":ro"
		}
		args = append(args, "-v", v)
	}
	if len(c.Command) > 0 {
		b, _ := json.Marshal(c.Command)
		args = append(args, "--entrypoint", string(b))
	}
	args = append(args, c.Image)
	args = append(args, c.Args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "podman", args...).CombinedOutput(); err != nil {
		t.Fatalf("pod %s: init container %s (podman %s): %v\n%s", p.name, c.Name, strings.Join(args, " "), err, out)
	}
}

// cleanup removes the release's pods and podman secrets, after logging
// what the pods printed if the test failed.
func (r *release) cleanup() {
	for _, p := range slices.Concat(r.pods, r.hooks) {
		if r.t.Failed() {
			out, _ := exec.Command("podman", "logs", "--tail", "40", p.appContainer()).CombinedOutput()
			r.t.Logf("--- podman logs %s (last 40 lines) ---\n%s", p.appContainer(), out)
		}
		// A container that is restarting at that moment can make the rm
		// fail ("container not running"); the next one removes it.
		var out []byte
		for range 3 {
			out, _ = exec.Command("podman", "pod", "rm", "--force", "--time", "0", p.name).CombinedOutput()
			if exec.Command("podman", "pod", "exists", p.name).Run() != nil {
				out = nil
				break
			}
		}
		if out != nil {
			r.t.Errorf("podman pod rm %s: the pod is still there: %s", p.name, out)
		}
	}
	for _, s := range r.podmanSe {
		if out, err := exec.Command("podman", "secret", "rm", s).CombinedOutput(); err != nil {
			r.t.Errorf("podman secret rm %s: %v: %s", s, err, out)
		}
	}
}

// probe returns the path and port the kubelet would ask for one of the
// workload container's probes ("liveness" or "readiness"), as rendered.
func (p *pod) probe(t *testing.T, kind string) (string, int) {
	t.Helper()
	c := p.rendered.Spec.Containers[0]
	pr := map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe}[kind]
	if pr == nil || pr.HTTPGet == nil {
		t.Fatalf("pod %s: no %s httpGet probe rendered", p.name, kind)
	}
	port := pr.HTTPGet.Port.IntValue()
	if pr.HTTPGet.Port.StrVal != "" {
		port = 0
		for _, cp := range c.Ports {
			if cp.Name == pr.HTTPGet.Port.StrVal {
				port = int(cp.ContainerPort)
			}
		}
		if port == 0 {
			t.Fatalf("pod %s: %s probe names port %q, which the container does not declare", p.name, kind, pr.HTTPGet.Port.StrVal)
		}
	}
	return pr.HTTPGet.Path, port
}

// get asks lockex's HTTP server in the pod for path. The pods run on the
// host's network, so 127.0.0.1 here is inside the pod's network, where the
// kubelet's probes arrive.
func (p *pod) get(port int, path string) (int, string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// state is the workload container's state as podman reports it.
type state struct {
	Status       string
	ExitCode     int
	RestartCount int
}

func (p *pod) state(t *testing.T) state {
	t.Helper()
	var st []struct {
		State struct {
			Status   string
			ExitCode int
		}
		RestartCount int
	}
	if err := json.Unmarshal(run(t, "podman", "container", "inspect", p.appContainer()), &st); err != nil || len(st) != 1 {
		t.Fatalf("podman container inspect %s: %v", p.appContainer(), err)
	}
	return state{st[0].State.Status, st[0].State.ExitCode, st[0].RestartCount}
}

// crashed reports a workload container that exited or restarted, which a
// replica never does while the test runs it.
func (p *pod) crashed(t *testing.T) error {
	st := p.state(t)
	if st.Status != "running" || st.RestartCount > 0 {
		return fmt.Errorf("pod %s: container %s restarted %d times (now %s, last exit code %d): crash-looping",
			p.name, p.appContainer(), st.RestartCount, st.Status, st.ExitCode)
	}
	return nil
}

// set sets a nested value, making the maps on the way.
func set(m map[string]any, path []string, v any) {
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[path[len(path)-1]] = v
}

// freePort returns a loopback port nothing listens on now.
func freePort(t testing.TB) int {
	t.Helper()
	p, err := freeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
