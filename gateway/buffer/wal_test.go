package buffer_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/metrictest"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/internal/testlog"
)

// TestAppendReadCommitAcrossSegmentsAndRestarts runs in a synctest bubble, so waiting for
// the cursor to be persisted takes no real time.
func TestAppendReadCommitAcrossSegmentsAndRestarts(t *testing.T) {
	for _, fsync := range []string{buffer.FsyncBatch, buffer.FsyncInterval, buffer.FsyncOff} {
		t.Run(fsync, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := testConfig(t, func(c *buffer.Config) { c.Fsync = fsync; c.FsyncInterval = 5 * time.Millisecond })
				const total, points = 120, 10

				w, err := buffer.Open(cfg, []string{"sink"})
				if err != nil {
					t.Fatal(err)
				}
				appendSeqs(t, w, 0, total/2, points)
				r := w.Reader("sink")
				if rec, pts := r.Pending(); rec != total/2 || pts != total/2*points {
					t.Fatalf("Pending = %d records, %d points; want %d, %d", rec, pts, total/2, total/2*points)
				}
				assertSeqs(t, readSeqs(t, r, 20, true), seqRange(0, 20))
				if rec, pts := r.Pending(); rec != total/2-20 || pts != (total/2-20)*points {
					t.Fatalf("Pending after committing 20 = %d records, %d points; want %d, %d", rec, pts, total/2-20, (total/2-20)*points)
				}
				// Read further without committing: a restart must deliver these again.
				readSeqs(t, r, 10, false)
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				if n := len(segmentFiles(t, cfg.Dir)); n < 3 {
					t.Fatalf("%d segment files; the test wants records spread over several", n)
				}

				w, err = buffer.Open(cfg, []string{"sink"})
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				r = w.Reader("sink")
				if rec, _ := r.Pending(); rec != total/2-20 {
					t.Fatalf("Pending after restart = %d records, want %d", rec, total/2-20)
				}
				appendSeqs(t, w, total/2, total, points)
				assertSeqs(t, readSeqs(t, r, total-20, true), seqRange(20, total))
				assertNothingUnread(t, r)
				if rec, pts := r.Pending(); rec != 0 || pts != 0 {
					t.Fatalf("Pending after committing everything = %d, %d", rec, pts)
				}
				// Once the cursor is persisted (within a second) every sealed segment goes.
				time.Sleep(1100 * time.Millisecond)
				synctest.Wait()
				if n, s := len(segmentFiles(t, cfg.Dir)), w.Stats(); n != 1 || s.Segments != 1 {
					t.Fatalf("%d segment files, %+v after everything was consumed; want only the active segment", n, s)
				}
			})
		})
	}
}

func TestEmptyBatchIsANoOp(t *testing.T) {
	w, _ := openWAL(t, testConfig(t), "sink")
	if err := w.Append(context.Background(), telemetry.Batch{}); err != nil {
		t.Fatal(err)
	}
	if rec, _ := w.Reader("sink").Pending(); rec != 0 {
		t.Fatalf("an empty batch left %d records", rec)
	}
}

// TestReadersAtDifferentSpeeds runs in a synctest bubble: sleeping past the cursor persist
// interval lets exactly one more persist round run.
func TestReadersAtDifferentSpeeds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig(t)
		w, err := buffer.Open(cfg, []string{"fast", "slow"})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		const total = 100
		appendSeqs(t, w, 0, total, 10)
		before := len(segmentFiles(t, cfg.Dir))
		if before < 4 {
			t.Fatalf("only %d segments", before)
		}
		persistRound := func() {
			time.Sleep(1100 * time.Millisecond)
			synctest.Wait()
		}

		fast, slow := w.Reader("fast"), w.Reader("slow")
		assertSeqs(t, readSeqs(t, fast, total, true), seqRange(0, total))
		persistRound()
		if n := len(segmentFiles(t, cfg.Dir)); n != before {
			t.Fatalf("%d of %d segments left while the slow reader has read nothing", n, before)
		}
		assertSeqs(t, readSeqs(t, slow, total/2, true), seqRange(0, total/2))
		persistRound()
		mid := len(segmentFiles(t, cfg.Dir))
		if mid >= before || mid <= 1 {
			t.Fatalf("%d of %d segments left with the slow reader half way; want the ones it passed deleted", mid, before)
		}
		persistRound()
		if n := len(segmentFiles(t, cfg.Dir)); n != mid {
			t.Fatalf("%d segments left after another round without commits, want %d", n, mid)
		}
		assertSeqs(t, readSeqs(t, slow, total/2, true), seqRange(total/2, total))
		persistRound()
		if n := len(segmentFiles(t, cfg.Dir)); n != 1 {
			t.Fatalf("%d segments left after both readers committed everything, want the active one", n)
		}
	})
}

