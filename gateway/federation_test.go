package gateway

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/federation/natsbus"
	"github.com/millwright-io/millwright/gateway/api"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/fedtest"
	"github.com/millwright-io/millwright/internal/metrictest"
	"github.com/millwright-io/millwright/internal/servicetest"
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
		{"a layout the gateway does not build", `
federation:
  enabled: true
  nats: {url: "nats://hub:4222", user: factory-a, password: pw}
  hub_key: ` + key + `
  federations:
    - {name: a, machines: [m], architecture: {kind: autoencoder, version: 1, inputs: 8, layers: [6, 3, 6], activation: tanh, params: 154}}
    - {name: b, machines: [m], architecture: {kind: autoencoder, version: 2, inputs: 8, layers: [], params: 155}}
    - {name: c, machines: [m], architecture: {kind: autoencoder, version: 1, inputs: 8, layers: [6, 0], activation: relu6, params: 155}}`,
			[]string{"federation.federations[0].architecture.params",
				"federation.federations[1].architecture.version", "federation.federations[1].architecture.layers", "federation.federations[1].architecture.activation",
				"federation.federations[2].architecture.layers[1]", "federation.federations[2].architecture.activation"}},
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
		{"leaf over mutual TLS", `
federation:
  enabled: true
  nats: {user: factory-a, password: pw}
  leaf: {hub_url: "nats-leaf://hub.example:7422", tls: {ca_file: /etc/millwright/hub-ca.pem, cert_file: /etc/millwright/site.pem, key_file: /etc/millwright/site.key}}
  hub_key: ` + key + `
  federations: [{name: pumps, machines: [pump-1, pump-2], architecture: ` + arch + `}]`, nil},
		{"leaf with a broken link config", `
federation:
  enabled: true
  nats: {user: factory-a, password: pw}
  leaf: {listen: nope, hub_url: "http://user:pw@hub.example", tls: {cert_file: /etc/millwright/site.pem}}
  hub_key: ` + key + `
  federations: [{name: pumps, machines: [pump-1], architecture: ` + arch + `}]`, []string{"federation.leaf.hub_url", "federation.leaf.listen", "federation.leaf.tls.cert_file"}},
		{"with the members' keys", `
federation:
  enabled: true
  nats: {url: "nats://hub:4222", user: factory-a, password: pw}
  hub_key: ` + key + `
  peers: [{name: factory-b, key: ` + key + `}, {name: factory-c, key: ` + key + `}]
  federations: [{name: pumps, machines: [pump-1, pump-2], architecture: ` + arch + `}]`, nil},
		{"broken peers", `
federation:
  enabled: true
  nats: {url: "nats://hub:4222", user: factory-a, password: pw}
  hub_key: ` + key + `
  peers: [{name: "bad name", key: ` + key + `}, {name: factory-b}, {name: factory-c, key: ` + key + `}, {name: factory-c, key: ` + key + `}]
  federations: [{name: pumps, machines: [pump-1], architecture: ` + arch + `}]`,
			[]string{"federation.peers[0].name", "federation.peers[1].key", "federation.peers[3].name"}},
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

// fedMessages signs the round protocol's messages of federation pumps for the status
// tests: round states, global models (the hub's key) and updates (factory-a's key).
type fedMessages struct {
	hub, gw ed25519.PrivateKey
}

func newFedMessages(t *testing.T) fedMessages {
	t.Helper()
	_, hub, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, gw, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return fedMessages{hub: hub, gw: gw}
}

