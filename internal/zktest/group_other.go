//go:build !linux

package zktest

import "syscall"

// withGroup: partitions need Linux's iptables; elsewhere the JVM keeps the
// test's group.
func withGroup(attr *syscall.SysProcAttr, _ uint32) *syscall.SysProcAttr { return attr }
