// Package local is a ledger backend in one append-only, hash-chained file, for the demo and single-site installs without a Fabric network.
//
// # Threat model
//
// The file is tamper-EVIDENT, not tamper-proof. Every entry carries the SHA-256 of the
// previous entry, its sequence number and its own hash, and every record in it is signed by
// its actor, so editing, deleting, inserting or reordering entries breaks the chain at a
// position VerifyFile reports, and a record altered without its actor's key fails its
// signature. But whoever controls the file can rewrite all of it: recompute every hash
// after the point they changed, and, holding the keys of the actors concerned (often the
// gateway's own key, in the same state directory), re-sign the records too. What detects
// that is the head hash (Head) recorded somewhere the rewriter does not control: printed in
// an audit report, sent to the OEM, or anchored in a distributed ledger. Nothing here keeps
// a record secret: the file holds records as they are, which are hashes, counts and
// identifiers, never process data.
//
// # Format
//
// ledger.jsonl holds one entry per line, each the canonical JSON (RFC 8785) of
//
//	{"hash":H,"prev":P,"record":{...},"seq":N}
//
// where N counts entries from 0, P is the hash of entry N-1 ("" for entry 0) and H is the
// lower-case hex SHA-256 of the canonical JSON of {"prev":P,"record":{...},"seq":N}. Each
// append is fsynced before Anchor returns. A last line without its newline is a torn
// write: Open truncates it and counts it; any other damage makes Open fail, and VerifyFile
// says where.
package local

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/millwright-io/millwright/internal/dirlock"
	"github.com/millwright-io/millwright/ledger"
)

// FileName is the name of the ledger file in its directory.
const FileName = "ledger.jsonl"

// maxLine bounds one entry, so a damaged file cannot make a reader allocate without limit.
const maxLine = 4 << 20

// entry is one line of the ledger file.
type entry struct {
	Hash   string          `json:"hash"`
	Prev   string          `json:"prev"`
	Record json.RawMessage `json:"record"`
	Seq    int64           `json:"seq"`
}

// entryHash returns the hash of an entry's content.
func entryHash(seq int64, prev string, record []byte) (string, error) {
	b, err := ledger.CanonicalMarshal(struct {
		Prev   string          `json:"prev"`
		Record json.RawMessage `json:"record"`
		Seq    int64           `json:"seq"`
	}{prev, record, seq})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// VerifyError says where and why a ledger file fails verification.
type VerifyError struct {
	Entry  int64 // sequence number the entry at Offset should have
	Offset int64 // byte offset of the entry's line
	Reason string
	Err    error // ledger.ErrBadSignature, ledger.ErrUnknownActor, or nil
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("ledger entry %d at offset %d: %s", e.Entry, e.Offset, e.Reason)
}

func (e *VerifyError) Unwrap() error { return e.Err }

// ErrTampered is wrapped by the errors of Open when the chain in the file is broken.
var ErrTampered = errors.New("ledger file fails verification")

// Report summarises a verified ledger file.
type Report struct {
	Entries int64
	Head    string // hash of the last entry: anchor it elsewhere to detect a rewrite
	Torn    int64  // bytes of an incomplete last line (a torn write, not verified)
}

// walk reads the entries of r in order and checks the chain (sequence, prev, hash,
// canonical form, strict record decoding); with keys it checks every signature too. fn
// receives each good entry and its decoded record. It stops at the first problem.
func walk(r io.Reader, keys ledger.Keyring, fn func(off int64, line []byte, rec ledger.Record, hash string)) (Report, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var rep Report
	var off int64
	prev := ""
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			var full []byte
			full = append(full, line...)
			for errors.Is(err, bufio.ErrBufferFull) && len(full) <= maxLine {
				line, err = br.ReadSlice('\n')
				full = append(full, line...)
			}
			line = full
			if len(line) > maxLine {
				return rep, &VerifyError{Entry: rep.Entries, Offset: off, Reason: fmt.Sprintf("line longer than %d bytes", maxLine)}
			}
		}
		if err == io.EOF {
			rep.Torn = int64(len(line))
			return rep, nil
		}
		if err != nil {
			return rep, err
		}
		fail := func(format string, args ...any) error {
			return &VerifyError{Entry: rep.Entries, Offset: off, Reason: fmt.Sprintf(format, args...)}
		}
		body := line[:len(line)-1]
		var e entry
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return rep, fail("not an entry: %v", err)
		}
		canon, err := ledger.CanonicalMarshal(e)
		if err != nil {
			return rep, fail("not an entry: %v", err)
		}
		if !bytes.Equal(canon, body) {
			return rep, fail("not in canonical form")
		}
		if e.Seq != rep.Entries {
			return rep, fail("sequence number is %d, expected %d (an entry was deleted, inserted or moved)", e.Seq, rep.Entries)
		}
		if e.Prev != prev {
			return rep, fail("prev is %q, expected the hash of the entry before, %q", e.Prev, prev)
		}
		h, err := entryHash(e.Seq, e.Prev, e.Record)
		if err != nil {
			return rep, fail("hash: %v", err)
		}
		if h != e.Hash {
			return rep, fail("hash is %q, expected %q (the entry was altered)", e.Hash, h)
		}
		rec, err := ledger.DecodeRecord(e.Record)
		if err != nil {
			return rep, fail("record: %v", err)
		}
		if keys != nil {
			if err := keys.Verify(rec); err != nil {
				return rep, &VerifyError{Entry: rep.Entries, Offset: off, Reason: err.Error(), Err: err}
			}
		}
		if fn != nil {
			fn(off, line, rec, h)
		}
		prev = h
		rep.Head = h
		rep.Entries++
		off += int64(len(line))
	}
}

