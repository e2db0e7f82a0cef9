package ledger

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/millwright-io/millwright/internal/metricreg"

	"github.com/millwright-io/millwright/internal/atomicfile"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/backoff"
	"github.com/millwright-io/millwright/internal/dirlock"
)

// Errors of the outbox, matched with errors.Is.
var (
	// ErrOutboxFull: the queue holds MaxBytes of records not yet anchored; the record was
	// not queued.
	ErrOutboxFull = errors.New("ledger outbox full")
	// ErrClosed: the outbox was closed.
	ErrClosed = errors.New("ledger outbox closed")
)

// Config configures an Outbox.
type Config struct {
	// Dir is the outbox's directory in the gateway's state directory.
	Dir string `yaml:"dir"`
	// MaxBytes bounds the records queued but not yet anchored (default 64MiB).
	MaxBytes config.ByteSize `yaml:"max_bytes"`
	// CompactBytes: once this much of the queue file is anchored, the rest is copied to a
	// new file and the old one removed (default 4MiB).
	CompactBytes config.ByteSize `yaml:"compact_bytes"`
	// Site, Gateway and FirmwareVersion go into every header.
	Site            string `yaml:"site"`
	Gateway         string `yaml:"gateway"`
	FirmwareVersion string `yaml:"firmware_version"`
	// RetryInitial and RetryMax bound the backoff between attempts to anchor a record
	// (defaults 500ms and 1m).
	RetryInitial time.Duration `yaml:"retry_initial"`
	RetryMax     time.Duration `yaml:"retry_max"`
}

// SetDefaults fills the zero fields.
func (c *Config) SetDefaults() {
	if c.MaxBytes == 0 {
		c.MaxBytes = 64 << 20
	}
	if c.CompactBytes == 0 {
		c.CompactBytes = 4 << 20
	}
	if c.RetryInitial == 0 {
		c.RetryInitial = 500 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = time.Minute
	}
}

// Validate reports every problem at once, with paths relative to the outbox config.
func (c Config) Validate() error {
	var p config.Problems
	if c.Dir == "" {
		p.Addf("dir", "missing, expected a directory")
	}
	if c.MaxBytes < 4096 {
		p.Addf("max_bytes", "%s is too small, expected at least 4KiB", c.MaxBytes)
	}
	if c.CompactBytes < 0 {
		p.Addf("compact_bytes", "%d is negative, expected a size", c.CompactBytes)
	}
	checkName(&p, "site", c.Site)
	if c.Gateway != "" {
		checkName(&p, "gateway", c.Gateway)
	}
	checkText(&p, "firmware_version", c.FirmwareVersion, false)
	if c.RetryInitial <= 0 {
		p.Addf("retry_initial", "%v is not positive, expected a duration", c.RetryInitial)
	}
	if c.RetryMax < c.RetryInitial {
		p.Addf("retry_max", "%v is below retry_initial (%v)", c.RetryMax, c.RetryInitial)
	}
	return p.Err()
}

// Option customises an Outbox.
type Option func(*Outbox)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *Outbox) { o.log = l } }

// WithRegisterer sets where the outbox's metrics are registered (default: nowhere).
func WithRegisterer(r prometheus.Registerer) Option { return func(o *Outbox) { o.reg = r } }

// WithClock sets the clock that stamps headers (default time.Now).
func WithClock(now func() time.Time) Option { return func(o *Outbox) { o.now = now } }

