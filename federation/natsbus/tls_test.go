package natsbus

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/testpki"
)

func TestTLS(t *testing.T) {
	certs := testpki.New(t, "natsbus test ca")
	cfg := ServerConfig{Listen: freeAddr(t), StoreDir: t.TempDir(), CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile,
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
	c.TLS = config.TLS{CAFile: certs.CAFile}
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

// TestLeafTLS links a site's leaf node to a hub whose leaf listener requires mutual TLS:
// with the hub's CA and the site's certificate the link comes up and a round's traffic
// flows both ways through it; a leaf that does not trust the hub's CA, one without a
// client certificate and one without TLS are refused, and WaitLinked says why.
func TestLeafTLS(t *testing.T) {
	good, other := testpki.New(t, "natsbus test ca"), testpki.New(t, "another ca")
	srv, hub := serve(t, ServerConfig{Listen: freeAddr(t), LeafListen: freeAddr(t), StoreDir: t.TempDir(),
		CertFile: good.ServerCertFile, KeyFile: good.ServerKeyFile, CAFile: good.CAFile,
		Factories: []Factory{{Name: "a", Password: config.NewSecret("pa"), Federations: []string{"f1"}}}}, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if err := hub.PutRound(ctx, "f1", []byte("state-1")); err != nil {
		t.Fatal(err)
	}
	startLeaf := func(name string, tc config.TLS) *Server {
		t.Helper()
		leaf, err := StartLeaf(LeafConfig{Listen: freeAddr(t), ServerName: "leaf-" + name, Domain: "leaf-" + name, StoreDir: t.TempDir(),
			HubURL: srv.LeafURL(), User: "a", Password: "pa", TLS: tc}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(leaf.Shutdown)
		return leaf
	}
	refused := []struct {
		name string
		tls  config.TLS
		want string // in WaitLinked's error
	}{
		{"untrusted-ca", config.TLS{CAFile: other.CAFile, CertFile: good.CertFile, KeyFile: good.KeyFile}, "certificate signed by unknown authority"},
		{"wrong-name", config.TLS{CAFile: good.CAFile, CertFile: good.CertFile, KeyFile: good.KeyFile, ServerName: "elsewhere.test"}, "elsewhere.test"},
		{"no-client-cert", config.TLS{CAFile: good.CAFile}, "cert_file"},
		{"no-tls", config.TLS{}, "x509"}, // the hub's INFO asks for TLS; system roots refuse its CA
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			leaf := startLeaf(c.name, c.tls)
			wctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
			defer cancel()
			err := leaf.WaitLinked(wctx)
			if !errors.Is(err, ErrLeafNotLinked) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("WaitLinked: %v; want ErrLeafNotLinked mentioning %q", err, c.want)
			}
			if strings.Contains(err.Error(), "pa@") {
				t.Fatalf("the error shows the password: %v", err)
			}
			if n := srv.LeafConnected(); n != 0 {
				t.Fatalf("the hub has %d leaf connections", n)
			}
		})
	}

	// Clients on the hub's client port need a site certificate too (the hub's own
	// in-process connection above does not).
	direct := factory(srv, "a", "pa")
	direct.TLS = config.TLS{CAFile: good.CAFile}
	direct.SetDefaults()
	if bad, err := Dial(ctx, direct, slog.New(slog.DiscardHandler)); err == nil {
		_ = bad.Close()
		t.Fatal("a client without a certificate connected to a hub with ca_file")
	}
	direct.TLS.CertFile, direct.TLS.KeyFile = good.CertFile, good.KeyFile
	if got, err := dial(t, direct).GetRound(ctx, "f1"); err != nil || string(got) != "state-1" {
		t.Fatalf("client with a site certificate: %q, %v", got, err)
	}

	leaf := startLeaf("good", config.TLS{CAFile: good.CAFile, CertFile: good.CertFile, KeyFile: good.KeyFile, ServerName: testpki.ServerName})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := leaf.WaitLinked(wctx); err != nil {
		t.Fatal(err)
	}
	// The site's client talks to its leaf in plain TCP on the appliance and reaches the
	// hub's JetStream over the TLS link: it reads the round state and publishes an update.
	site := dial(t, ClientConfig{URL: leaf.ClientURL(), User: "a", Password: config.NewSecret("local"), Domain: "hub"})
	if got, err := site.GetRound(ctx, "f1"); err != nil || string(got) != "state-1" {
		t.Fatalf("round state through the TLS leaf: %q, %v", got, err)
	}
	model := bytes.Repeat([]byte("global model "), 200_000) // 2.6 MB: three chunks
	h := federation.HashHex(model)
	if err := hub.PutModel(ctx, "f1", h, model); err != nil {
		t.Fatal(err)
	}
	if got, err := site.GetModel(ctx, "f1", h); err != nil || !bytes.Equal(got, model) {
		t.Fatalf("model through the TLS leaf: %d bytes, %v", len(got), err)
	}
	if err := site.PublishUpdate(ctx, "f1", 1, "a", []byte("update over tls")); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, hub, "f1", 1, 1); len(got) != 1 || string(got[0]) != "update over tls" {
		t.Fatalf("hub received %q", got)
	}
}
