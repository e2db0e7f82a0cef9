package gateway

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/natsbus"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/metrictest"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/internal/testlog"
	"github.com/millwright-io/millwright/models/store"
	"github.com/millwright-io/millwright/models/train"
	"github.com/millwright-io/millwright/models/train/trainsim"
)

// phaseState is round state round of federation pumps in phase, training from the model
// of globalRound, with factory-a a target.
func phaseState(t *testing.T, round, globalRound uint64, phase string) []byte {
	t.Helper()
	b, err := json.Marshal(federation.RoundState{Version: federation.StateVersion, Federation: "pumps", Round: round,
		Phase: phase, Global: "h", GlobalRound: globalRound, Targets: []string{"factory-a"}, Quorum: 1})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFinalEvaluationNotPendingWithoutItsReceipt: the outcome of a final evaluation
// comes only from the hub's receipt, which the hub writes after the state that finishes
// the federation; when it never comes (the hub stopped between the two, or failed to
// write it) the evaluation's round is closed all the same, and no later round state will
// settle it: it must not stay pending.
func TestFinalEvaluationNotPendingWithoutItsReceipt(t *testing.T) {
	msg := newFedMessages(t)
	for _, c := range []struct {
		name string
		tr   func() federation.Transport
	}{
		{"no receipt", func() federation.Transport { return &modelShelf{} }},
		{"only the previous round's receipt", func() federation.Transport {
			r := federation.Receipt{Version: federation.ReceiptVersion, Federation: "pumps", Participant: "factory-a", Round: 2}
			return &receiptDesk{Transport: &modelShelf{}, r: r, stale: 1 << 30}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := testStatus(t, msg.hub.Public().(ed25519.PublicKey))
				stop := startChecker(st, observedTransport{Transport: c.tr(), st: st})

				st.roundState(phaseState(t, 2, 1, federation.PhaseEvaluate))
				u := federation.Update{Federation: "pumps", Round: 2, BaseRound: 2, Participant: "factory-a",
					Kind: federation.KindEvaluation, Samples: 10, Metrics: map[string]float64{"global_false_alarm_rate": 0.01}}
				u.Sign(msg.gw)
				st.sent(u.Marshal())
				st.roundState(phaseState(t, 2, 1, federation.PhaseFinished))
				time.Sleep(time.Hour) // virtual time: every read of the receipt has run
				synctest.Wait()
				if got := st.snapshot().LastUpdate; got == nil || got.Kind != kindEvaluation || got.Outcome == OutcomePending {
					t.Errorf("last update %+v an hour after the federation finished; want the evaluation, no longer pending", got)
				}
				stop()
			})
		})
	}
}

// flakyShelf is a modelShelf whose first model download fails as a lost connection does.
type flakyShelf struct {
	*modelShelf
	mu     sync.Mutex
	failed bool
}

func (s *flakyShelf) GetModel(ctx context.Context, fed, hash string) ([]byte, error) {
	s.mu.Lock()
	first := !s.failed
	s.failed = true
	s.mu.Unlock()
	if first {
		return nil, errors.New("nats: timeout")
	}
	return s.modelShelf.GetModel(ctx, fed, hash)
}

// TestUpdateOutcomeSurvivesAFailedDownload: the checker's download of the model that
// closed the round of the gateway's update fails once (a moment without the hub). In the
// last round of a federation no participant fetches that model again, and no later
// round state comes to settle the update: the checker must try again rather than leave
// the update pending for good.
func TestUpdateOutcomeSurvivesAFailedDownload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		msg := newFedMessages(t)
		st := testStatus(t, msg.hub.Public().(ed25519.PublicKey))
		hash, b := msg.model(t, 1, "factory-a", "factory-b")
		shelf := &flakyShelf{modelShelf: &modelShelf{models: map[string][]byte{hash: b}}}
		stop := startChecker(st, observedTransport{Transport: shelf, st: st})

		st.roundState(msg.state(t, 1, 0, "initial", "factory-a", "factory-b"))
		st.sent(msg.update(t, 1, federation.KindDelta, 720))
		// Round 1 was the last: the hub finishes the federation with its model.
		fin, err := json.Marshal(federation.RoundState{Version: federation.StateVersion, Federation: "pumps", Round: 2,
			Phase: federation.PhaseFinished, Global: hash, GlobalRound: 1, Targets: []string{"factory-a", "factory-b"}})
		if err != nil {
			t.Fatal(err)
		}
		st.roundState(fin)
		time.Sleep(time.Hour) // virtual time
		synctest.Wait()
		s := st.snapshot()
		if u := s.LastUpdate; u == nil || u.Outcome != OutcomeUsed {
			t.Errorf("last update %+v an hour after its round closed with a model that lists the gateway; want used", u)
		}
		if g := s.GlobalModel; g == nil || g.Hash != hash {
			t.Errorf("global model %+v; want round 1's %s", g, hash)
		}
		stop()
	})
}

