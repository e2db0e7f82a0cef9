package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"
	"time"
)

// handshake runs a mutual-TLS handshake between a server of s and a client that trusts
// the CA of trust and presents client's certificate, and returns the client's error.
func handshake(t *testing.T, s, trust, client PKI) error {
	t.Helper()
	pool := func(p PKI) *x509.CertPool {
		b, err := os.ReadFile(p.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		cp := x509.NewCertPool()
		if !cp.AppendCertsFromPEM(b) {
			t.Fatal("no CA certificate")
		}
		return cp
	}
	srvCert, err := tls.LoadX509KeyPair(s.ServerCertFile, s.ServerKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	cliCert, err := tls.LoadX509KeyPair(client.CertFile, client.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0") // buffered, unlike net.Pipe: an alert never blocks
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	deadline := time.Now().Add(10 * time.Second)
	_ = a.SetDeadline(deadline)
	_ = b.SetDeadline(deadline)
	srv := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: pool(s), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	done := make(chan error, 1)
	go func() { done <- srv.Handshake() }()
	cli := tls.Client(b, &tls.Config{Certificates: []tls.Certificate{cliCert}, RootCAs: pool(trust), ServerName: ServerName, MinVersion: tls.VersionTLS12})
	err = cli.Handshake()
	if err != nil {
		b.Close() // unblocks the server
	}
	<-done
	return err
}

func TestMutualTLS(t *testing.T) {
	good, other := New(t, "good"), New(t, "other")
	if err := handshake(t, good, good, good); err != nil {
		t.Fatalf("mutual TLS within one set: %v", err)
	}
	if err := handshake(t, good, other, good); err == nil {
		t.Fatal("a client trusting another CA accepted the server")
	}
}
