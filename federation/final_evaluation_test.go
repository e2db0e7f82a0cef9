package federation_test

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/dp"
)

// evalTrainer is a pullTrainer that also judges a global model without training (a
// federation.Evaluator): it reports a false-alarm rate of far over samples windows.
type evalTrainer struct {
	*pullTrainer
	far     float64
	samples int
	judged  chan federation.Task
}

func (e *evalTrainer) Evaluate(_ context.Context, task federation.Task, _ []float32) (federation.Evaluation, error) {
	e.judged <- task
	return federation.Evaluation{Samples: e.samples, Metrics: map[string]float64{"false_alarm_rate": e.far}}, nil
}

// TestHubEvaluatesTheFinalModel runs two rounds and the final evaluation round: the two
// gateways whose trainer can evaluate judge r2 without training and the hub records their
// combined metrics as r2's evaluation; the third gateway sits it out, and a model update
// sent in the evaluation round is refused.
func TestHubEvaluatesTheFinalModel(t *testing.T) {
	const n, dim, rounds = 3, 20, 2
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Rounds, fc.FinalEvaluation, fc.Quorum = rounds, true, 2
	fc.RoundTimeout = 3 * time.Second // the third gateway never answers the final round
	maxFAR := 0.2
	fc.Acceptance = map[string]federation.Bound{"false_alarm_rate": {Max: &maxFAR}}
	h := startHub(t, e.hub, fc)
	judged := make(chan federation.Task, 2)
	for i, far := range []float64{0.1, 0.3} {
		e.gateway(t, i, &evalTrainer{pullTrainer: &pullTrainer{target: target(i, dim), samples: 10}, far: far, samples: 10 * (i + 1), judged: judged})
	}
	e.gateway(t, 2, &pullTrainer{target: target(2, dim), samples: 10}) // a Trainer only
	var reports []federation.RoundReport
	for range rounds {
		r := h.next(t)
		if r.Outcome != "aggregated" {
			t.Fatalf("round %d: %+v", r.Round, r)
		}
		reports = append(reports, r)
	}
	// A model update in the evaluation round (a gateway that missed the phase) is refused.
	st := roundState(t, e.hub)
	if st.Phase != federation.PhaseEvaluate || st.Round != rounds+1 || st.Global != reports[1].Model {
		t.Fatalf("after the last round the state is %+v; want round 3 evaluating r2", st)
	}
	asOpen := st
	asOpen.Phase = federation.PhaseOpen
	if err := e.participants(t, dim)[2].Answer(context.Background(), asOpen); err != nil {
		t.Fatal(err)
	}
	final := h.next(t)
	for range 2 {
		if task := <-judged; task.Round != rounds+1 || task.GlobalRound != rounds {
			t.Errorf("evaluated for %+v; want round 3 judging r2", task)
		}
	}
	if final.Outcome != "evaluated" || final.Round != rounds+1 || final.Model != reports[1].Model || !slices.Equal(final.Used, []string{gwName(0), gwName(1)}) {
		t.Errorf("final round %+v; want evaluated r2 by g0 and g1", final)
	}
	if len(final.Rejected) != 1 || final.Rejected[0].Participant != gwName(2) || final.Rejected[0].Reason != federation.RejectBadPayload {
		t.Errorf("final round's rejections %+v; want g2's model update refused", final.Rejected)
	}
	if st := roundState(t, e.hub); st.Phase != federation.PhaseFinished || st.Round != rounds+1 {
		t.Errorf("after the final evaluation the state is %+v; want round 3 finished", st)
	}
	// The training rounds report no global_ metrics here, so the only evaluation is the
	// final round's, of r2: (10·0.1 + 20·0.3)/30.
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if len(h.rec.bodies) != rounds || len(h.rec.evals) != 1 {
		t.Fatalf("%d round and %d evaluation records; want 2 and 1 (of r2)", len(h.rec.bodies), len(h.rec.evals))
	}
	ev := h.rec.evals[0]
	if ev.Version != "r2" || ev.ArtifactHash != reports[1].Model || math.Abs(ev.Metrics["false_alarm_rate"]-7.0/30) > 1e-6 || len(ev.Metrics) != 1 {
		t.Errorf("final evaluation of %s (%s), metrics %v; want r2 (%s) with false_alarm_rate %v", ev.ModelRef, ev.ArtifactHash, ev.Metrics, reports[1].Model, 7.0/30)
	}
	if ev.Passed || !strings.Contains(ev.Criteria, "round 3: each of the 2 participants") || !strings.Contains(ev.Criteria, "final evaluation round, without training") ||
		!strings.Contains(ev.Criteria, "false_alarm_rate ≤ 0.2 (0.233") {
		t.Errorf("final evaluation passed %v, criteria %q", ev.Passed, ev.Criteria)
	}
	// The receipts (written just after the round's report): used for the evaluators,
	// rejected for the update sent in the clear.
	for i, want := range []string{federation.ReceiptUsed, federation.ReceiptUsed, federation.ReceiptRejected} {
		if r := receipt(t, e.gatewayBus(i), gwName(i), rounds+1); r.Outcome != want {
			t.Errorf("%s's receipt %+v; want round 3 %s", gwName(i), r, want)
		}
	}
}

