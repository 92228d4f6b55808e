package zktest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bindAttempts is how many port sets a start tries: a free port can be
// taken by another process between freePorts and the JVM binding it.
const bindAttempts = 4

type config struct {
	tickTime               time.Duration
	minSession, maxSession time.Duration // zero: ZooKeeper's default
}

// Option configures the servers that Start and StartEnsemble write.
type Option func(*config)

// TickTime sets ZooKeeper's time unit (default 200ms). Session timeouts
// default to 2 to 20 ticks, and a follower gets 10 ticks to connect and
// sync with its leader (initLimit) and 5 to answer it (syncLimit).
func TickTime(d time.Duration) Option { return func(c *config) { c.tickTime = d } }

// SessionTimeouts sets the range of session timeouts the servers grant
// (minSessionTimeout and maxSessionTimeout, in ms): a client asking for
// less or more gets the bound. Without it the range is 2 to 20 ticks, 400ms
// to 4s with the default tickTime.
func SessionTimeouts(min, max time.Duration) Option {
	return func(c *config) { c.minSession, c.maxSession = min, max }
}

// Cluster is a standalone server (one member) or an ensemble.
type Cluster struct{ Servers []*Server }

// Start starts a standalone server and returns once it serves. It fails
// the test if the server does not serve within 30s. The JVM is killed when
// the test ends.
func Start(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	return start(t, 1, opts)
}

// StartEnsemble starts an ensemble of n servers, all at once, and returns
// once all of them serve, one as leader. It fails the test if that takes
// more than 30s. The JVMs are killed when the test ends.
func StartEnsemble(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("zktest: ensemble of %d servers", n)
	}
	return start(t, n, opts)
}

func start(t testing.TB, n int, opts []Option) *Cluster {
	t.Helper()
	java := javaPath
	if _, err := os.Stat(java); err != nil {
		if java, err = exec.LookPath("java"); err != nil {
			t.Fatalf("zktest: no java at %s or in PATH; run `make test`, which installs it", javaPath)
		}
	}
	if _, err := os.Stat(zkJar); err != nil {
		t.Fatalf("zktest: no ZooKeeper at %s; run `make test`, which installs it", zkJar)
	}
	cfg := config{tickTime: 200 * time.Millisecond}
	for _, opt := range opts {
		opt(&cfg)
	}
	base := t.TempDir()
	c := &Cluster{}
	for i := 1; i <= n; i++ {
		c.Servers = append(c.Servers, &Server{
			id: i, dir: filepath.Join(base, fmt.Sprintf("zk%d", i)), java: java, ensemble: n > 1,
		})
	}
	// Registered before any JVM starts, so that a failed start leaves none.
	t.Cleanup(c.kill)

	for attempt := 1; ; attempt++ {
		err := c.startOnce(cfg)
		// A member whose election port was taken serves at first (it dials
		// the others) and exits seconds later, so check the logs even when
		// all serve. The bind is long done by then: it precedes the election.
		taken := c.bindFailed()
		if err == nil && !taken {
			return c
		}
		c.kill()
		if !taken {
			t.Fatalf("%v", err)
		}
		if attempt == bindAttempts {
			t.Fatalf("zktest: a port was taken in each of %d attempts%s", attempt, c.logTails())
		}
	}
}

// startOnce writes every server's files for a fresh set of ports, starts
// all the JVMs and waits for all of them to serve.
func (c *Cluster) startOnce(cfg config) error {
	ports, err := freePorts(3 * len(c.Servers)) // client, peer and election port
	if err != nil {
		return err
	}
	var members strings.Builder
	if len(c.Servers) > 1 { // with no server.N lines ZooKeeper runs standalone
		for i, s := range c.Servers {
			fmt.Fprintf(&members, "server.%d=127.0.0.1:%d:%d\n", s.id, ports[3*i+1], ports[3*i+2])
		}
	}
	for i, s := range c.Servers {
		s.clientPort = ports[3*i]
		if err := s.writeFiles(cfg, members.String()); err != nil {
			return err
		}
	}
	for _, s := range c.Servers {
		if err := s.launch(); err != nil {
			return err
		}
	}
	// Followers serve only once synced with a leader, so all serving
	// implies one of them leads.
	return waitStarted(c.Servers, time.Now().Add(startTimeout))
}