// TestFederationMachineKeepsItsModelAcrossARestart: with the models on, a machine that
// only a federation trains (not in models.train.machines) has its promoted model in the
// artifact store. After a restart the scorer must run that model again, and the next
// training of the machine (a federated round's) must be judged against it, as the docs
// promise ("only if it validates at least as well as the current one"), instead of
// replacing it as if the machine had no model.
func TestFederationMachineKeepsItsModelAcrossARestart(t *testing.T) {
	msg := newFedMessages(t)
	doc := strings.Replace(fedBase, "/tmp/x", t.TempDir(), 1) + fmt.Sprintf(`
models: {enabled: true, train: {machines: [pump-1], interval: 0, window: 2h, min_rows: 1000}}
federation:
  enabled: true
  nats: {url: "nats://127.0.0.1:4222", user: factory-a, password: pw}
  hub_key: %x
  federations: [{name: pumps, machines: [pump-1, pump-2], architecture: {kind: autoencoder, version: 1, inputs: 8, layers: [6, 3, 6], activation: tanh, params: 155}}]
`, []byte(msg.hub.Public().(ed25519.PublicKey)))
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}

	// pump-2's model, trained and promoted before the restart.
	plant, err := sim.New(sim.Config{Seed: 2, Machines: []sim.Machine{{ID: "pump-2", Line: "l1", Kind: sim.KindPump}}})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	hist := &train.History{Factory: "factory-a", Machine: "pump-2", From: t0, To: t0.Add(2 * time.Hour),
		Points: trainsim.History(plant, "factory-a", t0, time.Second, 7200)}
	dir, err := store.OpenDir(cfg.Models.Dir)
	if err != nil {
		t.Fatal(err)
	}
	before, err := train.New(cfg.Models.Train, train.Options{Querier: noHistory{}, Store: dir, Factory: "factory-a"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, err := before.TrainHistory(ctx, hist, nil)
	if err != nil || !first.Swapped {
		t.Fatalf("pump-2's first model: %+v, %v", first, err)
	}

	// The gateway starts again.
	log := slog.New(slog.DiscardHandler)
	mods, err := newModels(cfg, log, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mods.close()
	stopped, cancel := context.WithCancel(ctx)
	cancel()
	var grp errgroup.Group
	mods.start(stopped, &grp)
	if err := grp.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := mods.scorer.Model("pump-2"); got == nil || got.Hash != first.Model.Hash {
		t.Errorf("after the restart pump-2 runs %+v; want its promoted model %s", got, first.Model.Hash)
	}
	// The next training of pump-2 through the gateway's trainer (a federated round's
	// goes the same way) is judged against the promoted model.
	next, err := mods.trainer.TrainHistory(ctx, hist, nil)
	if err != nil {
		t.Fatal(err)
	}
	if next.Current == nil || next.Reason == "no current model" {
		t.Errorf("pump-2's next model replaced its promoted one without being judged against it: installed %t, %q", next.Swapped, next.Reason)
	}
}

// noHistory is a querier with no history: the trainings here train on history given.
type noHistory struct{}

func (noHistory) Query(context.Context, string, func(map[string]any) error) error { return nil }

// TestFederationConfigMachineProblems: a machine listed twice in a federation would be
// trained twice every round, and the update would claim its windows twice, doubling the
// gateway's weight in the hub's average: the configuration is refused, naming both
// places. A malformed machine id is reported with what is expected.
func TestFederationConfigMachineProblems(t *testing.T) {
	const key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
	_, err := Parse([]byte(fedBase + `
federation:
  enabled: true
  nats: {url: "nats://hub:4222", user: factory-a, password: pw}
  hub_key: ` + key + `
  federations: [{name: pumps, machines: [pump-1, "no/slash", pump-1], architecture: {kind: autoencoder, version: 1, inputs: 8, layers: [6, 3, 6], activation: tanh, params: 155}}]`))
	got := problemPaths(err)
	for path, want := range map[string][]string{
		"federation.federations[0].machines[1]": {`"no/slash"`, "expected"},
		"federation.federations[0].machines[2]": {`"pump-1"`, "machines[0]"},
	} {
		msg, ok := got[path]
		if !ok {
			t.Errorf("no problem reported at %s; got %v", path, err)
			continue
		}
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: %q does not say %s", path, msg, w)
			}
		}
	}
	if len(got) != 2 {
		t.Errorf("%d problems, want 2: %v", len(got), err)
	}
}

