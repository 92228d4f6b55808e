package zktest

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Latency is a TCP relay on a free loopback port that delivers every byte,
// both ways, a set delay after it arrived: a slow network, or a server
// that answers late, with nothing lost and the order kept. Put it in front
// of a Proxy to have faults and latency together.
type Latency struct {
	t      testing.TB
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu     sync.Mutex
	delay  time.Duration
	closed bool
	conns  map[net.Conn]struct{}
}

// latencyQueue bounds the chunks one direction holds in flight; a sender
// that outruns it waits, as it would behind a full network.
const latencyQueue = 1024

// StartLatency starts a relay to target ("host:port") that delays nothing
// until SetDelay, and stops it when the test ends (t.Cleanup).
func StartLatency(t testing.TB, target string) *Latency {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("zktest: latency listen: %v", err)
	}
	l := &Latency{t: t, target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.accept()
	t.Cleanup(l.close)
	return l
}

// Addr is the "127.0.0.1:port" clients connect to.
func (l *Latency) Addr() string { return l.ln.Addr().String() }

// SetDelay sets the delay of what arrives from now on, in each direction:
// a round trip takes twice d longer. Bytes already under way keep theirs.
func (l *Latency) SetDelay(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.delay = d
}

func (l *Latency) delayed() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Now().Add(l.delay)
}

func (l *Latency) accept() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return // closed
		}
		if !l.track(c) {
			return
		}
		l.wg.Add(1)
		go l.serve(c)
	}
}

// track notes an open connection, for close; false once closed.
func (l *Latency) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Latency) serve(client net.Conn) {
	defer l.wg.Done()
	server, err := net.DialTimeout("tcp", l.target, proxyDialTimeout)
	if err != nil || !l.track(server) {
		client.Close()
		return
	}
	var both sync.WaitGroup
	both.Add(2)
	go func() { defer both.Done(); l.relay(server, client) }()
	go func() { defer both.Done(); l.relay(client, server) }()
	both.Wait()
}

// relay copies src to dst, each chunk at its time. The end of src ends
// both connections once what came before it is delivered.
func (l *Latency) relay(dst, src net.Conn) {
	type chunk struct {
		at   time.Time
		data []byte
	}
	queue := make(chan chunk, latencyQueue)
	go func() {
		defer close(queue)
		for {
			buf := make([]byte, proxyBufSize)
			n, err := src.Read(buf)
			if n > 0 {
				queue <- chunk{l.delayed(), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range queue {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.data); err != nil {
			break
		}
	}
	l.drop(dst, src)
	for range queue { // the reader ends now that src is closed
	}
}

func (l *Latency) drop(conns ...net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range conns {
		c.Close()
		delete(l.conns, c)
	}
}

// close is the cleanup: it closes the listener and every connection and
// waits for the relay's goroutines to end.
func (l *Latency) close() {
	l.mu.Lock()
	l.closed = true
	l.ln.Close()
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}
