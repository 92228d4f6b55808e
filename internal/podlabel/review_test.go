package podlabel

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// Review of issue 15's pod patches: an API server that refuses with what
// RBAC or validation answer, one that hangs, and a drain that comes while
// a patch adding the label is still on its way.

// statusAPI wraps a's handler: while code holds a status, every patch is
// answered with it, as RBAC (403), a conflict (409) or validation (422)
// would, and nothing is applied.
func statusAPI(a *apiServer, code *atomic.Int32) {
	inner := a.srv.Config.Handler
	a.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := int(code.Load()); c != 0 {
			a.mu.Lock()
			a.calls++
			a.mu.Unlock()
			w.WriteHeader(c)
			_, _ = fmt.Fprintf(w, `{"kind":"Status","code":%d,"message":"refused with %d"}`, c, c)
			return
		}
		inner.ServeHTTP(w, r)
	})
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestReviewRefusals: with 403, 409 and 422 the label and cost are retried
// (each failure counted, the patches bounded by the backoff), a drain
// never counts as done while refused, and once the API server accepts,
// the last wish lands and the drain is done.
func TestReviewRefusals(t *testing.T) {
	for _, status := range []int{http.StatusForbidden, http.StatusConflict, http.StatusUnprocessableEntity} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			a := startAPIServer(t)
			var code atomic.Int32
			statusAPI(a, &code)
			cfg := a.config(t)
			cfg.DeletionCost = true
			var failures atomic.Int64
			l := New(cfg, slog.New(slog.DiscardHandler), func() { failures.Add(1) })
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(func() { cancel(); <-l.done })
			go l.Run(ctx)
			l.Set(Wish{Active: true, Held: true})
			eventually(t, "the holder's label and cost", func() bool { v, _ := a.label(); return v == "true" && a.cost() == HolderCost })

			code.Store(int32(status))
			drained := l.Drain()
			l.Set(Wish{Active: true, Held: false})
			eventually(t, "two refusals", func() bool { return failures.Load() >= 2 })
			if closed(drained) {
				t.Fatal("drained while the API server refuses the patch")
			}
			if v, _ := a.label(); v != "true" {
				t.Fatalf("label %q changed while refused", v)
			}
			code.Store(0)
			eventually(t, "drained once accepted", func() bool { return closed(drained) })
			eventually(t, "the last wish applied: no label, the low cost", func() bool {
				_, labelled := a.label()
				return !labelled && a.cost() == StandbyCost
			})
		})
	}
}

// hangingAPI wraps a's handler, before any request: while hang is set, a
// patch is held without an answer until release closes (or the client
// gives up); each one held is sent on hung first.
func hangingAPI(a *apiServer, hang *atomic.Bool, hung chan<- struct{}, release chan struct{}) {
	inner := a.srv.Config.Handler
	a.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			select {
			case hung <- struct{}{}:
			default:
			}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		inner.ServeHTTP(w, r)
	})
}

// TestReviewHungAtExit: with the API server hanging a patch, lockex's exit
// path neither waits for the client's own timeout nor for the server: Run
// ends as its context does, and Clear returns after its own bound. The
// client's timeout is made an hour, so that only the contexts can end it.
func TestReviewHungAtExit(t *testing.T) {
	a := startAPIServer(t)
	var hang atomic.Bool
	hung, release := make(chan struct{}, 1), make(chan struct{})
	t.Cleanup(func() { close(release) })
	hangingAPI(a, &hang, hung, release)
	cfg := a.config(t)
	cfg.DeletionCost = true
	l := New(cfg, slog.New(slog.DiscardHandler), nil)
	l.client.Timeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	go l.Run(ctx)
	eventually(t, "the standby at start", func() bool { return a.cost() == StandbyCost })

	hang.Store(true)
	l.Set(Wish{Active: true, Held: true})
	<-hung
	drained := l.Drain()
	cancel()
	cleared := make(chan struct{})
	go func() { l.Clear(200 * time.Millisecond); close(cleared) }()
	select {
	case <-cleared:
	case <-time.After(30 * time.Second): // a bound for a hang, not a timing
		t.Fatal("Clear did not return with the API server hanging: lockex's exit waits on the API server")
	}
	if closed(drained) {
		t.Error("drained though no patch without the label was answered")
	}
}

