package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

// statusJSON is what --status --output json prints, as a script reads it.
type statusJSON struct {
	Lock    string       `json:"lock"`
	Kind    string       `json:"kind"`
	Size    int          `json:"size"`
	Held    *bool        `json:"held"`
	Holders []statusNode `json:"holders"`
	Waiting []statusNode `json:"waiting"`
}

type statusNode struct {
	Node         string     `json:"node"`
	Identifier   string     `json:"identifier"`
	Host         string     `json:"host"`
	PID          int        `json:"pid"`
	Version      string     `json:"lockex_version"`
	PodNamespace string     `json:"pod_namespace"`
	PodName      string     `json:"pod_name"`
	PodUID       string     `json:"pod_uid"`
	Container    string     `json:"container"`
	IP           string     `json:"ip"`
	Created      time.Time  `json:"created"`
	Since        *time.Time `json:"since"`
	Token        int64      `json:"token"`
	Position     int        `json:"position"`
}

// statusOf runs --status --output json with args and decodes its answer.
func statusOf(t *testing.T, env []string, wantCode int, args ...string) statusJSON {
	t.Helper()
	r := lockex(t, env, append([]string{"--status", "--output", "json"}, args...)...)
	if r.code != wantCode {
		t.Fatalf("--status %q: exit %d, want %d; stdout:\n%s\nlog:\n%s", args, r.code, wantCode, r.stdout, r.stderr)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("--output json printed no JSON (%v):\n%s", err, r.stdout)
	}
	if st.Held == nil || st.Holders == nil || st.Waiting == nil {
		t.Errorf("held, holders and waiting must always be there (lists as [], not null):\n%s", r.stdout)
	}
	return st
}

// TestStatusUsage covers the --status runs that end before a lock is read.
func TestStatusUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		say  string
	}{
		{"no lockid and no command", []string{"--status", "-z", "127.0.0.1:1"}, 64, "--lockid"},
		{"bad output", []string{"--status", "-i", "x", "--output", "yaml"}, 64, "yaml"},
		{"unreachable zookeeper", []string{"--status", "-i", "x", "-z", "127.0.0.1:1", "-T", "1s"}, 69, "127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := lockex(t, nil, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; log:\n%s", r.code, tc.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.say) {
				t.Errorf("log does not mention %s:\n%s", tc.say, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("printed a status anyway:\n%s", r.stdout)
			}
			if lines := strings.Count(strings.TrimSpace(r.stderr), "\n") + 1; lines > 3 {
				t.Errorf("want a line or two of log, got %d:\n%s", lines, r.stderr)
			}
		})
	}
}

// TestStatusFree: a lock nobody holds is free (exit 1), whether its path
// exists or not, and asking creates nothing.
func TestStatusFree(t *testing.T) {
	zk := startZK(t)
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts()}
	conn := zkClient(t, zk.Hosts())
	// A lock that was used and released leaves its persistent path.
	if r := lockex(t, env, "-i", "used", "--", "true"); r.code != 0 {
		t.Fatalf("exit %d; log:\n%s", r.code, r.stderr)
	}
	before := children(t, conn, "/lockex")
	for _, tc := range []struct {
		id    string
		args  []string
		kind  string
		size  int
		title string
	}{
		{"never-used", nil, "lock", 1, "/lockex/never-used (lock): free"},
		{"used", nil, "lock", 1, "/lockex/used (lock): free"},
		{"never-used-sem", []string{"-c", "3"}, "semaphore", 3, "/lockex/never-used-sem (semaphore of 3): free"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			args := append([]string{"-i", tc.id}, tc.args...)
			r := lockex(t, env, append([]string{"--status"}, args...)...)
			if r.code != 1 || r.stdout != tc.title+"\n" {
				t.Errorf("exit %d, stdout %q; want 1 and %q; log:\n%s", r.code, r.stdout, tc.title+"\n", r.stderr)
			}
			st := statusOf(t, env, 1, args...)
			if st.Lock != "/lockex/"+tc.id || st.Kind != tc.kind || st.Size != tc.size || *st.Held || len(st.Holders)+len(st.Waiting) != 0 {
				t.Errorf("status %+v, want a free %s of %d at /lockex/%s", st, tc.kind, tc.size, tc.id)
			}
		})
	}
	if after := children(t, conn, "/lockex"); !slices.Equal(before, after) {
		t.Errorf("--status changed /lockex: before %q, after %q", before, after)
	}
}