// writeFiles writes the server's zoo.cfg and data/myid into an empty
// directory: a previous attempt may have left data and a bind error's log.
func (s *Server) writeFiles(cfg config, members string) error {
	data := filepath.Join(s.dir, "data")
	if err := os.RemoveAll(s.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "tickTime=%d\ninitLimit=10\nsyncLimit=5\n", cfg.tickTime.Milliseconds())
	fmt.Fprintf(&b, "dataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\n", data, s.clientPort)
	fmt.Fprintf(&b, "admin.enableServer=false\n4lw.commands.whitelist=*\n")
	if cfg.minSession > 0 {
		fmt.Fprintf(&b, "minSessionTimeout=%d\n", cfg.minSession.Milliseconds())
	}
	if cfg.maxSession > 0 {
		fmt.Fprintf(&b, "maxSessionTimeout=%d\n", cfg.maxSession.Milliseconds())
	}
	b.WriteString(members)
	if err := os.WriteFile(filepath.Join(s.dir, "zoo.cfg"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(data, "myid"), []byte(fmt.Sprintf("%d\n", s.id)), 0o644)
}

// waitStarted polls until every server serves, failing early if one exits.
func waitStarted(servers []*Server, deadline time.Time) error {
	for {
		serving := 0
		for _, s := range servers {
			if !s.Running() {
				return fmt.Errorf("zktest: server %d exited while starting%s", s.id, s.logTail())
			}
			mode, err := s.mode(pollTimeout)
			if err == nil && s.serves(mode) {
				serving++
			} else if time.Now().After(deadline) {
				return fmt.Errorf("zktest: server %d not serving after %v (mode %q, %v)%s",
					s.id, startTimeout, mode, err, s.logTail())
			}
		}
		if serving == len(servers) {
			return nil
		}
		time.Sleep(pollInterval)
	}
}

// Hosts returns the client addresses in server order, comma-separated, as
// ZooKeeper clients take them: "127.0.0.1:p1,127.0.0.1:p2,...".
func (c *Cluster) Hosts() string {
	addrs := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		addrs[i] = s.Addr()
	}
	return strings.Join(addrs, ",")
}

// Leader returns the member whose srvr reports Mode: leader at the time of
// the call, or an error if none does (standalone, or during an election).
func (c *Cluster) Leader() (*Server, error) {
	for _, s := range c.Servers {
		if mode, err := s.Mode(); err == nil && mode == "leader" {
			return s, nil
		}
	}
	return nil, fmt.Errorf("zktest: no leader among %d servers", len(c.Servers))
}

// WaitServing polls until a quorum of the members serves, one of them as
// leader (for a standalone server: until it serves), and fails after
// timeout. Use it after killing or pausing members, to wait out an election.
func (c *Cluster) WaitServing(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	quorum := len(c.Servers)/2 + 1
	for {
		serving, leaders := 0, 0
		for _, s := range c.Servers {
			if mode, err := s.mode(pollTimeout); err == nil && s.serves(mode) {
				serving++
				if mode == "leader" {
					leaders++
				}
			}
		}
		if serving >= quorum && (leaders == 1 || len(c.Servers) == 1) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("zktest: %d of %d servers serving (%d leaders) after %v",
				serving, len(c.Servers), leaders, timeout)
		}
		time.Sleep(pollInterval)
	}
}

// kill kills every running member and waits for it, for cleanup.
func (c *Cluster) kill() {
	for _, s := range c.Servers {
		s.kill()
	}
}

func (c *Cluster) bindFailed() bool {
	for _, s := range c.Servers {
		if s.bindFailed() {
			return true
		}
	}
	return false
}

func (c *Cluster) logTails() string {
	var b strings.Builder
	for _, s := range c.Servers {
		b.WriteString(s.logTail())
	}
	return b.String()
}

// freePorts returns n distinct loopback ports that were free just now:
// all are held open together, so the kernel cannot hand out one twice.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
