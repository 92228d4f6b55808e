// Package kubetest starts a real Kubernetes control plane for tests: etcd
// (Debian's etcd-server) and kube-apiserver, built by the project's
// scripts/install-k8s-tools.sh, on free loopback ports with their files in
// the test's temporary directory. The API server serves TLS from a CA made
// for the test, authenticates bearer tokens from a file (a cluster admin
// and the users the test names) and service-account tokens it signs
// itself, and authorizes with RBAC. No scheduler or kubelet runs, and no
// controller unless asked for (ControllerManager): objects are stored,
// validated and admitted, and no pod ever starts.
// Everything is killed when the test that started it ends.
//
// It imports only the standard library, so that no Kubernetes client
// enters the module's go.mod through its tests.
package kubetest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	// readyTimeout bounds a component's start. etcd 3.4 and the API
	// server's bootstrap (RBAC roles, priority classes) take about 20s on
	// two loaded cores.
	readyTimeout = 90 * time.Second
	pollInterval = 250 * time.Millisecond
	// requestTimeout bounds one request of the client, so that a hung API
	// server fails a test instead of stalling it.
	requestTimeout = 10 * time.Second
	// adminUser is the cluster admin every control plane has, in group
	// system:masters, which RBAC never refuses.
	adminUser = "kubetest-admin"
)

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	dir        string
	ca         *authority
	caFile     string
	saKeyFile  string // signs service-account tokens
	etcdURL    string
	host, port string // the API server's
	adminToken string
	tokens     map[string]string // user → token, for the users of Users
	client     *http.Client
	daemons    []*daemon // in start order
}

type config struct {
	users             []string
	controllerManager bool
}

// Option configures the control plane that Start starts.
type Option func(*config)

// Users gives each named user a bearer token (see UserToken). Users have
// no rights until the test binds them a role. They must be named at start:
// the API server reads its token file only then.
func Users(names ...string) Option {
	return func(c *config) { c.users = append(c.users, names...) }
}

// Start starts etcd and kube-apiserver and returns once the API server
// reports ready, failing the test if it does not within 90s or a component
// exits first, with the end of each component's log.
func Start(t testing.TB, opts ...Option) *ControlPlane {
	t.Helper()
	var cfg config
	for _, opt := range opts {
		opt(&cfg)
	}
	etcd, apiserver := toolPath(t, "etcd"), toolPath(t, "kube-apiserver")
	var controllerManager string
	if cfg.controllerManager {
		controllerManager = toolPath(t, "kube-controller-manager")
	}
	c := &ControlPlane{dir: t.TempDir(), tokens: map[string]string{}}
	if err := c.writeFiles(cfg); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	c.startEtcd(t, etcd)
	c.startAPIServer(t, apiserver)
	c.waitReady(t, "kube-apiserver", func() error {
		code, body, err := c.Do("GET", "/readyz", c.adminToken, nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("GET /readyz: %d %s", code, body)
		}
		return err
	})
	if cfg.controllerManager {
		c.startControllerManager(t, controllerManager)
	}
	return c
}

