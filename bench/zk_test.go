package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/lockex/lockex/internal/zktest"
)

// startZK starts the standalone server every figure is measured on. It
// grants session timeouts from 400ms to 20s, and takes any number of
// connections from one address (ZooKeeper's default is 60, fewer than the
// herd's 200 contenders on 127.0.0.1).
func (b *bench) startZK() {
	b.zk = zktest.Start(b.t, zktest.SessionTimeouts(400*time.Millisecond, 20*time.Second))
	b.addr = b.zk.Servers[0].Addr()
	if err := b.unlimitConnections(); err != nil {
		b.t.Fatalf("raising ZooKeeper's connection limit for the herd: %v", err)
	}
	b.conn, b.peer = b.session(), b.session()
}

// session opens a session of the bench's own, closed when the test ends.
func (b *bench) session() *zk.Conn {
	conn, _, err := zk.Connect([]string{b.addr}, 10*time.Second, zk.WithLogInfo(false), zk.WithLogger(quiet{}))
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(conn.Close)
	if _, _, err := conn.Exists("/"); err != nil { // waits for the session
		b.t.Fatal(err)
	}
	return conn
}

// unlimitConnections sets maxClientCnxns=0 (no limit) and restarts the
// server. zktest has no option for it, so this appends it to the zoo.cfg
// that zktest keeps next to the server's data directory (Server's
// documented layout), found through the conf four-letter word, and checks
// with conf that the server took it.
func (b *bench) unlimitConnections() error {
	conf, err := zktest.FourLetter(b.addr, "conf")
	if err != nil {
		return err
	}
	dataDir := value(conf, "dataDir=")
	if dataDir == "" {
		return fmt.Errorf("no dataDir in conf: %q", conf)
	}
	dataDir = strings.TrimSuffix(dataDir, "/version-2")
	cfg := filepath.Join(filepath.Dir(dataDir), "zoo.cfg")
	old, err := os.ReadFile(cfg)
	if err != nil {
		return err
	}
	if !strings.Contains(string(old), "clientPort="+value(conf, "clientPort=")+"\n") {
		return fmt.Errorf("%s is not this server's configuration", cfg)
	}
	if err := os.WriteFile(cfg, append(old, "maxClientCnxns=0\n"...), 0o644); err != nil {
		return err
	}
	s := b.zk.Servers[0]
	if err := s.Stop(); err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		return err
	}
	conf, err = zktest.FourLetter(b.addr, "conf")
	if err != nil {
		return err
	}
	if got := value(conf, "maxClientCnxns="); got != "0" {
		return fmt.Errorf("maxClientCnxns is %q after the restart", got)
	}
	return nil
}

// value is the rest of the first line of out that starts with prefix.
func value(out, prefix string) string {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// mntr is one reading of the server's counters.
type mntr map[string]float64

func (b *bench) mntr() mntr {
	out, err := zktest.FourLetter(b.addr, "mntr")
	if err != nil {
		b.t.Fatalf("mntr: %v", err)
	}
	m := mntr{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, "\t")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			m[k] = f
		}
	}
	if _, ok := m["zk_packets_received"]; !ok {
		b.t.Fatalf("mntr has no zk_packets_received: %q", out)
	}
	return m
}

// watchesFired is how many watches the server has triggered so far, over
// every kind of event.
func (m mntr) watchesFired() float64 {
	return m["zk_sum_node_created_watch_count"] + m["zk_sum_node_deleted_watch_count"] +
		m["zk_sum_node_changed_watch_count"] + m["zk_sum_node_children_watch_count"]
}

// totalWatches is wchs's "Total watches:N": the watches registered now.
func (b *bench) totalWatches() int {
	out, err := zktest.FourLetter(b.addr, "wchs")
	if err != nil {
		b.t.Fatalf("wchs: %v", err)
	}
	n, err := strconv.Atoi(value(out, "Total watches:"))
	if err != nil {
		b.t.Fatalf("wchs: %q", out)
	}
	return n
}

