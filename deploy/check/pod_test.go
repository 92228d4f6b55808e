package check

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// podWant is what a rendered pod must do.
type podWant struct {
	wrapped  bool     // lockex runs the workload
	workload []string // the user's command and args, as given
	sketch   bool     // a README example: no security context to check
	hardened bool     // the restricted profile on the workload too
	token    bool     // a service account token is mounted (routeToActive, deletionCost)
}

// lockexMount is where the main container finds the copied binary.
const lockexMount = "/lockex"

// readiness is the readiness probe's path with lockex, also with
// routeToActive: a connected standby is Ready; the Service routes by label.
const readiness = "/readyz"

func argv(c *corev1.Container) []string {
	return append(slices.Clone(c.Command), c.Args...)
}

// checkPod asserts the wrapping and the security context of a pod template
// and returns its main (workload) container.
func checkPod(t *testing.T, pod *corev1.PodTemplateSpec, want podWant) *corev1.Container {
	t.Helper()
	spec := &pod.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("want 1 container, got %d", len(spec.Containers))
	}
	main := &spec.Containers[0]
	if !want.sketch {
		checkSecurity(t, spec, want)
	}

	if !want.wrapped {
		if len(spec.InitContainers) != 0 {
			t.Errorf("plain: want no init containers, got %d", len(spec.InitContainers))
		}
		if got := argv(main); !slices.Equal(got, want.workload) {
			t.Errorf("plain: argv %q, want the workload's %q", got, want.workload)
		}
		return main
	}

	// The init container copies lockex into an emptyDir with --install.
	// It gives only args, so the lockex image's own entrypoint runs,
	// wherever the image keeps the binary.
	if len(spec.InitContainers) != 1 {
		t.Fatalf("want 1 init container, got %d", len(spec.InitContainers))
	}
	initC := &spec.InitContainers[0]
	if len(initC.Command) != 0 {
		t.Errorf("init container: command %q overrides the lockex image's entrypoint", initC.Command)
	}
	if len(initC.Args) != 2 || initC.Args[0] != "--install" {
		t.Fatalf("init container: args %q, want --install DIR", initC.Args)
	}
	vol := mountedVolume(t, initC, initC.Args[1])
	if v := volume(t, spec, vol); v.EmptyDir == nil {
		t.Errorf("volume %q that lockex is installed into is not an emptyDir", vol)
	}
	if mountedVolume(t, main, lockexMount) != vol {
		t.Errorf("main container does not mount volume %q at %s", vol, lockexMount)
	}

	// /lockex/lockex [flags] -- workload...
	a := argv(main)
	if len(a) == 0 || a[0] != lockexMount+"/lockex" {
		t.Fatalf("main argv %q does not start with %s/lockex", a, lockexMount)
	}
	sep := slices.Index(a, "--")
	if sep < 0 {
		t.Fatalf("main argv %q has no -- before the workload", a)
	}
	for _, f := range a[1:sep] {
		if !strings.HasPrefix(f, "-") {
			t.Errorf("main argv %q: %q before -- is no flag: lockex would take it for the command", a, f)
		}
	}
	if got := a[sep+1:]; !slices.Equal(got, want.workload) {
		t.Errorf("after --: %q, want the workload's %q", got, want.workload)
	}

	// Probes on lockex's port, the one --http-addr names.
	port := lockexPort(t, main)
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"liveness", main.LivenessProbe, "/healthz"},
		{"readiness", main.ReadinessProbe, readiness},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET of %s", p.name, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s probe: path %q, want %q", p.name, p.probe.HTTPGet.Path, p.path)
		}
		if got := containerPort(t, main, p.probe.HTTPGet.Port); got != port {
			t.Errorf("%s probe: port %d, but lockex serves on %d", p.name, got, port)
		}
	}
	return main
}

// lockexPort is the port of the main container's --http-addr.
func lockexPort(t *testing.T, main *corev1.Container) int32 {
	t.Helper()
	a := argv(main)
	addr := flagValue(a[1:slices.Index(a, "--")], "--http-addr")
	_, portStr, ok := strings.Cut(addr, ":")
	port, err := strconv.Atoi(portStr)
	if !ok || err != nil {
		t.Fatalf("main argv %q: --http-addr %q has no port", a, addr)
	}
	return int32(port)
}

