package zklock

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/lockex/lockex/internal/zktest"
)

// The lease's watchers, each against a real ZooKeeper: the node watch, the
// deadline, the heartbeat and the check after a reconnect, and Release,
// which ends them all.

// hold takes the mutex p on s.
func hold(t *testing.T, s *Session, p string) *Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	l, err := NewMutex(s, p, "me").Acquire(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Release() })
	return l
}

// lostWithin waits for the lease's loss, failing the test after d.
func lostWithin(t *testing.T, l *Lease, d time.Duration) time.Time {
	t.Helper()
	select {
	case <-l.Done():
		return time.Now()
	case <-time.After(d):
		t.Fatalf("lease not lost within %s", d)
	}
	return time.Time{}
}

// TestLeaseNodeDeleted: an operator deletes the holder's node; the lease
// is lost at once, as node_deleted, and the session lives on.
func TestLeaseNodeDeleted(t *testing.T) {
	zkc := zktest.Start(t)
	s, op := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	l := hold(t, s, "/lease-deleted")
	if l.Err() != nil {
		t.Fatalf("a new lease has an error: %v", l.Err())
	}
	deleted := time.Now()
	if err := op.conn.Delete(op.abs(l.Node()), -1); err != nil {
		t.Fatal(err)
	}
	at := lostWithin(t, l, settle)
	t.Logf("lost %s after the delete", at.Sub(deleted).Round(time.Millisecond))
	if !errors.Is(l.Err(), ErrNodeDeleted) || LossOf(l.Err()) != NodeDeleted {
		t.Errorf("lost with %v (%s), want node_deleted", l.Err(), LossOf(l.Err()))
	}
	if s.ID() != l.session {
		t.Errorf("session %#x, want the lease's %#x: a deleted node does not end it", s.ID(), l.session)
	}
}

// TestLeaseDeadline: a holder that hears nothing from ZooKeeper loses the
// lease when its budget is spent, as suspend_deadline, before the server
// may expire its session: with KillBy a stop grace later, still ahead.
func TestLeaseDeadline(t *testing.T) {
	zkc := zktest.Start(t)
	px := zktest.StartProxy(t, zkc.Servers[0].Addr())
	const grace = time.Second
	s := connectWith(t, px.Addr(), func(o *Options) { o.StopGrace = grace })
	l := hold(t, s, "/lease-deadline")
	granted := s.Granted()
	_, evidence := s.live.snapshot()
	px.Stall()
	at := lostWithin(t, l, granted)
	if !errors.Is(l.Err(), ErrSuspendedTooLong) || LossOf(l.Err()) != SuspendDeadline {
		t.Fatalf("lost with %v, want suspend_deadline", l.Err())
	}
	budget := granted - grace - granted/10
	t.Logf("lost %s after the last evidence (budget %s)", at.Sub(evidence).Round(time.Millisecond), budget)
	if at.Before(evidence.Add(budget)) {
		t.Errorf("lost %s after the evidence, before the budget of %s was spent", at.Sub(evidence), budget)
	}
	if left := time.Until(l.KillBy()); left <= 0 || left > grace {
		t.Errorf("KillBy %s from the loss, want within the stop grace %s", left, grace)
	}
	if l.KillBy().After(evidence.Add(granted)) {
		t.Errorf("KillBy %s after the evidence, past the session timeout %s", l.KillBy().Sub(evidence), granted)
	}
}

// TestLeaseHeartbeat: while held, the node is written about twenty times
// a session timeout, each write a fresh sign the leader has the session.
func TestLeaseHeartbeat(t *testing.T) {
	zkc := zktest.Start(t)
	s, look := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	l := hold(t, s, "/lease-beat")
	_, first, err := look.conn.Get(look.abs(l.Node()))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(s.Granted() / 2) // the span observed, not a wait for a race
	_, then, err := look.conn.Get(look.abs(l.Node()))
	if err != nil {
		t.Fatal(err)
	}
	beats := then.Version - first.Version
	t.Logf("%d beats in half a session timeout (%s)", beats, s.Granted()/2)
	if beats < heartbeats/4 {
		t.Errorf("%d beats in half a session timeout, want about %d", beats, heartbeats/2)
	}
	if l.Err() != nil {
		t.Errorf("lost while beating: %v", l.Err())
	}
}