// TestStatusHeld: a holder and two waiters, in the order they queued.
func TestStatusHeld(t *testing.T) {
	zk := startZK(t)
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts(), "LOCKEX_LOCKID=held"}
	conn := zkClient(t, zk.Hosts())
	var pids []int
	for i := range 3 {
		c := startLockex(t, env, "--", "sleep", "60")
		pids = append(pids, c.cmd.Process.Pid)
		eventually(t, 20*time.Second, fmt.Sprintf("contender %d queued", i+1), func() bool { return len(children(t, conn, "/lockex/held")) == i+1 })
	}
	saysSince(t, conn, "/lockex/held")

	r := lockex(t, env, "--status")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0; log:\n%s", r.code, r.stderr)
	}
	t.Logf("table:\n%s", r.stdout)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 5 || lines[0] != "/lockex/held (lock): held, 2 waiting" || !strings.HasPrefix(lines[1], "ROLE ") {
		t.Fatalf("want a title, a header and 3 rows:\n%s", r.stdout)
	}
	for i, role := range []string{"holder", "waiting", "waiting"} {
		row := strings.Fields(lines[2+i])
		if len(row) < 5 || row[0] != role || !strings.HasPrefix(row[1], "/lockex/held/") || !strings.HasSuffix(row[2], fmt.Sprintf(":%d", pids[i])) {
			t.Errorf("row %d = %q, want %s of lockex pid %d", i+1, lines[2+i], role, pids[i])
		}
	}

	st := statusOf(t, env, 0)
	t.Logf("%+v", st)
	if st.Lock != "/lockex/held" || st.Kind != "lock" || st.Size != 1 || !*st.Held || len(st.Holders) != 1 || len(st.Waiting) != 2 {
		t.Fatalf("status %+v, want a held lock with 2 waiting", st)
	}
	checkNodes(t, "lock holder", st.Holders, "/lockex/held/", pids[:1])
	checkNodes(t, "waiting", st.Waiting, "/lockex/held/", pids[1:])
	if st.Holders[0].Token >= st.Waiting[0].Token || st.Waiting[0].Token >= st.Waiting[1].Token {
		t.Errorf("tokens not in queue order: %+v", st)
	}
	if kids := children(t, conn, "/lockex/held"); len(kids) != 3 {
		t.Errorf("--status changed the lock's children: %q", kids)
	}
}

