package zklock

import (
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// go-zookeeper keeps two facts to itself that SPEC section 4 needs: the
// session timeout the server granted, and when the server last answered.
// Rather than fork the library, lockex reads them off the wire through the
// library's public WithDialer option: wireConn wraps each connection and
// follows ZooKeeper's framing (a 4-byte length, then the packet), which is
// stable protocol, not library internals.
//
// Requests carry an xid and are answered in order on a connection, so the
// send times of unanswered requests form a queue: each reply pops the
// oldest, and that send time is the latest moment the server is known to
// have heard from this session. The server restarts its expiry timer when
// a request arrives, which is after it was sent: counting from the send
// time is on the safe side.

// liveness is what the wire has shown about the session, across connections.
type liveness struct {
	mu           sync.Mutex
	granted      time.Duration // session timeout in the last connect answer
	lastAnswered time.Time     // send time of the last request answered
}

func (l *liveness) snapshot() (granted time.Duration, lastAnswered time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.granted, l.lastAnswered
}

// wireConn is one connection to a server, observed.
type wireConn struct {
	net.Conn
	live *liveness

	mu      sync.Mutex
	sent    []time.Time // send times of requests not yet answered
	out, in framer
}

func newWireConn(c net.Conn, live *liveness) *wireConn {
	return &wireConn{Conn: c, live: live}
}

// Write notes the send time of every packet that starts in b. The first
// packet on a connection is the connect request, which has no xid but is
// answered (by the connect response) all the same.
func (w *wireConn) Write(b []byte) (int, error) {
	now := time.Now()
	w.mu.Lock()
	w.out.feed(b, func(_ []byte) { w.sent = append(w.sent, now) })
	w.mu.Unlock()
	return w.Conn.Write(b)
}

// Read pops a send time for every answer that starts in what was read.
func (w *wireConn) Read(b []byte) (int, error) {
	n, err := w.Conn.Read(b)
	w.mu.Lock()
	w.in.feed(b[:n], w.answered)
	w.mu.Unlock()
	return n, err
}

// xidNotification marks a watch event: the server sends it unasked.
const xidNotification = -1

// answered handles the head of one incoming packet (up to 16 bytes).
func (w *wireConn) answered(head []byte) {
	first := w.in.packets == 1
	if !first && len(head) >= 4 && int32(binary.BigEndian.Uint32(head)) == xidNotification {
		return
	}
	if len(w.sent) == 0 {
		return // an answer to nothing: not ours to interpret
	}
	sentAt := w.sent[0]
	w.sent = w.sent[1:]
	w.live.mu.Lock()
	defer w.live.mu.Unlock()
	if first && len(head) >= 8 {
		// Connect response: protocol version, timeout in ms, session id, ...
		// A refused (expired) session answers with timeout 0.
		if ms := int32(binary.BigEndian.Uint32(head[4:8])); ms > 0 {
			w.live.granted = time.Duration(ms) * time.Millisecond
		} else {
			return
		}
	}
	if sentAt.After(w.live.lastAnswered) {
		w.live.lastAnswered = sentAt
	}
}

// framer splits a byte stream into ZooKeeper packets and hands on the
// first bytes of each, however the stream was cut into reads or writes.
type framer struct {
	hdr     [4 + 16]byte // length prefix and the packet's first 16 bytes
	have    int          // bytes of hdr filled for the current packet
	want    int          // bytes of hdr needed for the current packet
	skip    int          // packet bytes left after hdr
	packets int          // packets started so far
}

func (f *framer) feed(b []byte, onHead func(head []byte)) {
	for len(b) > 0 {
		switch {
		case f.have == 0 && f.skip > 0: // the rest of a packet
			n := min(f.skip, len(b))
			f.skip -= n
			b = b[n:]
		case f.have < 4: // the length prefix
			n := copy(f.hdr[f.have:4], b)
			f.have += n
			b = b[n:]
			if f.have == 4 {
				size := int(binary.BigEndian.Uint32(f.hdr[:4]))
				f.want = 4 + min(size, 16)
				f.skip = size - (f.want - 4)
				f.packets++
				f.complete(onHead)
			}
		default: // the packet's head
			n := copy(f.hdr[f.have:f.want], b)
			f.have += n
			b = b[n:]
			f.complete(onHead)
		}
	}
}

func (f *framer) complete(onHead func(head []byte)) {
	if f.have == f.want {
		onHead(f.hdr[4:f.want])
		f.have = 0
	}
}