// On disk, Dir holds:
//
//   - queue-<generation>.jsonl: one record per line, "<crc32c of the JSON, 8 hex> <canonical
//     record JSON>\n", appended and fsynced per record;
//   - cursor.json: {"generation":g,"offset":n,"head":h}, replaced atomically: the queue file
//     in use, the offset up to which its records are anchored (or dead-lettered), and the
//     hash of the last record queued when it was written (Prev of the next record when the
//     queue file is empty);
//   - dead-letter.jsonl: one line per record a backend refused for good:
//     {"time":...,"error":...,"record":{...}}, fsynced.
//
// Compaction copies the unanchored tail into queue-<g+1>.jsonl, fsyncs it, then replaces
// the cursor; a crash in between leaves a stray file that Open removes.
const (
	cursorName     = "cursor.json"
	deadLetterName = "dead-letter.jsonl"
	queuePrefix    = "queue-"
	queueSuffix    = ".jsonl"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type cursorFile struct {
	Generation uint64 `json:"generation"`
	Offset     int64  `json:"offset"`
	Head       string `json:"head"`
}

// entry is one queued record not yet anchored: where its line is in the queue file, and
// its id.
type entry struct {
	off int64
	n   int64
	id  string
}

// Outbox is the durable local queue of signed records in front of a ledger Backend. It
// implements Recorder. Record is safe for concurrent use; Run is called once; Close after
// Run has returned.
type Outbox struct {
	cfg     Config
	signer  *Signer
	backend Backend
	log     *slog.Logger
	reg     prometheus.Registerer
	now     func() time.Time
	m       *outboxMetrics
	notify  chan struct{}
	running atomic.Bool

	mu        sync.Mutex
	closed    bool
	lock      *os.File // the lock on cfg.Dir, held until Close
	f         *os.File
	gen       uint64
	size      int64   // bytes in the queue file
	acked     int64   // offset up to which records are anchored
	pending   []entry // records after acked, in order
	pendBytes int64
	head      string // hash of the last record queued
	torn      int64
	anchored  int64
	rejected  int64
	errs      int64
	lastErr   error // of the last transient failure, nil after an anchor succeeds
}

// Open opens (or creates) the outbox in cfg.Dir, which it locks until Close: a second
// outbox on the same directory, in this process or another, gets an error wrapping
// dirlock.ErrLocked. A torn last line, left by a crash during an append, is truncated and counted; any
// other damage is an error. Records queued and not anchored before are anchored by Run.
func Open(cfg Config, signer *Signer, backend Backend, opts ...Option) (*Outbox, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ledger outbox config: %w", err)
	}
	if signer == nil || backend == nil {
		return nil, errors.New("ledger outbox: nil signer or backend")
	}
	o := &Outbox{cfg: cfg, signer: signer, backend: backend, log: slog.New(slog.DiscardHandler),
		reg: prometheus.NewRegistry(), now: time.Now, notify: make(chan struct{}, 1)}
	for _, opt := range opts {
		opt(o)
	}
	m, err := newOutboxMetrics(o.reg)
	if err != nil {
		return nil, fmt.Errorf("ledger outbox metrics: %w", err)
	}
	o.m = m
	if err := o.open(); err != nil {
		return nil, fmt.Errorf("open ledger outbox %s: %w", cfg.Dir, err)
	}
	o.m.records.Set(float64(len(o.pending)))
	if o.torn > 0 {
		o.log.Warn("ledger outbox torn tail truncated", "dir", cfg.Dir, "bytes", o.torn)
	}
	return o, nil
}

func queuePath(dir string, gen uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%s%016x%s", queuePrefix, gen, queueSuffix))
}

func (o *Outbox) open() error {
	dir := o.cfg.Dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// One process at a time: a second would remove the first one's queue file below.
	lock, err := dirlock.Lock(dir, "another ledger outbox (a gateway, a hub or a sign-off command)")
	if err != nil {
		return err
	}
	if err := o.openQueue(dir); err != nil {
		_ = lock.Close()
		return err
	}
	o.lock = lock
	return nil
}

func (o *Outbox) openQueue(dir string) error {
	var cur cursorFile
	b, err := os.ReadFile(filepath.Join(dir, cursorName))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	default:
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cur); err != nil || cur.Offset < 0 || (cur.Head != "" && !hashRE.MatchString(cur.Head)) {
			return fmt.Errorf("%s is damaged: %q", cursorName, b)
		}
	}
	// Remove what a crash may have left: temporary files and queue files of other
	// generations (older: compacted; newer: a compaction whose cursor was not written).
	names, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	keep := filepath.Base(queuePath(dir, cur.Generation))
	for _, d := range names {
		n := d.Name()
		if strings.HasPrefix(n, ".tmp-") || (strings.HasPrefix(n, queuePrefix) && strings.HasSuffix(n, queueSuffix) && n != keep) {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return err
			}
		}
	}
	f, err := os.OpenFile(queuePath(dir, cur.Generation), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	o.f, o.gen, o.acked, o.head = f, cur.Generation, cur.Offset, cur.Head
	if err := o.scan(); err != nil {
		_ = f.Close()
		return err
	}
	return nil
}

