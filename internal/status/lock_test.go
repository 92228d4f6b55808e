package status

import (
	"strings"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/zklock"
)

// TestLockSince: a holder's since is what is known, never a guess: a
// lease's creation, a lock holder's since= word, or null (a kazoo client,
// an older lockex, one not stamped yet); a waiter has none.
func TestLockSince(t *testing.T) {
	created := time.UnixMilli(1796299700000)
	held := time.UnixMilli(1796299725123)
	node := func(data string) []zklock.Contender {
		return []zklock.Contender{{Node: "/lockex/x/n", Identifier: data, Created: created, Token: 7, Position: 1}}
	}
	stamped := "web-0:1 lockex/v1 pod=prod/web-0 ip=192.0.2.3 since=2026-12-03T12:08:45.123Z"
	for _, tc := range []struct {
		name string
		c    zklock.Contenders
		want *time.Time
	}{
		{"stamped lock holder", zklock.Contenders{Size: 1, Holders: node(stamped)}, &held},
		{"kazoo lock holder", zklock.Contenders{Size: 1, Holders: node("kazoo-holder")}, nil},
		{"older lockex", zklock.Contenders{Size: 1, Holders: node("web-0:1 lockex/v0.3.0 pod=prod/web-0")}, nil},
		{"the original tool", zklock.Contenders{Size: 1, Holders: node("vm:42")}, nil},
		{"lease", zklock.Contenders{Semaphore: true, Size: 2, Holders: node("kazoo-holder")}, &created},
		{"stamped lease: its creation still says", zklock.Contenders{Semaphore: true, Size: 2, Holders: node(stamped)}, &created},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.Path = "/lockex/x"
			tc.c.Waiting = node(stamped)
			l := NewLock(&tc.c, 1)
			got := l.Holders[0].Since
			if (got == nil) != (tc.want == nil) || got != nil && !got.Equal(*tc.want) {
				t.Errorf("since %v, want %v", got, tc.want)
			}
			if l.Waiting[0].Since != nil {
				t.Errorf("a waiter's since %v, want none", l.Waiting[0].Since)
			}
			var b strings.Builder
			if err := l.WriteTable(&b, held.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			rows := strings.Split(strings.TrimSpace(b.String()), "\n")
			holder, waiter := strings.Fields(rows[2]), strings.Fields(rows[3])
			wantSince := "-"
			if tc.want != nil {
				wantSince = tc.want.Local().Format(time.RFC3339)
			}
			if holder[6] != wantSince || waiter[6] != created.Local().Format(time.RFC3339) {
				t.Errorf("SINCE of holder %q, waiter %q; want %s and the waiter's creation:\n%s", holder[6], waiter[6], wantSince, b.String())
			}
		})
	}
}