func TestNewReaderStartsAtOldestRecord(t *testing.T) {
	cfg := testConfig(t)
	w, err := buffer.Open(cfg, []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	appendSeqs(t, w, 0, 5, 3)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, _ = openWAL(t, cfg, "a", "b")
	assertSeqs(t, readSeqs(t, w.Reader("b"), 5, true), seqRange(0, 5))
	assertSeqs(t, readSeqs(t, w.Reader("a"), 5, true), seqRange(0, 5))
}

func TestCursorFilesSurviveRestarts(t *testing.T) {
	cfg := testConfig(t)
	w, err := buffer.Open(cfg, []string{"x.tmp", "y"})
	if err != nil {
		t.Fatal(err)
	}
	appendSeqs(t, w, 0, 10, 2)
	readSeqs(t, w.Reader("x.tmp"), 4, true)
	readSeqs(t, w.Reader("y"), 7, true)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// A temporary file left by a cursor write that a crash interrupted is removed.
	leftover := filepath.Join(cfg.Dir, ".tmp-cursor-y")
	writeFile(t, leftover, []byte("half"))
	w, _ = openWAL(t, cfg, "x.tmp", "y")
	assertSeqs(t, readSeqs(t, w.Reader("x.tmp"), 6, true), seqRange(4, 10))
	assertSeqs(t, readSeqs(t, w.Reader("y"), 3, true), seqRange(7, 10))
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover temporary cursor file: %v", err)
	}
}

func TestCursorRecovery(t *testing.T) {
	// Build a log of 30 records, then damage the cursor file in different ways.
	tests := []struct {
		name   string
		cursor func(t *testing.T, path string, data []byte)
		want   []int
	}{
		{"damaged cursor replays everything", func(t *testing.T, path string, data []byte) {
			data[9] ^= 0xff
			writeFile(t, path, data)
		}, seqRange(0, 30)},
		{"missing cursor replays everything", func(t *testing.T, path string, _ []byte) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, seqRange(0, 30)},
		{"cursor inside a record repeats that record", func(t *testing.T, path string, data []byte) {
			writeFile(t, path, modifyCursor(t, data, func(p uint64) uint64 { return p + 1 }))
		}, seqRange(10, 30)},
		{"cursor past the end starts at the end", func(t *testing.T, path string, data []byte) {
			writeFile(t, path, modifyCursor(t, data, func(p uint64) uint64 { return 1 << 40 }))
		}, nil},
		{"cursor before the oldest segment starts at the oldest", func(t *testing.T, path string, data []byte) {
			// As if segments had been deleted behind the reader's back.
			segs := segmentFiles(t, filepath.Dir(path))
			if err := os.Remove(segs[0]); err != nil {
				t.Fatal(err)
			}
			writeFile(t, path, modifyCursor(t, data, func(p uint64) uint64 { return 0 }))
		}, nil}, // checked below: the records of the remaining segments
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			w, err := buffer.Open(cfg, []string{"sink"})
			if err != nil {
				t.Fatal(err)
			}
			appendSeqs(t, w, 0, 30, 5)
			readSeqs(t, w.Reader("sink"), 10, true)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(cfg.Dir, "cursor-sink")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tc.cursor(t, path, data)
			w, _ = openWAL(t, cfg, "sink")
			r := w.Reader("sink")
			want := tc.want
			if strings.HasPrefix(tc.name, "cursor before") {
				n := int(w.Stats().Records)
				want = seqRange(30-n, 30)
			}
			assertSeqs(t, readSeqs(t, r, len(want), true), want)
			assertNothingUnread(t, r)
		})
	}
}

