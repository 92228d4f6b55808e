package kube

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/lockex/lockex/internal/zktest"
)

// TestDigestAuth: ZooKeeper digest auth with the user and password from an
// existing Secret (the user through env, the password as a mounted file).
// The workload runs, and the lock's nodes belong to that user alone.
func TestDigestAuth(t *testing.T) {
	s := newScenario(t, "auth", scene{workload: nonroot, lockex: dockerfileImage})
	password := randomPassword()
	s.rel.secrets["zk-auth"] = map[string]string{"zk-user": "kit", "zk-password": password}
	withDigestAuth(s.rel.values)
	s.start(1)
	s.waitRunning(1, "the workload")

	lock := "/" + path.Join("lockex", namespace, s.rel.name+"-lockex")
	anon := connect(t, s.zk.Hosts())
	if _, _, err := anon.Children(lock); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("an unauthenticated client lists %s: %v, want %v (a creator-only ACL)", lock, err, zk.ErrNoAuth)
	}
	authed := connect(t, s.zk.Hosts())
	if err := authed.AddAuth("digest", []byte("kit:"+password)); err != nil {
		t.Fatal(err)
	}
	acl, _, err := authed.GetACL(lock)
	if err != nil {
		t.Fatalf("GetACL %s as kit: %v", lock, err)
	}
	if len(acl) != 1 || acl[0].Scheme != "digest" || !strings.HasPrefix(acl[0].ID, "kit:") {
		t.Errorf("ACL of %s: %+v, want digest for kit alone", lock, acl)
	}
}

// TestTLS: lockex reaches ZooKeeper only over TLS, with client certificates
// required, from certificates mounted out of a Secret with cert-manager's
// key names.
func TestTLS(t *testing.T) {
	s := newScenario(t, "tls", scene{workload: nonroot, lockex: dockerfileImage, zk: []zktest.Option{zktest.TLS("need")}})
	certs := s.zk.TLS
	read := func(f string) string {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	s.rel.secrets["zk-tls"] = map[string]string{
		"ca.crt": read(certs.CA), "tls.crt": read(certs.ClientCert), "tls.key": read(certs.ClientKey),
	}
	withTLS(s.rel.values, s.zk.SecureHosts())
	p := s.start(1)[0]
	s.waitRunning(1, "the workload")
	s.expectProbe(p, p.port, "/active", 200, "holder")
}

// randomPassword is a ZooKeeper password no earlier run used.
func randomPassword() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// withDigestAuth: the user and password from the Secret zk-auth.
func withDigestAuth(v map[string]any) {
	zk := v["zookeeper"].(map[string]any)
	zk["existingSecret"] = "zk-auth"
	zk["auth"] = map[string]any{"enabled": true, "userKey": "zk-user", "passwordKey": "zk-password"}
}

// withTLS: ZooKeeper's TLS port, with the CA and the client certificate
// and key from the Secret zk-tls under cert-manager's key names, through
// the chart's own zookeeper.tls values.
func withTLS(v map[string]any, hosts string) {
	zk := v["zookeeper"].(map[string]any)
	zk["hosts"] = hosts
	zk["tls"] = map[string]any{"enabled": true, "secretName": "zk-tls"}
}

// connect opens a plain ZooKeeper session for checks, closed when the test
// ends.
func connect(t *testing.T, hosts string) *zk.Conn {
	t.Helper()
	c, _, err := zk.Connect(strings.Split(hosts, ","), 4*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
