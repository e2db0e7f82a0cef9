package federation_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math"
	"testing"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/federation/secagg"
)

// TestPrivacyBudgetStopsFederation: with σ = 2 one round costs ε ≈ 2.2 at δ = 1e-5, so a
// limit of 3 allows one round; the hub then refuses the next and the federation stops.
func TestPrivacyBudgetStopsFederation(t *testing.T) {
	for _, mode := range []string{dp.NoiseCentral, dp.NoiseDistributed} {
		t.Run(mode, func(t *testing.T) {
			const n, dim = 3, 32
			e := newEnv(t, n, false)
			fc := fedConfig(n, dim)
			fc.DP = dp.Config{Enabled: true, ClipNorm: 1, NoiseMultiplier: 2, Noise: mode, EpsilonLimit: 3}
			if mode == dp.NoiseDistributed {
				fc.SecAgg = secagg.Config{Enabled: true}
			}
			h := startHub(t, e.hub, fc)
			for i := range n {
				e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
			}
			r := h.next(t)
			eps := 0.0
			if r.Privacy != nil {
				eps = r.Privacy.Epsilon
			}
			if r.Outcome != "aggregated" || r.Privacy == nil || r.Privacy.Epsilon < 1.5 || r.Privacy.Epsilon > 3 {
				t.Fatalf("round 1: %+v privacy %+v", r, r.Privacy)
			}
			r1Metrics := r.Metrics
			// The round the budget cannot pay for targets nobody: no gateway trains for it
			// while the hub ends the federation.
			if r = h.next(t); r.Outcome != "budget_exhausted" || len(r.Targets) != 0 {
				t.Fatalf("round 2: %+v", r)
			}
			if st := roundState(t, e.hub); st.Phase != federation.PhaseBudgetExhausted {
				t.Fatalf("state %q", st.Phase)
			}
			h.rec.mu.Lock()
			defer h.rec.mu.Unlock()
			if len(h.rec.bodies) != 1 || h.rec.bodies[0].DP == nil || h.rec.bodies[0].DP.Epsilon != eps {
				t.Fatalf("ledger: %+v", h.rec.bodies)
			}
			// The gateways' metrics (a loss each, reported to the hub in the clear without
			// secure aggregation) carry no noise: they stay at the hub.
			if m := h.rec.bodies[0].Metrics; m != nil || mode == dp.NoiseCentral && r1Metrics["loss"] != 0.5 {
				t.Fatalf("a round with DP recorded metrics %v (the hub's report: %v)", m, r1Metrics)
			}
		})
	}
}

// TestDistributedNoiseSizedForTheFewestSurvivors: with distributed noise each gateway's
// share is sized for the fewest survivors whose sum the hub may release (here 3 of 4: the
// quorum and the secagg threshold), so a round that loses a gateway down to them still
// carries the whole noise σC on the sum, and one that all 4 survive carries √(4/3) of it
// and is charged for that, less than at σ. The gateways send zero updates, so what a
// round adds to the model is the noise alone, whose spread over 4096 coordinates is
// measured.
func TestDistributedNoiseSizedForTheFewestSurvivors(t *testing.T) {
	const n, dim, sigma = 4, 4096, 0.2
	for _, survivors := range []int{n, n - 1} {
		t.Run(fmt.Sprintf("survivors=%d", survivors), func(t *testing.T) {
			e := newEnv(t, n, false)
			fc := dropoutConfig(n, dim) // quorum 3; the threshold ⌈0.67·4⌉ is 3 too
			fc.DP = dp.Config{Enabled: true, ClipNorm: 1, NoiseMultiplier: sigma, Noise: dp.NoiseDistributed, EpsilonLimit: 1e9}
			h := startHub(t, e.hub, fc)
			// Read before any gateway runs: four of them end the phase at once.
			st := waitPhase(t, e.hub, federation.SecAggAdvertise)
			if want := sigma / math.Sqrt(3); math.Abs(st.Noise-want) > 1e-12 {
				t.Fatalf("each gateway's share of the noise is %v, want σC/√3 = %v", st.Noise, want)
			}
			for i := range survivors {
				e.gateway(t, i, stillTrainer{})
			}
			if survivors < n { // the last gateway shares its keys and dies
				dying := e.participants(t, dim)[n-1]
				for _, phase := range []string{federation.SecAggAdvertise, federation.SecAggShare} {
					if err := dying.Answer(context.Background(), waitPhase(t, e.hub, phase)); err != nil {
						t.Fatal(err)
					}
				}
			}
			r := h.next(t)
			if r.Outcome != "aggregated" || len(r.Used) != survivors || r.Privacy == nil {
				t.Fatalf("round 1: %+v", r)
			}

			// The noise on the mean: the survivors' shares, σ/√3 each, over their number.
			ctx, key := context.Background(), hubKey().Public().(ed25519.PublicKey)
			h0, err := e.hub.GetVersion(ctx, fedName, "r0")
			if err != nil {
				t.Fatal(err)
			}
			g0, err := federation.FetchModel(ctx, e.hub, fedName, h0, key)
			if err != nil {
				t.Fatal(err)
			}
			g1, err := federation.FetchModel(ctx, e.hub, fedName, r.Model, key)
			if err != nil {
				t.Fatal(err)
			}
			var ss float64
			for j := range dim {
				d := float64(g1.Params[j] - g0.Params[j])
				ss += d * d
			}
			s := float64(survivors)
			got, want := math.Sqrt(ss/dim), st.Noise*math.Sqrt(s)/s
			if math.Abs(got/want-1) > 0.06 { // the spread of 4096 draws is within 1.1 % (1σ)
				t.Errorf("the noise on the mean has standard deviation %.4f, want %.4f", got, want)
			}
			if whole := sigma / s; got < 0.94*whole {
				t.Errorf("the noise on the mean (%.4f) is short of the whole, σC/%d = %.4f", got, survivors, whole)
			}

			// Charged for the noise the sum carried: σ√(survivors/3).
			cfg := fc.DP
			cfg.SetDefaults() // as the hub does
			charged := func(z float64) float64 {
				b, err := dp.NewBudget(cfg)
				if err != nil {
					t.Fatal(err)
				}
				rep, err := b.SpendAt(z)
				if err != nil {
					t.Fatal(err)
				}
				return rep.RoundEpsilon
			}
			if want := charged(sigma * math.Sqrt(s/3)); math.Abs(r.Privacy.RoundEpsilon-want) > 1e-9 {
				t.Errorf("the round cost ε %v, want %v (σ√(%d/3))", r.Privacy.RoundEpsilon, want, survivors)
			}
			if atSigma := charged(sigma); survivors == n && !(r.Privacy.RoundEpsilon < atSigma) {
				t.Errorf("a round with more noise than σC cost ε %v, not less than %v", r.Privacy.RoundEpsilon, atSigma)
			}
		})
	}
}

// stillTrainer sends the model back unchanged: its update is zero.
type stillTrainer struct{}

func (stillTrainer) Train(_ context.Context, _ federation.Task, global []float32) (federation.TrainResult, error) {
	return federation.TrainResult{Params: global, Samples: 10, Metrics: map[string]float64{"loss": 0.5}}, nil
}