// TestTornTail damages the tail of the last segment the way a crash or a bad disk does.
func TestTornTail(t *testing.T) {
	tests := []struct {
		name     string
		damage   func(data []byte, lastRecord int) []byte
		keep     int // records that must survive, of 10
		truncate func(data []byte, lastRecord int) int
	}{
		{"cut mid-record", func(d []byte, last int) []byte { return d[:last+20] }, 9,
			func(d []byte, last int) int { return 20 }},
		{"cut mid-header", func(d []byte, last int) []byte { return d[:last+5] }, 9,
			func(d []byte, last int) int { return 5 }},
		{"garbage appended", func(d []byte, last int) []byte { return append(d, "\x13\x00\x00\x00garbage after the last record"...) }, 10,
			func(d []byte, last int) int { return len("\x13\x00\x00\x00garbage after the last record") }},
		{"zeros appended", func(d []byte, last int) []byte { return append(d, make([]byte, 4096)...) }, 10,
			func(d []byte, last int) int { return 4096 }},
		{"flipped byte in the last record", func(d []byte, last int) []byte { d[len(d)-3] ^= 0x40; return d }, 9,
			func(d []byte, last int) int { return len(d) - last }},
		{"absurd length", func(d []byte, last int) []byte { d[last+3] = 0x7f; return d }, 9,
			func(d []byte, last int) int { return len(d) - last }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, func(c *buffer.Config) { c.SegmentBytes = 1 << 20 })
			w, err := buffer.Open(cfg, []string{"sink"})
			if err != nil {
				t.Fatal(err)
			}
			appendSeqs(t, w, 0, 9, 4)
			lastStart := fileSize(t, segmentFiles(t, cfg.Dir)[0])
			appendSeqs(t, w, 9, 10, 4)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			seg := segmentFiles(t, cfg.Dir)[0]
			data, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			wantCut := tc.truncate(data, int(lastStart))
			writeFile(t, seg, tc.damage(data, int(lastStart)))

			var logs testlog.Buffer
			reg := prometheus.NewRegistry()
			w, err = buffer.Open(cfg, []string{"sink"}, buffer.WithRegisterer(reg),
				buffer.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if got := metrictest.Sum(t, reg, "millwright_buffer_truncated_bytes_total"); got != float64(wantCut) {
				t.Errorf("truncated bytes = %v, want %d", got, wantCut)
			}
			if want := fmt.Sprintf("truncated_bytes=%d", wantCut); !strings.Contains(logs.String(), want) {
				t.Errorf("log does not report %s:\n%s", want, logs.String())
			}
			r := w.Reader("sink")
			assertSeqs(t, readSeqs(t, r, tc.keep, true), seqRange(0, tc.keep))
			// The log goes on after the repaired tail.
			appendSeqs(t, w, 100, 102, 4)
			assertSeqs(t, readSeqs(t, r, 2, true), []int{100, 101})
			assertNothingUnread(t, r)
		})
	}
}