// TestReviewDrainDuringSet: the drain comes while a patch that adds the
// label is on its way: its success is not taken for the drain, which is
// done only once a patch without the label is answered, and the label is
// off then.
func TestReviewDrainDuringSet(t *testing.T) {
	a := startAPIServer(t)
	var hang atomic.Bool
	hung, release := make(chan struct{}, 1), make(chan struct{})
	hangingAPI(a, &hang, hung, release)
	l := New(a.config(t), slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-l.done })
	go l.Run(ctx)
	eventually(t, "the stale label removed at start", func() bool { _, ok := a.label(); return !ok })

	hang.Store(true)
	l.Set(Wish{Active: true})
	<-hung // the set is held by the server
	drained := l.Drain()
	hang.Store(false)
	close(release) // the set is applied and answered now
	eventually(t, "drained", func() bool { return closed(drained) })
	if v, ok := a.label(); ok {
		t.Errorf("drained, and the pod carries the label %q: the set's answer was taken for the drain", v)
	}
}

// TestReviewStaleCostAfterLoss: a holder that loses the lock while the API
// server refuses keeps the high cost only while it refuses (each failure
// counted); once it answers, the low cost lands without any new wish; and
// an exit while it still refuses returns, counted, leaving the stale cost
// for the next container's start to correct.
func TestReviewStaleCostAfterLoss(t *testing.T) {
	a := startAPIServer(t)
	var code atomic.Int32
	statusAPI(a, &code)
	cfg := a.config(t)
	cfg.DeletionCost = true
	var failures atomic.Int64
	l := New(cfg, slog.New(slog.DiscardHandler), func() { failures.Add(1) })
	ctx, cancel := context.WithCancel(context.Background())
	go l.Run(ctx)
	l.Set(Wish{Active: true, Held: true})
	eventually(t, "the holder's cost", func() bool { return a.cost() == HolderCost })

	code.Store(http.StatusServiceUnavailable)
	l.Set(Wish{}) // the loss
	eventually(t, "a refused patch", func() bool { return failures.Load() >= 1 })
	if got := a.cost(); got != HolderCost {
		t.Fatalf("cost %q while refused", got)
	}
	code.Store(0)
	eventually(t, "the low cost once the API server answers", func() bool { return a.cost() == StandbyCost })

	l.Set(Wish{Held: true})
	eventually(t, "the holder's cost again", func() bool { return a.cost() == HolderCost })
	code.Store(http.StatusServiceUnavailable)
	before := failures.Load()
	cancel()
	l.Clear(500 * time.Millisecond)
	if failures.Load() == before {
		t.Error("the failed patch at exit was not counted")
	}
	if got := a.cost(); got != HolderCost {
		t.Errorf("cost %q: the refusing server changed it", got)
	}

	// The next container of the pod: its start corrects the stale cost.
	code.Store(0)
	next := New(cfg, slog.New(slog.DiscardHandler), nil)
	ctx2, cancel2 := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel2(); <-next.done })
	go next.Run(ctx2)
	eventually(t, "the next start sets the low cost", func() bool { return a.cost() == StandbyCost })
}

// TestReviewLastWishWinsSlowServer: wishes that change faster than a slow
// API server answers end with the pod carrying the last one, label and
// cost together, and no patch sent before it lands after it: Run sends one
// patch at a time, so the server applies them in the order they were sent.
func TestReviewLastWishWinsSlowServer(t *testing.T) {
	a := startAPIServer(t)
	var inFlight, maxInFlight atomic.Int32
	inner := a.srv.Config.Handler
	a.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(3 * time.Millisecond) // slow, so that wishes pile up
		inner.ServeHTTP(w, r)
	})
	cfg := a.config(t)
	cfg.DeletionCost = true
	l := New(cfg, slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-l.done })
	go l.Run(ctx)
	var last Wish
	for i := range 300 {
		last = Wish{Active: i%3 == 0, Held: i%5 != 0}
		l.Set(last)
		if i%7 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	matches := func() bool {
		v, labelled := a.label()
		return labelled == last.Active && (!labelled || v == "true") && a.cost() == cost(last.Held)
	}
	eventually(t, "the pod carries the last wish", matches)
	before := a.patches()
	eventually(t, "the patches stop", func() bool {
		n := a.patches()
		time.Sleep(100 * time.Millisecond)
		return a.patches() == n
	})
	if !matches() {
		t.Errorf("a patch after the last wish changed the pod: %d patches after it matched", a.patches()-before)
	}
	if m := maxInFlight.Load(); m != 1 {
		t.Errorf("%d patches at once, want one at a time", m)
	}
}
