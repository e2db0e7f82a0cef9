// Package testpki makes a throwaway certificate authority with a client and a server certificate for tests of TLS configuration and mutual TLS.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a CA and a client certificate it signed, written as PEM files (keys in PKCS#8).
type PKI struct {
	CAFile, CAKeyFile, CertFile, KeyFile string
	// ServerCertFile and ServerKeyFile are a server certificate (for 127.0.0.1, localhost
	// and ServerName, extended key usage server auth) and its key.
	ServerCertFile, ServerKeyFile string
	// Client is the parsed client certificate.
	Client *x509.Certificate
}

// ServerName is the DNS name in the server certificate besides 127.0.0.1 and localhost;
// a client that dials 127.0.0.1 can check it with its TLS server_name.
const ServerName = "hub.test"

// New writes a self-signed CA named name, and a client and a server certificate it
// signed, into a temporary directory of the test. All are valid from an hour ago for a
// day; two PKIs never trust each other.
func New(t testing.TB, name string) PKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	caKey, clientKey, serverKey := newKey(t), newKey(t), newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, role string, usage x509.ExtKeyUsage, key *ecdsa.PrivateKey, ips []net.IP, names []string) []byte {
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name + " " + role},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
			DNSNames:     names,
		}, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	clientDER := issue(2, "client", x509.ExtKeyUsageClientAuth, clientKey, nil, nil)
	serverDER := issue(3, "server", x509.ExtKeyUsageServerAuth, serverKey, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost", ServerName})
	client, err := x509.ParseCertificate(clientDER)
	if err != nil {
		t.Fatal(err)
	}
	p := PKI{
		CAFile:    filepath.Join(dir, "ca.pem"),
		CAKeyFile: filepath.Join(dir, "ca-key.pem"),
		CertFile:  filepath.Join(dir, "client.pem"),
		KeyFile:   filepath.Join(dir, "client-key.pem"),
		Client:    client,

		ServerCertFile: filepath.Join(dir, "server.pem"),
		ServerKeyFile:  filepath.Join(dir, "server-key.pem"),
	}
	writePEM(t, p.CAFile, "CERTIFICATE", caDER)
	writePEM(t, p.CertFile, "CERTIFICATE", clientDER)
	writePEM(t, p.CAKeyFile, "PRIVATE KEY", pkcs8(t, caKey))
	writePEM(t, p.KeyFile, "PRIVATE KEY", pkcs8(t, clientKey))
	writePEM(t, p.ServerCertFile, "CERTIFICATE", serverDER)
	writePEM(t, p.ServerKeyFile, "PRIVATE KEY", pkcs8(t, serverKey))
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pkcs8(t testing.TB, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
