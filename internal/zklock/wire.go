package zklock

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"
)

// go-zookeeper keeps to itself what docs/design.md §5.2 needs: the session
// timeout the server granted, and when the server last answered what.
// Rather than fork the library, lockex reads both off the wire through the
// library's public WithDialer option: wireConn wraps each connection and
// follows ZooKeeper's framing (a 4-byte length, then the packet), which is
// stable protocol, not library internals. A request starts with its xid
// and opcode, an answer with the xid, the zxid and an error code, and
// answers come in the order of the requests.
//
// What the holder may count on is when the LEADER last renewed the session:
// only the leader expires sessions. That is not when a server last
// answered. The rule below, with the facts it rests on (ZooKeeper 3.8.0,
// tag release-3.8.0-1; files under zookeeper-server/src/main/java/org/
// apache/zookeeper/server/, in quorum/ for Leader*, Learner*, Follower*
// and ProposalRequestProcessor):
//
//   - F1. Any server renews ("touches") the session as it takes in a
//     request, before processing it (ZooKeeperServer.java:1164 in
//     submitRequestNow); auth packets alone are answered without
//     (processPacket, :1597). On the leader or a standalone server that is
//     the expiry itself (SessionTrackerImpl.java:179 touchSession: expiry =
//     now + timeout, rounded up to a tick by ExpiryQueue.java:84). A
//     follower only notes the session in a table (LearnerSessionTracker.
//     java:139) and tells the leader in its answer to the leader's next
//     ping (Learner.java:842 ping, getTouchSnapshot), where the leader
//     touches it (LearnerHandler.java:683; touchSession returns false,
//     touching nothing, once the session expired).
//   - F2. The leader pings each follower every tickTime/2 (Leader.java:729),
//     through the same queue as everything else it sends that follower
//     (LearnerHandler.java:1093 queuePacket). A follower handles what it
//     gets from the leader in order, in one thread (Follower.java:72
//     followLeader, :157 processPacket), and writes all it sends the leader
//     into one stream (Learner.java:191 writePacket); the leader reads that
//     stream in order, in one thread (LearnerHandler.run).
//   - F3. A sync (opcode 9) on a follower is forwarded to the leader
//     (FollowerRequestProcessor.java:97) and answered only once the
//     leader's SYNC comes back (FollowerZooKeeperServer.java:113; Leader.
//     java:1289 processSync). But a sync is answered without error even
//     for a session the leader has expired: checkSession's exception is
//     set on the request (PrepRequestProcessor.java:912) and ignored for a
//     LearnerSyncRequest (ProposalRequestProcessor.java:76).
//   - F4. A connect with a session id makes a follower ask the leader
//     (Learner.java:160 validateSession), which touches the session and
//     says whether it lives (Leader.java:1723 revalidateSession,
//     LeaderZooKeeperServer.java:187 checkIfValidGlobalSession); the leader
//     itself touches it (ZooKeeperServer.java:1033 reopenSession, :1022
//     revalidateSession); a new session is tracked by the leader
//     (PrepRequestProcessor.java:579). An expired session is refused.
//   - F5. A server that loses its leader, or its leadership, closes every
//     client connection (Learner.java:859 shutdown, Leader.java:830
//     closeAllConnections). One client connection therefore sees one
//     server following one leader over one pair of streams.
//
//   - F6. A write (create, delete, setData) is answered
//     only once the leader committed it with a quorum of acks
//     (ProposalRequestProcessor, Leader.processAck, CommitProcessor), and
//     the leader prepares it only for a session it still tracks
//     (PrepRequestProcessor checkSession): sessions that expired never
//     come back. A leader that a quorum left for a newer epoch cannot
//     commit anything, but until its next tick's quorum check it still
//     answers connects (F4, from its own tracker) and syncs (F3) — for as
//     long as it was frozen, in the worst case, since a frozen leader's
//     tick counter stands still (Leader.lead).
//
// The evidence is the latest moment t such that the leader renewed the
// session after t: the server cannot expire it before t + timeout. Every
// piece of it waits for a write W committed on the same connection after
// it (F6): that proves the connection's leader (one, by F5) led with a
// quorum then, so also when it touched the session before, and that the
// session had not expired.
//
//   - E1 (F4, F6): a connect answer that gives a session, then W: t = the
//     connect request's send time.
//   - E2 (F1, F2, F5, F6): on one connection, a sync S1 sent at s1 and
//     answered, then W sent after that answer; R0 any request answered
//     (a0) by s1 − m. The follower noted R0 before a0. The leader took S1
//     after s1, and queued a ping in the tickTime/2 before that, so after
//     R0 was noted when m ≥ tickTime/2; the follower answered that ping,
//     carrying R0's note, before it answered S1, so before W reached it;
//     the leader read that answer, and touched the session, before it
//     read W, which it did, since W was committed. So t = R0's send time.
//     S1 matters: W alone proves nothing about pings that had not reached
//     the follower by the time it forwarded W.
//   - Syncs and connect answers alone are no evidence: a deposed leader
//     gives both (F3, F4, F6), and so does a follower cut off from its
//     leader (F3), until it notices.
//
// m: the client is not told tickTime, but a server grants no session
// shorter than its minSessionTimeout (ZooKeeperServer.java:1431 in
// processConnectRequest), by default 2 × tickTime (:1295). So m =
// granted/4 ≥ tickTime/2, and better, once known, m = min(granted,
// minSession)/4, where minSession is the largest minSessionTimeout of the
// listed servers, each asked for a 1ms session (minSession, below). Either
// rests on one assumption about the servers' configuration: no
// minSessionTimeout below 2 × the leader's tickTime, which holds unless an
// operator set it so. The tenth of the timeout kept back from every
// deadline absorbs the leader's lateness in pinging and the difference
// between its clock and ours. Sent and answered times are taken before
// Write and after Read, on the safe side of both.
//
// Not covered: observers that reach the leader through an observer
// master (observerMasterPort). The follower relaying for them reports
// their touches only in its next ping answer but forwards their writes at
// once, so a write can overtake the touch it should follow (F2 fails).
//
// On the leader or a standalone server, every answer already proves as
// much (F1), but the client cannot tell which server it talks to, so it
// waits the same m everywhere.
//
// The watchdog: a connection with a request (the connect request included)
// unanswered for `patience`, once the evidence is older than half the
// holder's budget (granted − stop grace − granted/10), is closed, and
// go-zookeeper moves to its next server with the same session, whose
// connect answer, once a write confirms it, is fresh evidence (E1). go-zookeeper on its own waits 2/3
// of the session timeout for an answer, and 20/3 of it for a connect
// answer, which leaves a holder no time to move. While the evidence is
// young, a slow server is waited for: closing fails every request under
// way (ErrConnectionClosed), which the recipes count against their
// retries. The server given up on is passed over for a session timeout
// while others remain (hostList), and the last server not given up on is
// waited for (the network, not the servers, is then the likely trouble).
// patience starts at granted/10 (at least 100ms), doubles up to granted/3
// after as many closes in a row as there are servers, and is reset by an
// answer that comes within granted/10: servers that are all slow, but
// answer, are waited for, and every pass through the server list costs
// go-zookeeper's pause of a second.

