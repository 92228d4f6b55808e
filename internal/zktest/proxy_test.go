package zktest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

// silence is how long a test waits to be sure that nothing arrives;
// patience is how long it waits for what must happen, generous so that
// a loaded machine does not fail the test.
const (
	silence  = 200 * time.Millisecond
	patience = 5 * time.Second
)

// echoServer is a plain TCP echo server, to test the proxy without a JVM.
type echoServer struct {
	ln       net.Listener
	accepted atomic.Int32
	ended    atomic.Int32 // connections whose client side has gone
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				c.Close()
				e.ended.Add(1)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return e
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, patience)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo writes msg and expects it back.
func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	expect(t, c, []byte(msg))
}

func expect(t *testing.T, c net.Conn, want []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(patience))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes that differ from the %d written", len(got), len(want))
	}
}

// expectSilence fails if anything, data or an error, arrives on c soon.
func expectSilence(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(silence))
	var b [1]byte
	if n, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, %v; want silence", n, err)
	}
}

// expectClosed fails unless c's read ends with EOF or a reset soon.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(patience))
	var b [1]byte
	n, err := c.Read(b[:])
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, %v; want the connection closed", n, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(patience); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, patience)
		}
	}
}

func waitConns(t *testing.T, p *Proxy, n int) {
	t.Helper()
	waitFor(t, "proxy connection count", func() bool { return p.Conns() == n })
}

func TestProxyPass(t *testing.T) {
	t.Parallel()
	e := startEcho(t)
	p := StartProxy(t, e.ln.Addr().String())
	if p.Conns() != 0 {
		t.Fatalf("Conns() = %d before any connection", p.Conns())
	}
	c1, c2 := dial(t, p.Addr()), dial(t, p.Addr())
	echo(t, c1, "hello")
	echo(t, c2, "world")
	waitConns(t, p, 2)
	c1.Close()
	waitConns(t, p, 1)
	echo(t, c2, "still there")
}

func TestProxyStall(t *testing.T) {
	t.Parallel()
	e := startEcho(t)
	p := StartProxy(t, e.ln.Addr().String())
	c1 := dial(t, p.Addr())
	echo(t, c1, "before")

	p.Stall()
	// More than fits in one of the proxy's buffers, and a pattern that
	// shows reordering; written while stalled, so that it waits in the
	// proxy and the kernel.
	big := make([]byte, 4<<20)
	for i := range big {
		big[i] = byte(i % 251)
	}
	written := make(chan error, 1)
	go func() {
		if _, err := io.WriteString(c1, "during"); err != nil {
			written <- err
			return
		}
		_, err := c1.Write(big)
		written <- err
	}()
	expectSilence(t, c1)
	// A new connection is accepted but not passed on to the server.
	c2 := dial(t, p.Addr())
	io.WriteString(c2, "new")
	expectSilence(t, c2)
	if n := e.accepted.Load(); n != 1 {
		t.Fatalf("echo server accepted %d connections during Stall; want just the first", n)
	}
	waitConns(t, p, 2)

	p.Pass()
	expect(t, c1, append([]byte("during"), big...))
	if err := <-written; err != nil {
		t.Fatalf("write: %v", err)
	}
	expect(t, c2, []byte("new"))
	echo(t, c1, "after")
	if n := e.accepted.Load(); n != 2 {
		t.Fatalf("echo server accepted %d connections; want 2", n)
	}
}

func TestProxyCut(t *testing.T) {
	t.Parallel()
	e := startEcho(t)
	p := StartProxy(t, e.ln.Addr().String())
	c1 := dial(t, p.Addr())
	echo(t, c1, "before")
	waitConns(t, p, 1)

	p.Cut()
	if n := p.Conns(); n != 0 {
		t.Fatalf("Conns() = %d after Cut", n)
	}
	expectClosed(t, c1)
	// The server sees the end too.
	waitFor(t, "end of the connection at the echo server", func() bool { return e.ended.Load() == 1 })
	// A new connection is accepted (the kernel does that) but closed at once.
	c2 := dial(t, p.Addr())
	expectClosed(t, c2)
	if n := e.accepted.Load(); n != 1 {
		t.Fatalf("echo server accepted %d connections during Cut; want just the first", n)
	}

	p.Pass()
	c3 := dial(t, p.Addr())
	echo(t, c3, "after")
	waitConns(t, p, 1)
}

