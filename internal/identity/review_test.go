package identity

import "testing"

// TestReviewOwnNodeReadBack: what a lockex writes, read back, is its own
// identity, whatever subset of the pod's words it was given: a restarted
// lockex with a namespace but no pod name still knows its dead
// incarnation's node.
func TestReviewOwnNodeReadBack(t *testing.T) {
	for _, self := range []Identity{
		{Host: "h", PID: 1, Version: "v1", UID: "u", Container: "app"},
		{Host: "h", PID: 1, Version: "v1", Pod: "p", UID: "u", Container: "app"},
		{Host: "h", PID: 1, Version: "v1", Namespace: "prod", Pod: "p", UID: "u", Container: "app"},
		{Host: "h", PID: 1, Version: "v1", Namespace: "prod", UID: "u", Container: "app"},
		{Host: "h:x y", PID: 1, Version: "v 1%", Namespace: "a/b", Pod: "c/d", UID: "u u", Container: "a=p"},
	} {
		other, ok := Parse(self.String())
		if !ok || !self.CanTakeOver(other) {
			t.Errorf("%+v: Parse(%q) = %+v, %v; CanTakeOver %v, want its own node", self, self.String(), other, ok, self.CanTakeOver(other))
		}
	}
}