// TestLeaseAfterReconnect: a short cut is no loss; once the session is
// back, the lease checks its node with a write before it counts again.
func TestLeaseAfterReconnect(t *testing.T) {
	zkc := zktest.Start(t)
	px := zktest.StartProxy(t, zkc.Servers[0].Addr())
	s := connectWith(t, px.Addr(), func(o *Options) { o.StopGrace = time.Second })
	look := connect(t, zkc.Hosts())
	l := hold(t, s, "/lease-reconnect")
	id := s.ID()
	px.Cut()
	waitUntil(t, "the holder to notice the cut", func() bool { state, _, _ := s.current(); return state != zk.StateHasSession })
	_, before, err := look.conn.Get(look.abs(l.Node()))
	if err != nil {
		t.Fatal(err)
	}
	px.Pass()
	waitUntil(t, "a write after the reconnect", func() bool {
		_, now, err := look.conn.Get(look.abs(l.Node()))
		return err == nil && now.Version > before.Version
	})
	if l.Err() != nil || s.ID() != id {
		t.Errorf("after a short cut: lease error %v, session %#x (was %#x); want neither lost", l.Err(), s.ID(), id)
	}
}

// TestLeaseRelease: Release deletes the node at once and ends the
// watchers: the lease is not lost after it, whatever happens to the node.
func TestLeaseRelease(t *testing.T) {
	zkc := zktest.Start(t)
	s, look := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	l := hold(t, s, "/lease-release")
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := look.conn.Exists(look.abs(l.Node())); err != nil || ok {
		t.Fatalf("node after Release: exists %v, err %v", ok, err)
	}
	select {
	case <-l.Done():
		t.Fatalf("lost after its release: %v", l.Err())
	case <-time.After(s.Granted() / 2): // a deadline or beat would have shown by then
	}
	if err := l.Release(); err != nil {
		t.Errorf("a second Release: %v", err)
	}
}

// silence records what a lease tells Silent, with when.
type silence struct {
	nopObserver
	mu   sync.Mutex
	told []bool
	at   []time.Time
}

func (s *silence) Silent(silent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.told, s.at = append(s.told, silent), append(s.at, time.Now())
}

func (s *silence) said() ([]bool, []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.told), slices.Clone(s.at)
}

// TestLeaseSilentBeforeLoss: a stalled holder is told it is silent (half
// its budget without evidence) before its lease is lost, with time left
// between the two; a stall that ends sooner is told over, and the lease
// is kept.
func TestLeaseSilentBeforeLoss(t *testing.T) {
	zkc := zktest.Start(t)
	px := zktest.StartProxy(t, zkc.Servers[0].Addr())
	obs := &silence{}
	s := connectWith(t, px.Addr(), func(o *Options) { o.StopGrace = time.Second; o.Observer = obs })
	l := hold(t, s, "/lease-silent")
	if told, _ := obs.said(); len(told) != 0 {
		t.Fatalf("told %v while the holder hears from zookeeper", told)
	}

	// Short: silent, then heard from again.
	px.Stall()
	waitUntil(t, "silent", func() bool { told, _ := obs.said(); return len(told) == 1 })
	px.Pass()
	waitUntil(t, "heard from again", func() bool { told, _ := obs.said(); return len(told) == 2 })
	if told, _ := obs.said(); !slices.Equal(told, []bool{true, false}) || l.Err() != nil {
		t.Fatalf("told %v, lease error %v; want [true false] and the lease kept", told, l.Err())
	}

	// Long: silent, then lost.
	px.Stall()
	<-l.Done()
	lost := time.Now()
	told, at := obs.said()
	if len(told) != 3 || !told[2] {
		t.Fatalf("told %v before the loss (%v), want a third, true", told, l.Err())
	}
	t.Logf("silent %v before the loss (%v)", lost.Sub(at[2]).Round(time.Millisecond), l.Err())
	if lost.Sub(at[2]) <= 0 {
		t.Errorf("silent %v after the loss, want before", at[2].Sub(lost))
	}
}

// TestLeaseSilentUntilPromptAgain: answers that come late, but not so late
// that the lease is lost, make a holder silent once and keep it silent,
// rather than silent and heard from again at every other beat: a silence
// ends only once the evidence is three quarters of the way back from
// where silence begins to the lag prompt answers leave (wire.go, silence),
// not as soon as it is younger than where it began. Prompt answers end it. The lease is kept
// throughout.
//
// The evidence lags an answer by three round trips and more (a request, a
// sync a while after its answer, a write after that, wire.go E2), so with
// 700ms round trips it is at least 2.1s old, above where a silence ends
// (1.575s with this server's m of 0.1s), and at times younger than where
// it begins (3s, half the budget). The watchdog's patience (1s) outlasts
// the answers, so they close no connection.
func TestLeaseSilentUntilPromptAgain(t *testing.T) {
	slow, s, l, obs := slowHolder(t, 400*time.Millisecond)
	if _, begins, ends := s.live.silence(time.Now()); begins != 3*time.Second || ends != 1575*time.Millisecond {
		t.Fatalf("silence begins at %v and ends at %v, want 3s and 1.575s (granted %v)", begins, ends, s.Granted())
	}

	// 800ms round trips make it silent; then 700ms ones, with which the
	// evidence is at times younger than where silence begins.
	slow.SetDelay(400 * time.Millisecond) // each way
	waitUntil(t, "silent", func() bool { told, _ := obs.said(); return len(told) > 0 })
	slow.SetDelay(350 * time.Millisecond)
	youngest, oldest := time.Hour, time.Duration(0)
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		age, _, _ := s.live.silence(time.Now())
		youngest, oldest = min(youngest, age), max(oldest, age)
		if told, _ := obs.said(); !slices.Equal(told, []bool{true}) || l.Err() != nil {
			t.Fatalf("told %v with 700ms round trips (evidence %v old), lease error %v; want [true] until the answers are prompt, and the lease kept",
				told, age.Round(time.Millisecond), l.Err())
		}
	}
	t.Logf("with 700ms round trips the evidence was %v to %v old over 8s", youngest.Round(time.Millisecond), oldest.Round(time.Millisecond))
	heardOncePrompt(t, slow, l, obs)
}

