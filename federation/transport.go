package federation

import (
	"context"
	"errors"
)

// ErrNotFound is returned (wrapped) by a Transport when a model or a round state does not
// exist.
var ErrNotFound = errors.New("federation: not found")

// UpdateMessage is one stored update message, as Transport.Updates hands it over.
type UpdateMessage struct {
	// Sender is the member the transport took the message from, by its credentials (with
	// natsbus, the member whose subject it was published to), whatever the message says.
	Sender string
	// Seq identifies the stored message: numbered from 1 in the order the messages were
	// stored, and delivered in that order (a redelivered message has the Seq it had, and
	// one delivering the round again starts over).
	Seq  uint64
	Data []byte
}

// Transport moves the round protocol's bytes between hub and gateways. Package natsbus
// implements it over NATS JetStream. Every method is safe for concurrent use and honours
// ctx; a returned error other than ErrNotFound is transient (the caller retries).
type Transport interface {
	// PublishUpdate stores a gateway's signed update for round of federation fed durably
	// (it survives a hub restart) and returns once the store has acknowledged it.
	// participant is the sender's name; the transport may refuse to publish under a name
	// that is not the caller's own (per-factory credentials). It keeps no reference to
	// data: the caller reuses its buffer.
	PublishUpdate(ctx context.Context, fed string, round uint64, participant string, data []byte) error
	// Updates calls fn with every update of round stored so far, then with each new one,
	// until ctx ends (it then returns nil). fn is called from one goroutine at a time and
	// may be called again with a message it has seen (redelivery, with the same Seq):
	// handlers are idempotent.
	Updates(ctx context.Context, fed string, round uint64, fn func(UpdateMessage)) error
	// DeleteUpdates removes every update stored for round, which the hub has closed.
	DeleteUpdates(ctx context.Context, fed string, round uint64) error
	// PutModel stores a signed global model under hash, its SHA-256 (lower-case hex),
	// which the caller has computed: the transport does not hash data again (a reader
	// checks what it gets). Putting the same bytes twice is a no-op.
	PutModel(ctx context.Context, fed, hash string, data []byte) error
	// GetModel returns the model stored under hash, ErrNotFound if there is none. The
	// caller checks the hash and the signature.
	GetModel(ctx context.Context, fed, hash string) ([]byte, error)
	// DeleteModel removes the model stored under hash, leaving nothing of it in the store;
	// deleting one that is not stored is not an error.
	DeleteModel(ctx context.Context, fed, hash string) error
	// PutRound replaces the round state of fed.
	PutRound(ctx context.Context, fed string, state []byte) error
	// GetRound returns the round state of fed, ErrNotFound if the hub has not started it.
	GetRound(ctx context.Context, fed string) ([]byte, error)
	// WatchRound calls fn with the current round state of fed, if any, and then with every
	// new one, until ctx ends (it then returns nil). fn is called from one goroutine.
	WatchRound(ctx context.Context, fed string, fn func(state []byte)) error
	// PutVersion records that model version (e.g. "r12") of fed is stored under hash;
	// GetVersion looks it up (ErrNotFound for an unknown version).
	PutVersion(ctx context.Context, fed, version, hash string) error
	GetVersion(ctx context.Context, fed, version string) (string, error)
	// PutBlob and GetBlob keep the hub's private state (server optimizer, privacy spent) next
	// to the models, so that a restarted hub continues a federation; GetBlob returns
	// ErrNotFound for a name never put.
	PutBlob(ctx context.Context, fed, name string, data []byte) error
	GetBlob(ctx context.Context, fed, name string) ([]byte, error)
	// PutReceipts replaces the round receipts of fed's participants (by participant name;
	// the hub's); GetReceipt returns participant's latest, ErrNotFound if it has none. The
	// transport lets a participant read only its own.
	PutReceipts(ctx context.Context, fed string, receipts map[string][]byte) error
	GetReceipt(ctx context.Context, fed, participant string) ([]byte, error)
}
