package zklock

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/identity"
	"github.com/lockex/lockex/internal/zktest"
)

// withSince is how lockex stamps: identity.WithSince.
func withSince(o *Options) { o.HeldSince = identity.WithSince }

// TestHolderSaysSince: a mutex holder's node says, from its second beat
// on, when it got the lock, on the server's clock: after its node was
// created (it queued behind another holder), and its later beats keep it.
// The waiter's node says nothing, and the lease is not disturbed.
func TestHolderSaysSince(t *testing.T) {
	zkc := zktest.Start(t)
	first, second := connectWith(t, zkc.Hosts(), withSince), connectWith(t, zkc.Hosts(), withSince)
	look := connect(t, zkc.Hosts())
	self := identity.Identity{Host: "h", PID: 1, Version: "v1", Pod: "web-0", IP: "192.0.2.3"}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	a, err := NewMutex(first, "/since", self.String()).Acquire(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan acquired, 1)
	contend(ctx, "second", func(ctx context.Context) (*Lease, error) {
		return NewMutex(second, "/since", self.String()).Acquire(ctx, true)
	}, got)
	var waiter Contender
	waitUntil(t, "the second contender queued", func() bool {
		c, err := look.Inspect(ctx, "/since")
		if err != nil || len(c.Waiting) != 1 {
			return false
		}
		waiter = c.Waiting[0]
		return true
	})
	if id, ok := identity.Parse(waiter.Identifier); !ok || !id.Since.IsZero() {
		t.Errorf("waiter's data %q: want an identity without since", waiter.Identifier)
	}
	time.Sleep(50 * time.Millisecond) // the waiter's node is older than the moment it gets the lock by at least this
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	b := result(t, got)
	defer b.Release()

	var holder Contender
	var since time.Time
	waitUntil(t, "the holder's node says since when", func() bool {
		c, err := look.Inspect(ctx, "/since")
		if err != nil || len(c.Holders) != 1 {
			return false
		}
		holder = c.Holders[0]
		id, ok := identity.Parse(holder.Identifier)
		since = id.Since
		return ok && !since.IsZero()
	})
	t.Logf("holder %s created %s, since %s", holder.Node, holder.Created.Format(time.RFC3339Nano), since.Format(time.RFC3339Nano))
	want := self
	want.Since = since
	if holder.Identifier != want.String() || holder.Node != b.Node() || holder.Token != b.Token() {
		t.Errorf("holder %+v, want node %s with data %q", holder, b.Node(), want.String())
	}
	if since.Before(holder.Created.Add(50 * time.Millisecond)) {
		t.Errorf("since %s is not after the node queued (%s) and waited", since, holder.Created)
	}
	// Later beats write the stamped data again, never the unstamped one.
	for range 5 {
		time.Sleep(second.Granted() / heartbeats)
		data, _, err := look.conn.Get(look.abs(b.Node()))
		if err != nil || string(data) != want.String() {
			t.Fatalf("after more beats the node holds %q, %v; want %q", data, err, want.String())
		}
	}
	if b.Err() != nil {
		t.Errorf("the stamp disturbed the lease: %v", b.Err())
	}
}

// TestSemaphoreNotStamped: a lease is created as it is taken, so its
// ctime says since when; its data stays as created. Nor does the turn's
// holder, waiting for a lease, say since when it holds the turn: it holds
// nothing a reader asks about.
func TestSemaphoreNotStamped(t *testing.T) {
	zkc := zktest.Start(t)
	s, w := connectWith(t, zkc.Hosts(), withSince), connectWith(t, zkc.Hosts(), withSince)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	var leases []*Lease
	for range 2 {
		l, err := NewSemaphore(s, "/sem", "h:1 lockex/v1", 2).Acquire(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release()
		leases = append(leases, l)
	}
	got := make(chan acquired, 1)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	contend(wctx, "third", func(ctx context.Context) (*Lease, error) {
		return NewSemaphore(w, "/sem", "h:2 lockex/v1", 2).Acquire(ctx, true)
	}, got)
	var turn string
	waitUntil(t, "the third contender holds the turn", func() bool {
		kids, err := s.children("/sem-__lock__")
		if err != nil || len(kids) != 1 {
			return false
		}
		turn = "/sem-__lock__/" + kids[0]
		return true
	})
	time.Sleep(5 * s.Granted() / heartbeats) // a few beats
	for _, node := range []string{leases[0].Node(), leases[1].Node(), turn} {
		data, stat, err := s.conn.Get(s.abs(node))
		if err != nil {
			t.Fatalf("%s: %v", node, err)
		}
		// Beaten (version > 0), so a stamp would have shown by now.
		if !strings.HasPrefix(string(data), "h:") || strings.Contains(string(data), "since=") || stat.Version == 0 {
			t.Errorf("%s holds %q (version %d); want its data as created, beaten", node, data, stat.Version)
		}
	}
}
