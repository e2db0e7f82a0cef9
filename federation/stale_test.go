package federation_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
)

// TestStaleUpdates: a gateway that finishes training after its round closed sends its
// update to the round now open, when the model it trained from is at most max_staleness
// rounds old, and the hub uses it there; an update trained from an older model is refused
// as stale (and counted, and told to its sender in the round's receipt).
func TestStaleUpdates(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Quorum, fc.RoundTimeout, fc.MaxStaleness, fc.Rounds = 2, time.Second, 1, 2
	h := startHub(t, e.hub, fc)
	ps := e.participants(t, dim) // driven by hand with Answer
	ctx := context.Background()

	st1 := waitRound(t, e.hub, 1)
	for _, p := range ps[:2] {
		if err := p.Answer(ctx, st1); err != nil {
			t.Fatal(err)
		}
	}
	if r := h.next(t); r.Outcome != "aggregated" || !slices.Equal(r.Used, []string{"g0", "g1"}) {
		t.Fatalf("round 1: %+v", r)
	}
	st2 := waitRound(t, e.hub, 2)

	// g2 finishes round 1's training now: its update, one round old, goes to round 2.
	if err := ps[2].Answer(ctx, st1); err != nil {
		t.Fatal(err)
	}
	// An update of g1 trained from the initial model, two rounds old, is refused.
	old := signedUpdateFrom(t, gatewayKey(1), "g1", 2, 0, dim, 9)
	if err := e.gatewayBus(1).PublishUpdate(ctx, fedName, 2, "g1", old); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps[:2] {
		if err := p.Answer(ctx, st2); err != nil {
			t.Fatal(err)
		}
	}
	r := h.next(t)
	if r.Round != 2 || r.Outcome != "aggregated" || !slices.Equal(r.Used, []string{"g0", "g1", "g2"}) {
		t.Fatalf("round 2: %+v; want g0, g1 and g2's late update used", r)
	}
	if len(r.Rejected) != 1 || r.Rejected[0].Participant != "g1" || r.Rejected[0].Reason != federation.RejectStale {
		t.Errorf("round 2's rejections: %+v; want g1's update from the initial model, stale", r.Rejected)
	}
	if got := h.counter("millwright_federation_updates_rejected_total", "reason", federation.RejectStale); got != 1 {
		t.Errorf("%v stale rejections counted, want 1", got)
	}
	if got := receipt(t, e.gatewayBus(2), "g2", 2); got.Outcome != federation.ReceiptUsed {
		t.Errorf("g2's receipt of round 2: %+v; want used", got)
	}
}