func TestProxyCutWhileStalled(t *testing.T) {
	t.Parallel()
	e := startEcho(t)
	p := StartProxy(t, e.ln.Addr().String())
	c1 := dial(t, p.Addr())
	echo(t, c1, "before")
	p.Stall()
	io.WriteString(c1, "lost")
	c2 := dial(t, p.Addr()) // waiting for Pass to be connected to the server
	waitConns(t, p, 2)

	p.Cut()
	expectClosed(t, c1)
	expectClosed(t, c2)
	p.Pass()
	echo(t, dial(t, p.Addr()), "after")
}

// TestProxyCrash: after a Stall, Crash hands the client what the server
// said meanwhile and then resets the connection: the client reads the
// server's last words, then its connection is dead for reading and
// writing. What the client said meanwhile never reaches the server.
func TestProxyCrash(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 2)
	go func() {
		for range 2 {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	p := StartProxy(t, ln.Addr().String())
	c := dial(t, p.Addr())
	io.WriteString(c, "hello")
	var server net.Conn
	select {
	case server = <-accepted:
		t.Cleanup(func() { server.Close() })
	case <-time.After(patience):
		t.Fatal("server accepted nothing")
	}
	expect(t, server, []byte("hello"))

	p.Stall()
	io.WriteString(c, "lost")
	last := bytes.Repeat([]byte("last words "), 1000)
	if _, err := server.Write(last); err != nil {
		t.Fatal(err)
	}
	expectSilence(t, c)
	p.Crash()
	if n := p.Conns(); n != 0 {
		t.Fatalf("Conns() = %d after Crash", n)
	}

	expect(t, c, last)
	c.SetReadDeadline(time.Now().Add(patience))
	var b [1]byte
	if n, err := c.Read(b[:]); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the last words: %d bytes, %v; want a reset", n, err)
	}
	if _, err := io.WriteString(c, "too late"); !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("write after the reset: %v; want a broken pipe or a reset", err)
	}
	// The server sees the end, and nothing of what the client said while
	// the proxy stalled.
	server.SetReadDeadline(time.Now().Add(patience))
	if got, err := io.ReadAll(server); len(got) != 0 || err != nil {
		t.Fatalf("server read %q, %v after the crash; want nothing, then the end", got, err)
	}
	// The proxy passes new connections.
	io.WriteString(dial(t, p.Addr()), "again")
	select {
	case again := <-accepted:
		t.Cleanup(func() { again.Close() })
		expect(t, again, []byte("again"))
	case <-time.After(patience):
		t.Fatal("no new connection after the crash")
	}
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

