package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/activecheck"
	"github.com/lockex/lockex/internal/status"
	"github.com/lockex/lockex/internal/supervisor"
)

// fedProbe is a check whose every answer the test hands it: a check in
// flight waits for the next one.
type fedProbe chan error

func (p fedProbe) Check(ctx context.Context) error {
	select {
	case err := <-p:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (fedProbe) String() string { return "exec fed" }

var errUnfit = errors.New("exit 1")

// TestReviewStandbyAfreshAfterLeaving: the supervisor leaves the queue
// (Check(0) while it replaces its session) and asks for the round's
// checks again (Check(round)); supervisor.Standby promises those checks
// afresh, "not fit until a check passes". A check that passed while the
// standby was leaving must not carry over: the first check after the
// new session that fails is not fit, and the standby must not queue on
// it. The session is replaced in milliseconds, as the checker runs a
// check: the two calls come together, as they do here.
func TestReviewStandbyAfreshAfterLeaving(t *testing.T) {
	probe := make(fedProbe)
	s := &standbyCheck{
		probe:     probe,
		threshold: 2,
		checker: activecheck.New(activecheck.Config{
			Probe: probe, Period: 10 * time.Millisecond, Timeout: time.Minute, FailureThreshold: 2,
		}),
		results: make(chan supervisor.StandbyResult),
		over:    make(chan struct{}),
	}
	rec := status.New(slog.New(slog.NewTextHandler(io.Discard, nil)), "/review", 1, func(status.Event, status.Snapshot) {})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.start(ctx, rec)
	defer s.stop()

	step := func(feed error) supervisor.StandbyResult {
		t.Helper()
		select {
		case probe <- feed:
		case <-time.After(10 * time.Second):
			t.Fatal("no check asked for an answer")
		}
		select {
		case res := <-s.results:
			return res
		case <-time.After(10 * time.Second):
			t.Fatal("no result")
		}
		panic("unreachable")
	}
	s.Check(1)
	if res := step(nil); !res.Fit {
		t.Fatalf("after a pass: %+v", res)
	}
	step(errUnfit)
	if res := step(errUnfit); res.Fit {
		t.Fatalf("after 2 failures, threshold 2: %+v", res)
	}
	// The supervisor leaves the queue now; the next check passes as it does.
	if res := step(nil); !res.Fit {
		t.Fatalf("a pass: %+v", res)
	}
	s.Check(0)
	s.Check(1)
	for i := 0; ; i++ {
		if i == 10 {
			t.Fatal("no result after the session was replaced")
		}
		select {
		case probe <- errUnfit:
			continue
		case res := <-s.results:
			if res.Round == 1 && res.Fit {
				t.Fatalf("after the standby left the queue, its first check failed, and it is fit (%+v): it queues on a pass from before it left", res)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no check, no result")
		}
		break
	}
}
