package zklock

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/lockex/lockex/internal/zktest"
)

// Review of the release by closing the session (0f349bc, 0734f60).

// TestReviewReleaseClosingRightAfterADisconnect: the holder's connection
// drops just before the workload ends, and the server is back at once.
// go-zookeeper pauses a second before it dials the one server again; a
// Close in that pause makes it give up instead, so the close would never
// be sent, the release would wait out the whole connect timeout, and the
// node would stay for the session timeout. Release (a delete) went through
// on the next connection; the close must too.
func TestReviewReleaseClosingRightAfterADisconnect(t *testing.T) {
	zkc := zktest.Start(t, zktest.SessionTimeouts(400*time.Millisecond, 30*time.Second))
	px := zktest.StartProxy(t, zkc.Servers[0].Addr())
	s := connectWith(t, px.Addr(), func(o *Options) {
		o.SessionTimeout = 20 * time.Second
		o.ConnectTimeout = 3 * time.Second
	})
	look := connect(t, zkc.Hosts())
	l := hold(t, s, "/review-release-after-disconnect")
	px.Cut()
	waitUntil(t, "the disconnect", func() bool { state, _, _ := s.current(); return state != zk.StateHasSession })
	px.Pass()
	if err := l.ReleaseClosing(); err != nil {
		t.Errorf("ReleaseClosing with the server reachable again: %v", err)
	}
	if ok, _, err := look.conn.Exists(look.abs(l.Node())); err != nil || ok {
		t.Fatalf("node after the release: exists %v, err %v; the next holder waits for the session's expiry", ok, err)
	}
}

