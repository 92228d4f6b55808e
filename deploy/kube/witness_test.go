package kube

import (
	"bufio"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// witness is a TCP server on 127.0.0.1 that every workload connects to when
// it starts and stays connected to while it runs, so that the test sees,
// to the millisecond and from outside the pods, which workloads run at
// each moment. A workload that dies, however it dies, closes its
// connection with it.
type witness struct {
	ln net.Listener

	mu      sync.Mutex
	running map[string]time.Time // witness id → when it connected
	uids    map[string]string    // witness id → the uid it reported
	conns   []net.Conn
	events  []witnessEvent
	most    int // the most workloads that ever ran at once
	changed chan struct{}
}

type witnessEvent struct {
	id    string
	start bool // started, else ended
	at    time.Time
}

func newWitness(t *testing.T) *witness {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &witness{ln: ln, running: map[string]time.Time{}, uids: map[string]string{}, changed: make(chan struct{})}
	go w.accept()
	t.Cleanup(w.close)
	return w
}

func (w *witness) port() int { return w.ln.Addr().(*net.TCPAddr).Port }

// script is the workload: with writeTmp, it first writes /tmp as most
// programs do (and exits 1 if it cannot); then it connects to the witness
// with its id, as the chart's env gives it, and its uid, and stays
// connected.
func (w *witness) script(writeTmp bool) string { return w.scriptFor(w.port(), writeTmp) }

func (w *witness) scriptFor(port int, writeTmp bool) string {
	s := fmt.Sprintf(`{ echo "$WITNESS_ID $(id -u)"; while sleep 1; do echo tick; done; } | nc 127.0.0.1 %d`, port)
	if writeTmp {
		s = "echo \"started $(date)\" > /tmp/report || exit 1\n" + s
	}
	return s
}

func (w *witness) accept() {
	for {
		c, err := w.ln.Accept()
		if err != nil {
			return
		}
		go w.serve(c)
	}
}

func (w *witness) serve(c net.Conn) {
	w.mu.Lock()
	w.conns = append(w.conns, c) // closed by close, whatever it sent
	w.mu.Unlock()
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		return
	}
	id, uid, _ := strings.Cut(strings.TrimSpace(line), " ")
	w.mu.Lock()
	w.uids[id] = uid
	w.record(id, true)
	w.mu.Unlock()
	for {
		if _, err := r.ReadString('\n'); err != nil {
			break
		}
	}
	c.Close()
	w.mu.Lock()
	w.record(id, false)
	w.mu.Unlock()
}

// record notes an event; w.mu is held.
func (w *witness) record(id string, start bool) {
	now := time.Now()
	w.events = append(w.events, witnessEvent{id, start, now})
	if start {
		w.running[id] = now
		w.most = max(w.most, len(w.running))
	} else {
		delete(w.running, id)
	}
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *witness) close() {
	w.ln.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.conns {
		c.Close()
	}
}

// now returns the ids that run, sorted, and the most that ever ran at once.
func (w *witness) now() (ids []string, most int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id := range w.running {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, w.most
}

// uid returns the uid the workload id reported.
func (w *witness) uid(id string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.uids[id]
}

// times returns when id last connected and ended when it last
// disconnected; zero if it never did.
func (w *witness) times(id string) (started, ended time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if e.id != id {
			continue
		}
		if e.start {
			started = e.at
		} else {
			ended = e.at
		}
	}
	return started, ended
}

// log returns the events so far, one a line, for a failure message.
func (w *witness) log() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, e := range w.events {
		what := "ended"
		if e.start {
			what = "started"
		}
		fmt.Fprintf(&b, "  %s %s %s\n", e.at.Format("15:04:05.000"), e.id, what)
	}
	return b.String()
}

// wait returns once cond holds for the running ids, checking at each
// change and every 200ms, or fails the test after timeout. check, when
// not nil, runs on each tick and stops the wait with its error (a pod
// that crashed, say).
func (w *witness) wait(t *testing.T, what string, timeout time.Duration, cond func(ids []string) bool, check func() error) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		changed := w.changed
		w.mu.Unlock()
		ids, _ := w.now()
		if cond(ids) {
			return ids
		}
		if check != nil {
			if err := check(); err != nil {
				t.Fatalf("waiting for %s: %v\nworkloads seen:\n%s", what, err, w.log())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v; running now: %q\nworkloads seen:\n%s", what, timeout, ids, w.log())
		}
		select {
		case <-changed:
		case <-time.After(200 * time.Millisecond):
		}
	}
}
