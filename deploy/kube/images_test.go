package kube

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// busybox is Debian's busybox-static: one static binary, the only file of
// the workload images besides /etc and /tmp.
const busybox = "/bin/busybox"

// testVersion is the version the image builds stamp in.
const testVersion = "v0.0.0-kube-kit"

// Workload users. appUID is neither root nor the chart's 65532, so a pod
// that runs the image as its own user can be told from one that forces a
// uid on it.
const (
	appUID     = 1000
	nonrootUID = 65532 // distroless's nonroot, the Dockerfile's USER
)

// kitImages are the images every scenario runs, built once per run.
type kitImages struct {
	lockex  string // the repository's Dockerfile, built here
	ko      string // .ko.yaml, built here with ko
	root    string // busybox, running as root (no USER)
	nonroot string // busybox, running as appUID
}

var (
	imagesOnce  sync.Once
	imagesBuilt kitImages
	imagesErr   error

	madeMu     sync.Mutex
	madeImages []string // removed when the run ends
)

// images builds the kit's images on first use; a failed build fails every
// test that needs them.
func images(t testing.TB) kitImages {
	t.Helper()
	imagesOnce.Do(func() { imagesBuilt, imagesErr = buildImages() })
	if imagesErr != nil {
		t.Fatalf("building the kit's images: %v", imagesErr)
	}
	return imagesBuilt
}

func imageRef(name string) string { return "localhost/lockex-kube/" + name + ":" + runID }

func buildImages() (kitImages, error) {
	var imgs kitImages
	base := imageRef("static-nonroot")
	if err := importImage(base, staticBase(), "USER 65532", "WORKDIR /home/nonroot"); err != nil {
		return imgs, err
	}
	goImage := imageRef("go")
	if err := importImage(goImage, busyboxTree(0),
		"ENV PATH=/usr/local/go/bin:/go/bin:/bin", "ENV GOPATH=/go", "ENV HOME=/root",
		"ENV GOTOOLCHAIN=local"); err != nil {
		return imgs, err
	}
	imgs.lockex = imageRef("lockex")
	if err := buildDockerfile(imgs.lockex, goImage, base); err != nil {
		return imgs, err
	}
	imgs.ko = imageRef("lockex-ko")
	if err := buildKo(imgs.ko, base); err != nil {
		return imgs, err
	}
	imgs.root = imageRef("busybox-root")
	if err := importImage(imgs.root, busyboxTree(0), `CMD ["/bin/sh"]`); err != nil {
		return imgs, err
	}
	imgs.nonroot = imageRef("busybox-nonroot")
	if err := importImage(imgs.nonroot, busyboxTree(appUID), fmt.Sprintf("USER %d:%d", appUID, appUID),
		"WORKDIR /home/app", `CMD ["/bin/sh"]`); err != nil {
		return imgs, err
	}
	return imgs, nil
}

// buildDockerfile builds the repository's Dockerfile as shipped, with
// podman. Its two base images cannot be pulled here (no registry answers),
// so its build arguments point them at images made here: GO_IMAGE at a
// busybox image whose Go is this machine's toolchain, mounted read-only
// with its module and build caches (so the build stage's go mod download
// and go build fetch nothing they have), and BASE_IMAGE at a stand-in for
// distroless static:nonroot (the same users, /tmp, CA bundle and user
// 65532; no shell). Every instruction of the Dockerfile runs as written.
func buildDockerfile(ref, goImage, base string) error {
	goroot, err := goEnv("GOROOT")
	if err != nil {
		return err
	}
	modCache, err := goEnv("GOMODCACHE")
	if err != nil {
		return err
	}
	buildCache, err := goEnv("GOCACHE")
	if err != nil {
		return err
	}
	nofile, nproc, err := containerLimits()
	if err != nil {
		return err
	}
	madeMu.Lock()
	madeImages = append(madeImages, ref)
	madeMu.Unlock()
	_, err = runErr("podman", "build", "--network", "host",
		"--platform", "linux/"+runtime.GOARCH,
		"--build-arg", "GO_IMAGE="+goImage, "--build-arg", "BASE_IMAGE="+base,
		"--build-arg", "VERSION="+testVersion,
		"-v", goroot+":/usr/local/go:ro", "-v", modCache+":/go/pkg/mod", "-v", buildCache+":/root/.cache/go-build",
		// buildah's RUN asks for ulimits of 1048576, above this host's hard
		// limits; these are the ones install-k8s-tools.sh gives podman.
		"--ulimit", fmt.Sprintf("nofile=%d:%d", nofile, nofile), "--ulimit", fmt.Sprintf("nproc=%d:%d", nproc, nproc),
		"--layers=false", "-t", ref, repoRoot)
	return err
}

func goEnv(name string) (string, error) {
	out, err := runErr("go", "env", name)
	return strings.TrimSpace(string(out)), err
}

