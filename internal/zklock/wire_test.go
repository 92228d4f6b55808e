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

	"github.com/go-zookeeper/zk"
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
// the server's (it clamps the 30s asked for to its maximum of 20s); a
// connect answer is no evidence until a write confirms it, and then it is
// the connect request's send time (E1). The session learns the server's
// minSessionTimeout (400ms here), so m = 100ms; while a write follows the
// heartbeat's syncs every granted/20, the evidence follows real time from
// m behind to m plus a write period and a sync period behind (E2), never
// nearer.
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
	if got := s.Granted(); got != 20*time.Second {
		t.Errorf("granted %s, want the server's maximum 20s", got)
	}
	if _, ev := s.live.snapshot(); !ev.IsZero() {
		t.Errorf("evidence %s before any write; a connect answer alone proves nothing", time.Since(ev))
	}
	node, err := s.conn.Create("/w", nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
	if err != nil {
		t.Fatal(err)
	}
	if _, ev := s.live.snapshot(); ev.Before(before) || ev.After(time.Now()) {
		t.Errorf("evidence %s after %s; want the connect request's send time, after it", ev.Format(time.StampMicro), before.Format(time.StampMicro))
	}

	s = open(2*time.Second, zkc.Servers[0].Addr())
	for deadline := time.Now().Add(5 * time.Second); s.live.margin() != 100*time.Millisecond; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("margin %s, want 100ms: a quarter of the server's minSessionTimeout", s.live.margin())
		}
	}
	m, syncs, writes := 100*time.Millisecond, s.Granted()/40, s.Granted()/20
	node, err = s.conn.Create("/w2", nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
	if err != nil {
		t.Fatal(err)
	}
	// By then the connect answer is m old too, like anything E2 gives.
	time.Sleep(m)
	var prev time.Time
	for range 20 {
		time.Sleep(writes)
		if _, err := s.conn.Set(node, nil, -1); err != nil {
			t.Fatal(err)
		}
		_, ev := s.live.snapshot()
		age := time.Since(ev)
		if age < m {
			t.Fatalf("evidence %s old; from writes after syncs never newer than m = %s", age, m)
		}
		if ev.Before(prev) {
			t.Fatalf("evidence went back by %s", prev.Sub(ev))
		}
		prev = ev
	}
	// Generous: a loaded machine answers late.
	if age := time.Since(prev); age > m+syncs+writes+500*time.Millisecond {
		t.Errorf("evidence %s old after 2s of writes; want at most m + a sync and a write period = %s (and 500ms of slack)", age, m+syncs+writes)
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

// TestEvidenceFromASyncAndAWrite: the rule E2 of wire.go on made-up
// timelines (m = 1000ms); each request is {sent, answered} in ms and a
// request ('r'), a sync ('s') or a write ('w'); the evidence is what the
// last write gives.
func TestEvidenceFromASyncAndAWrite(t *testing.T) {
	type req struct {
		sent, answered int
		kind           byte
	}
	for _, tc := range []struct {
		name string
		reqs []req
		want int // sent of R0 from the last write; -1: none
	}{
		{"a write alone proves nothing", []req{{0, 10, 'r'}, {2000, 2010, 'w'}}, -1},
		{"syncs alone prove nothing", []req{{0, 10, 'r'}, {1500, 1510, 's'}, {1600, 1610, 's'}}, -1},
		{"a sync, a write, and a request m before the sync", []req{{0, 10, 'r'}, {1500, 1510, 's'}, {1600, 1610, 'w'}}, 0},
		{"the newest request m before the sync", []req{{100, 110, 'r'}, {300, 310, 'r'}, {480, 490, 'r'}, {495, 501, 'r'}, {1500, 1510, 's'}, {1600, 1610, 'w'}}, 480},
		{"a request answered less than m before the sync", []req{{590, 600, 'r'}, {1500, 1510, 's'}, {1600, 1610, 'w'}}, -1},
		{"the sync answered after the write was sent", []req{{0, 10, 'r'}, {1500, 1700, 's'}, {1600, 1710, 'w'}}, -1},
		{"the last sync answered before the write was sent", []req{{0, 10, 'r'}, {700, 710, 'r'}, {1200, 1210, 's'}, {1800, 1900, 's'}, {1850, 1910, 'w'}}, 0},
		{"a sync is a request too", []req{{100, 110, 's'}, {1200, 1210, 's'}, {1300, 1310, 'w'}}, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h history
			got, ok := time.Time{}, false
			for _, r := range tc.reqs {
				e := exchange{sent: at(r.sent), answered: at(r.answered)}
				h.note(e, time.Second)
				switch r.kind {
				case 's':
					h.synced(e)
				case 'w':
					got, ok = h.written(e, time.Second)
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

// TestEvidenceAfterABurst: a burst of answers, more than maxNoted within
// m (a /status read of a crowded lock through the session), leaves the
// answers before it that a write needs for R0; the burst is thinned.
func TestEvidenceAfterABurst(t *testing.T) {
	var h history
	sync := func(ms int) {
		e := exchange{sent: at(ms), answered: at(ms + 5)}
		h.note(e, time.Second)
		h.synced(e)
	}
	for ms := 0; ms <= 2000; ms += 100 {
		sync(ms)
	}
	for i := range 2 * maxNoted {
		sent := at(2010).Add(time.Duration(i) * 100 * time.Microsecond)
		h.note(exchange{sent: sent, answered: sent.Add(50 * time.Microsecond)}, time.Second)
	}
	sync(2250)
	w := exchange{sent: at(2300), answered: at(2310)}
	h.note(w, time.Second)
	// S1 is the sync sent at 2250ms; R0 the last answered by 1250ms.
	if got, ok := h.written(w, time.Second); !ok || !got.Equal(at(1200)) {
		t.Errorf("evidence %s (%v), want 1200ms", got.Sub(at(0)), ok)
	}
	if len(h.noted) > maxNoted {
		t.Errorf("%d answers kept, want at most %d", len(h.noted), maxNoted)
	}
}

// TestEvidenceAfterALongWait: a standby's syncs, many more than maxNoted
// and evenly spaced, keep the newest answers, which the first write needs.
func TestEvidenceAfterALongWait(t *testing.T) {
	var h history
	last := 0
	for ms := 0; ms <= 3*maxNoted*100; ms += 100 {
		e := exchange{sent: at(ms), answered: at(ms + 5)}
		h.note(e, time.Second)
		h.synced(e)
		last = ms
	}
	w := exchange{sent: at(last + 50), answered: at(last + 60)}
	h.note(w, time.Second)
	if got, ok := h.written(w, time.Second); !ok || !got.Equal(at(last-1100)) {
		t.Errorf("evidence %s (%v), want %dms", got.Sub(at(0)), ok, last-1100)
	}
}

// TestGrantedOnlyShrinks: a server that grants the same session a longer
// timeout than before changes nothing; a new session starts afresh.
func TestGrantedOnlyShrinks(t *testing.T) {
	l := &liveness{requested: 10 * time.Second}
	for _, step := range []struct {
		session int64
		granted time.Duration
		want    time.Duration
	}{{7, 4 * time.Second, 4 * time.Second}, {7, 12 * time.Second, 4 * time.Second}, {7, 2 * time.Second, 2 * time.Second}, {8, 12 * time.Second, 12 * time.Second}} {
		l.granted(step.session, step.granted)
		if got, _ := l.snapshot(); got != step.want {
			t.Fatalf("session %d granted %s: timeout %s, want %s", step.session, step.granted, got, step.want)
		}
	}
}

// TestEvidenceNeverGoesBack: an older piece of evidence changes nothing.
func TestEvidenceNeverGoesBack(t *testing.T) {
	l := &liveness{requested: 4 * time.Second}
	l.offer(at(1000))
	l.offer(at(500))
	if _, ev := l.snapshot(); !ev.Equal(at(1000)) {
		t.Fatalf("evidence %s, want 1000ms: it never goes back", ev.Sub(at(0)))
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

// connectAnswer grants a 1s session, id 7.
var connectAnswer = packet(0, 0, 0, 0, 0, 0, 3, 232, 0, 0, 0, 0, 0, 0, 0, 7)

// scripted serves a fake server's side of a connection: answer is called
// for each request the client sends, with its number (the connect is 1)
// and its header, and writes what the server says, if anything.
func scripted(answer func(c net.Conn, n int, head []byte)) func(net.Conn) {
	return func(c net.Conn) {
		var in framer
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			in.feed(buf[:n], func(head []byte) { answer(c, in.packets, head) })
		}
	}
}

// answering plays a server that answers at once: the connect request with
// a 1s session, each request with its xid and error code 0.
var answering = scripted(func(c net.Conn, n int, head []byte) {
	if n == 1 {
		c.Write(connectAnswer)
		return
	}
	c.Write(packet(append(slices.Clone(head[:4]), make([]byte, 12)...)...))
})

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
// answers is left open, and its connect answer, once a write follows, is
// evidence from its send time (E1).
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

	t.Run("silent after a confirmed connect", func(t *testing.T) {
		// Budget 1s − 0 − 0.1s: the connection is left only once the
		// connect answer's evidence, confirmed by a write, is 450ms old,
		// not after 100ms.
		live := &liveness{requested: time.Second, log: quiet}
		w := dialWire(t, fakeServer(t, scripted(func(c net.Conn, n int, head []byte) {
			switch n {
			case 1:
				c.Write(connectAnswer)
			case 2: // the write, then silence
				c.Write(packet(append(slices.Clone(head[:4]), make([]byte, 12)...)...))
			}
		})), live)
		began := time.Now()
		if _, err := w.Write(connectReq); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if _, err := w.Read(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(packet(0, 0, 0, 1, 0, 0, 0, opSetData, 0, 0, 0, 1, '/')); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Read(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(packet(0, 0, 0, 2, 0, 0, 0, opSync, 0, 0, 0, 1, '/')); err != nil {
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

	t.Run("silent after an unconfirmed connect", func(t *testing.T) {
		// No evidence at all: a request unanswered for the patience
		// (100ms) is enough.
		live := &liveness{requested: time.Second, log: quiet}
		w := dialWire(t, fakeServer(t, scripted(func(c net.Conn, n int, _ []byte) {
			if n == 1 {
				c.Write(connectAnswer)
			}
		})), live)
		if _, err := w.Write(connectReq); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if _, err := w.Read(buf); err != nil {
			t.Fatal(err)
		}
		sent := time.Now()
		if _, err := w.Write(packet(0, 0, 0, 1, 0, 0, 0, opSync, 0, 0, 0, 1, '/')); err != nil {
			t.Fatal(err)
		}
		w.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := w.Read(buf)
		if took := time.Since(sent); err == nil || errors.Is(err, os.ErrDeadlineExceeded) || took < 100*time.Millisecond {
			t.Fatalf("read returned %v after %s; want the connection closed after 100ms", err, took)
		}
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
		if granted, ev := live.snapshot(); granted != time.Second || !ev.IsZero() {
			t.Fatalf("granted %s, evidence %s; want 1s and none before a write", granted, ev.Sub(sent))
		}
		if _, err := w.Write(packet(0, 0, 0, 100, 0, 0, 0, opSetData, 0, 0, 0, 1, '/')); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Read(buf); err != nil {
			t.Fatal(err)
		}
		if _, ev := live.snapshot(); ev.Before(sent) || ev.After(time.Now()) {
			t.Fatalf("evidence %s after a write; want the connect's send time", ev.Sub(sent))
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
