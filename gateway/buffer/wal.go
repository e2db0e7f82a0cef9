// Package buffer keeps telemetry in a crash-safe write-ahead log on disk until every sink has stored it.
//
// Sources append batches to the WAL; each sink consumes them through its own Reader, whose
// committed position survives restarts. The log is a directory of segment files of
// checksummed records (see segment.go for the format), bounded in size, with an overflow
// policy that either holds the sources back or drops the oldest data, counted.
package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/millwright-io/millwright/internal/atomicfile"
	"github.com/millwright-io/millwright/internal/dirlock"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

// Position is a place in the log: the segment's base position plus the byte offset in the
// segment file. Positions only grow; the one Next returns is the end of its last record.
type Position uint64

var (
	// ErrClosed is returned by Append, Next and Commit once Close has been called.
	ErrClosed = errors.New("buffer: write-ahead log is closed")
	// ErrBatchTooLarge is returned (wrapped, with the sizes) by Append for a batch whose
	// encoding does not fit in one segment or exceeds MaxRecordBytes. Split the batch.
	ErrBatchTooLarge = errors.New("buffer: batch too large for the write-ahead log")
	// ErrInvalidPosition is returned (wrapped) by Commit for a position beyond what Next has
	// returned; committing it would skip records the consumer never saw.
	ErrInvalidPosition = errors.New("buffer: invalid commit position")
)

// cursorPersistInterval is how often committed cursors are written to disk at the latest.
const cursorPersistInterval = time.Second

// internLimit bounds the strings the log's readers share through their interner.
const internLimit = 1 << 16

// maxSpareBytes bounds the write buffer kept for reuse between groups.
const maxSpareBytes = 8 << 20

// Option configures Open.
type Option func(*options)

type options struct {
	logger *slog.Logger
	reg    prometheus.Registerer
}

// WithLogger sets the logger; the default discards. The WAL logs only what an operator
// must know: truncated tails, corruption, dropped data and I/O errors.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegisterer sets where the WAL registers its metrics (millwright_buffer_*); by default
// they are not registered. Close unregisters them.
func WithRegisterer(r prometheus.Registerer) Option { return func(o *options) { o.reg = r } }

// segment is one segment file as the WAL knows it. Its fields are guarded by WAL.mu.
type segment struct {
	base Position
	path string
	// size is the extent readers may read: what the writer has published, or what Open
	// found sound. fileSize is the file's size on disk, counted against MaxBytes.
	size, fileSize int64
	// records and points count the records in the readable extent.
	records, points int64
	// firstRec and firstPts are the records and points in the log before this segment,
	// counted from the oldest segment at Open.
	firstRec, firstPts int64
	// damage, when set, is why Open found the readable extent to end before the file does.
	damage string
	// reported holds the offsets of corruption already counted and logged, so that readers
	// meeting it one after the other count it once.
	reported map[int64]bool
}

// WAL is the write-ahead log. Append is safe for concurrent use; each Reader serves one
// consumer. Open it with Open and release it with Close.
type WAL struct {
	cfg       Config
	log       *slog.Logger
	m         *metrics
	in        *telemetry.Interner
	lock      *os.File
	maxRecord int

	// persistMu serialises cursor writes and segment deletion (reclaim).
	persistMu sync.Mutex

	mu       sync.Mutex
	segs     []*segment
	readers  []*Reader
	byName   map[string]*Reader
	diskSize int64 // sum of the segments' fileSize
	totalRec int64 // records readable in the log, counted like segment.firstRec
	totalPts int64
	queue    []byte // sealed records waiting for the writer
	spare    []byte
	inflight int64  // bytes the writer is writing now
	enqueued uint64 // records queued since Open; an appender's ticket
	written  uint64 // tickets written (and synced per policy)
	writeErr error  // sticky: the first write or fsync error
	dataCh   chan struct{}
	doneCh   chan struct{}
	spaceCh  chan struct{}
	waiters  int // appenders waiting for space
	closed   bool
	closedCh chan struct{}

	writeSignal   chan struct{}
	persistSignal chan struct{}
	stopWriter    chan struct{}
	stopKeeper    chan struct{}
	writerDone    chan struct{}
	keeperDone    chan struct{}

	// Owned by the writer goroutine (and by Open before it starts).
	active     *os.File
	activeBase Position
	activeSize int64
	dirty      bool
	closeErr   error
}

var recordPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// Open opens the log in cfg.Dir, creating the directory if needed, and recovers it: it
// truncates a torn or corrupt tail of the last segment (counted in
// millwright_buffer_truncated_bytes_total and logged) and positions each of the named
// readers, one per durable consumer, at its persisted cursor. A reader without a cursor
// starts at the oldest record in the log. Cursor files of readers not named are left alone.
//
// readers must be non-empty, unique, and made of letters, digits, '_', '.' and '-'.
// Open returns an error for an invalid configuration, bad reader names, a directory locked
// by another WAL, or an I/O error; nothing is left running then.
func Open(cfg Config, readers []string, opts ...Option) (*WAL, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("buffer: invalid configuration: %w", err)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if len(readers) == 0 {
		return nil, errors.New("buffer: open: no readers; expected the name of at least one consumer")
	}
	seen := make(map[string]bool, len(readers))
	for _, name := range readers {
		if !readerNameRE.MatchString(name) {
			return nil, fmt.Errorf("buffer: open: reader name %q is invalid; expected 1 to 100 letters, digits, '_', '.' or '-', not starting with '.' or '-'", name)
		}
		if seen[name] {
			return nil, fmt.Errorf("buffer: open: reader name %q is given twice", name)
		}
		seen[name] = true
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("buffer: open: %w", err)
	}
	lock, err := dirlock.Lock(cfg.Dir, "another write-ahead log")
	if err != nil {
		return nil, fmt.Errorf("buffer: open: %w", err)
	}
	w := &WAL{
		cfg:           cfg,
		log:           o.logger,
		m:             newMetrics(),
		in:            telemetry.NewInterner(internLimit),
		lock:          lock,
		maxRecord:     int(min(int64(cfg.SegmentBytes)-segmentHeaderLen, MaxRecordBytes+recordHeaderLen)),
		byName:        make(map[string]*Reader, len(readers)),
		dataCh:        make(chan struct{}),
		doneCh:        make(chan struct{}),
		spaceCh:       make(chan struct{}),
		closedCh:      make(chan struct{}),
		writeSignal:   make(chan struct{}, 1),
		persistSignal: make(chan struct{}, 1),
		stopWriter:    make(chan struct{}),
		stopKeeper:    make(chan struct{}),
		writerDone:    make(chan struct{}),
		keeperDone:    make(chan struct{}),
	}
	if err := w.recover(readers); err != nil {
		if w.active != nil {
			w.active.Close()
		}
		lock.Close()
		return nil, fmt.Errorf("buffer: open %s: %w", cfg.Dir, err)
	}
	if err := w.m.register(o.reg); err != nil {
		w.active.Close()
		lock.Close()
		return nil, fmt.Errorf("buffer: open: %w", err)
	}
	w.updateSizeGaugesLocked()
	for _, r := range w.readers {
		r.updatePendingLocked()
	}
	go w.runWriter()
	go w.runKeeper()
	return w, nil
}

// recover lists the directory, checks the segments, truncates the tail and positions the
// readers. It runs before any goroutine starts.
func (w *WAL) recover(readerNames []string) error {
	dir := w.cfg.Dir
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var bases []Position
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, cursorTmpPrefix) {
			_ = os.Remove(filepath.Join(dir, name)) // an unfinished cursor write
			continue
		}
		if base, ok := parseSegmentName(name); ok && e.Type().IsRegular() {
			bases = append(bases, base)
		}
	}
	slices.Sort(bases)

	type cursor struct {
		pos Position
		ok  bool
	}
	cursors := make(map[string]cursor, len(readerNames))
	var maxCursor Position
	for _, name := range readerNames {
		pos, ok, err := readCursor(cursorPath(dir, name))
		if err != nil {
			w.log.Warn("unreadable reader cursor; the reader starts at the oldest record", "reader", name, "err", err)
		}
		cursors[name] = cursor{pos, ok}
		if ok {
			maxCursor = max(maxCursor, pos)
		}
	}

	if len(bases) == 0 {
		if err := w.createActive(maxCursor); err != nil {
			return err
		}
		w.segs = []*segment{{base: maxCursor, path: segmentPath(dir, maxCursor), size: segmentHeaderLen, fileSize: segmentHeaderLen}}
		w.diskSize = segmentHeaderLen
	} else if err := w.recoverSegments(bases); err != nil {
		return err
	}

	for _, name := range readerNames {
		c := cursors[name]
		r := &Reader{w: w, name: name, cursorPath: cursorPath(dir, name), pending: w.m.pending.WithLabelValues(name)}
		if c.ok {
			r.persistedPos = c.pos
		}
		if err := w.positionReader(r, c.pos, c.ok); err != nil {
			return err
		}
		w.readers = append(w.readers, r)
		w.byName[name] = r
	}
	w.log.Info("write-ahead log opened", "dir", dir, "segments", len(w.segs), "bytes", w.diskSize,
		"records", w.totalRec, "points", w.totalPts)
	return nil
}