// containerLimits are the nofile and nproc limits a container may have
// here: the hard limits, and no more processes than kernel.pid_max, to
// which podman lowers its own limit.
func containerLimits() (nofile, nproc int, err error) {
	b, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		return 0, 0, err
	}
	hard := func(prefix string) int {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, prefix) {
				f := strings.Fields(line)
				var n int
				if _, err := fmt.Sscan(f[len(f)-2], &n); err == nil {
					return n
				}
				return 1 << 20 // unlimited
			}
		}
		return 0
	}
	nofile, nproc = hard("Max open files"), hard("Max processes")
	pidMax, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return 0, 0, err
	}
	var pm int
	fmt.Sscan(string(pidMax), &pm)
	if pm < nproc {
		nproc = pm
	}
	if nofile == 0 || nproc == 0 {
		return 0, 0, fmt.Errorf("no nofile or nproc limit in /proc/self/limits:\n%s", b)
	}
	return nofile, nproc, nil
}

// importImage makes a one-layer image of files with podman import, with
// Dockerfile-style changes (USER, ENV, CMD, ...) to its config.
func importImage(ref string, files *tree, changes ...string) error {
	f, err := os.CreateTemp("", "lockex-kube-layer-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(files.bytes()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	args := []string{"import"}
	for _, c := range changes {
		args = append(args, "--change", c)
	}
	madeMu.Lock()
	madeImages = append(madeImages, ref)
	madeMu.Unlock()
	_, err = runErr("podman", append(args, f.Name(), ref)...)
	return err
}

// removeImages removes every image this run made.
func removeImages() error {
	madeMu.Lock()
	defer madeMu.Unlock()
	var errs []string
	for _, ref := range madeImages {
		if out, err := exec.Command("podman", "rmi", "--force", ref).CombinedOutput(); err != nil &&
			!strings.Contains(string(out), "image not known") {
			errs = append(errs, fmt.Sprintf("podman rmi %s: %v: %s", ref, err, out))
		}
	}
	madeImages = nil
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// tree is a file system layer being written as a tar stream.
type tree struct {
	buf bytes.Buffer
	tw  *tar.Writer
	err error
}

func newTree() *tree {
	t := &tree{}
	t.tw = tar.NewWriter(&t.buf)
	return t
}

var epoch = time.Unix(0, 0)

func (t *tree) add(h *tar.Header, data []byte) {
	if t.err != nil {
		return
	}
	h.ModTime, h.Format = epoch, tar.FormatPAX
	if t.err = t.tw.WriteHeader(h); t.err == nil && len(data) > 0 {
		_, t.err = t.tw.Write(data)
	}
}

func (t *tree) dir(name string, mode int64, uid int) {
	t.add(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid}, nil)
}

func (t *tree) file(name string, mode int64, data []byte) {
	t.add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data)
}

func (t *tree) hostFile(name string, mode int64, path string) {
	data, err := os.ReadFile(path)
	if err != nil && t.err == nil {
		t.err = err
	}
	t.file(name, mode, data)
}

func (t *tree) symlink(name, target string) {
	t.add(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target}, nil)
}

func (t *tree) bytes() []byte {
	if t.err == nil {
		t.err = t.tw.Close()
	}
	if t.err != nil {
		panic(fmt.Sprintf("writing an image layer: %v", t.err))
	}
	return t.buf.Bytes()
}

// etc writes /etc/passwd and /etc/group with root, nobody and the users
// given as name → uid (each with a group of the same id), and the host's
// CA bundle.
func (t *tree) etc(users map[string]int) {
	passwd := "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
	group := "root:x:0:\nnobody:x:65534:\n"
	for name, uid := range users {
		passwd += fmt.Sprintf("%s:x:%d:%d:%s:/home/%s:/sbin/nologin\n", name, uid, uid, name, name)
		group += fmt.Sprintf("%s:x:%d:\n", name, uid)
	}
	t.dir("etc", 0o755, 0)
	t.file("etc/passwd", 0o644, []byte(passwd))
	t.file("etc/group", 0o644, []byte(group))
	t.dir("etc/ssl", 0o755, 0)
	t.dir("etc/ssl/certs", 0o755, 0)
	t.hostFile("etc/ssl/certs/ca-certificates.crt", 0o644, "/etc/ssl/certs/ca-certificates.crt")
}

// staticBase stands in for gcr.io/distroless/static-debian12:nonroot: its
// users, a world-writable /tmp, the nonroot home and the CA bundle, and no
// shell or other binary.
func staticBase() *tree {
	t := newTree()
	t.etc(map[string]int{"nonroot": nonrootUID})
	t.dir("tmp", 0o1777, 0)
	t.dir("home", 0o755, 0)
	t.dir("home/nonroot", 0o700, nonrootUID)
	return t
}

// busyboxTree is a busybox image: /bin/busybox with a link for each of its
// applets, /tmp writable by all as in any distribution image, and, for a
// non-root uid, that user's home.
func busyboxTree(uid int) *tree {
	t := newTree()
	users := map[string]int{}
	if uid != 0 {
		users["app"] = uid
	}
	t.etc(users)
	t.dir("bin", 0o755, 0)
	t.hostFile("bin/busybox", 0o755, busybox)
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		t.err = fmt.Errorf("%s --list: %w", busybox, err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" && filepath.Base(applet) == applet {
			t.symlink("bin/"+applet, "busybox")
		}
	}
	t.dir("tmp", 0o1777, 0)
	t.dir("root", 0o700, 0)
	t.dir("home", 0o755, 0)
	if uid != 0 {
		t.dir("home/app", 0o755, uid)
	}
	return t
}