func TestProxyZooKeeper(t *testing.T) {
	t.Parallel()
	c := Start(t) // grants session timeouts of up to 4s
	p := StartProxy(t, c.Servers[0].Addr())

	// A callback sees every state change; the event channel of zk.Connect
	// drops them when full.
	states := make(chan zk.State, 100)
	conn, _, err := zk.Connect([]string{p.Addr()}, 4*time.Second,
		zk.WithLogInfo(false), zk.WithLogger(quietLogger{}),
		zk.WithEventCallback(func(ev zk.Event) {
			if ev.Type == zk.EventSession {
				select {
				case states <- ev.State:
				default:
				}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	waitState := func(want zk.State) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case s := <-states:
				if s == want {
					return
				}
				if s == zk.StateExpired {
					t.Fatalf("session expired waiting for %v", want)
				}
			case <-timeout:
				t.Fatalf("no %v after 10s (now %v)", want, conn.State())
			}
		}
	}
	waitState(zk.StateHasSession)
	id := conn.SessionID()
	path, err := conn.Create("/proxy", nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
	if err != nil {
		t.Fatal(err)
	}
	exists := func() {
		t.Helper()
		if ok, _, err := conn.Exists(path); err != nil || !ok {
			t.Fatalf("Exists(%s) = %v, %v; want true", path, ok, err)
		}
		if got := conn.SessionID(); got != id {
			t.Fatalf("session id %#x, was %#x", got, id)
		}
	}

	// A stall shorter than the client's read timeout (2/3 of the session
	// timeout) goes unnoticed: a request made meanwhile is answered after.
	p.Stall()
	stalledAt := time.Now()
	answered := make(chan error, 1)
	go func() {
		ok, _, err := conn.Exists(path)
		if err == nil && !ok {
			err = errors.New("no node")
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("Exists answered during Stall: %v", err)
	case <-time.After(time.Second - time.Since(stalledAt)):
	}
	p.Pass()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("Exists after Stall: %v", err)
		}
	case <-time.After(patience):
		t.Fatalf("Exists not answered %v after Pass", patience)
	}
	exists()
	for len(states) > 0 {
		if s := <-states; s != zk.StateHasSession {
			t.Fatalf("session state %v during a 1s Stall", s)
		}
	}

	// A cut is noticed at once; the session outlives it if the client gets
	// back within the session timeout.
	p.Cut()
	waitState(zk.StateDisconnected)
	p.Pass()
	waitState(zk.StateHasSession)
	exists()
	waitConns(t, p, 1)
}

// frame is a ZooKeeper packet with its length prefix: a request with xid
// and opcode, and body bytes after them.
func frame(xid, op int32, body int) []byte {
	b := make([]byte, 4+8+body)
	binary.BigEndian.PutUint32(b, uint32(8+body))
	binary.BigEndian.PutUint32(b[4:], uint32(xid))
	binary.BigEndian.PutUint32(b[8:], uint32(op))
	return b
}

// TestRequestScannerFindsTheFirstWrite: however a client's stream is cut
// into reads, the scanner lets through everything before the first
// request that writes, and stops exactly at its first byte.
func TestRequestScannerFindsTheFirstWrite(t *testing.T) {
	connect := make([]byte, 4+44)
	binary.BigEndian.PutUint32(connect, 44)
	var stream []byte
	stream = append(stream, connect...)
	stream = append(stream, frame(1, 4, 20)...)  // getData
	stream = append(stream, frame(2, 9, 3)...)   // sync
	stream = append(stream, frame(-2, 11, 0)...) // ping
	firstWrite := len(stream)
	stream = append(stream, frame(3, 5, 30)...) // setData
	stream = append(stream, frame(4, 3, 10)...) // exists
	for _, size := range []int{1, 2, 3, 5, 7, 11, 12, 13, 64, len(stream)} {
		var s requestScanner
		var passed, unsent []byte
		held := false
		for off := 0; off < len(stream) && !held; off += size {
			unsent = append(unsent, stream[off:min(off+size, len(stream))]...)
			k, write := s.split(unsent, true)
			passed = append(passed, unsent[:k]...)
			unsent = unsent[k:]
			held = write
		}
		if !held || len(passed) != firstWrite {
			t.Errorf("reads of %d bytes: held %v after %d bytes passed, want held after %d", size, held, len(passed), firstWrite)
		}
		// Released, the rest passes whole.
		k, write := s.split(append(unsent, stream[len(passed)+len(unsent):]...), false)
		if write || len(passed)+k != len(stream) {
			t.Errorf("reads of %d bytes: after the release %d more passed (write %v), want %d", size, k, write, len(stream)-len(passed))
		}
	}
}

// TestProxyHoldWrites: reads, syncs and new sessions are answered while a
// write is not, nor anything the client sent after it; on Pass the held
// requests go on, in order.
func TestProxyHoldWrites(t *testing.T) {
	t.Parallel()
	c := Start(t)
	p := StartProxy(t, c.Servers[0].Addr())
	open := func() *zk.Conn {
		t.Helper()
		conn, _, err := zk.Connect([]string{p.Addr()}, 4*time.Second, zk.WithLogInfo(false), zk.WithLogger(quietLogger{}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(conn.Close)
		waitFor(t, "a session", func() bool { return conn.State() == zk.StateHasSession })
		return conn
	}
	conn := open()
	if _, err := conn.Create("/held", []byte("before"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}

	p.HoldWrites()
	if _, _, err := conn.Get("/held"); err != nil {
		t.Fatalf("Get while writes are held: %v", err)
	}
	if _, err := conn.Sync("/held"); err != nil {
		t.Fatalf("Sync while writes are held: %v", err)
	}
	set := make(chan error, 1)
	go func() {
		_, err := conn.Set("/held", []byte("after"), -1)
		set <- err
	}()
	waitFor(t, "the write held", func() bool { return p.HeldWrites() == 1 })
	// A read sent once the write is held waits behind it.
	got := make(chan string, 1)
	go func() {
		data, _, err := conn.Get("/held")
		if err == nil {
			got <- string(data)
		}
	}()
	other := open() // a new connection is held only from its first write
	if data, _, err := other.Get("/held"); err != nil || string(data) != "before" {
		t.Fatalf("Get on a new connection while writes are held: %q, %v; want the old data", data, err)
	}
	select {
	case err := <-set:
		t.Fatalf("the write was answered while held: %v", err)
	case data := <-got:
		t.Fatalf("a read sent after the held write was answered first: %q", data)
	case <-time.After(time.Second):
	}

	p.Pass()
	select {
	case err := <-set:
		if err != nil {
			t.Fatalf("the held write, passed: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("the held write not answered after Pass")
	}
	select {
	case data := <-got:
		if data != "after" {
			t.Errorf("the read behind the held write saw %q, want the write's %q", data, "after")
		}
	case <-time.After(patience):
		t.Fatal("the read behind the held write not answered after Pass")
	}
}
