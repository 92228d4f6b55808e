package zktest

import (
	"strings"
	"testing"
	"time"
)

func TestStandalone(t *testing.T) {
	t.Parallel()
	began := time.Now()
	c := Start(t, SessionTimeouts(time.Second, 10*time.Second))
	t.Logf("standalone serving after %v at %s", time.Since(began), c.Hosts())
	s := c.Servers[0]
	if s.ID() != 1 || c.Hosts() != s.Addr() {
		t.Fatalf("ID %d, Hosts %q, Addr %q", s.ID(), c.Hosts(), s.Addr())
	}
	if c.TLS != nil || c.SecureHosts() != "" || s.SecureAddr() != "" {
		t.Fatalf("without TLS: TLS %v, SecureHosts %q, SecureAddr %q", c.TLS, c.SecureHosts(), s.SecureAddr())
	}
	if mode, err := s.Mode(); err != nil || mode != "standalone" {
		t.Fatalf("Mode() = %q, %v; want standalone", mode, err)
	}
	if out, err := FourLetter(s.Addr(), "conf"); err != nil || !strings.Contains(out, "maxSessionTimeout=10000") {
		t.Fatalf("conf = %q, %v; want maxSessionTimeout=10000", out, err)
	}

	began = time.Now()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %v", time.Since(began))
	if s.Running() {
		t.Fatal("Running() after Stop")
	}
	if _, err := s.Mode(); err == nil {
		t.Fatal("Mode() succeeded after Stop")
	}
	if err := s.Stop(); err == nil {
		t.Fatal("second Stop succeeded")
	}

	began = time.Now()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted in %v", time.Since(began))
	if err := s.Start(); err == nil {
		t.Fatal("Start of a running server succeeded")
	}
	if err := c.WaitServing(time.Second); err != nil {
		t.Fatal(err)
	}

	if err := s.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mode(); err == nil {
		t.Fatal("Mode() of a paused server succeeded")
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitServing(5 * time.Second); err != nil {
		t.Fatal(err)
	}

	// A frozen JVM still stops: Stop resumes it to let it handle SIGTERM.
	if err := s.Pause(); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped paused server in %v", time.Since(began))
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}

	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Fatal("Running() after Kill")
	}
	if err := s.Kill(); err == nil {
		t.Fatal("second Kill succeeded")
	}
}

func TestEnsemble(t *testing.T) {
	t.Parallel()
	began := time.Now()
	c := StartEnsemble(t, 3)
	t.Logf("ensemble serving after %v at %s", time.Since(began), c.Hosts())

	leader := onlyLeader(t, c)
	for _, s := range c.Servers {
		if mode, err := s.Mode(); err != nil || (s != leader && mode != "follower") {
			t.Fatalf("server %d: Mode() = %q, %v", s.ID(), mode, err)
		}
	}

	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	if err := c.WaitServing(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("new leader after %v", time.Since(began))
	if next := onlyLeader(t, c); next == leader {
		t.Fatal("the killed server is still leader")
	}

	began = time.Now()
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("old leader rejoined in %v", time.Since(began))
	if mode, err := leader.Mode(); err != nil || mode != "follower" {
		t.Fatalf("restarted server: Mode() = %q, %v; want follower", mode, err)
	}
}

// onlyLeader returns the leader, failing unless exactly one member leads.
func onlyLeader(t *testing.T, c *Cluster) *Server {
	t.Helper()
	var leaders []*Server
	for _, s := range c.Servers {
		if mode, _ := s.Mode(); mode == "leader" {
			leaders = append(leaders, s)
		}
	}
	if len(leaders) != 1 {
		t.Fatalf("%d leaders, want 1", len(leaders))
	}
	if l, err := c.Leader(); err != nil || l != leaders[0] {
		t.Fatalf("Leader() = %v, %v; want server %d", l, err, leaders[0].ID())
	}
	return leaders[0]
}
