package gateway

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/millwright-io/millwright/federation"
)

// receiptDesk serves factory-a's receipt (and the models of the shelf it wraps): the previous round's for the first reads (the
// hub writes a round's receipts just after the state that closes it), then the current.
type receiptDesk struct {
	federation.Transport
	mu    sync.Mutex
	reads int
	stale int // reads answered with the previous round's receipt
	r     federation.Receipt
}

func (d *receiptDesk) GetReceipt(_ context.Context, fed, participant string) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reads++
	r := d.r
	if d.reads <= d.stale {
		r.Round--
		r.Outcome, r.Reason, r.Detail = federation.ReceiptUsed, "", ""
	}
	if fed != r.Federation || participant != r.Participant {
		return nil, federation.ErrNotFound
	}
	return json.Marshal(r)
}

// TestFederationStatusReadsTheHubsReceipt: an update the round's result does not use is
// shown with what the hub's receipt says about it (the rejection reason and detail, or
// why the round was abandoned), read after the receipt of the round has replaced the
// previous one.
func TestFederationStatusReadsTheHubsReceipt(t *testing.T) {
	msg := newFedMessages(t)
	for _, c := range []struct {
		name      string
		global    uint64 // the round that produced the model of the next round state
		receipt   federation.Receipt
		rejection string
	}{
		{"abandoned", 2, federation.Receipt{Outcome: federation.ReceiptAbandoned, Reason: "quorum"}, OutcomeAbandoned},
		{"rejected", 3, federation.Receipt{Outcome: federation.ReceiptRejected, Reason: federation.RejectStale, Detail: "based on round 1"}, OutcomeExcluded},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := testStatus(t, msg.hub.Public().(ed25519.PublicKey))
				r := c.receipt
				r.Version, r.Federation, r.Participant, r.Round = federation.ReceiptVersion, "pumps", "factory-a", 3
				hash, model := msg.model(t, 3, "factory-b")
				desk := &receiptDesk{Transport: &modelShelf{models: map[string][]byte{hash: model}}, r: r, stale: 3}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				go st.runChecker(ctx, observedTransport{Transport: desk, st: st})

				st.roundState(msg.state(t, 3, 2, "h2", "factory-a", "factory-b"))
				st.sent(msg.update(t, 3, federation.KindDelta, 10))
				st.roundState(msg.state(t, 4, c.global, hash, "factory-a", "factory-b"))
				time.Sleep(receiptTries * receiptWait) // virtual time: every retry has run
				synctest.Wait()
				l := st.snapshot().LastRejection
				if l.Round != 3 || l.Reason != c.rejection || l.HubOutcome != c.receipt.Outcome || l.HubReason != c.receipt.Reason || l.Detail != c.receipt.Detail {
					t.Errorf("last rejection %+v; want round 3, %s, the hub's %s %s %q", l, c.rejection, c.receipt.Outcome, c.receipt.Reason, c.receipt.Detail)
				}
				desk.mu.Lock()
				defer desk.mu.Unlock()
				if desk.reads != desk.stale+1 {
					t.Errorf("%d receipt reads; want %d (the stale ones, then round 3's)", desk.reads, desk.stale+1)
				}
			})
		})
	}
}
