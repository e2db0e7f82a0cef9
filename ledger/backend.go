package ledger

import (
	"context"
	"errors"
	"time"
)

// Errors of backends, matched with errors.Is.
var (
	// ErrNotFound: no record with that id (or no record producing that model version).
	ErrNotFound = errors.New("not found")
	// ErrRejected: the backend refuses the record for good (it fails validation, or its
	// signer may not write it); retrying cannot help.
	ErrRejected = errors.New("record rejected")
	// ErrConflict: another record with the same id, but a different hash, is already
	// anchored. Permanent too.
	ErrConflict = errors.New("record id already anchored with a different hash")
)

// IsPermanent reports whether an Anchor error means the record will never be accepted.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrRejected) || errors.Is(err, ErrConflict)
}

// Recorder is the one call models, federation and firmware make to attest an event.
type Recorder interface {
	// Record fills the header of a record with body (id, time, actor, site, previous
	// hash), signs it and queues it durably for the ledger; it returns the signed record
	// once it is on local disk and never waits for the ledger backend. A body that fails
	// validation is an error naming its fields; a full queue is an error wrapping
	// ErrOutboxFull, and the record was not queued: the caller decides whether to retry
	// later or fail its own operation. Safe for concurrent use; records of concurrent
	// calls are chained in the order they were queued.
	Record(ctx context.Context, body Body) (Record, error)
}

// IDRecorder is a Recorder whose caller chooses a record's id (NameID of what the record
// is about) and can ask later, after a crash for instance, whether that record was made:
// an event is then recorded once even when the caller cannot tell whether its last
// Record call went through.
type IDRecorder interface {
	Recorder
	// RecordAs is Record with the record's id set to id, a UUID.
	RecordAs(ctx context.Context, id string, body Body) (Record, error)
	// Recorded returns the record with id if this recorder queued it: still waiting for
	// the backend, or anchored. ok is false when there is none; an error means it could
	// not tell (the backend did not answer).
	Recorded(ctx context.Context, id string) (rec Record, ok bool, err error)
}

// Backend is where records are anchored: a Fabric channel or the local hash-chained file.
type Backend interface {
	// Anchor stores rec. It is idempotent: a record whose id is already anchored with the
	// same hash is a success. An error wrapping ErrRejected or ErrConflict is permanent;
	// any other error is transient and the caller retries the same record later. Safe for
	// concurrent use.
	Anchor(ctx context.Context, rec Record) error
	// Get returns the record with id, or an error wrapping ErrNotFound.
	Get(ctx context.Context, id string) (Record, error)
}

// Query selects records; zero fields do not filter. Records come back in ledger order.
type Query struct {
	Type  Type
	Site  string
	Model ModelRef // records about this model version (Subject); Version "" matches every version
	From  time.Time
	To    time.Time // exclusive
	Limit int       // 0 means no limit
}

// Match reports whether rec satisfies q.
func (q Query) Match(rec Record) bool {
	h := rec.Header
	if (q.Type != "" && h.Type != q.Type) || (q.Site != "" && h.Site != q.Site) ||
		(!q.From.IsZero() && h.Time.Before(q.From)) || (!q.To.IsZero() && !h.Time.Before(q.To)) {
		return false
	}
	if q.Model.Model == "" {
		return true
	}
	body, err := rec.DecodeBody()
	if err != nil {
		return false
	}
	s, ok := body.(Subject)
	if !ok {
		return false
	}
	m := s.About()
	return m.Model == q.Model.Model && (q.Model.Version == "" || m.Version == q.Model.Version)
}

// Lineage is the provenance of one model version: the records that produced it and each of
// its ancestors, and the dataset snapshots they were trained on.
type Lineage struct {
	Root     ModelRef
	Versions []Record   // producing records (local_training, federated_round), root first, breadth-first
	Datasets []Record   // dataset_snapshot records the versions name
	Missing  []string   // ancestors ("model@version") and dataset ids named but not in the ledger
	Edges    []LineEdge // child derived from parent
}

// LineEdge says Child was derived from Parent (PROV wasDerivedFrom).
type LineEdge struct {
	Child, Parent ModelRef
}

// Appended is when a ledger appended a record: At, give or take Tolerance.
type Appended struct {
	At        time.Time
	Tolerance time.Duration
}

// After returns the time the record was certainly appended after.
func (a Appended) After() time.Time { return a.At.Add(-a.Tolerance) }

// AppendTimes is a Querier that also vouches for when records were appended, whatever
// time their signers wrote in them: Fabric's chaincode keeps each record's transaction
// time, which the endorsing peers checked against their own clocks.
type AppendTimes interface {
	// Appended returns, for each of ids whose append time the ledger holds, when it
	// appended the record; ids it holds none for are absent.
	Appended(ctx context.Context, ids []string) (map[string]Appended, error)
}

// Querier is a Backend that also answers the auditor's questions.
type Querier interface {
	Backend
	// Query returns the records q selects, in ledger order.
	Query(ctx context.Context, q Query) ([]Record, error)
	// Lineage returns the provenance DAG of m; ErrNotFound if no record produced m.
	Lineage(ctx context.Context, m ModelRef) (Lineage, error)
}