// recoverSegments scans the segment files: the older ones for structure, the last one
// fully, truncating it after its last sound record.
func (w *WAL) recoverSegments(bases []Position) error {
	var rec, pts int64
	for i, base := range bases {
		last := i == len(bases)-1
		path := segmentPath(w.cfg.Dir, base)
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		s := &segment{base: base, path: path, fileSize: st.Size(), firstRec: rec, firstPts: pts}
		limit := s.fileSize
		if !last && base+Position(limit) > bases[i+1] {
			limit = int64(bases[i+1] - base) // it cannot extend into the next segment
		}
		res, err := scanSegment(f, limit, base, last, math.MaxInt64)
		f.Close()
		if err != nil {
			if last {
				return fmt.Errorf("scan %s: %w", path, err)
			}
			res.problem = "read error: " + err.Error()
		}
		if res.problem == "" && limit < s.fileSize {
			res.problem = fmt.Sprintf("the file runs %d bytes into the next segment", s.fileSize-limit)
		}
		s.size, s.records, s.points = res.end, res.records, res.points
		if last {
			if err := w.repairTail(s, res); err != nil {
				return err
			}
		} else if res.problem != "" {
			s.damage = res.problem
		}
		rec += s.records
		pts += s.points
		w.segs = append(w.segs, s)
		w.diskSize += s.fileSize
	}
	w.totalRec, w.totalPts = rec, pts
	s := w.segs[len(w.segs)-1]
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	w.active, w.activeBase, w.activeSize = f, s.base, s.size
	return nil
}

