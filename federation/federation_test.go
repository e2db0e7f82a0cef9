package federation_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/federation/compress"
	"github.com/millwright-io/millwright/internal/metrictest"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// weightedMean is where FedAvg over the gateways' optima converges.
func weightedMean(targets [][]float32, w []int) []float32 {
	out := make([]float32, len(targets[0]))
	tot := 0
	for i, t := range targets {
		for j := range out {
			out[j] += float32(w[i]) * t[j]
		}
		tot += w[i]
	}
	for j := range out {
		out[j] /= float32(tot)
	}
	return out
}

// skipRound is a trainer that fails in one round (the gateway then sends nothing).
type skipRound struct {
	federation.Trainer
	round uint64
}

func (s skipRound) Train(ctx context.Context, task federation.Task, global []float32) (federation.TrainResult, error) {
	if task.Round == s.round {
		return federation.TrainResult{}, errors.New("not this round")
	}
	return s.Trainer.Train(ctx, task, global)
}

// TestHubKeepsTheLatestModels: with keep_models 2 the hub deletes every model older than
// the two latest rounds' as the rounds close, including the one a round abandoned (no
// model, no version) would have deleted; the versions still name the deleted models'
// hashes, and the ledger records them all. Every closed round's updates are deleted too.
func TestHubKeepsTheLatestModels(t *testing.T) {
	const n, dim, rounds, keep, abandoned = 3, 20, 6, 2, 3
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Rounds, fc.KeepModels, fc.RoundTimeout = rounds, keep, 2*time.Second
	h := startHub(t, e.hub, fc)
	for i := range n {
		e.gateway(t, i, skipRound{Trainer: &pullTrainer{target: target(i, dim), samples: 10}, round: abandoned})
	}
	for r := uint64(1); r <= rounds; r++ {
		if rep := h.next(t); rep.Round != r || (rep.Outcome == "aggregated") == (r == abandoned) {
			t.Fatalf("round %d: %s (%s)", rep.Round, rep.Outcome, rep.Reason)
		}
	}
	expectKept(t, e.hub, rounds, keep, abandoned)
	ctx := context.Background()
	// Every closed round's updates are gone from the stream.
	for r := uint64(1); r < rounds; r++ {
		uctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		n := 0
		if err := e.hub.Updates(uctx, fedName, r, func(federation.UpdateMessage) { n++ }); err != nil {
			t.Fatal(err)
		}
		cancel()
		if n != 0 {
			t.Errorf("round %d: %d updates still stored after it closed", r, n)
		}
	}
	for _, what := range []string{"model", "updates"} {
		if got := h.counter("millwright_federation_delete_errors_total", "what", what); got != 0 {
			t.Errorf("%v errors deleting %s", got, what)
		}
	}
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if len(h.rec.bodies) != rounds-1 {
		t.Errorf("%d FederatedRound records, want %d (every released model, deleted or not)", len(h.rec.bodies), rounds-1)
	}
}

// TestHubKeepsReleasedModels: a model people released (HubOptions.SignedOff) stays in the
// store past keep_models while the others around it go; a hub that cannot tell which
// models were released deletes none.
func TestHubKeepsReleasedModels(t *testing.T) {
	const n, dim, rounds, keep = 3, 20, 5, 2
	for _, reachable := range []bool{true, false} {
		t.Run(fmt.Sprintf("ledger reachable %v", reachable), func(t *testing.T) {
			e := newEnv(t, n, false)
			fc := fedConfig(n, dim)
			fc.Rounds, fc.KeepModels = rounds, keep
			h := startHubWith(t, e.hub, func(o *federation.HubOptions) {
				o.SignedOff = func(ctx context.Context, fed string) (map[string]bool, error) {
					if !reachable {
						return nil, errors.New("ledger not reachable")
					}
					r1, err := e.hub.GetVersion(ctx, fed, "r1")
					return map[string]bool{r1: true}, err
				}
			}, fc)
			for i := range n {
				e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
			}
			for range rounds {
				h.next(t)
			}
			ctx := context.Background()
			stored := func(version string) bool {
				t.Helper()
				hash, err := e.hub.GetVersion(ctx, fedName, version)
				if err != nil {
					t.Fatal(err)
				}
				_, err = e.hub.GetModel(ctx, fedName, hash)
				if err != nil && !errors.Is(err, federation.ErrNotFound) {
					t.Fatal(err)
				}
				return err == nil
			}
			want := map[string]bool{"r0": false, "r1": true, "r2": false, "r3": false, "r4": true, "r5": true}
			if reachable {
				servicetest.WaitFor(t, 10*time.Second, "r3 deleted", func() bool { return !stored("r3") })
			} else {
				servicetest.WaitFor(t, 10*time.Second, "a failed deletion", func() bool {
					return h.counter("millwright_federation_delete_errors_total", "what", "model") > 0
				})
				for v := range want {
					want[v] = true
				}
			}
			for v, w := range want {
				if got := stored(v); got != w {
					t.Errorf("%s stored %v, want %v (r1 released, keep_models %d)", v, got, w, keep)
				}
			}
		})
	}
}

