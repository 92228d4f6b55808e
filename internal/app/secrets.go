package app

import (
	"os"
	"slices"
	"strings"
	"unsafe"
)

// hideSecrets overwrites the password in lockex's own flags in os.Args
// (never in the workload's command) with x's, in the memory the kernel shows as the
// process's command line, as mysql and others do: /proc/PID/cmdline is
// readable by every user. Go's os.Args are not copies but point into that
// memory, so writing through them changes what ps shows. The password was
// copied out of it before (config.Parse), and nothing reads these bytes
// after this. The moment before this runs, the password is visible: the
// flag's help says so and points to LOCKEX_ZK_PASSWORD and
// --zk-password-file.
func hideSecrets(commandLen int, password string) {
	if password == "" || len(os.Args) <= commandLen {
		return
	}
	mask := slices.Repeat([]byte{'x'}, len(password))
	for _, arg := range os.Args[1 : len(os.Args)-commandLen] {
		b := unsafe.Slice(unsafe.StringData(arg), len(arg))
		for off := 0; ; {
			i := strings.Index(arg[off:], password)
			if i < 0 {
				break
			}
			copy(b[off+i:], mask)
			off += i + len(password)
		}
	}
}

// workloadEnv is lockex's environment without what is lockex's own: the
// workload has no business with ZooKeeper's password, and a lockex it
// starts must not take this one's container identity, or, as PID 1 of a
// PID namespace of its own, it would take this one's nodes for those of a
// dead earlier incarnation (docs/design.md §3.4).
func workloadEnv(environ []string) []string {
	return slices.DeleteFunc(slices.Clone(environ), func(kv string) bool {
		for _, own := range []string{"LOCKEX_ZK_PASSWORD=", "LOCKEX_POD_UID=", "LOCKEX_CONTAINER_NAME="} {
			if strings.HasPrefix(kv, own) {
				return true
			}
		}
		return false
	})
}
