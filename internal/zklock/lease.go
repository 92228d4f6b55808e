package zklock

import "time"

// Lease is a held lock or semaphore lease.
type Lease struct {
	s          *Session
	path, node string
	token      int64
	waited     time.Duration
}

// Path is P, the lock's znode, as the client sees it (inside the chroot).
func (l *Lease) Path() string { return l.path }

// Node is this holder's own znode, as the client sees it.
func (l *Lease) Node() string { return l.node }

// Token is Node's czxid: it grows with every new holder, so a resource can
// refuse writes from a holder older than the newest it has seen.
func (l *Lease) Token() int64 { return l.token }

// Waited is how long acquiring took.
func (l *Lease) Waited() time.Duration { return l.waited }

// Release deletes the holder's node at once, so the next contender need not
// wait for the session to end. It returns without waiting longer than the
// connect timeout; closing the session then removes the node all the same.
func (l *Lease) Release() error {
	return l.s.deleteNode(l.node)
}