// TestFederationStopIsNotALostConnection: a gateway that stops closes its connection to
// the hub; that is not a lost connection and must not be logged as one ("connection to
// the federation hub lost, reconnecting", a warning at every stop).
func TestFederationStopIsNotALostConnection(t *testing.T) {
	msg := newFedMessages(t)
	sc := natsbus.ServerConfig{Listen: fmt.Sprintf("127.0.0.1:%d", servicetest.FreePort(t)), StoreDir: t.TempDir(),
		Factories: []natsbus.Factory{{Name: "factory-a", Password: config.NewSecret("pw"), Federations: []string{"pumps"}}}}
	sc.SetDefaults()
	srv, err := natsbus.StartServer(sc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	cfg := fedConfig(t, false, msg.hub.Public().(ed25519.PublicKey))
	cfg.Federation.NATS.URL = srv.ClientURL()
	log, logs := testlog.New(slog.LevelInfo)
	fr, err := newFederation(cfg, msg.gw, nil, log, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.close()
	closed := make(chan struct{})
	onLink := fr.client.OnLink
	fr.client.OnLink = func(up bool) {
		onLink(up)
		if !up {
			close(closed)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fr.run(ctx) }()
	servicetest.WaitFor(t, time.Minute, "the connection to the hub", func() bool { return strings.Contains(logs.String(), "federation joined") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-closed // the client reports the closed connection
	if l := logs.String(); strings.Contains(l, "connection to the federation hub lost") {
		t.Errorf("a stop logged as a lost connection:\n%s", l)
	}
}

// TestUpdateOfARoundEndedByThePrivacyBudget: a hub whose privacy budget cannot pay for the
// open round republishes that round's state as budget_exhausted and stops the federation:
// the round closes without a model, no later round state and no receipt come. An update
// the gateway sent for it (before or after that state arrived) is abandoned, not pending
// for good.
func TestUpdateOfARoundEndedByThePrivacyBudget(t *testing.T) {
	for _, stateFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("state first %t", stateFirst), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				msg := newFedMessages(t)
				st := testStatus(t, msg.hub.Public().(ed25519.PublicKey))
				stop := startChecker(st, observedTransport{Transport: &modelShelf{}, st: st})

				st.roundState(phaseState(t, 3, 2, federation.PhaseOpen))
				exhausted := func() { st.roundState(phaseState(t, 3, 2, federation.PhaseBudgetExhausted)) }
				if stateFirst {
					exhausted()
				}
				st.sent(msg.update(t, 3, federation.KindDelta, 10))
				if !stateFirst {
					exhausted()
				}
				time.Sleep(time.Hour) // virtual time
				synctest.Wait()
				s := st.snapshot()
				if u := s.LastUpdate; u == nil || u.Outcome != OutcomeAbandoned {
					t.Errorf("last update %+v after its round ended with the privacy budget; want abandoned", u)
				}
				if s.Rejections[OutcomeAbandoned] != 1 || s.LastRejection == nil || s.LastRejection.Round != 3 {
					t.Errorf("rejections %v, last %+v; want round 3 abandoned once", s.Rejections, s.LastRejection)
				}
				stop()
			})
		})
	}
}

// TestFailedTrainingIsNotARoundJoined: rounds_joined_total counts the rounds the gateway
// trained for; a round in which no machine could be trained (too little history, a
// layout that does not fit) sends nothing and is counted in the participant's
// rounds_failed_total{stage="train"}, not as joined.
func TestFailedTrainingIsNotARoundJoined(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newFedMetrics(reg, []string{"pumps"})
	if err != nil {
		t.Fatal(err)
	}
	st := newFedStatus("pumps", "factory-a", nil, m)
	st.trained(RoundTraining{Round: 1, Machines: []MachineTrained{{Machine: "pump-1", Error: "too little data"}}},
		errors.New("no machine could be trained: too little data"))
	st.trained(RoundTraining{Round: 2, Samples: 900, Machines: []MachineTrained{{Machine: "pump-1", Windows: 900}}}, nil)
	if got := metrictest.Sum(t, reg, "millwright_federation_participant_rounds_joined_total", "federation", "pumps"); got != 1 {
		t.Errorf("rounds joined %v after one failed and one successful training; want 1", got)
	}
	if s := st.snapshot(); s.LastError == nil || s.LastError.Stage != "train" || s.LastTraining == nil || s.LastTraining.Round != 2 {
		t.Errorf("last error %+v, last training %+v", s.LastError, s.LastTraining)
	}
}

// TestFederationConfigLeafWithDirectSettings: through a leaf node the gateway connects to
// its own leaf (leaf.listen, local plain TCP). A nats.url left from a direct connection
// would be silently ignored, and nats.tls would make every connection to the leaf fail
// ("secure connection not available", retried forever) without naming the setting: both
// are refused, with the place the hub's TLS settings go.
func TestFederationConfigLeafWithDirectSettings(t *testing.T) {
	const key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
	_, err := Parse([]byte(fedBase + `
federation:
  enabled: true
  nats: {url: "tls://hub.example:4222", user: factory-a, password: pw, tls: {enabled: true, ca_file: /etc/millwright/hub-ca.pem}}
  leaf: {hub_url: "nats-leaf://hub.example:7422"}
  hub_key: ` + key + `
  federations: [{name: pumps, machines: [pump-1], architecture: {kind: autoencoder, version: 1, inputs: 8, layers: [6, 3, 6], activation: tanh, params: 155}}]`))
	got := problemPaths(err)
	for path, want := range map[string]string{
		"federation.nats.url": `"tls://hub.example:4222"`,
		"federation.nats.tls": "leaf.tls",
	} {
		if msg, ok := got[path]; !ok || !strings.Contains(msg, want) {
			t.Errorf("problem at %s: %q; want one that says %s (all: %v)", path, msg, want, err)
		}
	}
	if len(got) != 2 {
		t.Errorf("%d problems, want 2: %v", len(got), err)
	}
}
