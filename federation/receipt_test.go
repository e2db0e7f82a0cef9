package federation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
)

// receipt waits for participant's receipt of round (the hub writes it after the round
// closes) and returns it.
func receipt(t *testing.T, tr federation.Transport, participant string, round uint64) federation.Receipt {
	t.Helper()
	var last error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, err := tr.GetReceipt(context.Background(), fedName, participant)
		if err != nil {
			last = err
			continue
		}
		r, err := federation.DecodeReceipt(b)
		if err != nil {
			t.Fatalf("%s's receipt: %v", participant, err)
		}
		if r.Round == round {
			return r
		}
		last = fmt.Errorf("the latest receipt is of round %d", r.Round)
	}
	t.Fatalf("no receipt of round %d for %s: %v", round, participant, last)
	return federation.Receipt{}
}

// TestRoundReceipts: after each round, every target and every member whose message was
// rejected can read, on its own connection, what became of its part: used (with the
// round's model), rejected (with the hub's reason), missing (nothing arrived by the
// deadline) or abandoned (with why the round closed without a model). A malformed message
// that names no member stops no receipt from being written.
func TestRoundReceipts(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Quorum = 2
	fc.RoundTimeout = 2 * time.Second
	fc.Rounds = 2
	h := startHub(t, e.hub, fc)
	ps := e.participants(t, dim) // driven by hand with Answer
	ctx := context.Background()

	// Round 1: g0 and g1 answer; g2 sends only an update bound to another round.
	st := waitRound(t, e.hub, 1)
	for _, p := range ps[:2] {
		if err := p.Answer(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.gatewayBus(2).PublishUpdate(ctx, fedName, 1, "g2", signedUpdate(t, gatewayKey(2), "g2", 7, dim, 1)); err != nil {
		t.Fatal(err)
	}
	// Bytes that name no participant are rejected too, and concern no member's receipt.
	if err := e.hub.PublishUpdate(ctx, fedName, 1, "g1", []byte("not an update")); err != nil {
		t.Fatal(err)
	}
	r := h.next(t)
	if r.Outcome != "aggregated" || len(r.Used) != 2 || len(r.Rejected) != 2 {
		t.Fatalf("round 1: %+v; want g0 and g1 used, g2's and the malformed message rejected", r)
	}
	for i, want := range []federation.Receipt{
		{Outcome: federation.ReceiptUsed, Model: r.Model},
		{Outcome: federation.ReceiptUsed, Model: r.Model},
		{Outcome: federation.ReceiptRejected, Reason: federation.RejectWrongRound, Model: r.Model},
	} {
		got := receipt(t, e.gatewayBus(i), gwName(i), 1)
		if got.Outcome != want.Outcome || got.Reason != want.Reason || got.Model != want.Model || got.Participant != gwName(i) {
			t.Errorf("%s's receipt of round 1: %+v; want %s %s", gwName(i), got, want.Outcome, want.Reason)
		}
		if want.Reason != "" && got.Detail == "" {
			t.Errorf("%s's rejection has no detail", gwName(i))
		}
	}

	// Round 2: only g0 answers, below the quorum of 2.
	st = waitRound(t, e.hub, 2)
	if err := ps[0].Answer(ctx, st); err != nil {
		t.Fatal(err)
	}
	if r := h.next(t); r.Outcome != "abandoned" || r.Reason != "quorum" {
		t.Fatalf("round 2: %+v", r)
	}
	for i := range n {
		got := receipt(t, e.gatewayBus(i), gwName(i), 2)
		if got.Outcome != federation.ReceiptAbandoned || got.Reason != "quorum" || got.Model != "" {
			t.Errorf("%s's receipt of round 2: %+v; want abandoned for quorum", gwName(i), got)
		}
	}
}

// TestReceiptMissingForASilentTarget: a target that sent nothing by the deadline is told so.
func TestReceiptMissingForASilentTarget(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Quorum = 2
	fc.RoundTimeout = time.Second
	fc.Rounds = 1
	h := startHub(t, e.hub, fc)
	for i := range n - 1 {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
	}
	if r := h.next(t); r.Outcome != "aggregated" || len(r.Used) != n-1 {
		t.Fatalf("round 1: %+v", r)
	}
	if got := receipt(t, e.gatewayBus(n-1), gwName(n-1), 1); got.Outcome != federation.ReceiptMissing || got.Reason != "" {
		t.Errorf("silent target's receipt: %+v; want missing", got)
	}
}

func FuzzDecodeReceipt(f *testing.F) {
	f.Add([]byte(`{"version":1,"federation":"pumps","participant":"g0","round":3,"outcome":"rejected","reason":"stale","detail":"x"}`))
	f.Add([]byte(`{"version":1,"federation":"pumps","participant":"g0","round":3,"outcome":"won"}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := federation.DecodeReceipt(b)
		if err != nil {
			return
		}
		if federation.CheckName(r.Participant) != nil || r.Version != federation.ReceiptVersion {
			t.Fatalf("accepted %+v", r)
		}
	})
}
