package kube

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// apiServer is a real kube-apiserver on etcd, both on loopback ports and
// with their files in a test temp dir: token authentication, RBAC
// authorization and the default admission plugins, as a cluster's control
// plane has them, but no controllers, scheduler or kubelet (objects are
// stored and validated; no pod ever starts).
type apiServer struct {
	url        string
	caFile     string
	adminToken string
	tokens     map[string]string // user → token
	client     *http.Client
	dir        string
}

// startAPIServer starts etcd and kube-apiserver and returns once the API
// server is ready, with a token for a cluster admin and for each of users
// (the API server reads its token file only at start). Both are killed
// when the test ends.
func startAPIServer(t *testing.T, users ...string) *apiServer {
	t.Helper()
	dir := t.TempDir()
	a := &apiServer{dir: dir, adminToken: randomHex(t, 16), tokens: map[string]string{}}

	etcdClient, etcdPeer := freePort(t), freePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	startDaemon(t, filepath.Join(dir, "etcd.log"), "etcd", "--name", "kit", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "kit="+peerURL, "--log-level", "warn", "--logger", "zap")

	ca, caKey := newCA(t)
	a.caFile = writePEM(t, dir, "ca.crt", "CERTIFICATE", ca.Raw)
	serving := issue(t, ca, caKey, "kube-apiserver")
	certFile := writePEM(t, dir, "apiserver.crt", "CERTIFICATE", serving.cert)
	keyFile := writePEM(t, dir, "apiserver.key", "PRIVATE KEY", serving.key)
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	saDER, _ := x509.MarshalPKCS8PrivateKey(saKey)
	saPub, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	saKeyFile := writePEM(t, dir, "sa.key", "PRIVATE KEY", saDER)
	saPubFile := writePEM(t, dir, "sa.pub", "PUBLIC KEY", saPub)
	tokens := fmt.Sprintf("%s,kit-admin,kit-admin,system:masters\n", a.adminToken)
	for _, u := range users {
		a.tokens[u] = randomHex(t, 16)
		tokens += fmt.Sprintf("%s,%s,%s\n", a.tokens[u], u, u)
	}
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}

	port := freePort(t)
	a.url = fmt.Sprintf("https://127.0.0.1:%d", port)
	startDaemon(t, filepath.Join(dir, "kube-apiserver.log"), "kube-apiserver",
		"--etcd-servers", etcdURL, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(port), "--cert-dir", filepath.Join(dir, "certs"),
		"--tls-cert-file", certFile, "--tls-private-key-file", keyFile,
		"--token-auth-file", tokenFile, "--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", saPubFile,
		"--service-account-signing-key-file", saKeyFile,
		// Only allocated from, for Services' ClusterIPs: no traffic goes
		// there, since nothing here routes Services.
		"--service-cluster-ip-range", "10.96.0.0/24",
		"--profiling=false", "--v=0")

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	a.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	// etcd 3.4 and the API server's own start (RBAC bootstrap roles, the
	// priority classes) take about 20s here.
	deadline := time.Now().Add(90 * time.Second)
	for {
		code, body, err := a.do("GET", "/readyz", a.adminToken, nil)
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready within 90s: %d %s %v\n%s\n%s", code, body, err,
				tail(filepath.Join(dir, "kube-apiserver.log")), tail(filepath.Join(dir, "etcd.log")))
		}
		time.Sleep(250 * time.Millisecond)
	}
	return a
}

// startDaemon starts a server process with its output in logFile; it is
// killed, and waited for, when the test ends.
func startDaemon(t *testing.T, logFile, name string, args ...string) {
	t.Helper()
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		f.Close()
	})
}

func tail(file string) string {
	b, _ := os.ReadFile(file)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return fmt.Sprintf("--- end of %s ---\n%s", file, b)
}

// do sends a request with a bearer token and returns the status and body.
func (a *apiServer) do(method, path, token string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, a.url+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// create posts an object as the admin and fails the test unless it is
// created.
func (a *apiServer) create(t *testing.T, path string, obj any) {
	t.Helper()
	code, body, err := a.do("POST", path, a.adminToken, obj)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("POST %s: %d %v\n%s", path, code, err, body)
	}
}

