package buffer_test

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// FuzzWALReader writes arbitrary bytes as a segment file (the last one, or an older one
// followed by an empty segment), opens the log and reads everything. It must never panic
// and must return exactly the records an independent parser finds sound: every record
// before the first one that is cut short or fails its checksum, except those whose
// payload does not decode.
func FuzzWALReader(f *testing.F) {
	f.Add([]byte{}, false)
	f.Add([]byte("MWWAL\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00garbage"), true)
	valid := validSegment(f)
	f.Add(valid, false)
	f.Add(valid, true)
	f.Add(valid[:len(valid)-7], false)
	f.Add(valid[:len(valid)-7], true)
	flipped := append([]byte(nil), valid...)
	flipped[40] ^= 0x10
	f.Add(flipped, true)

	f.Fuzz(func(t *testing.T, data []byte, older bool) {
		want := soundPoints(data)
		cfg := testConfig(t)
		if older {
			cfg.SegmentBytes = 1 << 20 // large enough not to roll in this test
			cfg.MaxBytes = 4 << 20
		}
		writeFile(t, filepath.Join(cfg.Dir, "00000000000000000000.seg"), data)
		if older {
			next := uint64(len(data))
			h := make([]byte, 16)
			copy(h, "MWWAL\x00\x00\x01")
			binary.LittleEndian.PutUint64(h[8:], next)
			writeFile(t, filepath.Join(cfg.Dir, segName(next)), h)
		}
		w, err := buffer.Open(cfg, []string{"r"})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer w.Close()
		r := w.Reader("r")
		var got []telemetry.Point
		for len(got) < len(want) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			b, pos, err := r.Next(ctx, 100, 0)
			cancel()
			if err != nil {
				t.Fatalf("Next after %d of %d points: %v", len(got), len(want), err)
			}
			got = append(got, b.Points...)
			if err := r.Commit(pos); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		if b, _, err := r.Next(ctx, 100, 0); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Next returned %d points, %v beyond the %d sound points", b.Len(), err, len(want))
		}
		if len(got) != len(want) {
			t.Fatalf("read %d points, want %d", len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("point %d = %+v, want %+v", i, got[i], want[i])
			}
		}
		// The log stays usable.
		if err := w.Append(context.Background(), seqBatch(1, 2)); err != nil {
			t.Fatalf("Append after recovery: %v", err)
		}
	})
}

func segName(base uint64) string {
	s := "00000000000000000000"
	d := []byte(s)
	for i := len(d) - 1; base > 0; i-- {
		d[i] = byte('0' + base%10)
		base /= 10
	}
	return string(d) + ".seg"
}

// validSegment returns the bytes of a segment written by the WAL.
func validSegment(tb testing.TB) []byte {
	cfg := testConfig(tb, func(c *buffer.Config) { c.SegmentBytes = 1 << 20 })
	w, err := buffer.Open(cfg, []string{"r"})
	if err != nil {
		tb.Fatal(err)
	}
	for seq := range 4 {
		if err := w.Append(context.Background(), seqBatch(seq, seq+1)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	data, err := os.ReadFile(segmentFiles(tb, cfg.Dir)[0])
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// soundPoints parses a segment independently of the package: the points of the records
// that a reader must return.
func soundPoints(data []byte) []telemetry.Point {
	if len(data) < 16 || string(data[:8]) != "MWWAL\x00\x00\x01" || binary.LittleEndian.Uint64(data[8:]) != 0 {
		return nil
	}
	table := crc32.MakeTable(crc32.Castagnoli)
	var out []telemetry.Point
	for off := 16; off+12 <= len(data); {
		length := int(binary.LittleEndian.Uint32(data[off:]))
		if length > 64<<20 || off+12+length > len(data) {
			break
		}
		rec := data[off : off+12+length]
		if crc32.Checksum(rec[8:], table) != binary.LittleEndian.Uint32(rec[4:]) {
			break
		}
		var b telemetry.Batch
		if err := telemetry.DecodeBatch(rec[12:], &b, nil); err == nil && len(b.Points) == int(binary.LittleEndian.Uint32(rec[8:])) {
			out = append(out, b.Points...)
		}
		off += 12 + length
	}
	return out
}
