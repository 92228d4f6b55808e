// Package config turns lockex's command line and environment into one
// checked Config. A flag beats its LOCKEX_ variable, which beats the default;
// every value that does not parse, and every combination that cannot work,
// is an error here, before anything touches ZooKeeper.
package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/caarlos0/env/v10"
	"github.com/spf13/pflag"

	"github.com/lockex/lockex/internal/activecheck"
	"github.com/lockex/lockex/internal/podlabel"
)

// EnvPrefix is the prefix of every variable that sets a flag.
const EnvPrefix = "LOCKEX_"

// ErrHelp is returned by Parse after it printed the usage for --help.
var ErrHelp = errors.New("config: help requested")

// Config is what one lockex run was asked to do. The fields with env tags
// are the flags of docs/design.md §1; the rest Parse derives from them.
type Config struct {
	ZKHosts        string   `env:"ZKHOSTS" envDefault:"localhost:2181"`
	LockPath       string   `env:"LOCKPATH" envDefault:"lockex"`
	LockID         string   `env:"LOCKID"`
	Concurrent     int      `env:"CONCURRENT" envDefault:"1"`
	Blocking       bool     `env:"BLOCKING" envDefault:"true"`
	LockTimeout    Duration `env:"LOCKTIMEOUT"`
	Timeout        Duration `env:"TIMEOUT" envDefault:"30s"`
	Retry          int      `env:"RETRY" envDefault:"1"`
	LockRetry      int      `env:"LOCKRETRY" envDefault:"1"`
	SessionTimeout Duration `env:"SESSION_TIMEOUT" envDefault:"10s"`
	KillSignal     Signal   `env:"KILL_SIGNAL" envDefault:"TERM"`
	KillGrace      Duration `env:"KILL_GRACE" envDefault:"3s"`
	BusyExitCode   int      `env:"BUSY_EXIT_CODE" envDefault:"75"`
	MinHold        Duration `env:"MIN_HOLD" envDefault:"0"`
	MaxRuntime     Duration `env:"MAX_RUNTIME" envDefault:"0"`
	Requeue        bool     `env:"REQUEUE"`
	RequeueBackoff Duration `env:"REQUEUE_BACKOFF" envDefault:"1s"`
	RequeueMax     Duration `env:"REQUEUE_BACKOFF_MAX" envDefault:"1m"`
	HTTPAddr       string   `env:"HTTP_ADDR"`
	ActiveHTTP     string   `env:"ACTIVE_HTTP"`
	ActiveTCP      string   `env:"ACTIVE_TCP"`
	ActivePeriod   Duration `env:"ACTIVE_PERIOD" envDefault:"1s"`
	ActiveTimeout  Duration `env:"ACTIVE_TIMEOUT" envDefault:"1s"`
	ActiveFailures int      `env:"ACTIVE_FAILURE_THRESHOLD" envDefault:"3"`
	ActiveLabel    string   `env:"ACTIVE_LABEL"`
	HealthURL      string   `env:"HEALTH_URL"`
	HealthCmd      string   `env:"HEALTH_CMD"`
	HealthPeriod   Duration `env:"HEALTH_PERIOD" envDefault:"10s"`
	HealthTimeout  Duration `env:"HEALTH_TIMEOUT" envDefault:"1s"`
	HealthFailures int      `env:"HEALTH_FAILURE_THRESHOLD" envDefault:"3"`
	HealthStart    Duration `env:"HEALTH_START_PERIOD" envDefault:"0"`
	StandbyURL     string   `env:"STANDBY_URL"`
	StandbyCmd     string   `env:"STANDBY_CMD"`
	DeletionCost   bool     `env:"DELETION_COST"`
	PodName        string   `env:"POD_NAME"`
	PodNamespace   string   `env:"POD_NAMESPACE"`
	PodUID         string   `env:"POD_UID"`
	ContainerName  string   `env:"CONTAINER_NAME"`
	PodIP          string   `env:"POD_IP"`
	ServiceAccount string   `env:"SERVICEACCOUNT_DIR" envDefault:"/var/run/secrets/kubernetes.io/serviceaccount"`
	LogFormat      string   `env:"LOG_FORMAT" envDefault:"text"`
	LogLevel       string   `env:"LOG_LEVEL" envDefault:"info"`
	ZKUser         string   `env:"ZK_USER"`
	ZKPassword     string   `env:"ZK_PASSWORD"`
	ZKPasswordFile string   `env:"ZK_PASSWORD_FILE"`
	ZKACLWorldRead bool     `env:"ZK_ACL_WORLD_READ"`
	ZKTLSCA        string   `env:"ZK_TLS_CA"`
	ZKTLSCert      string   `env:"ZK_TLS_CERT"`
	ZKTLSKey       string   `env:"ZK_TLS_KEY"`
	Subreaper      bool     `env:"SUBREAPER"`
	Install        string   `env:"INSTALL"`
	Status         bool     `env:"STATUS"`
	Output         string   `env:"OUTPUT" envDefault:"table"`
	Version        bool     `env:"VERSION"`

	// Command is the workload's argv.
	Command []string `env:"-"`
	// Servers are the ZooKeeper host:port pairs and Chroot the path prefix
	// that --zkhosts ended with ("" for none).
	Servers []string `env:"-"`
	Chroot  string   `env:"-"`
	// Path is P, the lock's znode as the client sees it (inside Chroot).
	Path string `env:"-"`
	// TLS is the configuration for TLS to ZooKeeper, nil for plain TCP.
	TLS *tls.Config `env:"-"`
	// ActiveCheck is the workload's readiness check behind /active, from
	// --active-http or --active-tcp; nil without one.
	ActiveCheck activecheck.Probe `env:"-"`
	// HealthCheck is the workload's health check from --health-url, nil
	// without one. HealthCommand is --health-cmd's argv, nil without it:
	// its probe needs the reaper, which the app makes; HealthCommandPath
	// is its first word found through PATH.
	HealthCheck       activecheck.Probe `env:"-"`
	HealthCommand     []string          `env:"-"`
	HealthCommandPath string            `env:"-"`
	// StandbyCheck, StandbyCommand and StandbyCommandPath are the same
	// for the standby's own check before and while it queues
	// (--standby-url, --standby-cmd; docs/design.md §4.7).
	StandbyCheck       activecheck.Probe `env:"-"`
	StandbyCommand     []string          `env:"-"`
	StandbyCommandPath string            `env:"-"`
	// PodLabel is what --active-label and --deletion-cost keep on the pod
	// and how to reach the API server; nil without either.
	PodLabel *podlabel.Config `env:"-"`

	// source names where each flag's value came from, for error messages.
	source map[string]string
	// environ is the environment Parse read, for what lockex reads beyond
	// its own variables (KUBERNETES_SERVICE_HOST).
	environ map[string]string
}