// Opcodes, xids and error codes of ZooKeeper's protocol (zookeeper.jute,
// ZooDefs.OpCode, KeeperException.Code).
const (
	opCreate          = 1
	opDelete          = 2
	opSetData         = 5
	opSync            = 9
	opCreate2         = 15
	xidNotification   = -1
	xidAuth           = -4
	errSessionExpired = -112
	errSessionMoved   = -118
)

// liveness is what the wire has shown about the session, across connections.
type liveness struct {
	requested time.Duration // asked for: stands in for granted until the first answer
	grace     time.Duration // the holder's stop grace
	log       *slog.Logger

	mu         sync.Mutex
	timeout    time.Duration        // the least the servers granted this session
	session    int64                // its id
	evidence   time.Time            // see the rule above
	patience   time.Duration        // for an unanswered request; 0: the base
	minSession time.Duration        // the servers' largest minSessionTimeout; 0: unknown
	servers    int                  // how many addresses go-zookeeper tries in turn
	closes     int                  // connections closed for want of an answer, in a row
	shunned    map[string]time.Time // server address: passed over until then
}

func (l *liveness) snapshot() (granted time.Duration, evidence time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.grantedLocked(), l.evidence
}

func (l *liveness) grantedLocked() time.Duration {
	if l.timeout == 0 {
		return l.requested
	}
	return l.timeout
}

// granted takes a connect answer's timeout for session. go-zookeeper asks
// each server it moves to for the timeout granted last, and a server with
// other bounds may grant a longer one; but the leader keeps counting with
// the one the session was created with, and a new leader restarts every
// session with it. So the timeout of a session only ever shrinks here.
func (l *liveness) granted(session int64, timeout time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if session != l.session || l.timeout == 0 {
		l.session, l.timeout = session, timeout
		return
	}
	l.timeout = min(l.timeout, timeout)
}

