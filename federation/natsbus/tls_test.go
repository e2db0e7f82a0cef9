package natsbus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
)

// writeCert writes a PEM certificate (signed by parent, or self-signed) and its key.
func writeCert(t *testing.T, dir, name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	_ = os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, caKey := writeCert(t, dir, "ca", &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	writeCert(t, dir, "server", &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "hub"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, caKey)
	cfg := ServerConfig{Listen: freeAddr(t), StoreDir: t.TempDir(), CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server.key"),
		Factories: []Factory{{Name: "a", Password: config.NewSecret("pa"), Federations: []string{"f1"}}}}
	cfg.SetDefaults()
	srv, err := StartServer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ctx := context.Background()
	hub := dial(t, srv.HubClient()) // in process
	if err := hub.EnsureFederation(ctx, "f1", []string{"a"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := hub.PutRound(ctx, "f1", []byte("s")); err != nil {
		t.Fatal(err)
	}
	c := factory(srv, "a", "pa")
	c.TLS = config.TLS{CAFile: filepath.Join(dir, "ca.pem")}
	b := dial(t, c)
	if got, err := b.GetRound(ctx, "f1"); err != nil || string(got) != "s" {
		t.Fatalf("over TLS: %q, %v", got, err)
	}
	// Without the CA the server's certificate is refused.
	c.TLS = config.TLS{Enabled: true}
	c.SetDefaults()
	if bad, err := Dial(ctx, c, slog.New(slog.DiscardHandler)); err == nil {
		_ = bad.Close()
		t.Fatal("connected without trusting the hub's CA")
	}
}