func (c *Config) getenv(key string) string { return c.environ[key] }

// Parse reads args (without the program name) over environ (KEY=VALUE
// pairs, as os.Environ gives them) and checks the result. Usage goes to
// usageOut for --help; errors name the flag or variable and the bad value.
func Parse(args, environ []string, usageOut io.Writer) (*Config, error) {
	vars := envMap(environ)
	c := &Config{LockTimeout: NoLimit, source: map[string]string{}, environ: vars}
	if err := env.ParseWithOptions(c, env.Options{
		Environment: vars,
		Prefix:      EnvPrefix,
		OnSet: func(key string, _ any, isDefault bool) {
			// The library reports unset variables too; an empty one is unset.
			if !isDefault && vars[key] != "" {
				c.source[flagName(key)] = key
			}
		},
	}); err != nil {
		return nil, envError(err, vars)
	}

	envPassword := c.ZKPassword
	fs := c.flags()
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if help, _ := fs.GetBool("help"); help {
		fmt.Fprint(usageOut, usage(fs))
		return nil, ErrHelp
	}
	fs.Visit(func(f *pflag.Flag) { c.source[f.Name] = "--" + f.Name })
	if !fs.Changed("zk-password") {
		c.ZKPassword = envPassword
	}
	// The flag's value shares memory with the process's argv, which the
	// app overwrites so that ps does not show the password.
	c.ZKPassword = strings.Clone(c.ZKPassword)
	if fs.Changed("no-blocking") {
		nb, _ := fs.GetBool("no-blocking")
		c.Blocking = !nb
	}
	c.Command = fs.Args()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// LockWait is how long to wait for the lock, with --locktimeout's meaning
// (NoLimit for ever, 0 one look): --no-blocking is one look.
func (c *Config) LockWait() time.Duration {
	if !c.Blocking {
		return 0
	}
	return c.LockTimeout.D()
}

// envMap turns KEY=VALUE pairs into a map, with ZKHOSTS, the original
// tool's variable, standing in for LOCKEX_ZKHOSTS when that is not set.
func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	if _, ok := m[EnvPrefix+"ZKHOSTS"]; !ok {
		if v, ok := m["ZKHOSTS"]; ok {
			m[EnvPrefix+"ZKHOSTS"] = v
		}
	}
	return m
}

// envError names the variable and the value that did not parse; the
// library's own message names only the Go field.
func envError(err error, vars map[string]string) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) || len(agg.Errors) == 0 {
		return err
	}
	var msgs []string
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			key := EnvPrefix + envKey(pe.Name)
			msgs = append(msgs, fmt.Sprintf("%s=%q: %v", key, vars[key], pe.Err))
			continue
		}
		msgs = append(msgs, e.Error())
	}
	return errors.New(strings.Join(msgs, "; "))
}

// flagName maps LOCKEX_SESSION_TIMEOUT to session-timeout.
func flagName(envKey string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(envKey, EnvPrefix)), "_", "-")
}

// envKey maps a Config field name to its env tag.
func envKey(field string) string {
	for _, f := range configFields() {
		if f.Name == field {
			return f.Tag.Get("env")
		}
	}
	return strings.ToUpper(field)
}

// name is how an error message should call a flag: by the variable that set
// it, or else by the flag.
func (c *Config) name(flag string) string {
	if s, ok := c.source[flag]; ok {
		return s
	}
	return "--" + flag
}

// IsMode reports whether lockex runs a mode that needs no command.
func (c *Config) IsMode() bool {
	return c.Install != "" || c.Status || c.Version
}

func oneOf(v string, allowed ...string) bool { return slices.Contains(allowed, v) }

// RequestedLogFormat is the log format that args and environ ask for, so
// that an error in the rest of them is reported in it: the last
// --log-format before "--", else LOCKEX_LOG_FORMAT, when it names a format;
// "text" otherwise. It never fails: flags it does not know are skipped.
func RequestedLogFormat(args, environ []string) string {
	format := envMap(environ)[EnvPrefix+"LOG_FORMAT"]
	fs := pflag.NewFlagSet("lockex", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.ParseErrorsAllowlist.UnknownFlags = true
	fs.StringVar(&format, "log-format", format, "")
	_ = fs.Parse(args)
	if oneOf(format, "text", "json") {
		return format
	}
	return "text"
}