// scan reads the queue file: it finds the pending records, the hash of the last record and
// a torn tail.
func (o *Outbox) scan() error {
	fi, err := o.f.Stat()
	if err != nil {
		return err
	}
	total := fi.Size()
	r := bufio.NewReaderSize(io.NewSectionReader(o.f, 0, total), 64<<10)
	var off int64
	for off < total {
		line, err := r.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return err
		}
		payload, perr := parseLine(line)
		if perr != nil {
			if off+int64(len(line)) < total {
				return fmt.Errorf("%s: line at offset %d is damaged: %w", o.f.Name(), off, perr)
			}
			// The last line is incomplete or damaged: an append that a crash interrupted.
			// It was never acknowledged to a caller (Record returns after fsync).
			if off < o.acked {
				return fmt.Errorf("%s: damaged line at offset %d is before the anchored offset %d", o.f.Name(), off, o.acked)
			}
			if err := o.f.Truncate(off); err != nil {
				return err
			}
			if err := o.f.Sync(); err != nil {
				return err
			}
			o.torn += int64(len(line))
			break
		}
		if off >= o.acked {
			var h struct {
				Header struct {
					ID string `json:"id"`
				} `json:"header"`
			}
			if err := json.Unmarshal(payload, &h); err != nil {
				return fmt.Errorf("%s: record at offset %d: %w", o.f.Name(), off, err)
			}
			o.pending = append(o.pending, entry{off: off, n: int64(len(line)), id: h.Header.ID})
			o.pendBytes += int64(len(line))
		}
		sum := sha256.Sum256(payload)
		o.head = hex.EncodeToString(sum[:])
		off += int64(len(line))
	}
	if o.acked > off {
		return fmt.Errorf("%s: anchored offset %d is beyond the queue's %d bytes", o.f.Name(), o.acked, off)
	}
	o.size = off
	return nil
}

// parseLine checks one queue line and returns its record JSON.
func parseLine(line []byte) ([]byte, error) {
	if len(line) < 11 || line[len(line)-1] != '\n' || line[8] != ' ' {
		return nil, errors.New("incomplete line")
	}
	want, err := strconv.ParseUint(string(line[:8]), 16, 32)
	payload := line[9 : len(line)-1]
	if err != nil || uint32(want) != crc32.Checksum(payload, castagnoli) {
		return nil, errors.New("checksum mismatch")
	}
	return payload, nil
}

func appendLine(dst, payload []byte) []byte {
	var crc [8]byte
	s := strconv.AppendUint(crc[:0], uint64(crc32.Checksum(payload, castagnoli)), 16)
	for range 8 - len(s) {
		dst = append(dst, '0')
	}
	dst = append(dst, s...)
	dst = append(dst, ' ')
	dst = append(dst, payload...)
	return append(dst, '\n')
}

// Record implements Recorder.
func (o *Outbox) Record(ctx context.Context, body Body) (Record, error) {
	return o.record(ctx, NewID(), body)
}

// RecordAs implements IDRecorder.
func (o *Outbox) RecordAs(ctx context.Context, id string, body Body) (Record, error) {
	if !uuidRE.MatchString(id) {
		return Record{}, fmt.Errorf("ledger record: id %q is not a lower-case UUID", id)
	}
	return o.record(ctx, id, body)
}

// Recorded implements IDRecorder: it looks for id among the records waiting in the queue,
// then asks the backend.
func (o *Outbox) Recorded(ctx context.Context, id string) (Record, bool, error) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return Record{}, false, ErrClosed
	}
	i := slices.IndexFunc(o.pending, func(e entry) bool { return e.id == id })
	var payload []byte
	var err error
	if i >= 0 {
		payload, err = o.read(o.pending[i])
	}
	o.mu.Unlock()
	switch {
	case err != nil:
		return Record{}, false, err
	case i >= 0:
		rec, err := DecodeRecord(payload)
		return rec, err == nil, err
	}
	// Not waiting: anchored already (acknowledged after the backend took it), or never made.
	rec, err := o.backend.Get(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return Record{}, false, nil
	case err != nil:
		return Record{}, false, fmt.Errorf("ledger record %s: %w", id, err)
	}
	return rec, true, nil
}