// offer takes evidence t, confirmed by a committed write (E1, E2).
func (l *liveness) offer(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.After(l.evidence) {
		l.evidence = t
	}
}

// killByLocked is the earliest moment the leader may expire the session,
// as far as the evidence shows.
func (l *liveness) killByLocked() time.Time {
	g := l.grantedLocked()
	return l.evidence.Add(g - g/10)
}

// margin is m in the rule above.
func (l *liveness) margin() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.marginLocked()
}

func (l *liveness) marginLocked() time.Duration {
	g := l.grantedLocked()
	if l.minSession > 0 {
		g = min(g, l.minSession)
	}
	return g / 4
}

// minSession asks the server on c for the shortest session it grants:
// asked for 1ms, a server grants its minSessionTimeout. The session it
// makes is closed at once. c is left for the caller to close.
func minSession(c net.Conn, deadline time.Time) (time.Duration, error) {
	if err := c.SetDeadline(deadline); err != nil {
		return 0, err
	}
	// ConnectRequest (zookeeper.jute): protocolVersion, lastZxidSeen,
	// timeOut, sessionId, passwd (a length and 16 bytes).
	req := make([]byte, 4+44)
	binary.BigEndian.PutUint32(req, 44)
	binary.BigEndian.PutUint32(req[4+12:], 1)
	binary.BigEndian.PutUint32(req[4+24:], 16)
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	// ConnectResponse: protocolVersion, timeOut, sessionId, passwd, ...
	var head [4 + 16]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return 0, err
	}
	ms := int32(binary.BigEndian.Uint32(head[8:12]))
	if binary.BigEndian.Uint64(head[12:20]) == 0 || ms <= 0 {
		return 0, errors.New("no session granted")
	}
	// closeSession: xid 1, opcode -11; its answer only tells that it was
	// done, which the server does all the same once it has the request.
	closeReq := []byte{0, 0, 0, 8, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xf5}
	if _, err := c.Write(closeReq); err != nil {
		return 0, err
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// basePatience is how long a request may go unanswered on a healthy
// connection.
func (l *liveness) basePatienceLocked() time.Duration {
	return max(l.grantedLocked()/10, 100*time.Millisecond)
}

func (l *liveness) currentPatience() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(l.patience, l.basePatienceLocked())
}

// answeredIn notes how long an answer took: a prompt one means patience
// can be short again.
func (l *liveness) answeredIn(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d <= l.basePatienceLocked() {
		l.patience, l.closes = 0, 0
	}
}

// gaveUp notes that the connection to server was closed at now for want
// of an answer: the server is passed over for a session timeout, and after
// as many such closes in a row as there are servers, patience doubles, up
// to granted/3.
func (l *liveness) gaveUp(server string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shunned == nil {
		l.shunned = map[string]time.Time{}
	}
	for s, until := range l.shunned {
		if now.After(until) {
			delete(l.shunned, s)
		}
	}
	l.shunned[server] = now.Add(l.grantedLocked())
	if l.closes++; l.closes >= max(l.servers, 1) {
		l.closes = 0
		l.patience = min(2*max(l.patience, l.basePatienceLocked()), max(l.grantedLocked()/3, l.basePatienceLocked()))
	}
}

// passedOver reports whether server is to be tried only when no other is.
func (l *liveness) passedOver(server string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Now().Before(l.shunned[server])
}

// lastResort reports whether every server but this one was given up on
// lately: then the network, not the server, is the likely trouble, and the
// connection at hand is the one to wait on. Leaving it would only add
// go-zookeeper's pause to the time it takes to recover.
func (l *liveness) lastResort(server string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	others := 0
	for s, until := range l.shunned {
		if s != server && now.Before(until) {
			others++
		}
	}
	return l.servers > 1 && others >= l.servers-1
}

// aging reports whether the evidence is older than half the holder's
// budget, so that a stuck connection is worth leaving.
func (l *liveness) aging(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return now.Sub(l.evidence) > l.halfBudgetLocked()
}

func (l *liveness) halfBudgetLocked() time.Duration {
	g := l.grantedLocked()
	return max((g-l.grace-g/10)/2, 0)
}

