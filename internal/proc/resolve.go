// Package proc starts the workload and reports how it ended: the mechanics
// of processes and signals, with no policy of its own.
package proc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/lockex/lockex/internal/exitcode"
)

// defaultPath is execvp's search path when PATH is unset.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Resolve finds the file that execve would run for name, searching PATH as
// the shell does when name has no slash. It runs before the lock is sought,
// so a typo costs no ZooKeeper round trip and leaves nothing behind; its
// errors carry the shell's exit codes: 127 not found, 126 not executable.
func Resolve(name, pathEnv string) (string, error) {
	if name == "" {
		return "", exitcode.With(exitcode.NotFound, errors.New("command not found: empty command name"))
	}
	if strings.Contains(name, "/") {
		return name, checkExecutable(name)
	}
	if pathEnv == "" {
		pathEnv = defaultPath
	}
	var denied error
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		err := checkExecutable(p)
		if err == nil {
			return p, nil
		}
		if exitcode.Of(err) == exitcode.CannotExec && denied == nil {
			denied = err
		}
	}
	if denied != nil {
		return "", denied
	}
	return "", exitcode.With(exitcode.NotFound, fmt.Errorf("command not found: %q is in no directory of PATH", name))
}

func checkExecutable(p string) error {
	info, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return exitcode.With(exitcode.NotFound, fmt.Errorf("command not found: %s", p))
	case err != nil:
		return exitcode.With(exitcode.CannotExec, fmt.Errorf("cannot execute %s: %w", p, err))
	case info.IsDir():
		return exitcode.With(exitcode.CannotExec, fmt.Errorf("cannot execute %s: is a directory", p))
	}
	if err := syscall.Access(p, 1 /* X_OK */); err != nil {
		return exitcode.With(exitcode.CannotExec, fmt.Errorf("cannot execute %s: %w", p, err))
	}
	return nil
}

// startError maps a failed execve to the shell's exit codes.
func startError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return exitcode.With(exitcode.NotFound, fmt.Errorf("command not found: %s", path))
	}
	return exitcode.With(exitcode.CannotExec, fmt.Errorf("cannot execute %s: %w", path, err))
}