// TestSecAggFinalEvaluation: with secure aggregation the final round masks only each
// gateway's weight and secagg.metrics; the hub learns the weighted mean of the global_
// metrics, records it as r1's evaluation, and no model is aggregated.
func TestSecAggFinalEvaluation(t *testing.T) {
	const n, dim = 3, 32
	e := newEnv(t, n, false)
	fc := secaggConfig(n, dim)
	fc.FinalEvaluation = true
	fc.SecAgg.SampleCap = 30
	fc.SecAgg.Metrics = []string{"false_alarm_rate", federation.GlobalMetricPrefix + "false_alarm_rate"}
	h := startHub(t, e.hub, fc)
	judged := make(chan federation.Task, n)
	samples, far := []int{10, 20, 60}, []float64{0.1, 0.2, 0.4} // weights 1/3, 2/3, 1
	for i := range n {
		e.gateway(t, i, &evalTrainer{pullTrainer: &pullTrainer{target: target(i, dim), samples: 10}, far: far[i], samples: samples[i], judged: judged})
	}
	r1 := h.next(t)
	if r1.Outcome != "aggregated" || len(r1.Used) != n {
		t.Fatalf("round 1: %+v", r1)
	}
	final := h.next(t)
	for range n {
		if task := <-judged; task.Round != 2 || task.GlobalRound != 1 {
			t.Errorf("evaluated for %+v; want round 2 judging r1", task)
		}
	}
	want := (0.1/3 + 0.2*2/3 + 0.4) / 2
	if final.Outcome != "evaluated" || final.Model != r1.Model || len(final.Used) != n || len(final.Metrics) != 1 ||
		math.Abs(final.Metrics[federation.GlobalMetricPrefix+"false_alarm_rate"]-want) > 1e-3 {
		t.Fatalf("final round %+v; want r1 evaluated by all, global_false_alarm_rate %v", final, want)
	}
	if st := roundState(t, e.hub); st.Phase != federation.PhaseFinished || st.Round != 2 || st.SecAgg != nil {
		t.Errorf("after the final evaluation the state is %+v; want round 2 finished", st)
	}
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if len(h.rec.bodies) != 1 || len(h.rec.evals) != 1 {
		t.Fatalf("%d round and %d evaluation records; want 1 and 1", len(h.rec.bodies), len(h.rec.evals))
	}
	if ev := h.rec.evals[0]; ev.Version != "r1" || ev.ArtifactHash != r1.Model || math.Abs(ev.Metrics["false_alarm_rate"]-want) > 1e-3 ||
		!strings.Contains(ev.Criteria, "learned under secure aggregation") {
		t.Errorf("evaluation %+v; want r1 with false_alarm_rate %v under secure aggregation", ev, want)
	}
	// Only the round's messages, 5 phases × n gateways per round: no plain evaluation.
	if got := h.counter("millwright_federation_updates_total", "result", "accepted"); got != float64(2*5*n) {
		t.Errorf("%v messages accepted; want %d", got, 2*5*n)
	}
}