func (o *Outbox) record(ctx context.Context, id string, body Body) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	if body == nil {
		return Record{}, errors.New("ledger record: nil body")
	}
	if err := body.Validate(); err != nil {
		return Record{}, fmt.Errorf("ledger record %s: %w", body.Type(), config.Prefix("body", err))
	}
	bodyJSON, err := CanonicalMarshal(body)
	if err != nil {
		return Record{}, fmt.Errorf("ledger record %s: %w", body.Type(), err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return Record{}, ErrClosed
	}
	rec, err := o.signer.Sign(Record{Header: Header{
		ID:              id,
		SchemaVersion:   SchemaVersion,
		Type:            body.Type(),
		Time:            o.now().UTC(),
		Site:            o.cfg.Site,
		Gateway:         o.cfg.Gateway,
		FirmwareVersion: o.cfg.FirmwareVersion,
		Prev:            o.head,
	}, Body: bodyJSON})
	if err != nil {
		return Record{}, err
	}
	payload, err := MarshalRecord(rec)
	if err != nil {
		return Record{}, err
	}
	line := appendLine(make([]byte, 0, len(payload)+10), payload)
	if o.pendBytes+int64(len(line)) > int64(o.cfg.MaxBytes) {
		o.m.full.Inc()
		return Record{}, fmt.Errorf("ledger record %s: %w: %d records (%d bytes) wait for the ledger, max_bytes is %s",
			body.Type(), ErrOutboxFull, len(o.pending), o.pendBytes, o.cfg.MaxBytes)
	}
	if _, err := o.f.WriteAt(line, o.size); err != nil {
		_ = o.f.Truncate(o.size)
		return Record{}, fmt.Errorf("ledger record %s: append to outbox: %w", body.Type(), err)
	}
	if err := o.f.Sync(); err != nil {
		_ = o.f.Truncate(o.size)
		return Record{}, fmt.Errorf("ledger record %s: fsync outbox: %w", body.Type(), err)
	}
	o.pending = append(o.pending, entry{off: o.size, n: int64(len(line)), id: id})
	o.size += int64(len(line))
	o.pendBytes += int64(len(line))
	sum := sha256.Sum256(payload)
	o.head = hex.EncodeToString(sum[:])
	o.m.records.Set(float64(len(o.pending)))
	select {
	case o.notify <- struct{}{}:
	default:
	}
	return rec, nil
}

// Run anchors queued records to the backend in order until ctx is done, then returns nil.
// A transient backend error is retried, with backoff, on the same record; a permanent one
// (IsPermanent) moves the record to the dead-letter file. It returns an error only when
// the outbox's own files fail.
func (o *Outbox) Run(ctx context.Context) error {
	if !o.running.CompareAndSwap(false, true) {
		return errors.New("ledger outbox: Run called twice")
	}
	defer o.running.Store(false)
	_, err := o.anchor(ctx, false)
	return err
}

// Drain anchors the records queued so far as Run does, for a process that records a few
// and exits (the sign-off commands), and returns once none is left. It returns the
// refusals of records the backend refused for good (dead-lettered, as by Run), joined; or,
// when ctx ends first, an error saying how many records are still queued and why the last
// attempt failed: a later Run or Drain anchors them. Not while Run runs.
func (o *Outbox) Drain(ctx context.Context) error {
	if !o.running.CompareAndSwap(false, true) {
		return errors.New("ledger outbox: Drain while Run or Drain runs")
	}
	defer o.running.Store(false)
	rejected, err := o.anchor(ctx, true)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		o.mu.Lock()
		last := o.lastErr
		o.mu.Unlock()
		if last != nil {
			return fmt.Errorf("ledger outbox: %d records still queued in %s: %w; the last attempt failed: %v", o.Stats().Pending, o.cfg.Dir, context.Cause(ctx), last)
		}
		return fmt.Errorf("ledger outbox: %d records still queued in %s: %w", o.Stats().Pending, o.cfg.Dir, context.Cause(ctx))
	}
	return errors.Join(rejected...)
}

