package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/federation/secagg"
)

// crashAfterPublish is a transport on which the hub "dies" right after publishing the
// model of round `round`: from then on PutRound blocks until the hub's context ends, so
// the next round state is never written (the hub is then stopped).
type crashAfterPublish struct {
	federation.Transport
	round   string // model version, e.g. "r1"
	mu      sync.Mutex
	hash    string        // the model published for round
	crashed chan struct{} // closed at the crash
}

func (c *crashAfterPublish) PutVersion(ctx context.Context, fed, version, hash string) error {
	if err := c.Transport.PutVersion(ctx, fed, version, hash); err != nil {
		return err
	}
	if version == c.round {
		c.mu.Lock()
		c.hash = hash
		c.mu.Unlock()
	}
	return nil
}

func (c *crashAfterPublish) PutRound(ctx context.Context, fed string, state []byte) error {
	c.mu.Lock()
	dead := c.hash != ""
	c.mu.Unlock()
	if !dead {
		return c.Transport.PutRound(ctx, fed, state)
	}
	select {
	case <-c.crashed:
	default:
		close(c.crashed)
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestHubRestartAfterPublish stops the hub after it has published round 1's model and
// before it has written round 2's state. The restarted hub finds the model it signed for
// round 1 (version r1, trained from the round's global model) and opens round 2 from it:
// no second model for round 1, no second ledger record, no second DP spend (the privacy
// spent holds one step per round).
func TestHubRestartAfterPublish(t *testing.T) {
	const n, dim = 3, 32
	for _, noise := range []string{dp.NoiseCentral, dp.NoiseDistributed} {
		name := "plain, central DP"
		if noise == dp.NoiseDistributed {
			name = "secagg, distributed DP"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, n, false)
			fc := fedConfig(n, dim)
			fc.Rounds = 2
			fc.DP = dp.Config{Enabled: true, ClipNorm: 1, NoiseMultiplier: 2, Noise: noise, EpsilonLimit: 100}
			if noise == dp.NoiseDistributed {
				fc.SecAgg = secagg.Config{Enabled: true}
			}
			crash := &crashAfterPublish{Transport: e.hub, round: "r1", crashed: make(chan struct{})}
			h := startHub(t, crash, fc)
			for i := range n {
				e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
			}
			select {
			case <-crash.crashed:
			case <-time.After(60 * time.Second):
				t.Fatal("round 1 was not published")
			}
			h.stop()
			h.rec.mu.Lock()
			first := len(h.rec.bodies)
			h.rec.mu.Unlock()
			if st := roundState(t, e.hub); st.Round != 1 {
				t.Fatalf("round state after the crash is round %d, want still 1", st.Round)
			}

			h2 := startHub(t, e.hub, fc)
			r := h2.next(t)
			if r.Round != 1 || r.Outcome != "aggregated" || r.Model != crash.hash || len(r.Used) != n {
				t.Fatalf("restarted hub's round 1: %+v; want the model published before the crash, %s", r, crash.hash)
			}
			if h2.counter("millwright_federation_updates_total", "result", "accepted") != 0 {
				t.Errorf("the restarted hub collected round 1's updates again")
			}
			v, err := e.hub.GetVersion(context.Background(), fedName, "r1")
			if err != nil || v != crash.hash {
				t.Fatalf("version r1 = %s, %v; want %s", v, err, crash.hash)
			}
			r2 := h2.next(t)
			if r2.Round != 2 || r2.Outcome != "aggregated" {
				t.Fatalf("round 2: %+v", r2)
			}
			g2, err := federation.FetchModel(context.Background(), e.hub, fedName, r2.Model, hubKey().Public().(ed25519.PublicKey))
			if err != nil {
				t.Fatal(err)
			}
			if g2.Header.Parent != crash.hash {
				t.Errorf("round 2 trained from %s, want round 1's published model %s", g2.Header.Parent, crash.hash)
			}
			b, err := e.hub.GetBlob(context.Background(), fedName, "privacy")
			if err != nil {
				t.Fatal(err)
			}
			var steps []dp.Step
			if err := json.Unmarshal(b, &steps); err != nil {
				t.Fatal(err)
			}
			if len(steps) != 2 {
				t.Errorf("privacy spent in %d steps, want 2 (rounds 1 and 2, once each)", len(steps))
			}
			h2.rec.mu.Lock()
			defer h2.rec.mu.Unlock()
			if first != 1 || len(h2.rec.bodies) != 1 || h2.rec.bodies[0].Round != 2 {
				t.Errorf("ledger records: %d before the crash, after it %+v; want round 1 once, then round 2", first, h2.rec.bodies)
			}
		})
	}
}

// TestSecAggRestartRecountsRejections: a message the hub rejected before its restart is
// read again when the restarted hub replays the round, and rejected again: once in the
// new process's counters (which start at 0) and once in the round's report, never twice
// in one process.
func TestSecAggRestartRecountsRejections(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	fc := secaggConfig(n, dim)
	h := startHub(t, e.hub, fc)
	ps := e.participants(t, dim)
	adv := waitPhase(t, e.hub, federation.SecAggAdvertise)
	plain := federation.Update{Federation: fedName, Round: 1, BaseRound: 1, Participant: "g0", Kind: federation.KindDelta, Samples: 1, Payload: []byte{0}}
	plain.Sign(gatewayKey(0))
	if err := e.gatewayBus(0).PublishUpdate(context.Background(), fedName, 1, "g0", plain.Marshal()); err != nil {
		t.Fatal(err)
	}
	answer(t, ps, adv)
	share := waitPhase(t, e.hub, federation.SecAggShare)
	const rejected = "millwright_federation_updates_rejected_total"
	if got := h.counter(rejected, "reason", federation.RejectBadPayload); got != 1 {
		t.Fatalf("first hub: %v bad_payload rejections, want 1", got)
	}
	h.stop()
	h = startHub(t, e.hub, fc)
	answer(t, ps, share)
	for _, phase := range []string{federation.SecAggMask, federation.SecAggCheck, federation.SecAggUnmask} {
		answer(t, ps, waitPhase(t, e.hub, phase))
	}
	r := h.next(t)
	if r.Outcome != "aggregated" || len(r.Used) != n {
		t.Fatalf("round: %+v", r)
	}
	if len(r.Rejected) != 1 || r.Rejected[0].Participant != "g0" || r.Rejected[0].Reason != federation.RejectBadPayload {
		t.Errorf("round report's rejections: %+v; want g0's plain update once", r.Rejected)
	}
	if got := h.counter(rejected, "reason", federation.RejectBadPayload); got != 1 {
		t.Errorf("restarted hub: %v bad_payload rejections, want 1", got)
	}
}
