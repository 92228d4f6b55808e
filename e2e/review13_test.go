package e2e

import (
	"os"
	"strings"
	"testing"
)

// TestReview13EmptyCgroupRemovedQuietly (review of e03e27f): the
// workload's cgroup, found empty, is removed after the release, at Close;
// with --min-hold the guardian's poll (once a second) comes in between.
// The cgroup is removed once, by whoever, and lockex warns of nothing: a
// warning on every clean run teaches to skip the ones that matter.
func TestReview13EmptyCgroupRemovedQuietly(t *testing.T) {
	mnt := cgroup2Mount(t)
	if mnt == "" {
		t.Fatal("no cgroup v2 hierarchy is mounted: this test needs one the workload gets a cgroup in")
	}
	zk := startZK(t)
	res := lockex(t, nil, "-z", zk.Hosts(), "-i", "review13-quiet", "--min-hold", "1500ms", "--",
		"sed", "-n", "s/^0:://p", "/proc/self/cgroup")
	if res.code != 0 {
		t.Fatalf("exit %d; log:\n%s", res.code, res.stderr)
	}
	cg := strings.TrimSpace(res.stdout)
	if !strings.Contains(cg, "/lockex-") {
		t.Fatalf("the workload ran in %q, not in a cgroup of its own; log:\n%s", cg, res.stderr)
	}
	if _, err := os.Stat(mnt + cg); !os.IsNotExist(err) {
		t.Errorf("the workload's cgroup %s is still there (%v)", cg, err)
	}
	for _, line := range strings.Split(res.stderr, "\n") {
		if strings.Contains(line, " WRN ") {
			t.Errorf("a warning on a clean run: %s", line)
		}
	}
}
