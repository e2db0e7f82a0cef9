package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/models"
)

const fedBase = `
gateway: {factory: factory-a, state_dir: /tmp/x}
sources:
  - name: broker
    mqtt: {servers: ["tcp://127.0.0.1:1883"], topics: [{pattern: "a/{machine}/{signal}"}]}
sinks:
  - name: influx
    influxdb: {url: "http://127.0.0.1:8086", bucket: b}
`

// problemPaths returns the paths of the problems err reports.
func problemPaths(err error) map[string]string {
	paths := map[string]string{}
	for _, e := range config.Flatten(err) {
		var fe *config.FieldError
		if errors.As(e, &fe) {
			paths[fe.Path] = fe.Error()
		}
	}
	return paths
}

func TestFederationConfig(t *testing.T) {
	const key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
	const arch = "{kind: autoencoder, version: 1, inputs: 8, layers: [6, 3, 6], activation: tanh, params: 155}"
	tests := []struct {
		name  string
		doc   string
		paths []string // the problems expected; none: valid
	}{
		{"off by default", "", nil},
		{"off ignores an incomplete block", "federation: {enabled: false, hub_key: " + key + "}", nil},
		{"valid", `
federation:
  enabled: true
  nats: {url: "nats://hub:4222", user: factory-a, password: pw}
  hub_key: ` + key + `
  federations: [{name: pumps, machines: [pump-1, pump-2], architecture: ` + arch + `}]`, nil},
		{"everything wrong", `
federation:
  enabled: true
  nats: {timeout: -1s}
  federations:
    - {name: "bad name", machines: [], architecture: {kind: pca}}
    - {name: ok, machines: ["no/slash"], architecture: ` + arch + `}
    - {name: ok, machines: [m], architecture: ` + arch + `}`,
			[]string{"federation.nats.url", "federation.nats.timeout", "federation.nats.user", "federation.hub_key",
				"federation.federations[0].name", "federation.federations[0].machines", "federation.federations[0].architecture.kind",
				"federation.federations[0].architecture.inputs", "federation.federations[0].architecture.params",
				"federation.federations[1].machines[0]", "federation.federations[2].name"}},
		{"through a leaf node", `
federation:
  enabled: true
  nats: {user: factory-a, password: pw}
  leaf: {hub_url: "nats-leaf://hub:7422"}
  hub_key: ` + key + `
  federations: [{name: pumps, machines: [pump-1, pump-2], architecture: ` + arch + `}]`, nil},
		{"leaf without the hub", `
federation:
  enabled: true
  nats: {user: factory-a}
  leaf: {}
  hub_key: ` + key + `
  federations: [{name: pumps, machines: [pump-1], architecture: ` + arch + `}]`, []string{"federation.leaf.hub_url"}},
		{"no federations", `
federation:
  enabled: true
  nats: {url: "nats://hub:4222", user: factory-a}
  hub_key: ` + key, []string{"federation.federations"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(fedBase + tt.doc))
			if len(tt.paths) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if tt.doc != "" && cfg.Federation.Enabled && (len(cfg.Federation.Federations[0].Machines) != 2 || cfg.Federation.NATS.Password.Value() != "pw") {
					t.Errorf("decoded %+v", cfg.Federation)
				}
				return
			}
			got := problemPaths(err)
			for _, p := range tt.paths {
				if _, ok := got[p]; !ok {
					t.Errorf("no problem reported at %s; got %v", p, err)
				}
			}
			if len(got) != len(tt.paths) {
				t.Errorf("%d problems, want %d: %v", len(got), len(tt.paths), err)
			}
		})
	}
}

func TestFederationConfigBadHubKey(t *testing.T) {
	_, err := Parse([]byte(fedBase + "federation: {enabled: true, hub_key: abc}"))
	if err == nil || !strings.Contains(err.Error(), "federation.hub_key") || !strings.Contains(err.Error(), `"abc"`) {
		t.Fatalf("bad hub key reported as %v", err)
	}
}

func TestExampleFederationBlock(t *testing.T) {
	t.Setenv("MQTT_PASSWORD", "s3cret")
	t.Setenv("INFLUX_TOKEN", "user:pass")
	cfg, err := Load("../deploy/examples/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Federation
	if f.Enabled || f.NATS.User != "factory-a" || len(f.HubKey.PublicKey) != 32 || len(f.Federations) != 1 ||
		f.Federations[0].Architecture.Params != 155 || f.Federations[0].Machines[0] != "pump-1" {
		t.Fatalf("federation block decoded as %+v", f)
	}
	f.Enabled = true
	if err := f.validate(cfg.Models, cfg.Sinks); err != nil {
		t.Errorf("the example's block, enabled, is invalid: %v", err)
	}
}

// TestFedTrainerRefusesOtherLayout: a global model whose layout differs from the
// configured one is not trained on.
func TestFedTrainerRefusesOtherLayout(t *testing.T) {
	want := models.Architecture{Kind: "autoencoder", Version: 1, Inputs: 8, Layers: []int{6, 3, 6}, Activation: "tanh", Params: 155}
	ft := &fedTrainer{cfg: JoinConfig{Name: "pumps", Machines: []string{"pump-1"}, Architecture: want}}
	other := want
	other.Layers = []int{6, 2, 6}
	if _, err := ft.Train(context.Background(), federation.Task{Federation: "pumps", Round: 1, Architecture: other}, make([]float32, 10)); err == nil {
		t.Fatal("a global model of another layout was trained on")
	}
}