// kubeconfig writes a kubeconfig for token and returns its path.
func (a *apiServer) kubeconfig(t *testing.T, name, token string) string {
	t.Helper()
	cfg := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "kit",
		"clusters": []any{map[string]any{"name": "kit", "cluster": map[string]any{
			"server": a.url, "certificate-authority": a.caFile}}},
		"users":    []any{map[string]any{"name": name, "user": map[string]any{"token": token}}},
		"contexts": []any{map[string]any{"name": "kit", "context": map[string]any{"cluster": "kit", "user": name}}},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(a.dir, name+".kubeconfig")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// namespaceAdmin makes a namespace that user administers, and only it, as
// a team that installs a chart into its namespace would, and returns the
// user's token. The user may also manage the Prometheus operator's objects
// there, as installations of the operator grant namespace admins.
func (a *apiServer) namespaceAdmin(t *testing.T, ns, user string) string {
	t.Helper()
	token, ok := a.tokens[user]
	if !ok {
		t.Fatalf("no token for %s: pass it to startAPIServer", user)
	}
	a.create(t, "/api/v1/namespaces", map[string]any{
		"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": ns, "labels": map[string]any{
			// Warnings only: the chart's hardened profile is a value away.
			"pod-security.kubernetes.io/warn": "restricted"}},
	})
	a.create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
		"metadata": map[string]any{"name": "team-admin"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
		"subjects": []any{map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}},
	})
	a.create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/roles", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
		"metadata": map[string]any{"name": "monitoring-edit"},
		"rules": []any{map[string]any{"apiGroups": []string{"monitoring.coreos.com"},
			"resources": []string{"servicemonitors", "prometheusrules", "podmonitors"},
			"verbs":     []string{"get", "list", "watch", "create", "update", "patch", "delete"}}},
	})
	a.create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
		"metadata": map[string]any{"name": "team-monitoring"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "monitoring-edit"},
		"subjects": []any{map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}},
	})
	return token
}

