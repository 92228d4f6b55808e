package check

import (
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
	wrapped   bool     // lockex runs the workload
	workload  []string // the user's command and args, as given
	readiness string   // the readiness probe's path, with lockex
	sketch    bool     // a README example: no hardening to check
}

// lockexMount is where the main container finds the copied binary.
const lockexMount = "/lockex"

func argv(c *corev1.Container) []string {
	return append(slices.Clone(c.Command), c.Args...)
}

// checkPod asserts the wrapping and the hardening of a pod template and
// returns its main (workload) container.
func checkPod(t *testing.T, pod *corev1.PodTemplateSpec, want podWant) *corev1.Container {
	t.Helper()
	spec := &pod.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("want 1 container, got %d", len(spec.Containers))
	}
	main := &spec.Containers[0]
	if !want.sketch {
		checkHardened(t, spec)
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
	// It gives only args, so the lockex image's own entrypoint runs (the
	// Dockerfile's /lockex, ko's /ko-app/lockex).
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
	addr := flagValue(a[1:sep], "--http-addr")
	_, portStr, ok := strings.Cut(addr, ":")
	port, err := strconv.Atoi(portStr)
	if !ok || err != nil {
		t.Fatalf("main argv %q: --http-addr %q has no port", a, addr)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"liveness", main.LivenessProbe, "/healthz"},
		{"readiness", main.ReadinessProbe, want.readiness},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET of %s", p.name, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s probe: path %q, want %q", p.name, p.probe.HTTPGet.Path, p.path)
		}
		if got := containerPort(t, main, p.probe.HTTPGet.Port); got != int32(port) {
			t.Errorf("%s probe: port %d, but lockex serves on %d", p.name, got, port)
		}
	}
	return main
}

func checkHardened(t *testing.T, spec *corev1.PodSpec) {
	t.Helper()
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken is not false")
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod: runAsNonRoot is not true")
	}
	if psc != nil && psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		t.Error("pod: runAsUser 0")
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("container %s: no securityContext", c.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("container %s: root filesystem not read-only", c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("container %s: privilege escalation allowed", c.Name)
		case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
			t.Errorf("container %s: capabilities %+v, want all dropped and none added", c.Name, sc.Capabilities)
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("container %s: privileged", c.Name)
		}
	}
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
}

func newPodRun(t *testing.T, spec *corev1.PodSpec, objs manifests, secrets map[string]map[string]string) *podRun {
	t.Helper()
	r := &podRun{t: t, spec: spec, objs: objs, secrets: secrets, dirs: map[string]string{}}
	root := t.TempDir()
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
			for _, item := range s.Items {
				val, ok := data[item.Key]
				if !ok {
					t.Fatalf("volume %s: Secret %s has no key %q", v.Name, s.SecretName, item.Key)
				}
				if err := os.WriteFile(filepath.Join(dir, item.Path), []byte(val), 0o440); err != nil {
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
