package zktest

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"
)

// proxyDialTimeout bounds the proxy's connect to its target. The target is
// on loopback, so a connect that takes long means a paused or dead server;
// the client's connection is then closed, as if the server refused it.
const proxyDialTimeout = 5 * time.Second

// proxyBufSize is the most a stalled direction holds in the proxy: one
// buffer. The rest waits in the kernel's socket buffers and then in the
// sender, as it would behind a real blackhole.
const proxyBufSize = 32 << 10

// crashDrain is how long a Crash waits for more of what the server has
// sent (it is on its way through loopback) before it hands it all over;
// crashDrainMax bounds the whole, should the server go on sending.
const (
	crashDrain    = 100 * time.Millisecond
	crashDrainMax = time.Second
)

type proxyMode int

const (
	modePass proxyMode = iota
	modeStall
	modeCut
	modeHoldWrites
)

// Proxy is a TCP proxy on a free loopback port in front of one ZooKeeper
// server, for injecting network faults between a client and the server.
type Proxy struct {
	t      testing.TB
	target string
	ln     net.Listener
	ctx    context.Context // cancelled by close, to abort pending dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and one per connection

	mu     sync.Mutex
	cond   *sync.Cond // broadcast on every change of mode, closed or a conn's end
	mode   proxyMode
	closed bool
	conns  map[*proxyConn]struct{}
}

// proxyConn is one client connection and, once dialed, its connection to
// the target. Its fields are guarded by Proxy.mu.
type proxyConn struct {
	client, server net.Conn
	closed         bool
	crashing       bool // Crash: hand over what the server sent, then reset
	holding        bool // a write from the client is held (HoldWrites)
	// requests follows the frames the client sends, for HoldWrites; only
	// the forwarder from the client touches it.
	requests requestScanner
}

// verdict is what a forwarder does next with what it has read.
type verdict int

const (
	goOn  verdict = iota
	stop          // the connection has ended
	crash         // deliver what the server sent, then reset
)

// StartProxy starts a proxy to target ("host:port") and stops it when the
// test ends (t.Cleanup).
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("zktest: proxy listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{t: t, target: target, ln: ln, ctx: ctx, cancel: cancel,
		conns: make(map[*proxyConn]struct{})}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the "127.0.0.1:port" clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Pass forwards bytes both ways (the initial mode). Connections that were
// stalled resume: bytes buffered in the kernel flow on, nothing is lost.
func (p *Proxy) Pass() { p.setMode(modePass) }

// Stall stops forwarding in both directions but keeps every socket open,
// like a network blackhole: the client sees no error, just silence. That
// includes the end of a connection: when one side closes, the other learns
// of it only on Pass. New connections are accepted, but the proxy connects
// them to the target only on Pass, so the server does not see them either.
func (p *Proxy) Stall() { p.setMode(modeStall) }

// HoldWrites makes the server one that answers reads, syncs and connects
// but commits no write, as a ZooKeeper leader that lost its quorum does
// until it notices, and as the client of a server cut off from its leader
// sees its writes go unanswered: on every connection, old and new, what
// the client sends passes up to the first request that writes (create,
// delete, setData, setACL, check, multi, reconfig), and that request and
// everything after it are held, in order, until Pass (a server answers a
// session's requests in order). What the server sends passes. Stall and
// Cut apply as ever.
func (p *Proxy) HoldWrites() { p.setMode(modeHoldWrites) }

// Cut closes every open connection (both sides) and, until Pass, closes
// new connections at once after accepting them (a partition that the
// client notices). The server sees a client disconnect, so a ZooKeeper
// session lives on until its timeout.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = modeCut
	for pc := range p.conns {
		p.dropLocked(pc)
	}
	p.cond.Broadcast()
}

