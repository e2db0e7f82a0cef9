// Package fedtest prepares the factory gateways of the federation end-to-end tests (package gateway's and `millwright hub`'s).
package fedtest

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/train/trainsim"
)

// StorePumps writes an hour of a healthy simulated pump-1 (line l1) of each factory,
// ending now, into a database of the test's InfluxDB made for the test (servicetest.Database):
// factory i's plant has seed i+1. It returns the database and the layout of the autoencoder
// ([8 3 8]) the factories share: its inputs are the width of the windows the gateway's
// default features make of that history.
func StorePumps(t testing.TB, factories ...string) (db string, arch models.Architecture) {
	t.Helper()
	db = servicetest.Database(t, servicetest.InfluxURL())
	var width int
	for i, f := range factories {
		plant, err := sim.New(sim.Config{Seed: uint64(i + 1), Machines: []sim.Machine{{ID: "pump-1", Line: "l1", Kind: sim.KindPump}}})
		if err != nil {
			t.Fatal(err)
		}
		hist := trainsim.History(plant, f, time.Now().Truncate(time.Second).Add(-time.Hour), time.Second, 3600)
		if i == 0 {
			var fc features.Config
			fc.SetDefaults()
			width = trainsim.WindowWidth(t, fc, "pump-1", hist)
		}
		trainsim.Store(t, servicetest.InfluxURL(), db, hist)
	}
	ae, err := autoencoder.New(autoencoder.Config{Inputs: width, Layers: []int{8, 3, 8}})
	if err != nil {
		t.Fatal(err)
	}
	return db, ae.Architecture()
}

// IdentityKeys creates each factory's state directory, root/<factory>, with the gateway's
// identity key in it (identity.key, also its ledger key), and returns the public keys.
func IdentityKeys(t testing.TB, root string, factories ...string) map[string]ed25519.PublicKey {
	t.Helper()
	keys := map[string]ed25519.PublicKey{}
	for _, f := range factories {
		dir := filepath.Join(root, f)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		k, err := ledger.LoadOrCreateKey(filepath.Join(dir, "identity.key"))
		if err != nil {
			t.Fatal(err)
		}
		keys[f] = k.Public().(ed25519.PublicKey)
	}
	return keys
}

// ArchitectureYAML writes a as the flow mapping that the hub's and the gateways' configurations take.
func ArchitectureYAML(a models.Architecture) string {
	layers := make([]string, len(a.Layers))
	for i, l := range a.Layers {
		layers[i] = strconv.Itoa(l)
	}
	return fmt.Sprintf("{kind: %s, version: %d, inputs: %d, layers: [%s], activation: %s, params: %d}",
		a.Kind, a.Version, a.Inputs, strings.Join(layers, ", "), a.Activation, a.Params)
}

// Gateway is a factory gateway of an end-to-end test: it stores what the test's Mosquitto
// delivers on Topic/{machine}/{signal} in the test's InfluxDB and joins federation pumps
// with its pump-1.
type Gateway struct {
	Factory    string
	StateDir   string
	HTTPListen string // the gateway's HTTP API ("": off)
	Topic      string // MQTT topic prefix, also the client id
	DB         string // InfluxDB database
	Models     bool   // models.enabled: scheduled training and scoring of pump-1 too
	// The NATS user is Factory. NATSURL connects to the hub directly; else LeafHubURL
	// through the gateway's own leaf node listening on LeafListen.
	Password               string
	NATSURL                string
	LeafListen, LeafHubURL string
	HubKey                 ed25519.PublicKey
	Peers                  map[string]ed25519.PublicKey // federation.peers, by member name
	Architecture           models.Architecture
}

// YAML is the gateway's configuration file.
func (g Gateway) YAML() string {
	nats, leaf := fmt.Sprintf("{url: %q, user: %s, password: %q}", g.NATSURL, g.Factory, g.Password), ""
	if g.LeafHubURL != "" {
		nats = fmt.Sprintf("{user: %s, password: %q}", g.Factory, g.Password)
		leaf = fmt.Sprintf("\n  leaf: {listen: %q, hub_url: %q}", g.LeafListen, g.LeafHubURL)
	}
	var peers []string
	for _, name := range slices.Sorted(maps.Keys(g.Peers)) {
		peers = append(peers, fmt.Sprintf("{name: %s, key: %s}", name, hex.EncodeToString(g.Peers[name])))
	}
	return fmt.Sprintf(`
gateway: {factory: %s, state_dir: %q, http: {listen: %q}, log: {level: warn}}
sources:
  - name: broker
    mqtt: {servers: [%q], client_id: %s, topics: [{pattern: "%s/{machine}/{signal}", qos: 1}]}
sinks:
  - name: influx
    influxdb: {url: %q, bucket: %s, flush_interval: 50ms, timeout: 2s}
models:
  enabled: %t
  train: {machines: [pump-1], window: 1h, min_rows: 1000, chunk: 30m, autoencoder: {epochs: 5}}
federation:
  enabled: true
  nats: %s%s
  hub_key: %s
  peers: [%s]
  federations:
    - {name: pumps, machines: [pump-1], architecture: %s}
`, g.Factory, g.StateDir, g.HTTPListen, servicetest.MQTTURL(), g.Topic, g.Topic, servicetest.InfluxURL(), g.DB, g.Models,
		nats, leaf, hex.EncodeToString(g.HubKey), strings.Join(peers, ", "), ArchitectureYAML(g.Architecture))
}