// anchor anchors queued records in order until ctx is done or, with drain, until none is
// left. It returns the permanent refusals, and an error when the outbox's files fail.
func (o *Outbox) anchor(ctx context.Context, drain bool) (rejected []error, err error) {
	bo := backoff.Backoff{Initial: o.cfg.RetryInitial, Max: o.cfg.RetryMax}
	for {
		e, payload, ok, err := o.front()
		if err != nil {
			return rejected, err
		}
		if !ok {
			if drain {
				return rejected, nil
			}
			select {
			case <-ctx.Done():
				return rejected, nil
			case <-o.notify:
				continue
			}
		}
		var rec Record
		if err := json.Unmarshal(payload, &rec); err != nil {
			return rejected, fmt.Errorf("ledger outbox: record at offset %d: %w", e.off, err)
		}
		start := time.Now()
		err = o.backend.Anchor(ctx, rec)
		o.m.seconds.Observe(time.Since(start).Seconds())
		switch {
		case err == nil:
			if err := o.ack(e, nil, nil); err != nil {
				return rejected, err
			}
			o.mu.Lock()
			o.lastErr = nil
			o.mu.Unlock()
			bo.Reset()
		case IsPermanent(err):
			o.log.Warn("ledger record rejected", "id", rec.Header.ID, "type", rec.Header.Type, "err", err)
			if err := o.ack(e, payload, err); err != nil {
				return rejected, err
			}
			if drain { // Run reports refusals through the log and the metrics only
				rejected = append(rejected, fmt.Errorf("ledger record %s (%s): %w", rec.Header.ID, rec.Header.Type, err))
			}
			bo.Reset()
		case ctx.Err() != nil:
			return rejected, nil
		default:
			o.m.errors.Inc()
			o.mu.Lock()
			o.errs++
			o.lastErr = err
			o.mu.Unlock()
			wait := bo.Next()
			if bo.Attempts() == 1 || bo.Attempts()%10 == 0 {
				o.log.Warn("ledger anchor failed", "id", rec.Header.ID, "attempts", bo.Attempts(), "retry_in", wait, "err", err)
			}
			if !backoff.Sleep(ctx, wait) {
				return rejected, nil
			}
		}
	}
}

// front returns the oldest pending record's line.
func (o *Outbox) front() (entry, []byte, bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return entry{}, nil, false, ErrClosed
	}
	if len(o.pending) == 0 {
		return entry{}, nil, false, nil
	}
	e := o.pending[0]
	payload, err := o.read(e)
	if err != nil {
		return e, nil, false, err
	}
	return e, payload, true, nil
}

// read returns the record JSON of a queued record; o.mu is held.
func (o *Outbox) read(e entry) ([]byte, error) {
	line := make([]byte, e.n)
	if _, err := o.f.ReadAt(line, e.off); err != nil {
		return nil, fmt.Errorf("ledger outbox: read record at offset %d: %w", e.off, err)
	}
	payload, err := parseLine(line)
	if err != nil {
		return nil, fmt.Errorf("ledger outbox: record at offset %d: %w", e.off, err)
	}
	return payload, nil
}

// ack marks the front record done: anchored (rejectErr nil) or dead-lettered.
func (o *Outbox) ack(e entry, payload []byte, rejectErr error) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if rejectErr != nil {
		if err := o.deadLetter(payload, rejectErr); err != nil {
			return err
		}
	}
	o.acked = e.off + e.n
	if err := o.writeCursor(); err != nil {
		return err
	}
	o.pending = o.pending[1:]
	o.pendBytes -= e.n
	if rejectErr != nil {
		o.rejected++
		o.m.rejected.Inc()
	} else {
		o.anchored++
		o.m.anchored.Inc()
	}
	o.m.records.Set(float64(len(o.pending)))
	if o.acked >= int64(o.cfg.CompactBytes) {
		return o.compact()
	}
	return nil
}

func (o *Outbox) writeCursor() error {
	b, err := json.Marshal(cursorFile{Generation: o.gen, Offset: o.acked, Head: o.head})
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(o.cfg.Dir, cursorName), b, 0o600, true); err != nil {
		return fmt.Errorf("ledger outbox: write cursor: %w", err)
	}
	return nil
}