// Crash ends every open connection as if its server had crashed right
// after its last words: the proxy hands the client, in one write, all that
// the server has sent and the proxy holds (after a Stall, everything the
// server sent meanwhile), and resets the connection at once (TCP RST).
// The client then reads those last words while its writes already fail
// (connection reset, broken pipe), as they do when a server dies. What the
// client sent and the proxy holds is lost. New connections pass. Crash
// returns once every connection has been reset.
func (p *Proxy) Crash() {
	p.mu.Lock()
	defer p.mu.Unlock()
	var crashing []*proxyConn
	for pc := range p.conns {
		if pc.server == nil {
			// Never connected to the server: it said nothing.
			p.resetLocked(pc)
			continue
		}
		pc.crashing = true
		// Wakes the forwarder from the server if it waits for bytes.
		pc.server.SetReadDeadline(time.Now())
		crashing = append(crashing, pc)
	}
	p.mode = modePass
	p.cond.Broadcast()
	for _, pc := range crashing {
		for !pc.closed {
			p.cond.Wait()
		}
	}
}

// Conns is how many client connections are open now (for tests to wait on
// a reconnect). Cut takes it to 0 at once.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *Proxy) setMode(m proxyMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
	p.cond.Broadcast()
}

// close is the cleanup: it closes the listener and every connection and
// waits for all the proxy's goroutines to end.
func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.ln.Close()
	p.cancel()
	for pc := range p.conns {
		p.dropLocked(pc)
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if !closed {
				// Not expected on loopback; say so rather than go silent.
				p.t.Errorf("zktest: proxy to %s stopped accepting: %v", p.target, err)
			}
			return
		}
		p.mu.Lock()
		if p.closed || p.mode == modeCut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		pc := &proxyConn{client: c}
		p.conns[pc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(pc)
	}
}

// serve connects pc to the target once the proxy passes, then forwards
// both ways until either side ends, Cut or close.
func (p *Proxy) serve(pc *proxyConn) {
	defer p.wg.Done()
	defer p.drop(pc)
	if p.waitPass(pc, false) != goOn {
		return
	}
	d := net.Dialer{Timeout: proxyDialTimeout}
	server, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		return
	}
	p.mu.Lock()
	if pc.closed { // Cut or close while dialing
		p.mu.Unlock()
		server.Close()
		return
	}
	pc.server = server
	p.mu.Unlock()

	done := make(chan struct{})
	go func() {
		defer close(done)
		p.forward(pc, pc.client, server, true)
	}()
	p.forwardRequests(pc, server, pc.client)
	<-done
}