// checkSecurity: lockex's own image (the init container) runs restricted
// whatever the workload does; the workload runs as its image says (its
// user, its writable filesystem), or restricted when hardened, with /tmp
// still writable; the service account token is mounted only when lockex
// needs the API.
func checkSecurity(t *testing.T, spec *corev1.PodSpec, want podWant) {
	t.Helper()
	if got := spec.AutomountServiceAccountToken; got == nil || *got != want.token {
		t.Errorf("automountServiceAccountToken %v, want %v", ptrString(got), want.token)
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	for _, c := range spec.InitContainers {
		checkRestricted(t, c.Name, psc, c.SecurityContext)
		if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
			t.Errorf("init container %s: runAsUser %d fixed; the image's numeric user is enough, and OpenShift refuses a fixed one", c.Name, *c.SecurityContext.RunAsUser)
		}
	}
	main := &spec.Containers[0]
	if want.hardened {
		checkRestricted(t, main.Name, psc, main.SecurityContext)
		if p := psc.SeccompProfile; p == nil || p.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("hardened pod: seccomp %+v, want RuntimeDefault", p)
		}
		if v := volume(t, spec, mountedVolume(t, main, "/tmp")); v.EmptyDir == nil {
			t.Errorf("hardened: /tmp is volume %+v, want an emptyDir (the root filesystem is read-only)", v)
		}
		return
	}
	if main.SecurityContext != nil {
		t.Errorf("workload container: securityContext %+v; want none, so it runs as its image says", main.SecurityContext)
	}
	if psc.RunAsUser != nil || psc.RunAsGroup != nil || psc.FSGroup != nil || psc.RunAsNonRoot != nil {
		t.Errorf("pod securityContext %+v: forces a user on the workload's image", psc)
	}
	for _, m := range main.VolumeMounts {
		if m.MountPath == "/tmp" {
			t.Errorf("workload container mounts %s at /tmp; its image's own /tmp is writable", m.Name)
		}
	}
}

// checkRestricted: the restricted Pod Security Standard for one container.
func checkRestricted(t *testing.T, name string, psc *corev1.PodSecurityContext, sc *corev1.SecurityContext) {
	t.Helper()
	switch {
	case sc == nil:
		t.Errorf("container %s: no securityContext", name)
	case (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot) && (psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot):
		t.Errorf("container %s: runAsNonRoot is not true", name)
	case sc.RunAsUser != nil && *sc.RunAsUser == 0, psc.RunAsUser != nil && *psc.RunAsUser == 0:
		t.Errorf("container %s: runAsUser 0", name)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("container %s: root filesystem not read-only", name)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("container %s: privilege escalation allowed", name)
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
		t.Errorf("container %s: capabilities %+v, want all dropped and none added", name, sc.Capabilities)
	case sc.Privileged != nil && *sc.Privileged:
		t.Errorf("container %s: privileged", name)
	case (sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) &&
		(psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault):
		t.Errorf("container %s: seccomp profile not RuntimeDefault", name)
	}
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// flagValue returns the value of a long flag given as --name=value or
// --name value, or "" if absent.
func flagValue(flags []string, name string) string {
	for i, f := range flags {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			return v
		}
		if f == name && i+1 < len(flags) {
			return flags[i+1]
		}
	}
	return ""
}

func mountedVolume(t *testing.T, c *corev1.Container, path string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return m.Name
		}
	}
	t.Fatalf("container %s mounts nothing at %s", c.Name, path)
	return ""
}

func volume(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Volume {
	t.Helper()
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	t.Fatalf("no volume %q in the pod", name)
	return nil
}

func containerPort(t *testing.T, c *corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, p.StrVal)
	return 0
}

// podRun is a pod's containers run as the kubelet would run them, with the
// real lockex binary standing in for the lockex image: volumes become
// directories, environment is resolved from the rendered ConfigMaps and
// the given Secrets.
type podRun struct {
	t       *testing.T
	spec    *corev1.PodSpec
	objs    manifests
	secrets map[string]map[string]string
	dirs    map[string]string // volume name → directory
	// kubeEnv is what the kubelet adds to every container when it mounts
	// the service account token: the API server's address, and here the
	// directory standing in for the token's mount at lockex's default
	// --serviceaccount-dir.
	kubeEnv map[string]string
}

// The simulated pod's name, namespace and UID, for the downward API.
const (
	podName      = "rel-lockex-5d8f7c9b6-x2x4q"
	podNamespace = "ns"
	podUID       = "0b6f3c2e-8d4a-4f1b-9c7e-5a2d1e3f4b6c"
	// podIP is only written into lock nodes, never connected to: an
	// address of the documentation range (RFC 5737).
	podIP = "192.0.2.7"
)

