package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"

	"github.com/lockex/lockex/internal/activecheck"
	"github.com/lockex/lockex/internal/identity"
	"github.com/lockex/lockex/internal/podlabel"
	"github.com/lockex/lockex/internal/proc"
	"github.com/lockex/lockex/internal/zklock"
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
		{strings.Contains(c.ZKUser, ":"), "zk-user", c.ZKUser, "no colon: digest auth is user:password"},
		{c.ZKACLWorldRead && c.ZKUser == "", "zk-acl-world-read", c.ZKACLWorldRead, "--zk-user: without auth every node is world-readable anyway"},
		{(c.ZKTLSCert == "") != (c.ZKTLSKey == ""), "zk-tls-key", c.ZKTLSKey, "--zk-tls-cert and --zk-tls-key together"},
		{c.ActiveHTTP != "" && c.ActiveTCP != "", "active-tcp", c.ActiveTCP, "not together with --active-http: one check decides /active"},
		{(c.ActiveHTTP != "" || c.ActiveTCP != "") && c.HTTPAddr == "", "http-addr", c.HTTPAddr, "an address: --active-http and --active-tcp decide /active, which only --http-addr serves"},
		{c.ActivePeriod <= 0, "active-period", c.ActivePeriod, "more than 0"},
		{c.ActiveTimeout <= 0, "active-timeout", c.ActiveTimeout, "more than 0"},
		{c.ActiveFailures < 1, "active-failure-threshold", c.ActiveFailures, "at least 1"},
		{c.RequeueBackoff <= 0, "requeue-backoff", c.RequeueBackoff, "more than 0: a workload that fails at once must not be restarted in a tight loop"},
		{c.RequeueMax < c.RequeueBackoff, "requeue-backoff-max", c.RequeueMax, fmt.Sprintf("at least %s (%s)", c.name("requeue-backoff"), c.RequeueBackoff)},
		{c.HealthURL != "" && c.HealthCmd != "", "health-cmd", c.HealthCmd, "not together with --health-url: one check decides the workload's health"},
		{c.StandbyURL != "" && c.StandbyCmd != "", "standby-cmd", c.StandbyCmd, "not together with --standby-url: one check decides whether this standby queues"},
		{c.HealthPeriod <= 0, "health-period", c.HealthPeriod, "more than 0"},
		{c.HealthTimeout <= 0, "health-timeout", c.HealthTimeout, "more than 0"},
		{c.HealthFailures < 1, "health-failure-threshold", c.HealthFailures, "at least 1"},
		// One without the other turns the takeover of a dead earlier
		// incarnation off without a word: a mistake to say at once.
		{(c.PodUID == "") != (c.ContainerName == ""), "container-name", c.ContainerName, "--pod-uid and --container-name together"},
		{c.PodIP != "" && !isIP(c.PodIP), "pod-ip", c.PodIP, "an IPv4 or IPv6 address, as the downward API's status.podIP gives it"},
		// The workload is told to stop the kill grace, and a tenth of the
		// timeout, before the server may expire the session, counted from
		// evidence that lags; a grace of 55% of the timeout or more
		// leaves no time at all (zklock.MaxStopGrace). The server may
		// grant less than asked; lockex checks again once it knows.
		{c.KillGrace.D() >= zklock.MaxStopGrace(c.SessionTimeout.D()), "kill-grace", c.KillGrace,
			fmt.Sprintf("less than %s, 55%% of %s (%s), or the lock could be lost before the workload is stopped",
				zklock.MaxStopGrace(c.SessionTimeout.D()), c.name("session-timeout"), c.SessionTimeout)},
	}
	for _, ch := range checks {
		if ch.bad {
			return fmt.Errorf("%s %q: want %s", c.name(ch.flag), fmt.Sprint(ch.val), ch.want)
		}
	}
	if c.ZKUser == "" && (c.ZKPassword != "" || c.ZKPasswordFile != "") {
		// Never name the password's value, not even in an error.
		return fmt.Errorf("a ZooKeeper password needs a user: set --zk-user")
	}
	if err := c.readPasswordFile(); err != nil {
		return err
	}
	var err error
	if c.TLS, err = c.loadTLS(); err != nil {
		return err
	}
	if c.ActiveCheck, err = c.activeCheck(); err != nil {
		return err
	}
	if err := c.healthCheck(); err != nil {
		return err
	}
	if err := c.standbyCheck(); err != nil {
		return err
	}
	if c.PodLabel, err = c.podLabel(); err != nil {
		return err
	}
	if c.ZKUser != "" && c.ZKPassword == "" {
		return fmt.Errorf("%s %q: needs a password (--zk-password, LOCKEX_ZK_PASSWORD or --zk-password-file)", c.name("zk-user"), c.ZKUser)
	}

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

