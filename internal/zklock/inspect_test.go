package zklock

import (
	"context"
	"path"
	"slices"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/lockex/lockex/internal/zktest"
)

// TestInspect lays out nodes by hand, as kazoo and lockex would, and checks
// what Inspect makes of them. Each node's data names it, so the wanted
// order is a list of names.
func TestInspect(t *testing.T) {
	zkc := zktest.Start(t)
	s := connect(t, zkc.Hosts())
	a, b := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())

	// node creates p (and its parents) with data, ephemeral and owned by
	// owner unless owner is nil.
	node := func(t *testing.T, owner *Session, p, data string) {
		t.Helper()
		if _, err := s.ensurePath(path.Dir(p), nil); err != nil {
			t.Fatal(err)
		}
		c, flags := s, int32(0)
		if owner != nil {
			c, flags = owner, zk.FlagEphemeral
		}
		if _, err := c.conn.Create(p, []byte(data), flags, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatalf("create %s: %v", p, err)
		}
	}
	for _, tc := range []struct {
		name      string
		setup     func(t *testing.T, p string)
		semaphore bool
		size      int
		holders   []string
		waiting   []string
	}{
		{name: "missing path is free", setup: func(*testing.T, string) {}},
		{name: "plain node without contenders", setup: func(t *testing.T, p string) { node(t, nil, p, "") }},
		{
			name: "mutex in kazoo's order",
			setup: func(t *testing.T, p string) {
				node(t, a, p+"/b__lock__0000000007", "b")
				node(t, a, p+"/a__lock__0000000003", "a")
				node(t, b, p+"/c__rlock__0000000005", "c")
				node(t, b, p+"/leaseuuid", "not a contender")
				node(t, b, p+"/x__lock__000000001", "too short a sequence")
			},
			size: 1, holders: []string{"a"}, waiting: []string{"c", "b"},
		},
		{
			name: "semaphore",
			setup: func(t *testing.T, p string) {
				node(t, nil, p, "3")
				node(t, a, p+"/ffff", "first lease")
				node(t, b, p+"/0000", "second lease")
				node(t, s, p+"-__lock__/w1__lock__0000000004", "w1")
				node(t, s, p+"-__lock__/w0__lock__0000000002", "w0")
			},
			semaphore: true, size: 3,
			holders: []string{"first lease", "second lease"}, waiting: []string{"w0", "w1"},
		},
		{
			name: "semaphore contender between lease and mutex release",
			setup: func(t *testing.T, p string) {
				node(t, nil, p, "2")
				node(t, a, p+"/aaaa", "a")
				node(t, a, p+"-__lock__/a__lock__0000000000", "a")
				node(t, b, p+"-__lock__/b__lock__0000000001", "b")
			},
			semaphore: true, size: 2, holders: []string{"a"}, waiting: []string{"b"},
		},
		{
			name:      "free semaphore",
			setup:     func(t *testing.T, p string) { node(t, nil, p, "4") },
			semaphore: true, size: 4,
		},
		{
			name:      "kazoo semaphore of one",
			setup:     func(t *testing.T, p string) { node(t, nil, p, "1"); node(t, a, p+"/lease", "k") },
			semaphore: true, size: 1, holders: []string{"k"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := "/inspect/" + newPrefix()
			tc.setup(t, p)
			before := tree(t, s, "/inspect")
			c, err := s.Inspect(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			if c.Path != p || c.Semaphore != tc.semaphore || c.Size != tc.size {
				t.Errorf("path %s semaphore %v size %d; want %s %v %d", c.Path, c.Semaphore, c.Size, p, tc.semaphore, tc.size)
			}
			if got := identifiers(c.Holders); !slices.Equal(got, tc.holders) {
				t.Errorf("holders %q, want %q", got, tc.holders)
			}
			if got := identifiers(c.Waiting); !slices.Equal(got, tc.waiting) {
				t.Errorf("waiting %q, want %q", got, tc.waiting)
			}
			if c.Held() != (len(tc.holders) > 0) {
				t.Errorf("Held() = %v with holders %q", c.Held(), tc.holders)
			}
			for _, list := range [][]Contender{c.Holders, c.Waiting} {
				for i, n := range list {
					checkNode(t, s, n, i+1)
				}
			}
			if after := tree(t, s, "/inspect"); !slices.Equal(before, after) {
				t.Errorf("Inspect changed the tree:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
}

// checkNode compares what Inspect reported for n with the node's stat.
func checkNode(t *testing.T, s *Session, n Contender, position int) {
	t.Helper()
	_, stat, err := s.conn.Get(n.Node)
	if err != nil {
		t.Fatalf("%s: %v", n.Node, err)
	}
	if n.Token != stat.Czxid || !n.Created.Equal(time.UnixMilli(stat.Ctime)) || n.Position != position {
		t.Errorf("%s: token %d created %s position %d; want %d %s %d",
			n.Node, n.Token, n.Created, n.Position, stat.Czxid, time.UnixMilli(stat.Ctime), position)
	}
	if time.Since(n.Created) > time.Minute || time.Since(n.Created) < -time.Minute {
		t.Errorf("%s: created %s, not just now", n.Node, n.Created)
	}
}

// TestInspectSkipsVanishedNode: a node listed but deleted before it was
// read neither holds nor waits; it is no error.
func TestInspectSkipsVanishedNode(t *testing.T) {
	zkc := zktest.Start(t)
	s := connect(t, zkc.Hosts())
	if _, err := s.ensurePath("/vanish/x__lock__0000000001", []byte("there")); err != nil {
		t.Fatal(err)
	}
	got, err := s.readAll("/vanish", []string{"a__lock__0000000000", "x__lock__0000000001"})
	if err != nil {
		t.Fatal(err)
	}
	if ids := identifiers(got); !slices.Equal(ids, []string{"there"}) {
		t.Errorf("read %q, want only the node that exists", ids)
	}
}

func identifiers(cs []Contender) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Identifier)
	}
	return out
}

// tree lists every path under root, for checking that nothing changed.
func tree(t *testing.T, s *Session, root string) []string {
	t.Helper()
	out := []string{root}
	kids, err := s.listChildren(root)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(kids)
	for _, k := range kids {
		out = append(out, tree(t, s, join(root, k))...)
	}
	return out
}