// silence is how old the evidence is at now, the age past which a holder
// is silent (Lease.watchDeadline), and the age under which its silence
// ends. With prompt answers, a heartbeat finds the evidence up to lag =
// m + granted/10 old (R0's and S1's sync periods, m, and the beat before
// it, E2). A silence begins past half the budget, where the watchdog
// begins to act, or a tenth of the timeout past lag if that is later:
// while a server has not answered the probe for minSession, m is
// granted/4, and prompt answers alone would leave a holder silent for
// good. It ends only three quarters of the way back to lag, not on the
// way down past its beginning: slow answers whose evidence hovers around
// the beginning would otherwise begin and end it at every other beat.
func (l *liveness) silence(now time.Time) (age, begins, ends time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.grantedLocked()
	lag := l.marginLocked() + g/10
	begins = max(l.halfBudgetLocked(), lag+g/10)
	return now.Sub(l.evidence), begins, lag + (begins-lag)/4
}

// exchange is one request and its answer, as seen from here.
type exchange struct{ sent, answered time.Time }

// history is one connection's answered requests, for E2.
type history struct {
	noted []exchange // answers to requests the server noted (touched), in order
	syncs []exchange // syncs answered without error, in order
}

// maxNoted bounds noted and syncs when no write comes to prune them:
// dropping any answer can only make the evidence older (R0 becomes an
// earlier one), never newer.
const maxNoted = 1024

// note records e, answered; m is the margin. When noted is full, one
// answer goes. The oldest, if the one after it was answered by the last
// sync's send time less m: every later S1 was sent no earlier, so R0 is
// that one or a later one. Otherwise all are recent, as after a burst
// (/status reads a crowded lock, one request per contender): the later of
// the two answered closest together goes, which costs the evidence at
// most that gap, while dropping the oldest would leave a write no R0 at
// all until the burst is m old.
func (h *history) note(e exchange, m time.Duration) {
	h.noted = append(h.noted, e)
	if len(h.noted) <= maxNoted {
		return
	}
	drop := 0
	if cut := h.lastSyncSent().Add(-m); h.noted[1].answered.After(cut) {
		drop = 1
		for i := 2; i < len(h.noted); i++ {
			if h.noted[i].answered.Sub(h.noted[i-1].answered) < h.noted[drop].answered.Sub(h.noted[drop-1].answered) {
				drop = i
			}
		}
	}
	h.noted = slices.Delete(h.noted, drop, drop+1)
}

// lastSyncSent is when the last sync answered without error was sent;
// zero if none was.
func (h *history) lastSyncSent() time.Time {
	if len(h.syncs) == 0 {
		return time.Time{}
	}
	return h.syncs[len(h.syncs)-1].sent
}

// synced records sync s, answered without error (it was noted already).
func (h *history) synced(s exchange) {
	if len(h.syncs) == maxNoted {
		h.syncs = h.syncs[1:]
	}
	h.syncs = append(h.syncs, s)
}

// written takes write w, committed (it was noted already), and returns the
// evidence it confirms under E2 with margin m, if any.
func (h *history) written(w exchange, m time.Duration) (time.Time, bool) {
	// S1: the last sync answered before w was sent.
	i := len(h.syncs) - 1
	for i >= 0 && h.syncs[i].answered.After(w.sent) {
		i--
	}
	if i < 0 {
		return time.Time{}, false
	}
	s1 := h.syncs[i]
	h.syncs = h.syncs[i:] // a later write finds this S1 or a later one
	// R0: the last request answered by s1 − m.
	j := len(h.noted) - 1
	for j >= 0 && h.noted[j].answered.After(s1.sent.Add(-m)) {
		j--
	}
	if j < 0 {
		return time.Time{}, false
	}
	r0 := h.noted[j]
	h.noted = h.noted[j:]
	return r0.sent, true
}

// isWrite reports whether op is a request the leader commits (F6) and
// answers with an error in the header when the session is gone. Not multi:
// its header says no error when an operation in it failed.
func isWrite(op int32) bool {
	switch op {
	case opCreate, opDelete, opSetData, opCreate2:
		return true
	}
	return false
}

// wireConn is one connection to a server, observed.
type wireConn struct {
	net.Conn
	raw  net.Conn // under TLS, the TCP connection: closing it cannot block
	live *liveness

	mu          sync.Mutex
	out, in     framer
	pending     []request // sent and not answered, in order
	hist        history
	connectSent time.Time // its request's send time, until a write confirms it (E1)

	closed    chan struct{}
	closeOnce sync.Once
}

