//go:build !linux

package kubetest

import "syscall"

// sysProcAttr: only Linux can tie a component's life to the test binary's.
func sysProcAttr() *syscall.SysProcAttr { return nil }
