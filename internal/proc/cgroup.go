package proc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A cgroup of its own holds the workload and every process it starts,
// whatever process group or session they move to, and cgroup.kill (Linux
// 5.14) kills them all at once. lockex makes one as a child of its own
// cgroup v2 when it may: as root on a host, or where systemd delegated
// the cgroup to the user. In a container the hierarchy is read-only, and
// the workload runs without one.

var errNoCgroup2 = errors.New("lockex is in no cgroup v2 hierarchy")

// cgroup is a cgroup v2 directory made for one workload, and a descriptor
// of it to fork into (clone3's CLONE_INTO_CGROUP: the workload never runs
// outside it).
type cgroup struct {
	path string
	fd   int
}

// newCgroup makes a cgroup for a workload under parent.
func newCgroup(parent string) (*cgroup, error) {
	dir, err := os.MkdirTemp(parent, fmt.Sprintf("lockex-%d-", os.Getpid()))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); err != nil {
		_ = syscall.Rmdir(dir)
		return nil, fmt.Errorf("no cgroup.kill (Linux 5.14): %w", err)
	}
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		_ = syscall.Rmdir(dir)
		return nil, err
	}
	return &cgroup{path: dir, fd: fd}, nil
}

// forked closes the descriptor, which only the fork needed.
func (c *cgroup) forked() {
	if c.fd >= 0 {
		_ = syscall.Close(c.fd)
		c.fd = -1
	}
}

// ownCgroup is the directory of the cgroup v2 that lockex is in, found
// from /proc/self/cgroup and the mount of the hierarchy.
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	var rel string
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			rel, found = p, true
		}
	}
	if !found {
		return "", errNoCgroup2
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [tags...] - fstype ...
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(pre)
		if !ok || !strings.HasPrefix(post, "cgroup2 ") || len(fields) < 5 {
			continue
		}
		root, mnt := unescapeMountinfo(fields[3]), unescapeMountinfo(fields[4])
		if under, ok := strings.CutPrefix(rel, root); ok && (root == "/" || under == "" || under[0] == '/') {
			return filepath.Join(mnt, under), nil
		}
	}
	return "", errNoCgroup2
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a
// path in /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// killCgroup sends SIGKILL to every process in the cgroup at path and in
// the cgroups under it, and to those being forked into them.
func killCgroup(path string) error {
	return os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
}

// cgroupPopulated reports whether a process, zombies aside, is in the
// cgroup at path or below it.
func cgroupPopulated(path string) (bool, error) {
	b, err := readFile(filepath.Join(path, "cgroup.events"))
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return v != "0", nil
		}
	}
	return false, fmt.Errorf("no populated in %s/cgroup.events", path)
}

// removeCgroup removes the cgroup at path, and those a workload run as
// root made under it, deepest first; it fails while populated.
func removeCgroup(path string) error {
	entries, err := os.ReadDir(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroup(filepath.Join(path, e.Name())); err != nil {
				return err
			}
		}
	}
	return syscall.Rmdir(path)
}