func TestUndecodableRecordIsSkipped(t *testing.T) {
	cfg := testConfig(t)
	w, err := buffer.Open(cfg, []string{"sink"})
	if err != nil {
		t.Fatal(err)
	}
	appendSeqs(t, w, 0, 1, 3)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// A record whose checksum is right but whose payload is not a batch: only a bug could
	// write it, and the reader must step over that one record.
	payload := []byte("\x01\x05not a batch")
	rec := make([]byte, 12, 12+len(payload))
	rec = append(rec, payload...)
	binary.LittleEndian.PutUint32(rec[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(rec[8:], 5)
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(rec[8:], crc32.MakeTable(crc32.Castagnoli)))
	seg := segmentFiles(t, cfg.Dir)[0]
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(rec); err != nil {
		t.Fatal(err)
	}
	f.Close()

	w, reg := openWAL(t, cfg, "sink")
	appendSeqs(t, w, 1, 2, 3)
	r := w.Reader("sink")
	assertSeqs(t, readSeqs(t, r, 2, true), []int{0, 1})
	assertNothingUnread(t, r)
	if got := metrictest.Sum(t, reg, "millwright_buffer_corrupt_records_total"); got != 1 {
		t.Errorf("corrupt records = %v, want 1", got)
	}
	if rec, _ := r.Pending(); rec != 0 {
		t.Errorf("Pending = %d records after reading everything", rec)
	}
}

func TestTornSegmentHeader(t *testing.T) {
	cfg := testConfig(t)
	w, err := buffer.Open(cfg, []string{"sink"})
	if err != nil {
		t.Fatal(err)
	}
	appendSeqs(t, w, 0, 40, 10)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segmentFiles(t, cfg.Dir)
	// A crash right after a segment was created can leave it empty.
	writeFile(t, segs[len(segs)-1], nil)
	w, _ = openWAL(t, cfg, "sink")
	r := w.Reader("sink")
	n := int(w.Stats().Records)
	if n == 0 || n >= 40 {
		t.Fatalf("%d records left; want the ones before the emptied last segment", n)
	}
	assertSeqs(t, readSeqs(t, r, n, true), seqRange(0, n))
	assertNothingUnread(t, r)
	appendSeqs(t, w, 100, 101, 10)
	assertSeqs(t, readSeqs(t, r, 1, true), []int{100})
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestCorruptionInOlderSegmentIsSkipped(t *testing.T) {
	tests := []struct {
		name string
		// damage corrupts the second segment file, given its bytes and the offset of its
		// second record.
		damage func(data []byte, second int) []byte
		// Every case damages the second record: the reader loses it and the rest of the
		// segment.
	}{
		{"flipped payload byte", func(d []byte, second int) []byte { d[second+20] ^= 0x01; return d }},
		{"flipped checksum", func(d []byte, second int) []byte { d[second+5] ^= 0x80; return d }},
		{"absurd length", func(d []byte, second int) []byte { d[second+3] = 0xff; return d }},
		{"truncated", func(d []byte, second int) []byte { return d[:second+30] }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			w, err := buffer.Open(cfg, []string{"a", "b"})
			if err != nil {
				t.Fatal(err)
			}
			const total = 100
			appendSeqs(t, w, 0, total, 10)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			segs := segmentFiles(t, cfg.Dir)
			if len(segs) < 4 {
				t.Fatalf("only %d segments", len(segs))
			}
			first, second := recordsIn(t, segs[0]), recordsIn(t, segs[1])
			data, err := os.ReadFile(segs[1])
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, segs[1], tc.damage(data, second[1]))

			// Records of segment 1 from its second one on are lost; the rest is read in order.
			var want []int
			want = append(want, seqRange(0, len(first)+1)...)
			want = append(want, seqRange(len(first)+len(second), total)...)
			w, reg := openWAL(t, cfg, "a", "b")
			for _, name := range []string{"a", "b"} {
				r := w.Reader(name)
				assertSeqs(t, readSeqs(t, r, len(want), true), want)
				assertNothingUnread(t, r)
			}
			if got := metrictest.Sum(t, reg, "millwright_buffer_corrupt_records_total"); got < 1 || got > float64(len(second)-1) {
				t.Errorf("corrupt records = %v, want between 1 and %d, counted once for both readers", got, len(second)-1)
			}
		})
	}
}