func (o *Outbox) deadLetter(payload []byte, cause error) error {
	b, err := json.Marshal(struct {
		Time   time.Time       `json:"time"`
		Error  string          `json:"error"`
		Record json.RawMessage `json:"record"`
	}{o.now().UTC(), cause.Error(), payload})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(o.cfg.Dir, deadLetterName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("ledger outbox: dead letter: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("ledger outbox: dead letter: %w", err)
	}
	return nil
}

// compact moves the unanchored tail of the queue file into the next generation's file.
func (o *Outbox) compact() error {
	next := queuePath(o.cfg.Dir, o.gen+1)
	nf, err := os.OpenFile(next, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("ledger outbox: compact: %w", err)
	}
	tail := o.size - o.acked
	_, err = io.Copy(nf, io.NewSectionReader(o.f, o.acked, tail))
	if err == nil {
		err = nf.Sync()
	}
	if err == nil {
		err = atomicfile.SyncDir(o.cfg.Dir)
	}
	if err != nil {
		_ = nf.Close()
		_ = os.Remove(next)
		return fmt.Errorf("ledger outbox: compact: %w", err)
	}
	old, oldAcked := o.f, o.acked
	o.gen++
	o.acked = 0
	if err := o.writeCursor(); err != nil {
		o.gen--
		o.acked = oldAcked
		_ = nf.Close()
		_ = os.Remove(next)
		return err
	}
	o.f = nf
	o.size = tail
	for i := range o.pending {
		o.pending[i].off -= oldAcked
	}
	_ = old.Close()
	if err := os.Remove(old.Name()); err != nil {
		o.log.Warn("ledger outbox: remove compacted queue file", "err", err)
	}
	return nil
}

// OutboxStats are the outbox's counters since Open.
type OutboxStats struct {
	Pending      int   // records queued, not yet anchored
	PendingBytes int64 // their size in the queue file
	Anchored     int64
	Rejected     int64 // dead-lettered
	AnchorErrors int64 // transient failures (each retried)
	TornBytes    int64 // bytes of a torn last line truncated by Open
}

// Stats returns the outbox's counters.
func (o *Outbox) Stats() OutboxStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	return OutboxStats{Pending: len(o.pending), PendingBytes: o.pendBytes, Anchored: o.anchored,
		Rejected: o.rejected, AnchorErrors: o.errs, TornBytes: o.torn}
}

// Close closes the queue file. Call it after Run has returned; Record then fails with
// ErrClosed.
func (o *Outbox) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	err := o.f.Close()
	_ = o.lock.Close()
	return err
}

type outboxMetrics struct {
	records  prometheus.Gauge
	anchored prometheus.Counter
	errors   prometheus.Counter
	rejected prometheus.Counter
	full     prometheus.Counter
	seconds  prometheus.Histogram
}

func newOutboxMetrics(reg prometheus.Registerer) (*outboxMetrics, error) {
	var m outboxMetrics
	var err error
	if m.records, err = metricreg.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "millwright_ledger_outbox_records", Help: "Records in the ledger outbox waiting to be anchored."})); err != nil {
		return nil, err
	}
	if m.anchored, err = metricreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "millwright_ledger_anchored_total", Help: "Records anchored to the ledger backend."})); err != nil {
		return nil, err
	}
	if m.errors, err = metricreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "millwright_ledger_anchor_errors_total", Help: "Transient failures to anchor a record (each is retried)."})); err != nil {
		return nil, err
	}
	if m.rejected, err = metricreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "millwright_ledger_rejected_total", Help: "Records the ledger backend refused for good, moved to the dead-letter file."})); err != nil {
		return nil, err
	}
	if m.full, err = metricreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "millwright_ledger_outbox_full_total", Help: "Records refused because the outbox was full."})); err != nil {
		return nil, err
	}
	if m.seconds, err = metricreg.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "millwright_ledger_anchor_seconds", Help: "Time of one attempt to anchor a record.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)})); err != nil {
		return nil, err
	}
	return &m, nil
}
