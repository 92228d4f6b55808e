package zklock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

// Contender is one node taking part in a lock: a holder or a waiter.
type Contender struct {
	// Node is the node's full path, as the client sees it (inside the
	// chroot), as LOCKEX_LOCK_NODE gives it to the workload.
	Node string
	// Identifier is the node's data: for lockex and the original tool one
	// line starting hostname:pid (package identity), whatever a kazoo
	// client was given otherwise.
	Identifier string
	// Created is the node's creation time on the server (Stat.Ctime).
	Created time.Time
	// Token is the node's czxid, the holder's LOCKEX_FENCING_TOKEN.
	Token int64
	// Position is the 1-based place in its list: among holders the oldest
	// first, among waiters the next in line first.
	Position int

	session int64 // the node's ephemeralOwner
}

// Contenders is who holds a lock and who waits for it, as Inspect found it.
type Contenders struct {
	Path string // P, as the client sees it
	// Semaphore reports that P holds a semaphore's size as decimal text.
	Semaphore bool
	// Size is how many may hold at once as ZooKeeper records it: N for a
	// semaphore, 1 for a lock with contenders, and 0 when ZooKeeper does not
	// say (P is missing, or holds neither a size nor contenders), so the
	// caller's own idea of the lock stands.
	Size int
	// Holders hold the lock (at most one) or the semaphore's leases. A
	// semaphore may show more than Size when clients disagreed on it.
	Holders []Contender
	// Waiting are queued: a mutex's contenders behind the holder, or the
	// contenders of a semaphore's serialising mutex at P-__lock__.
	Waiting []Contender
}

// Held reports whether anyone holds the lock or one of its leases.
func (c *Contenders) Held() bool { return len(c.Holders) > 0 }

// Inspect reads who holds the lock or semaphore at path and who waits for
// it, without creating, watching or changing anything, so an operator can
// run it against a production lock at any time. A missing path is a free
// lock. A connection problem is retried as the recipes retry it; giving up
// returns an error wrapping ErrUnreachable.
func (s *Session) Inspect(ctx context.Context, path string) (*Contenders, error) {
	r := retrier{s: s}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, err := s.inspect(path)
		if err == nil {
			return c, nil
		}
		if err = r.again(ctx, "inspect "+path, err); err != nil {
			return nil, err
		}
	}
}

func (s *Session) inspect(path string) (*Contenders, error) {
	c := &Contenders{Path: path}
	data, _, err := s.conn.Get(s.abs(path))
	if errors.Is(err, zk.ErrNoNode) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if n, err := strconv.Atoi(string(data)); err == nil {
		return s.inspectSemaphore(c, n)
	}
	queue, err := s.queue(path)
	if err != nil {
		return nil, err
	}
	if len(queue) > 0 {
		c.Size = 1
		c.Holders, c.Waiting = renumber(queue[:1]), renumber(queue[1:])
	}
	return c, nil
}

// inspectSemaphore lists the leases of a semaphore of size n, oldest first,
// and the contenders queued for its serialising mutex. The mutex's first
// contender waits too: it holds only the right to look for a free lease.
func (s *Session) inspectSemaphore(c *Contenders, n int) (*Contenders, error) {
	c.Semaphore, c.Size = true, n
	names, err := s.listChildren(c.Path)
	if err != nil {
		return nil, err
	}
	leases, err := s.readAll(c.Path, names)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(leases, func(a, b Contender) int { return cmp.Compare(a.Token, b.Token) })
	waiting, err := s.queue(c.Path + "-__lock__")
	if err != nil {
		return nil, err
	}
	// Between creating its lease and releasing the mutex a contender has
	// both nodes; the session that owns a lease is a holder, not a waiter.
	holding := map[int64]bool{}
	for _, l := range leases {
		holding[l.session] = l.session != 0
	}
	waiting = slices.DeleteFunc(waiting, func(w Contender) bool { return holding[w.session] })
	c.Holders, c.Waiting = renumber(leases), renumber(waiting)
	return c, nil
}

// queue reads the mutex contenders at path in the order the recipe gives
// them the lock: by sequence compared as a string, as predecessor and
// kazoo compare it. Nodes that are not contenders are left out.
func (s *Session) queue(path string) ([]Contender, error) {
	names, err := s.listChildren(path)
	if err != nil {
		return nil, err
	}
	names = slices.DeleteFunc(names, func(n string) bool { return !contender.MatchString(n) })
	slices.SortFunc(names, func(a, b string) int {
		return strings.Compare(contender.FindStringSubmatch(a)[1], contender.FindStringSubmatch(b)[1])
	})
	return s.readAll(path, names)
}

// listChildren lists path's children; a missing path has none.
func (s *Session) listChildren(path string) ([]string, error) {
	names, err := s.children(path)
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", path, err)
	}
	return names, nil
}

// readAll reads the named children of parent, in order. A node deleted
// since the listing (released, or its session gone) is left out: it
// neither holds nor waits any more.
func (s *Session) readAll(parent string, names []string) ([]Contender, error) {
	var nodes []Contender
	for _, name := range names {
		p := join(parent, name)
		data, stat, err := s.conn.Get(s.abs(p))
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		nodes = append(nodes, Contender{
			Node:       p,
			Identifier: string(data),
			Created:    time.UnixMilli(stat.Ctime),
			Token:      stat.Czxid,
			session:    stat.EphemeralOwner,
		})
	}
	return nodes, nil
}

// renumber sets each contender's Position to its 1-based place.
func renumber(cs []Contender) []Contender {
	for i := range cs {
		cs[i].Position = i + 1
	}
	return cs
}
