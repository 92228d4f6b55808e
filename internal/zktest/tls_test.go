package zktest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

// tlsClient is a client identity for TestTLS: the certificate and key
// files it presents, if any.
type tlsClient struct {
	name  string
	files func(*Certs) (cert, key string) // nil: no client certificate
}

var (
	anonymous = tlsClient{"no client cert", nil}
	trusted   = tlsClient{"ClientCert", func(c *Certs) (string, string) { return c.ClientCert, c.ClientKey }}
	untrusted = tlsClient{"OtherCert", func(c *Certs) (string, string) { return c.OtherCert, c.OtherKey }}
)

// config returns the tls.Config of a client that trusts caFile and
// presents this identity.
func (cl tlsClient) config(t *testing.T, certs *Certs, caFile string) *tls.Config {
	t.Helper()
	var cert, key string
	if cl.files != nil {
		cert, key = cl.files(certs)
	}
	return clientTLS(t, caFile, cert, key)
}

// TestTLS runs a standalone server for each ssl.clientAuth and checks
// which clients it lets in over its secure port, reading the PEM files of
// Cluster.TLS as a real client would.
func TestTLS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		clientAuth         string
		accepted, rejected []tlsClient
	}{
		// Without client auth the server asks for no certificate, so a Go
		// client sends none, trusted or not.
		{"none", []tlsClient{anonymous, trusted, untrusted}, nil},
		{"want", []tlsClient{anonymous, trusted}, []tlsClient{untrusted}},
		{"need", []tlsClient{trusted}, []tlsClient{anonymous, untrusted}},
	} {
		t.Run(tc.clientAuth, func(t *testing.T) {
			t.Parallel()
			c := Start(t, TLS(tc.clientAuth))
			s := c.Servers[0]
			if c.TLS == nil || s.SecureAddr() == "" || c.SecureHosts() != s.SecureAddr() || s.SecureAddr() == s.Addr() {
				t.Fatalf("TLS %v, SecureHosts %q, SecureAddr %q, Addr %q",
					c.TLS, c.SecureHosts(), s.SecureAddr(), s.Addr())
			}
			// The plain port still serves, four-letter words included.
			if mode, err := s.Mode(); err != nil || mode != "standalone" {
				t.Fatalf("Mode() = %q, %v; want standalone", mode, err)
			}

			// A client that trusts only OtherCA rejects the server.
			_, err := handshake(s.SecureAddr(), trusted.config(t, c.TLS, c.TLS.OtherCA))
			if !errors.As(err, &x509.UnknownAuthorityError{}) {
				t.Fatalf("handshake trusting OtherCA: %v; want x509.UnknownAuthorityError", err)
			}

			for _, cl := range tc.accepted {
				cfg := cl.config(t, c.TLS, c.TLS.CA)
				version, err := handshake(s.SecureAddr(), cfg)
				if err != nil {
					t.Fatalf("%s: handshake: %v", cl.name, err)
				}
				if err := session(s.SecureAddr(), cfg); err != nil {
					t.Fatalf("%s: %v", cl.name, err)
				}
				t.Logf("%s: session over %s", cl.name, tls.VersionName(version))
			}
			for _, cl := range tc.rejected {
				err := session(s.SecureAddr(), cl.config(t, c.TLS, c.TLS.CA))
				if err == nil {
					t.Fatalf("%s: session established", cl.name)
				}
				t.Logf("%s: rejected: %v", cl.name, err)
			}
		})
	}
}

// TestTLSEnsemble checks that every member of an ensemble serves TLS
// clients, its quorum traffic staying plain.
func TestTLSEnsemble(t *testing.T) {
	t.Parallel()
	c := StartEnsemble(t, 3, TLS("need"))
	if got := strings.Split(c.SecureHosts(), ","); len(got) != 3 || got[2] != c.Servers[2].SecureAddr() {
		t.Fatalf("SecureHosts() = %q", c.SecureHosts())
	}
	for _, s := range c.Servers {
		if err := session(s.SecureAddr(), trusted.config(t, c.TLS, c.TLS.CA)); err != nil {
			t.Fatalf("server %d: %v", s.ID(), err)
		}
	}
}

// clientTLS returns the tls.Config of a client that trusts the CA
// certificate in caFile and, unless certFile is "", presents the
// certificate in certFile with the key in keyFile.
//
// It presents the certificate whatever CAs the server's request names:
// with Config.Certificates, crypto/tls sends none when its issuer is not
// among them, so the server would never see OtherCert, just an anonymous
// client.
func clientTLS(t *testing.T, caFile, certFile, keyFile string) *tls.Config {
	t.Helper()
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{RootCAs: x509.NewCertPool()}
	if !cfg.RootCAs.AppendCertsFromPEM(ca) {
		t.Fatalf("no certificate in %s", caFile)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		}
	}
	return cfg
}

// handshake completes a TLS handshake with addr and returns the version
// negotiated. A server that rejects the client's certificate may do so
// only after the handshake (with TLS 1.3), so success here proves little
// for clientAuth; session does.
func handshake(addr string, cfg *tls.Config) (uint16, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: patience}, "tcp", addr, cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ConnectionState().Version, nil
}

// session connects a go-zookeeper client to hosts ("addr,addr,...") over
// TLS with cfg. If it gets a session, it creates and reads back an
// ephemeral node. If the client dials twice without getting a session in
// between, the server rejected the first connection, during its handshake
// or after, and session returns the dial errors, if any. go-zookeeper
// waits a second before it dials a server it has tried already.
func session(hosts string, cfg *tls.Config) error {
	var (
		mu       sync.Mutex
		dialErrs []error
	)
	dials := make(chan struct{}, 100)
	dialer := func(network, addr string, timeout time.Duration) (net.Conn, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, network, addr, cfg)
		if err != nil {
			mu.Lock()
			dialErrs = append(dialErrs, err)
			mu.Unlock()
		}
		dials <- struct{}{}
		return conn, err
	}
	hasSession := make(chan struct{}, 100)
	conn, _, err := zk.Connect(strings.Split(hosts, ","), 4*time.Second,
		zk.WithLogInfo(false), zk.WithLogger(quietLogger{}), zk.WithDialer(dialer),
		zk.WithEventCallback(func(ev zk.Event) {
			if ev.Type == zk.EventSession && ev.State == zk.StateHasSession {
				hasSession <- struct{}{}
			}
		}))
	if err != nil {
		return err
	}
	defer conn.Close()

	timeout := time.After(patience)
	for n := 0; ; {
		select {
		case <-hasSession:
			path, err := conn.Create("/tls", []byte("over TLS"), zk.FlagEphemeral|zk.FlagSequence,
				zk.WorldACL(zk.PermAll))
			if err != nil {
				return fmt.Errorf("Create: %w", err)
			}
			data, _, err := conn.Get(path)
			if err != nil || string(data) != "over TLS" {
				return fmt.Errorf("Get(%s) = %q, %v", path, data, err)
			}
			return nil
		case <-dials:
			if n++; n == 2 {
				mu.Lock()
				defer mu.Unlock()
				return fmt.Errorf("no session after %d dials (dial errors: %v)", n, errors.Join(dialErrs...))
			}
		case <-timeout:
			return fmt.Errorf("no session after %v (state %v)", patience, conn.State())
		}
	}
}
