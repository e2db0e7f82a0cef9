package buffer

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

// readAhead is how much a reader reads from a segment file at a time.
const readAhead = 256 << 10

// maxDelivered bounds the batches a reader remembers between Next and Commit. Past it the
// oldest is forgotten, and committing its end commits nothing until a later one is
// committed: a replay may repeat more, never skip.
const maxDelivered = 4096

// Reader is one durable consumer's view of the log, with its own cursor. Get it with
// WAL.Reader.
//
// Next is meant to be called from one goroutine (calls are serialised). Commit and Pending
// may be called from any goroutine, concurrently with Next.
type Reader struct {
	w          *WAL
	name       string
	cursorPath string
	pending    prometheus.Gauge

	// Guarded by w.mu.
	readPos          Position // where Next reads the next record
	readRec, readPts int64    // records and points before readPos (as segment.firstRec)
	commitPos        Position
	commitRec        int64
	commitPts        int64
	persistedPos     Position // what the cursor file holds
	persistFailing   bool
	delivered        []delivery // ends of the batches returned by Next and not yet committed

	// Guarded by mu, which Next holds throughout.
	mu       sync.Mutex
	batch    telemetry.Batch
	file     *os.File
	fileBase Position
	win      window
	timer    *time.Timer
}

// delivery is the end of a batch returned by Next, with the counts before that end.
type delivery struct {
	end      Position
	rec, pts int64
}

type step int

const (
	stepRecord step = iota // a record was added to the batch
	stepNone               // no unread record yet
	stepFull               // the next record would take the batch past maxPoints
)

// Next returns the next unread records as one batch, in the order they were appended.
//
// It blocks until at least one record is unread, then keeps adding whole records while
// the batch stays within maxPoints, waiting up to linger after the first record for more to
// arrive. A record is never split: one larger than maxPoints (or any record, when maxPoints
// is below 1) is returned alone. The batch and its strings stay valid until the next call
// of Next; the Position is the end of its last record, to pass to Commit once the batch is
// stored.
//
// Records are at least once: the batch is delivered again after a restart unless its
// position was committed (and persisted). Corrupt records are skipped, counted and logged,
// never returned.
//
// Errors: ctx's error when ctx ends before any record is read (when it ends during the
// linger, the records read so far are returned); ErrClosed after Close.
func (r *Reader) Next(ctx context.Context, maxPoints int, linger time.Duration) (telemetry.Batch, Position, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return telemetry.Batch{}, 0, err
	}
	maxPoints = max(maxPoints, 1)
	r.batch.Points = r.batch.Points[:0]
	var (
		last     delivery
		got      bool
		deadline time.Time
	)
	for {
		st, end, wait, err := r.readOne(maxPoints-len(r.batch.Points), got)
		if err != nil {
			return telemetry.Batch{}, 0, err
		}
		switch st {
		case stepRecord:
			if !got {
				got = true
				deadline = time.Now().Add(linger)
			}
			last = end
			if len(r.batch.Points) >= maxPoints {
				return r.deliver(last)
			}
			continue
		case stepFull:
			return r.deliver(last)
		}
		if !got {
			select {
			case <-wait:
			case <-ctx.Done():
				return telemetry.Batch{}, 0, ctx.Err()
			case <-r.w.closedCh:
				return telemetry.Batch{}, 0, ErrClosed
			}
			continue
		}
		d := time.Until(deadline)
		if d <= 0 {
			return r.deliver(last)
		}
		if r.timer == nil {
			r.timer = time.NewTimer(d)
		} else {
			r.timer.Reset(d)
		}
		select {
		case <-wait:
			r.timer.Stop()
		case <-r.timer.C:
			return r.deliver(last)
		case <-ctx.Done():
			r.timer.Stop()
			return r.deliver(last)
		case <-r.w.closedCh:
			r.timer.Stop()
			return telemetry.Batch{}, 0, ErrClosed
		}
	}
}

// deliver remembers the end of the batch for Commit and returns it.
func (r *Reader) deliver(last delivery) (telemetry.Batch, Position, error) {
	w := r.w
	w.mu.Lock()
	if last.end > r.commitPos {
		if len(r.delivered) >= maxDelivered {
			r.delivered = r.delivered[:copy(r.delivered, r.delivered[1:])]
		}
		r.delivered = append(r.delivered, last)
	}
	w.mu.Unlock()
	return r.batch, last.end, nil
}