// VerifyFile checks the whole ledger file at path: the chain of every entry, the strict
// decoding of every record and, when keys is not nil, every record's signature. It returns
// the first problem as a *VerifyError (matched with errors.As; errors.Is finds
// ledger.ErrBadSignature and ledger.ErrUnknownActor through it). A torn last line is
// reported in Report.Torn, not as an error.
func VerifyFile(path string, keys ledger.Keyring) (Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return Report{}, fmt.Errorf("verify ledger: %w", err)
	}
	defer f.Close()
	return walk(f, keys, nil)
}

// Option customises a Ledger.
type Option func(*Ledger)

// WithKeyring makes Anchor verify every record's signature against keys and reject
// records of unknown actors or with bad signatures (ledger.ErrRejected).
func WithKeyring(keys ledger.Keyring) Option { return func(l *Ledger) { l.keys = keys } }

// ReadOnly opens the ledger for reading only: the file is not created and a torn last line
// (an append in progress by the process that writes the ledger) is left alone rather than
// truncated, so an auditor can read a ledger that a gateway or hub is writing. Anchor
// fails with ErrReadOnly.
func ReadOnly() Option { return func(l *Ledger) { l.readOnly = true } }

// ErrReadOnly is returned by Anchor on a ledger opened with ReadOnly.
var ErrReadOnly = errors.New("local ledger opened read-only")

// Ledger is the local backend. It keeps an index of every record in memory. It implements
// ledger.Querier and is safe for concurrent use.
type Ledger struct {
	path     string
	keys     ledger.Keyring
	readOnly bool
	lock     *os.File // the writer's lock on the directory (nil when read-only)

	mu        sync.RWMutex
	f         *os.File
	size      int64
	head      string
	recs      []ledger.Record
	hashes    []string                  // record hashes, by entry
	byID      map[string]int            // entry of a record id
	producers map[ledger.ModelRef][]int // entries of the records producing a version
	torn      int64
}

// Open opens (or creates) the ledger in dir. It checks the chain of the whole file (not
// the signatures: see VerifyFile); a broken chain is an error wrapping ErrTampered. A torn
// last line is truncated and counted (TornBytes). A ledger opened for writing locks dir
// until Close: a second writer, in this process or another, gets an error wrapping
// dirlock.ErrLocked; readers (ReadOnly) take no lock.
func Open(dir string, opts ...Option) (*Ledger, error) {
	l := &Ledger{path: filepath.Join(dir, FileName), byID: map[string]int{}, producers: map[ledger.ModelRef][]int{}}
	for _, o := range opts {
		o(l)
	}
	flag := os.O_RDONLY
	if !l.readOnly {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open local ledger: %w", err)
		}
		// One writer at a time: a second would append under the same sequence numbers.
		lock, err := dirlock.Lock(dir, "another writer of the local ledger (a gateway, a hub or a sign-off command)")
		if err != nil {
			return nil, fmt.Errorf("open local ledger: %w", err)
		}
		l.lock, flag = lock, os.O_RDWR|os.O_CREATE
	}
	if err := l.open(flag); err != nil {
		if l.lock != nil {
			_ = l.lock.Close()
		}
		return nil, err
	}
	return l, nil
}

func (l *Ledger) open(flag int) error {
	f, err := os.OpenFile(l.path, flag, 0o600)
	if err != nil {
		return fmt.Errorf("open local ledger: %w", err)
	}
	rep, err := walk(f, nil, func(off int64, line []byte, rec ledger.Record, _ string) {
		l.index(rec)
		l.size = off + int64(len(line))
	})
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("open local ledger %s: %w: %w", l.path, ErrTampered, err)
	}
	l.head = rep.Head
	if rep.Torn > 0 && !l.readOnly {
		if err := f.Truncate(l.size); err != nil {
			_ = f.Close()
			return fmt.Errorf("open local ledger: truncate torn tail: %w", err)
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return fmt.Errorf("open local ledger: %w", err)
		}
		l.torn = rep.Torn
	}
	l.f = f
	return nil
}