// readPasswordFile reads --zk-password-file (a mounted Kubernetes Secret,
// say), without its trailing newline. Its errors name the file, never what
// is in it.
func (c *Config) readPasswordFile() error {
	if c.ZKPasswordFile == "" {
		return nil
	}
	b, err := os.ReadFile(c.ZKPasswordFile)
	if err != nil {
		return fmt.Errorf("%s: %w", c.name("zk-password-file"), err)
	}
	c.ZKPassword = strings.TrimRight(string(b), "\r\n")
	if c.ZKPassword == "" {
		return fmt.Errorf("%s %s: the file is empty", c.name("zk-password-file"), c.ZKPasswordFile)
	}
	return nil
}

// loadTLS reads the files of --zk-tls-ca, --zk-tls-cert and --zk-tls-key.
// The server's certificate is verified: against --zk-tls-ca, or the
// system's roots without it. A client certificate makes it mutual TLS.
func (c *Config) loadTLS() (*tls.Config, error) {
	if c.ZKTLSCA == "" && c.ZKTLSCert == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.ZKTLSCA != "" {
		pem, err := os.ReadFile(c.ZKTLSCA)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name("zk-tls-ca"), err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s %s: no PEM certificate in it", c.name("zk-tls-ca"), c.ZKTLSCA)
		}
	}
	if c.ZKTLSCert != "" {
		// tls's errors describe the files, never the key in them.
		pair, err := tls.LoadX509KeyPair(c.ZKTLSCert, c.ZKTLSKey)
		if err != nil {
			return nil, fmt.Errorf("%s %s, %s %s: %w", c.name("zk-tls-cert"), c.ZKTLSCert, c.name("zk-tls-key"), c.ZKTLSKey, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// activeCheck makes the probe of --active-http or --active-tcp.
func (c *Config) activeCheck() (activecheck.Probe, error) {
	var p activecheck.Probe
	var err error
	switch {
	case c.ActiveHTTP != "":
		if p, err = activecheck.HTTP(c.ActiveHTTP); err != nil {
			return nil, fmt.Errorf("%s: %w", c.name("active-http"), err)
		}
	case c.ActiveTCP != "":
		if p, err = activecheck.TCP(c.ActiveTCP); err != nil {
			return nil, fmt.Errorf("%s: %w", c.name("active-tcp"), err)
		}
	}
	return p, nil
}

// healthCheck makes the probe of --health-url, or splits --health-cmd.
func (c *Config) healthCheck() (err error) {
	c.HealthCheck, c.HealthCommand, c.HealthCommandPath, err = c.check("health", c.HealthURL, c.HealthCmd)
	return err
}

// standbyCheck makes the probe of --standby-url, or splits --standby-cmd.
func (c *Config) standbyCheck() (err error) {
	c.StandbyCheck, c.StandbyCommand, c.StandbyCommandPath, err = c.check("standby", c.StandbyURL, c.StandbyCmd)
	return err
}

// check makes the probe of --KIND-url (rawURL), or splits --KIND-cmd (cmd)
// and finds its program; both "" is no check.
func (c *Config) check(kind, rawURL, cmd string) (probe activecheck.Probe, argv []string, path string, err error) {
	switch {
	case rawURL != "":
		if probe, err = activecheck.HTTP(rawURL); err != nil {
			return nil, nil, "", fmt.Errorf("%s: %w", c.name(kind+"-url"), err)
		}
	case cmd != "":
		if argv, err = activecheck.ParseCommand(cmd); err != nil {
			return nil, nil, "", fmt.Errorf("%s: %w", c.name(kind+"-cmd"), err)
		}
		if c.IsMode() {
			return nil, argv, "", nil
		}
		// Found now, as the workload is: a typo is a usage error before
		// ZooKeeper is asked, not a failing check that stops the workload
		// or keeps a standby out of the queue.
		if path, err = proc.Resolve(argv[0], c.getenv("PATH")); err != nil {
			return nil, nil, "", fmt.Errorf("%s %q: %w", c.name(kind+"-cmd"), cmd, err)
		}
	}
	return probe, argv, path, nil
}

// podLabel checks --active-label and --deletion-cost and finds the API
// server, the pod and its namespace, as the pod's service account gives
// them. Only a run that seeks the lock patches its pod.
func (c *Config) podLabel() (*podlabel.Config, error) {
	if (c.ActiveLabel == "" && !c.DeletionCost) || c.IsMode() {
		return nil, nil
	}
	var key, value string
	if c.ActiveLabel != "" {
		var ok bool
		if key, value, ok = strings.Cut(c.ActiveLabel, "="); !ok {
			return nil, fmt.Errorf("%s %q: want key=value", c.name("active-label"), c.ActiveLabel)
		}
		if err := labelKey(key); err != nil {
			return nil, fmt.Errorf("%s %q: %w", c.name("active-label"), c.ActiveLabel, err)
		}
		if err := labelValue(value); err != nil {
			return nil, fmt.Errorf("%s %q: %w", c.name("active-label"), c.ActiveLabel, err)
		}
	}
	// The flag that asked for the API, for the errors below.
	flag := c.name("active-label")
	if c.ActiveLabel == "" {
		flag = c.name("deletion-cost")
	}
	pl, err := podlabel.InCluster(c.getenv, c.ServiceAccount)
	if err != nil {
		return nil, fmt.Errorf("%s needs the Kubernetes API: %w", flag, err)
	}
	pl.Key, pl.Value, pl.Pod, pl.DeletionCost = key, value, c.PodName, c.DeletionCost
	if pl.Pod == "" {
		// A pod's host name is its name, unless its spec sets hostname.
		if pl.Pod, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("%s: no --pod-name and no host name: %w", flag, err)
		}
	}
	return &pl, nil
}

// A label's name part and value: at most 63 characters, alphanumerics and
// -_. inside, alphanumeric at both ends (the value may be empty).
var labelName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)

// A label key's prefix: a DNS subdomain.
var dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func labelKey(k string) error {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		prefix, name = "", k
	}
	if hasPrefix && (len(prefix) > 253 || !dnsSubdomain.MatchString(prefix)) {
		return fmt.Errorf("label key prefix %q is not a DNS subdomain", prefix)
	}
	if len(name) > 63 || !labelName.MatchString(name) {
		return fmt.Errorf("label name %q: want at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends", name)
	}
	return nil
}

func labelValue(v string) error {
	if v != "" && (len(v) > 63 || !labelName.MatchString(v)) {
		return fmt.Errorf("label value %q: want at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends", v)
	}
	return nil
}

// Identity is what lockex stores in its znodes (docs/design.md §3.1):
// hostname:pid, as the original tool did, then lockex's version and what
// it knows of its pod, so that --status and kazoo's contenders() can tell
// who it is.
func (c *Config) Identity(version string) identity.Identity {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return identity.Identity{
		Host: host, PID: os.Getpid(), Version: version,
		Namespace: c.PodNamespace, Pod: c.PodName, UID: c.PodUID, Container: c.ContainerName,
		IP: canonicalIP(c.PodIP),
	}
}

// isIP reports whether s is an address a pod can have: no zone, which
// would only name an interface of the host that reads it.
func isIP(s string) bool {
	ip, err := netip.ParseAddr(s)
	return err == nil && ip.Zone() == ""
}

// canonicalIP is s as identity.Parse reads it back ("" stays "").
func canonicalIP(s string) string {
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip.String()
	}
	return s
}
