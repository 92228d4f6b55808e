package config

import (
	"reflect"

	"github.com/spf13/pflag"
)

// flags binds every flag to its field in c; the values c already holds
// (defaults overlaid by the environment) are what an absent flag leaves.
func (c *Config) flags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("lockex", pflag.ContinueOnError)
	// Everything from the first non-flag argument on is the workload's own.
	fs.SetInterspersed(false)
	fs.SortFlags = false

	fs.StringVarP(&c.ZKHosts, "zkhosts", "z", c.ZKHosts, "ZooKeeper `hosts`, comma-separated host:port, optional /chroot suffix (also ZKHOSTS)")
	fs.StringVarP(&c.LockPath, "lockpath", "p", c.LockPath, "parent `path`; the lock lives at /<lockpath>/<lockid>")
	fs.StringVarP(&c.LockID, "lockid", "i", c.LockID, "lock `name` (default: derived from the command's argv)")
	fs.IntVarP(&c.Concurrent, "concurrent", "c", c.Concurrent, "`N` > 1 takes one of N leases of a semaphore")
	fs.BoolVar(&c.Blocking, "blocking", c.Blocking, "wait for the lock")
	fs.Bool("no-blocking", false, "give up at once if the lock is taken")
	fs.VarP(&c.LockTimeout, "locktimeout", "t", "give up waiting for the lock after this `duration` (1.5 or 1500ms)")
	fs.VarP(&c.Timeout, "timeout", "T", "how long each attempt to reach ZooKeeper may take")
	fs.IntVarP(&c.Retry, "retry", "R", c.Retry, "`attempts` to reach ZooKeeper")
	fs.IntVarP(&c.LockRetry, "lockretry", "r", c.LockRetry, "`retries` of a failed ZooKeeper operation")
	fs.Var(&c.SessionTimeout, "session-timeout", "ZooKeeper session timeout to ask for")
	fs.Var(&c.KillSignal, "kill-signal", "signal for the workload when the lock is lost")
	fs.Var(&c.KillGrace, "kill-grace", "time between --kill-signal and SIGKILL")
	fs.IntVar(&c.BusyExitCode, "busy-exit-code", c.BusyExitCode, "exit `code` when the lock was not acquired")
	fs.Var(&c.MinHold, "min-hold", "hold the lock at least this long, even if the workload ends sooner")
	fs.Var(&c.MaxRuntime, "max-runtime", "stop the workload (exit 124) once it has run this long; 0 for no limit")
	fs.BoolVar(&c.Requeue, "requeue", c.Requeue, "after the workload ends (or the lock is lost), release, back off and contend again, until TERM, INT or QUIT")
	fs.Var(&c.RequeueBackoff, "requeue-backoff", "first wait between rounds of --requeue; doubles after each short round")
	fs.Var(&c.RequeueMax, "requeue-backoff-max", "longest wait between rounds; a round whose workload ran this long starts the backoff over")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "`address` for /healthz, /readyz, /active and /metrics")
	fs.StringVar(&c.ActiveHTTP, "active-http", c.ActiveHTTP, "/active only once a GET of this `URL` answers 200-399 (the workload's own readiness)")
	fs.StringVar(&c.ActiveTCP, "active-tcp", c.ActiveTCP, "/active only once a TCP connection to this `host:port` opens")
	fs.Var(&c.ActivePeriod, "active-period", "time between checks of --active-http or --active-tcp")
	fs.Var(&c.ActiveTimeout, "active-timeout", "time a check may take before it counts as failed")
	fs.IntVar(&c.ActiveFailures, "active-failure-threshold", c.ActiveFailures, "consecutive failed `checks` that take a ready workload off /active")
	fs.StringVar(&c.ActiveLabel, "active-label", c.ActiveLabel, "in Kubernetes, keep this `key=value` label on lockex's own pod while /active answers 200")
	fs.StringVar(&c.HealthURL, "health-url", c.HealthURL, "stop the workload and give the lock up when a GET of this `URL` fails (not 200-399) --health-failure-threshold times in a row (exit 77)")
	fs.StringVar(&c.HealthCmd, "health-cmd", c.HealthCmd, "as --health-url, with this `command` (split into words as a shell would, run without one; healthy on exit 0)")
	fs.Var(&c.HealthPeriod, "health-period", "time between health checks, while the workload runs")
	fs.Var(&c.HealthTimeout, "health-timeout", "time a health check may take before it counts as failed (a command is killed)")
	fs.IntVar(&c.HealthFailures, "health-failure-threshold", c.HealthFailures, "consecutive failed health `checks` that stop the workload")
	fs.StringVar(&c.StandbyURL, "standby-url", c.StandbyURL, "queue for the lock only while a GET of this `URL` passes (200-399), checked every --health-period; leave the queue after --health-failure-threshold failures in a row")
	fs.StringVar(&c.StandbyCmd, "standby-cmd", c.StandbyCmd, "as --standby-url, with this `command` (split as --health-cmd is; fit on exit 0)")
	fs.Var(&c.HealthStart, "health-start-period", "time the workload gets to start: failures before its first passed check are not counted within it")
	fs.BoolVar(&c.DeletionCost, "deletion-cost", c.DeletionCost, "in Kubernetes, keep lockex's own pod's deletion cost high while it holds the lock and low while not, so a ReplicaSet deletes standbys first")
	fs.StringVar(&c.PodName, "pod-name", c.PodName, "the pod's `name`, shown with the holder; the pod --active-label and --deletion-cost patch (default for that: the host name, which is the pod's name)")
	fs.StringVar(&c.PodNamespace, "pod-namespace", c.PodNamespace, "the pod's `namespace`, shown with the holder (the downward API's metadata.namespace)")
	fs.StringVar(&c.PodUID, "pod-uid", c.PodUID, "the pod's `UID` (the downward API's metadata.uid); with --container-name, as PID 1, a restart takes over from its dead earlier incarnation at once")
	fs.StringVar(&c.ContainerName, "container-name", c.ContainerName, "the `name` of lockex's container in its pod (the downward API cannot give it)")
	fs.StringVar(&c.PodIP, "pod-ip", c.PodIP, "the pod's IP `address`, shown with the holder (the downward API's status.podIP)")
	fs.StringVar(&c.ServiceAccount, "serviceaccount-dir", c.ServiceAccount, "`dir` of the service account token, CA and namespace, for --active-label and --deletion-cost")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.ZKUser, "zk-user", c.ZKUser, "ZooKeeper digest auth `user`")
	// The default shown by --help must never be the password from the
	// environment: the flag starts empty, and Parse puts the variable's
	// value back when the flag is not given.
	fs.StringVar(&c.ZKPassword, "zk-password", "", "ZooKeeper digest auth `password` (secret; visible to ps for a moment: prefer LOCKEX_ZK_PASSWORD or --zk-password-file)")
	fs.StringVar(&c.ZKPasswordFile, "zk-password-file", c.ZKPasswordFile, "read the digest password from this `file`")
	fs.BoolVar(&c.ZKACLWorldRead, "zk-acl-world-read", c.ZKACLWorldRead, "with auth, let anyone read lockex's nodes")
	fs.StringVar(&c.ZKTLSCA, "zk-tls-ca", c.ZKTLSCA, "CA `file` for TLS to ZooKeeper")
	fs.StringVar(&c.ZKTLSCert, "zk-tls-cert", c.ZKTLSCert, "client certificate `file`")
	fs.StringVar(&c.ZKTLSKey, "zk-tls-key", c.ZKTLSKey, "client key `file`")
	fs.BoolVar(&c.Subreaper, "subreaper", c.Subreaper, "reap orphaned descendants even when not PID 1")
	fs.StringVar(&c.Install, "install", c.Install, "copy this executable to `DIR`/lockex and exit")
	fs.BoolVar(&c.Status, "status", c.Status, "print who holds the lock and who waits, and exit")
	fs.StringVar(&c.Output, "output", c.Output, "table or json, for --status")
	fs.BoolVar(&c.Version, "version", c.Version, "print the version and exit")
	fs.BoolP("help", "h", false, "show this help")
	return fs
}

func usage(fs *pflag.FlagSet) string {
	return "Usage: lockex [flags] -- command [args...]\n\n" +
		"Runs command while holding a ZooKeeper lock (or one of N leases with -c N).\n" +
		"Every flag can be set as LOCKEX_<FLAG>, e.g. LOCKEX_SESSION_TIMEOUT=10s.\n" +
		"Secrets: LOCKEX_ZK_PASSWORD (or the file named by LOCKEX_ZK_PASSWORD_FILE) and\n" +
		"the key file of LOCKEX_ZK_TLS_KEY; lockex never logs or shows them, and does\n" +
		"not pass LOCKEX_ZK_PASSWORD on to the workload.\n\n" +
		"Flags:\n" + fs.FlagUsages()
}

func configFields() []reflect.StructField {
	return reflect.VisibleFields(reflect.TypeFor[Config]())
}