func (l *Ledger) index(rec ledger.Record) {
	i := len(l.recs)
	l.recs = append(l.recs, rec)
	h, _ := ledger.Hash(rec) // decoded strictly before: cannot fail
	l.hashes = append(l.hashes, h)
	l.byID[rec.Header.ID] = i
	if body, err := rec.DecodeBody(); err == nil {
		if p, ok := body.(ledger.Producer); ok {
			v, _, _ := p.Produces()
			l.producers[v] = append(l.producers[v], i)
		}
	}
}

// Anchor implements ledger.Backend: it validates rec (and its signature, WithKeyring),
// appends it and fsyncs the file.
func (l *Ledger) Anchor(ctx context.Context, rec ledger.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if l.readOnly {
		return fmt.Errorf("anchor record %s: %w", rec.Header.ID, ErrReadOnly)
	}
	if err := rec.Validate(); err != nil {
		return fmt.Errorf("anchor record %s: %w: %w", rec.Header.ID, ledger.ErrRejected, err)
	}
	if l.keys != nil {
		if err := l.keys.Verify(rec); err != nil {
			return fmt.Errorf("anchor: %w: %w", ledger.ErrRejected, err)
		}
	}
	payload, err := ledger.MarshalRecord(rec)
	if err != nil {
		return fmt.Errorf("anchor record %s: %w: %w", rec.Header.ID, ledger.ErrRejected, err)
	}
	sum := sha256.Sum256(payload)
	recHash := hex.EncodeToString(sum[:])
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("anchor: local ledger closed")
	}
	if i, ok := l.byID[rec.Header.ID]; ok {
		if l.hashes[i] == recHash {
			return nil
		}
		return fmt.Errorf("anchor record %s: %w (entry %d)", rec.Header.ID, ledger.ErrConflict, i)
	}
	seq := int64(len(l.recs))
	h, err := entryHash(seq, l.head, payload)
	if err != nil {
		return err
	}
	line, err := ledger.CanonicalMarshal(entry{Hash: h, Prev: l.head, Record: payload, Seq: seq})
	if err != nil {
		return err
	}
	line = append(line, '\n')
	if _, err := l.f.WriteAt(line, l.size); err != nil {
		_ = l.f.Truncate(l.size)
		return fmt.Errorf("anchor record %s: append: %w", rec.Header.ID, err)
	}
	if err := l.f.Sync(); err != nil {
		_ = l.f.Truncate(l.size)
		return fmt.Errorf("anchor record %s: fsync: %w", rec.Header.ID, err)
	}
	l.size += int64(len(line))
	l.head = h
	l.index(rec)
	return nil
}

// Get implements ledger.Backend.
func (l *Ledger) Get(ctx context.Context, id string) (ledger.Record, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	i, ok := l.byID[id]
	if !ok {
		return ledger.Record{}, fmt.Errorf("record %s: %w", id, ledger.ErrNotFound)
	}
	return l.recs[i], nil
}

// Query implements ledger.Querier.
func (l *Ledger) Query(ctx context.Context, q ledger.Query) ([]ledger.Record, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var out []ledger.Record
	for _, rec := range l.recs {
		if q.Limit > 0 && len(out) >= q.Limit {
			break
		}
		if q.Match(rec) {
			out = append(out, rec)
		}
	}
	return out, ctx.Err()
}

// Lineage implements ledger.Querier: it walks the parents of m breadth-first.
func (l *Ledger) Lineage(ctx context.Context, m ledger.ModelRef) (ledger.Lineage, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	lin, err := ledger.WalkLineage(m, func(v ledger.ModelRef) ([]ledger.Record, error) {
		idx := l.producers[v]
		recs := make([]ledger.Record, len(idx))
		for k, i := range idx {
			recs[k] = l.recs[i]
		}
		return recs, nil
	}, func(id string) (ledger.Record, bool, error) {
		i, ok := l.byID[id]
		if !ok {
			return ledger.Record{}, false, nil
		}
		return l.recs[i], true, nil
	})
	if err != nil {
		return ledger.Lineage{}, err
	}
	return lin, ctx.Err()
}

// Head returns the number of entries and the hash of the last one: the value to anchor
// elsewhere so that a rewrite of the whole file shows.
func (l *Ledger) Head() (entries int64, hash string) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return int64(len(l.recs)), l.head
}

// TornBytes returns the size of the torn last line Open truncated, 0 if none.
func (l *Ledger) TornBytes() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.torn
}

// Verify checks the file as VerifyFile does, with the ledger's keyring (nil: signatures are
// not checked).
func (l *Ledger) Verify(ctx context.Context) (Report, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return VerifyFile(l.path, l.keys)
}

// Close closes the file; Anchor fails afterwards.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if l.lock != nil {
		_ = l.lock.Close()
		l.lock = nil
	}
	return err
}

var _ ledger.Querier = (*Ledger)(nil)