// expectKept waits until the model of round rounds − keep is deleted (the hub deletes
// after the last round's report), then checks that exactly the models of the keep latest
// rounds are stored and that every round's version still names its hash; abandoned is a
// round with no model (0: none).
func expectKept(t *testing.T, tr federation.Transport, rounds, keep, abandoned uint64) {
	t.Helper()
	ctx := context.Background()
	stored := func(r uint64) (string, bool) {
		t.Helper()
		v := federation.ModelHeader{Round: r}.Version()
		hash, err := tr.GetVersion(ctx, fedName, v)
		if r == abandoned && r != 0 {
			if !errors.Is(err, federation.ErrNotFound) {
				t.Fatalf("version %s of the abandoned round: %q, %v", v, hash, err)
			}
			return "", false
		}
		if err != nil {
			t.Fatalf("version %s: %v", v, err)
		}
		_, err = tr.GetModel(ctx, fedName, hash)
		if err != nil && !errors.Is(err, federation.ErrNotFound) {
			t.Fatal(err)
		}
		return hash, err == nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, ok := stored(rounds - keep); ok && time.Now().Before(deadline); _, ok = stored(rounds - keep) {
		time.Sleep(10 * time.Millisecond)
	}
	for r := uint64(0); r <= rounds; r++ {
		hash, ok := stored(r)
		if want := r > rounds-keep; ok != want && (r != abandoned || r == 0) {
			t.Errorf("round %d's model %s: stored %v, want %v (keep_models %d)", r, hash, ok, want, keep)
		}
	}
}

// TestHubKeepsTheLatestModelsAcrossARestart: a hub that ran 4 rounds with the default
// keep_models (nothing deleted yet) is restarted with keep_models 2; the new hub continues
// from the cursor the release carries and deletes the whole backlog, round 0 included.
func TestHubKeepsTheLatestModelsAcrossARestart(t *testing.T) {
	const n, dim, rounds, keep = 3, 20, 7, 2
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Rounds = rounds
	h := startHub(t, e.hub, fc)
	for i := range n {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
	}
	for range 4 {
		h.next(t)
	}
	h.stop()
	fc.KeepModels = keep
	h = startHub(t, e.hub, fc)
	for last := uint64(0); last < rounds; {
		rep := h.next(t)
		if rep.Outcome != "aggregated" {
			t.Fatalf("round %d: %s (%s)", rep.Round, rep.Outcome, rep.Reason)
		}
		last = rep.Round
	}
	expectKept(t, e.hub, rounds, keep, 0)
}

func TestFederationConverges(t *testing.T) {
	const n, dim, rounds = 5, 200, 6
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Rounds = rounds
	fc.Codecs = []compress.Codec{{Kind: compress.Int8}}
	h := startHub(t, e.hub, fc)
	var targets [][]float32
	var weights []int
	for i := range n {
		targets = append(targets, target(i, dim))
		weights = append(weights, 100*(i+1))
		e.gateway(t, i, &pullTrainer{target: targets[i], samples: weights[i]})
	}
	var last federation.RoundReport
	for r := 1; r <= rounds; r++ {
		last = h.next(t)
		if last.Outcome != "aggregated" || last.Round != uint64(r) || len(last.Used) != n || len(last.Rejected) != 0 {
			t.Fatalf("round %d: %+v", r, last)
		}
	}
	// An OEM fetches the last model: hash and signature checked.
	g, err := federation.FetchModel(context.Background(), e.hub, fedName, last.Model, hubKey().Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	want := weightedMean(targets, weights)
	start := make([]float32, dim) // the initial model is within ±0.1 of 0
	if d0, d := dist(start, want), dist(g.Params, want); d > 0.02*d0 {
		t.Fatalf("after %d rounds the model is %.4f from the FedAvg optimum (started %.4f away)", rounds, d, d0)
	}
	if h, err := e.gatewayBus(1).GetVersion(context.Background(), fedName, "r6"); err != nil || h != last.Model {
		t.Fatalf("version r6 is %q (%v); want %s", h, err, last.Model)
	}
	if _, err := federation.FetchModel(context.Background(), e.hub, fedName, last.Model, gatewayKey(0).Public().(ed25519.PublicKey)); err == nil {
		t.Fatal("model accepted under a key that is not the hub's")
	}
	// Every round is in the ledger, chained to its parent.
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if len(h.rec.bodies) != rounds {
		t.Fatalf("%d FederatedRound records, want %d", len(h.rec.bodies), rounds)
	}
	b := h.rec.bodies[rounds-1]
	if b.OutputHash != last.Model || b.Output.Version != "r6" || b.Parents[0].Version != "r5" || len(b.InputUpdates) != n || b.Aggregation != "fedavg" {
		t.Fatalf("last record %+v", b)
	}
	if st := roundState(t, e.hub); st.Phase != federation.PhaseFinished {
		t.Fatalf("after the last round the federation is %q", st.Phase)
	}
}

func TestKilledGatewayDoesNotStallRound(t *testing.T) {
	const n, dim = 4, 50
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Quorum = 3
	fc.RoundTimeout = 2 * time.Second
	h := startHub(t, e.hub, fc)
	for i := range n - 1 {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
	}
	stuck := &pullTrainer{target: target(n-1, dim), samples: 10, block: make(chan struct{})}
	_, kill := e.gateway(t, n-1, stuck)
	time.Sleep(200 * time.Millisecond) // it is training when it dies
	kill()
	r := h.next(t)
	if r.Outcome != "aggregated" || !slices.Equal(r.Used, []string{"g0", "g1", "g2"}) {
		t.Fatalf("round 1 with a dead gateway: %+v", r)
	}
}

func TestQuorumNotMetAbandonsRound(t *testing.T) {
	const n, dim = 3, 20
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Quorum = 2
	fc.RoundTimeout = time.Second
	h := startHub(t, e.hub, fc)
	e.gateway(t, 0, &pullTrainer{target: target(0, dim), samples: 10})
	r := h.next(t)
	if r.Outcome != "abandoned" || r.Model != "" {
		t.Fatalf("round 1 with one update of quorum 2: %+v", r)
	}
	st := roundState(t, e.hub)
	if st.Round != 2 || st.GlobalRound != 0 {
		t.Fatalf("after an abandoned round: round %d from global of round %d; want 2 from 0", st.Round, st.GlobalRound)
	}
}

// rounds is the federation's last round, aggregated or abandoned: a federation of one
// round whose round is abandoned has finished.
func TestRoundsCountAbandonedRounds(t *testing.T) {
	const n, dim = 2, 8
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Quorum, fc.Rounds, fc.RoundTimeout = 2, 1, time.Second
	h := startHub(t, e.hub, fc)
	if r := h.next(t); r.Round != 1 || r.Outcome != "abandoned" {
		t.Fatalf("round 1 without updates: %+v", r)
	}
	if st := roundState(t, e.hub); st.Round != 2 || st.Phase != federation.PhaseFinished {
		t.Fatalf("after round 1 of rounds: 1, the state is round %d, phase %s; want 2, finished", st.Round, st.Phase)
	}
}

func TestByzantineContained(t *testing.T) {
	cases := []struct {
		strategy aggregate.Strategy
		robust   bool
	}{
		{aggregate.Strategy{Name: aggregate.FedAvg}, false},
		{aggregate.Strategy{Name: aggregate.TrimmedMean, Trim: 0.3}, true},
		{aggregate.Strategy{Name: aggregate.Median}, true},
		{aggregate.Strategy{Name: aggregate.Krum, Byzantine: 3}, true},
		{aggregate.Strategy{Name: aggregate.MultiKrum, Byzantine: 3}, true},
	}
	// Every rule also under int8: the attackers' updates are quantized like the honest ones
	// (each chunk scaled to its own largest value), which must not hide them from the rule.
	for _, c := range cases {
		for _, codec := range []string{compress.None, compress.Int8} {
			t.Run(c.strategy.Name+"/"+codec, func(t *testing.T) { byzantineContained(t, c.strategy, codec, c.robust) })
		}
	}
}

// byzantineContained runs 3 rounds of 10 gateways, 3 of them attackers, under strategy and
// codec, and checks the final model against the honest gateways' optimum: near it when
// robust, dragged away from it otherwise.
func byzantineContained(t *testing.T, strategy aggregate.Strategy, codec string, robust bool) {
	const n, dim, rounds = 10, 100, 3
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Rounds = rounds
	fc.Strategy = strategy
	fc.Codecs = []compress.Codec{{Kind: codec}}
	h := startHub(t, e.hub, fc)
	var honest [][]float32
	var w []int
	for i := range n {
		tr := &pullTrainer{target: target(i, dim), samples: 100}
		if i < 3 { // 30 % send sign-flipped, 10× scaled updates claiming 5× the samples, and a wild loss
			tr.byzantine, tr.samples = -10, 500
			tr.metrics = func(uint64) map[string]float64 { return map[string]float64{"loss": 1000} }
		} else {
			honest, w = append(honest, tr.target), append(w, 1)
		}
		e.gateway(t, i, tr)
	}
	var last federation.RoundReport
	for range rounds {
		last = h.next(t)
	}
	g, err := federation.FetchModel(context.Background(), e.hub, fedName, last.Model, hubKey().Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	want := weightedMean(honest, w)
	d0 := dist(make([]float32, dim), want)
	d := dist(g.Params, want)
	t.Logf("%s, %s: %.3f from the honest optimum (%.3f at the start); %d update bytes in the last round", strategy.Name, codec, d, d0, last.Bytes)
	if codec == compress.Int8 && last.Bytes >= n*compress.RawBytes(dim) { // the float32 payloads alone
		t.Fatalf("int8 round of %d update bytes; want fewer than float32's %d", last.Bytes, n*compress.RawBytes(dim))
	}
	if robust && d > 0.25*d0 {
		t.Fatalf("%s was not contained: %.3f from the honest optimum, started %.3f", strategy.Name, d, d0)
	}
	if !robust && d < d0 {
		t.Fatalf("fedavg should be dragged away by the attackers; it is %.3f from the optimum (start %.3f)", d, d0)
	}
	// The round's metrics are combined as the updates were: the honest gateways' loss of 0.5
	// under a robust rule, the attackers' 1000 pulling FedAvg's weighted mean.
	if loss := last.Metrics["loss"]; robust && loss != 0.5 || !robust && loss < 100 {
		t.Fatalf("%s: round loss %v; want 0.5 under a robust rule, over 100 under fedavg", strategy.Name, loss)
	}
}

// TestHubReportsRoundMetrics checks the round's metrics under FedAvg: the sample-weighted
// mean of the local metrics of the updates the round used, over the names all of them
// reported, in the round report, on /metrics (where a round's series replace the last
// round's) and in the round's ledger record. (TestByzantineContained checks that robust
// rules keep attackers' metrics out.)
func TestHubReportsRoundMetrics(t *testing.T) {
	const n, dim, rounds = 4, 50, 2
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Rounds = rounds
	h := startHub(t, e.hub, fc)
	gateways := []struct {
		samples int
		metrics map[string]float64
	}{
		{10, map[string]float64{"false_alarm_rate": 0.1, "loss": 1, "only_g0": 5}},
		{30, map[string]float64{"false_alarm_rate": 0.3, "loss": 3}},
		{60, map[string]float64{"false_alarm_rate": 0.2, "loss": 2}},
		{100, map[string]float64{"false_alarm_rate": 0.4, "loss": 4}},
	}
	for i, g := range gateways {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: g.samples, metrics: func(round uint64) map[string]float64 {
			if round == 2 { // only the loss: false_alarm_rate's series goes
				return map[string]float64{"loss": g.metrics["loss"] + 1}
			}
			return g.metrics
		}})
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	gauge := func(metric string) float64 {
		return metrictest.Sum(t, h.reg, "millwright_federation_round_metric", "federation", fedName, "metric", metric)
	}
	r := h.next(t)
	if len(r.Used) != n {
		t.Fatalf("round 1 used %v; want all four gateways (%+v)", r.Used, r)
	}
	// loss (10·1 + 30·3 + 60·2 + 100·4)/200, false alarms (10·0.1 + 30·0.3 + 60·0.2 +
	// 100·0.4)/200; only_g0 is not reported by all four.
	if len(r.Metrics) != 2 || !near(r.Metrics["loss"], 3.1) || !near(r.Metrics["false_alarm_rate"], 0.31) {
		t.Fatalf("round 1 metrics %v; want loss 3.1 and false_alarm_rate 0.31 only", r.Metrics)
	}
	if l, far, all := gauge("loss"), gauge("false_alarm_rate"), metrictest.Sum(t, h.reg, "millwright_federation_round_metric"); !near(l, 3.1) || !near(far, 0.31) || !near(all, 3.41) {
		t.Fatalf("after round 1 the gauge reads loss %v, false_alarm_rate %v, all series %v; want 3.1, 0.31, 3.41", l, far, all)
	}
	r = h.next(t)
	if len(r.Metrics) != 1 || !near(r.Metrics["loss"], 4.1) {
		t.Fatalf("round 2 metrics %v; want loss 4.1 only", r.Metrics)
	}
	if l, all := gauge("loss"), metrictest.Sum(t, h.reg, "millwright_federation_round_metric"); !near(l, 4.1) || !near(all, 4.1) {
		t.Fatalf("after round 2 the gauge reads loss %v, all series %v; want 4.1 and no false_alarm_rate", l, all)
	}
	// The rounds' ledger records carry the same metrics (no DP here).
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if len(h.rec.bodies) != rounds || !maps.Equal(h.rec.bodies[1].Metrics, r.Metrics) || len(h.rec.bodies[0].Metrics) != 2 ||
		!near(h.rec.bodies[0].Metrics["loss"], 3.1) {
		t.Fatalf("FederatedRound records %+v; want round 1's and round 2's metrics", h.rec.bodies)
	}
}

// TestHubRecordsFederatedEvaluation: the gateways' global_ metrics (how the round's input
// model did on their held-out data) are combined as the other metrics are and recorded as
// the evaluation of that model, checked against the federation's acceptance bounds; the
// round's own record keeps the other metrics only. Round 1's input, the seeded initial
// model, gets no evaluation.
func TestHubRecordsFederatedEvaluation(t *testing.T) {
	const n, dim, rounds = 3, 20, 3
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Rounds = rounds
	maxFAR, minDR := 0.2, 0.9
	fc.Acceptance = map[string]federation.Bound{"false_alarm_rate": {Max: &maxFAR}, "detection_rate": {Min: &minDR}}
	h := startHub(t, e.hub, fc)
	samples := []int{10, 30, 60}
	for i := range n {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: samples[i], metrics: func(round uint64) map[string]float64 {
			dr := 0.95
			if round == 3 && i == 2 { // the input model misses faults at the largest factory
				dr = 0.5
			}
			return map[string]float64{"false_alarm_rate": 0.3, "global_false_alarm_rate": 0.1 * float64(i+1), "global_detection_rate": dr}
		}})
	}
	var reports []federation.RoundReport
	for range rounds {
		reports = append(reports, h.next(t))
	}
	if _, ok := reports[1].Metrics["global_detection_rate"]; !ok {
		t.Errorf("round 2's report %v lacks the global metrics", reports[1].Metrics)
	}
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	for i, fr := range h.rec.bodies {
		if len(fr.Metrics) != 1 || fr.Metrics["false_alarm_rate"] != 0.3 {
			t.Errorf("round %d's record metrics %v; want its participants' own metrics only", i+1, fr.Metrics)
		}
	}
	if len(h.rec.evals) != 2 {
		t.Fatalf("%d evaluation records; want 2, of r1 and r2 (r0 is the seeded initial model)", len(h.rec.evals))
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-6 }
	// false alarms (10·0.1 + 30·0.2 + 60·0.3)/100 = 0.25 > 0.2 in both; detection 0.95, then
	// (10·0.95 + 30·0.95 + 60·0.5)/100 = 0.68.
	for i, ev := range h.rec.evals {
		in := reports[i]
		wantDR := []float64{0.95, 0.68}[i]
		if ev.Model != fedName || ev.Version != fmt.Sprintf("r%d", i+1) || ev.ArtifactHash != in.Model ||
			!near(ev.Metrics["false_alarm_rate"], 0.25) || !near(ev.Metrics["detection_rate"], wantDR) || len(ev.Metrics) != 2 {
			t.Errorf("evaluation %d: %+v; want r%d (%s) with false_alarm_rate 0.25, detection_rate %v", i, ev, i+1, in.Model, wantDR)
		}
		if ev.Passed || !strings.Contains(ev.Criteria, fmt.Sprintf("federated evaluation in round %d: each of the 3 participants", i+2)) ||
			!strings.Contains(ev.Criteria, "false_alarm_rate ≤ 0.2 (0.25: failed)") {
			t.Errorf("evaluation %d: passed %v, criteria %q", i, ev.Passed, ev.Criteria)
		}
	}
	if c := h.rec.evals[0].Criteria; !strings.Contains(c, "detection_rate ≥ 0.9;") || strings.Contains(c, "detection_rate ≥ 0.9 (") {
		t.Errorf("r1's detection rate met its bound: %q", c)
	}
	if c := h.rec.evals[1].Criteria; !strings.Contains(c, "detection_rate ≥ 0.9 (0.68: failed)") {
		t.Errorf("r2's detection rate failed its bound: %q", c)
	}
}

