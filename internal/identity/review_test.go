package identity

import (
	"strings"
	"testing"
)

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

// TestReviewParseTricks: data a peer (kazoo, the original tool, a hand
// made node) may hold that comes near a lockex identity is refused, or
// read as exactly what it says.
func TestReviewParseTricks(t *testing.T) {
	full := "h:1 lockex/v pod=ns/p uid=u container=app"
	for _, data := range []string{
		full + "\n", full + "\x00", "\n" + full, strings.Replace(full, " ", "  ", 1),
		strings.Replace(full, " ", "\t", 1), strings.Replace(full, "pod=ns/p", "pod=ns/a/b", 1),
		strings.Replace(full, "h:1", "a:b:1", 1), strings.Replace(full, "h:1", "h:+1", 1),
		strings.Replace(full, "h:1", "h:1.0", 1), strings.Replace(full, "uid=u", "uid=%75", 1),
		strings.Replace(full, "h:1", "h%3a:1", 1), strings.Replace(full, "h:1", ":1", 1),
		"a:b:1", "h: 1", "",
	} {
		if id, ok := Parse(data); ok {
			t.Errorf("Parse(%q) = %+v, accepted", data, id)
		}
	}
	if id, ok := Parse("h%3Ax:1 lockex/v"); !ok || id.Host != "h:x" || id.PID != 1 {
		t.Errorf("an escaped ':' in the host: %+v, %v", id, ok)
	}
}
