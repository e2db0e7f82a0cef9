package federation_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/federation/secagg"
	"github.com/millwright-io/millwright/models"
)

// roundTrainer sends delta(round) as its update (nil: zero).
type roundTrainer struct {
	delta func(round uint64, dim int) []float32
}

func (r roundTrainer) Train(_ context.Context, task federation.Task, global []float32) (federation.TrainResult, error) {
	out := append([]float32(nil), global...)
	if d := r.delta(task.Round, len(global)); d != nil {
		for i := range out {
			out[i] += d[i]
		}
	}
	return federation.TrainResult{Params: out, Samples: 10, Metrics: map[string]float64{"loss": 0.5}}, nil
}

// paramsOf returns the parameters of the model stored under hash, or of version v
// ("rN") when hash is empty.
func paramsOf(t *testing.T, tr federation.Transport, hash, v string) []float32 {
	t.Helper()
	if hash == "" {
		var err error
		if hash, err = tr.GetVersion(context.Background(), fedName, v); err != nil {
			t.Fatal(err)
		}
	}
	g, err := federation.FetchModel(context.Background(), tr, fedName, hash, hubKey().Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return g.Params
}

// TestDPNoisesTheStepBeforeMomentum: with central DP and server momentum the noise goes on
// the round's mean before the momentum takes it, so the momentum carries noised means
// only. Round 1's updates are a known signal, round 2's are zero: round 2's model step
// minus β times round 1's is then round 2's fresh noise alone, uncorrelated with round 1's.
// Were the noise added to the model after the momentum step, that difference would hold
// β times round 1's noise taken away (correlation about -β/√(1+β²), -0.67): the momentum
// would carry round 1's un-noised mean into round 2's model, paid for by neither round.
func TestDPNoisesTheStepBeforeMomentum(t *testing.T) {
	const n, dim, beta = 3, 4096, 0.9
	signal := func(round uint64, dim int) []float32 {
		if round != 1 {
			return nil
		}
		v := make([]float32, dim)
		for j := range v {
			v[j] = float32(0.01 * math.Sin(float64(j)))
		}
		return v
	}
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Rounds = 2
	fc.Strategy = aggregate.Strategy{Name: aggregate.FedAvg, ServerMomentum: beta}
	fc.DP = dp.Config{Enabled: true, ClipNorm: 1, NoiseMultiplier: 1, EpsilonLimit: 1e6}
	h := startHub(t, e.hub, fc)
	for i := range n {
		e.gateway(t, i, roundTrainer{delta: signal})
	}
	r1, r2 := h.next(t), h.next(t)
	if r1.Outcome != "aggregated" || r2.Outcome != "aggregated" || r1.Privacy == nil || r2.Privacy == nil {
		t.Fatalf("rounds: %+v %+v", r1, r2)
	}
	g0, g1, g2 := paramsOf(t, e.hub, "", "r0"), paramsOf(t, e.hub, r1.Model, ""), paramsOf(t, e.hub, r2.Model, "")
	m1 := signal(1, dim)
	var szr, szz, srr float64
	for j := range dim {
		y1, y2 := float64(g1[j]-g0[j]), float64(g2[j]-g1[j])
		z1 := y1 - float64(m1[j]) // round 1's noise
		r := y2 - beta*y1         // round 2's step beyond what the momentum carries
		szr += z1 * r
		szz += z1 * z1
		srr += r * r
	}
	if corr := szr / math.Sqrt(szz*srr); math.Abs(corr) > 0.1 { // one standard deviation of independent draws: 0.016
		t.Errorf("round 2's noise is correlated %.3f with round 1's: the momentum carried round 1's un-noised mean", corr)
	}
}

// TestSecAggServerOptimizers: under secure aggregation the server optimizer steps on the
// unmasked mean as it does on the mean of plain updates: FedAdam and server momentum give
// the model they give without secure aggregation (but for its fixed-point rounding).
func TestSecAggServerOptimizers(t *testing.T) {
	const n, dim, rounds = 3, 32, 3
	arch := models.Architecture{Kind: "linear", Version: 1, Inputs: dim, Params: dim}
	for _, s := range []aggregate.Strategy{
		{Name: aggregate.FedAdam, ServerLR: 0.1, Adam: aggregate.AdamConfig{Beta1: 0.9, Beta2: 0.99, Tau: 1e-3}},
		{Name: aggregate.FedAvg, ServerLR: 1, ServerMomentum: 0.5},
	} {
		t.Run(s.Name, func(t *testing.T) {
			trainers := func() []federation.Trainer {
				out := make([]federation.Trainer, n)
				for i := range out {
					out[i] = &pullTrainer{target: target(i, dim), samples: 10}
				}
				return out
			}
			plain, _ := runFederationWith(t, arch, s, 1, 0.1, rounds, trainers(), nil)
			masked, reports := runFederationWith(t, arch, s, 1, 0.1, rounds, trainers(), func(fc *federation.FederationConfig) {
				fc.SecAgg = secagg.Config{Enabled: true}
			})
			if reports[rounds-1].Outcome != "aggregated" {
				t.Fatalf("last round with secure aggregation: %+v", reports[rounds-1])
			}
			var plainStep float64
			for j := range plain {
				plainStep = max(plainStep, math.Abs(float64(plain[j])))
				if d := math.Abs(float64(plain[j] - masked[j])); d > 1e-3 {
					t.Fatalf("parameter %d: %v with secure aggregation, %v without", j, masked[j], plain[j])
				}
			}
			if plainStep < 0.1 {
				t.Fatalf("the models moved at most %v: the comparison says nothing", plainStep)
			}
		})
	}
}

// TestDistributedDPNeverUnmasksBelowQuorum: quorum 4 of 4 gateways, secure aggregation's
// threshold 3, distributed noise (each share sized for 4). One gateway drops after sharing
// its keys: the round is abandoned for its quorum before anyone is asked to unmask. Three
// survivors' sum would carry σC·√(3/4) of noise, less than the round paid for, and a round
// abandoned after the hub learned it would have paid nothing.
func TestDistributedDPNeverUnmasksBelowQuorum(t *testing.T) {
	const n, dim = 4, 64
	e := newEnv(t, n, false)
	fc := secaggConfig(n, dim)
	fc.Quorum, fc.RoundTimeout = n, 2*time.Second
	fc.DP = dp.Config{Enabled: true, ClipNorm: 1, NoiseMultiplier: 1, Noise: dp.NoiseDistributed, EpsilonLimit: 100}
	log := logRound(t, e.hub, 1)
	h := startHub(t, e.hub, fc)
	for i := range n - 1 {
		e.gateway(t, i, stillTrainer{})
	}
	dying := e.participants(t, dim)[n-1]
	for _, phase := range []string{federation.SecAggAdvertise, federation.SecAggShare} {
		if err := dying.Answer(context.Background(), waitPhase(t, e.hub, phase)); err != nil {
			t.Fatal(err)
		}
	}
	r := h.next(t)
	if r.Outcome != "abandoned" || r.Reason != federation.SecAggFailQuorum {
		t.Fatalf("round 1: %+v; want abandoned for its quorum", r)
	}
	// The log reads the round's messages as they are stored, a moment after: a second is
	// plenty for any that were sent before the round closed.
	unmask := func(m secagg.Message) bool { _, ok := m.(*secagg.UnmaskResponse); return ok }
	if got := log.count(unmask, time.Second); got != 0 {
		t.Errorf("%d gateways sent their unmasking shares in a round abandoned for its quorum; want none asked", got)
	}
	if _, err := e.hub.GetBlob(context.Background(), fedName, "privacy"); !errors.Is(err, federation.ErrNotFound) {
		t.Errorf("privacy spent on a round that released nothing: %v", err)
	}
}

// TestSecAggRoundResumedUnderAnotherDP: a round with secure aggregation opened under one DP
// configuration and resumed by a hub restarted under another is abandoned: the gateways
// clip and noise as the round state told them, the hub would noise and charge as its new
// configuration says, and the model would carry less noise than it paid for (central
// noise turned distributed: nobody adds any) or come from updates nobody clipped (DP
// turned on).
func TestSecAggRoundResumedUnderAnotherDP(t *testing.T) {
	const n, dim = 3, 256
	central := dp.Config{Enabled: true, ClipNorm: 1, NoiseMultiplier: 1, Noise: dp.NoiseCentral, EpsilonLimit: 100}
	distributed := central
	distributed.Noise = dp.NoiseDistributed
	lower := central
	lower.ClipNorm = 0.5
	for _, tc := range []struct {
		name          string
		before, after dp.Config
	}{
		{"central to distributed", central, distributed},
		{"distributed to central", distributed, central},
		{"dp turned on", dp.Config{}, central},
		{"clip norm lowered", central, lower},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, n, false)
			fc := secaggConfig(n, dim)
			fc.Rounds, fc.DP = 2, tc.before
			h := startHub(t, e.hub, fc)
			if st := waitPhase(t, e.hub, federation.SecAggAdvertise); st.Round != 1 {
				t.Fatalf("round %d", st.Round)
			}
			h.stop()
			fc.DP = tc.after
			h = startHub(t, e.hub, fc)
			for i := range n {
				e.gateway(t, i, stillTrainer{})
			}
			if r := h.next(t); r.Outcome != "abandoned" || r.Reason != federation.SecAggFailResume {
				t.Errorf("round 1 resumed under another DP configuration: %s (%s); want abandoned (%s)", r.Outcome, r.Reason, federation.SecAggFailResume)
			}
			if r := h.next(t); r.Outcome != "aggregated" {
				t.Errorf("round 2, opened under the new configuration: %+v", r)
			}
		})
	}
}