// recordsIn returns the offsets of the records of a segment file, parsing it independently.
func recordsIn(t testing.TB, path string) []int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int
	for off := 16; off+12 <= len(data); {
		offs = append(offs, off)
		off += 12 + int(le32(data[off:]))
	}
	return offs
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func TestBlockPolicy(t *testing.T) {
	cfg := testConfig(t, func(c *buffer.Config) { c.SegmentBytes = 4 << 10; c.MaxBytes = 16 << 10 })
	w, reg := openWAL(t, cfg, "sink")
	seq := 0
	for ; ; seq++ {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := w.Append(ctx, seqBatch(seq, 10))
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if seq > 1000 {
			t.Fatal("Append never blocked on a full log")
		}
	}
	if s := w.Stats(); s.Bytes > int64(cfg.MaxBytes) {
		t.Fatalf("log holds %d bytes, more than max_bytes %d", s.Bytes, cfg.MaxBytes)
	}
	if got := metrictest.Sum(t, reg, "millwright_buffer_append_blocked_seconds_total"); got < 0.05 {
		t.Errorf("blocked seconds = %v after a 100ms block", got)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- w.Append(ctx, seqBatch(seq, 10))
	}()
	select {
	case err := <-done:
		t.Fatalf("Append returned %v before anything was consumed", err)
	case <-time.After(100 * time.Millisecond):
	}
	r := w.Reader("sink")
	assertSeqs(t, readSeqs(t, r, seq, true), seqRange(0, seq))
	if err := <-done; err != nil {
		t.Fatalf("Append after the reader committed: %v", err)
	}
	assertSeqs(t, readSeqs(t, r, 1, true), []int{seq})
	if got := metrictest.Sum(t, reg, "millwright_buffer_dropped_records_total"); got != 0 {
		t.Errorf("block policy dropped %v records", got)
	}
}

func TestBlockedAppendEndsOnClose(t *testing.T) {
	cfg := testConfig(t, func(c *buffer.Config) { c.MaxBytes = 8 << 10 })
	w, err := buffer.Open(cfg, []string{"sink"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for seq := 0; ; seq++ {
			if err := w.Append(context.Background(), seqBatch(seq, 10)); err != nil {
				done <- err
				return
			}
		}
	}()
	servicetest.WaitFor(t, 10*time.Second, "the log to fill", func() bool { return w.Stats().Bytes > 4<<10 })
	time.Sleep(50 * time.Millisecond)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, buffer.ErrClosed) {
		t.Fatalf("blocked Append returned %v at Close, want ErrClosed", err)
	}
}

func TestDropOldestPolicy(t *testing.T) {
	cfg := testConfig(t, func(c *buffer.Config) {
		c.SegmentBytes = 4 << 10
		c.MaxBytes = 16 << 10
		c.Overflow = buffer.OverflowDropOldest
	})
	w, reg := openWAL(t, cfg, "sink", "other")
	const total, points = 200, 10
	appendSeqs(t, w, 0, total, points)
	if s := w.Stats(); s.Bytes > int64(cfg.MaxBytes) {
		t.Fatalf("log holds %d bytes, more than max_bytes %d", s.Bytes, cfg.MaxBytes)
	}
	droppedRec := metrictest.Sum(t, reg, "millwright_buffer_dropped_records_total")
	droppedPts := metrictest.Sum(t, reg, "millwright_buffer_dropped_points_total")
	if droppedRec == 0 || droppedPts != droppedRec*points {
		t.Fatalf("dropped %v records and %v points; want some records of %d points each", droppedRec, droppedPts, points)
	}
	for _, name := range []string{"sink", "other"} {
		r := w.Reader(name)
		rec, pts := r.Pending()
		if rec != total-int64(droppedRec) || pts != rec*points {
			t.Fatalf("%s: Pending = %d records, %d points; want %d records left after the drops", name, rec, pts, total-int64(droppedRec))
		}
		// What is left is the newest records, in order.
		assertSeqs(t, readSeqs(t, r, int(rec), true), seqRange(int(droppedRec), total))
		assertNothingUnread(t, r)
	}
}

