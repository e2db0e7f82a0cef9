package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/millwright-io/millwright/models"
)

// ReceiptVersion is the version of Receipt.
const ReceiptVersion = 1

// Outcomes of a participant's part in a round, as its receipt states them.
const (
	ReceiptUsed      = "used"      // the round's model averaged the participant's update
	ReceiptRejected  = "rejected"  // the hub refused its update (Reason: a Reject* constant)
	ReceiptMissing   = "missing"   // a target whose update did not arrive (or, with secure aggregation, that dropped out) before the round closed
	ReceiptAbandoned = "abandoned" // the round closed without a model (Reason says why)
)

// Receipt is what the hub tells one participant about a round it was asked to train in
// or sent something to: whether its update was used and, if not, why. Each participant
// can read only its own receipt (the transport's permissions), and only the latest one is
// kept; the hub writes it after the round closes.
type Receipt struct {
	Version     int    `json:"version"`
	Federation  string `json:"federation"`
	Participant string `json:"participant"`
	Round       uint64 `json:"round"`
	Outcome     string `json:"outcome"`
	// Reason is the rejection reason (a Reject* constant) of a rejected update, or why an
	// abandoned round closed without a model (quorum, aggregation, or the secure-
	// aggregation failure); Detail is the hub's explanation.
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Model is the SHA-256 of the round's model, when the round produced one.
	Model string `json:"model,omitempty"`
}

// DecodeReceipt decodes a receipt strictly.
func DecodeReceipt(b []byte) (Receipt, error) {
	var r Receipt
	if err := models.DecodeJSON(b, &r); err != nil {
		return r, fmt.Errorf("%w: receipt: %v", ErrMalformed, err)
	}
	if r.Version != ReceiptVersion {
		return r, fmt.Errorf("%w: receipt version %d; expected %d", ErrMalformed, r.Version, ReceiptVersion)
	}
	for _, n := range []string{r.Federation, r.Participant} {
		if err := CheckName(n); err != nil {
			return r, fmt.Errorf("%w: receipt: %v", ErrMalformed, err)
		}
	}
	if !slices.Contains([]string{ReceiptUsed, ReceiptRejected, ReceiptMissing, ReceiptAbandoned}, r.Outcome) {
		return r, fmt.Errorf("%w: receipt outcome %q; expected used, rejected, missing or abandoned", ErrMalformed, r.Outcome)
	}
	return r, nil
}

// Receipts are the receipts of a closed round: one for every target and every member the
// hub rejected something from. A used update wins over a rejected message of the same
// participant (a replay of it, say); of several rejections the last one is given.
func (r RoundReport) Receipts() map[string]Receipt {
	out := map[string]Receipt{}
	add := func(name, outcome, reason, detail string) {
		out[name] = Receipt{Version: ReceiptVersion, Federation: r.Federation, Participant: name, Round: r.Round,
			Outcome: outcome, Reason: reason, Detail: detail, Model: r.Model}
	}
	for _, t := range r.Targets {
		add(t, ReceiptMissing, "", "")
	}
	for _, rej := range r.Rejected {
		add(rej.Participant, ReceiptRejected, rej.Reason, rej.Detail)
	}
	switch r.Outcome {
	case outcomeAggregated, outcomeEvaluated:
		for _, u := range r.Used {
			add(u, ReceiptUsed, "", "")
		}
	case outcomeAbandoned:
		for name, rc := range out {
			if rc.Outcome != ReceiptRejected {
				add(name, ReceiptAbandoned, r.Reason, "")
			}
		}
	}
	return out
}

// sendReceipts writes the receipts of a closed round to the members they concern. They tell gateways what the hub's
// logs say; a failure to write them is logged and counted, and the round stands.
func (f *fedRun) sendReceipts(ctx context.Context, r RoundReport) {
	enc := map[string][]byte{}
	for name, rc := range r.Receipts() {
		if _, member := f.members[name]; !member {
			continue // a rejected message that named no member (malformed, forged): nobody to tell
		}
		b, err := json.Marshal(rc)
		if err != nil {
			continue // cannot happen: plain strings and numbers
		}
		enc[name] = b
	}
	if len(enc) == 0 {
		return
	}
	if err := f.h.tr.PutReceipts(ctx, f.cfg.Name, enc); err != nil && ctx.Err() == nil {
		f.m.receipts.Inc()
		f.log.Warn("round receipts not written", "round", r.Round, "receipts", len(enc), "err", err)
	}
}