func newPodRun(t *testing.T, spec *corev1.PodSpec, objs manifests, secrets map[string]map[string]string) *podRun {
	t.Helper()
	r := &podRun{t: t, spec: spec, objs: objs, secrets: secrets, dirs: map[string]string{}}
	root := t.TempDir()
	if a := spec.AutomountServiceAccountToken; a != nil && *a {
		dir := filepath.Join(root, "serviceaccount")
		writeFiles(t, dir, map[string]string{"token": "t0ken", "namespace": "team-a", "ca.crt": testPKI(t).caPEM})
		r.kubeEnv = map[string]string{
			"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1",
			"LOCKEX_SERVICEACCOUNT_DIR": dir,
		}
	}
	for _, v := range spec.Volumes {
		dir := filepath.Join(root, v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		r.dirs[v.Name] = dir
		if s := v.Secret; s != nil {
			data, ok := secrets[s.SecretName]
			if !ok {
				t.Fatalf("volume %s: no Secret %q given to the test", v.Name, s.SecretName)
			}
			mode := os.FileMode(0o644) // the API server's default
			if s.DefaultMode != nil {
				mode = os.FileMode(*s.DefaultMode)
			}
			for _, item := range s.Items {
				val, ok := data[item.Key]
				if !ok {
					t.Fatalf("volume %s: Secret %s has no key %q", v.Name, s.SecretName, item.Key)
				}
				if err := os.WriteFile(filepath.Join(dir, item.Path), []byte(val), mode); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return r
}

// path maps a path inside container c to the directory standing in for
// its volume; paths outside any mount are left alone.
func (r *podRun) path(c *corev1.Container, p string) string {
	for _, m := range c.VolumeMounts {
		if p == m.MountPath || strings.HasPrefix(p, m.MountPath+"/") {
			return r.dirs[m.Name] + strings.TrimPrefix(p, m.MountPath)
		}
	}
	return p
}

// mapArgs maps every argument that is a mounted path, or a --flag=path.
func (r *podRun) mapArgs(c *corev1.Container, args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if name, val, ok := strings.Cut(a, "="); ok && strings.HasPrefix(name, "--") && strings.HasPrefix(val, "/") {
			out[i] = name + "=" + r.path(c, val)
		} else {
			out[i] = r.path(c, a)
		}
	}
	return out
}

// env resolves a container's environment as the kubelet does: envFrom
// first, then env, later entries winning.
func (r *podRun) env(c *corev1.Container) map[string]string {
	t := r.t
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			t.Fatalf("container %s: envFrom %+v: only configMapRef is simulated", c.Name, ef)
		}
		for k, v := range r.configMap(ef.ConfigMapRef.Name).Data {
			env[ef.Prefix+k] = v
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := r.secrets[ref.Name][ref.Key]
			if !ok {
				t.Fatalf("env %s: Secret %s key %s not given to the test", e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			env[e.Name] = r.configMap(ref.Name).Data[ref.Key]
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = podName
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env[e.Name] = podNamespace
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.uid":
			env[e.Name] = podUID
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP":
			env[e.Name] = podIP
		default:
			t.Fatalf("env %s: valueFrom %+v is not simulated", e.Name, e.ValueFrom)
		}
	}
	return env
}

func (r *podRun) configMap(name string) *corev1.ConfigMap {
	for _, cm := range all[*corev1.ConfigMap](r.objs) {
		if cm.Name == name {
			return cm
		}
	}
	r.t.Fatalf("no ConfigMap %q rendered", name)
	return nil
}

// exec runs argv with the container's resolved environment (and PATH, which
// an image would set) and returns its exit code and output.
func (r *podRun) exec(c *corev1.Container, argv []string) (int, string) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	for k, v := range r.kubeEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for k, v := range r.env(c) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		r.t.Fatalf("run %q: %v", argv, err)
	}
	return 0, string(out)
}

// install runs the init container: lockex (the image's entrypoint) with
// its args, and checks that it left an executable lockex where the main
// container will look for it.
func (r *podRun) install() {
	t := r.t
	initC := &r.spec.InitContainers[0]
	code, out := r.exec(initC, append([]string{lockexBin}, r.mapArgs(initC, initC.Args)...))
	if code != 0 {
		t.Fatalf("init container %q: exit %d\n%s", initC.Args, code, out)
	}
	main := &r.spec.Containers[0]
	fi, err := os.Stat(r.path(main, lockexMount+"/lockex"))
	if err != nil {
		t.Fatalf("after the init container: %v", err)
	}
	if fi.Mode().Perm()&0o111 != 0o111 {
		t.Errorf("installed lockex has mode %v, want executable by all", fi.Mode())
	}
}

// validate runs the main container's argv, with the copied lockex, up to
// its configuration checks: --version before -- makes lockex parse and
// check every flag and variable (exit 64 on any problem) and then print its
// version instead of connecting to ZooKeeper.
func (r *podRun) validate() (int, string) {
	main := &r.spec.Containers[0]
	a := argv(main)
	sep := slices.Index(a, "--")
	if sep < 0 {
		r.t.Fatalf("main argv %q has no --", a)
	}
	run := append(r.mapArgs(main, a[:sep]), "--version")
	run = append(run, a[sep:]...)
	return r.exec(main, run)
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