func (m fedMessages) state(t *testing.T, round, globalRound uint64, global string, targets ...string) []byte {
	t.Helper()
	b, err := json.Marshal(federation.RoundState{Version: federation.StateVersion, Federation: "pumps", Round: round,
		Phase: federation.PhaseOpen, Global: global, GlobalRound: globalRound, Targets: targets, Quorum: 2})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// model returns the hash and bytes of the global model of round, aggregated from participants.
func (m fedMessages) model(t *testing.T, round uint64, participants ...string) (string, []byte) {
	t.Helper()
	g := federation.GlobalModel{Header: federation.ModelHeader{Federation: "pumps", Round: round, Participants: participants,
		Architecture: models.Architecture{Kind: "autoencoder", Version: 1, Inputs: 1, Params: 2}}, Params: []float32{0.5, -1}}
	b, err := g.SignedBytes(m.hub)
	if err != nil {
		t.Fatal(err)
	}
	return federation.HashHex(b), b
}

func (m fedMessages) update(t *testing.T, round uint64, kind uint8, samples uint64) []byte {
	t.Helper()
	u := federation.Update{Federation: "pumps", Round: round, BaseRound: round, Participant: "factory-a", Kind: kind,
		Samples: samples, Payload: []byte{1, 2, 3}}
	u.Sign(m.gw)
	return u.Marshal()
}

// modelShelf is the hub's side of a transport for the status tests: it serves stored
// models and accepts updates, and counts the model downloads.
type modelShelf struct {
	federation.Transport // the methods the tests do not use

	mu     sync.Mutex
	models map[string][]byte
	gets   int
}

func (s *modelShelf) GetModel(_ context.Context, _, hash string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets++
	b, ok := s.models[hash]
	if !ok {
		return nil, federation.ErrNotFound
	}
	return b, nil
}

func (s *modelShelf) PublishUpdate(context.Context, string, uint64, string, []byte) error { return nil }

// GetReceipt: the shelf's hub writes no receipts.
func (s *modelShelf) GetReceipt(context.Context, string, string) ([]byte, error) {
	return nil, federation.ErrNotFound
}

func (s *modelShelf) downloads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets
}

// TestFederationUpdateOutcome: after the gateway sent its update for round 1, the next
// round state and the round's global model settle what became of it; a rejection is
// counted on the API and in the metrics, and the model is fetched once.
func TestFederationUpdateOutcome(t *testing.T) {
	tests := []struct {
		name         string
		participants []string  // of round 1's global model; nil: no model published
		next         [2]uint64 // the next round state: round, global round
		outcome      string
		downloads    int
		// stateFirst delivers the next round state before the update's publish returns
		// (the update completed the quorum and the hub closed the round at once).
		stateFirst bool
	}{
		{"used", []string{"factory-a", "factory-b"}, [2]uint64{2, 1}, OutcomeUsed, 1, false},
		{"used, round closed before the acknowledgement", []string{"factory-a", "factory-b"}, [2]uint64{2, 1}, OutcomeUsed, 1, true},
		{"excluded by the hub", []string{"factory-b", "factory-c"}, [2]uint64{2, 1}, OutcomeExcluded, 1, false},
		{"round abandoned", nil, [2]uint64{2, 0}, OutcomeAbandoned, 0, false},
		{"round abandoned before the acknowledgement", nil, [2]uint64{2, 0}, OutcomeAbandoned, 0, true},
		{"round still open", nil, [2]uint64{1, 0}, OutcomePending, 0, false},
		{"later rounds closed first", nil, [2]uint64{3, 2}, OutcomeUnknown, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				msg := newFedMessages(t)
				reg := prometheus.NewRegistry()
				m, err := newFedMetrics(reg, []string{"pumps"})
				if err != nil {
					t.Fatal(err)
				}
				st := newFedStatus("pumps", "factory-a", msg.hub.Public().(ed25519.PublicKey), m)
				shelf := &modelShelf{models: map[string][]byte{}}
				hash := ""
				if tt.participants != nil {
					var b []byte
					hash, b = msg.model(t, 1, tt.participants...)
					shelf.models[hash] = b
				}
				tr := observedTransport{Transport: shelf, st: st}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { st.runChecker(ctx, tr); close(done) }()

				st.roundState(msg.state(t, 1, 0, "initial", "factory-a", "factory-b"))
				next := func() { st.roundState(msg.state(t, tt.next[0], tt.next[1], hash, "factory-a")) }
				if tt.stateFirst {
					next()
				}
				if err := tr.PublishUpdate(ctx, "pumps", 1, "factory-a", msg.update(t, 1, federation.KindDelta, 720)); err != nil {
					t.Fatal(err)
				}
				if !tt.stateFirst {
					next()
				}
				synctest.Wait()

				s := st.snapshot()
				if u := s.LastUpdate; u == nil || u.Round != 1 || u.Samples != 720 || u.Kind != "delta" || u.Bytes == 0 || u.Outcome != tt.outcome {
					t.Fatalf("last update %+v; want round 1, 720 samples, outcome %s", u, tt.outcome)
				}
				rejected := tt.outcome == OutcomeExcluded || tt.outcome == OutcomeAbandoned
				for _, reason := range []string{OutcomeExcluded, OutcomeAbandoned} {
					want := 0.0
					if rejected && reason == tt.outcome {
						want = 1
					}
					if got := metrictest.Sum(t, reg, "millwright_federation_participant_rejections_total", "federation", "pumps", "reason", reason); got != want {
						t.Errorf("rejections{reason=%s} = %v, want %v", reason, got, want)
					}
					if got := float64(s.Rejections[reason]); got != want {
						t.Errorf("status rejections[%s] = %v, want %v", reason, got, want)
					}
				}
				if rejected != (s.LastRejection != nil) || rejected && (s.LastRejection.Round != 1 || s.LastRejection.Reason != tt.outcome) {
					t.Errorf("last rejection %+v", s.LastRejection)
				}
				if s.Round == nil || s.Round.Round != tt.next[0] || !s.Round.Targeted {
					t.Errorf("round %+v; want %d with the gateway targeted", s.Round, tt.next[0])
				}
				if tt.participants != nil {
					if g := s.GlobalModel; g == nil || g.Round != 1 || g.Hash != hash || g.Version != "pumps@r1" {
						t.Errorf("global model %+v; want pumps@r1 %s", g, hash)
					}
					// The participant's own fetch for the next round is served from memory.
					if _, err := tr.GetModel(ctx, "pumps", hash); err != nil {
						t.Fatal(err)
					}
				}
				if got := shelf.downloads(); got != tt.downloads {
					t.Errorf("%d model downloads, want %d", got, tt.downloads)
				}
				cancel()
				<-done
			})
		})
	}
}

