package zklock

import (
	"errors"

	"github.com/go-zookeeper/zk"
)

// takeOver deletes the nodes under parent, among the names that count
// (contender names for a mutex, every child for a semaphore's leases),
// that an earlier incarnation of this contender left: their data is
// accepted by Options.EarlierSelf and another session owns them. That
// incarnation is dead, so nothing runs under its node, but its session
// lives on the server until it expires, and with it the node, holding up
// everyone queued behind it (docs/design.md §3.4).
//
// It never fails the recipe: a node it cannot delete (no answer, refused
// by the ACL) stays until its session expires, as it would without this.
func (s *Session) takeOver(parent string, counts func(name string) bool) {
	if s.opts.EarlierSelf == nil {
		return
	}
	names, err := s.children(parent)
	if err != nil {
		if !errors.Is(err, zk.ErrNoNode) {
			s.log.Warn("could not look for nodes of an earlier incarnation", "path", parent, "err", err)
		}
		return
	}
	for _, name := range names {
		if !counts(name) {
			continue
		}
		p := join(parent, name)
		data, stat, err := s.conn.Get(s.abs(p))
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			s.log.Warn("could not look for nodes of an earlier incarnation", "node", p, "err", err)
			return
		}
		// A persistent node is no contender's; a node of this session
		// is this run's own.
		if stat.EphemeralOwner == 0 || stat.EphemeralOwner == s.ID() || !s.opts.EarlierSelf(data) {
			continue
		}
		// The version read: a node that changed since was written by a
		// live session, whatever its data says; leave it alone.
		err = s.conn.Delete(s.abs(p), stat.Version)
		switch {
		case err == nil:
			s.obs.EarlierDeleted(p, string(data), stat.EphemeralOwner)
		case errors.Is(err, zk.ErrNoNode):
			// Its session expired meanwhile: gone all the same.
		case errors.Is(err, zk.ErrBadVersion):
			s.log.Warn("a node with this container's identity changed while being looked at; left to its session", "node", p, "identifier", string(data))
		default:
			s.log.Warn("could not delete a node of an earlier incarnation; it goes when its session expires", "node", p, "err", err)
		}
	}
}