// readOne adds the record at the read position to r.batch, moving past segment ends and
// corruption. When no record is unread it returns stepNone and a channel closed when one
// may be; when have is set and the record holds more than room points, stepFull.
func (r *Reader) readOne(room int, have bool) (step, delivery, <-chan struct{}, error) {
	w := r.w
	for {
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return 0, delivery{}, nil, ErrClosed
		}
		i := w.segmentIndex(r.readPos)
		if i < 0 { // cannot happen: whatever removes segments moves the readers first
			first := w.segs[0]
			r.jumpLocked(first.base, first.firstRec, first.firstPts)
			w.mu.Unlock()
			continue
		}
		s := w.segs[i]
		off := int64(r.readPos - s.base)
		if off < segmentHeaderLen && s.size >= segmentHeaderLen {
			off = segmentHeaderLen
			r.jumpLocked(s.base+segmentHeaderLen, r.readRec, r.readPts)
		}
		if off >= s.size {
			if i == len(w.segs)-1 {
				wait := w.dataCh
				w.mu.Unlock()
				return stepNone, delivery{}, wait, nil
			}
			if s.damage != "" {
				w.reportCorruptLocked(s, s.size, 1, s.fileSize-s.size, s.damage)
			}
			next := w.segs[i+1]
			r.jumpLocked(next.base, next.firstRec, next.firstPts)
			w.mu.Unlock()
			continue
		}
		pos, base, path, limit := r.readPos, s.base, s.path, s.size
		w.mu.Unlock()

		h, problem := r.header(base, path, off, limit)
		if problem != "" {
			r.skipSegment(pos, off, problem)
			continue
		}
		if have && int64(h.points) > int64(room) {
			return stepFull, delivery{}, nil, nil
		}
		rec, problem := r.record(off, h, limit)
		if problem != "" {
			r.skipSegment(pos, off, problem)
			continue
		}
		n := len(r.batch.Points)
		if err := r.decodeAppend(rec[recordHeaderLen:], int(h.points)); err != nil {
			r.batch.Points = r.batch.Points[:n]
			r.skipRecord(pos, off, h, err.Error())
			continue
		}
		w.mu.Lock()
		if r.readPos != pos { // a drop moved the reader while it read: the record is gone
			w.mu.Unlock()
			r.batch.Points = r.batch.Points[:n]
			continue
		}
		r.readPos += Position(h.size())
		r.readRec++
		r.readPts += int64(h.points)
		d := delivery{r.readPos, r.readRec, r.readPts}
		w.mu.Unlock()
		return stepRecord, d, nil, nil
	}
}

// header reads and checks the header of the record at off of segment base; problem says
// why there is no sound record there.
func (r *Reader) header(base Position, path string, off, limit int64) (recordHeader, string) {
	if r.file == nil || r.fileBase != base {
		if r.file != nil {
			r.file.Close()
			r.file = nil
		}
		f, err := os.Open(path)
		if err != nil {
			return recordHeader{}, "cannot open the segment: " + err.Error()
		}
		r.file, r.fileBase = f, base
		r.win.reset(f)
	}
	if off+recordHeaderLen > limit {
		return recordHeader{}, fmt.Sprintf("%d bytes are too few for a record header", limit-off)
	}
	b, err := r.win.peek(off, recordHeaderLen, limit, readAhead)
	if err != nil {
		return recordHeader{}, "read error: " + err.Error()
	}
	h := parseRecordHeader(b)
	if h.length > MaxRecordBytes {
		return h, fmt.Sprintf("record claims %d bytes, more than the %d allowed", h.length, MaxRecordBytes)
	}
	if off+h.size() > limit {
		return h, fmt.Sprintf("record of %d bytes runs past the end of the segment", h.size())
	}
	return h, ""
}

// record reads the whole record whose header is h and checks its checksum.
func (r *Reader) record(off int64, h recordHeader, limit int64) ([]byte, string) {
	rec, err := r.win.peek(off, int(h.size()), limit, readAhead)
	if err != nil {
		return nil, "read error: " + err.Error()
	}
	if recordChecksum(rec) != h.crc {
		return nil, "checksum mismatch"
	}
	return rec, ""
}

// decodeAppend decodes a payload onto the end of r.batch, in place when its capacity
// allows.
func (r *Reader) decodeAppend(payload []byte, points int) error {
	n := len(r.batch.Points)
	tail := telemetry.Batch{Points: r.batch.Points[n:]}
	spare := tail.Points[:min(1, cap(tail.Points))]
	if err := telemetry.DecodeBatch(payload, &tail, r.w.in); err != nil {
		return err
	}
	if len(tail.Points) != points {
		return fmt.Errorf("record header announces %d points, the payload holds %d", points, len(tail.Points))
	}
	if len(tail.Points) > 0 && len(spare) > 0 && &tail.Points[0] == &spare[0] {
		r.batch.Points = r.batch.Points[:n+len(tail.Points)] // decoded in place
	} else {
		r.batch.Points = append(r.batch.Points, tail.Points...)
	}
	return nil
}