func TestDropWhileReading(t *testing.T) {
	cfg := testConfig(t, func(c *buffer.Config) {
		c.SegmentBytes = 4 << 10
		c.MaxBytes = 16 << 10
		c.Overflow = buffer.OverflowDropOldest
	})
	w, reg := openWAL(t, cfg, "sink")
	r := w.Reader("sink")
	var wg sync.WaitGroup
	wg.Add(1)
	const total = 2000
	go func() {
		defer wg.Done()
		for seq := range total {
			if err := w.Append(context.Background(), seqBatch(seq, 10)); err != nil {
				t.Errorf("Append %d: %v", seq, err)
				return
			}
		}
	}()
	last := -1
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for last < total-1 {
		b, pos, err := r.Next(ctx, 50, time.Millisecond)
		if err != nil {
			t.Fatalf("Next after record %d: %v", last, err)
		}
		for _, s := range seqsOf(t, b) {
			if s <= last {
				t.Fatalf("record %d after %d: out of order", s, last)
			}
			last = s
		}
		if err := r.Commit(pos); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	t.Logf("dropped %v records while reading", metrictest.Sum(t, reg, "millwright_buffer_dropped_records_total"))
}

func TestConcurrentAppendsGroupCommit(t *testing.T) {
	cfg := testConfig(t, func(c *buffer.Config) { c.Fsync = buffer.FsyncBatch; c.SegmentBytes = 64 << 10 })
	w, reg := openWAL(t, cfg, "sink")
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := w.Append(context.Background(), seqBatch(g*each+i, 3)); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	seqs := readSeqs(t, w.Reader("sink"), writers*each, true)
	last := make([]int, writers)
	for i := range last {
		last[i] = -1
	}
	for _, s := range seqs {
		g := s / each
		if s <= last[g] {
			t.Fatalf("writer %d: record %d after %d", g, s, last[g])
		}
		last[g] = s
	}
	fsyncs := metrictest.Sum(t, reg, "millwright_buffer_fsync_seconds")
	t.Logf("%d appends took %v fsyncs", writers*each, fsyncs)
	if fsyncs == 0 {
		t.Error("fsync=batch never fsynced")
	}
	if got := metrictest.Sum(t, reg, "millwright_buffer_appended_points_total"); got != writers*each*3 {
		t.Errorf("appended points = %v, want %d", got, writers*each*3)
	}
}

func TestAppendTooLarge(t *testing.T) {
	w, _ := openWAL(t, testConfig(t), "sink")
	err := w.Append(context.Background(), seqBatch(0, 2000))
	if !errors.Is(err, buffer.ErrBatchTooLarge) || !strings.Contains(err.Error(), "segment_bytes 4KiB") {
		t.Fatalf("Append of a batch larger than a segment = %v, want ErrBatchTooLarge naming segment_bytes", err)
	}
}

func TestCommitAndClosedErrors(t *testing.T) {
	cfg := testConfig(t)
	w, err := buffer.Open(cfg, []string{"sink"})
	if err != nil {
		t.Fatal(err)
	}
	r := w.Reader("sink")
	appendSeqs(t, w, 0, 3, 2)
	_, pos, err := r.Next(context.Background(), 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(pos + 1); !errors.Is(err, buffer.ErrInvalidPosition) {
		t.Errorf("Commit past what Next returned = %v, want ErrInvalidPosition", err)
	}
	if err := r.Commit(pos); err != nil {
		t.Errorf("Commit: %v", err)
	}
	if err := r.Commit(pos); err != nil {
		t.Errorf("Commit of an already committed position: %v", err)
	}
	if err := r.Commit(pos - 5); err != nil {
		t.Errorf("Commit of an earlier position: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := r.Next(ctx, 10, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Next with a cancelled context = %v", err)
	}
	if err := w.Append(ctx, seqBatch(9, 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Append with a cancelled context = %v", err)
	}

	nextErr := make(chan error, 1)
	go func() {
		_, _, err := r.Next(context.Background(), 1, 0) // reads record 1 ...
		if err == nil {
			_, _, err = r.Next(context.Background(), 1, 0) // ... and 2 ...
		}
		if err == nil {
			_, _, err = r.Next(context.Background(), 1, 0) // ... then waits until Close
		}
		nextErr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-nextErr; !errors.Is(err, buffer.ErrClosed) {
		t.Errorf("Next blocked at Close = %v, want ErrClosed", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := w.Append(context.Background(), seqBatch(9, 1)); !errors.Is(err, buffer.ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
	if _, _, err := r.Next(context.Background(), 1, 0); !errors.Is(err, buffer.ErrClosed) {
		t.Errorf("Next after Close = %v, want ErrClosed", err)
	}
	if err := r.Commit(pos); !errors.Is(err, buffer.ErrClosed) {
		t.Errorf("Commit after Close = %v, want ErrClosed", err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Reader of an unknown name did not panic")
			}
		}()
		w.Reader("nobody")
	}()
}

func TestOpenErrors(t *testing.T) {
	valid := testConfig(t)
	tests := []struct {
		name    string
		cfg     buffer.Config
		readers []string
		want    string
	}{
		{"invalid config", buffer.Config{}, []string{"a"}, "dir: is empty"},
		{"no readers", valid, nil, "no readers"},
		{"bad name", valid, []string{"../x"}, `reader name "../x" is invalid`},
		{"empty name", valid, []string{""}, `reader name "" is invalid`},
		{"duplicate", valid, []string{"a", "a"}, `reader name "a" is given twice`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := buffer.Open(tc.cfg, tc.readers)
			if err == nil {
				w.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	t.Run("locked", func(t *testing.T) {
		cfg := testConfig(t)
		openWAL(t, cfg, "a")
		if w, err := buffer.Open(cfg, []string{"a"}); err == nil || !strings.Contains(err.Error(), "locked") {
			if err == nil {
				w.Close()
			}
			t.Fatalf("second Open of one directory = %v, want a lock error", err)
		}
	})
	t.Run("metrics registered twice", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		w, err := buffer.Open(testConfig(t), []string{"a"}, buffer.WithRegisterer(reg))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if w2, err := buffer.Open(testConfig(t), []string{"a"}, buffer.WithRegisterer(reg)); err == nil {
			w2.Close()
			t.Fatal("a second WAL registered the same metrics")
		}
	})
}

func TestMetricsNames(t *testing.T) {
	cfg := testConfig(t, func(c *buffer.Config) { c.Fsync = buffer.FsyncBatch })
	w, reg := openWAL(t, cfg, "sink")
	appendSeqs(t, w, 0, 3, 7)
	for name, want := range map[string]float64{
		"millwright_buffer_bytes":                        float64(w.Stats().Bytes),
		"millwright_buffer_segments":                     1,
		"millwright_buffer_pending_points":               21,
		"millwright_buffer_appended_points_total":        21,
		"millwright_buffer_dropped_points_total":         0,
		"millwright_buffer_dropped_records_total":        0,
		"millwright_buffer_corrupt_records_total":        0,
		"millwright_buffer_truncated_bytes_total":        0,
		"millwright_buffer_append_blocked_seconds_total": 0,
	} {
		if got := metrictest.Sum(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if n := metrictest.Sum(t, reg, "millwright_buffer_fsync_seconds"); n < 3 {
		t.Errorf("fsync histogram counted %v fsyncs for 3 appends under fsync=batch", n)
	}
	mfs, _ := reg.Gather()
	if len(mfs) != 10 {
		t.Errorf("%d metric families registered, want 10", len(mfs))
	}
	// Close unregisters them, so a reopened log can register again.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Errorf("%d metric families left after Close", len(mfs))
	}
}

func TestInvalidStringsAreHandled(t *testing.T) {
	// A batch whose strings are not valid UTF-8 is stored and returned byte for byte.
	w, _ := openWAL(t, testConfig(t), "sink")
	b := telemetry.Batch{Points: []telemetry.Point{{Machine: "\xff\xfe", Signal: "s", Value: telemetry.String("\x00")}}}
	if err := w.Append(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	got, _, err := w.Reader("sink").Next(context.Background(), 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Len() != 1 || got.Points[0] != b.Points[0] {
		t.Fatalf("got %+v, want %+v", got.Points, b.Points)
	}
}

func ExampleWAL() {
	dir, _ := os.MkdirTemp("", "wal")
	defer os.RemoveAll(dir)
	cfg := buffer.Config{Dir: dir}
	cfg.SetDefaults()
	w, err := buffer.Open(cfg, []string{"influxdb"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()

	ctx := context.Background()
	_ = w.Append(ctx, telemetry.Batch{Points: []telemetry.Point{{Machine: "press-1", Signal: "temp", Value: telemetry.Float(71.5)}}})

	r := w.Reader("influxdb")
	b, pos, err := r.Next(ctx, 5000, 100*time.Millisecond)
	if err != nil {
		fmt.Println(err)
		return
	}
	// ... write b to the sink, then:
	_ = r.Commit(pos)
	fmt.Println(b.Len(), b.Points[0].Machine, b.Points[0].Value)
	// Output: 1 press-1 71.5
}
