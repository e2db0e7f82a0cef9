package natsbus

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/millwright-io/millwright/federation"
)

// TestReceiptsOnlyForTheirParticipant: the hub writes the receipts of a round in one call;
// a factory reads its own, and neither another factory's receipt nor one of a federation
// it does not belong to, nor can it write one. A second round's receipts replace the
// first's.
func TestReceiptsOnlyForTheirParticipant(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	a := dial(t, factory(srv, "a", "pa"))
	c := dial(t, factory(srv, "c", "pc"))
	if _, err := a.GetReceipt(ctx, "f1", "a"); !errors.Is(err, federation.ErrNotFound) {
		t.Fatalf("a's receipt before any round: %v, want ErrNotFound", err)
	}
	for _, round := range []string{"1", "2"} {
		if err := hub.PutReceipts(ctx, "f1", map[string][]byte{"a": []byte("a@" + round), "b": []byte("b@" + round)}); err != nil {
			t.Fatal(err)
		}
		if got, err := a.GetReceipt(ctx, "f1", "a"); err != nil || string(got) != "a@"+round {
			t.Fatalf("round %s: a reads its receipt: %q, %v", round, got, err)
		}
	}
	if got, err := a.GetReceipt(ctx, "f1", "b"); err == nil || errors.Is(err, federation.ErrNotFound) {
		t.Fatalf("a read b's receipt: %q, %v; want a permission error", got, err)
	}
	if got, err := c.GetReceipt(ctx, "f1", "c"); err == nil || errors.Is(err, federation.ErrNotFound) {
		t.Fatalf("c read a receipt of a federation it does not belong to: %q, %v", got, err)
	}
	if err := a.PutReceipts(ctx, "f1", map[string][]byte{"a": []byte("forged")}); err == nil {
		t.Fatal("a wrote a receipt")
	}
	if got, err := hub.GetReceipt(ctx, "f1", "a"); err != nil || string(got) != "a@2" {
		t.Fatalf("a's receipt after its forgery attempt: %q, %v", got, err)
	}
	if err := hub.PutReceipts(ctx, "f1", map[string][]byte{"../x": nil}); err == nil {
		t.Fatal("a receipt under a name that is not a participant's was written")
	}
}

// TestReceiptKeysNotListable: a factory cannot list the receipt bucket's keys (which would
// name every member the hub wrote a receipt to, those it rejected a message from
// included): the stream's info, which lists them, is refused, and its own receipt still
// reads.
func TestReceiptKeysNotListable(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	a := dial(t, factory(srv, "a", "pa"))
	if err := hub.PutReceipts(ctx, "f1", map[string][]byte{"a": []byte("a's"), "b": []byte("b's")}); err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if st, err := a.js.Stream(lctx, "KV_"+receiptBucket("f1")); err == nil {
		info, err := st.Info(lctx, jetstream.WithSubjectFilter(">"))
		if err == nil {
			t.Fatalf("a listed the receipt bucket's keys: %v", slices.Collect(maps.Keys(info.State.Subjects)))
		}
	}
	if got, err := a.GetReceipt(ctx, "f1", "a"); err != nil || string(got) != "a's" {
		t.Fatalf("a's receipt: %q, %v", got, err)
	}
}

// TestReceiptWithoutABucket: reading a receipt of a federation whose hub made no receipt
// bucket (an older hub) is ErrNotFound, at once, as it was before receipts were read by a
// direct get.
func TestReceiptWithoutABucket(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	a := dial(t, factory(srv, "a", "pa"))
	if err := hub.js.DeleteKeyValue(ctx, receiptBucket("f1")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetReceipt(ctx, "f1", "a"); !errors.Is(err, federation.ErrNotFound) {
		t.Fatalf("a's receipt with no receipt bucket: %v; want ErrNotFound", err)
	}
}
