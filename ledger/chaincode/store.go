package chaincode

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/chaincode/wire"
)

// Stub is the part of shim.ChaincodeStubInterface the store uses; tests hand it a fake.
type Stub interface {
	GetState(key string) ([]byte, error)
	PutState(key string, value []byte) error
	GetStateByRange(startKey, endKey string) (shim.StateQueryIteratorInterface, error)
	GetHistoryForKey(key string) (shim.HistoryQueryIteratorInterface, error)
	SetEvent(name string, payload []byte) error
	// GetTxTimestamp is the transaction's time, as the submitting client set it.
	GetTxTimestamp() (*timestamppb.Timestamp, error)
}

// Policy says which organisations (MSP ids) play which role.
type Policy struct {
	// Hubs may write federated_round records (the federation hub's organisation).
	Hubs []string
	// Readers only read: every write of theirs is refused (auditors).
	Readers []string
	// ClockTolerance is how far a record's transaction time may be from the endorsing
	// peer's clock. The chaincode stores that time with the record (wire.Appended), so
	// that an auditor knows when a record was appended whatever time its signer claims.
	ClockTolerance time.Duration
}

// DefaultClockTolerance is Policy.ClockTolerance unless configured: what clocks kept by
// NTP, or set by hand now and then, stay within.
const DefaultClockTolerance = 5 * time.Minute

// DefaultPolicy is the policy of the network deploy/fabric builds.
func DefaultPolicy() Policy {
	return Policy{Hubs: []string{"oem"}, Readers: []string{"auditor"}, ClockTolerance: DefaultClockTolerance}
}

// PolicyFromEnv returns DefaultPolicy with LINEAGE_HUB_ORGS and LINEAGE_READER_ORGS
// (space- or comma-separated MSP ids) replacing its lists, and LINEAGE_CLOCK_TOLERANCE
// (a Go duration) its clock tolerance, when set.
func PolicyFromEnv() (Policy, error) {
	p := DefaultPolicy()
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
	}
	if v, ok := os.LookupEnv("LINEAGE_HUB_ORGS"); ok {
		p.Hubs = split(v)
	}
	if v, ok := os.LookupEnv("LINEAGE_READER_ORGS"); ok {
		p.Readers = split(v)
	}
	if v, ok := os.LookupEnv("LINEAGE_CLOCK_TOLERANCE"); ok {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return p, fmt.Errorf("LINEAGE_CLOCK_TOLERANCE=%q: expected a positive duration (5m)", v)
		}
		p.ClockTolerance = d
	}
	return p, nil
}

// errorf returns an error whose message opens with tag, for the client to classify.
func errorf(tag, format string, args ...any) error {
	return errors.New(tag + " " + fmt.Sprintf(format, args...))
}

const timeKey = "2006-01-02T15:04:05.000000000Z"

func fmtTime(t time.Time) string { return t.UTC().Format(timeKey) }

func key(parts ...string) string { return strings.Join(parts, " ") }

// prefixEnd is the exclusive end of the range of keys starting with prefix, which ends
// with the separator ' '; '!' is the next byte.
func prefixEnd(prefix string) string { return prefix[:len(prefix)-1] + "!" }

// Store is the chaincode's logic over a Stub: what the contract's transactions call.
type Store struct {
	Policy Policy
	// Now is the endorsing peer's clock; nil is time.Now.
	Now func() time.Time
}