// TestFederationStatusSecAgg: the messages of a round with secure aggregation are one
// update on the API (bytes added up, the samples of the round's training: the messages
// carry 1); a model that the hub did not sign is not recorded.
func TestFederationStatusSecAgg(t *testing.T) {
	msg := newFedMessages(t)
	st := testStatus(t, msg.hub.Public().(ed25519.PublicKey))
	st.trained(RoundTraining{Round: 4, Samples: 720}, nil)
	a, b := msg.update(t, 4, federation.KindSecAgg, 1), msg.update(t, 4, federation.KindSecAgg, 1)
	st.sent(a)
	st.sent(b)
	if u := st.snapshot().LastUpdate; u == nil || u.Kind != "secagg" || u.Bytes != len(a)+len(b) || u.Round != 4 || u.Samples != 720 {
		t.Fatalf("last update %+v; want one secagg update of round 4, %d bytes and the training's 720 samples", u, len(a)+len(b))
	}
	other := fedMessages{hub: msg.gw}
	hash, forged := other.model(t, 4, "factory-a")
	st.fetched(hash, forged)
	if s := st.snapshot(); s.GlobalModel != nil || s.LastUpdate.Outcome != OutcomePending {
		t.Fatalf("a model signed by another key was recorded: %+v", s)
	}
}