// repairTail truncates the last segment after its last sound record, or rewrites its
// header when even that is unsound.
func (w *WAL) repairTail(s *segment, res scanResult) error {
	if res.problem == "" {
		return nil
	}
	cut := s.fileSize - res.end
	if res.end < segmentHeaderLen {
		if err := os.Remove(s.path); err != nil {
			return err
		}
		if err := w.createActive(s.base); err != nil {
			return err
		}
		w.active.Close()
		w.active = nil
		s.size = segmentHeaderLen
	} else {
		f, err := os.OpenFile(s.path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		err = f.Truncate(res.end)
		if err == nil && w.cfg.Fsync != FsyncOff {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("truncate %s: %w", s.path, err)
		}
	}
	s.fileSize = s.size
	if res.end >= segmentHeaderLen || cut > segmentHeaderLen {
		w.m.truncatedBytes.Add(float64(cut))
		w.log.Warn("truncated a torn or corrupt tail of the last segment", "segment", s.path, "offset", res.end,
			"truncated_bytes", cut, "kept_records", s.records, "reason", res.problem)
	}
	return nil
}

// createActive creates an empty segment at base and makes it the active one.
func (w *WAL) createActive(base Position) error {
	path := segmentPath(w.cfg.Dir, base)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	_, err = f.Write(segmentHeader(base))
	if err == nil && w.cfg.Fsync != FsyncOff {
		err = w.sync(f)
		if err == nil {
			err = atomicfile.SyncDir(w.cfg.Dir)
		}
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("create segment %s: %w", path, err)
	}
	w.active, w.activeBase, w.activeSize = f, base, segmentHeaderLen
	return nil
}

// positionReader sets a reader's read and commit positions from its persisted cursor.
func (w *WAL) positionReader(r *Reader, pos Position, ok bool) error {
	first, last := w.segs[0], w.segs[len(w.segs)-1]
	end := last.base + Position(last.size)
	switch {
	case !ok:
		pos = first.base
	case pos < first.base:
		w.log.Warn("reader cursor points before the oldest segment; the records in between were dropped",
			"reader", r.name, "cursor", pos, "oldest", first.base, "skipped_bytes", first.base-pos)
		pos = first.base
	case pos > end:
		w.log.Warn("reader cursor points past the end of the log, whose tail was lost; the reader starts at the end",
			"reader", r.name, "cursor", pos, "end", end)
		pos = end
	}
	s := w.segs[w.segmentIndex(pos)]
	off := int64(pos - s.base)
	rec, pts := s.firstRec, s.firstPts
	switch {
	case off >= s.size:
		off, rec, pts = s.size, rec+s.records, pts+s.points
	case off > segmentHeaderLen:
		f, err := os.Open(s.path)
		if err != nil {
			return err
		}
		res, err := scanSegment(f, s.size, s.base, false, off)
		f.Close()
		if err != nil {
			return fmt.Errorf("scan %s: %w", s.path, err)
		}
		if res.end != off {
			w.log.Warn("reader cursor is not at a record boundary; the reader repeats from the boundary before it",
				"reader", r.name, "cursor", pos, "boundary", s.base+Position(res.end))
		}
		off, rec, pts = res.end, rec+res.records, pts+res.points
	}
	r.readPos, r.readRec, r.readPts = s.base+Position(off), rec, pts
	r.commitPos, r.commitRec, r.commitPts = r.readPos, rec, pts
	return nil
}

// segmentIndex returns the index of the segment holding pos (the last one whose base is
// at or before pos), or -1 when pos is before the oldest segment. w.mu must be held.
func (w *WAL) segmentIndex(pos Position) int {
	return sort.Search(len(w.segs), func(i int) bool { return w.segs[i].base > pos }) - 1
}

// Append adds b to the log as one record. It returns once the record is written and, under
// the "batch" fsync policy, fsynced: concurrent appends are written and fsynced together
// (group commit). It is safe for concurrent use; records of one goroutine keep their order.
// An empty batch is a no-op.
//
// When the log is full, Append waits for the readers to free space under the "block"
// overflow policy (time counted in millwright_buffer_append_blocked_seconds_total), and
// deletes the oldest segment under "drop_oldest".
//
// Errors: ctx's error when ctx ends first (if it ends after the record was queued, the
// record may still be written); ErrClosed after Close; ErrBatchTooLarge for a batch that
// does not fit in a segment; the I/O error of a failed write or fsync, after which every
// Append fails until the log is closed and reopened.
func (w *WAL) Append(ctx context.Context, b telemetry.Batch) error {
	if len(b.Points) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	bp := recordPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxSpareBytes {
			recordPool.Put(bp)
		}
	}()
	rec := append((*bp)[:0], make([]byte, recordHeaderLen)...)
	rec = telemetry.AppendBatch(rec, b)
	*bp = rec[:0]
	// A point takes several bytes, so this also keeps the count within the header's uint32.
	if len(rec) > w.maxRecord {
		return fmt.Errorf("%w: %d points encode to %d bytes; a record holds at most %d (segment_bytes %s)",
			ErrBatchTooLarge, len(b.Points), len(rec), w.maxRecord, w.cfg.SegmentBytes)
	}
	sealRecord(rec, len(b.Points))

	ticket, err := w.enqueue(ctx, rec)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.written < ticket && w.writeErr == nil {
		done := w.doneCh
		w.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			w.mu.Lock()
			return ctx.Err()
		}
		w.mu.Lock()
	}
	if w.written < ticket {
		return fmt.Errorf("buffer: append: %w", w.writeErr)
	}
	return nil
}

