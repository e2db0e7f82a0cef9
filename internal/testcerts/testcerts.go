// Package testcerts adds a server certificate to testpki's throwaway CA, for tests of TLS
// servers whose clients verify them and present their own certificate (mutual TLS).
package testcerts

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

	"github.com/millwright-io/millwright/internal/testpki"
)

// ServerName is the DNS name in the server certificate besides 127.0.0.1 and localhost;
// a client that dials 127.0.0.1 can check it with its TLS server_name.
const ServerName = "hub.test"

// Set is a CA with a server certificate and a client certificate it signed, as PEM
// files. The client certificate is testpki's (extended key usage client auth).
type Set struct {
	testpki.PKI
	// ServerCertFile and ServerKeyFile are the server's certificate (for 127.0.0.1,
	// localhost and ServerName, extended key usage server auth) and its key.
	ServerCertFile, ServerKeyFile string
}

// New writes a CA named name, a client certificate and a server certificate, all signed
// by the CA, into a temporary directory of the test. They are valid from an hour ago
// for a day; two sets never trust each other.
func New(t testing.TB, name string) Set {
	t.Helper()
	p := testpki.New(t, name)
	ca, caKey := loadCA(t, p)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: name + " server"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost", ServerName},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(p.CAFile)
	s := Set{PKI: p, ServerCertFile: filepath.Join(dir, "server.pem"), ServerKeyFile: filepath.Join(dir, "server-key.pem")}
	writePEM(t, s.ServerCertFile, "CERTIFICATE", der)
	writePEM(t, s.ServerKeyFile, "PRIVATE KEY", kd)
	return s
}

// loadCA reads back the CA certificate and key testpki wrote.
func loadCA(t testing.TB, p testpki.PKI) (*x509.Certificate, any) {
	t.Helper()
	ca, err := x509.ParseCertificate(readPEM(t, p.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(readPEM(t, p.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

func readPEM(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	return blk.Bytes
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
