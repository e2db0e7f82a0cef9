package fedtest_test

import (
	"bytes"
	"crypto/ed25519"
	"reflect"
	"testing"

	"github.com/millwright-io/millwright/gateway"
	"github.com/millwright-io/millwright/internal/fedtest"
	"github.com/millwright-io/millwright/models"
)

// TestGatewayYAML: the configuration parses and validates as the gateway's own, connected
// directly or through a leaf node, and carries the fields it was given.
func TestGatewayYAML(t *testing.T) {
	key := func(seed byte) ed25519.PublicKey {
		return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	}
	arch := models.Architecture{Kind: "autoencoder", Version: 1, Inputs: 8, Layers: []int{6, 3, 6}, Activation: "tanh", Params: 155}
	tests := []struct {
		name string
		g    fedtest.Gateway
	}{
		{"direct, models on, no peers", fedtest.Gateway{Factory: "factory-a", HTTPListen: "127.0.0.1:9999", Models: true,
			Password: "pw-a", NATSURL: "nats://127.0.0.1:4222"}},
		{"leaf node, peers pinned", fedtest.Gateway{Factory: "factory-b", Password: "pw-b", LeafListen: "127.0.0.1:7422",
			LeafHubURL: "nats-leaf://127.0.0.1:7423", Peers: map[string]ed25519.PublicKey{"factory-c": key(3), "factory-a": key(1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.g
			g.StateDir, g.Topic, g.DB, g.HubKey, g.Architecture = t.TempDir(), "fed-x", "db", key(9), arch
			cfg, err := gateway.Parse([]byte(g.YAML()))
			if err != nil {
				t.Fatalf("%v\n%s", err, g.YAML())
			}
			f := cfg.Federation
			if cfg.Gateway.Factory != g.Factory || cfg.Gateway.StateDir != g.StateDir || cfg.Gateway.HTTP.Listen != g.HTTPListen || cfg.Models.Enabled != g.Models {
				t.Errorf("gateway %+v, models %v", cfg.Gateway, cfg.Models.Enabled)
			}
			if f.NATS.User != g.Factory || f.NATS.Password.Value() != g.Password || f.NATS.URL != g.NATSURL || !f.HubKey.PublicKey.Equal(g.HubKey) {
				t.Errorf("nats %+v, hub key %x", f.NATS, f.HubKey.PublicKey)
			}
			if (f.Leaf != nil) != (g.LeafHubURL != "") || f.Leaf != nil && (f.Leaf.HubURL != g.LeafHubURL || f.Leaf.Listen != g.LeafListen) {
				t.Errorf("leaf %+v; want hub %q", f.Leaf, g.LeafHubURL)
			}
			if len(f.Peers) != len(g.Peers) {
				t.Errorf("%d peers, want %d", len(f.Peers), len(g.Peers))
			}
			for _, p := range f.Peers {
				if !p.Key.PublicKey.Equal(g.Peers[p.Name]) {
					t.Errorf("peer %s key %x, want %x", p.Name, p.Key.PublicKey, g.Peers[p.Name])
				}
			}
			if len(f.Federations) != 1 || f.Federations[0].Name != "pumps" || !reflect.DeepEqual(f.Federations[0].Architecture, arch) {
				t.Errorf("federations %+v; want pumps with %+v", f.Federations, arch)
			}
		})
	}
}