// skipSegment handles a corrupt record at pos (offset off): the reader moves to the next
// segment, or to the end of what is written when the segment is the active one.
func (r *Reader) skipSegment(pos Position, off int64, problem string) {
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.readPos != pos { // moved by a drop meanwhile
		return
	}
	i := w.segmentIndex(pos)
	s := w.segs[i]
	var target Position
	var rec, pts int64
	if i < len(w.segs)-1 {
		next := w.segs[i+1]
		target, rec, pts = next.base, next.firstRec, next.firstPts
	} else {
		target, rec, pts = s.base+Position(s.size), s.firstRec+s.records, s.firstPts+s.points
	}
	w.reportCorruptLocked(s, off, max(rec-r.readRec, 1), int64(target-pos), problem)
	r.jumpLocked(target, rec, pts)
}

// skipRecord handles a record whose checksum is right but whose payload does not decode:
// the reader moves past that record only.
func (r *Reader) skipRecord(pos Position, off int64, h recordHeader, problem string) {
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.readPos != pos {
		return
	}
	w.reportCorruptLocked(w.segs[w.segmentIndex(pos)], off, 1, h.size(), problem)
	r.jumpLocked(pos+Position(h.size()), r.readRec+1, r.readPts+int64(h.points))
}

// jumpLocked moves the read position past data that holds no deliverable record (a
// segment's end, corruption). When everything read so far is committed, the commit
// position moves along, so the skipped data counts as consumed: it is not pending, does
// not keep its segment alive, and is not skipped (and counted) again after a restart.
func (r *Reader) jumpLocked(pos Position, rec, pts int64) {
	if r.commitPos == r.readPos {
		r.commitPos, r.commitRec, r.commitPts = pos, rec, pts
		r.updatePendingLocked()
	}
	r.readPos, r.readRec, r.readPts = pos, rec, pts
}

// reportCorruptLocked counts and logs corruption at offset off of s, once however many
// readers meet it.
func (w *WAL) reportCorruptLocked(s *segment, off, records, bytes int64, problem string) {
	if s.reported[off] {
		return
	}
	if s.reported == nil {
		s.reported = make(map[int64]bool)
	}
	s.reported[off] = true
	w.m.corruptRecords.Add(float64(records))
	w.log.Warn("corrupt data in the write-ahead log; skipped it", "segment", s.path, "offset", off,
		"skipped_records", records, "skipped_bytes", bytes, "reason", problem)
}

// Commit records that the consumer has stored everything up to pos, a Position returned
// by Next (a position between two that Next returned commits up to the earlier one; one
// already committed is a no-op). The cursor is persisted atomically within a second, at
// Close, and at once when an appender waits for space; segments every reader's persisted
// cursor has passed are then deleted. After a crash, records committed in the last second
// may be delivered again; none is skipped.
//
// Commit does no I/O and is safe to call from any goroutine. Errors: ErrClosed after
// Close; ErrInvalidPosition for a position beyond the last batch Next returned.
func (r *Reader) Commit(pos Position) error {
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if pos <= r.commitPos {
		return nil
	}
	if len(r.delivered) == 0 || pos > r.delivered[len(r.delivered)-1].end {
		last := r.commitPos
		if len(r.delivered) > 0 {
			last = r.delivered[len(r.delivered)-1].end
		}
		return fmt.Errorf("%w: reader %s: %d is past the end of the last batch Next returned (%d)", ErrInvalidPosition, r.name, pos, last)
	}
	k := -1
	for i, d := range r.delivered {
		if d.end > pos {
			break
		}
		k = i
	}
	if k < 0 {
		return nil
	}
	d := r.delivered[k]
	r.commitPos, r.commitRec, r.commitPts = d.end, d.rec, d.pts
	r.delivered = r.delivered[:copy(r.delivered, r.delivered[k+1:])]
	r.updatePendingLocked()
	if w.waiters > 0 {
		select {
		case w.persistSignal <- struct{}{}:
		default:
		}
	}
	return nil
}

// Pending returns how many records and points were appended but not yet committed by this
// reader. It is safe for concurrent use.
func (r *Reader) Pending() (records, points int64) {
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.totalRec - r.commitRec, w.totalPts - r.commitPts
}

// Name returns the reader's name.
func (r *Reader) Name() string { return r.name }

// trimDeliveredLocked forgets the deliveries at or before the commit position.
func (r *Reader) trimDeliveredLocked() {
	k := 0
	for k < len(r.delivered) && r.delivered[k].end <= r.commitPos {
		k++
	}
	r.delivered = r.delivered[:copy(r.delivered, r.delivered[k:])]
}

func (r *Reader) updatePendingLocked() {
	r.pending.Set(float64(r.w.totalPts - r.commitPts))
}