// TestStatusSemaphore: two leases of two held, one contender waiting.
func TestStatusSemaphore(t *testing.T) {
	zk := startZK(t)
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts(), "LOCKEX_LOCKID=sem"}
	conn := zkClient(t, zk.Hosts())
	var pids []int
	for i := range 2 {
		c := startLockex(t, env, "-c", "2", "--", "sleep", "60")
		pids = append(pids, c.cmd.Process.Pid)
		eventually(t, 20*time.Second, fmt.Sprintf("lease %d held", i+1), func() bool { return len(children(t, conn, "/lockex/sem")) == i+1 })
	}
	w := startLockex(t, env, "-c", "2", "--", "sleep", "60")
	pids = append(pids, w.cmd.Process.Pid)
	// The second holder's turn node can still be there for a moment after
	// its lease was taken: wait for the third contender's own, by its pid.
	eventually(t, 20*time.Second, "third contender queued", func() bool {
		for _, kid := range children(t, conn, "/lockex/sem-__lock__") {
			data, _, err := conn.Get("/lockex/sem-__lock__/" + kid)
			if err == nil && strings.HasSuffix(strings.Fields(string(data))[0], fmt.Sprintf(":%d", w.cmd.Process.Pid)) {
				return true
			}
		}
		return false
	})

	r := lockex(t, env, "--status", "-c", "2")
	t.Logf("table:\n%s", r.stdout)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "/lockex/sem (semaphore of 2): held, 2 of 2 leases, 1 waiting\n") {
		t.Fatalf("exit %d, stdout:\n%s\nlog:\n%s", r.code, r.stdout, r.stderr)
	}
	// The size is read from ZooKeeper: --status without -c finds it too.
	for _, args := range [][]string{{"-c", "2"}, nil} {
		st := statusOf(t, env, 0, args...)
		if st.Kind != "semaphore" || st.Size != 2 || !*st.Held || len(st.Holders) != 2 || len(st.Waiting) != 1 {
			t.Fatalf("status %+v, want a semaphore of 2, both held, 1 waiting", st)
		}
		checkNodes(t, "lease holder", st.Holders, "/lockex/sem/", pids[:2])
		checkNodes(t, "waiting", st.Waiting, "/lockex/sem-__lock__/", pids[2:])
	}
}

// saysSince waits until the holder of the lock at p, the lowest
// sequence, has written since when it holds into its node (within a beat
// of taking the lock).
func saysSince(t *testing.T, conn *zk.Conn, p string) {
	t.Helper()
	eventually(t, 20*time.Second, "the holder says since when", func() bool {
		kids := children(t, conn, p)
		slices.SortFunc(kids, func(a, b string) int {
			return strings.Compare(a[strings.LastIndex(a, "__"):], b[strings.LastIndex(b, "__"):])
		})
		if len(kids) == 0 {
			return false
		}
		data, _, err := conn.Get(p + "/" + kids[0])
		return err == nil && strings.Contains(string(data), " since=")
	})
}

// checkNodes compares the nodes of one list with the lockex processes
// expected there, in order. A lock's holder says since when it holds in
// its identifier (since=, the server's time of its first write after it
// got the lock); a lease's since is its creation; a waiter has none.
func checkNodes(t *testing.T, role string, nodes []statusNode, under string, pids []int) {
	t.Helper()
	if len(nodes) != len(pids) {
		t.Fatalf("%d %s, want %d", len(nodes), role, len(pids))
	}
	host, _ := os.Hostname()
	for i, n := range nodes {
		ident := fmt.Sprintf("%s:%d lockex/%s", host, pids[i], lockexVersion)
		switch {
		case role == "lock holder" && n.Since != nil:
			ident += " since=" + n.Since.UTC().Format("2006-01-02T15:04:05.000Z")
			if n.Since.Before(n.Created) || time.Since(*n.Since) < 0 {
				t.Errorf("%s %d: since %s, created %s: want since between its creation and now", role, i+1, n.Since, n.Created)
			}
		case role == "lock holder":
			t.Errorf("%s %d = %+v: no since", role, i+1, n)
		case role == "lease holder" && (n.Since == nil || !n.Since.Equal(n.Created)):
			t.Errorf("%s %d = %+v: want since = created", role, i+1, n)
		case role == "waiting" && n.Since != nil:
			t.Errorf("%s %d = %+v: a waiter has no since", role, i+1, n)
		}
		if !strings.HasPrefix(n.Node, under) || n.Identifier != ident ||
			n.Host != host || n.PID != pids[i] || n.Version != lockexVersion ||
			n.Position != i+1 || n.Token <= 0 || time.Since(n.Created) > 5*time.Minute || time.Since(n.Created) < -time.Minute {
			t.Errorf("%s %d = %+v, want a node under %s of lockex pid %d", role, i+1, n, under, pids[i])
		}
	}
}

