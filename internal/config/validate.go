package config

import (
	"fmt"
	"os"
)

// validate checks each value against its range and the values against each
// other, and derives Servers, Chroot and Path. The first problem found is
// returned, naming the flag (or variable) and the value.
func (c *Config) validate() error {
	if len(c.Command) == 0 && !c.IsMode() {
		return fmt.Errorf("no command given: usage is lockex [flags] -- command [args...]")
	}
	checks := []struct {
		bad  bool
		flag string
		val  any
		want string
	}{
		{c.Concurrent < 1, "concurrent", c.Concurrent, "at least 1"},
		{c.Retry < 1, "retry", c.Retry, "at least 1"},
		{c.LockRetry < 0, "lockretry", c.LockRetry, "0 or more"},
		{c.Timeout <= 0, "timeout", c.Timeout, "more than 0"},
		{c.SessionTimeout <= 0, "session-timeout", c.SessionTimeout, "more than 0"},
		{c.BusyExitCode < 0 || c.BusyExitCode > 255, "busy-exit-code", c.BusyExitCode, "from 0 to 255"},
		{!oneOf(c.LogFormat, "text", "json"), "log-format", c.LogFormat, "text or json"},
		{!oneOf(c.LogLevel, "debug", "info", "warn", "error"), "log-level", c.LogLevel, "debug, info, warn or error"},
		{!oneOf(c.Output, "table", "json"), "output", c.Output, "table or json"},
		{c.ZKPassword != "" && c.ZKPasswordFile != "", "zk-password-file", c.ZKPasswordFile, "not together with --zk-password"},
		// SPEC section 4: the workload is told to stop at session timeout
		// − kill grace − 10%, so a grace of 90% or more leaves no time at
		// all. The server may grant less than asked; lockex checks again
		// once it knows.
		{c.KillGrace.D() >= c.SessionTimeout.D()/10*9, "kill-grace", c.KillGrace,
			fmt.Sprintf("less than 90%% of %s (%s), or the lock could be lost before the workload is stopped", c.name("session-timeout"), c.SessionTimeout)},
	}
	for _, ch := range checks {
		if ch.bad {
			return fmt.Errorf("%s %q: want %s", c.name(ch.flag), fmt.Sprint(ch.val), ch.want)
		}
	}
	if err := c.unsupported(); err != nil {
		return err
	}

	var err error
	if c.Servers, c.Chroot, err = ParseHosts(c.ZKHosts); err != nil {
		return fmt.Errorf("%s: %w", c.name("zkhosts"), err)
	}
	id := c.LockID
	if id == "" {
		if c.Version || c.Install != "" {
			return nil // no lock involved
		}
		if len(c.Command) == 0 {
			return fmt.Errorf("--lockid is needed when no command is given to derive it from")
		}
		id = DerivedID(c.Command)
	}
	if c.Path, err = LockPath(c.LockPath, id); err != nil {
		return err
	}
	return nil
}

// unsupported refuses, rather than silently ignores, the flags whose
// features this build does not have yet: a flag that is accepted but does
// nothing (auth that is not sent, a probe that never answers) is worse
// than an error.
func (c *Config) unsupported() error {
	for flag, set := range map[string]bool{
		"zk-user":           c.ZKUser != "",
		"zk-password":       c.ZKPassword != "",
		"zk-password-file":  c.ZKPasswordFile != "",
		"zk-acl-world-read": c.ZKACLWorldRead,
		"zk-tls-ca":         c.ZKTLSCA != "",
		"zk-tls-cert":       c.ZKTLSCert != "",
		"zk-tls-key":        c.ZKTLSKey != "",
	} {
		if set {
			return fmt.Errorf("%s: not supported by this build of lockex yet", c.name(flag))
		}
	}
	return nil
}

// Identifier is what lockex stores in its znodes, as the original tool did:
// hostname:pid, so kazoo's contenders() and an operator can tell who it is.
func Identifier() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}
