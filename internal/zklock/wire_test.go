package zklock

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/zktest"
)

func packet(body ...byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// TestFramer: packet heads come out whole however the stream is cut.
func TestFramer(t *testing.T) {
	long := make([]byte, 40)
	for i := range long {
		long[i] = byte(i)
	}
	stream := slices.Concat(packet(1, 2, 3, 4, 5, 6, 7, 8), packet(), packet(long...), packet(9))
	want := [][]byte{{1, 2, 3, 4, 5, 6, 7, 8}, {}, long[:16], {9}}
	for cut := 1; cut <= len(stream); cut++ {
		var f framer
		var got [][]byte
		for b := stream; len(b) > 0; {
			n := min(cut, len(b))
			f.feed(b[:n], func(head []byte) { got = append(got, slices.Clone(head)) })
			b = b[n:]
		}
		if len(got) != len(want) {
			t.Fatalf("cut %d: %d heads, want %d", cut, len(got), len(want))
		}
		for i := range want {
			if !slices.Equal(got[i], want[i]) {
				t.Errorf("cut %d: head %d = %v, want %v", cut, i, got[i], want[i])
			}
		}
		if f.packets != 4 {
			t.Errorf("cut %d: %d packets counted", cut, f.packets)
		}
	}
}

// TestLivenessFromTheWire: against a real server, the granted timeout is
// the server's (it clamps the 30s asked for to its maximum of 20s), and
// the connect answer is evidence from the send time of the connect
// request (E1). The session learns the server's minSessionTimeout (400ms
// here), so m = 100ms; once the heartbeat's syncs run, the evidence
// follows real time from m behind to m plus three sync periods behind
// (E2), never nearer.
func TestLivenessFromTheWire(t *testing.T) {
	zkc := zktest.Start(t, zktest.SessionTimeouts(400*time.Millisecond, 20*time.Second))
	open := func(timeout time.Duration, servers ...string) *Session {
		s, err := Connect(context.Background(), Options{
			Servers: servers, SessionTimeout: timeout,
			ConnectTimeout: 5 * time.Second, Attempts: 1, Retries: 1,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	before := time.Now()
	s := open(30*time.Second, zkc.Servers[0].Addr())
	after := time.Now()
	if got := s.Granted(); got != 20*time.Second {
		t.Errorf("granted %s, want the server's maximum 20s", got)
	}
	if _, ev := s.live.snapshot(); ev.Before(before) || ev.After(after) {
		t.Errorf("evidence %s; want the connect request's send time, between %s and %s",
			ev.Format(time.StampMicro), before.Format(time.StampMicro), after.Format(time.StampMicro))
	}

	s = open(2*time.Second, zkc.Servers[0].Addr())
	for deadline := time.Now().Add(5 * time.Second); s.live.margin() != 100*time.Millisecond; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("margin %s, want 100ms: a quarter of the server's minSessionTimeout", s.live.margin())
		}
	}
	m, period := 100*time.Millisecond, s.Granted()/40
	// By then the connect answer is m old too, like anything E2 gives.
	time.Sleep(m)
	var prev time.Time
	for range 20 {
		time.Sleep(100 * time.Millisecond)
		_, ev := s.live.snapshot()
		age := time.Since(ev)
		if age < m {
			t.Fatalf("evidence %s old; from syncs never newer than m = %s", age, m)
		}
		if ev.Before(prev) {
			t.Fatalf("evidence went back by %s", prev.Sub(ev))
		}
		prev = ev
	}
	// Generous: a loaded machine answers late.
	if age := time.Since(prev); age > m+3*period+500*time.Millisecond {
		t.Errorf("evidence %s old after 2s of syncs; want at most m + 3 sync periods = %s (and 500ms of slack)", age, m+3*period)
	}

	// A listed server that does not answer: m stays a quarter of granted.
	s = open(2*time.Second, zkc.Servers[0].Addr(), "127.0.0.1:1")
	time.Sleep(time.Second)
	if m := s.live.margin(); m != 500*time.Millisecond {
		t.Errorf("margin %s with a server that does not answer, want granted/4 = 500ms", m)
	}
}

// at is a moment in a made-up timeline, ms milliseconds after its start.
func at(ms int) time.Time { return time.Unix(1000, 0).Add(time.Duration(ms) * time.Millisecond) }

// TestEvidenceFromTwoSyncs: the rule E2 of wire.go on made-up timelines
// (m = 1000ms); each request is {sent, answered} in ms, syncs included.
func TestEvidenceFromTwoSyncs(t *testing.T) {
	type req struct {
		sent, answered int
		sync           bool
	}
	for _, tc := range []struct {
		name string
		reqs []req
		want int // sent of R0 from the last sync; -1: none
	}{
		{"one sync proves nothing", []req{{0, 10, false}, {2000, 2010, true}}, -1},
		{"two syncs and a request m before the first", []req{{0, 10, false}, {1500, 1510, true}, {1600, 1610, true}}, 0},
		{"the newest request m before the first sync", []req{{100, 110, false}, {300, 310, false}, {480, 490, false}, {495, 501, false}, {1500, 1510, true}, {1600, 1610, true}}, 480},
		{"a request answered less than m before the first sync", []req{{590, 600, false}, {1500, 1510, true}, {1600, 1610, true}}, -1},
		{"the first sync answered after the second was sent", []req{{0, 10, false}, {1500, 1700, true}, {1600, 1710, true}}, -1},
		{"the last sync answered before the second was sent", []req{{0, 10, false}, {700, 710, false}, {1200, 1210, true}, {1800, 1900, true}, {1850, 1910, true}}, 0},
		{"a sync is a request too", []req{{100, 110, true}, {1200, 1210, true}, {1300, 1310, true}}, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h history
			got, ok := time.Time{}, false
			for _, r := range tc.reqs {
				e := exchange{sent: at(r.sent), answered: at(r.answered)}
				h.note(e)
				if r.sync {
					got, ok = h.synced(e, time.Second)
				}
			}
			switch {
			case tc.want < 0 && ok:
				t.Errorf("evidence %s, want none", got.Sub(at(0)))
			case tc.want >= 0 && (!ok || !got.Equal(at(tc.want))):
				t.Errorf("evidence %s (%v), want %dms", got.Sub(at(0)), ok, tc.want)
			}
		})
	}
}

// TestLapsedEvidence: syncs extend the evidence only while it still rules
// out an expiry (E3); after that, only a connect answer does.
func TestLapsedEvidence(t *testing.T) {
	l := &liveness{requested: 4 * time.Second} // KillBy: evidence + 3.6s
	l.offer(at(0), at(10), true)
	l.offer(at(1000), at(3500), false)
	if _, ev := l.snapshot(); !ev.Equal(at(1000)) {
		t.Fatalf("evidence %s, want 1000ms: offered in time", ev.Sub(at(0)))
	}
	l.offer(at(500), at(3600), false)
	if _, ev := l.snapshot(); !ev.Equal(at(1000)) {
		t.Fatalf("evidence %s, want 1000ms: it never goes back", ev.Sub(at(0)))
	}
	if l.lapsed(at(4600)) || !l.lapsed(at(4601)) {
		t.Fatalf("lapsed at 4600ms %v, at 4601ms %v; want false, true", l.lapsed(at(4600)), l.lapsed(at(4601)))
	}
	l.offer(at(3000), at(4700), false)
	if _, ev := l.snapshot(); !ev.Equal(at(1000)) {
		t.Fatalf("evidence %s after it lapsed, want 1000ms still", ev.Sub(at(0)))
	}
	l.offer(at(4800), at(4810), true)
	if _, ev := l.snapshot(); !ev.Equal(at(4800)) || l.lapsed(at(4810)) {
		t.Fatalf("evidence %s after a connect answer, want 4800ms", ev.Sub(at(0)))
	}
}

// fakeServer accepts connections on loopback and hands each to serve.
func fakeServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// answering plays a server that answers at once: the connect request with
// a 1s session, each request with its xid and error code 0.
func answering(c net.Conn) {
	var in framer
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		in.feed(buf[:n], func(head []byte) {
			if in.packets == 1 {
				c.Write(packet(0, 0, 0, 0, 0, 0, 3, 232, 0, 0, 0, 0, 0, 0, 0, 7)) // timeout 1000ms, session 7
				return
			}
			c.Write(packet(append(slices.Clone(head[:4]), make([]byte, 12)...)...))
		})
	}
}

