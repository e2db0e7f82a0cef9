package natsbus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
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

// GetReceipt implements federation.Transport. It reads the key with one direct get and
// no lookup of the bucket: a factory may not read the bucket's stream info, which would
// list every key, so every member the hub wrote a receipt to (those it rejected a
// message from included).
func (b *Bus) GetReceipt(ctx context.Context, fed, participant string) ([]byte, error) {
	if err := federation.CheckName(participant); err != nil {
		return nil, fmt.Errorf("natsbus: receipt of %q: %w", participant, err)
	}
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	rb := receiptBucket(fed)
	subject := b.api() + "DIRECT.GET.KV_" + rb + ".$KV." + rb + "." + participant
	m, err := b.nc.RequestWithContext(ctx, subject, nil)
	switch {
	case errors.Is(err, nats.ErrNoResponders) && b.domain == "":
		// Nothing serves the bucket: a hub that writes no receipts (an older one). On a
		// direct connection a refused read is a permission violation, not this.
		return nil, fmt.Errorf("natsbus: receipt of %s in %s: no receipt bucket: %w", participant, fed, federation.ErrNotFound)
	case errors.Is(err, nats.ErrNoResponders):
		// Through a leaf node (a domain is set): the leaf forwards only what the link's user
		// may publish, and answers the rest so; it answers so too while it has no link to
		// the hub. A missing bucket times out instead.
		return nil, fmt.Errorf("natsbus: receipt of %s in %s: %w, or the leaf node has no link to the hub (%v)", participant, fed, ErrNotPermitted, err)
	case err != nil && b.deniedSubject(subject):
		return nil, fmt.Errorf("natsbus: receipt of %s in %s: %w", participant, fed, ErrNotPermitted)
	case err != nil:
		return nil, fmt.Errorf("natsbus: receipt of %s in %s: %w", participant, fed, err)
	}
	if status := m.Header.Get("Status"); status == "404" {
		return nil, fmt.Errorf("natsbus: receipt of %s in %s: %w", participant, fed, federation.ErrNotFound)
	} else if status != "" {
		return nil, fmt.Errorf("natsbus: receipt of %s in %s: status %s %s", participant, fed, status, m.Header.Get("Description"))
	}
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return nil, fmt.Errorf("natsbus: receipt of %s in %s: %w", participant, fed, federation.ErrNotFound)
	}
	return m.Data, nil
}