// TestReviewReleaseClosingReportsNoDisconnect: the disconnect that the
// close itself causes is not a connection loss: the observer, which feeds
// lockex_zk_disconnects_total and the log, is not told of it.
func TestReviewReleaseClosingReportsNoDisconnect(t *testing.T) {
	zkc := zktest.Start(t)
	drops := &disconnects{}
	s := connectWith(t, zkc.Hosts(), func(o *Options) { o.Observer = drops })
	l := hold(t, s, "/review-release-no-disconnect")
	if err := l.ReleaseClosing(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the session's end", func() bool { state, _, _ := s.current(); return state == zk.StateDisconnected })
	if n := drops.n.Load(); n != 0 {
		t.Errorf("the close was reported as %d disconnects", n)
	}
	if l.Err() != nil {
		t.Errorf("a released lease reports a loss: %v", l.Err())
	}
}

// TestReviewSemaphoreReleaseClosing: a semaphore lease given back by the
// close leaves neither the lease nor a node under P-__lock__, and a waiter
// that holds the turn, watching the full semaphore, takes the lease freed.
func TestReviewSemaphoreReleaseClosing(t *testing.T) {
	zkc := zktest.Start(t)
	const p = "/review-sem-close"
	h1, h2, w, look := connect(t, zkc.Hosts()), connect(t, zkc.Hosts()), connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	first, err := NewSemaphore(h1, p, "h1", 2).Acquire(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	second, err := NewSemaphore(h2, p, "h2", 2).Acquire(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Release() })
	got := make(chan acquired, 1)
	contend(ctx, "waiter", func(ctx context.Context) (*Lease, error) { return NewSemaphore(w, p, "w", 2).Acquire(ctx, true) }, got)
	waitUntil(t, "the waiter's turn", func() bool { kids, _ := look.children(p + "-__lock__"); return len(kids) == 1 })
	if err := first.ReleaseClosing(); err != nil {
		t.Fatal(err)
	}
	l := result(t, got)
	t.Cleanup(func() { _ = l.Release() })
	leases, err := look.children(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range leases {
		if join(p, n) == first.Node() {
			t.Errorf("the closed session's lease %s is still listed", n)
		}
	}
	if len(leases) != 2 {
		t.Errorf("leases after the handoff: %v, want the second holder's and the waiter's", leases)
	}
	if turns, _ := look.children(p + "-__lock__"); len(turns) != 0 {
		t.Errorf("turn nodes left: %v", turns)
	}
}

// TestReviewReleaseClosingAsItsServerDies: the holder's ensemble member
// dies just before the release; go-zookeeper moves to another member, and
// the close must go out there and be answered, the node gone.
func TestReviewReleaseClosingAsItsServerDies(t *testing.T) {
	zkc := zktest.StartEnsemble(t, 3)
	s := connectWith(t, zkc.Hosts(), func(o *Options) { o.ConnectTimeout = 20 * time.Second })
	l := hold(t, s, "/review-release-server-dies")
	var dying, other *zktest.Server
	for _, srv := range zkc.Servers {
		if srv.Addr() == s.conn.Server() {
			dying = srv
		} else {
			other = srv
		}
	}
	if dying == nil {
		t.Fatalf("the holder's server %s is not among the members", s.conn.Server())
	}
	if err := dying.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := l.ReleaseClosing(); err != nil {
		t.Errorf("ReleaseClosing with two members left: %v", err)
	}
	look := connect(t, other.Addr())
	if ok, _, err := look.conn.Exists(look.abs(l.Node())); err != nil || ok {
		t.Fatalf("node after the release: exists %v, err %v", ok, err)
	}
}

// TestReviewCloseCountsOnlyWithoutError: an answer to closeSession with an
// error code says nothing about the session's end; only one without an
// error does.
func TestReviewCloseCountsOnlyWithoutError(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	closeReq := packet(0, 0, 0, 1, 0xff, 0xff, 0xff, 0xf5)
	for _, code := range []int32{errSessionExpired, errSessionMoved, -101, -4, 0} {
		live := &liveness{requested: time.Second, log: quiet}
		answer := scripted(func(c net.Conn, n int, head []byte) {
			if n == 1 {
				c.Write(connectAnswer)
				return
			}
			h := append(slices.Clone(head[:4]), make([]byte, 12)...)
			binary.BigEndian.PutUint32(h[12:], uint32(code))
			c.Write(packet(h...))
		})
		w := dialWire(t, fakeServer(t, answer), live)
		w.SetDeadline(time.Now().Add(patience))
		for _, req := range [][]byte{packet(make([]byte, 44)...), closeReq} {
			if _, err := w.Write(req); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(w, make([]byte, 20)); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-live.closedAnswered():
			if code != 0 {
				t.Errorf("a close answered with error %d counts as the session's end", code)
			}
		default:
			if code == 0 {
				t.Error("a close answered without error does not count")
			}
		}
	}
}

// TestReviewProbeCloseIsNotTheSessions: the probe of the servers' shortest
// session closes a session of its own on a connection of its own; its
// close must not pass for the holder's.
func TestReviewProbeCloseIsNotTheSessions(t *testing.T) {
	zkc := zktest.Start(t)
	s := connect(t, zkc.Hosts())
	waitUntil(t, "the probe's answer", func() bool { s.live.mu.Lock(); defer s.live.mu.Unlock(); return s.live.minSession > 0 })
	select {
	case <-s.live.closedAnswered():
		t.Fatal("the probe's close passes for the session's")
	default:
	}
}

// TestReviewReleaseClosingLostWithItsConnection: the close goes out into a
// silent connection, which then ends; go-zookeeper, closed, dials no
// server again, so the close is never answered, maybe never sent. With
// the server reachable again, the node is given back all the same.
func TestReviewReleaseClosingLostWithItsConnection(t *testing.T) {
	zkc := zktest.Start(t, zktest.SessionTimeouts(400*time.Millisecond, 30*time.Second))
	px := zktest.StartProxy(t, zkc.Servers[0].Addr())
	s := connectWith(t, px.Addr(), func(o *Options) {
		o.SessionTimeout = 20 * time.Second
		o.ConnectTimeout = 5 * time.Second
	})
	look := connect(t, zkc.Hosts())
	l := hold(t, s, "/review-release-lost-with-conn")
	px.Stall()
	released := make(chan error, 1)
	go func() { released <- l.ReleaseClosing() }()
	waitUntil(t, "the close", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.closing })
	px.Cut()
	px.Pass()
	if err := <-released; err != nil {
		t.Errorf("ReleaseClosing with the server reachable again: %v", err)
	}
	if ok, _, err := look.conn.Exists(look.abs(l.Node())); err != nil || ok {
		t.Fatalf("node after the release: exists %v, err %v; the next holder waits for the session's expiry", ok, err)
	}
}