type request struct {
	xid, op int32
	sent    time.Time
}

func newWireConn(c, raw net.Conn, live *liveness) *wireConn {
	w := &wireConn{Conn: c, raw: raw, live: live, closed: make(chan struct{})}
	go w.watch()
	return w
}

// Write notes the send time of every packet that starts in b. The first
// packet on a connection is the connect request, which has no xid but is
// answered (by the connect response) all the same.
func (w *wireConn) Write(b []byte) (int, error) {
	now := time.Now()
	w.mu.Lock()
	w.out.feed(b, func(head []byte) {
		r := request{sent: now}
		if w.out.packets > 1 && len(head) >= 8 {
			r.xid = int32(binary.BigEndian.Uint32(head))
			r.op = int32(binary.BigEndian.Uint32(head[4:]))
		}
		w.pending = append(w.pending, r)
	})
	w.mu.Unlock()
	return w.Conn.Write(b)
}

// Read matches every answer that starts in what was read to its request.
func (w *wireConn) Read(b []byte) (int, error) {
	n, err := w.Conn.Read(b)
	now := time.Now()
	w.mu.Lock()
	w.in.feed(b[:n], func(head []byte) { w.answered(head, now) })
	w.mu.Unlock()
	return n, err
}

func (w *wireConn) Close() error {
	w.closeOnce.Do(func() { close(w.closed) })
	return w.Conn.Close()
}

// answered handles the head of one incoming packet (up to 16 bytes),
// which arrived at now.
func (w *wireConn) answered(head []byte, now time.Time) {
	if w.in.packets == 1 {
		// Connect response: protocol version, timeout in ms, session id,
		// password. A refused (expired) session has id and timeout 0.
		if len(w.pending) == 0 || len(head) < 16 {
			return
		}
		sent := w.pending[0].sent
		w.pending = w.pending[1:]
		ms := int32(binary.BigEndian.Uint32(head[4:8]))
		if ms <= 0 || binary.BigEndian.Uint64(head[8:16]) == 0 {
			return
		}
		w.live.granted(int64(binary.BigEndian.Uint64(head[8:16])), time.Duration(ms)*time.Millisecond)
		w.connectSent = sent // E1, once a write confirms it
		w.live.answeredIn(now.Sub(sent))
		return
	}
	if len(head) < 16 {
		return
	}
	xid := int32(binary.BigEndian.Uint32(head))
	if xid == xidNotification {
		return // sent unasked
	}
	i := 0
	for i < len(w.pending) && w.pending[i].xid != xid {
		i++
	}
	if i == len(w.pending) {
		return // an answer to nothing: not ours to interpret
	}
	r := w.pending[i]
	w.pending = append(w.pending[:i], w.pending[i+1:]...)
	w.live.answeredIn(now.Sub(r.sent))
	code := int32(binary.BigEndian.Uint32(head[12:16]))
	if xid == xidAuth || code == errSessionExpired || code == errSessionMoved {
		return // not noted for the session (F1)
	}
	e := exchange{sent: r.sent, answered: now}
	w.hist.note(e, w.live.margin())
	switch {
	case code != 0:
	case r.op == opSync:
		w.hist.synced(e)
	case isWrite(r.op):
		if !w.connectSent.IsZero() {
			w.live.offer(w.connectSent) // E1
			w.connectSent = time.Time{}
		}
		if t, ok := w.hist.written(e, w.live.margin()); ok {
			w.live.offer(t) // E2
		}
	}
}

// watch closes the connection when a request has waited longer than
// patience while the evidence ages. An answering connection is never
// closed for want of evidence: a reconnect gives none by itself (E1 waits
// for a write), and a waiter, which writes nothing, needs none.
func (w *wireConn) watch() {
	every := max(w.live.currentPatience()/8, 10*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-w.closed:
			return
		case now := <-tick.C:
			patience := w.live.currentPatience()
			w.mu.Lock()
			var waited time.Duration
			if len(w.pending) > 0 {
				waited = now.Sub(w.pending[0].sent)
			}
			w.mu.Unlock()
			if waited <= patience || !w.live.aging(now) || w.live.lastResort(w.RemoteAddr().String(), now) {
				continue
			}
			w.live.gaveUp(w.RemoteAddr().String(), now)
			w.live.log.Warn("no answer from zookeeper server; trying the next one with the same session",
				"server", w.RemoteAddr().String(), "waited", waited.Round(time.Millisecond))
			w.raw.Close()
			return
		}
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