// aggregateRoles fills the aggregated ClusterRoles view, edit and admin
// with the rules of the roles their selectors pick, as kube-controller-
// manager's aggregation controller would (it does not run here), so that
// "admin" grants what it grants on a cluster.
func (a *apiServer) aggregateRoles(t *testing.T) {
	t.Helper()
	type clusterRole struct {
		APIVersion      string         `json:"apiVersion"`
		Kind            string         `json:"kind"`
		Metadata        map[string]any `json:"metadata"`
		Rules           []any          `json:"rules"`
		AggregationRule *struct {
			ClusterRoleSelectors []struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"clusterRoleSelectors"`
		} `json:"aggregationRule,omitempty"`
	}
	const base = "/apis/rbac.authorization.k8s.io/v1/clusterroles"
	for _, name := range []string{"view", "edit", "admin"} {
		code, body, err := a.do("GET", base+"/"+name, a.adminToken, nil)
		var role clusterRole
		if err != nil || code != 200 || json.Unmarshal(body, &role) != nil || role.AggregationRule == nil {
			t.Fatalf("GET clusterrole %s: %d %v\n%s", name, code, err, body)
		}
		role.Rules = nil
		for _, sel := range role.AggregationRule.ClusterRoleSelectors {
			var labels []string
			for k, v := range sel.MatchLabels {
				labels = append(labels, k+"="+v)
			}
			code, body, err := a.do("GET", base+"?labelSelector="+url.QueryEscape(strings.Join(labels, ",")), a.adminToken, nil)
			var list struct{ Items []clusterRole }
			if err != nil || code != 200 || json.Unmarshal(body, &list) != nil {
				t.Fatalf("list clusterroles %v: %d %v\n%s", labels, code, err, body)
			}
			for _, r := range list.Items {
				role.Rules = append(role.Rules, r.Rules...)
			}
		}
		code, body, err = a.do("PUT", base+"/"+name, a.adminToken, role)
		if err != nil || code != 200 {
			t.Fatalf("PUT clusterrole %s: %d %v\n%s", name, code, err, body)
		}
	}
}

// monitoringCRDs registers the Prometheus operator's two kinds the chart
// renders, and waits until they are served. Their schemas are left open:
// the operator's CRD files are not to be had here (its Go module of API
// types is, and the check package decodes the objects strictly into it).
func (a *apiServer) monitoringCRDs(t *testing.T) {
	t.Helper()
	for _, k := range []struct{ kind, plural string }{{"ServiceMonitor", "servicemonitors"}, {"PrometheusRule", "prometheusrules"}} {
		name := k.plural + ".monitoring.coreos.com"
		a.create(t, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			"metadata": map[string]any{"name": name},
			"spec": map[string]any{
				"group": "monitoring.coreos.com", "scope": "Namespaced",
				"names": map[string]any{"kind": k.kind, "plural": k.plural, "listKind": k.kind + "List", "singular": strings.ToLower(k.kind)},
				"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
					"schema": map[string]any{"openAPIV3Schema": map[string]any{
						"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
			},
		})
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, _, err := a.do("GET", "/apis/monitoring.coreos.com/v1/"+k.plural, a.adminToken, nil)
			if err == nil && code == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s not served within 30s: %d %v", name, code, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kit CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

type issued struct{ cert, key []byte } // DER certificate, PKCS#8 key

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string) issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return issued{der, k}
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestHelmInstall installs every rendering of the chart (each example
// values file under ci/ and each of the kit's scenarios) with helm install
// on a real API server, each into a namespace of its own by a user who may
// administer only that namespace: RBAC, server-side validation and
// admission see every object.
func TestHelmInstall(t *testing.T) {
	renderings := map[string]string{} // name → values file
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci/*-values.yaml in %s: %v", chartDir, err)
	}
	for _, f := range files {
		renderings["ci-"+strings.TrimSuffix(filepath.Base(f), "-values.yaml")] = f
	}
	dir := t.TempDir()
	const hosts = "127.0.0.1:2181"
	script := (&witness{}).scriptFor(1, true)
	kit := map[string]func() map[string]any{
		"kit-root": func() map[string]any { return kitValues(imageRef("busybox-root"), imageRef("lockex"), hosts, script) },
		"kit-nonroot": func() map[string]any {
			return kitValues(imageRef("busybox-nonroot"), imageRef("lockex"), hosts, script)
		},
		"kit-semaphore": func() map[string]any {
			v := kitValues(imageRef("busybox-nonroot"), imageRef("lockex"), hosts, script)
			withSemaphore(v)
			return v
		},
		"kit-auth": func() map[string]any {
			v := kitValues(imageRef("busybox-nonroot"), imageRef("lockex"), hosts, script)
			withDigestAuth(v)
			return v
		},
		"kit-tls": func() map[string]any {
			v := kitValues(imageRef("busybox-nonroot"), imageRef("lockex"), hosts, script)
			withTLS(v, hosts)
			return v
		},
	}
	for name, values := range kit {
		b, err := yaml.Marshal(values())
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		renderings[name] = f
	}

	var users []string
	for name := range renderings {
		users = append(users, "team-"+name)
	}
	a := startAPIServer(t, users...)
	a.aggregateRoles(t)
	a.monitoringCRDs(t)
	for name, file := range renderings {
		t.Run(name, func(t *testing.T) {
			token := a.namespaceAdmin(t, name, "team-"+name)
			kc := a.kubeconfig(t, "team-"+name, token)
			cmd := exec.Command("helm", "install", "rel", chartDir, "--namespace", name, "--values", file, "--kubeconfig", kc)
			cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+dir, "HELM_CACHE_HOME="+dir, "HELM_DATA_HOME="+dir)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("helm install --values %s: %v\n%s", file, err, stderr.String())
			}
			if w := strings.TrimSpace(stderr.String()); w != "" {
				t.Logf("helm install --values %s warned:\n%s", filepath.Base(file), w)
			}
			code, body, err := a.do("GET", "/apis/apps/v1/namespaces/"+name+"/deployments", token, nil)
			if err != nil || code != 200 || !bytes.Contains(body, []byte(`"kind":"DeploymentList"`)) || !bytes.Contains(body, []byte(`"name":"rel-lockex"`)) {
				t.Errorf("after helm install, the Deployment rel-lockex is not stored: %d %v\n%.500s", code, err, body)
			}
		})
	}
}
