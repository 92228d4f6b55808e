package e2e

import (
	"bytes"
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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// kubeAPI is a real kube-apiserver on a real etcd, both on loopback: token
// authentication, RBAC, service account tokens; no controllers and no
// kubelet, so pods are stored and never run. lockex's --active-label talks
// to it as it would in a cluster.
type kubeAPI struct {
	url    string
	host   string // 127.0.0.1
	port   string
	caPEM  []byte
	admin  string // a cluster admin's token
	client *http.Client
}

var (
	k8sToolsOnce sync.Once
	k8sToolsErr  error
)

// k8sTools makes sure etcd and kube-apiserver are on PATH, installed by the
// project's scripts/install-k8s-tools.sh (a no-op once they are there).
func k8sTools(t *testing.T) {
	t.Helper()
	k8sToolsOnce.Do(func() {
		script, _ := filepath.Abs("../scripts/install-k8s-tools.sh")
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(script)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			k8sToolsErr = fmt.Errorf("%s (it installs etcd and kube-apiserver): %w\n%s", script, err, stderr.String())
			return
		}
		os.Setenv("PATH", strings.TrimSpace(stdout.String())+string(os.PathListSeparator)+os.Getenv("PATH"))
		for _, tool := range []string{"etcd", "kube-apiserver"} {
			if _, err := exec.LookPath(tool); err != nil {
				k8sToolsErr = fmt.Errorf("%s is missing after %s: %w", tool, script, err)
				return
			}
		}
	})
	if k8sToolsErr != nil {
		t.Fatal(k8sToolsErr)
	}
}

// startKubeAPI starts etcd and kube-apiserver, returning once the API
// server is ready; both are killed when the test ends.
func startKubeAPI(t *testing.T) *kubeAPI {
	t.Helper()
	k8sTools(t)
	dir := t.TempDir()
	etcdURL, peerURL := "http://"+freePort(t), "http://"+freePort(t)
	daemon(t, filepath.Join(dir, "etcd.log"), "etcd", "--name", "e2e", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "e2e="+peerURL, "--log-level", "warn", "--logger", "zap")

	caKey, caCert := newKey(t), (*x509.Certificate)(nil)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e kube CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if caCert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	servingKey := newKey(t)
	servingDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}, caCert, &servingKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	saKey := newKey(t)
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	a := &kubeAPI{host: "127.0.0.1", admin: randomToken(t)}
	a.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	files := map[string][]byte{
		"ca.crt":      a.caPEM,
		"serving.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: servingDER}),
		"serving.key": pemKey(t, servingKey),
		"sa.key":      pemKey(t, saKey),
		"sa.pub":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
		"tokens.csv":  []byte(a.admin + ",e2e-admin,e2e-admin,system:masters\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := freePort(t)
	_, a.port, _ = net.SplitHostPort(addr)
	a.url = "https://" + addr
	daemon(t, filepath.Join(dir, "kube-apiserver.log"), "kube-apiserver",
		"--etcd-servers", etcdURL, "--bind-address", a.host, "--advertise-address", a.host,
		"--secure-port", a.port, "--cert-dir", filepath.Join(dir, "certs"),
		"--tls-cert-file", filepath.Join(dir, "serving.crt"), "--tls-private-key-file", filepath.Join(dir, "serving.key"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"), "--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		// Only allocated from, for Services' cluster IPs: nothing routes there.
		"--service-cluster-ip-range", "10.96.0.0/24", "--profiling=false", "--v=0")

	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	a.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}}}
	// etcd 3.4 and the API server's bootstrap (RBAC roles, priority
	// classes) take about 20s here.
	deadline := time.Now().Add(90 * time.Second)
	for {
		code, _, err := a.do("GET", "/readyz", nil)
		if err == nil && code == http.StatusOK {
			return a
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "kube-apiserver.log"))
			t.Fatalf("kube-apiserver not ready within 90s: %d %v\n%s", code, err, tail(string(log), 3000))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// daemon starts a server with its output in logFile, killed and waited for
// when the test ends, and killed with the test binary if that dies first.
func daemon(t *testing.T, logFile, name string, args ...string) {
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
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		f.Close()
	})
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemKey(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func randomToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// do sends a request as the admin and returns the status and body.
func (a *kubeAPI) do(method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.url+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// create posts an object as the admin and returns it as the server stored it.
func (a *kubeAPI) create(t *testing.T, path string, obj any) map[string]any {
	t.Helper()
	code, body, err := a.do("POST", path, obj)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("POST %s: %d %v\n%s", path, code, err, body)
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// podLabels returns a pod's labels.
func (a *kubeAPI) podLabels(t *testing.T, ns, name string) map[string]string {
	t.Helper()
	code, body, err := a.do("GET", "/api/v1/namespaces/"+ns+"/pods/"+name, nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET pod %s: %d %v\n%s", name, code, err, body)
	}
	var pod struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(body, &pod); err != nil {
		t.Fatal(err)
	}
	return pod.Metadata.Labels
}

// selected lists the pods a label selector picks, as a Service's selector
// picks its endpoints.
func (a *kubeAPI) selected(t *testing.T, ns, selector string) []string {
	t.Helper()
	code, body, err := a.do("GET", "/api/v1/namespaces/"+ns+"/pods?labelSelector="+selector, nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("list pods %s: %d %v\n%s", selector, code, err, body)
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range list.Items {
		names = append(names, p.Metadata.Name)
	}
	return names
}

// serviceAccountDir writes what the kubelet mounts for a pod's service
// account: a token the API server issued (TokenRequest, bound to the pod),
// its CA and the namespace.
func (a *kubeAPI) serviceAccountDir(t *testing.T, ns, account, pod, podUID string) string {
	t.Helper()
	tr := a.create(t, "/api/v1/namespaces/"+ns+"/serviceaccounts/"+account+"/token", map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
		"spec": map[string]any{
			"expirationSeconds": 3600,
			"boundObjectRef":    map[string]any{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": podUID},
		},
	})
	token, _ := tr["status"].(map[string]any)["token"].(string)
	if token == "" {
		t.Fatalf("TokenRequest gave no token: %v", tr)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"token": []byte(token), "ca.crt": a.caPEM, "namespace": []byte(ns)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
