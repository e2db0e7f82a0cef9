// Package wire is the contract between the lineage chaincode and its clients: function
// names, argument and result documents, and the error tags that say whether a refusal is
// permanent. It imports no Fabric package, so the gateway's client can share it.
package wire

import (
	"fmt"
	"strings"
	"time"

	"github.com/millwright-io/millwright/ledger"
)

// Chaincode functions. Every argument is a string; every result is a JSON document.
const (
	// FnAnchor(record JSON) -> AnchorResult. Submit.
	FnAnchor = "Anchor"
	// FnRegisterKey(name, base64 ed25519 public key) -> Key. Submit; the key belongs to
	// the submitter's organisation.
	FnRegisterKey = "RegisterKey"
	// FnGetKey(key id) -> Key.
	FnGetKey = "GetKey"
	// FnGet(id) -> record JSON.
	FnGet = "Get"
	// FnQuery(Query JSON, bookmark) -> Page.
	FnQuery = "Query"
	// FnLineage(model, version) -> Lineage.
	FnLineage = "Lineage"
	// FnHistory(id) -> []HistoryEntry.
	FnHistory = "History"
	// FnAppended(JSON array of at most PageSize ids) -> map from id to Appended, for the
	// records whose append time the ledger holds (records anchored by a chaincode older
	// than this function have none).
	FnAppended = "Appended"
)

// EventRecord is the name of the chaincode event every new record emits; its payload is
// an Event.
const EventRecord = "lineage.record"

// Error tags open the message of every refusal, so that a client can tell what went
// wrong across the Fabric error wrapping ("chaincode response 500, rejected: ...").
const (
	// TagRejected: the record or key is refused for good (invalid, bad signature, wrong
	// organisation, read-only organisation).
	TagRejected = "rejected:"
	// TagConflict: the id is anchored already with another hash (or the key id is
	// registered to another organisation).
	TagConflict = "conflict:"
	// TagUnknownActor: the record's key id is not registered yet. Not permanent: the
	// client registers the key and retries.
	TagUnknownActor = "unknown actor:"
	// TagNotFound: no such record, key or model version.
	TagNotFound = "not found:"
	// TagClock: the transaction's time is further from the endorsing peer's clock than
	// the chaincode's tolerance. Not permanent: once the submitting client's clock is
	// right (NTP), the retry goes through.
	TagClock = "clock:"
)

// Tagged reports the tag msg carries ("" if none). Fabric wraps the chaincode's message
// in its own text, so the tag may come after a prefix; the first tag in msg counts, since
// the rest of a message may quote a record's own text.
func Tagged(msg string) string {
	tag, at := "", len(msg)
	for _, t := range []string{TagRejected, TagConflict, TagUnknownActor, TagNotFound, TagClock} {
		if i := strings.Index(msg, t); i >= 0 && i < at {
			tag, at = t, i
		}
	}
	return tag
}

// AnchorResult is what Anchor returns.
type AnchorResult struct {
	ID   string `json:"id"`
	Hash string `json:"hash"`
	// Existed is true when the record was anchored before with the same hash: the call
	// changed nothing (idempotent success).
	Existed bool `json:"existed"`
}

// Key is an actor's public key as registered on the ledger.
type Key struct {
	KeyID  string `json:"key_id"`
	Name   string `json:"name"`
	Org    string `json:"org"` // the MSP id that registered it
	Public string `json:"public"`
}

// Query is the JSON form of ledger.Query.
type Query struct {
	Type    ledger.Type `json:"type,omitempty"`
	Site    string      `json:"site,omitempty"`
	Model   string      `json:"model,omitempty"`
	Version string      `json:"version,omitempty"`
	From    string      `json:"from,omitempty"` // RFC 3339
	To      string      `json:"to,omitempty"`   // RFC 3339, exclusive
	Limit   int         `json:"limit,omitempty"`
}

// PageSize is the most records one Query call returns; Page.Bookmark continues.
const PageSize = 200

// Page is one page of query results.
type Page struct {
	Records []ledger.Record `json:"records"`
	// Bookmark is passed to the next Query call; "" when there are no more records.
	Bookmark string `json:"bookmark,omitempty"`
}

// Lineage is the JSON form of ledger.Lineage.
type Lineage struct {
	Root     ledger.ModelRef   `json:"root"`
	Versions []ledger.Record   `json:"versions"`
	Datasets []ledger.Record   `json:"datasets"`
	Missing  []string          `json:"missing"`
	Edges    []ledger.LineEdge `json:"edges"`
}

// HistoryEntry is one write of a record's key, as the peer's history database has it:
// for an append-only record there is exactly one.
type HistoryEntry struct {
	TxID string `json:"tx_id"`
	Time string `json:"time"` // RFC 3339, the transaction's timestamp
	Hash string `json:"hash"` // of the record written
}

// Appended is when a record was appended to the ledger: the time of the transaction that
// wrote it, which each endorsing peer checked against its own clock, to within Tolerance,
// before it endorsed the write. Unlike the record's own time, its signer cannot choose it.
type Appended struct {
	Time      string `json:"time"`      // RFC 3339, the transaction's timestamp
	Tolerance string `json:"tolerance"` // a Go duration ("5m0s")
}

// Ledger returns a as the ledger package has it.
func (a Appended) Ledger() (ledger.Appended, error) {
	t, err := time.Parse(time.RFC3339Nano, a.Time)
	if err != nil {
		return ledger.Appended{}, fmt.Errorf("appended time %q: expected RFC 3339", a.Time)
	}
	tol, err := time.ParseDuration(a.Tolerance)
	if err != nil || tol < 0 {
		return ledger.Appended{}, fmt.Errorf("appended tolerance %q: expected a non-negative duration (5m0s)", a.Tolerance)
	}
	return ledger.Appended{At: t, Tolerance: tol}, nil
}

// Event is the payload of EventRecord.
type Event struct {
	ID   string      `json:"id"`
	Type ledger.Type `json:"type"`
	Site string      `json:"site"`
	Org  string      `json:"org"`
	Time string      `json:"time"`
	Hash string      `json:"hash"`
}