// appended checks the transaction's time against the peer's clock and returns what
// Anchor stores of it.
func (s Store) appended(st Stub, id string) (wire.Appended, error) {
	ts, err := st.GetTxTimestamp()
	if err != nil {
		return wire.Appended{}, fmt.Errorf("record %s: transaction time: %w", id, err)
	}
	if err := ts.CheckValid(); err != nil {
		return wire.Appended{}, errorf(wire.TagRejected, "record %s: transaction time: %v", id, err)
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	tx, peer := ts.AsTime().UTC(), now().UTC()
	tol := s.Policy.ClockTolerance
	if tol <= 0 {
		tol = DefaultClockTolerance
	}
	if off := tx.Sub(peer); off > tol || off < -tol {
		return wire.Appended{}, errorf(wire.TagClock, "record %s: the transaction's time %s is %v from this peer's clock (%s), expected within %v: the submitting client's clock or this peer's is off (NTP)",
			id, tx.Format(time.RFC3339), off.Round(time.Second), peer.Format(time.RFC3339), tol)
	}
	return wire.Appended{Time: tx.Format(time.RFC3339Nano), Tolerance: tol.String()}, nil
}

// Anchor stores the record recJSON on behalf of a client of MSP msp.
func (s Store) Anchor(st Stub, msp, recJSON string) (wire.AnchorResult, error) {
	if slices.Contains(s.Policy.Readers, msp) {
		return wire.AnchorResult{}, errorf(wire.TagRejected, "organisation %q only reads the ledger", msp)
	}
	rec, err := ledger.DecodeRecord([]byte(recJSON))
	if err != nil {
		return wire.AnchorResult{}, errorf(wire.TagRejected, "invalid record: %v", err)
	}
	h := rec.Header
	if h.Actor.Org != msp {
		return wire.AnchorResult{}, errorf(wire.TagRejected, "record %s: actor org %q is not the submitting organisation %q (a client writes only its own organisation's records)", h.ID, h.Actor.Org, msp)
	}
	if h.Type == ledger.TypeFederatedRound && !slices.Contains(s.Policy.Hubs, msp) {
		return wire.AnchorResult{}, errorf(wire.TagRejected, "record %s: organisation %q may not write %s records, expected one of %v", h.ID, msp, h.Type, s.Policy.Hubs)
	}
	canon, err := ledger.MarshalRecord(rec)
	if err != nil {
		return wire.AnchorResult{}, errorf(wire.TagRejected, "record %s: %v", h.ID, err)
	}
	hash, err := ledger.Hash(rec)
	if err != nil {
		return wire.AnchorResult{}, errorf(wire.TagRejected, "record %s: %v", h.ID, err)
	}
	res := wire.AnchorResult{ID: h.ID, Hash: hash}
	if old, err := st.GetState(key("r", h.ID)); err != nil {
		return res, fmt.Errorf("read record %s: %w", h.ID, err)
	} else if old != nil {
		oldRec, err := ledger.DecodeRecord(old)
		if err != nil {
			return res, fmt.Errorf("stored record %s: %w", h.ID, err)
		}
		oldHash, err := ledger.Hash(oldRec)
		if err != nil {
			return res, err
		}
		if oldHash != hash {
			return res, errorf(wire.TagConflict, "record %s is anchored with hash %s, this one has %s", h.ID, oldHash, hash)
		}
		res.Existed = true
		return res, nil
	}
	k, err := s.getKey(st, h.Actor.KeyID)
	if err != nil {
		if strings.HasPrefix(err.Error(), wire.TagNotFound) {
			return res, errorf(wire.TagUnknownActor, "record %s: key id %s (%s of %s) is not registered: register it with %s first", h.ID, h.Actor.KeyID, h.Actor.Name, h.Actor.Org, wire.FnRegisterKey)
		}
		return res, err
	}
	if k.Org != h.Actor.Org {
		return res, errorf(wire.TagRejected, "record %s: key id %s belongs to organisation %q, not to the actor org %q", h.ID, h.Actor.KeyID, k.Org, h.Actor.Org)
	}
	pub, _ := base64.StdEncoding.DecodeString(k.Public) // checked at registration
	if err := ledger.Verify(rec, pub); err != nil {
		return res, errorf(wire.TagRejected, "%v", err)
	}
	// The clock after the signature: a record refused for good for what it is (invalid,
	// forged) is told so whatever the client's clock says; and before the site's owner,
	// which may be written.
	app, err := s.appended(st, h.ID)
	if err != nil {
		return res, err
	}
	appJSON, err := json.Marshal(app)
	if err != nil {
		return res, err
	}
	owner, err := st.GetState(key("o", h.Site))
	if err != nil {
		return res, fmt.Errorf("read owner of site %s: %w", h.Site, err)
	}
	switch {
	case owner == nil:
		if err := st.PutState(key("o", h.Site), []byte(msp)); err != nil {
			return res, err
		}
	case string(owner) != msp:
		return res, errorf(wire.TagRejected, "record %s: site %q belongs to organisation %q, not %q", h.ID, h.Site, owner, msp)
	}

	t := fmtTime(h.Time)
	puts := [][2]string{
		{key("r", h.ID), string(canon)},
		{key("a", h.ID), string(appJSON)},
		{key("t", t, h.ID), h.ID},
		{key("s", h.Site, t, h.ID), h.ID},
	}
	if body, err := rec.DecodeBody(); err == nil { // decoded by DecodeRecord: cannot fail
		if sub, ok := body.(ledger.Subject); ok {
			m := sub.About()
			puts = append(puts, [2]string{key("m", m.Model, m.Version, t, h.ID), h.ID})
		}
		if p, ok := body.(ledger.Producer); ok {
			m, _, _ := p.Produces()
			puts = append(puts, [2]string{key("p", m.Model, m.Version, t, h.ID), h.ID})
		}
	}
	for _, kv := range puts {
		if err := st.PutState(kv[0], []byte(kv[1])); err != nil {
			return res, fmt.Errorf("write %q: %w", kv[0], err)
		}
	}
	ev, err := json.Marshal(wire.Event{ID: h.ID, Type: h.Type, Site: h.Site, Org: msp, Time: h.Time.Format(time.RFC3339Nano), Hash: hash})
	if err != nil {
		return res, err
	}
	return res, st.SetEvent(wire.EventRecord, ev)
}

// RegisterKey registers an actor's public key for organisation msp.
func (s Store) RegisterKey(st Stub, msp, name, pubB64 string) (wire.Key, error) {
	if slices.Contains(s.Policy.Readers, msp) {
		return wire.Key{}, errorf(wire.TagRejected, "organisation %q only reads the ledger", msp)
	}
	pub, err := base64.StdEncoding.Strict().DecodeString(pubB64)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return wire.Key{}, errorf(wire.TagRejected, "public key %.60q: expected %d bytes of ed25519 public key in padded standard base64", pubB64, ed25519.PublicKeySize)
	}
	if name == "" || len(name) > 4096 {
		return wire.Key{}, errorf(wire.TagRejected, "actor name of %d bytes, expected 1 to 4096", len(name))
	}
	k := wire.Key{KeyID: ledger.KeyID(pub), Name: name, Org: msp, Public: pubB64}
	old, err := s.getKey(st, k.KeyID)
	switch {
	case err == nil && old.Org == msp:
		return old, nil // registered already: the first name stays
	case err == nil:
		return wire.Key{}, errorf(wire.TagConflict, "key id %s is registered to organisation %q", k.KeyID, old.Org)
	case !strings.HasPrefix(err.Error(), wire.TagNotFound):
		return wire.Key{}, err
	}
	b, err := json.Marshal(k)
	if err != nil {
		return wire.Key{}, err
	}
	return k, st.PutState(key("k", k.KeyID), b)
}