// TestStatusPodIdentity: a holder told its pod, container and IP shows
// them, in the table's POD, IP and CONTAINER columns and in the JSON, and
// since when it holds; a waiter without them shows "-" and none.
func TestStatusPodIdentity(t *testing.T) {
	zk := startZK(t)
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts(), "LOCKEX_LOCKID=pod"}
	conn := zkClient(t, zk.Hosts())
	// The IP is only written into the node, never connected to: an
	// address of the documentation range (RFC 5737).
	pod := []string{"LOCKEX_POD_NAMESPACE=prod", "LOCKEX_POD_NAME=web-0", "LOCKEX_POD_UID=3f1e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b", "LOCKEX_CONTAINER_NAME=app", "LOCKEX_POD_IP=192.0.2.10"}
	start := time.Now().Truncate(time.Millisecond)
	holder := startLockex(t, append(slices.Clone(env), pod...), "--", "sleep", "60")
	eventually(t, 20*time.Second, "the holder holds and says since when", func() bool {
		kids := children(t, conn, "/lockex/pod")
		if len(kids) != 1 {
			return false
		}
		data, _, err := conn.Get("/lockex/pod/" + kids[0])
		return err == nil && strings.Contains(string(data), " since=")
	})
	waiter := startLockex(t, env, "--", "sleep", "60")
	eventually(t, 20*time.Second, "the waiter queued", func() bool { return len(children(t, conn, "/lockex/pod")) == 2 })
	host, _ := os.Hostname()

	r := lockex(t, env, "--status")
	t.Logf("table:\n%s", r.stdout)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if r.code != 0 || len(lines) != 4 || strings.Join(strings.Fields(lines[1]), " ") != "ROLE NODE IDENTIFIER POD IP CONTAINER SINCE TOKEN" {
		t.Fatalf("exit %d; want a title, a header and 2 rows:\n%s", r.code, r.stdout)
	}
	for i, want := range [][4]string{
		{fmt.Sprintf("%s:%d", host, holder.cmd.Process.Pid), "prod/web-0", "192.0.2.10", "app"},
		{fmt.Sprintf("%s:%d", host, waiter.cmd.Process.Pid), "-", "-", "-"},
	} {
		row := strings.Fields(lines[2+i])
		if len(row) != 9 || [4]string(row[2:6]) != want {
			t.Errorf("row %d = %q, want IDENTIFIER, POD, IP, CONTAINER %q, then SINCE (age) and TOKEN", i+1, lines[2+i], want)
			continue
		}
		if since, err := time.Parse(time.RFC3339, row[6]); err != nil || since.Before(start.Truncate(time.Second)) || time.Since(since) < 0 {
			t.Errorf("row %d: SINCE %q (%v), want a time within the test", i+1, row[6], err)
		}
	}

	st := statusOf(t, env, 0)
	h, w := st.Holders[0], st.Waiting[0]
	if h.Since == nil || h.Since.Before(h.Created) || h.Since.Before(start) || time.Since(*h.Since) < 0 {
		t.Fatalf("holder %+v: want since between its creation and now", h)
	}
	if h.Host != host || h.PID != holder.cmd.Process.Pid || h.Version != lockexVersion || h.PodNamespace != "prod" || h.PodName != "web-0" ||
		h.PodUID != "3f1e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b" || h.Container != "app" || h.IP != "192.0.2.10" ||
		h.Identifier != fmt.Sprintf("%s:%d lockex/%s pod=prod/web-0 uid=3f1e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b container=app ip=192.0.2.10 since=%s",
			host, holder.cmd.Process.Pid, lockexVersion, h.Since.UTC().Format("2006-01-02T15:04:05.000Z")) {
		t.Errorf("holder %+v, want its pod, container and IP", h)
	}
	if w.PID != waiter.cmd.Process.Pid || w.PodName != "" || w.PodUID != "" || w.Container != "" || w.IP != "" || w.Since != nil {
		t.Errorf("waiter %+v, want no pod and no since", w)
	}
}