// slowHolder holds a lease through a zktest.Latency in front of a server
// that grants no session shorter than minSession, with a 10s session and
// a stop grace of 3s, once the session has learned m (a quarter of
// minSession) from the server.
func slowHolder(t *testing.T, minSession time.Duration) (*zktest.Latency, *Session, *Lease, *silence) {
	t.Helper()
	zkc := zktest.Start(t, zktest.SessionTimeouts(minSession, 20*time.Second))
	slow := zktest.StartLatency(t, zkc.Servers[0].Addr())
	obs := &silence{}
	s := connectWith(t, slow.Addr(), func(o *Options) {
		o.SessionTimeout, o.StopGrace, o.Observer = 10*time.Second, 3*time.Second, obs
	})
	l := hold(t, s, "/lease-slow")
	waitUntil(t, "m learned from the server", func() bool { return s.live.margin() == minSession/4 })
	return slow, s, l, obs
}

// heardOncePrompt makes the answers prompt again and expects the silence
// that was told to end, with the lease kept.
func heardOncePrompt(t *testing.T, slow *zktest.Latency, l *Lease, obs *silence) {
	t.Helper()
	slow.SetDelay(0)
	waitUntil(t, "heard from again", func() bool { told, _ := obs.said(); return len(told) == 2 })
	if told, _ := obs.said(); !slices.Equal(told, []bool{true, false}) || l.Err() != nil {
		t.Fatalf("told %v, lease error %v; want [true false] and the lease kept", told, l.Err())
	}
}

// TestLeaseSilenceEndsWithDefaultTick: with ZooKeeper's default bounds
// (minSessionTimeout 4s, twice the default tickTime), m is 1s, and prompt
// answers leave the evidence up to 2s old at a beat: a silence must end
// all the same once they are prompt again, or a pod's label would stay off
// for good after one slow spell.
func TestLeaseSilenceEndsWithDefaultTick(t *testing.T) {
	slow, _, l, obs := slowHolder(t, 4*time.Second)
	slow.SetDelay(400 * time.Millisecond)
	waitUntil(t, "silent", func() bool { told, _ := obs.said(); return len(told) > 0 })
	heardOncePrompt(t, slow, l, obs)
}

// TestLeaseNotSilentWithAServerDown: while a listed server has never
// answered the probe for its minSessionTimeout, m is a quarter of the
// timeout, and prompt answers leave the evidence older than half the
// budget at every beat. That is no silence: a holder whose answers are
// prompt is never told it is silent, or its pod would never get its label.
func TestLeaseNotSilentWithAServerDown(t *testing.T) {
	zkc := zktest.Start(t, zktest.SessionTimeouts(400*time.Millisecond, 20*time.Second))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close() // nothing listens there: connections are refused
	obs := &silence{}
	s := connectWith(t, zkc.Hosts()+","+down, func(o *Options) {
		o.SessionTimeout, o.StopGrace, o.Observer = 10*time.Second, 3*time.Second, obs
	})
	l := hold(t, s, "/lease-server-down")
	oldest := time.Duration(0)
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		age, begins, _ := s.live.silence(time.Now())
		oldest = max(oldest, age)
		if told, _ := obs.said(); len(told) != 0 || l.Err() != nil {
			t.Fatalf("told %v with prompt answers and m %v (evidence %v old, silence begins at %v), lease error %v",
				told, s.live.margin(), age.Round(time.Millisecond), begins, l.Err())
		}
	}
	if m := s.live.margin(); m != 2500*time.Millisecond {
		t.Errorf("m is %v, want a quarter of the timeout while a server has not answered the probe", m)
	}
	t.Logf("with m %v the evidence was at most %v old over 6s", s.live.margin(), oldest.Round(time.Millisecond))
}
