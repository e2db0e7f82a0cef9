package federation_test

import (
	"context"
	"crypto/ed25519"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/secagg"
)

func secaggConfig(n, dim int) federation.FederationConfig {
	fc := fedConfig(n, dim)
	fc.SecAgg = secagg.Config{Enabled: true}
	fc.Rounds = 1
	return fc
}

// checkMean checks that round 1's model is the initial model plus the mean of the honest
// updates of the gateways in used (pullTrainer: 0.8 × (target − global)).
func checkMean(t *testing.T, tr federation.Transport, dim int, used []string, r federation.RoundReport) {
	t.Helper()
	ctx := context.Background()
	key := hubKey().Public().(ed25519.PublicKey)
	h0, err := tr.GetVersion(ctx, fedName, "r0")
	if err != nil {
		t.Fatal(err)
	}
	g0, err := federation.FetchModel(ctx, tr, fedName, h0, key)
	if err != nil {
		t.Fatal(err)
	}
	g1, err := federation.FetchModel(ctx, tr, fedName, r.Model, key)
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for j := range dim {
		mean := 0.0
		for _, name := range used {
			i := int(name[1] - '0')
			mean += 0.8 * float64(target(i, dim)[j]-g0.Params[j])
		}
		mean /= float64(len(used))
		worst = max(worst, math.Abs(float64(g1.Params[j]-g0.Params[j])-mean))
	}
	if worst > 1e-3 { // fixed point 2^-16 per gateway
		t.Fatalf("unmasked mean off by up to %g", worst)
	}
}

func TestSecAggRound(t *testing.T) {
	const n, dim = 4, 64
	e := newEnv(t, n, false)
	h := startHub(t, e.hub, secaggConfig(n, dim))
	for i := range n {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
	}
	r := h.next(t)
	if r.Outcome != "aggregated" || len(r.Used) != n {
		t.Fatalf("round: %+v", r)
	}
	checkMean(t, e.hub, dim, r.Used, r)
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if len(h.rec.bodies) != 1 || h.rec.bodies[0].Aggregation != "fedavg+secagg" || len(h.rec.bodies[0].InputUpdates) != n {
		t.Fatalf("ledger: %+v", h.rec.bodies)
	}
}

// TestSecAggDropoutRecovered: a gateway shares its keys and dies before uploading; the
// round still completes at the deadline and its pairwise masks are removed with the
// survivors' shares, so the result is exactly the survivors' mean.
func TestSecAggDropoutRecovered(t *testing.T) {
	const n, dim = 4, 64
	e := newEnv(t, n, false)
	fc := secaggConfig(n, dim)
	fc.Quorum = 3
	fc.RoundTimeout = 2 * time.Second
	h := startHub(t, e.hub, fc)
	for i := range n - 1 {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
	}
	dying := e.participants(t, dim)[n-1]
	for _, phase := range []string{federation.SecAggAdvertise, federation.SecAggShare} {
		st := waitPhase(t, e.hub, phase)
		if err := dying.Answer(context.Background(), st); err != nil {
			t.Fatal(err)
		}
	}
	r := h.next(t)
	if r.Outcome != "aggregated" || !slices.Equal(r.Used, []string{"g0", "g1", "g2"}) {
		t.Fatalf("round with a dropout: %+v", r)
	}
	checkMean(t, e.hub, dim, r.Used, r)
}

func waitPhase(t *testing.T, tr federation.Transport, phase string) federation.RoundState {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if b, err := tr.GetRound(context.Background(), fedName); err == nil {
			if st, err := federation.DecodeRoundState(b); err == nil && st.SecAgg != nil && st.SecAgg.Phase == phase {
				return st
			}
		}
	}
	t.Fatalf("phase %s did not come", phase)
	return federation.RoundState{}
}
