package kubetest

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

func TestRepoRootHoldsTheInstallScript(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, installScript)); err != nil {
		t.Errorf("repoRoot() = %s, which has no %s: %v", root, installScript, err)
	}
}

// TestTokensAndRBAC checks what callers rely on: each named user is
// authenticated as itself and may do nothing RBAC has not granted, the
// admin may do anything, an unknown token is refused, and a PATCH is
// applied.
func TestTokensAndRBAC(t *testing.T) {
	c := Start(t, Users("alice", "bob"))

	whoAmI := func(token string) (int, string) {
		t.Helper()
		code, body, err := c.Do(http.MethodPost, "/apis/authentication.k8s.io/v1/selfsubjectreviews", token,
			map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
		if err != nil {
			t.Fatal(err)
		}
		var review struct {
			Status struct {
				UserInfo struct {
					Username string `json:"username"`
				} `json:"userInfo"`
			} `json:"status"`
		}
		_ = json.Unmarshal(body, &review)
		return code, review.Status.UserInfo.Username
	}
	for token, want := range map[string]string{
		c.AdminToken(): adminUser, c.UserToken(t, "alice"): "alice", c.UserToken(t, "bob"): "bob",
	} {
		if code, got := whoAmI(token); code != http.StatusCreated || got != want {
			t.Errorf("token of %s: authenticated as %q (%d)", want, got, code)
		}
	}
	if code, _ := whoAmI("not-a-token"); code != http.StatusUnauthorized {
		t.Errorf("unknown token: %d, want %d", code, http.StatusUnauthorized)
	}

	c.Create(t, "/api/v1/namespaces", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "team-a"}})
	if code, body, err := c.Do(http.MethodGet, "/api/v1/namespaces/team-a/pods", c.UserToken(t, "alice"), nil); err != nil || code != http.StatusForbidden {
		t.Errorf("alice lists pods without a role: %d %v, want %d\n%s", code, err, http.StatusForbidden, body)
	}
	patch := map[string]any{"metadata": map[string]any{"labels": map[string]any{"team": "a"}}}
	if code, body, err := c.Do(http.MethodPatch, "/api/v1/namespaces/team-a", c.AdminToken(), patch); err != nil || code != http.StatusOK {
		t.Fatalf("PATCH namespace: %d %v\n%s", code, err, body)
	}
	var ns struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	c.Get(t, "/api/v1/namespaces/team-a", &ns)
	if got := ns.Metadata.Labels["team"]; got != "a" {
		t.Errorf("after the patch, label team=%q, want a", got)
	}
}