// enqueue waits for space, then queues rec for the writer and returns its ticket.
func (w *WAL) enqueue(ctx context.Context, rec []byte) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	triedReclaim := false
	for {
		if w.closed {
			return 0, ErrClosed
		}
		if w.writeErr != nil {
			return 0, fmt.Errorf("buffer: append: the log failed earlier and must be reopened: %w", w.writeErr)
		}
		if w.diskSize+int64(len(w.queue))+w.inflight+int64(len(rec))+segmentHeaderLen <= int64(w.cfg.MaxBytes) {
			break
		}
		if !triedReclaim && w.reclaimableLocked() {
			// The readers have committed past the oldest segment: persisting their cursors
			// lets it go without losing anything.
			triedReclaim = true
			w.mu.Unlock()
			_ = w.reclaim() // errors are logged there
			w.mu.Lock()
			continue
		}
		if w.cfg.Overflow == OverflowDropOldest && len(w.segs) > 1 {
			w.dropOldestLocked()
			continue
		}
		space := w.spaceCh
		w.waiters++
		w.mu.Unlock()
		start := time.Now()
		select {
		case <-space:
		case <-ctx.Done():
		case <-w.closedCh:
		}
		w.m.blockedSeconds.Add(time.Since(start).Seconds())
		w.mu.Lock()
		w.waiters--
		triedReclaim = false
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
	w.queue = append(w.queue, rec...)
	w.enqueued++
	select {
	case w.writeSignal <- struct{}{}:
	default:
	}
	return w.enqueued, nil
}

// reclaimableLocked reports whether every reader has committed past the oldest segment.
func (w *WAL) reclaimableLocked() bool {
	if len(w.segs) < 2 {
		return false
	}
	end := w.segs[1].base
	for _, r := range w.readers {
		if r.commitPos < end {
			return false
		}
	}
	return true
}

// dropOldestLocked deletes the oldest segment to make space, moving every reader that had
// not committed past it to the next one and counting what they lost.
func (w *WAL) dropOldestLocked() {
	s, next := w.segs[0], w.segs[1]
	minRec, minPts := next.firstRec, next.firstPts
	for _, r := range w.readers {
		if r.commitPos >= next.base {
			continue
		}
		minRec, minPts = min(minRec, r.commitRec), min(minPts, r.commitPts)
		w.log.Warn("log full: dropped the oldest segment with records the reader had not committed",
			"reader", r.name, "segment", s.path, "lost_records", next.firstRec-r.commitRec, "lost_points", next.firstPts-r.commitPts)
		r.commitPos, r.commitRec, r.commitPts = next.base, next.firstRec, next.firstPts
		if r.readPos < next.base {
			r.readPos, r.readRec, r.readPts = next.base, next.firstRec, next.firstPts
		}
		r.trimDeliveredLocked()
		r.updatePendingLocked()
	}
	w.m.droppedRecords.Add(float64(next.firstRec - max(minRec, s.firstRec)))
	w.m.droppedPoints.Add(float64(next.firstPts - max(minPts, s.firstPts)))
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		w.log.Error("cannot delete a dropped segment", "segment", s.path, "err", err)
	}
	w.diskSize -= s.fileSize
	w.segs = slices.Delete(w.segs, 0, 1)
	w.updateSizeGaugesLocked()
}

// signalSpaceLocked wakes appenders waiting for space.
func (w *WAL) signalSpaceLocked() {
	if w.waiters > 0 {
		close(w.spaceCh)
		w.spaceCh = make(chan struct{})
	}
}

func (w *WAL) updateSizeGaugesLocked() {
	w.m.bytes.Set(float64(w.diskSize))
	w.m.segments.Set(float64(len(w.segs)))
}

// runWriter is the group-commit writer: it takes every record queued since its last pass,
// writes them with one write per segment and fsyncs per policy.
func (w *WAL) runWriter() {
	defer close(w.writerDone)
	var tick <-chan time.Time
	if w.cfg.Fsync == FsyncInterval {
		t := time.NewTicker(w.cfg.FsyncInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-w.writeSignal:
			w.writeQueued()
		case <-tick:
			if w.dirty && w.active != nil {
				if err := w.sync(w.active); err != nil {
					w.fail(fmt.Errorf("fsync %s: %w", segmentName(w.activeBase), err))
				}
			}
		case <-w.stopWriter:
			w.writeQueued()
			if w.active != nil {
				if w.dirty && w.cfg.Fsync != FsyncOff {
					w.closeErr = w.sync(w.active)
				}
				if err := w.active.Close(); w.closeErr == nil {
					w.closeErr = err
				}
				w.active = nil
			}
			return
		}
	}
}

// fail records the first write error; from then on Append fails.
func (w *WAL) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.writeErr == nil {
		w.writeErr = err
		w.log.Error("write-ahead log write failed; appends fail until it is reopened", "err", err)
	}
}

