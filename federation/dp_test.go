package federation_test

import (
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
			if r = h.next(t); r.Outcome != "budget_exhausted" {
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
