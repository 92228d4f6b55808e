package podlabel

import (
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/identity"
	"github.com/lockex/lockex/internal/kubetest"
)

// correctCluster is a real kube-apiserver with namespace team-a, the
// chart's Role (get and patch pods) for service account web, the pod
// web-1 this lockex runs in and web-0, whose holder was killed: labelled
// and at the holder's cost. It returns a Labeler of web-1's and web-0's
// identity as its node data said.
func correctCluster(t *testing.T, failed func()) (*kubetest.ControlPlane, *Labeler, identity.Identity) {
	c := kubetest.Start(t)
	const ns = "team-a"
	c.Create(t, "/api/v1/namespaces", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
	c.Create(t, "/api/v1/namespaces/"+ns+"/serviceaccounts", map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "web"}})
	c.Create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/roles", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": map[string]any{"name": "web"},
		"rules": []any{map[string]any{"apiGroups": []string{""}, "resources": []string{"pods"}, "verbs": []string{"get", "patch"}}},
	})
	c.Create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": map[string]any{"name": "web"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "web"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "web", "namespace": ns}},
	})
	uids := map[string]string{}
	for _, name := range []string{"web-0", "web-1"} {
		meta := map[string]any{"name": name, "labels": map[string]any{"app": "web"}}
		if name == "web-0" {
			meta["labels"] = map[string]any{"app": "web", "lockex.io/active": "true"}
			meta["annotations"] = map[string]any{DeletionCostAnnotation: HolderCost}
		}
		p := c.Create(t, "/api/v1/namespaces/"+ns+"/pods", map[string]any{
			"apiVersion": "v1", "kind": "Pod", "metadata": meta,
			"spec": map[string]any{"serviceAccountName": "web", "containers": []any{
				map[string]any{"name": "app", "image": "registry.example.com/web:1"}}},
		})
		uids[name] = p["metadata"].(map[string]any)["uid"].(string)
	}
	tr := c.Create(t, "/api/v1/namespaces/"+ns+"/serviceaccounts/web/token", map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
		"spec": map[string]any{"boundObjectRef": map[string]any{"apiVersion": "v1", "kind": "Pod", "name": "web-1", "uid": uids["web-1"]}},
	})
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(tr["status"].(map[string]any)["token"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAPEM())
	l := New(Config{Key: "lockex.io/active", Value: "true", DeletionCost: true, Pod: "web-1", Namespace: ns,
		Server: c.URL(), TokenFile: token, CA: pool}, slog.New(slog.NewTextHandler(io.Discard, nil)), failed)
	return c, l, identity.Identity{Host: "web-0", PID: 1, Version: "v1", Namespace: ns, Pod: "web-0", UID: uids["web-0"], Container: "app"}
}

func podMeta(t *testing.T, c *kubetest.ControlPlane, name string) (label string, labelled bool, cost string) {
	t.Helper()
	var p kubetest.Pod
	c.Get(t, "/api/v1/namespaces/team-a/pods/"+name, &p)
	label, labelled = p.Metadata.Labels["lockex.io/active"]
	return label, labelled, p.Metadata.Annotations[DeletionCostAnnotation]
}