func (w *WAL) writeQueued() {
	w.mu.Lock()
	if len(w.queue) == 0 {
		w.mu.Unlock()
		return
	}
	if w.writeErr != nil { // fail what is queued: its appenders see writeErr
		w.queue = w.queue[:0]
		close(w.doneCh)
		w.doneCh = make(chan struct{})
		w.mu.Unlock()
		return
	}
	buf := w.queue
	w.queue, w.spare = w.spare[:0], nil
	ticket := w.enqueued
	w.inflight = int64(len(buf))
	w.mu.Unlock()

	err := w.writeGroup(buf)
	if err != nil {
		w.fail(err)
	}

	w.mu.Lock()
	w.inflight = 0
	if cap(buf) <= maxSpareBytes {
		w.spare = buf[:0]
	}
	if err == nil {
		w.written = ticket
	}
	close(w.doneCh)
	w.doneCh = make(chan struct{})
	w.signalSpaceLocked()
	w.mu.Unlock()
}

// writeGroup writes a run of sealed records, starting a new segment whenever the next
// record would take the active one past SegmentBytes.
func (w *WAL) writeGroup(buf []byte) error {
	start := 0
	var recs, pts int64
	for off := 0; off < len(buf); {
		h := parseRecordHeader(buf[off:])
		n := int(h.size())
		size := w.activeSize + int64(off-start)
		if size+int64(n) > int64(w.cfg.SegmentBytes) && size > segmentHeaderLen {
			if err := w.flush(buf[start:off], recs, pts, true); err != nil {
				return err
			}
			if err := w.roll(); err != nil {
				return err
			}
			start, recs, pts = off, 0, 0
		}
		recs++
		pts += int64(h.points)
		off += n
	}
	return w.flush(buf[start:], recs, pts, false)
}

// flush writes chunk to the active segment, fsyncs it per policy (always before sealing
// it, unless the policy is "off") and publishes its records to the readers.
func (w *WAL) flush(chunk []byte, recs, pts int64, sealing bool) error {
	if len(chunk) > 0 {
		n, err := w.active.Write(chunk)
		w.activeSize += int64(n)
		if err != nil {
			return fmt.Errorf("write %s: %w", segmentName(w.activeBase), err)
		}
		w.dirty = true
	}
	if w.dirty && (w.cfg.Fsync == FsyncBatch || (sealing && w.cfg.Fsync == FsyncInterval)) {
		if err := w.sync(w.active); err != nil {
			return fmt.Errorf("fsync %s: %w", segmentName(w.activeBase), err)
		}
	}
	if recs == 0 {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.segs[len(w.segs)-1]
	w.diskSize += w.activeSize - s.fileSize
	s.size, s.fileSize = w.activeSize, w.activeSize
	s.records += recs
	s.points += pts
	w.totalRec += recs
	w.totalPts += pts
	w.m.appendedPoints.Add(float64(pts))
	w.updateSizeGaugesLocked()
	for _, r := range w.readers {
		r.updatePendingLocked()
	}
	close(w.dataCh)
	w.dataCh = make(chan struct{})
	return nil
}

// roll seals the active segment and starts the next one where it ends.
func (w *WAL) roll() error {
	base := w.activeBase + Position(w.activeSize)
	err := w.active.Close()
	w.active = nil
	if err != nil {
		return fmt.Errorf("close %s: %w", segmentName(w.activeBase), err)
	}
	w.dirty = false
	if err := w.createActive(base); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.segs = append(w.segs, &segment{base: base, path: segmentPath(w.cfg.Dir, base), size: segmentHeaderLen,
		fileSize: segmentHeaderLen, firstRec: w.totalRec, firstPts: w.totalPts})
	w.diskSize += segmentHeaderLen
	w.updateSizeGaugesLocked()
	return nil
}

// sync fsyncs f, timing it.
func (w *WAL) sync(f *os.File) error {
	start := time.Now()
	err := f.Sync()
	w.m.fsyncSeconds.Observe(time.Since(start).Seconds())
	if err == nil && f == w.active {
		w.dirty = false
	}
	return err
}

// runKeeper persists changed cursors every cursorPersistInterval, or sooner when an
// appender waits for space, and deletes the segments every reader has passed.
func (w *WAL) runKeeper() {
	defer close(w.keeperDone)
	t := time.NewTicker(cursorPersistInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-w.persistSignal:
		case <-w.stopKeeper:
			return
		}
		_ = w.reclaim() // errors are logged there
	}
}

