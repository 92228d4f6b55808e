package zktest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TLS makes every server also listen on a TLS secureClientPort (Netty
// connection factory), with certificates generated for the test; the plain
// clientPort stays open. clientAuth is ZooKeeper's ssl.clientAuth: "none"
// (no client certificate asked for), "want" (one is checked if sent) or
// "need" (a client without a trusted one is refused). The client side's
// files are in Cluster.TLS; the quorum traffic of an ensemble stays plain.
// ZooKeeper 3.8 speaks TLS 1.2 only (its ssl.protocol default), so a
// rejected client certificate fails the client's handshake itself.
func TLS(clientAuth string) Option {
	return func(c *config) { c.tls, c.clientAuth = true, clientAuth }
}

// Certs are the PEM files a TLS cluster's clients need, all in a test temp
// dir. Keys are ECDSA P-256, in PKCS#8 ("BEGIN PRIVATE KEY").
type Certs struct {
	CA         string // the CA certificate that signed the servers' and ClientCert
	ClientCert string // a client certificate signed by CA
	ClientKey  string // its private key (PKCS#8 PEM)
	// OtherCA signed nothing the servers trust, so a client that trusts
	// only it rejects the servers, and OtherCert is a client certificate
	// the servers reject (with clientAuth "want" or "need"), for negative
	// tests. Their certificate request names CA as the only acceptable
	// issuer, so crypto/tls does not even send OtherCert if it is in
	// tls.Config.Certificates: the server sees a client without a
	// certificate. Return it from GetClientCertificate to send it anyway.
	OtherCA             string
	OtherCert, OtherKey string

	// keyStore is the servers' key followed by their certificate chain,
	// one file as ZooKeeper's PEM key store takes it. All servers share it:
	// they all listen on 127.0.0.1.
	keyStore string
	// client is a tls.Config that trusts CA and presents ClientCert, for
	// checking that a secure port serves.
	client *tls.Config
}

// certValidity is how long the generated certificates are valid, from an
// hour before their creation, so that no clock skew between Go and the
// JVM makes them "not yet valid".
const certValidity = 24 * time.Hour

// writeCerts generates a CA, a server certificate for 127.0.0.1 and
// localhost, a client certificate, and an unrelated CA with a client
// certificate of its own, and writes them into dir.
func writeCerts(dir string) (*Certs, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ca, err := newCA("zktest CA")
	if err != nil {
		return nil, err
	}
	other, err := newCA("zktest other CA")
	if err != nil {
		return nil, err
	}
	server, err := ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "zktest server"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:    []string{"localhost"},
	})
	if err != nil {
		return nil, err
	}
	clientTmpl := func() *x509.Certificate {
		return &x509.Certificate{
			Subject:     pkix.Name{CommonName: "zktest client"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
	}
	client, err := ca.issue(clientTmpl())
	if err != nil {
		return nil, err
	}
	otherClient, err := other.issue(clientTmpl())
	if err != nil {
		return nil, err
	}

	c := &Certs{
		CA:         filepath.Join(dir, "ca.pem"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client-key.pem"),
		OtherCA:    filepath.Join(dir, "other-ca.pem"),
		OtherCert:  filepath.Join(dir, "other-client.pem"),
		OtherKey:   filepath.Join(dir, "other-client-key.pem"),
		keyStore:   filepath.Join(dir, "server.pem"),
	}
	files := []struct {
		path   string
		blocks []*pem.Block
	}{
		{c.CA, []*pem.Block{ca.certPEM()}},
		{c.ClientCert, []*pem.Block{client.certPEM()}},
		{c.ClientKey, []*pem.Block{client.keyPEM}},
		{c.OtherCA, []*pem.Block{other.certPEM()}},
		{c.OtherCert, []*pem.Block{otherClient.certPEM()}},
		{c.OtherKey, []*pem.Block{otherClient.keyPEM}},
		{c.keyStore, []*pem.Block{server.keyPEM, server.certPEM(), ca.certPEM()}},
	}
	for _, f := range files {
		var b []byte
		for _, block := range f.blocks {
			b = append(b, pem.EncodeToMemory(block)...)
		}
		if err := os.WriteFile(f.path, b, 0o600); err != nil {
			return nil, err
		}
	}

	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	c.client = &tls.Config{
		RootCAs: roots,
		Certificates: []tls.Certificate{{
			Certificate: [][]byte{client.cert.Raw},
			PrivateKey:  client.key,
			Leaf:        client.cert,
		}},
	}
	return c, nil
}

// keyPair is a certificate and its key.
type keyPair struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	keyPEM *pem.Block // PKCS#8, the only unencrypted form ZooKeeper's PEM reader takes
}

func (k *keyPair) certPEM() *pem.Block { return &pem.Block{Type: "CERTIFICATE", Bytes: k.cert.Raw} }

func newCA(name string) (*keyPair, error) {
	return createCert(&x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil)
}

// issue creates a leaf certificate from tmpl, signed by ca.
func (ca *keyPair) issue(tmpl *x509.Certificate) (*keyPair, error) {
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	return createCert(tmpl, ca)
}

// createCert fills in tmpl's serial number and validity, generates a key
// and signs the certificate with parent's key, or self-signs it if parent
// is nil.
func createCert(tmpl *x509.Certificate, parent *keyPair) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)); err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(certValidity)
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key, keyPEM: &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}}, nil
}

