package activecheck

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// checkWithin runs p.Check with a timeout and waits a bounded while for it:
// a check must end by its timeout, whatever the server does.
func checkWithin(t *testing.T, p Probe, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Check(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout + 20*time.Second):
		t.Fatalf("%s: no result 20s after its timeout", p)
		return nil
	}
}

// TestReviewHTTPStalledBody (review): the workload answers 200 at once,
// then hangs in the middle of its body. The check has not ended by its
// timeout, so it fails (design.md §4.4; the kubelet's httpGet probe fails
// on a body it cannot read): a holder whose workload hangs must not pass.
func TestReviewHTTPStalledBody(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(200)
		_, _ = w.Write([]byte("ok"))
		w.(http.Flusher).Flush()
		<-release
	}))
	defer srv.Close()
	defer close(release)
	p, _ := HTTP(srv.URL)
	err := checkWithin(t, p, 300*time.Millisecond)
	if err == nil {
		t.Fatal("a 200 whose body never ends passed")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), srv.URL) {
		t.Errorf("stalled body: %v, want the deadline, naming the URL", err)
	}

	// The checker says so as for a server that does not answer.
	c := New(Config{Probe: p, Period: time.Hour, Timeout: 200 * time.Millisecond, FailureThreshold: 1})
	got := make(results, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx, func(r Result) { got <- r })
	c.Running(7)
	if r := got.next(t); r.Err == nil || r.Err.Error() != "no answer within 200ms" || r.Failures != 1 {
		t.Errorf("%+v, want a failure: no answer within 200ms", r)
	}
}

// TestReviewHTTPHostile (review): what a broken or hostile workload may
// answer never holds a check past its timeout, nor makes lockex read more
// than it means to, nor sends it elsewhere.
func TestReviewHTTPHostile(t *testing.T) {
	t.Run("endless body", func(t *testing.T) {
		var sent atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chunk := make([]byte, 64<<10)
			for r.Context().Err() == nil && sent.Load() < 1<<30 {
				n, err := w.Write(chunk)
				sent.Add(int64(n))
				if err != nil {
					return
				}
			}
		}))
		defer srv.Close()
		p, _ := HTTP(srv.URL)
		if err := checkWithin(t, p, 10*time.Second); err != nil {
			t.Errorf("a 200 with an endless body: %v, want a pass", err)
		}
		if n := sent.Load(); n >= 1<<30 {
			t.Errorf("the server wrote %d bytes: the check read the endless body to its end", n)
		}
	})
	t.Run("accepts, never answers", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan net.Conn, 16)
		defer func() {
			ln.Close()
			for c := range accepted {
				c.Close()
			}
		}()
		go func() {
			defer close(accepted)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- c // held open, never read
			}
		}()
		p, _ := HTTP("http://" + ln.Addr().String() + "/health")
		if err := checkWithin(t, p, 300*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("a server that accepts and never answers: %v, want the deadline", err)
		}
	})
	t.Run("redirect to another host", func(t *testing.T) {
		var elsewhere atomic.Int32
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			elsewhere.Add(1)
			w.WriteHeader(500)
		}))
		defer other.Close()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, strings.Replace(other.URL, "127.0.0.1", "localhost", 1)+"/x", http.StatusFound)
		}))
		defer srv.Close()
		p, _ := HTTP(srv.URL)
		if err := checkWithin(t, p, 10*time.Second); err != nil {
			t.Errorf("302: %v, want a pass, as the kubelet's", err)
		}
		if n := elsewhere.Load(); n != 0 {
			t.Errorf("the redirect was followed to another host (%d requests)", n)
		}
	})
}

// TestReviewParseCommandBytes (review): --health-cmd's words are split as
// a shell splits them and otherwise kept byte for byte: a path or an
// argument that is not UTF-8 (a Latin-1 file name) reaches the command
// unchanged, not with U+FFFD in place of its bytes.
func TestReviewParseCommandBytes(t *testing.T) {
	for _, in := range []string{"check /srv/caf\xe9", "check '/srv/caf\xe9 x'", "check \"a\xff\"", "check a\\\xff"} {
		got, err := ParseCommand(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		want := map[string]string{
			"check /srv/caf\xe9":     "/srv/caf\xe9",
			"check '/srv/caf\xe9 x'": "/srv/caf\xe9 x",
			"check \"a\xff\"":        "a\xff",
			"check a\\\xff":          "a\xff",
		}[in]
		if len(got) != 2 || got[1] != want {
			t.Errorf("%q: %q, want [check %q]", in, got, want)
		}
	}
}

// TestReviewParseCommandDoubleQuotes (review): inside double quotes a POSIX
// shell keeps a backslash unless $, `, ", \ or a newline follows it
// (XCU 2.2.3): grep "a\.b" gets the pattern a\.b, not a.b, which matches
// more than was written.
func TestReviewParseCommandDoubleQuotes(t *testing.T) {
	for in, want := range map[string]string{
		`grep "a\.b"`:    `a\.b`,
		`grep "C:\dir"`:  `C:\dir`,
		`grep "a\"b"`:    `a"b`,
		`grep "a\\b"`:    `a\b`,
		`grep "a\$b"`:    `a$b`,
		"grep \"a\\`b\"": "a`b",
		`grep a\.b`:      `a.b`, // outside quotes, a backslash quotes any character
	} {
		got, err := ParseCommand(in)
		if err != nil || len(got) != 2 || got[1] != want {
			t.Errorf("%s: %q, %v; want [grep %q]", in, got, err, want)
		}
	}
}