// GetKey returns a registered key.
func (s Store) GetKey(st Stub, keyID string) (wire.Key, error) { return s.getKey(st, keyID) }

func (s Store) getKey(st Stub, keyID string) (wire.Key, error) {
	b, err := st.GetState(key("k", keyID))
	if err != nil {
		return wire.Key{}, fmt.Errorf("read key %s: %w", keyID, err)
	}
	if b == nil {
		return wire.Key{}, errorf(wire.TagNotFound, "key id %s", keyID)
	}
	var k wire.Key
	if err := json.Unmarshal(b, &k); err != nil {
		return wire.Key{}, fmt.Errorf("stored key %s: %w", keyID, err)
	}
	return k, nil
}

// Get returns the canonical JSON of the record with id.
func (s Store) Get(st Stub, id string) ([]byte, error) {
	b, err := st.GetState(key("r", id))
	if err != nil {
		return nil, fmt.Errorf("read record %s: %w", id, err)
	}
	if b == nil {
		return nil, errorf(wire.TagNotFound, "record %s", id)
	}
	return b, nil
}

func (s Store) record(st Stub, id string) (ledger.Record, bool, error) {
	b, err := st.GetState(key("r", id))
	if err != nil || b == nil {
		return ledger.Record{}, false, err
	}
	var rec ledger.Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return ledger.Record{}, false, fmt.Errorf("stored record %s: %w", id, err)
	}
	return rec, true, nil
}

