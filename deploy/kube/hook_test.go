package kube

import (
	"strings"
	"testing"
)

// TestHelmTestHook: the chart's helm test Pod, rendered from the release's
// values and run as helm test runs it after an install. While no replica
// holds the lock it fails (exit 1, a free lock); once one does, it passes
// and names the holder; with digest auth, it passes too, so it reaches
// ZooKeeper with the credentials the replicas use.
func TestHelmTestHook(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		s := newScenario(t, "hook", scene{workload: nonroot, lockex: koImage})
		if code, out := s.rel.runTestHook(); code != 1 {
			t.Errorf("before any replica runs: the test pod exits %d, want 1 (a free lock)\n%s", code, out)
		}
		s.checkTestHookHeld()
	})
	t.Run("auth", func(t *testing.T) {
		s := newScenario(t, "hookauth", scene{workload: nonroot, lockex: dockerfileImage})
		s.rel.secrets["zk-auth"] = map[string]string{"zk-user": "kit", "zk-password": randomPassword()}
		withDigestAuth(s.rel.values)
		s.checkTestHookHeld()
	})
}

// checkTestHookHeld starts two replicas and, once one's workload runs, runs
// the test Pod: it must pass and name that replica as the holder.
func (s *scenario) checkTestHookHeld() {
	t := s.t
	t.Helper()
	s.start(2)
	holder := s.waitRunning(1, "the holder's workload")[0]
	code, out := s.rel.runTestHook()
	if code != 0 {
		t.Fatalf("with %s holding the lock: the test pod exits %d, want 0\n%s", holder, code, out)
	}
	// lockex's identifier is hostname:pid, and a pod's hostname its name.
	if got := statusHolder(out); got != holder {
		t.Errorf("the test pod names %q as the holder, want %s\n%s", got, holder, out)
	}
}

// statusHolder returns the host of the holder row of lockex --status's
// table, or "" without one.
func statusHolder(out string) string {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "holder" {
			host, _, _ := strings.Cut(f[2], ":")
			return host
		}
	}
	return ""
}
