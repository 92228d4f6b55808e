package zktest

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// Peer partitions between ensemble members, made with iptables.
//
// The members bind distinct loopback addresses, but ZooKeeper never binds
// the sockets it connects out with, so every peer connection starts from
// 127.0.0.1 and an address alone cannot say which member opened it. So
// with the Partitions option each member's JVM runs under a group id of
// its own, and a mangle rule marks every connection a member opens with
// that id (CONNMARK, set on the first packet, so the mark names the
// connection's opener in both directions). A cut between X and Y then
// drops, in OUTPUT (which every loopback packet passes), the packets of
// connections X opened that go to or come from Y's address, and those of
// connections Y opened to or from X's. Clients (no member opened their
// connections) and the links between other pairs pass.
//
// Every rule carries a comment unique to the cluster and is deleted by
// its exact specification: a test never touches rules it did not add,
// and never flushes a chain.

// iptablesPath is where Debian's iptables package puts it.
const iptablesPath = "/usr/sbin/iptables"

type rule struct {
	table string
	spec  []string // after "-I OUTPUT" or "-D OUTPUT"
}

func (r rule) String() string { return "-t " + r.table + " " + strings.Join(r.spec, " ") }

// nemesis owns one cluster's iptables rules.
type nemesis struct {
	tag string // unique to the cluster: "zktest-<random>"

	mu    sync.Mutex
	cuts  int     // cuts made so far, to name the next one
	added []*rule // every rule in place now, in the order added
}

// newNemesis gives each server a group id of its own and marks the
// connections its JVM will open. Call it before the JVMs start: a
// connection is marked only when it opens.
func newNemesis(servers []*Server) (*nemesis, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	n := &nemesis{tag: "zktest-" + hex.EncodeToString(b[:4])}
	base := binary.BigEndian.Uint32(b[4:])%(1<<28) + 1<<28 // far above any real group
	for i, s := range servers {
		s.gid = base + uint32(i)
		gid := strconv.FormatUint(uint64(s.gid), 10)
		err := n.add(&rule{table: "mangle", spec: []string{
			"-m", "owner", "--gid-owner", gid, "-m", "conntrack", "--ctstate", "NEW",
			"-m", "comment", "--comment", fmt.Sprintf("%s-server%d", n.tag, s.id),
			"-j", "CONNMARK", "--set-mark", gid,
		}})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (n *nemesis) add(r *rule) error {
	if err := iptables(append([]string{"-t", r.table, "-I", "OUTPUT"}, r.spec...)); err != nil {
		return fmt.Errorf("zktest: adding iptables rule %s (Partitions needs root and iptables): %w", r, err)
	}
	n.mu.Lock()
	n.added = append(n.added, r)
	n.mu.Unlock()
	return nil
}

// remove deletes the rules, each exactly as it was added, and checks that
// none is left (iptables -C fails for a rule that is not there).
func (n *nemesis) remove(rules []*rule) error {
	var errs []error
	for _, r := range rules {
		if err := iptables(append([]string{"-t", r.table, "-D", "OUTPUT"}, r.spec...)); err != nil {
			errs = append(errs, fmt.Errorf("zktest: deleting iptables rule %s: %w", r, err))
		}
		if gone, err := absent(r); !gone {
			errs = append(errs, fmt.Errorf("zktest: iptables rule %s still there after deleting it, or not known to be gone: %v", r, err))
			continue // still ours: close tries again
		}
		n.mu.Lock()
		for i, a := range n.added {
			if a == r {
				n.added = append(n.added[:i], n.added[i+1:]...)
				break
			}
		}
		n.mu.Unlock()
	}
	return errors.Join(errs...)
}

// close deletes every rule still in place, cuts first.
func (n *nemesis) close() error {
	n.mu.Lock()
	left := make([]*rule, len(n.added))
	for i, r := range n.added {
		left[len(left)-1-i] = r
	}
	n.mu.Unlock()
	return n.remove(left)
}

// Rules returns the iptables rules (as iptables -S prints them) that carry
// this cluster's tag, to check that none is left.
func (c *Cluster) Rules() ([]string, error) {
	if c.nemesis == nil {
		return nil, nil
	}
	var out []string
	for _, table := range []string{"filter", "mangle"} {
		b, err := exec.Command(iptablesPath, "-w", "5", "-t", table, "-S", "OUTPUT").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("zktest: iptables -t %s -S OUTPUT: %v: %s", table, err, b)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, c.nemesis.tag+"-") {
				out = append(out, table+": "+line)
			}
		}
	}
	return out, nil
}

// A Cut is a set of dropped peer links, in place until Heal or the end of
// the test.
type Cut struct {
	n     *nemesis
	name  string
	rules []*rule
	once  sync.Once
	err   error
}

// Cut drops every peer link between a member of a and a member of b, both
// ways: proposals, pings and their answers, and new connections, election
// ones included. Established connections stay open, as in a real
// partition; ZooKeeper's own timeouts (syncLimit ticks) notice. The
// cluster must have been started with the Partitions option.
func (c *Cluster) Cut(a, b []*Server) (*Cut, error) {
	if c.nemesis == nil {
		return nil, errors.New("zktest: Cut needs a cluster started with the Partitions option")
	}
	n := c.nemesis
	n.mu.Lock()
	n.cuts++
	cut := &Cut{n: n, name: fmt.Sprintf("%s-cut%d", n.tag, n.cuts)}
	n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return nil, fmt.Errorf("zktest: server %d on both sides of a cut", x.id)
			}
			for _, dir := range [][2]*Server{{x, y}, {y, x}} {
				opener, peer := strconv.FormatUint(uint64(dir[0].gid), 10), dir[1].host
				for _, side := range []string{"-d", "-s"} {
					r := &rule{table: "filter", spec: []string{
						"-m", "connmark", "--mark", opener, side, peer,
						"-m", "comment", "--comment", cut.name, "-j", "DROP",
					}}
					if err := n.add(r); err != nil {
						cut.Heal()
						return nil, err
					}
					cut.rules = append(cut.rules, r)
				}
			}
		}
	}
	return cut, nil
}

// Isolate cuts s off from every other member.
func (c *Cluster) Isolate(s *Server) (*Cut, error) {
	var others []*Server
	for _, o := range c.Servers {
		if o != s {
			others = append(others, o)
		}
	}
	return c.Cut([]*Server{s}, others)
}

// Heal deletes the cut's rules; the links work again at once (TCP sends
// again what was dropped). A second call returns the first one's result.
func (x *Cut) Heal() error {
	x.once.Do(func() { x.err = x.n.remove(x.rules) })
	return x.err
}

// absent reports whether r is known not to be in place: iptables -C
// exits 1 for a rule that is not there. Any other failure (the xtables
// lock held past the wait, say) tells nothing, and r must stay on the
// list of rules to delete, or it would outlive the test.
func absent(r *rule) (bool, error) {
	err := iptables(append([]string{"-t", r.table, "-C", "OUTPUT"}, r.spec...))
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 {
		return true, nil
	}
	return false, err
}

func iptables(args []string) error {
	// -w: wait for the xtables lock rather than fail when another
	// iptables runs at the same moment.
	out, err := exec.Command(iptablesPath, append([]string{"-w", "5"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