// serverVersion is the server's version, from srvr.
func (b *bench) serverVersion() string {
	out, err := zktest.FourLetter(b.addr, "srvr")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return value(out, "Zookeeper version:")
}

// zxid is the server's last transaction id, from srvr: it grows by one
// with every write, failed ones included.
func (b *bench) zxid() float64 {
	out, err := zktest.FourLetter(b.addr, "srvr")
	if err != nil {
		b.t.Fatalf("srvr: %v", err)
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(value(out, "Zxid:"), "0x"), 16, 64)
	if err != nil {
		b.t.Fatalf("srvr: no zxid in %q", out)
	}
	return float64(v)
}

// reading is the server's counters and sessions at one moment.
type reading struct {
	m    mntr
	s    map[string]session
	zxid float64
}

func (b *bench) read() reading {
	s := b.cons()
	return reading{s: s, m: b.mntr(), zxid: b.zxid()}
}

// readingCost is how many packets taking a reading adds to
// zk_packets_received (each four-letter word counts as one), measured with
// nothing else going on.
func (b *bench) readingCost() float64 {
	cost := -1.0
	for range 3 {
		r0, r1 := b.read(), b.read()
		pings, _ := pingsAndSenders(r0.s, r1.s)
		if c := r1.m["zk_packets_received"] - r0.m["zk_packets_received"] - pings; cost < 0 || c < cost {
			cost = c
		}
	}
	return cost
}

// work is what the server did between two readings: packets received from
// clients (less the readings' own and the pings), sessions that sent
// requests, and writes.
func (b *bench) work(r0, r1 reading, cost float64) (packets float64, senders int, writes float64) {
	pings, senders := pingsAndSenders(r0.s, r1.s)
	return r1.m["zk_packets_received"] - r0.m["zk_packets_received"] - cost - pings, senders, r1.zxid - r0.zxid
}

// children lists p's children; a missing p has none.
func (b *bench) children(p string) []string {
	names, _, err := b.conn.Children(p)
	if err == zk.ErrNoNode {
		return nil
	}
	if err != nil {
		b.t.Fatalf("children %s: %v", p, err)
	}
	return names
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

// session is one client connection as cons lists it.
type session struct {
	recved int64 // packets received from it, pings included
	lcxid  int64 // the xid of its last request other than a ping
}

// cons lists the server's client sessions by id. A ping carries no xid,
// so a session's pings over a window are its packets less its requests
// (go-zookeeper numbers its requests 1, 2, 3, …).
func (b *bench) cons() map[string]session {
	out, err := zktest.FourLetter(b.addr, "cons")
	if err != nil {
		b.t.Fatalf("cons: %v", err)
	}
	m := map[string]session{}
	for _, line := range strings.Split(out, "\n") {
		_, stats, ok := strings.Cut(line, "](")
		if !ok {
			continue
		}
		var id string
		var s session
		for _, kv := range strings.Split(strings.TrimSuffix(strings.TrimSpace(stats), ")"), ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "sid":
				id = v
			case "recved":
				s.recved, _ = strconv.ParseInt(v, 10, 64)
			case "lcxid":
				u, _ := strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 64)
				s.lcxid = int64(u)
			}
		}
		if id != "" {
			m[id] = s
		}
	}
	return m
}

// pingsAndSenders compares two cons readings: the pings sent in between by
// the sessions in both, and how many sessions made requests (the ones gone
// by the second reading count as having made one: they closed).
func pingsAndSenders(before, after map[string]session) (pings float64, senders int) {
	for id, s0 := range before {
		s1, ok := after[id]
		if !ok {
			senders++
			continue
		}
		requests := s1.lcxid - s0.lcxid
		if requests > 0 {
			senders++
		}
		pings += float64(max(0, s1.recved-s0.recved-requests))
	}
	return pings, senders
}
