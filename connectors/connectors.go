// Package connectors defines the contracts between the pipeline and the protocol adapters that read telemetry into it and write telemetry out of it.
//
// Adapters hold protocol code only. The pipeline owns reconnecting with backoff, retries,
// the standard metrics, the store-and-forward log and the dead-letter store; an adapter
// reports what it cannot handle through the Env it is built with.
package connectors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

// ErrNotConnected is returned (wrapped) by Read or Write when the connection was lost. The
// pipeline then calls Close and Connect again, with backoff; a sink is then handed the
// batch that failed again, before any later one.
var ErrNotConnected = errors.New("not connected")

// AckFunc settles a batch returned by Source.Read. The pipeline calls it exactly once: with a
// nil error after every point of the batch is durable (in a sink or in the store-and-forward
// log), or with the error that kept the batch from being stored, in which case the source
// must let the batch be delivered again (or count it lost, if its protocol cannot).
// It must not block for long and is safe to call from any goroutine.
type AckFunc func(ctx context.Context, err error)

// Source reads telemetry from a protocol peer.
//
// The pipeline calls Connect once before the first Read, Read from a single goroutine, and
// Close when it shuts down or after Read returned ErrNotConnected. A Connect error is retried
// with backoff; New functions do no I/O, so their errors are configuration errors.
type Source interface {
	// Connect opens the connection and starts whatever delivery the protocol needs.
	Connect(ctx context.Context) error
	// Read blocks until a batch is available or ctx is done. It returns a non-empty batch and
	// the AckFunc that settles it, ErrNotConnected (wrapped) when the connection was lost,
	// or ctx's error. Read must stop taking data from the peer while batches are unsettled
	// beyond the source's own bounded window: that is how backpressure reaches the peer.
	Read(ctx context.Context) (telemetry.Batch, AckFunc, error)
	// Close releases the connection. Unsettled batches may be delivered again later.
	Close(ctx context.Context) error
}

// Sink writes telemetry to a store.
//
// The pipeline calls Connect before the first Write, Write from a single goroutine with
// batches in the order they were stored, and Close at shutdown (also when Connect never
// succeeded) and after Write returned ErrNotConnected, before it calls Connect again.
type Sink interface {
	// Connect prepares the sink (checks the peer is reachable). Errors are retried.
	Connect(ctx context.Context) error
	// Write stores every point of the batch before it returns nil. A *RejectedError means the
	// other points were stored and the rejected ones never will be (they are dead-lettered).
	// Any other error means the batch, or part of it, was not stored: the pipeline retries the
	// whole batch with backoff, so writes must be idempotent.
	Write(ctx context.Context, b telemetry.Batch) error
	// Close flushes and releases the sink.
	Close(ctx context.Context) error
}

// Batcher is implemented by sinks that want batches of a given size: the pipeline hands
// Write at most maxPoints points, waiting up to linger after the first for more to arrive
// (with a linger of 0 it does not wait: Write gets what is stored when it is read).
type Batcher interface {
	BatchPolicy() (maxPoints int, linger time.Duration)
}

// Rejection is one point a sink refused for good, with the sink's reason.
type Rejection struct {
	Point telemetry.Point
	// Class is a short, bounded reason class for metrics ("type_conflict", "not_finite",
	// "no_timestamp", "unparsable"); Reason is the full text.
	Class  string
	Reason string
}

// RejectedError reports points a sink refused permanently; the rest of the batch was stored.
type RejectedError struct {
	Rejected []Rejection
}

func (e *RejectedError) Error() string {
	if len(e.Rejected) == 0 {
		return "no points rejected"
	}
	return fmt.Sprintf("%d point(s) rejected, first: %s", len(e.Rejected), e.Rejected[0].Reason)
}

// DeadLetter is input the gateway could not store: a payload it could not decode or a point a
// sink refused. It is kept, counted and logged, never silently dropped.
type DeadLetter struct {
	Time time.Time
	// Component is "source" or "sink"; Name is the configured name of the connector.
	Component string
	Name      string
	// Class is a short, bounded reason class used as a metric label ("json_syntax",
	// "missing_field", "type_conflict", ...).
	Class string
	// Reason is the full, human-readable reason.
	Reason string
	// Origin says where the input came from (an MQTT topic, a node id).
	Origin string
	// Payload holds the raw input for decoding failures (truncated by the store).
	Payload []byte
	// Point holds the refused point for sink rejections.
	Point *telemetry.Point
}

// DeadLetters receives dead letters. Put must not block for long and is safe for concurrent use.
type DeadLetters interface {
	Put(ctx context.Context, dl DeadLetter)
}

// Env is what the gateway hands every connector it builds: a pre-scoped logger, the
// registerer for protocol-specific metrics, and the dead-letter store.
type Env struct {
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
	DeadLetters DeadLetters
}

// WithDefaults fills unset fields with working no-op defaults (for tests and tools).
func (e Env) WithDefaults() Env {
	if e.Logger == nil {
		e.Logger = slog.New(slog.DiscardHandler)
	}
	if e.Registerer == nil {
		e.Registerer = prometheus.NewRegistry()
	}
	if e.DeadLetters == nil {
		e.DeadLetters = discardDeadLetters{}
	}
	return e
}

type discardDeadLetters struct{}

func (discardDeadLetters) Put(context.Context, DeadLetter) {}

// SanitizeClass lower-cases a reason class and keeps it to a short snake_case word, so that
// metric labels stay bounded whatever an adapter passes.
func SanitizeClass(class string) string {
	if class == "" {
		return "other"
	}
	var b strings.Builder
	for _, r := range strings.ToLower(class) {
		if b.Len() >= 32 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
