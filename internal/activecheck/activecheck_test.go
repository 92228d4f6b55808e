package activecheck

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string // want: "" for valid, else in the error
		tcp            bool
	}{
		{"http", "http://127.0.0.1:8080/ready", "", false},
		{"https without port", "https://localhost/healthz", "", false},
		{"no scheme", "127.0.0.1:8080/ready", "http://", false},
		{"ftp", "ftp://127.0.0.1/", "http://", false},
		{"no host", "http:///ready", "no host", false},
		{"bad port", "http://127.0.0.1:99999/", "port", false},
		{"tcp", "127.0.0.1:5432", "", true},
		{"tcp ipv6", "[::1]:5432", "", true},
		{"tcp no port", "127.0.0.1", "missing port", true},
		{"tcp no host", ":5432", "no host", true},
		{"tcp port name", "127.0.0.1:http", "port", true},
		{"tcp port 0", "127.0.0.1:0", "port", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.tcp {
				_, err = TCP(tc.in)
			} else {
				_, err = HTTP(tc.in)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("%q: %v, want it accepted", tc.in, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("%q: %v, want an error with %q", tc.in, err, tc.want)
			case err != nil && !strings.Contains(err.Error(), tc.in):
				t.Errorf("%q: %v does not name the value", tc.in, err)
			}
		})
	}
}

// TestHTTPProbe: a real server's answers, as the kubelet counts them.
func TestHTTPProbe(t *testing.T) {
	var code atomic.Int32
	var agent atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		agent.Store(r.UserAgent())
		if c := int(code.Load()); c >= 300 && c < 400 {
			// Followed, this would fail: nothing listens on port 1.
			http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", c)
			return
		}
		w.WriteHeader(int(code.Load()))
	}))
	defer srv.Close()
	p, err := HTTP(srv.URL + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		code int
		ok   bool
	}{{200, true}, {204, true}, {302, true}, {399, true}, {400, false}, {404, false}, {500, false}, {503, false}} {
		code.Store(int32(tc.code))
		err := p.Check(context.Background())
		if (err == nil) != tc.ok {
			t.Errorf("status %d: %v, want ok=%v", tc.code, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), srv.URL) {
			t.Errorf("status %d: %v does not name the URL", tc.code, err)
		}
	}
	if a, _ := agent.Load().(string); a != "lockex-active-check" {
		t.Errorf("User-Agent %q", a)
	}

	// The environment's proxy is not used: the check is of the local workload.
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	t.Setenv("http_proxy", "http://127.0.0.1:1")
	p, _ = HTTP(srv.URL + "/ready")
	code.Store(200)
	if err := p.Check(context.Background()); err != nil {
		t.Errorf("with HTTP_PROXY set: %v", err)
	}
}

func TestHTTPProbeTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	p, _ := HTTP(srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := p.Check(ctx); err == nil {
		t.Fatal("a server that never answers passed")
	}

	// The checker says so in the words of --active-timeout.
	c := New(Config{Probe: p, Period: time.Hour, Timeout: 100 * time.Millisecond, FailureThreshold: 1})
	got := make(results, 1)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx, func(r Result) { got <- r })
	c.Running(7)
	if r := got.next(t); r.Ready || r.Err == nil || r.Err.Error() != "no answer within 100ms" {
		t.Errorf("%+v, want not ready: no answer within 100ms", r)
	}
}

func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	p, err := TCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Check(context.Background()); err != nil {
		t.Errorf("listening: %v", err)
	}
	ln.Close()
	if err := p.Check(context.Background()); err == nil {
		t.Error("closed port passed")
	}
}

// listener is a TCP port the test opens and closes, standing in for a
// workload that starts and stops serving.
type listener struct {
	t    *testing.T
	addr string
	ln   net.Listener
}

func (l *listener) open() {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		l.t.Fatal(err)
	}
	l.ln, l.addr = ln, ln.Addr().String()
}

func (l *listener) close() { l.ln.Close() }

// results collects what Run reports.
type results chan Result

func (r results) next(t *testing.T) Result {
	t.Helper()
	select {
	case res := <-r:
		return res
	case <-time.After(10 * time.Second):
		t.Fatal("no check within 10s")
		return Result{}
	}
}

// TestChecker: readiness across a workload's life, with the failure
// threshold, and afresh for the next workload.
func TestChecker(t *testing.T) {
	l := &listener{t: t, addr: "127.0.0.1:0"}
	l.open()
	l.close() // a free port, nobody listening yet
	p, _ := TCP(l.addr)
	c := New(Config{Probe: p, Period: 20 * time.Millisecond, Timeout: time.Second, FailureThreshold: 2})
	got := make(results, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx, func(r Result) { got <- r }); close(done) }()
	defer func() { cancel(); <-done }()

	// No workload: no checks.
	select {
	case r := <-got:
		t.Fatalf("checked with no workload running: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}

	c.Running(100)
	if r := got.next(t); r.Pid != 100 || r.Ready || r.Err == nil {
		t.Fatalf("workload not listening yet: %+v", r)
	}
	l.open()
	for r := got.next(t); !r.Ready; r = got.next(t) {
		if r.Pid != 100 {
			t.Fatalf("%+v", r)
		}
	}
	l.close()
	// One failure is below the threshold of 2: still ready.
	r := got.next(t)
	if r.Err == nil || !r.Ready {
		t.Fatalf("first failure after ready: %+v, want still ready", r)
	}
	if r = got.next(t); r.Err == nil || r.Ready {
		t.Fatalf("second failure: %+v, want not ready", r)
	}

	// The next workload starts not ready, even if its port answers at once.
	l.open()
	defer l.close()
	c.Running(0)
	c.Running(101)
	for r = got.next(t); r.Pid != 101; r = got.next(t) {
	}
	if !r.Ready || r.Err != nil {
		t.Fatalf("workload 101 listening: %+v", r)
	}
	c.Running(0)
	// A check in flight may still report; then none, where checks every
	// 20ms would report about ten.
	late := 0
	for window := time.After(200 * time.Millisecond); ; {
		select {
		case <-got:
			late++
			continue
		case <-window:
		}
		break
	}
	if late > 1 {
		t.Errorf("%d checks reported after the workload ended", late)
	}
}

// TestHTTPProbeHidesPassword: a URL's password reaches the server, and
// never the logs, probe bodies or errors, which show the check's name.
func TestHTTPProbeHidesPassword(t *testing.T) {
	var auth atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ := r.BasicAuth()
		auth.Store(user + ":" + pass)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	withPassword := strings.Replace(srv.URL, "http://", "http://probe:s3cret@", 1)
	p, err := HTTP(withPassword + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	err = p.Check(context.Background())
	if got, _ := auth.Load().(string); got != "probe:s3cret" {
		t.Errorf("the server saw credentials %q, want probe:s3cret", got)
	}
	if err == nil {
		t.Fatal("a 503 passed")
	}
	for what, s := range map[string]string{"error": err.Error(), "name": p.String()} {
		if strings.Contains(s, "s3cret") || !strings.Contains(s, "probe:xxxxx@") {
			t.Errorf("%s %q: want the password hidden as xxxxx", what, s)
		}
	}
	// Nothing listens on port 1: the client's own error names the URL too.
	p, _ = HTTP("http://probe:s3cret@127.0.0.1:1/ready")
	if err := p.Check(context.Background()); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("unreachable: %v, want an error without the password", err)
	}
	if _, err := HTTP("http://probe:s3cret@127.0.0.1:99999/"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad port: %v, want an error without the password", err)
	}
}