func TestHubRestartMidRound(t *testing.T) {
	const n, dim = 3, 30
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	// Two gateways answer round 1 while the first hub runs.
	ps := e.participants(t, dim) // driven by hand with Answer
	st := answerThenStop(t, e, startHub(t, e.hub, fc), ps[:2])
	// The third answers while no hub runs; a new hub picks the round up with all three.
	if err := ps[2].Answer(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	h2 := startHub(t, e.hub, fc)
	r := h2.next(t)
	if r.Round != 1 || r.Outcome != "aggregated" || len(r.Used) != 3 {
		t.Fatalf("round 1 after the restart: %+v", r)
	}
	if st2 := roundState(t, e.hub); st2.Round != 2 || st2.Global != r.Model {
		t.Fatalf("after the restart the state is %+v", st2)
	}
}

// A hub that comes back after the round's deadline does not abandon a round that had its
// quorum: the updates it accepted are in the stream, and the round gets a fresh deadline
// to read them (the one member left may still answer), then closes with them.
func TestHubRestartedPastTheDeadline(t *testing.T) {
	const n, dim = 3, 8
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Quorum, fc.RoundTimeout = 2, 2*time.Second
	st := answerThenStop(t, e, startHub(t, e.hub, fc), e.participants(t, dim)[:2])
	time.Sleep(time.Until(st.Deadline) + 100*time.Millisecond)
	h2 := startHub(t, e.hub, fc)
	if st2 := waitDeadline(t, e.hub, st.Deadline); st2.Round != 1 {
		t.Fatalf("the restarted hub's state: %+v", st2)
	}
	r := h2.next(t)
	if r.Round != 1 || r.Outcome != "aggregated" || !slices.Equal(r.Used, []string{"g0", "g1"}) {
		t.Fatalf("round 1 after a restart past its deadline: %s (%s), used %v; want its two updates aggregated", r.Outcome, r.Reason, r.Used)
	}
}

// answerThenStop has ps answer round 1 while hub h runs, waits until h has accepted their
// updates, stops h and returns the round's state.
func answerThenStop(t *testing.T, e *env, h *hubRun, ps []*federation.Participant) federation.RoundState {
	t.Helper()
	st := waitRound(t, e.hub, 1)
	for _, p := range ps {
		if err := p.Answer(context.Background(), st); err != nil {
			t.Fatal(err)
		}
	}
	for h.counter("millwright_federation_updates_total", "result", "accepted") < float64(len(ps)) {
		time.Sleep(10 * time.Millisecond)
	}
	h.stop()
	return st
}

// waitDeadline returns the round state once its deadline is after than.
func waitDeadline(t *testing.T, tr federation.Transport, than time.Time) federation.RoundState {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if st := roundState(t, tr); st.Deadline.After(than) {
			return st
		}
	}
	t.Fatalf("no round state with a deadline after %v", than)
	return federation.RoundState{}
}
