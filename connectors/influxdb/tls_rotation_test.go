package influxdb

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// selfSignedCA returns a certificate for 127.0.0.1 that is its own CA, and its PEM.
func selfSignedCA(t *testing.T, name string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestCertificateErrorReconnectsToReadRotatedCA: when the server's certificate is renewed
// under a new CA, a write fails verification with the CA read at Connect. The sink reports
// that as connectors.ErrNotConnected, so the pipeline closes and connects it again, and that
// Connect reads the rotated ca_file.
func TestCertificateErrorReconnectsToReadRotatedCA(t *testing.T) {
	oldCert, oldPEM := selfSignedCA(t, "old CA")
	newCert, newPEM := selfSignedCA(t, "new CA")
	var serving atomic.Pointer[tls.Certificate]
	serving.Store(&oldCert)
	fake := newFake([]string{"db"})
	fake.srv = httptest.NewUnstartedServer(http.HandlerFunc(fake.serve))
	fake.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failing handshakes are the test
	fake.srv.Config.SetKeepAlivesEnabled(false)           // every request makes a new handshake
	// GetConfigForClient, unlike GetCertificate, is asked on every handshake without SNI.
	fake.srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return &tls.Config{Certificates: []tls.Certificate{*serving.Load()}}, nil
	}}
	fake.srv.StartTLS()
	t.Cleanup(fake.srv.Close)

	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, oldPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := newTestSink(t, fake.srv.URL, func(c *Config) { c.TLS = config.TLS{CAFile: caFile} })
	write := func() error {
		return s.Write(context.Background(), telemetry.Batch{Points: genPoints(20, 2, 2, t0)})
	}
	if err := write(); err != nil {
		t.Fatalf("Write with the CA that signed the server's certificate: %v", err)
	}

	// The server's certificate is renewed under the new CA; the gateway's file follows.
	serving.Store(&newCert)
	if err := os.WriteFile(caFile, newPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	err := write()
	if !errors.Is(err, connectors.ErrNotConnected) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Write after the server's CA changed = %v; want a certificate error matching connectors.ErrNotConnected, so that the pipeline reconnects", err)
	}
	// What the pipeline does on ErrNotConnected.
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(context.Background()); err != nil {
		t.Fatalf("Connect with the rotated ca_file: %v", err)
	}
	if err := write(); err != nil {
		t.Fatalf("Write after reconnecting with the rotated ca_file: %v", err)
	}
}
