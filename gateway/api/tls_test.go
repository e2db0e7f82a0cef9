package api

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/internal/testlog"
	"github.com/millwright-io/millwright/internal/testpki"
)

// TestServesMutualTLS: with WithTLS the API speaks HTTPS only, and with client_ca_file it
// serves only clients whose certificate that CA signed.
func TestServesMutualTLS(t *testing.T) {
	pki := testpki.New(t, "site")
	serverTLS, err := config.ServerTLS{CertFile: pki.ServerCertFile, KeyFile: pki.ServerKeyFile, ClientCAFile: pki.CAFile}.Load()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	log, logged := testlog.New(slog.LevelDebug)
	srv := New(addr, prometheus.NewRegistry(), func() error { return nil }, false, log).WithTLS(serverTLS)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	client := func(tc config.TLS) *http.Client {
		t.Helper()
		c, err := tc.Load()
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: c}}
	}
	get := func(c *http.Client, url string) (int, error) {
		var err error
		for range 50 { // until the server listens
			var resp *http.Response
			if resp, err = c.Get(url); err == nil {
				resp.Body.Close()
				return resp.StatusCode, nil
			}
			if !strings.Contains(err.Error(), "connection refused") {
				return 0, err
			}
			time.Sleep(20 * time.Millisecond)
		}
		return 0, err
	}
	mutual := client(config.TLS{CAFile: pki.CAFile, CertFile: pki.CertFile, KeyFile: pki.KeyFile})
	if code, err := get(mutual, "https://"+addr+"/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("with the CA and a client certificate: %d, %v", code, err)
	}
	if _, err := get(client(config.TLS{CAFile: pki.CAFile}), "https://"+addr+"/healthz"); err == nil {
		t.Error("served a client without a certificate")
	}
	if _, err := get(client(config.TLS{Enabled: true}), "https://"+addr+"/healthz"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client that does not trust the CA: %v, want a certificate error", err)
	}
	// Go's server answers plain HTTP on a TLS port with 400.
	if code, err := get(http.DefaultClient, "http://"+addr+"/healthz"); err != nil || code != http.StatusBadRequest {
		t.Errorf("plain HTTP: %d, %v; want 400", code, err)
	}
	// The refused handshakes are logged at debug level, not as warnings: scanners and TCP
	// health checks would flood the log.
	servicetest.WaitFor(t, 5*time.Second, "the refused handshakes logged", func() bool {
		return strings.Contains(logged.String(), "level=DEBUG msg=\"http: TLS handshake error")
	})
	if strings.Contains(logged.String(), "level=WARN") {
		t.Errorf("warnings logged:\n%s", logged)
	}
}