// fedConfig is a gateway of factory-a in a temporary state directory that joins
// federation pumps, with the models (scheduled training and scoring of pump-1) on or off.
func fedConfig(t *testing.T, modelsOn bool, hubKey ed25519.PublicKey) Config {
	t.Helper()
	doc := strings.Replace(fedBase, "/tmp/x", t.TempDir(), 1) + fmt.Sprintf(`
models: {enabled: %t, train: {machines: [pump-1]}}
federation:
  enabled: true
  nats: {url: "nats://127.0.0.1:4222", user: factory-a, password: pw}
  hub_key: %s
  federations: [{name: pumps, machines: [pump-1], architecture: {kind: autoencoder, version: 1, inputs: 8, layers: [6, 3, 6], activation: tanh, params: 155}}]
`, modelsOn, hex.EncodeToString(hubKey))
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestFederationTrainsThroughTheModelsTrainer: with the models on, the federation has no
// trainer of its own: its rounds train through the scheduled trainer, which runs one
// training at a time (models/train TestScheduledAndFederatedTrainingsDoNotOverlap), and
// both register on the gateway's registry. With the models off it has its own, also on
// the gateway's registry.
func TestFederationTrainsThroughTheModelsTrainer(t *testing.T) {
	msg := newFedMessages(t)
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	cfg := fedConfig(t, true, msg.hub.Public().(ed25519.PublicKey))
	mods, err := newModels(cfg, log, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mods.close()
	fr, err := newFederation(cfg, msg.gw, mods, log, reg, nil)
	if err != nil {
		t.Fatal(err) // a second trainer would fail here: its metrics are already registered
	}
	defer fr.close()
	if fr.trainer != mods.trainer || fr.querier != nil {
		t.Fatal("the federation built a trainer of its own next to the models' trainer")
	}

	reg = prometheus.NewRegistry()
	fr, err = newFederation(fedConfig(t, false, msg.hub.Public().(ed25519.PublicKey)), msg.gw, nil, log, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.close()
	if fr.trainer == nil || metrictest.Value(t, reg, "millwright_model_trainings_waiting") != 0 {
		t.Fatal("the federation's own trainer is missing or not on the gateway's registry")
	}
}

// TestFederationAPI: GET /api/v1/federation on the gateway's HTTP API shows each joined
// federation's state, and /metrics the federation's and the trainer's series; with the
// federation off the list is empty.
func TestFederationAPI(t *testing.T) {
	msg := newFedMessages(t)
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	fr, err := newFederation(fedConfig(t, false, msg.hub.Public().(ed25519.PublicKey)), msg.gw, nil, log, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.close()
	st := fr.status[0]
	shelf := &modelShelf{models: map[string][]byte{}}
	hash, b := msg.model(t, 2, "factory-a", "factory-b")
	shelf.models[hash] = b
	tr := observedTransport{Transport: shelf, st: st}
	ctx := context.Background()
	st.setHub(hubConnected)
	st.roundState(msg.state(t, 2, 1, "h1", "factory-a", "factory-b"))
	upd := msg.update(t, 2, federation.KindDelta, 900)
	if err := tr.PublishUpdate(ctx, "pumps", 2, "factory-a", upd); err != nil {
		t.Fatal(err)
	}
	st.roundState(msg.state(t, 3, 2, hash, "factory-b"))
	if _, err := tr.GetModel(ctx, "pumps", <-st.check); err != nil { // what the checker does
		t.Fatal(err)
	}
	st.trained(RoundTraining{Round: 2, Seconds: 1.5, Samples: 900, Machines: []MachineTrained{{Machine: "pump-1", Windows: 900, Installed: true}}}, nil)

	serve := func(fr *federationRuntime) string {
		addr := fmt.Sprintf("127.0.0.1:%d", servicetest.FreePort(t))
		srv := api.New(addr, reg, func() error { return nil }, false, log)
		fr.serve(srv)
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
		return "http://" + addr
	}
	get := func(url string) []byte {
		t.Helper()
		var body []byte
		servicetest.WaitFor(t, 10*time.Second, "GET "+url, func() bool {
			resp, err := http.Get(url)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			body, err = io.ReadAll(resp.Body)
			return err == nil && resp.StatusCode == http.StatusOK
		})
		return body
	}
	base := serve(fr)
	var list []FederationStatus
	if err := json.Unmarshal(get(base+"/api/v1/federation"), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("%d federations, want 1", len(list))
	}
	s := list[0]
	if s.Name != "pumps" || s.Member != "factory-a" || s.Hub != hubConnected {
		t.Errorf("federation %s, member %s, hub %s", s.Name, s.Member, s.Hub)
	}
	if s.Round == nil || s.Round.Round != 3 || s.Round.Targeted || s.Round.GlobalRound != 2 {
		t.Errorf("round %+v; want 3 (not targeted) from the model of round 2", s.Round)
	}
	if u := s.LastUpdate; u == nil || u.Round != 2 || u.Samples != 900 || u.Bytes != len(upd) || u.Outcome != OutcomeUsed || u.SentAt.IsZero() {
		t.Errorf("last update %+v; want round 2, 900 samples, %d bytes, used", u, len(upd))
	}
	if g := s.GlobalModel; g == nil || g.Hash != hash || g.Version != "pumps@r2" || len(g.Participants) != 2 {
		t.Errorf("global model %+v; want pumps@r2 %s", g, hash)
	}
	if tr := s.LastTraining; tr == nil || tr.Round != 2 || len(tr.Machines) != 1 || !tr.Machines[0].Installed {
		t.Errorf("last training %+v", tr)
	}
	if s.Rejections[OutcomeExcluded] != 0 || s.LastError != nil {
		t.Errorf("rejections %v, last error %+v; want none", s.Rejections, s.LastError)
	}
	metrics := string(get(base + "/metrics"))
	for _, want := range []string{
		`millwright_federation_participant_connected{federation="pumps"} 1`,
		`millwright_federation_participant_round{federation="pumps"} 3`,
		`millwright_federation_participant_global_round{federation="pumps"} 2`,
		`millwright_federation_participant_rounds_joined_total{federation="pumps"} 1`,
		`millwright_federation_participant_training_seconds_count{federation="pumps"} 1`,
		`millwright_federation_participant_rejections_total{federation="pumps",reason="excluded"} 0`,
		`millwright_model_training_wait_seconds_count{kind="federated"} 0`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics has no line %s", want)
		}
	}

	var none *federationRuntime
	if body := strings.TrimSpace(string(get(serve(none) + "/api/v1/federation"))); body != "[]" {
		t.Errorf("with the federation off: %s, want []", body)
	}
}

// TestFederationEndToEnd runs a hub (embedded NATS, federation.Hub) and two gateways built
// with New from YAML and run with Run, each with its own pump history in InfluxDB and its
// own HTTP API: factory-a with its models on (the round trains through its scheduled
// trainer, which trains pump-1 at start as well), factory-b with its models off. One
// round closes with both updates, then the final evaluation round with both gateways'
// judgement of its model, and each gateway's GET /api/v1/federation and /metrics show it:
// connected, the round trained, the evaluation sent and used, the global model verified,
// no rejection.
func TestFederationEndToEnd(t *testing.T) {
	servicetest.Require(t, "Mosquitto and InfluxDB")
	root := t.TempDir()
	names := []string{"factory-a", "factory-b"}

	db, arch := fedtest.StorePumps(t, names...)

	// The hub: its key, the gateways' identity keys (made up front for the membership),
	// the embedded NATS server with per-factory credentials, and the federation.
	_, hubKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := fedtest.IdentityKeys(t, root, names...)
	var members []federation.Member
	for _, n := range names {
		members = append(members, federation.Member{Name: n, Key: federation.PublicKey{PublicKey: keys[n]}})
	}
	log := slog.New(slog.DiscardHandler)
	sc := natsbus.ServerConfig{Listen: fmt.Sprintf("127.0.0.1:%d", servicetest.FreePort(t)), StoreDir: filepath.Join(root, "hub"),
		Factories: []natsbus.Factory{{Name: names[0], Password: config.NewSecret("pw-a"), Federations: []string{"pumps"}},
			{Name: names[1], Password: config.NewSecret("pw-b"), Federations: []string{"pumps"}}}}
	sc.SetDefaults()
	srv, err := natsbus.StartServer(sc, log)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ctx := context.Background()
	bus, err := natsbus.Dial(ctx, srv.HubClient(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bus.Close() }()
	if err := bus.EnsureFederation(ctx, "pumps", names, time.Hour); err != nil {
		t.Fatal(err)
	}
	hc := federation.HubConfig{Federations: []federation.FederationConfig{{Name: "pumps", Members: members, Architecture: arch,
		Rounds: 1, FinalEvaluation: true, Quorum: 2, RoundTimeout: 5 * time.Minute, Strategy: aggregate.Strategy{Name: "fedprox", ProximalMu: 0.01}}}}
	hc.SetDefaults()
	var (
		mu      sync.Mutex
		reports []federation.RoundReport
	)
	hub, err := federation.NewHub(hc, bus, hubKey, federation.HubOptions{Logger: log, OnRound: func(r federation.RoundReport) {
		mu.Lock()
		defer mu.Unlock()
		reports = append(reports, r)
	}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	wg.Go(func() {
		if err := hub.Run(runCtx); err != nil {
			t.Errorf("hub: %v", err)
		}
	})

	// The gateways.
	urls := map[string]string{}
	for i, n := range names {
		httpAddr := fmt.Sprintf("127.0.0.1:%d", servicetest.FreePort(t))
		urls[n] = "http://" + httpAddr
		gc := fedtest.Gateway{Factory: n, StateDir: filepath.Join(root, n), HTTPListen: httpAddr, Topic: servicetest.UniqueName("fed"),
			DB: db, Models: i == 0, Password: "pw-" + n[len(n)-1:], NATSURL: srv.ClientURL(),
			HubKey: hubKey.Public().(ed25519.PublicKey), Architecture: arch}
		cfg, err := Parse([]byte(gc.YAML()))
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		g, err := New(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := g.Run(runCtx); err != nil {
				t.Errorf("gateway %s: %v", n, err)
			}
		})
	}

	get := func(url string) ([]byte, error) {
		resp, err := http.Get(url)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	status := func(n string) *FederationStatus {
		b, err := get(urls[n] + "/api/v1/federation")
		var list []FederationStatus
		if err != nil || json.Unmarshal(b, &list) != nil || len(list) != 1 {
			return nil
		}
		return &list[0]
	}
	for _, n := range names {
		servicetest.WaitFor(t, 4*time.Minute, n+"'s evaluation used by the final round", func() bool {
			s := status(n)
			return s != nil && s.LastUpdate != nil && s.LastUpdate.Round == 2 && s.LastUpdate.Outcome != OutcomePending && s.GlobalModel != nil
		})
	}
	mu.Lock()
	got := slices.Clone(reports)
	mu.Unlock()
	if len(got) != 2 || got[0].Outcome != "aggregated" || len(got[0].Used) != 2 {
		t.Fatalf("hub's round reports %+v; want round 1 aggregated from both gateways, then the final evaluation", got)
	}
	rep := &got[0]
	// The final evaluation: both gateways judged r1 without training, as they judged r0
	// before training from it, and reported only global_ metrics.
	if fin := got[1]; fin.Outcome != "evaluated" || fin.Round != 2 || fin.Model != rep.Model || len(fin.Used) != 2 || len(fin.Metrics) != 4 ||
		!(fin.Metrics["global_false_alarm_rate"] >= 0 && fin.Metrics["global_false_alarm_rate"] <= 1) ||
		!(fin.Metrics["global_detection_rate"] >= 0 && fin.Metrics["global_detection_rate"] <= 1) || !(fin.Metrics["global_validation_windows"] >= 1) {
		t.Errorf("final round %+v; want r1 evaluated by both gateways with global_ false_alarm_rate, detection_rate, separation and validation_windows", fin)
	}
	// The round's metrics: the quality of the factories' models after the round's training,
	// as both gateways reported it, and of the global model they trained from (global_),
	// judged on the same held-out windows before their training.
	for _, prefix := range []string{"", federation.GlobalMetricPrefix} {
		m := func(name string) float64 { return rep.Metrics[prefix+name] }
		if len(rep.Metrics) != 8 || !(m("false_alarm_rate") >= 0 && m("false_alarm_rate") <= 1) ||
			!(m("detection_rate") >= 0 && m("detection_rate") <= 1) || !(m("validation_windows") >= 1) || math.IsNaN(m("separation")) {
			t.Errorf("hub's round metrics %v; want %sfalse_alarm_rate and %sdetection_rate in [0, 1], separation, and validation_windows", rep.Metrics, prefix, prefix)
		}
	}
	if m := rep.Metrics; m["global_validation_windows"] != m["validation_windows"] {
		t.Errorf("the global model was judged on %v windows, the trained models on %v; want the same", m["global_validation_windows"], m["validation_windows"])
	}
	t.Logf("round 1's metrics at the hub: %v", rep.Metrics)
	for _, n := range names {
		s := status(n)
		if s.Hub != hubConnected || s.Member != n {
			t.Errorf("%s: hub %s, member %s", n, s.Hub, s.Member)
		}
		u, tr, g := s.LastUpdate, s.LastTraining, s.GlobalModel
		if u.Round != 2 || u.Kind != "evaluation" || u.Outcome != OutcomeUsed || u.Bytes == 0 || u.Samples == 0 {
			t.Errorf("%s: last update %+v; want round 2's evaluation, used", n, u)
		}
		if tr == nil || tr.Round != 1 || tr.Error != "" || len(tr.Machines) != 1 || tr.Machines[0].Machine != "pump-1" ||
			tr.Machines[0].Hash == "" || tr.Samples == 0 {
			t.Errorf("%s: last training %+v; want round 1 on pump-1", n, tr)
		}
		if g.Round != 1 || g.Hash != rep.Model || g.Version != "pumps@r1" {
			t.Errorf("%s: global model %+v; want pumps@r1 %s", n, g, rep.Model)
		}
		if s.Round == nil || s.Round.Round != 2 || s.Round.Phase != federation.PhaseFinished {
			t.Errorf("%s: round %+v; want 2, finished", n, s.Round)
		}
		if s.LastRejection != nil || s.Rejections[OutcomeExcluded]+s.Rejections[OutcomeAbandoned] != 0 {
			t.Errorf("%s: rejections %v", n, s.Rejections)
		}
		wantLines := []string{
			`millwright_federation_participant_connected{federation="pumps"} 1`,
			`millwright_federation_participant_rounds_joined_total{federation="pumps"} 1`,
			`millwright_federation_participant_updates_sent_total{federation="pumps"} 2`, // the update and the evaluation
			`millwright_federation_participant_training_seconds_count{federation="pumps"} 1`,
			`millwright_federation_participant_global_round{federation="pumps"} 1`,
			`millwright_federation_participant_rejections_total{federation="pumps",reason="excluded"} 0`,
			`millwright_model_training_wait_seconds_count{kind="federated"} 2`, // the training and the evaluation
		}
		// The status shows the evaluation sent once the transport has it, a moment before
		// the participant counts it: /metrics is read until it has every line, for a while.
		var metrics string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			b, err := get(urls[n] + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			metrics = string(b)
			if !slices.ContainsFunc(wantLines, func(w string) bool { return !strings.Contains(metrics, w+"\n") }) || time.Now().After(deadline) {
				break
			}
		}
		for _, want := range wantLines {
			if !strings.Contains(metrics, want+"\n") {
				t.Errorf("%s: /metrics has no line %s", n, want)
			}
		}
		// factory-a trained pump-1 on its schedule too, through the same trainer.
		if local := strings.Contains(metrics, `millwright_model_training_wait_seconds_count{kind="local"} 1`+"\n"); local != (n == "factory-a") {
			t.Errorf("%s: a scheduled training on the federation's trainer: %t", n, local)
		}
	}
}

// TestFederationPeerKeys: the configured members' keys reach the participants by name.
func TestFederationPeerKeys(t *testing.T) {
	a := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	b := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	c := FederationConfig{Peers: []federation.Member{{Name: "factory-b", Key: federation.PublicKey{PublicKey: a}}, {Name: "factory-c", Key: federation.PublicKey{PublicKey: b}}}}
	keys := c.peerKeys()
	if len(keys) != 2 || !keys["factory-b"].Equal(a) || !keys["factory-c"].Equal(b) {
		t.Fatalf("peer keys %v", keys)
	}
}

// testStatus is the federation status of factory-a in federation pumps, whose models hub
// signs.
func testStatus(t *testing.T, hub ed25519.PublicKey) *fedStatus {
	t.Helper()
	m, err := newFedMetrics(prometheus.NewRegistry(), []string{"pumps"})
	if err != nil {
		t.Fatal(err)
	}
	return newFedStatus("pumps", "factory-a", hub, m)
}

// startChecker runs st's checker over tr until stop, which waits for it to end.
func startChecker(st *fedStatus, tr federation.Transport) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { st.runChecker(ctx, tr); close(done) }()
	return func() { cancel(); <-done }
}
