package federation_test

import (
	"context"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation/natsbus"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/testpki"
)

// TestRoundThroughLeafNode runs a round where one gateway reaches the hub through its
// site's leaf node (connected with the factory's credentials) and the others directly.
func TestRoundThroughLeafNode(t *testing.T) {
	const n, dim = 3, 40
	e := newEnv(t, n, true)
	leaf, err := natsbus.StartLeaf(natsbus.LeafConfig{Listen: freeAddr(t), ServerName: "site-g0", Domain: "site-g0", StoreDir: t.TempDir(),
		HubURL: e.srv.LeafURL(), User: "g0", Password: "pw-g0"}, discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(leaf.Shutdown)
	for deadline := time.Now().Add(10 * time.Second); e.srv.LeafConnected() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the leaf node did not connect to the hub")
		}
	}
	fc := fedConfig(n, dim)
	fc.RoundTimeout = 3 * time.Second
	h := startHub(t, e.hub, fc)
	viaLeaf := e.dial(natsbus.ClientConfig{URL: leaf.ClientURL(), User: "g0", Password: config.NewSecret("local"), Domain: "hub"})
	runParticipant(t, gatewayOver(t, 0, viaLeaf, &pullTrainer{target: target(0, dim), samples: 5}))
	for i := 1; i < n; i++ {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 5})
	}
	if r := h.next(t); r.Outcome != "aggregated" || len(r.Used) != n {
		t.Fatalf("round through the leaf node: %+v", r)
	}
}

// TestRoundThroughTLSLeafNodes runs a round against a hub that requires mutual TLS on its
// leaf and client listeners: two gateways reach it through their sites' leaf nodes, each
// linked with the site's certificate (the gateway speaks plain TCP to its local leaf),
// the third connects to the hub's client port with its certificate. The round aggregates
// all three updates.
func TestRoundThroughTLSLeafNodes(t *testing.T) {
	const n, dim = 3, 40
	certs := testpki.New(t, "federation test ca")
	e := newEnvWith(t, n, func(cfg *natsbus.ServerConfig) {
		cfg.LeafListen, cfg.CertFile, cfg.KeyFile, cfg.CAFile = freeAddr(t), certs.ServerCertFile, certs.ServerKeyFile, certs.CAFile
	})
	srv := e.srv
	site := config.TLS{CAFile: certs.CAFile, CertFile: certs.CertFile, KeyFile: certs.KeyFile}
	fc := fedConfig(n, dim)
	fc.RoundTimeout = 10 * time.Second
	h := startHub(t, e.hub, fc)
	for i := range n {
		c := natsbus.ClientConfig{URL: srv.ClientURL(), User: gwName(i), Password: config.NewSecret("pw-" + gwName(i)), TLS: site}
		if i < 2 {
			leaf, err := natsbus.StartLeaf(natsbus.LeafConfig{Listen: freeAddr(t), ServerName: "site-" + gwName(i), Domain: "site-" + gwName(i),
				StoreDir: t.TempDir(), HubURL: srv.LeafURL(), User: gwName(i), Password: "pw-" + gwName(i), TLS: site}, discard)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(leaf.Shutdown)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = leaf.WaitLinked(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			c = natsbus.ClientConfig{URL: leaf.ClientURL(), User: gwName(i), Password: config.NewSecret("local"), Domain: "hub"}
		}
		runParticipant(t, gatewayOver(t, i, e.dial(c), &pullTrainer{target: target(i, dim), samples: 5}))
	}
	if got := srv.LeafConnected(); got != 2 {
		t.Fatalf("%d leaf links to the hub, want 2", got)
	}
	if r := h.next(t); r.Outcome != "aggregated" || len(r.Used) != n {
		t.Fatalf("round through the TLS leaf nodes: %+v", r)
	}
}