func TestFinalEvaluationConfig(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*federation.FederationConfig)
		want   string
	}{
		{"no last round", func(c *federation.FederationConfig) { c.Rounds = 0 }, "final_evaluation: needs a last round"},
		{"dp", func(c *federation.FederationConfig) { c.DP.Enabled, c.DP.EpsilonLimit = true, 10 }, ""},
		{"dp and secagg", func(c *federation.FederationConfig) {
			c.DP.Enabled, c.DP.EpsilonLimit, c.SecAgg.Enabled, c.SecAgg.Metrics = true, 10, true, []string{"global_false_alarm_rate"}
		}, ""},
		{"dp and secagg, a metric bound beyond the mask's range", func(c *federation.FederationConfig) {
			c.DP.Enabled, c.DP.EpsilonLimit, c.DP.MetricBound, c.SecAgg.Enabled, c.SecAgg.Metrics = true, 10, 20, true, []string{"global_false_alarm_rate"}
		}, "dp.metric_bound: 20 exceeds secagg.range 8, which the masked metrics are clipped to; expected at most 8"},
		{"secagg without global metrics", func(c *federation.FederationConfig) {
			c.SecAgg.Enabled, c.SecAgg.Metrics = true, []string{"false_alarm_rate"}
		}, `final_evaluation: with secagg, secagg.metrics ["false_alarm_rate"] names no global_ metric`},
		{"secagg", func(c *federation.FederationConfig) {
			c.SecAgg.Enabled, c.SecAgg.Metrics = true, []string{"global_false_alarm_rate"}
		}, ""},
		{"valid", func(*federation.FederationConfig) {}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := fedConfig(3, 10)
			fc.Rounds, fc.FinalEvaluation = 2, true
			tc.change(&fc)
			fc.SetDefaults()
			err := fc.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate() = %v; want %q", err, tc.want)
			}
		})
	}
}

// TestPrivateFinalEvaluation: with DP the final evaluation round spends a round of the
// privacy budget and the hub records the noised mean of the clipped metrics, saying how
// they were noised; a budget that affords the training rounds but not the evaluation ends
// the federation without recording one.
func TestPrivateFinalEvaluation(t *testing.T) {
	const n, dim, rounds = 2, 20, 2
	dpc := dp.Config{Enabled: true, ClipNorm: 1, NoiseMultiplier: 2, Noise: dp.NoiseCentral}
	dpc.SetDefaults()
	epsAfter := func(steps int) float64 { // the cumulative ε after steps rounds
		dpc.EpsilonLimit = 1e9
		b, err := dp.NewBudget(dpc)
		if err != nil {
			t.Fatal(err)
		}
		var r dp.Report
		for range steps {
			if r, err = b.Spend(); err != nil {
				t.Fatal(err)
			}
		}
		return r.Epsilon
	}
	for _, tc := range []struct {
		name  string
		limit float64
	}{
		{"budget for the evaluation", epsAfter(rounds+1) + 0.01},
		{"budget for the rounds only", (epsAfter(rounds) + epsAfter(rounds+1)) / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, n, false)
			fc := fedConfig(n, dim)
			fc.Rounds, fc.FinalEvaluation = rounds, true
			fc.DP = dpc
			fc.DP.EpsilonLimit = tc.limit
			h := startHub(t, e.hub, fc)
			judged := make(chan federation.Task, n)
			for i, far := range []float64{0.1, 0.3} {
				e.gateway(t, i, &evalTrainer{pullTrainer: &pullTrainer{target: target(i, dim), samples: 10}, far: far, samples: 10, judged: judged})
			}
			var last federation.RoundReport
			for range rounds {
				if last = h.next(t); last.Outcome != "aggregated" || last.Privacy == nil {
					t.Fatalf("round %d: %+v", last.Round, last)
				}
			}
			final := h.next(t)
			h.rec.mu.Lock()
			defer h.rec.mu.Unlock()
			if tc.name == "budget for the rounds only" {
				if final.Outcome != "budget_exhausted" || len(h.rec.evals) != 0 {
					t.Fatalf("final round %+v, %d evaluation records; want the budget exhausted and none", final, len(h.rec.evals))
				}
				return
			}
			if final.Outcome != "evaluated" || final.Privacy == nil || final.Privacy.Round != rounds+1 || final.Privacy.Epsilon <= last.Privacy.Epsilon ||
				final.Privacy.Epsilon > tc.limit {
				t.Fatalf("final round %+v, privacy %+v; want evaluated, a third round of privacy spent (after %+v)", final, final.Privacy, last.Privacy)
			}
			if len(h.rec.evals) != 1 {
				t.Fatalf("%d evaluation records; want the final one (the training rounds' metrics carry no noise)", len(h.rec.evals))
			}
			ev := h.rec.evals[0]
			far, ok := ev.Metrics["false_alarm_rate"]
			if ev.Version != "r2" || !ok || len(ev.Metrics) != 1 || far < 0 || far > 1 || far != final.Metrics["global_false_alarm_rate"] {
				t.Errorf("evaluation of %s, metrics %v (the round's report %v); want r2's false_alarm_rate in [0, 1]", ev.ModelRef, ev.Metrics, final.Metrics)
			}
			t.Logf("criteria: %s", ev.Criteria)
			// σ·bound·√m/k = 2·1·1/2.
			if want := "with client-level differential privacy: each value clipped into [0, 1], Gaussian noise of standard deviation 1 on the mean"; !strings.Contains(ev.Criteria, want) {
				t.Errorf("criteria %q lack %q", ev.Criteria, want)
			}
		})
	}
}