// tlsConfigLines returns the zoo.cfg lines for a secure client port.
// ZooKeeper passes keys it does not know, such as ssl.*, on as system
// properties prefixed with "zookeeper.", which is where its TLS code reads
// them. A secureClientPort also makes it register the "x509"
// authentication provider, which checks a client certificate once more
// after the handshake (clientAuth want or need).
func tlsConfigLines(cfg config, securePort int) string {
	var b strings.Builder
	// Only the Netty factory does TLS; it serves the plain port as well.
	b.WriteString("serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n")
	fmt.Fprintf(&b, "secureClientPort=%d\nsecureClientPortAddress=127.0.0.1\n", securePort)
	// The PEM key store is one file with the private key and the chain;
	// neither store needs a password then.
	fmt.Fprintf(&b, "ssl.keyStore.location=%s\nssl.keyStore.type=PEM\n", cfg.certs.keyStore)
	fmt.Fprintf(&b, "ssl.trustStore.location=%s\nssl.trustStore.type=PEM\n", cfg.certs.CA)
	fmt.Fprintf(&b, "ssl.clientAuth=%s\n", cfg.clientAuth)
	// A client certificate names no host. ZooKeeper 3.8 matches names
	// only of the certificates it gets as a client (quorum TLS), but should
	// a version check clients' against their address, this turns it off.
	b.WriteString("ssl.hostnameVerification=false\n")
	return b.String()
}

// SecureAddr returns the TLS client address, "127.0.0.1:<secureClientPort>",
// or "" if the cluster was started without the TLS option.
func (s *Server) SecureAddr() string {
	if s.securePort == 0 {
		return ""
	}
	return fmt.Sprintf("127.0.0.1:%d", s.securePort)
}

// SecureHosts returns the TLS client addresses in server order,
// comma-separated like Hosts, or "" without the TLS option.
func (c *Cluster) SecureHosts() string {
	if c.TLS == nil {
		return ""
	}
	addrs := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		addrs[i] = s.SecureAddr()
	}
	return strings.Join(addrs, ",")
}

// secureServes completes a TLS handshake with the secure client port, with
// the client certificate, to tell whether it serves: a standalone server
// binds it only after the plain port.
func (s *Server) secureServes(timeout time.Duration) error {
	d := &net.Dialer{Timeout: timeout}
	conn, err := tls.DialWithDialer(d, "tcp", s.SecureAddr(), s.tls.client)
	if err != nil {
		return err
	}
	return conn.Close()
}
