package federation_test

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/natsbus"
	"github.com/millwright-io/millwright/gateway/config"
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
	p, err := federation.NewParticipant(federation.ParticipantConfig{Federation: fedName, Name: "g0", HubKey: hubKey().Public().(ed25519.PublicKey)},
		viaLeaf, gatewayKey(0), &pullTrainer{target: target(0, dim), samples: 5}, discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	runParticipant(t, p)
	for i := 1; i < n; i++ {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 5})
	}
	if r := h.next(t); r.Outcome != "aggregated" || len(r.Used) != n {
		t.Fatalf("round through the leaf node: %+v", r)
	}
}
