package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/compress"
	"github.com/millwright-io/millwright/federation/natsbus"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/fedtest"
	"github.com/millwright-io/millwright/internal/metrictest"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/train"
	"github.com/millwright-io/millwright/models/train/trainsim"
)

// historyQuerier answers the trainer's Flux queries from one machine's points held in
// memory, as InfluxDB would: the points in the query's range.
type historyQuerier struct{ points []telemetry.Point }

var fluxRange = regexp.MustCompile(`range\(start: ([^,]+), stop: ([^)]+)\)`)

func (q historyQuerier) Query(_ context.Context, flux string, fn func(map[string]any) error) error {
	m := fluxRange.FindStringSubmatch(flux)
	if m == nil {
		return fmt.Errorf("no range in %q", flux)
	}
	from, err := time.Parse(time.RFC3339Nano, m[1])
	if err != nil {
		return err
	}
	to, err := time.Parse(time.RFC3339Nano, m[2])
	if err != nil {
		return err
	}
	for _, p := range q.points {
		ts := time.Unix(0, p.SourceTime).UTC()
		if ts.Before(from) || !ts.Before(to) {
			continue
		}
		if err := fn(map[string]any{"signal": p.Signal, "_time": ts, "_field": "value", "_value": p.Value.Float()}); err != nil {
			return err
		}
	}
	return nil
}

// updateCounter counts the distinct update messages the hub's stream holds for a round.
type updateCounter struct {
	mu   sync.Mutex
	seen map[[32]byte]bool
}

func (c *updateCounter) add(m federation.UpdateMessage) {
	b := m.Data
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen[sha256.Sum256(b)] = true
}

func (c *updateCounter) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// TestGatewayRestartedMidRoundDoesNotSendAgain: a gateway that sent its update for the
// open round and is restarted (a power cut, an upgrade) before the round closed must not
// train again and send a second update for that round: the hub refuses it
// (duplicate_participant) while the gateway retrains, records a second training and shows
// the second update as its own. It takes part again from the next round.
func TestGatewayRestartedMidRoundDoesNotSendAgain(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()

	// An hour of pump-1 ending at end, served to the trainer from memory.
	plant, err := sim.New(sim.Config{Seed: 1, Machines: []sim.Machine{{ID: "pump-1", Line: "l1", Kind: sim.KindPump}}})
	if err != nil {
		t.Fatal(err)
	}
	end := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	pts := trainsim.History(plant, "factory-a", end.Add(-time.Hour), time.Second, 3600)
	var fc features.Config
	fc.SetDefaults()
	ae, err := autoencoder.New(autoencoder.Config{Inputs: trainsim.WindowWidth(t, fc, "pump-1", pts), Layers: []int{8, 3, 8}})
	if err != nil {
		t.Fatal(err)
	}
	arch := ae.Architecture()

	// The hub's NATS with federation pumps, its initial model and round 1 open for factory-a.
	_, hubKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, gwKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := natsbus.ServerConfig{Listen: fmt.Sprintf("127.0.0.1:%d", servicetest.FreePort(t)), StoreDir: filepath.Join(t.TempDir(), "hub"),
		Factories: []natsbus.Factory{{Name: "factory-a", Password: config.NewSecret("pw-a"), Federations: []string{"pumps"}}}}
	sc.SetDefaults()
	srv, err := natsbus.StartServer(sc, log)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	hub, err := natsbus.Dial(ctx, srv.HubClient(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hub.Close() }()
	if err := hub.EnsureFederation(ctx, "pumps", []string{"factory-a"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	params := make([]float32, arch.Params)
	for i := range params {
		params[i] = float32(i%7-3) / 20
	}
	g := federation.GlobalModel{Header: federation.ModelHeader{Federation: "pumps", Architecture: arch, Created: end}, Params: params}
	model, err := g.SignedBytes(hubKey)
	if err != nil {
		t.Fatal(err)
	}
	r0 := federation.HashHex(model)
	if err := hub.PutModel(ctx, "pumps", r0, model); err != nil {
		t.Fatal(err)
	}
	open := func(round uint64) {
		t.Helper()
		b, err := json.Marshal(federation.RoundState{Version: federation.StateVersion, Federation: "pumps", Round: round,
			Phase: federation.PhaseOpen, Global: r0, GlobalRound: 0, Targets: []string{"factory-a"}, Quorum: 1,
			Deadline: time.Now().Add(time.Hour).UTC(), Codecs: []compress.Codec{{Kind: compress.None, Chunk: compress.DefaultChunk}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := hub.PutRound(ctx, "pumps", b); err != nil {
			t.Fatal(err)
		}
	}
	open(1)
	counters := map[uint64]*updateCounter{}
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	defer func() { stopWatch(); watchers.Wait() }()
	for _, round := range []uint64{1, 2} {
		c := &updateCounter{seen: map[[32]byte]bool{}}
		counters[round] = c
		watchers.Go(func() { _ = hub.Updates(watchCtx, "pumps", round, c.add) })
	}

	// The gateway, with its models off: the federation's own trainer, on the history above.
	doc := strings.Replace(fedBase, "/tmp/x", t.TempDir(), 1) + fmt.Sprintf(`
models: {train: {window: 1h, min_rows: 1000, chunk: 30m, autoencoder: {epochs: 2}}}
federation:
  enabled: true
  nats: {url: %q, user: factory-a, password: pw-a}
  hub_key: %s
  federations: [{name: pumps, machines: [pump-1], architecture: %s}]
`, srv.ClientURL(), hex.EncodeToString(hubKey.Public().(ed25519.PublicKey)), fedtest.ArchitectureYAML(arch))
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	start := func() (*federationRuntime, *prometheus.Registry, func()) {
		t.Helper()
		reg := prometheus.NewRegistry()
		fr, err := newFederation(cfg, gwKey, nil, log, reg, nil)
		if err != nil {
			t.Fatal(err)
		}
		tc := cfg.Models.Train
		tc.Machines = []string{"pump-1"}
		if fr.trainer, err = train.New(tc, train.Options{Querier: historyQuerier{pts}, Factory: "factory-a", Now: func() time.Time { return end }}); err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- fr.run(runCtx) }()
		return fr, reg, func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
			fr.close()
		}
	}

	_, _, stop := start()
	servicetest.WaitFor(t, 2*time.Minute, "round 1's update", func() bool { return counters[1].n() == 1 })
	stop()

	// Restarted while round 1 is still open; the hub then opens round 2 (round 1 closed).
	fr, reg, stop := start()
	defer stop()
	servicetest.WaitFor(t, time.Minute, "round 1's state after the restart", func() bool {
		r := fr.status[0].snapshot().Round
		return r != nil && r.Round == 1
	})
	open(2)
	servicetest.WaitFor(t, 2*time.Minute, "round 2's update", func() bool { return counters[2].n() == 1 })
	if n := counters[1].n(); n != 1 {
		t.Errorf("%d updates for round 1; want 1: the restarted gateway trained and sent round 1's again", n)
	}
	if n := metrictest.Value(t, reg, "millwright_federation_participant_states_superseded_total"); n != 0 {
		t.Fatalf("round 1's state was superseded before the restarted participant handled it (%v): the test proves nothing", n)
	}
}
