package zktest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestCut: a follower cut from the leader stops serving once syncLimit
// ticks have passed, while the leader keeps its quorum with the other
// follower; a leader cut from both followers loses its quorum, and they
// elect one of themselves. Healed, every member serves again, and when
// the test ends no rule of the cluster is left.
func TestCut(t *testing.T) {
	t.Parallel()
	var c *Cluster
	t.Cleanup(func() { // runs after the cluster's own cleanup
		if c == nil {
			return
		}
		if rules, err := c.Rules(); err != nil || len(rules) > 0 {
			t.Errorf("left behind: %v (%v)", rules, err)
		}
	})
	c = StartEnsemble(t, 3, Partitions())
	for i, s := range c.Servers {
		if want := fmt.Sprintf("127.0.0.%d", 11+i); s.Host() != want || !strings.HasPrefix(s.Addr(), want+":") {
			t.Fatalf("server %d: Host %q, Addr %q; want %s", s.ID(), s.Host(), s.Addr(), want)
		}
	}
	if rules, err := c.Rules(); err != nil || len(rules) != 3 {
		t.Fatalf("rules %q (%v); want one mark per member", rules, err)
	}

	t.Run("follower from leader", func(t *testing.T) {
		leader := onlyLeader(t, c)
		follower := c.Servers[0]
		if follower == leader {
			follower = c.Servers[1]
		}
		cut, err := c.Cut([]*Server{follower}, []*Server{leader})
		if err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		eventually(t, 10*time.Second, "the follower stops serving", func() bool {
			_, err := follower.Mode()
			return err != nil
		})
		t.Logf("follower stopped serving %v after the cut (syncLimit: 5 ticks of 200ms)", time.Since(began).Round(time.Millisecond))
		if mode, err := leader.Mode(); err != nil || mode != "leader" {
			t.Fatalf("leader: Mode() = %q, %v", mode, err)
		}
		if err := cut.Heal(); err != nil {
			t.Fatal(err)
		}
		if err := cut.Heal(); err != nil {
			t.Fatalf("second Heal: %v", err)
		}
		eventually(t, 20*time.Second, "the follower serves again", func() bool {
			mode, err := follower.Mode()
			return err == nil && mode == "follower"
		})
		if rules, _ := c.Rules(); len(rules) != 3 {
			t.Errorf("after Heal: %q", rules)
		}
	})

	t.Run("leader from both followers", func(t *testing.T) {
		leader := onlyLeader(t, c)
		cut, err := c.Isolate(leader)
		if err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		eventually(t, 20*time.Second, "a new leader", func() bool {
			l, err := c.Leader()
			return err == nil && l != leader
		})
		t.Logf("new leader %v after the cut", time.Since(began).Round(time.Millisecond))
		eventually(t, 10*time.Second, "the old leader stops serving", func() bool {
			_, err := leader.Mode()
			return err != nil
		})
		if err := cut.Heal(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "all serve, one leading", func() bool {
			for _, s := range c.Servers {
				if _, err := s.Mode(); err != nil {
					return false
				}
			}
			_, err := c.Leader()
			return err == nil
		})
	})

	t.Run("clients pass", func(t *testing.T) {
		leader := onlyLeader(t, c)
		cut, err := c.Isolate(leader)
		if err != nil {
			t.Fatal(err)
		}
		defer cut.Heal()
		// Right after the cut the leader still believes in its quorum;
		// either way it answers a client.
		if _, err := FourLetter(leader.Addr(), "ruok"); err != nil {
			t.Fatalf("a client of the isolated leader: %v", err)
		}
	})
}

// TestCutNeedsPartitions: without the option there is nothing to cut with.
func TestCutNeedsPartitions(t *testing.T) {
	c := &Cluster{Servers: []*Server{{id: 1}, {id: 2}}}
	if _, err := c.Cut(c.Servers[:1], c.Servers[1:]); err == nil {
		t.Fatal("Cut without Partitions succeeded")
	}
	if rules, err := c.Rules(); err != nil || rules != nil {
		t.Fatalf("Rules() = %v, %v", rules, err)
	}
}

// eventually polls cond every 50ms until it holds, failing after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(pollInterval) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
	}
}

// TestAbsent: a rule counts as gone only when iptables -C says it is not
// there (exit 1), never when the check itself fails (here, a table that
// does not exist: exit 3; under load, a busy nf_tables or xtables lock):
// a rule so misjudged would be forgotten and outlive the test.
func TestAbsent(t *testing.T) {
	r := &rule{table: "filter", spec: []string{
		"-d", "127.0.0.254/32", "-m", "comment", "--comment", fmt.Sprintf("zktest-absent-%d", time.Now().UnixNano()), "-j", "ACCEPT",
	}}
	if gone, err := absent(r); !gone || err != nil {
		t.Fatalf("a rule never added: gone %v (%v)", gone, err)
	}
	n := &nemesis{}
	if err := n.add(r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.close(); err != nil {
			t.Error(err)
		}
	})
	if gone, err := absent(r); gone || err != nil {
		t.Errorf("a rule in place: gone %v (%v)", gone, err)
	}
	broken := &rule{table: "nosuchtable", spec: r.spec}
	if gone, err := absent(broken); gone || err == nil {
		t.Errorf("a check that failed: gone %v (%v), want not known to be gone, with the error", gone, err)
	}
}
