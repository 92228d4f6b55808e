// Package activecheck asks the running workload whether it serves, the way
// the kubelet's httpGet, tcpSocket and exec probes ask a container. lockex
// asks it two questions with it: readiness (--active-http, --active-tcp),
// so that /active turns 200 when the workload answers rather than when its
// process starts (docs/design.md §8), and health (--health-url,
// --health-cmd), whose failures, threshold times in a row, make the
// supervisor stop the workload and give the lock up. The package only
// observes and counts; what a failure means is its callers' to decide.
package activecheck

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// Probe is one look at the workload; nil means it serves.
type Probe interface {
	Check(ctx context.Context) error
	String() string
}

// bodyMax is how much of a response body is read, as the kubelet reads at
// most 10 KiB: enough to let the server finish writing, never a stream.
const bodyMax = 10 << 10

type httpProbe struct {
	url string
	// shown is url with any password replaced, for logs, probe bodies and
	// errors: the check's state is shown to anyone who can read /active.
	shown  string
	client *http.Client
}

// HTTP returns a probe that GETs rawURL (http or https). A status from 200
// to 399 passes, once the body (its first bodyMax bytes) is read within
// the check's time; redirects are not followed. As the kubelet does, an https
// server's certificate is not verified (the check is of the workload's own
// readiness, on its own address), and no proxy from the environment is
// used.
func HTTP(rawURL string) (Probe, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("%q: want an http:// or https:// URL", rawURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q: no host", shown(rawURL, u))
	}
	if p := u.Port(); p != "" {
		if _, err := parsePort(p); err != nil {
			return nil, fmt.Errorf("%q: %w", shown(rawURL, u), err)
		}
	}
	transport := &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet's httpGet probe
	}
	client := &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return &httpProbe{url: u.String(), shown: u.Redacted(), client: client}, nil
}

// shown is rawURL as an error names it: as given, so the user finds the
// value they wrote, unless it carries a password.
func shown(rawURL string, u *url.URL) string {
	if _, ok := u.User.Password(); ok {
		return u.Redacted()
	}
	return rawURL
}

func (p *httpProbe) Check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "lockex-active-check")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, bodyMax))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %s", p.shown, resp.Status)
	}
	if err != nil {
		// A workload that sends its status and hangs in its body is no
		// more healthy than one that does not answer (the kubelet's
		// probe fails it too): the check has not ended by its timeout.
		return fmt.Errorf("GET %s: %s, then: %w", p.shown, resp.Status, err)
	}
	return nil
}

func (p *httpProbe) String() string { return "GET " + p.shown }

type tcpProbe struct{ addr string }

// TCP returns a probe that passes when a TCP connection to addr (host:port)
// opens; the connection is closed at once.
func TCP(addr string) (Probe, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", addr, err)
	}
	if host == "" {
		return nil, fmt.Errorf("%q: no host (give 127.0.0.1:%s for the workload in the same network namespace)", addr, port)
	}
	if _, err := parsePort(port); err != nil {
		return nil, fmt.Errorf("%q: %w", addr, err)
	}
	return &tcpProbe{addr: addr}, nil
}

func (p *tcpProbe) Check(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

func (p *tcpProbe) String() string { return "TCP " + p.addr }

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q: want 1 to 65535", s)
	}
	return n, nil
}

// Config is how often and how patiently to check, as a Kubernetes probe's
// periodSeconds, timeoutSeconds and failureThreshold.
type Config struct {
	Probe   Probe
	Period  time.Duration
	Timeout time.Duration
	// FailureThreshold consecutive failures take a ready workload back to
	// not ready; one success makes it ready.
	FailureThreshold int
	// StartPeriod is the time a new workload gets to come up, as Docker's
	// HEALTHCHECK --start-period: failures within it after the workload
	// was seen to start are reported but not counted, until one check
	// passes; from then on, or once it is over, every failure counts.
	StartPeriod time.Duration
}

// Result is the workload's readiness after one check.
type Result struct {
	Pid   int   // the workload the check was of
	Ready bool  // after this check and the ones before it
	Err   error // this check's failure, nil if it passed
	// Failures counts this workload's consecutive failed checks up to
	// this one, those forgiven by StartPeriod not included: 0 after a
	// pass.
	Failures int
}

// Checker checks the workload while it runs. Running tells it which
// workload runs; Run does the checking.
type Checker struct {
	cfg  Config
	pid  atomic.Int64
	kick chan struct{}
}

// New returns a Checker for cfg.
func New(cfg Config) *Checker {
	return &Checker{cfg: cfg, kick: make(chan struct{}, 1)}
}

// Running says which workload runs now (its pid), or that none does (0).
// It never blocks: the status recorder calls it while it holds its lock.
func (c *Checker) Running(pid int) {
	if c.pid.Swap(int64(pid)) == int64(pid) {
		return
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run checks the running workload every Period, at once when a workload
// starts, and passes each result to report, until ctx ends. A workload
// starts not ready; a new workload (another pid) starts afresh.
func (c *Checker) Run(ctx context.Context, report func(Result)) {
	ticker := time.NewTicker(c.cfg.Period)
	defer ticker.Stop()
	var (
		checked  int // the pid the state below is of
		since    time.Time
		passed   bool // this workload passed a check
		ready    bool
		failures int
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-ticker.C:
		}
		pid := int(c.pid.Load())
		if pid != checked {
			checked, since, passed, ready, failures = pid, time.Now(), false, false, 0
		}
		if pid == 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		err := c.cfg.Probe.Check(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", c.cfg.Timeout)
		}
		switch {
		case err == nil:
			passed, ready, failures = true, true, 0
		case !passed && time.Since(since) < c.cfg.StartPeriod:
			// Still coming up: not counted.
		default:
			if failures++; failures >= c.cfg.FailureThreshold {
				ready = false
			}
		}
		report(Result{Pid: pid, Ready: ready, Err: err, Failures: failures})
	}
}
