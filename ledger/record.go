package ledger

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
)

// SchemaVersion is the version of the record schema this package writes and accepts.
const SchemaVersion = 1

// Type names the kind of event a record attests.
type Type string

// The record types.
const (
	TypeDatasetSnapshot Type = "dataset_snapshot"
	TypeLocalTraining   Type = "local_training"
	TypeFederatedRound  Type = "federated_round"
	TypeEvaluation      Type = "evaluation"
	TypeApproval        Type = "approval"
	TypeRelease         Type = "release"
	TypeDeployment      Type = "deployment"
	TypeRollback        Type = "rollback"
	TypeAlarmDigest     Type = "alarm_digest"
)

// Types lists every record type, in the order of a model's life.
var Types = []Type{TypeDatasetSnapshot, TypeLocalTraining, TypeFederatedRound, TypeEvaluation,
	TypeApproval, TypeRelease, TypeDeployment, TypeRollback, TypeAlarmDigest}

// Actor identifies who signed a record: the fingerprint of an ed25519 public key (see
// KeyID) plus the human-readable name and organisation it was registered under.
type Actor struct {
	KeyID string `json:"key_id"`
	Name  string `json:"name"`
	Org   string `json:"org"`
}

// Header is what every record carries besides its body.
type Header struct {
	// ID is a UUID, lower case: random (version 4, NewID), or derived from what the record
	// is about (version 8, NameID) when its writer must be able to find it again.
	ID              string    `json:"id"`
	SchemaVersion   int64     `json:"schema_version"`
	Type            Type      `json:"type"`
	Time            time.Time `json:"time"` // UTC, RFC 3339 with nanoseconds
	Actor           Actor     `json:"actor"`
	Site            string    `json:"site"`
	Gateway         string    `json:"gateway,omitempty"` // empty for records of the hub or people
	FirmwareVersion string    `json:"firmware_version,omitempty"`
	Prev            string    `json:"prev"` // Hash of the actor's previous record, "" for its first
}

// Record is one signed ledger entry. Body holds the JSON (canonical when this package wrote
// it; hashes and signatures canonicalize it anyway) of the typed body named
// by Header.Type (decode it with DecodeBody); Signature is the base64 (standard, padded)
// ed25519 signature over SigningBytes.
type Record struct {
	Header    Header          `json:"header"`
	Body      json.RawMessage `json:"body"`
	Signature string          `json:"signature"`
}

// Hash returns the record's identity in chains: the lower-case hex SHA-256 of the canonical
// JSON of the whole record, signature included.
func Hash(rec Record) (string, error) {
	b, err := CanonicalMarshal(rec)
	if err != nil {
		return "", fmt.Errorf("hash record %s: %w", rec.Header.ID, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// NewID returns a random version 4 UUID.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b[:])
}

// NameID returns the UUID (version 8, RFC 9562) named by parts: the first 122 bits of the
// SHA-256 of the parts, each length-prefixed, so different parts never name the same id.
// A writer that derives a record's id from what the record is about (the round, the model)
// can ask after a crash whether that record was made (IDRecorder).
func NameID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	b := h.Sum(nil)[:16]
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b)
}

