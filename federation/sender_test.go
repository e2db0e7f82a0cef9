package federation_test

import (
	"context"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
)

// TestRejectionsNameTheSender: a member is known by the subject its credentials let it
// publish on (UpdateMessage.Sender), not by what its message claims. g0 sends, on its own
// subject, an update signed with its own key that names g2 as its participant; g2 sends
// nothing. The rejection is g0's: g2's receipt says its update is missing, not that g2
// sent a forged one, and the round's report does not name g2 as rejected.
func TestRejectionsNameTheSender(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Quorum = 2
	fc.RoundTimeout = 2 * time.Second
	fc.Rounds = 1
	h := startHub(t, e.hub, fc)
	ps := e.participants(t, dim)
	ctx := context.Background()
	st := waitRound(t, e.hub, 1)
	if err := e.gatewayBus(0).PublishUpdate(ctx, fedName, 1, "g0", signedUpdate(t, gatewayKey(0), "g2", 1, dim, 9)); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps[:2] {
		if err := p.Answer(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	r := h.next(t)
	for _, rej := range r.Rejected {
		if rej.Participant == "g2" {
			t.Errorf("round 1 reports g2 rejected (%s: %s); g2 sent nothing, g0 sent the message", rej.Reason, rej.Detail)
		}
	}
	if got := receipt(t, e.gatewayBus(2), "g2", 1); got.Outcome != federation.ReceiptMissing {
		t.Errorf("g2's receipt of round 1: %s %s (%s); want missing: g2 sent nothing", got.Outcome, got.Reason, got.Detail)
	}
}
