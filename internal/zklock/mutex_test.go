package zklock

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/lockex/lockex/internal/zktest"
)

func TestPredecessorOrdersAsKazoo(t *testing.T) {
	kids := []string{
		"b__lock__0000000007", "a__lock__0000000003", "c__rlock__0000000005",
		"leaseuuid", "x__lock__000000001", // not contenders: no 10-digit sequence
		"d__lock__0000000009",
	}
	for own, want := range map[string]struct {
		pred  string
		ahead int
	}{
		"a__lock__0000000003":  {"", 0},
		"c__rlock__0000000005": {"a__lock__0000000003", 1},
		"b__lock__0000000007":  {"c__rlock__0000000005", 2},
		"d__lock__0000000009":  {"b__lock__0000000007", 3},
	} {
		pred, ahead := predecessor(kids, own)
		if pred != want.pred || ahead != want.ahead {
			t.Errorf("predecessor of %s = %s, %d; want %s, %d", own, pred, ahead, want.pred, want.ahead)
		}
	}
}

func connect(t *testing.T, hosts string) *Session {
	t.Helper()
	s, err := Connect(context.Background(), Options{
		Servers: strings.Split(hosts, ","), SessionTimeout: 4 * time.Second,
		ConnectTimeout: 5 * time.Second, Attempts: 1, Retries: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestAdoptsNodeOfLostCreate: a create whose answer was lost left a node
// with this contender's prefix; Acquire takes it instead of queueing a
// second node behind it (samuel/go-zookeeper#229's self-deadlock).
func TestAdoptsNodeOfLostCreate(t *testing.T) {
	zkc := zktest.Start(t)
	s := connect(t, zkc.Hosts())
	m := NewMutex(s, "/adopt", "me")
	if _, err := s.ensurePath("/adopt", nil); err != nil {
		t.Fatal(err)
	}
	lost, err := s.conn.Create("/adopt/"+m.prefix, m.data, zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
	if err != nil {
		t.Fatal(err)
	}
	lease, err := m.Acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if lease.Node() != lost {
		t.Errorf("took %s, want the lost create's %s", lease.Node(), lost)
	}
	if kids, _ := s.children("/adopt"); len(kids) != 1 {
		t.Errorf("children %v, want only the adopted node", kids)
	}
}

// TestNeverAdoptsAnotherSessionsNode: a node with the same prefix that
// another session owns (an expired session's, still listed) is not ours.
func TestNeverAdoptsAnotherSessionsNode(t *testing.T) {
	zkc := zktest.Start(t)
	s, other := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	m := NewMutex(s, "/foreign", "me")
	if _, err := other.ensurePath("/foreign", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := other.conn.Create("/foreign/"+m.prefix, nil, zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	_, err := m.Acquire(context.Background(), false)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("err = %v, want ErrBusy: the other session's node is ahead", err)
	}
	if kids, _ := s.children("/foreign"); len(kids) != 1 {
		t.Errorf("children %v: own node not cleaned up", kids)
	}
}

// TestCancelDeletesNode: a waiter whose context ends deletes its node
// before Acquire returns.
func TestCancelDeletesNode(t *testing.T) {
	zkc := zktest.Start(t)
	s := connect(t, zkc.Hosts())
	holder, err := NewMutex(s, "/cancel", "holder").Acquire(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := NewMutex(s, "/cancel", "waiter").Acquire(ctx, true); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
	if kids, _ := s.children("/cancel"); len(kids) != 1 {
		t.Errorf("children %v, want only the holder's", kids)
	}
	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
}

// TestBehindNamesTheHolderTakenOverFrom: a waiter is told the data of the
// node it waits directly behind, with the watch's own round trip; when it
// holds at last, the last it was told is the holder it took over from.
func TestBehindNamesTheHolderTakenOverFrom(t *testing.T) {
	zkc := zktest.Start(t)
	holder := connect(t, zkc.Hosts())
	first, err := NewMutex(holder, "/behind", "the holder").Acquire(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	told := make(chan string, 8)
	s, err := Connect(context.Background(), Options{
		Servers: strings.Split(zkc.Hosts(), ","), SessionTimeout: 4 * time.Second,
		ConnectTimeout: 5 * time.Second, Attempts: 1, Retries: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Behind: func(data []byte) { told <- string(data) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	acquired := make(chan error, 1)
	go func() {
		lease, err := NewMutex(s, "/behind", "the waiter").Acquire(context.Background(), true)
		if err == nil {
			err = lease.Release()
		}
		acquired <- err
	}()
	select {
	case got := <-told:
		if got != "the holder" {
			t.Errorf("told %q, want the holder's data", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter was never told whom it waits behind")
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	if err := <-acquired; err != nil {
		t.Fatal(err)
	}
}
