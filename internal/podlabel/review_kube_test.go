package podlabel

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/kubetest"
)

// labelerOf is a Labeler of pod name in team-a with a token bound to that
// pod, as its own lockex has it.
func labelerOf(t *testing.T, c *kubetest.ControlPlane, name string) *Labeler {
	t.Helper()
	var p kubetest.Pod
	c.Get(t, "/api/v1/namespaces/team-a/pods/"+name, &p)
	tr := c.Create(t, "/api/v1/namespaces/team-a/serviceaccounts/web/token", map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
		"spec": map[string]any{"boundObjectRef": map[string]any{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": p.Metadata.UID}},
	})
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(tr["status"].(map[string]any)["token"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAPEM())
	return New(Config{Key: "lockex.io/active", Value: "true", DeletionCost: true, Pod: name, Namespace: "team-a",
		Server: c.URL(), TokenFile: token, CA: pool}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
}

// TestReviewCorrectAfterNoopRelabel: web-0's holder was frozen (SIGSTOP,
// a paused VM) or cut off from both ZooKeeper and the API server, so its
// label stayed. This lockex (web-1) took over, read web-0 while it surely
// held, and was itself paused between that check and its patch, past its
// session's expiry. web-0's lockex came back, its patch removing the label
// having failed (or been coalesced away: Run only sends the latest wish),
// and holds again: its labeler sends label and holder cost, which web-0
// carries already. The API server does not write an unchanged object, so
// the resourceVersion stays the one web-1 read, and web-1's patch, sent as
// it resumes, passes its precondition: the holder's label and cost go,
// and web-0's labeler, which knows it sent them, never sends them again.
// Unless each hold is a write of its own (Wish.Hold).
func TestReviewCorrectAfterNoopRelabel(t *testing.T) {
	c, l, web0 := correctCluster(t, nil)
	// The session's SureUntil: fresh evidence until the pause, which
	// outlasts the session.
	var paused atomic.Bool
	l.Session(func() time.Time {
		if paused.Load() {
			return time.Now().Add(-time.Second)
		}
		return time.Now().Add(time.Hour)
	})
	l.mu.Lock()
	l.held = true
	l.mu.Unlock()
	holder := labelerOf(t, c, "web-0")
	// Its earlier hold, as its lockex last told it before the freeze.
	if err := holder.patch(context.Background(), Wish{Active: true, Held: true, Hold: "4294967301"}); err != nil {
		t.Fatal(err)
	}
	var before, after struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	l.beforeCorrect = func() {
		// Paused here, past the session's expiry. web-0 holds again; its
		// lockex says so.
		if paused.Swap(true) {
			t.Error("judged again after the pause")
			return
		}
		c.Get(t, "/api/v1/namespaces/team-a/pods/web-0", &before)
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		if err := holder.patch(ctx, Wish{Active: true, Held: true, Hold: "8589934597"}); err != nil {
			t.Errorf("web-0's own patch: %v", err)
		}
		c.Get(t, "/api/v1/namespaces/team-a/pods/web-0", &after)
	}
	l.correctOne(web0)
	t.Logf("web-0's resourceVersion before its own patch %s, after %s", before.Metadata.ResourceVersion, after.Metadata.ResourceVersion)
	if label, _, cost := podMeta(t, c, "web-0"); label != "true" || cost != HolderCost {
		t.Errorf("web-0, which holds again and said so, now has label %q and cost %s; want true and %s", label, cost, HolderCost)
	}
}

// TestCorrectNotOnceReleasing: the status says held until the release's
// delete is answered, but the next holder may hold, and label its pod,
// from the moment the delete is sent. A predecessor's pod read from then
// on may be that holder's: once this lockex begins to release, it writes
// nothing, even with its session surely alive.
func TestCorrectNotOnceReleasing(t *testing.T) {
	c, l, web0 := correctCluster(t, nil)
	l.Session(func() time.Time { return time.Now().Add(time.Hour) })
	l.mu.Lock()
	l.held = true
	l.mu.Unlock()
	l.beforeCorrect = func() { t.Error("judged web-0 stale after the release began") }
	l.Releasing()
	l.correctOne(web0)
	if label, _, cost := podMeta(t, c, "web-0"); label != "true" || cost != HolderCost {
		t.Errorf("web-0 has label %q and cost %s after a correction begun while releasing; want true and %s", label, cost, HolderCost)
	}
}
