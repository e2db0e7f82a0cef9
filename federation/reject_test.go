package federation_test

import (
	"context"
	"crypto/ed25519"
	"slices"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/compress"
)

func signedUpdate(t *testing.T, key ed25519.PrivateKey, participant string, round uint64, dim int, nonce byte) []byte {
	t.Helper()
	return signedUpdateFrom(t, key, participant, round, round, dim, nonce)
}

// signedUpdateFrom is a zero update for round trained from the model of round base.
func signedUpdateFrom(t *testing.T, key ed25519.PrivateKey, participant string, round, base uint64, dim int, nonce byte) []byte {
	t.Helper()
	c := compress.Codec{Kind: compress.None}
	c.SetDefaults()
	payload, err := compress.Encode(c, make([]float32, dim), nil)
	if err != nil {
		t.Fatal(err)
	}
	u := federation.Update{Federation: fedName, Round: round, BaseRound: base, Participant: participant, Samples: 10, Payload: payload}
	u.Nonce[0] = nonce
	u.Sign(key)
	return u.Marshal()
}

func waitRound(t *testing.T, tr federation.Transport, round uint64) federation.RoundState {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := tr.GetRound(context.Background(), fedName); err == nil {
			if st, err := federation.DecodeRoundState(b); err == nil && st.Round == round {
				return st
			}
		}
	}
	t.Fatalf("round %d did not open", round)
	return federation.RoundState{}
}

func TestForgedAndReplayedUpdatesRejected(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	h := startHub(t, e.hub, fedConfig(n, dim))
	ctx := context.Background()
	ps := e.participants(t, dim) // driven by hand with Answer
	st := waitRound(t, e.hub, 1)
	for _, p := range ps[:n-1] {
		if err := p.Answer(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	// g0's genuine round-1 update, as an eavesdropper captures it while the round is open
	// (the hub deletes a round's updates once it has closed).
	var old []byte
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		_ = e.hub.Updates(cctx, fedName, 1, func(b []byte) {
			if u, err := federation.DecodeUpdate(b); err == nil && u.Participant == "g0" {
				old = b
				cancel()
			}
		})
	}()
	<-cctx.Done()
	if err := ps[n-1].Answer(ctx, st); err != nil {
		t.Fatal(err)
	}
	if r := h.next(t); r.Outcome != "aggregated" || len(r.Rejected) != 0 {
		t.Fatalf("round 1: %+v", r)
	}

	st = waitRound(t, e.hub, 2)
	pub := func(participant string, b []byte) {
		t.Helper()
		if err := e.hub.PublishUpdate(ctx, fedName, 2, participant, b); err != nil {
			t.Fatal(err)
		}
	}
	tampered, _ := federation.DecodeUpdate(old)
	tampered.Round = 2 // re-bound to round 2 without the key: the signature no longer matches
	attacker := ed25519.NewKeyFromSeed(make([]byte, 32))
	pub("g0", old)                                             // cross-round replay
	pub("g0", tampered.Marshal())                              // tampered binding
	pub("g1", signedUpdate(t, attacker, "g1", 2, dim, 1))      // forged: g1's name, another key
	pub("g2", signedUpdate(t, attacker, "mallory", 2, dim, 2)) // not a member
	pub("g1", []byte("MWU1 garbage"))                          // malformed
	if err := ps[0].Answer(ctx, st); err != nil {              // the genuine one
		t.Fatal(err)
	}
	var genuine []byte
	cctx, cancel = context.WithCancel(ctx)
	go func() {
		_ = e.hub.Updates(cctx, fedName, 2, func(b []byte) {
			if u, err := federation.DecodeUpdate(b); err == nil && u.Participant == "g0" && u.Round == 2 && u.Key.Equal(gatewayKey(0).Public().(ed25519.PublicKey)) {
				genuine = b
				cancel()
			}
		})
	}()
	<-cctx.Done()
	pub("g0", genuine)                                         // redelivery: harmless
	pub("g0", signedUpdate(t, gatewayKey(0), "g0", 2, dim, 9)) // a second, different update
	for _, p := range ps[1:] {
		if err := p.Answer(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	r := h.next(t)
	if r.Outcome != "aggregated" || !slices.Equal(r.Used, []string{"g0", "g1", "g2"}) {
		t.Fatalf("round 2: %+v", r)
	}
	var reasons []string
	for _, rj := range r.Rejected {
		reasons = append(reasons, rj.Reason)
	}
	want := []string{federation.RejectWrongRound, federation.RejectBadSignature, federation.RejectWrongKey,
		federation.RejectUnknownMember, federation.RejectMalformed, federation.RejectDuplicate}
	if !slices.Equal(reasons, want) {
		t.Fatalf("rejections %q, want %q", reasons, want)
	}
	for _, reason := range want {
		if got := h.counter("millwright_federation_updates_rejected_total", "reason", reason); got != 1 {
			t.Errorf("rejected{reason=%q} = %v, want 1", reason, got)
		}
	}
	if got := h.counter("millwright_federation_updates_total", "result", "redelivered"); got != 1 {
		t.Errorf("redelivered = %v, want 1", got)
	}
}