// scan calls fn with the value of every key in [start, end) in key order until fn
// returns false.
func scan(st Stub, start, end string, fn func(k, v string) (bool, error)) error {
	it, err := st.GetStateByRange(start, end)
	if err != nil {
		return fmt.Errorf("range %q: %w", start, err)
	}
	defer it.Close()
	for it.HasNext() {
		kv, err := it.Next()
		if err != nil {
			return fmt.Errorf("range %q: %w", start, err)
		}
		more, err := fn(kv.Key, string(kv.Value))
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// Query returns the page of records q selects after bookmark (a key of the index the
// query walks), in time order, then id order.
func (s Store) Query(st Stub, qJSON, bookmark string) (wire.Page, error) {
	var wq wire.Query
	dec := json.NewDecoder(strings.NewReader(qJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wq); err != nil {
		return wire.Page{}, errorf(wire.TagRejected, "query: %v", err)
	}
	q := ledger.Query{Type: wq.Type, Site: wq.Site, Model: ledger.ModelRef{Model: wq.Model, Version: wq.Version}, Limit: wq.Limit}
	for _, f := range []struct {
		name string
		s    string
		t    *time.Time
	}{{"from", wq.From, &q.From}, {"to", wq.To, &q.To}} {
		if f.s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, f.s)
		if err != nil {
			return wire.Page{}, errorf(wire.TagRejected, "query %s: %q is not RFC 3339", f.name, f.s)
		}
		*f.t = t.UTC()
	}
	if wq.Model == "" && wq.Version != "" {
		return wire.Page{}, errorf(wire.TagRejected, "query: version %q without a model", wq.Version)
	}
	// The index: the narrowest that the query names. Site and model indexes put the time
	// after the name, so a time range narrows them too.
	var prefix string
	timed := true
	switch {
	case q.Model.Model != "" && q.Model.Version != "":
		prefix = key("m", q.Model.Model, q.Model.Version, "")
	case q.Model.Model != "":
		prefix, timed = key("m", q.Model.Model, ""), false
	case q.Site != "":
		prefix = key("s", q.Site, "")
	default:
		prefix = key("t", "")
	}
	start, end := prefix, prefixEnd(prefix)
	if timed && !q.From.IsZero() {
		start = prefix + fmtTime(q.From)
	}
	if timed && !q.To.IsZero() {
		end = prefix + fmtTime(q.To)
	}
	if bookmark != "" {
		if bookmark < start || bookmark >= end {
			return wire.Page{}, errorf(wire.TagRejected, "query: bookmark %q is not of this query", bookmark)
		}
		start = bookmark + "\x00"
	}
	page := wire.Page{Records: []ledger.Record{}}
	err := scan(st, start, end, func(k, id string) (bool, error) {
		if len(page.Records) == wire.PageSize {
			return false, nil
		}
		rec, ok, err := s.record(st, id)
		if err != nil || !ok {
			return err == nil, err
		}
		page.Bookmark = k
		if q.Match(rec) {
			page.Records = append(page.Records, rec)
		}
		return true, nil
	})
	if err != nil {
		return wire.Page{}, err
	}
	if len(page.Records) < wire.PageSize {
		page.Bookmark = ""
	}
	if !timed {
		// Versions of one model interleave in the index: order the page by time.
		slices.SortStableFunc(page.Records, func(a, b ledger.Record) int { return a.Header.Time.Compare(b.Header.Time) })
	}
	return page, nil
}

// producers returns the records producing m, in time order.
func (s Store) producers(st Stub, m ledger.ModelRef) ([]ledger.Record, error) {
	var out []ledger.Record
	prefix := key("p", m.Model, m.Version, "")
	err := scan(st, prefix, prefixEnd(prefix), func(_, id string) (bool, error) {
		rec, ok, err := s.record(st, id)
		if ok {
			out = append(out, rec)
		}
		return true, err
	})
	return out, err
}

// Lineage returns the provenance DAG of m: its producing records and theirs, breadth
// first, and the dataset snapshots they name.
func (s Store) Lineage(st Stub, model, version string) (wire.Lineage, error) {
	root := ledger.ModelRef{Model: model, Version: version}
	lin, err := ledger.WalkLineage(root, func(v ledger.ModelRef) ([]ledger.Record, error) {
		return s.producers(st, v)
	}, func(id string) (ledger.Record, bool, error) {
		return s.record(st, id)
	})
	if errors.Is(err, ledger.ErrNotFound) {
		return wire.Lineage{}, errorf(wire.TagNotFound, "no record produces %s", root)
	}
	if err != nil {
		return wire.Lineage{}, err
	}
	return wire.Lineage(lin), nil
}

// Appended returns when the records of idsJSON (a JSON array of at most wire.PageSize
// ids) were appended, for those whose time the ledger holds.
func (s Store) Appended(st Stub, idsJSON string) (map[string]wire.Appended, error) {
	var ids []string
	if err := json.Unmarshal([]byte(idsJSON), &ids); err != nil {
		return nil, errorf(wire.TagRejected, "ids %.60q: expected a JSON array of record ids", idsJSON)
	}
	if len(ids) > wire.PageSize {
		return nil, errorf(wire.TagRejected, "%d ids, expected at most %d", len(ids), wire.PageSize)
	}
	out := make(map[string]wire.Appended, len(ids))
	for _, id := range ids {
		b, err := st.GetState(key("a", id))
		if err != nil {
			return nil, fmt.Errorf("read append time of %s: %w", id, err)
		}
		if b == nil {
			continue
		}
		var a wire.Appended
		if err := json.Unmarshal(b, &a); err != nil {
			return nil, fmt.Errorf("stored append time of %s: %w", id, err)
		}
		out[id] = a
	}
	return out, nil
}

// History returns the writes of record id's key: when, in which transaction.
func (s Store) History(st Stub, id string) ([]wire.HistoryEntry, error) {
	it, err := st.GetHistoryForKey(key("r", id))
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", id, err)
	}
	defer it.Close()
	out := []wire.HistoryEntry{}
	for it.HasNext() {
		m, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("history of %s: %w", id, err)
		}
		e := wire.HistoryEntry{TxID: m.TxId}
		if ts := m.GetTimestamp(); ts != nil {
			e.Time = ts.AsTime().UTC().Format(time.RFC3339Nano)
		}
		if rec, err := ledger.DecodeRecord(m.Value); err == nil {
			e.Hash, _ = ledger.Hash(rec)
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, errorf(wire.TagNotFound, "record %s", id)
	}
	return out, nil
}