// reclaim writes the cursors that changed, then deletes the segments that every reader's
// persisted (and committed) cursor has passed.
func (w *WAL) reclaim() error {
	w.persistMu.Lock()
	defer w.persistMu.Unlock()
	type job struct {
		r   *Reader
		pos Position
	}
	var jobs []job
	w.mu.Lock()
	for _, r := range w.readers {
		if r.commitPos != r.persistedPos {
			jobs = append(jobs, job{r, r.commitPos})
		}
	}
	w.mu.Unlock()
	var errs []error
	for _, j := range jobs {
		err := writeCursor(j.r.cursorPath, j.pos, w.cfg.Fsync != FsyncOff)
		w.mu.Lock()
		if err == nil {
			j.r.persistedPos = j.pos
			j.r.persistFailing = false
		} else {
			errs = append(errs, fmt.Errorf("buffer: persist cursor of reader %s: %w", j.r.name, err))
			if !j.r.persistFailing {
				w.log.Error("cannot persist a reader cursor; its segments are kept", "reader", j.r.name, "err", err)
				j.r.persistFailing = true
			}
		}
		w.mu.Unlock()
	}

	w.mu.Lock()
	passed := Position(math.MaxUint64)
	for _, r := range w.readers {
		passed = min(passed, r.persistedPos, r.commitPos)
	}
	n := 0
	for n < len(w.segs)-1 && w.segs[n+1].base <= passed {
		n++
	}
	victims := slices.Clone(w.segs[:n])
	w.mu.Unlock()
	if n == 0 {
		return errors.Join(errs...)
	}
	for _, s := range victims {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("buffer: delete segment: %w", err))
			w.log.Error("cannot delete a consumed segment", "segment", s.path, "err", err)
		}
	}
	w.mu.Lock()
	// Only this function and dropOldestLocked remove segments, and they hold persistMu or
	// take the oldest, so the victims are still a prefix unless a drop took some already.
	for _, s := range victims {
		if i := slices.Index(w.segs, s); i >= 0 && i < len(w.segs)-1 {
			w.diskSize -= s.fileSize
			w.segs = slices.Delete(w.segs, i, i+1)
		}
	}
	w.updateSizeGaugesLocked()
	w.signalSpaceLocked()
	w.mu.Unlock()
	return errors.Join(errs...)
}

// Reader returns the reader named in Open. It panics for any other name: that is a
// programming error.
func (w *WAL) Reader(name string) *Reader {
	r, ok := w.byName[name]
	if !ok {
		panic(fmt.Sprintf("buffer: no reader %q; Open was given %v", name, w.readerNames()))
	}
	return r
}

func (w *WAL) readerNames() []string {
	names := make([]string, len(w.readers))
	for i, r := range w.readers {
		names[i] = r.name
	}
	return names
}

// Close stops the log: appends still queued are written (and fsynced unless the policy is
// "off"), the readers' committed cursors are persisted, and the files and the directory
// lock are released. Afterwards Append, Next and Commit return ErrClosed; Close itself
// returns nil. It waits for every goroutine of the log and for Next calls in progress,
// which return ErrClosed. The error is an I/O error of the final writes.
func (w *WAL) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	close(w.closedCh)
	w.mu.Unlock()

	close(w.stopWriter)
	<-w.writerDone
	close(w.stopKeeper)
	<-w.keeperDone
	errs := []error{w.reclaim()}
	if w.closeErr != nil {
		errs = append(errs, fmt.Errorf("buffer: close active segment: %w", w.closeErr))
	}
	for _, r := range w.readers {
		r.mu.Lock()
		if r.file != nil {
			r.file.Close()
			r.file = nil
		}
		r.mu.Unlock()
	}
	w.m.unregister()
	errs = append(errs, w.lock.Close())
	return errors.Join(errs...)
}

// Stats is a snapshot of the log's size, for status pages and tests.
type Stats struct {
	Segments int
	Bytes    int64
	// Records and Points count what is readable in the log, from the oldest segment.
	Records, Points int64
}

// Stats returns a snapshot of the log's size. It is safe for concurrent use.
func (w *WAL) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Stats{Segments: len(w.segs), Bytes: w.diskSize, Records: w.totalRec - w.segs[0].firstRec,
		Points: w.totalPts - w.segs[0].firstPts}
}