// forward copies from src to dst until src ends or a write fails, then
// ends the connection as a whole. Whatever a read returns, bytes or an
// error, waits while the proxy stalls, so that a stalled direction holds
// at most one buffer and passes on nothing, not even the end of the stream.
// fromServer tells the direction: a Crash delivers what that one holds.
func (p *Proxy) forward(pc *proxyConn, dst, src net.Conn, fromServer bool) {
	defer p.drop(pc) // wakes the other direction with an error
	buf := make([]byte, proxyBufSize)
	for {
		n, err := src.Read(buf)
		switch p.waitPass(pc, fromServer) {
		case stop:
			return
		case crash:
			p.crash(pc, buf[:n])
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// forwardRequests is forward from the client, which follows the client's
// frames so that HoldWrites can hold the first request that writes. Bytes
// of a frame whose head a read cut short wait for the next read: until
// the head is whole, it cannot be told whether the frame writes.
func (p *Proxy) forwardRequests(pc *proxyConn, dst, src net.Conn) {
	defer p.drop(pc)
	buf := make([]byte, proxyBufSize)
	var unsent []byte
	for {
		n, err := src.Read(buf)
		if p.waitPass(pc, false) != goOn {
			return // a crash loses what the client sent
		}
		unsent = append(unsent, buf[:n]...)
		for {
			k, write := pc.requests.split(unsent, p.holdsWrites())
			if k > 0 {
				if _, werr := dst.Write(unsent[:k]); werr != nil {
					return
				}
				unsent = unsent[k:]
			}
			if !write {
				break
			}
			if p.waitWrites(pc) != goOn {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) holdsWrites() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode == modeHoldWrites
}

// waitWrites waits while the proxy holds writes (or stalls), before a
// held write goes on.
func (p *Proxy) waitWrites(pc *proxyConn) verdict {
	p.mu.Lock()
	pc.holding = true
	for !pc.closed && !pc.crashing && p.mode == modeHoldWrites {
		p.cond.Wait()
	}
	pc.holding = false
	p.mu.Unlock()
	return p.waitPass(pc, false)
}

// HeldWrites is how many connections have a write held now (HoldWrites).
func (p *Proxy) HeldWrites() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for pc := range p.conns {
		if pc.holding {
			n++
		}
	}
	return n
}

// waitPass waits while the proxy stalls and tells how pc goes on. While pc
// crashes, the direction from the client waits for the reset: its end
// would close the client's connection gracefully first.
func (p *Proxy) waitPass(pc *proxyConn, fromServer bool) verdict {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !pc.closed && (p.mode == modeStall && !pc.crashing || pc.crashing && !fromServer) {
		p.cond.Wait()
	}
	switch {
	case pc.closed:
		return stop
	case pc.crashing:
		return crash
	case p.mode == modePass, p.mode == modeHoldWrites:
		return goOn
	}
	return stop
}

// requestScanner follows ZooKeeper's framing (a 4-byte length, then the
// packet) in what a client sends: first the connect request, then
// requests that each start with their xid and opcode.
type requestScanner struct {
	frames int      // frames begun
	head   [12]byte // the current frame's length, xid and opcode, as far as passed on
	have   int      // bytes of head passed on; 0 between frames
	body   int      // bytes of the current frame still to come after its head
}

// Opcodes of the requests a ZooKeeper leader must commit (ZooDefs.OpCode).
var writeOps = map[int32]bool{
	1: true, 2: true, 5: true, 7: true, 13: true, 14: true, 15: true, // create, delete, setData, setACL, check, multi, create2
	16: true, 19: true, 20: true, 21: true, // reconfig, createContainer, deleteContainer, createTTL
}

// split returns how many bytes of b may go on. With hold, that is up to
// the first request that writes (write is then true, and b[k:] starts
// with it) or up to a frame head that b cuts short, which can be judged
// only once the next read completes it. Without hold, it is all of b. The
// scanner has then followed exactly b[:k]. A request whose head began to
// pass before hold is not held.
func (s *requestScanner) split(b []byte, hold bool) (k int, write bool) {
	for k < len(b) {
		if s.body > 0 {
			n := min(s.body, len(b)-k)
			s.body -= n
			k += n
			continue
		}
		need := len(s.head) // length, xid, opcode
		if s.frames == 0 {
			need = 4 // the connect request has no xid or opcode
		}
		if s.have == 0 && hold {
			if len(b)-k < need {
				return k, false
			}
			if s.frames > 0 && writeOps[int32(binary.BigEndian.Uint32(b[k+8:]))] {
				return k, true
			}
		}
		n := copy(s.head[s.have:need], b[k:])
		s.have += n
		k += n
		if s.have == need {
			s.frames++
			s.body = max(int(binary.BigEndian.Uint32(s.head[:4]))-(need-4), 0)
			s.have = 0
		}
	}
	return k, false
}

// crash hands the client held and whatever more the server has sent, in
// one write, and resets the connection.
func (p *Proxy) crash(pc *proxyConn, held []byte) {
	words := append([]byte(nil), held...)
	buf := make([]byte, proxyBufSize)
	for end := time.Now().Add(crashDrainMax); time.Now().Before(end); {
		pc.server.SetReadDeadline(time.Now().Add(crashDrain))
		n, err := pc.server.Read(buf)
		words = append(words, buf[:n]...)
		if err != nil {
			break
		}
	}
	if tc, ok := pc.client.(*net.TCPConn); ok {
		tc.SetLinger(0) // close sends RST, not FIN
	}
	pc.client.Write(words) // a client that went away needs no last words
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resetLocked(pc)
}

// resetLocked ends pc with a TCP reset to the client.
func (p *Proxy) resetLocked(pc *proxyConn) {
	if tc, ok := pc.client.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	p.dropLocked(pc)
	p.cond.Broadcast()
}

func (p *Proxy) drop(pc *proxyConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropLocked(pc)
	p.cond.Broadcast()
}

// dropLocked closes both sides of pc, so that client and server both see
// the connection end, and forgets it. The caller broadcasts.
func (p *Proxy) dropLocked(pc *proxyConn) {
	if !pc.closed {
		pc.closed = true
		pc.client.Close()
		if pc.server != nil {
			pc.server.Close()
		}
	}
	delete(p.conns, pc)
}