// metricsJudge judges the final model with metrics of its own.
type metricsJudge struct {
	stillTrainer
	metrics map[string]float64
}

func (p metricsJudge) Evaluate(context.Context, federation.Task, []float32) (federation.Evaluation, error) {
	return federation.Evaluation{Samples: 10, Metrics: p.metrics}, nil
}

// TestDistributedDPChargesMetricsSomeLacked: distributed DP under secure aggregation, a
// final evaluation of global_recall, which only g0 reports. The hub unmasks its sum (g0's
// clipped recall and every survivor's noise share: a gateway without the metric still adds
// its share) and leaves the metric out as incomplete, and pays for the round all the same.
func TestDistributedDPChargesMetricsSomeLacked(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	fc := secaggConfig(n, dim)
	fc.Rounds, fc.FinalEvaluation = 1, true
	fc.SecAgg.Metrics = []string{federation.GlobalMetricPrefix + "recall"}
	fc.DP = dp.Config{Enabled: true, ClipNorm: 1, NoiseMultiplier: 1, Noise: dp.NoiseDistributed, EpsilonLimit: 100}
	h := startHub(t, e.hub, fc)
	for i := range n {
		m := map[string]float64{"false_alarm_rate": 0.1} // not masked
		if i == 0 {
			m["recall"] = 0.9
		}
		e.gateway(t, i, metricsJudge{metrics: m})
	}
	r1 := h.next(t)
	if r1.Outcome != "aggregated" || r1.Privacy == nil {
		t.Fatalf("round 1: %+v", r1)
	}
	final := h.next(t)
	if final.Outcome != "evaluated" {
		t.Fatalf("final round: %+v", final)
	}
	if final.Privacy == nil || final.Privacy.Round != 2 || !(final.Privacy.Epsilon > r1.Privacy.Epsilon) {
		t.Errorf("the final evaluation unmasked a sum and spent %+v (round 1 had spent ε %.3g); want a second round paid for", final.Privacy, r1.Privacy.Epsilon)
	}
	if _, ok := final.Metrics[federation.GlobalMetricPrefix+"recall"]; ok {
		t.Errorf("metrics %v: want the recall only one gateway had left out", final.Metrics)
	}
}

// count returns how many logged messages match, once one has or wait has passed.
func (l *roundLog) count(match func(secagg.Message) bool, wait time.Duration) int {
	for deadline := time.Now().Add(wait); ; time.Sleep(10 * time.Millisecond) {
		n := 0
		l.mu.Lock()
		for _, ms := range l.msgs {
			for _, m := range ms {
				if match(m) {
					n++
				}
			}
		}
		l.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			return n
		}
	}
}