// TestPrivateSecAggFinalEvaluation: with DP and secure aggregation, the training rounds
// mask no metrics (their sums would carry no noise); the final evaluation round masks the
// global_ metrics clipped into [0, metric_bound] and noised, by the hub (central) or by
// each gateway's share (distributed), spends a round of the privacy budget, and the hub
// records their mean, saying how it was noised. One gateway's rate of 1.7 is clipped to 1.
func TestPrivateSecAggFinalEvaluation(t *testing.T) {
	const n, dim, rounds = 3, 16, 2
	far := []float64{0.1, 0.2, 1.7}
	clipped := (0.1 + 0.2 + 1) / 3
	for _, mode := range []string{dp.NoiseCentral, dp.NoiseDistributed} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, n, false)
			fc := secaggConfig(n, dim)
			fc.Rounds, fc.FinalEvaluation = rounds, true
			fc.SecAgg.Metrics = []string{federation.GlobalMetricPrefix + "false_alarm_rate"}
			// σ = 0.03: the noise on the mean of 3 is 0.01, small enough to tell the clipped
			// mean (0.433) from the unclipped (0.667).
			fc.DP = dp.Config{Enabled: true, ClipNorm: 1, NoiseMultiplier: 0.03, Noise: mode, EpsilonLimit: 1e9}
			h := startHub(t, e.hub, fc)
			judged := make(chan federation.Task, n)
			for i := range n {
				e.gateway(t, i, &evalTrainer{pullTrainer: &pullTrainer{target: target(i, dim), samples: 10}, far: far[i], samples: 10, judged: judged})
			}
			var last federation.RoundReport
			for r := range rounds {
				if last = h.next(t); last.Outcome != "aggregated" || last.Privacy == nil || last.Metrics != nil {
					t.Fatalf("round %d: %+v; want aggregated with privacy spent and no metrics", r+1, last)
				}
			}
			final := h.next(t)
			got := final.Metrics[federation.GlobalMetricPrefix+"false_alarm_rate"]
			if final.Outcome != "evaluated" || final.Privacy == nil || final.Privacy.Round != rounds+1 || final.Privacy.Epsilon <= last.Privacy.Epsilon {
				t.Fatalf("final round %+v, privacy %+v; want evaluated, a third round of privacy spent (after %+v)", final, final.Privacy, last.Privacy)
			}
			if got < 0 || got > 1 || math.Abs(got-clipped) > 0.06 {
				t.Errorf("global_false_alarm_rate %v; want the clipped mean %.3f within 6σ of its noise (σ 0.01)", got, clipped)
			}
			h.rec.mu.Lock()
			defer h.rec.mu.Unlock()
			if len(h.rec.evals) != 1 {
				t.Fatalf("%d evaluation records; want the final one", len(h.rec.evals))
			}
			ev := h.rec.evals[0]
			by := map[string]string{dp.NoiseCentral: "the hub's", dp.NoiseDistributed: "the gateways' shares"}[mode]
			want := "their mean, learned under secure aggregation, with client-level differential privacy: each value clipped into [0, 1], Gaussian noise (" +
				by + ") of standard deviation 0.01 on the mean"
			if ev.Version != "r2" || ev.Metrics["false_alarm_rate"] != got || !strings.Contains(ev.Criteria, want) {
				t.Errorf("evaluation of %s, metrics %v, criteria %q; want r2's false_alarm_rate %v and %q", ev.ModelRef, ev.Metrics, ev.Criteria, got, want)
			}
		})
	}
}