// writeFiles writes the CA, the API server's serving certificate, the
// service-account key pair and the token file.
func (c *ControlPlane) writeFiles(cfg config) error {
	var err error
	if c.ca, err = newAuthority("kubetest CA"); err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	if c.caFile, err = writePEM(c.dir, "ca.crt", "CERTIFICATE", c.ca.cert.Raw); err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.ca.cert)
	// No proxy from the environment: every request goes to loopback.
	c.client = &http.Client{Timeout: requestTimeout, Transport: &http.Transport{
		Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}}}

	certDER, keyDER, err := c.ca.issueServing("kube-apiserver")
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	if _, err := writePEM(c.dir, "apiserver.crt", "CERTIFICATE", certDER); err != nil {
		return err
	}
	if _, err := writePEM(c.dir, "apiserver.key", "PRIVATE KEY", keyDER); err != nil {
		return err
	}
	if c.saKeyFile, _, err = writeSigningKey(c.dir); err != nil {
		return fmt.Errorf("service-account key: %w", err)
	}

	if c.adminToken, err = newToken(); err != nil {
		return err
	}
	// token,user,uid[,"group,..."], one user a line.
	lines := []string{c.adminToken + "," + adminUser + "," + adminUser + ",system:masters"}
	users := cfg.users
	if cfg.controllerManager {
		users = append(slices.Clip(users), controllerManagerUser)
	}
	for _, user := range users {
		if user == "" || user == adminUser || strings.ContainsAny(user, ",\"\n") {
			return fmt.Errorf("Users: %q is not a user name for the token file", user)
		}
		if _, dup := c.tokens[user]; dup {
			return fmt.Errorf("Users: %q named twice", user)
		}
		token, err := newToken()
		if err != nil {
			return err
		}
		c.tokens[user] = token
		lines = append(lines, token+","+user+","+user)
	}
	return os.WriteFile(filepath.Join(c.dir, "tokens.csv"), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

func (c *ControlPlane) startEtcd(t testing.TB, path string) {
	t.Helper()
	c.etcdURL = "http://" + freeAddr(t)
	peerURL := "http://" + freeAddr(t)
	c.daemons = append(c.daemons, startDaemon(t, "etcd", path, filepath.Join(c.dir, "etcd.log"),
		"--name", "kubetest", "--data-dir", filepath.Join(c.dir, "etcd"),
		"--listen-client-urls", c.etcdURL, "--advertise-client-urls", c.etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "kubetest="+peerURL, "--log-level", "warn", "--logger", "zap"))
}

func (c *ControlPlane) startAPIServer(t testing.TB, path string) {
	t.Helper()
	var err error
	if c.host, c.port, err = net.SplitHostPort(freeAddr(t)); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	file := func(name string) string { return filepath.Join(c.dir, name) }
	c.daemons = append(c.daemons, startDaemon(t, "kube-apiserver", path, file("kube-apiserver.log"),
		"--etcd-servers", c.etcdURL, "--bind-address", c.host, "--advertise-address", c.host,
		"--secure-port", c.port, "--cert-dir", file("certs"),
		"--tls-cert-file", file("apiserver.crt"), "--tls-private-key-file", file("apiserver.key"),
		"--token-auth-file", file("tokens.csv"), "--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", file("sa.pub"), "--service-account-signing-key-file", c.saKeyFile,
		// Only allocated from, for Services' cluster IPs: nothing here
		// routes Services, and a loopback range keeps even a stray
		// connection to one on this machine.
		"--service-cluster-ip-range", "127.0.96.0/24",
		"--profiling=false", "--v=0"))
}

// waitReady polls ready until it returns nil, failing the test after
// readyTimeout or as soon as any component has exited (a taken port, a bad
// flag), quoting the end of every component's log: the cause is often in
// another component's than the one that is not ready.
func (c *ControlPlane) waitReady(t testing.TB, what string, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		err := ready()
		if err == nil {
			return
		}
		for _, d := range c.daemons {
			if exitErr := d.exitedErr(); exitErr != nil {
				t.Fatalf("kubetest: %s not ready: %v\n%s", what, exitErr, c.logTails())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubetest: %s not ready within %v: %v\n%s", what, readyTimeout, err, c.logTails())
		}
		time.Sleep(pollInterval)
	}
}

func (c *ControlPlane) logTails() string {
	var b strings.Builder
	for _, d := range c.daemons {
		b.WriteString(d.logTail())
	}
	return b.String()
}

// URL returns the API server's base URL, https://127.0.0.1:<port>.
func (c *ControlPlane) URL() string { return "https://" + net.JoinHostPort(c.host, c.port) }

// Host and Port return the API server's address, as a pod finds it in
// KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT.
func (c *ControlPlane) Host() string { return c.host }

// Port: see Host.
func (c *ControlPlane) Port() string { return c.port }

// CAFile returns the path of the PEM certificate of the CA that signed the
// API server's, which clients must trust.
func (c *ControlPlane) CAFile() string { return c.caFile }

// CAPEM returns the CA certificate in PEM, as a pod's service-account
// volume carries it in ca.crt.
func (c *ControlPlane) CAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.ca.cert.Raw})
}

// AdminToken returns the bearer token of a cluster admin.
func (c *ControlPlane) AdminToken() string { return c.adminToken }

// UserToken returns the bearer token of a user named in Users, failing
// the test for any other name.
func (c *ControlPlane) UserToken(t testing.TB, user string) string {
	t.Helper()
	token, ok := c.tokens[user]
	if !ok {
		t.Fatalf("kubetest: no token for user %q: name it in kubetest.Users when starting", user)
	}
	return token
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}