// TestCorrectClearsOnlyWhatIsStale runs the correction against a real API
// server, with the chart's rights: a pod that relabelled itself between
// the read and the patch (its lockex holds since this one's hold ended)
// answers 409 and keeps its label; a pod read after this lockex's hold
// ended, or after the session's SureUntil (a pause), is not written; a pod
// read while this lockex holds loses the label and gets the standby's
// cost, its other labels kept.
func TestCorrectClearsOnlyWhatIsStale(t *testing.T) {
	failures := 0
	c, l, web0 := correctCluster(t, func() { failures++ })
	hold := func(held bool) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.held = held
	}
	sureUntil := time.Now().Add(time.Hour)
	l.Session(func() time.Time { return sureUntil })
	patch := func(name string, meta map[string]any) {
		t.Helper()
		if code, body, err := c.Do(http.MethodPatch, "/api/v1/namespaces/team-a/pods/"+name, c.AdminToken(),
			map[string]any{"metadata": meta}); err != nil || code != http.StatusOK {
			t.Fatalf("PATCH %s: %d %v\n%s", name, code, err, body)
		}
	}

	// web-0's lockex restarted, queued behind this one and holds since
	// this one's hold ended: it cleared its pod at start, then labelled
	// it. The patch read before that gets 409.
	hold(true)
	relabelled := 0
	l.beforeCorrect = func() {
		relabelled++
		hold(false)
		patch("web-0", map[string]any{"labels": map[string]any{"lockex.io/active": nil}, "annotations": map[string]any{DeletionCostAnnotation: StandbyCost}})
		patch("web-0", map[string]any{"labels": map[string]any{"lockex.io/active": "true"}, "annotations": map[string]any{DeletionCostAnnotation: HolderCost}})
	}
	l.correctOne(web0)
	if relabelled != 1 || failures != 0 {
		t.Fatalf("the patch was reached %d times, want once, and %d requests failed, want none (a 409 is no failure)", relabelled, failures)
	}
	if label, _, cost := podMeta(t, c, "web-0"); label != "true" || cost != HolderCost {
		t.Errorf("web-0, which relabelled itself, now has label %q and cost %s; want true and %s", label, cost, HolderCost)
	}

	// Read once this lockex no longer holds: nothing is written.
	l.beforeCorrect = func() { t.Error("a patch is sent without the lock") }
	l.correctOne(web0)
	if label, _, cost := podMeta(t, c, "web-0"); label != "true" || cost != HolderCost {
		t.Errorf("web-0 now has label %q and cost %s; want true and %s", label, cost, HolderCost)
	}

	// Paused past the session's expiry, the status not yet told: the read
	// may have been answered after the lock passed to web-0, so nothing is
	// written.
	hold(true)
	sureUntil = time.Now().Add(-time.Second)
	l.correctOne(web0)
	if label, _, cost := podMeta(t, c, "web-0"); label != "true" || cost != HolderCost {
		t.Errorf("read past the session's sure life: web-0 now has label %q and cost %s; want true and %s", label, cost, HolderCost)
	}
	sureUntil = time.Now().Add(time.Hour)

	// Another pod of the same name (a StatefulSet's new web-0) carries
	// nothing of the dead holder's.
	hold(true)
	other := web0
	other.UID = "00000000-0000-4000-8000-000000000000"
	l.correctOne(other)
	if label, _, _ := podMeta(t, c, "web-0"); label != "true" {
		t.Errorf("a pod of another UID was corrected: label %q", label)
	}

	l.beforeCorrect = nil
	l.correctOne(web0)
	label, labelled, cost := podMeta(t, c, "web-0")
	if labelled || cost != StandbyCost {
		t.Errorf("stale web-0 now has label %q (%v) and cost %s; want none and %s", label, labelled, cost, StandbyCost)
	}
	if failures != 0 {
		t.Errorf("%d requests failed", failures)
	}
	var p kubetest.Pod
	c.Get(t, "/api/v1/namespaces/team-a/pods/web-0", &p)
	if p.Metadata.Labels["app"] != "web" {
		t.Errorf("web-0's other labels lost: %v", p.Metadata.Labels)
	}
}

// TestBehindKeepsOtherPodsOfTheNamespace: only an identity naming another
// pod of this lockex's namespace is remembered, once, and the memory is
// bounded.
func TestBehindKeepsOtherPodsOfTheNamespace(t *testing.T) {
	l := New(Config{Key: "lockex.io/active", Value: "true", Pod: "web-1", Namespace: "team-a"}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	for _, data := range []string{
		"web-0:1 lockex/v1 pod=team-a/web-0",
		"web-0:1 lockex/v1 pod=team-a/web-0", // again
		"web-1:1 lockex/v1 pod=team-a/web-1", // itself
		"web-2:1 lockex/v1 pod=team-b/web-2", // another namespace
		"web-3:1 lockex/v1 pod=web-3",        // no namespace
		"kazoo-client-7",                     // no identity
	} {
		l.Behind([]byte(data))
	}
	if len(l.behind) != 1 || l.behind[0].Pod != "web-0" {
		t.Errorf("remembered %+v, want web-0 alone", l.behind)
	}
	for i := range 2 * maxBehind {
		l.Behind([]byte(identity.Identity{Host: "h", PID: 1, Version: "v1", Namespace: "team-a", Pod: "p" + string(rune('a'+i))}.String()))
	}
	if len(l.behind) != maxBehind {
		t.Errorf("remembered %d pods, want at most %d", len(l.behind), maxBehind)
	}
}