// TestPrivateSecAggFinalEvaluationAcrossARestart: the hub dies while the final evaluation
// round with DP and secure aggregation unmasks, after one gateway's answer; the restarted
// hub rebuilds the round (its metric bound and noise included) and records the noised
// mean once.
func TestPrivateSecAggFinalEvaluationAcrossARestart(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	fc := secaggConfig(n, dim)
	fc.FinalEvaluation = true
	fc.SecAgg.Metrics = []string{federation.GlobalMetricPrefix + "false_alarm_rate"}
	fc.DP = dp.Config{Enabled: true, ClipNorm: 1, NoiseMultiplier: 0.03, Noise: dp.NoiseDistributed, EpsilonLimit: 1e9}
	h := startHub(t, e.hub, fc)
	far := []float64{0.1, 0.2, 0.6}
	judged := make(chan federation.Task, 2*n)
	ps := make([]*federation.Participant, n)
	for i := range n {
		ps[i] = gatewayOver(t, i, e.gatewayBus(i), &evalTrainer{pullTrainer: &pullTrainer{target: target(i, dim), samples: 10}, far: far[i], samples: 10, judged: judged})
	}
	phases := []string{federation.SecAggAdvertise, federation.SecAggShare, federation.SecAggMask, federation.SecAggCheck, federation.SecAggUnmask}
	for _, phase := range phases { // round 1 trains
		answer(t, ps, waitPhase(t, e.hub, phase))
	}
	if r := h.next(t); r.Outcome != "aggregated" || r.Metrics != nil {
		t.Fatalf("round 1: %+v; want aggregated without metrics", r)
	}
	for k, phase := range phases { // round 2 evaluates
		st := waitPhase(t, e.hub, phase)
		if st.Round != 2 || st.Phase != federation.PhaseEvaluate || st.SecAgg.MetricBound != 1 || st.SecAgg.MetricNoise == 0 {
			t.Fatalf("round %d %s, metric bound %v and noise %v; want round 2 evaluating with both", st.Round, st.Phase, st.SecAgg.MetricBound, st.SecAgg.MetricNoise)
		}
		if phase != federation.SecAggUnmask {
			answer(t, ps, st)
			continue
		}
		answer(t, ps, st, 0)
		waitAccepted(t, h, float64(5*n+k*n+1))
		h.stop()
		answer(t, ps, st, 1, 2)
		h = startHub(t, e.hub, fc)
	}
	final := h.next(t)
	want := (0.1 + 0.2 + 0.6) / 3
	got := final.Metrics[federation.GlobalMetricPrefix+"false_alarm_rate"]
	if final.Outcome != "evaluated" || final.Privacy == nil || math.Abs(got-want) > 0.06 {
		t.Fatalf("after the restart: %+v; want evaluated, privacy spent, global_false_alarm_rate near %.2f", final, want)
	}
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if len(h.rec.evals) != 1 || h.rec.evals[0].Metrics["false_alarm_rate"] != got {
		t.Fatalf("the restarted hub's evaluation records %+v; want one with %v", h.rec.evals, got)
	}
}