func dialWire(t *testing.T, addr string, live *liveness) *wireConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	w := newWireConn(c, c, live)
	t.Cleanup(func() { w.Close() })
	return w
}

// TestWatchdog: a connection whose request goes unanswered for the
// patience (granted/10, here 100ms) is closed once the evidence is older
// than half the holder's budget, and patience doubles; a connection that
// answers is left open, and its connect answer is evidence from its send
// time (E1).
func TestWatchdog(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	connectReq := packet(make([]byte, 44)...)

	t.Run("silent server", func(t *testing.T) {
		live := &liveness{requested: time.Second, log: quiet}
		w := dialWire(t, fakeServer(t, func(c net.Conn) { io.Copy(io.Discard, c) }), live)
		began := time.Now()
		if _, err := w.Write(connectReq); err != nil {
			t.Fatal(err)
		}
		w.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := w.Read(make([]byte, 16))
		took := time.Since(began)
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) || took < 100*time.Millisecond {
			t.Fatalf("read returned %v after %s; want the connection closed after 100ms", err, took)
		}
		t.Logf("closed after %s", took.Round(time.Millisecond))
		if p := live.currentPatience(); p != 200*time.Millisecond {
			t.Errorf("patience %s after a close, want 200ms", p)
		}
		live.gaveUp("a", time.Now())
		live.gaveUp("b", time.Now())
		if p := live.currentPatience(); p != time.Second/3 {
			t.Errorf("patience %s after three closes, want at most granted/3", p)
		}
		live.answeredIn(50 * time.Millisecond)
		if p := live.currentPatience(); p != 100*time.Millisecond {
			t.Errorf("patience %s after a prompt answer, want 100ms again", p)
		}
	})

	t.Run("silent after the connect answer", func(t *testing.T) {
		// Budget 1s − 0 − 0.1s: the connection is left only once the
		// connect answer's evidence is 450ms old, not after 100ms.
		live := &liveness{requested: time.Second, log: quiet}
		w := dialWire(t, fakeServer(t, func(c net.Conn) {
			var in framer
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				in.feed(buf[:n], func([]byte) {
					if in.packets == 1 {
						c.Write(packet(0, 0, 0, 0, 0, 0, 3, 232, 0, 0, 0, 0, 0, 0, 0, 7))
					}
				})
			}
		}), live)
		began := time.Now()
		if _, err := w.Write(connectReq); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if _, err := w.Read(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(packet(0, 0, 0, 1, 0, 0, 0, opSync, 0, 0, 0, 1, '/')); err != nil {
			t.Fatal(err)
		}
		w.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := w.Read(buf)
		took := time.Since(began)
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) || took < 450*time.Millisecond {
			t.Fatalf("read returned %v after %s; want the connection closed once the evidence was 450ms old", err, took)
		}
		t.Logf("closed %s after the connect request", took.Round(time.Millisecond))
	})

	t.Run("answering server", func(t *testing.T) {
		live := &liveness{requested: 4 * time.Second, log: quiet}
		w := dialWire(t, fakeServer(t, answering), live)
		sent := time.Now()
		if _, err := w.Write(connectReq); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if _, err := w.Read(buf); err != nil {
			t.Fatal(err)
		}
		if granted, ev := live.snapshot(); granted != time.Second || ev.Before(sent) || ev.After(time.Now()) {
			t.Fatalf("granted %s, evidence %s; want 1s and the connect's send time", granted, ev.Sub(sent))
		}
		for xid := byte(1); xid <= 20; xid++ {
			if _, err := w.Write(packet(0, 0, 0, xid, 0, 0, 0, opSync, 0, 0, 0, 1, '/')); err != nil {
				t.Fatalf("request %d: %v", xid, err)
			}
			if _, err := w.Read(buf); err != nil {
				t.Fatalf("answer %d: %v", xid, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.pending) != 0 || len(w.hist.syncs) == 0 {
			t.Errorf("%d requests pending, %d syncs kept; want 0 and some", len(w.pending), len(w.hist.syncs))
		}
	})
}
