package proc

import (
	"os"

	"golang.org/x/sys/unix"
)

// readFile reads a small file of /proc or of the cgroup hierarchy with
// plain system calls: open, read until the end, close. os.ReadFile first
// registers each of these files with Go's netpoller, as both kinds can be
// polled, and unregisters it again: five more system calls per file, on
// every look for what still runs under the lock, which lies on the path
// of every release.
func readFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	b := make([]byte, 0, 512)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		case n == 0:
			return b, nil
		}
		b = b[:len(b)+n]
	}
}
