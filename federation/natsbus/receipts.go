package natsbus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/millwright-io/millwright/federation"
)

// receiptBucket is the KV bucket of fed's round receipts, one key per participant; a
// factory may read only its own key (FactoryPermissions).
func receiptBucket(fed string) string { return "mwrcpt-" + fed }

// PutReceipts implements federation.Transport: every receipt is published at once and
// the call waits for all the acknowledgements (one round trip, not one per participant).
func (b *Bus) PutReceipts(ctx context.Context, fed string, receipts map[string][]byte) error {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	if _, err := b.kv(ctx, receiptBucket(fed)); err != nil {
		return err
	}
	acks := make(map[string]jetstream.PubAckFuture, len(receipts))
	for name, data := range receipts {
		if err := federation.CheckName(name); err != nil {
			return fmt.Errorf("natsbus: receipt of %q: %w", name, err)
		}
		f, err := b.js.PublishAsync("$KV."+receiptBucket(fed)+"."+name, data)
		if err != nil {
			return fmt.Errorf("natsbus: put receipt of %s in %s: %w", name, fed, err)
		}
		acks[name] = f
	}
	var errs []error
	for name, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs = append(errs, fmt.Errorf("natsbus: put receipt of %s in %s: %w", name, fed, err))
		case <-ctx.Done():
			return fmt.Errorf("natsbus: put receipts in %s: %w", fed, ctx.Err())
		}
	}
	return errors.Join(errs...)
}

// GetReceipt implements federation.Transport.
func (b *Bus) GetReceipt(ctx context.Context, fed, participant string) ([]byte, error) {
	return b.get(ctx, receiptBucket(fed), participant)
}
