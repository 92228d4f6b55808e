package zktest

import "syscall"

// withGroup runs the JVM with group id gid (0: unchanged), so that the
// kernel can tell its sockets from every other process's (iptables' owner
// match, see Cluster.Cut). Root keeps its user id, so the JVM reads and
// writes the test's files as before.
func withGroup(attr *syscall.SysProcAttr, gid uint32) *syscall.SysProcAttr {
	if gid == 0 {
		return attr
	}
	if attr == nil {
		attr = &syscall.SysProcAttr{}
	}
	attr.Credential = &syscall.Credential{Uid: 0, Gid: gid, NoSetGroups: true}
	return attr
}