func formatUUID(b []byte) string {
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

var (
	uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	hashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// nameRE is what site, gateway, model and similar identifiers may look like: they end
	// up in file names, query keys and reports.
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}$`)
)

const hashExpect = "expected 64 lower-case hex digits (SHA-256)"

func checkHash(p *config.Problems, path, v string) {
	if !hashRE.MatchString(v) {
		p.Addf(path, "%q is not a hash, %s", v, hashExpect)
	}
}

// ValidName reports whether v is an identifier as records use them (a site, a model, a
// version, a channel): 1 to 128 of A-Z a-z 0-9 _ . : @ / + - starting with a letter or digit.
func ValidName(v string) bool { return nameRE.MatchString(v) }

func checkName(p *config.Problems, path, v string) {
	switch {
	case v == "":
		p.Addf(path, "missing, expected an identifier")
	case !nameRE.MatchString(v):
		p.Addf(path, "%q is not an identifier, expected 1 to 128 of A-Z a-z 0-9 _ . : @ / + - starting with a letter or digit", v)
	}
}

func checkText(p *config.Problems, path, v string, required bool) {
	switch {
	case v == "" && required:
		p.Addf(path, "missing, expected text")
	case len(v) > 4096:
		p.Addf(path, "is %d bytes long, expected at most 4096", len(v))
	}
}

// Validate reports every problem of the header at once, with paths relative to it.
func (h Header) Validate() error {
	var p config.Problems
	if !uuidRE.MatchString(h.ID) {
		p.Addf("id", "%q is not an id, expected a lower-case UUID", h.ID)
	}
	if h.SchemaVersion != SchemaVersion {
		p.Addf("schema_version", "%d is not supported, expected %d", h.SchemaVersion, SchemaVersion)
	}
	if _, ok := bodyFactories[h.Type]; !ok {
		p.Addf("type", "%q is not a record type, expected one of %v", h.Type, Types)
	}
	if h.Time.IsZero() {
		p.Addf("time", "missing, expected RFC 3339 UTC")
	} else if h.Time.Location() != time.UTC {
		p.Addf("time", "%q is not in UTC, expected RFC 3339 UTC", h.Time.Format(time.RFC3339Nano))
	}
	if !hashRE.MatchString(h.Actor.KeyID) {
		p.Addf("actor.key_id", "%q is not a key fingerprint, %s of the public key", h.Actor.KeyID, hashExpect)
	}
	checkText(&p, "actor.name", h.Actor.Name, true)
	checkName(&p, "actor.org", h.Actor.Org)
	checkName(&p, "site", h.Site)
	if h.Gateway != "" {
		checkName(&p, "gateway", h.Gateway)
	}
	checkText(&p, "firmware_version", h.FirmwareVersion, false)
	if h.Prev != "" {
		checkHash(&p, "prev", h.Prev)
	}
	return p.Err()
}

// DecodeRecord decodes one record strictly: the JSON must be canonicalizable (valid UTF-8,
// no duplicate members), every member must be known, every value of the expected type, the
// header valid, and the body valid for the header's type. Every problem is reported at
// once, each with its path ("header.time: ... expected RFC 3339 UTC"). The signature is
// not verified: see Verify.
func DecodeRecord(b []byte) (Record, error) {
	if _, err := Canonicalize(b); err != nil {
		return Record{}, fmt.Errorf("record: %w", err)
	}
	var p config.Problems
	var rec Record
	if !checkJSON(&p, "", b, recordType) {
		return Record{}, p.Err()
	}
	if err := json.Unmarshal(b, &rec); err != nil { // checkJSON accepted the values: cannot fail
		return Record{}, fmt.Errorf("record: %w", err)
	}
	// Unknown fields alone do not stop decoding, so that the values' problems are
	// reported with them.
	p.Nest("", rec.Validate())
	if err := p.Err(); err != nil {
		return Record{}, err
	}
	return rec, nil
}

// Validate checks the header, the body against the header's type, and the signature's
// encoding (not its validity), reporting every problem with its path.
func (r Record) Validate() error {
	var p config.Problems
	p.Nest("header", r.Header.Validate())
	if len(r.Body) == 0 {
		p.Addf("body", "missing, expected an object")
	} else if _, err := DecodeBody(r.Header.Type, r.Body); err != nil {
		p.Nest("body", err)
	}
	if _, err := decodeSignature(r.Signature); err != nil {
		p.Addf("signature", "%v", err)
	}
	return p.Err()
}

// MarshalRecord returns the canonical JSON of rec, the form the outbox and the local ledger
// store.
func MarshalRecord(rec Record) ([]byte, error) { return CanonicalMarshal(rec) }
