package config

import (
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]string{"--", "echo", "hi"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.ZKHosts != "localhost:2181" || c.Concurrent != 1 || !c.Blocking || c.LockTimeout != NoLimit ||
		c.Timeout.D() != 30*time.Second || c.SessionTimeout.D() != 10*time.Second || c.KillGrace.D() != 3*time.Second ||
		c.BusyExitCode != 75 || c.Retry != 1 || c.LockRetry != 1 || c.KillSignal.String() != "TERM" || c.MaxRuntime != 0 ||
		c.Requeue || c.RequeueBackoff.D() != time.Second || c.RequeueMax.D() != time.Minute {
		t.Errorf("defaults: %+v", c)
	}
	if want := "/lockex/" + DerivedID([]string{"echo", "hi"}); c.Path != want {
		t.Errorf("Path = %q, want %q", c.Path, want)
	}
	if strings.Join(c.Command, " ") != "echo hi" {
		t.Errorf("Command = %q", c.Command)
	}
}

func TestPrecedence(t *testing.T) {
	env := []string{"ZKHOSTS=old:1", "LOCKEX_CONCURRENT=3", "LOCKEX_BLOCKING=false", "LOCKEX_LOCKTIMEOUT=1.5"}
	c, err := Parse([]string{"cmd"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.ZKHosts != "old:1" || c.Concurrent != 3 || c.Blocking || c.LockTimeout.D() != 1500*time.Millisecond {
		t.Errorf("env not applied: %+v", c)
	}
	env = append(env, "LOCKEX_ZKHOSTS=new:2")
	c, err = Parse([]string{"-c", "5", "--blocking", "-t", "250ms", "--", "cmd"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.ZKHosts != "new:2" || c.Concurrent != 5 || !c.Blocking || c.LockTimeout.D() != 250*time.Millisecond {
		t.Errorf("flags must beat env, LOCKEX_ZKHOSTS beat ZKHOSTS: %+v", c)
	}
	c, err = Parse([]string{"--no-blocking", "cmd", "--not-ours", "-c", "9"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Blocking || c.Concurrent != 1 || strings.Join(c.Command, " ") != "cmd --not-ours -c 9" {
		t.Errorf("flags after the command belong to it: %+v", c)
	}
	// An empty variable is the default, as caarlos0/env treats it.
	if c, err = Parse([]string{"cmd"}, []string{"LOCKEX_CONCURRENT=", "LOCKEX_LOCKPATH="}, io.Discard); err != nil || c.Concurrent != 1 || c.Path[:8] != "/lockex/" {
		t.Errorf("empty variables: %+v, %v", c, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  []string
		want string // in the message
	}{
		{nil, nil, "no command"},
		{[]string{"-c", "0", "x"}, nil, `--concurrent "0"`},
		{[]string{"x"}, []string{"LOCKEX_CONCURRENT=0"}, `LOCKEX_CONCURRENT "0"`},
		{[]string{"x"}, []string{"LOCKEX_CONCURRENT=many"}, `LOCKEX_CONCURRENT="many"`},
		{[]string{"-t", "soon", "x"}, nil, `"soon"`},
		{[]string{"-t", "-1", "x"}, nil, `"-1"`},
		{[]string{"--max-runtime", "-1s", "x"}, nil, `"-1s" for "--max-runtime"`},
		{[]string{"x"}, []string{"LOCKEX_MAX_RUNTIME=an hour"}, `LOCKEX_MAX_RUNTIME="an hour"`},
		{[]string{"x"}, []string{"LOCKEX_REQUEUE=often"}, `LOCKEX_REQUEUE="often"`},
		{[]string{"--requeue", "--requeue-backoff", "0", "x"}, nil, `--requeue-backoff "0s": want more than 0`},
		{[]string{"--requeue-backoff", "2m", "x"}, nil, `--requeue-backoff-max "1m0s": want at least --requeue-backoff (2m0s)`},
		{[]string{"x"}, []string{"LOCKEX_REQUEUE_BACKOFF_MAX=500ms"}, `LOCKEX_REQUEUE_BACKOFF_MAX "500ms": want at least --requeue-backoff (1s)`},
		{[]string{"x"}, []string{"LOCKEX_SESSION_TIMEOUT=10 s"}, `LOCKEX_SESSION_TIMEOUT="10 s"`},
		{[]string{"--kill-signal", "STOP", "x"}, nil, `"STOP"`},
		{[]string{"--kill-grace", "5.5s", "x"}, nil, `--kill-grace "5.5s": want less than 5.5s, 55% of --session-timeout (10s)`},
		{[]string{"--log-format", "xml", "x"}, nil, `--log-format "xml"`},
		{[]string{"--log-level", "loud", "x"}, nil, `--log-level "loud"`},
		{[]string{"x"}, []string{"LOCKEX_BLOCKING=maybe"}, `LOCKEX_BLOCKING="maybe"`},
		{[]string{"--busy-exit-code", "256", "x"}, nil, `"256"`},
		{[]string{"-z", "a:2181,,b", "x"}, nil, "empty host"},
		{[]string{"-z", "a:99999", "x"}, nil, `port "99999"`},
		{[]string{"-z", "::1:2181", "x"}, nil, "brackets"},
		{[]string{"-z", "a:2181/app/", "x"}, nil, "chroot"},
		{[]string{"-p", "a//b", "x"}, nil, `lockpath "a//b"`},
		{[]string{"-p", "a/../b", "x"}, nil, `".."`},
		{[]string{"-p", "zookeeper", "x"}, nil, "ZooKeeper's own"},
		{[]string{"-i", "a/b", "x"}, nil, `lockid "a/b"`},
		{[]string{"-i", "bad\x01id", "x"}, nil, "U+0001"},
		{[]string{"--bogus", "x"}, nil, "bogus"},
		{[]string{"--zk-user", "u", "x"}, nil, "needs a password"},
		{[]string{"--zk-password", "s3cret", "x"}, nil, "--zk-user"},
		{[]string{"--zk-user", "a:b", "--zk-password", "p", "x"}, nil, "no colon"},
		{[]string{"--zk-acl-world-read", "x"}, nil, "without auth"},
		{[]string{"--zk-user", "u", "--zk-password-file", "/nonexistent/pw", "x"}, nil, "--zk-password-file: open /nonexistent/pw"},
		{[]string{"--zk-tls-cert", "c.pem", "x"}, nil, "--zk-tls-cert and --zk-tls-key together"},
		{[]string{"--zk-tls-ca", "/nonexistent/ca.pem", "x"}, nil, "--zk-tls-ca: open /nonexistent/ca.pem"},
		{[]string{"--http-addr", ":1", "--active-http", "127.0.0.1:8080/ready", "x"}, nil, `--active-http: "127.0.0.1:8080/ready": want an http:// or https:// URL`},
		{[]string{"--http-addr", ":1", "x"}, []string{"LOCKEX_ACTIVE_TCP=localhost"}, `LOCKEX_ACTIVE_TCP: "localhost"`},
		{[]string{"--http-addr", ":1", "--active-tcp", "127.0.0.1:8080", "--active-http", "http://127.0.0.1:8080/", "x"}, nil, "not together with --active-http"},
		{[]string{"--active-tcp", "127.0.0.1:8080", "x"}, nil, "which only --http-addr serves"},
		{[]string{"--active-period", "0", "x"}, nil, `--active-period "0s": want more than 0`},
		{[]string{"x"}, []string{"LOCKEX_ACTIVE_TIMEOUT=0"}, `LOCKEX_ACTIVE_TIMEOUT "0s"`},
		{[]string{"--active-failure-threshold", "0", "x"}, nil, `--active-failure-threshold "0": want at least 1`},
		{[]string{"--active-label", "lockex.io/active", "x"}, nil, `--active-label "lockex.io/active": want key=value`},
		{[]string{"--health-url", "localhost:8080/health", "x"}, nil, `--health-url: "localhost:8080/health": want an http:// or https:// URL`},
		{[]string{"--health-url", "http://127.0.0.1/", "--health-cmd", "true", "x"}, nil, `--health-cmd "true": want not together with --health-url`},
		{[]string{"--health-cmd", "curl -f x || exit 1", "x"}, nil, `--health-cmd: "curl -f x || exit 1": '|' is shell syntax`},
		{[]string{"x"}, []string{"LOCKEX_HEALTH_CMD=check 'it"}, `LOCKEX_HEALTH_CMD: "check 'it": unterminated ' quote`},
		{[]string{"--health-period", "0", "x"}, nil, `--health-period "0s": want more than 0`},
		{[]string{"--health-cmd", "no-such-check-command --now", "x"}, nil, `--health-cmd "no-such-check-command --now": command not found`},
		{[]string{"--health-timeout", "-1", "x"}, nil, `--health-timeout`},
		{[]string{"--standby-url", "localhost:8080/fit", "x"}, nil, `--standby-url: "localhost:8080/fit": want an http:// or https:// URL`},
		{[]string{"--standby-url", "http://127.0.0.1/", "--standby-cmd", "true", "x"}, nil, `--standby-cmd "true": want not together with --standby-url`},
		{[]string{"--standby-cmd", "test -f a; true", "x"}, nil, `--standby-cmd: "test -f a; true": ';' is shell syntax`},
		{[]string{"x"}, []string{"LOCKEX_STANDBY_CMD=no-such-standby-check"}, `LOCKEX_STANDBY_CMD "no-such-standby-check": command not found`},
		{[]string{"x"}, []string{"LOCKEX_HEALTH_FAILURE_THRESHOLD=0"}, `LOCKEX_HEALTH_FAILURE_THRESHOLD "0": want at least 1`},
		{[]string{"x"}, []string{"LOCKEX_HEALTH_START_PERIOD=soon"}, `LOCKEX_HEALTH_START_PERIOD="soon"`},
		{[]string{"--active-label", "Lockex.io/active=true", "x"}, nil, `prefix "Lockex.io" is not a DNS subdomain`},
		{[]string{"--active-label", "active-=true", "x"}, nil, `label name "active-"`},
		{[]string{"x"}, []string{"LOCKEX_ACTIVE_LABEL=active=yes please"}, `LOCKEX_ACTIVE_LABEL "active=yes please": label value`},
		{[]string{"--active-label", "active=true", "x"}, nil, "--active-label needs the Kubernetes API: KUBERNETES_SERVICE_HOST"},
		{[]string{"--active-label", "active=true", "--serviceaccount-dir", "/nonexistent", "x"}, []string{"KUBERNETES_SERVICE_HOST=127.0.0.1", "KUBERNETES_SERVICE_PORT=6443"},
			"--active-label needs the Kubernetes API: the pod's namespace: open /nonexistent/namespace"},
		{[]string{"--deletion-cost", "x"}, nil, "--deletion-cost needs the Kubernetes API: KUBERNETES_SERVICE_HOST"},
		{[]string{"x"}, []string{"LOCKEX_DELETION_COST=yes"}, `LOCKEX_DELETION_COST="yes"`},
	} {
		t.Run(strings.Join(append(tc.args, tc.env...), " "), func(t *testing.T) {
			_, err := Parse(tc.args, tc.env, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %s", err, tc.want)
			}
		})
	}
}

func TestHosts(t *testing.T) {
	servers, chroot, err := ParseHosts("zk1,zk2:2182,[::1],[fe80::1]:3000/a/b")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(servers, " "); got != "zk1:2181 zk2:2182 [::1]:2181 [fe80::1]:3000" || chroot != "/a/b" {
		t.Errorf("servers %q chroot %q", got, chroot)
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"1.5": 1500 * time.Millisecond, "0": 0, "1500ms": 1500 * time.Millisecond, "2m": 2 * time.Minute, "30": 30 * time.Second} {
		if d, err := ParseDuration(in); err != nil || d.D() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
}

func TestDerivedID(t *testing.T) {
	// The argv boundaries matter: these two commands must not share a lock.
	a, b := DerivedID([]string{"a", "b c"}), DerivedID([]string{"a b", "c"})
	if a == b || len(a) != 16 {
		t.Errorf("DerivedID: %q %q", a, b)
	}
	// From printf 'echo\0hi' | sha256sum: a fixed value keeps the id
	// stable across releases, so a mixed fleet shares the lock.
	if got := DerivedID([]string{"echo", "hi"}); got != "f956585a54743d20" {
		t.Errorf("DerivedID(echo hi) = %s", got)
	}
}

// TestPassword: the password comes from the flag, the variable or a file
// (without its newline), and --help never shows the variable's value.
func TestPassword(t *testing.T) {
	file := t.TempDir() + "/pw"
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--zk-user", "u", "--zk-password", "from-flag", "x"}, []string{"LOCKEX_ZK_PASSWORD=from-env"}, "from-flag"},
		{[]string{"--zk-user", "u", "x"}, []string{"LOCKEX_ZK_PASSWORD=from-env"}, "from-env"},
		{[]string{"--zk-user", "u", "--zk-password-file", file, "x"}, nil, "from-file"},
	} {
		c, err := Parse(tc.args, tc.env, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.ZKPassword != tc.want {
			t.Errorf("%q %q: password %q, want %q", tc.args, tc.env, c.ZKPassword, tc.want)
		}
	}
	var help strings.Builder
	if _, err := Parse([]string{"--help"}, []string{"LOCKEX_ZK_PASSWORD=hunter2"}, &help); !errors.Is(err, ErrHelp) {
		t.Fatal(err)
	}
	if strings.Contains(help.String(), "hunter2") {
		t.Errorf("--help shows the password:\n%s", help.String())
	}
	if !strings.Contains(help.String(), "Secrets: LOCKEX_ZK_PASSWORD") {
		t.Errorf("--help does not say which variables hold secrets:\n%s", help.String())
	}
}

// TestRequestedLogFormat: an error elsewhere in the configuration is
// reported in the log format asked for, whenever that value parsed.
func TestRequestedLogFormat(t *testing.T) {
	for _, tc := range []struct {
		args, env []string
		want      string
	}{
		{[]string{"-c", "abc", "--log-format", "json", "--", "x"}, nil, "json"},
		{[]string{"--bogus", "--log-format=json", "x"}, nil, "json"},
		{[]string{"-c", "0", "x"}, []string{"LOCKEX_LOG_FORMAT=json"}, "json"},
		{[]string{"--log-format", "text", "x"}, []string{"LOCKEX_LOG_FORMAT=json"}, "text"},
		{[]string{"--log-format", "xml", "x"}, []string{"LOCKEX_LOG_FORMAT=json"}, "text"},
		{[]string{"--", "cmd", "--log-format", "json"}, nil, "text"},
		{nil, []string{"LOCKEX_CONCURRENT=abc"}, "text"},
	} {
		if got := RequestedLogFormat(tc.args, tc.env); got != tc.want {
			t.Errorf("args %q env %q: %q, want %q", tc.args, tc.env, got, tc.want)
		}
	}
}

// TestActiveCheck: the workload's readiness check, from flags or variables,
// with the kubelet's defaults of one check a second, one second each.
func TestActiveCheck(t *testing.T) {
	c, err := Parse([]string{"--", "x"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.ActiveCheck != nil || c.ActivePeriod.D() != time.Second || c.ActiveTimeout.D() != time.Second || c.ActiveFailures != 3 {
		t.Errorf("defaults: check %v, period %s, timeout %s, failures %d", c.ActiveCheck, c.ActivePeriod, c.ActiveTimeout, c.ActiveFailures)
	}
	env := []string{"LOCKEX_HTTP_ADDR=:9", "LOCKEX_ACTIVE_HTTP=http://127.0.0.1:8080/ready", "LOCKEX_ACTIVE_PERIOD=250ms", "LOCKEX_ACTIVE_FAILURE_THRESHOLD=1"}
	if c, err = Parse([]string{"x"}, env, io.Discard); err != nil {
		t.Fatal(err)
	}
	if c.ActiveCheck == nil || c.ActiveCheck.String() != "GET http://127.0.0.1:8080/ready" || c.ActivePeriod.D() != 250*time.Millisecond || c.ActiveFailures != 1 {
		t.Errorf("from the environment: check %v, period %s, failures %d", c.ActiveCheck, c.ActivePeriod, c.ActiveFailures)
	}
	if c, err = Parse([]string{"--http-addr", ":9", "--active-tcp", "[::1]:5432", "--active-timeout", "2", "x"}, nil, io.Discard); err != nil {
		t.Fatal(err)
	}
	if c.ActiveCheck == nil || c.ActiveCheck.String() != "TCP [::1]:5432" || c.ActiveTimeout.D() != 2*time.Second {
		t.Errorf("tcp: check %v, timeout %s", c.ActiveCheck, c.ActiveTimeout)
	}
}

// TestHealthCheck: defaults as a Kubernetes probe's; --health-url and
// --health-cmd from flags or the environment.
func TestHealthCheck(t *testing.T) {
	c, err := Parse([]string{"--", "x"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HealthCheck != nil || c.HealthCommand != nil || c.HealthPeriod.D() != 10*time.Second || c.HealthTimeout.D() != time.Second ||
		c.HealthFailures != 3 || c.HealthStart != 0 {
		t.Errorf("defaults: %v %q, period %s, timeout %s, failures %d, start %s", c.HealthCheck, c.HealthCommand, c.HealthPeriod, c.HealthTimeout, c.HealthFailures, c.HealthStart)
	}
	env := []string{"LOCKEX_HEALTH_URL=http://127.0.0.1:8080/health", "LOCKEX_HEALTH_PERIOD=2", "LOCKEX_HEALTH_FAILURE_THRESHOLD=1", "LOCKEX_HEALTH_START_PERIOD=1m"}
	if c, err = Parse([]string{"x"}, env, io.Discard); err != nil {
		t.Fatal(err)
	}
	if c.HealthCheck == nil || c.HealthCheck.String() != "GET http://127.0.0.1:8080/health" || c.HealthPeriod.D() != 2*time.Second ||
		c.HealthFailures != 1 || c.HealthStart.D() != time.Minute {
		t.Errorf("from the environment: %v, period %s, failures %d, start %s", c.HealthCheck, c.HealthPeriod, c.HealthFailures, c.HealthStart)
	}
	if c, err = Parse([]string{"--health-cmd", `sh -c 'test -f /tmp/ok'`, "--health-timeout", "500ms", "x"}, nil, io.Discard); err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.HealthCommand, "|") != "sh|-c|test -f /tmp/ok" || !strings.HasSuffix(c.HealthCommandPath, "/sh") || c.HealthCheck != nil || c.HealthTimeout.D() != 500*time.Millisecond {
		t.Errorf("command: %q, %v, timeout %s", c.HealthCommand, c.HealthCheck, c.HealthTimeout)
	}
}

// TestStandbyCheck: --standby-url and --standby-cmd from flags or the
// environment; the timing is the health check's.
func TestStandbyCheck(t *testing.T) {
	c, err := Parse([]string{"--", "x"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.StandbyCheck != nil || c.StandbyCommand != nil {
		t.Errorf("defaults: %v %q", c.StandbyCheck, c.StandbyCommand)
	}
	if c, err = Parse([]string{"x"}, []string{"LOCKEX_STANDBY_URL=http://127.0.0.1:9000/fit"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if c.StandbyCheck == nil || c.StandbyCheck.String() != "GET http://127.0.0.1:9000/fit" || c.HealthCheck != nil {
		t.Errorf("from the environment: %v, health %v", c.StandbyCheck, c.HealthCheck)
	}
	if c, err = Parse([]string{"--standby-cmd", `test -f '/data/ready'`, "x"}, nil, io.Discard); err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.StandbyCommand, "|") != "test|-f|/data/ready" || !strings.HasSuffix(c.StandbyCommandPath, "/test") || c.StandbyCheck != nil || c.HealthCommand != nil {
		t.Errorf("command: %q at %q, %v", c.StandbyCommand, c.StandbyCommandPath, c.StandbyCheck)
	}
}

// TestActiveLabel: --active-label finds the API server, the namespace and
// the token as a pod's service account gives them; the pod is --pod-name,
// else the host name.
func TestActiveLabel(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"ca.crt":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
		"token":     []byte("t"),
		"namespace": []byte("team-a\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"KUBERNETES_SERVICE_HOST=127.0.0.1", "KUBERNETES_SERVICE_PORT=443", "LOCKEX_SERVICEACCOUNT_DIR=" + dir}
	c, err := Parse([]string{"--active-label", "lockex.io/active=true", "--pod-name", "web-0", "x"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if pl := c.PodLabel; pl == nil || pl.Key != "lockex.io/active" || pl.Value != "true" || pl.Pod != "web-0" ||
		pl.Namespace != "team-a" || pl.Server != "https://127.0.0.1:443" {
		t.Errorf("%+v", c.PodLabel)
	}
	host, _ := os.Hostname()
	if c, err = Parse([]string{"x"}, append(env, "LOCKEX_ACTIVE_LABEL=active="), io.Discard); err != nil || c.PodLabel.Pod != host || c.PodLabel.Value != "" {
		t.Errorf("no --pod-name: %+v, %v; want the host name %q", c.PodLabel, err, host)
	}
	// --status and --version touch no pod.
	if c, err = Parse([]string{"--status", "-i", "x", "--active-label", "a=b"}, nil, io.Discard); err != nil || c.PodLabel != nil {
		t.Errorf("--status: %+v, %v", c.PodLabel, err)
	}

	// --deletion-cost alone patches the pod and labels nothing; with
	// --active-label, both go in the same patch.
	if c, err = Parse([]string{"--deletion-cost", "--pod-name", "web-0", "x"}, env, io.Discard); err != nil ||
		c.PodLabel == nil || !c.PodLabel.DeletionCost || c.PodLabel.Key != "" || c.PodLabel.Pod != "web-0" {
		t.Errorf("--deletion-cost: %+v, %v", c.PodLabel, err)
	}
	if c, err = Parse([]string{"--active-label", "a=b", "x"}, append(env, "LOCKEX_DELETION_COST=true"), io.Discard); err != nil ||
		c.PodLabel == nil || !c.PodLabel.DeletionCost || c.PodLabel.Key != "a" {
		t.Errorf("--active-label and LOCKEX_DELETION_COST: %+v, %v", c.PodLabel, err)
	}
	if c, err = Parse([]string{"--active-label", "a=b", "x"}, env, io.Discard); err != nil || c.PodLabel.DeletionCost {
		t.Errorf("--active-label alone sets the deletion cost: %+v, %v", c.PodLabel, err)
	}
}

// TestIdentity: the pod's identity comes from the variables the chart sets
// from the downward API; the pod UID and the container name go together,
// or the takeover of a dead earlier incarnation would be off unsaid.
func TestIdentity(t *testing.T) {
	env := []string{"LOCKEX_POD_NAMESPACE=prod", "LOCKEX_POD_NAME=web-0", "LOCKEX_POD_UID=3f1e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b", "LOCKEX_CONTAINER_NAME=app", "LOCKEX_POD_IP=192.0.2.3"}
	c, err := Parse([]string{"cmd"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	id := c.Identity("v1.2.3")
	if id.Host != host || id.PID != os.Getpid() || id.Version != "v1.2.3" || id.Namespace != "prod" || id.Pod != "web-0" ||
		id.UID != "3f1e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b" || id.Container != "app" || id.IP != "192.0.2.3" {
		t.Errorf("Identity = %+v", id)
	}
	if c, err := Parse([]string{"--pod-ip", "FD00:0::1", "cmd"}, nil, io.Discard); err != nil || c.Identity("v").IP != "fd00::1" {
		t.Errorf("--pod-ip FD00:0::1: %v, want it written as fd00::1", err)
	}
	for _, tc := range []struct {
		args, env []string
		want      string
	}{
		{[]string{"--pod-uid", "u", "cmd"}, nil, `--container-name "": want --pod-uid and --container-name together`},
		{[]string{"cmd"}, []string{"LOCKEX_CONTAINER_NAME=app"}, `LOCKEX_CONTAINER_NAME "app": want --pod-uid and --container-name together`},
		{[]string{"cmd"}, []string{"LOCKEX_POD_IP=10.1.2"}, `LOCKEX_POD_IP "10.1.2": want an IPv4 or IPv6 address, as the downward API's status.podIP gives it`},
		{[]string{"--pod-ip", "fe80::1%eth0", "cmd"}, nil, `--pod-ip "fe80::1%eth0": want an IPv4 or IPv6 address, as the downward API's status.podIP gives it`},
	} {
		if _, err := Parse(tc.args, tc.env, io.Discard); err == nil || err.Error() != tc.want {
			t.Errorf("Parse(%q, %q) = %v, want %s", tc.args, tc.env, err, tc.want)
		}
	}
}
