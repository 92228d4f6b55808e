package app

import (
	"io"
	"log/slog"
	"testing"

	"github.com/lockex/lockex/internal/identity"
)

// TestReviewClaimOnce: one live lockex at a time holds a container's
// identity in a network namespace; a twin takes over nothing and writes
// no pod UID, so the holder of the claim never takes the twin's nodes.
func TestReviewClaimOnce(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	self := identity.Identity{Host: "h", PID: 1, Version: "v", Pod: "p", UID: "review-claim-" + t.Name(), Container: "app"}
	held := identityClaim
	identityClaim = nil // this test's process has claimed nothing yet
	t.Cleanup(func() {
		if identityClaim != nil {
			identityClaim.Close()
		}
		identityClaim = held
	})
	first, firstID := earlierSelf(self, log)
	if first == nil || firstID != self {
		t.Fatalf("the first claim: %v, %+v", first != nil, firstID)
	}
	// The same lockex's next session claims nothing anew.
	again, againID := earlierSelf(self, log)
	if again == nil || againID != self {
		t.Fatalf("the same lockex's next session: takes over %v, writes %q", again != nil, againID.String())
	}
	// A twin is another process, which does not hold the claim.
	mine := identityClaim
	identityClaim = nil
	twin, twinID := earlierSelf(self, log)
	identityClaim = mine
	if twin != nil || twinID.UID != "" {
		t.Fatalf("the twin: takes over %v, writes %q", twin != nil, twinID.String())
	}
	if first([]byte(twinID.String())) {
		t.Errorf("the claim's holder takes the twin's node %q for its dead incarnation's", twinID.String())
	}
	if !first([]byte(self.String())) {
		t.Errorf("the claim's holder does not know its own identity %q", self.String())
	}
}
