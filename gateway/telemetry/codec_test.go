package telemetry_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

func pt(machine, signal string, src, srv int64, v telemetry.Value, q telemetry.Quality) telemetry.Point {
	return telemetry.Point{Factory: "f1", Line: "l1", Machine: machine, Signal: signal, SourceTime: src, ServerTime: srv, Value: v, Quality: q}
}

func TestBatchRoundTrip(t *testing.T) {
	good := telemetry.Quality{}
	many := telemetry.Batch{}
	for i := range 300 { // more than 127 distinct strings: multi-byte references
		many.Points = append(many.Points, pt(fmt.Sprintf("m%d", i%7), fmt.Sprintf("sig-%d", i), int64(i)*1e6, 0, telemetry.Int(int64(i)), good))
	}
	tests := []struct {
		name string
		b    telemetry.Batch
	}{
		{"empty", telemetry.Batch{}},
		{"floats", telemetry.Batch{Points: []telemetry.Point{
			pt("m", "a", 1, 2, telemetry.Float(1.5), good),
			pt("m", "a", 2, 3, telemetry.Float(math.NaN()), good),
			pt("m", "a", 3, 4, telemetry.Float(math.Inf(-1)), good),
			pt("m", "a", 4, 5, telemetry.Float(math.Copysign(0, -1)), good),
			pt("m", "a", 5, 6, telemetry.Float(math.MaxFloat64), good),
		}}},
		{"ints", telemetry.Batch{Points: []telemetry.Point{
			pt("m", "i", 1, 1, telemetry.Int(0), good),
			pt("m", "i", 1, 1, telemetry.Int(-1), good),
			pt("m", "i", 1, 1, telemetry.Int(math.MaxInt64), good),
			pt("m", "i", 1, 1, telemetry.Int(math.MinInt64), good),
		}}},
		{"bools", telemetry.Batch{Points: []telemetry.Point{
			pt("m", "b", 1, 1, telemetry.Bool(true), good),
			pt("m", "b", 2, 2, telemetry.Bool(false), good),
		}}},
		{"strings", telemetry.Batch{Points: []telemetry.Point{
			pt("m", "s", 1, 1, telemetry.String(""), good),
			pt("m", "s", 1, 1, telemetry.String("RUNNING"), good),
			pt("m", "s", 1, 1, telemetry.String("RUNNING"), good),
			pt("m", "s", 1, 1, telemetry.String("größe ✓ \x00 bytes"), good),
			pt("m", "s", 1, 1, telemetry.String(strings.Repeat("x", 70000)), good),
			pt("m", "s", 1, 1, telemetry.String("s"), good), // same text as the signal name
		}}},
		{"invalid value", telemetry.Batch{Points: []telemetry.Point{pt("m", "x", 1, 1, telemetry.Value{}, good)}}},
		{"qualities", telemetry.Batch{Points: []telemetry.Point{
			pt("m", "q", 1, 1, telemetry.Int(1), telemetry.Quality{Level: telemetry.Good, Code: 0}),
			pt("m", "q", 1, 1, telemetry.Int(1), telemetry.Quality{Level: telemetry.Uncertain, Code: 0x40000000}),
			pt("m", "q", 1, 1, telemetry.Bool(true), telemetry.Quality{Level: telemetry.Bad, Code: 0x80000000}),
			pt("m", "q", 1, 1, telemetry.Float(2), telemetry.Quality{Level: telemetry.Bad, Code: math.MaxUint32}),
		}}},
		{"times", telemetry.Batch{Points: []telemetry.Point{
			pt("m", "t", 0, 0, telemetry.Int(1), good),
			pt("m", "t", 1_700_000_000_000_000_000, 0, telemetry.Int(1), good),
			pt("m", "t", 0, 1_700_000_000_000_000_001, telemetry.Int(1), good),
			pt("m", "t", -5, math.MaxInt64, telemetry.Int(1), good),
			pt("m", "t", math.MinInt64, math.MinInt64, telemetry.Int(1), good),
			pt("m", "t", math.MaxInt64, -1, telemetry.Int(1), good),
		}}},
		{"empty names", telemetry.Batch{Points: []telemetry.Point{{Value: telemetry.Float(1)}}}},
		{"many strings", many},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc := telemetry.AppendBatch([]byte("prefix"), tc.b)
			if !bytes.HasPrefix(enc, []byte("prefix")) {
				t.Fatalf("AppendBatch did not append to dst")
			}
			for _, in := range []*telemetry.Interner{nil, telemetry.NewInterner(100)} {
				got := telemetry.Batch{Points: make([]telemetry.Point, 3, 10)} // stale points must go
				if err := telemetry.DecodeBatch(enc[len("prefix"):], &got, in); err != nil {
					t.Fatalf("DecodeBatch: %v", err)
				}
				assertBatchEqual(t, got, tc.b)
			}
		})
	}
}

func assertBatchEqual(t *testing.T, got, want telemetry.Batch) {
	t.Helper()
	if len(got.Points) != len(want.Points) {
		t.Fatalf("got %d points, want %d", len(got.Points), len(want.Points))
	}
	for i := range want.Points {
		if got.Points[i] != want.Points[i] {
			t.Fatalf("point %d:\n got %+v\nwant %+v", i, got.Points[i], want.Points[i])
		}
	}
}

func TestAppendBatchNormalizesOutOfRange(t *testing.T) {
	b := telemetry.Batch{Points: []telemetry.Point{
		{Signal: "k", Value: telemetry.Value{Kind: 9}},
		{Signal: "l", Value: telemetry.Int(3), Quality: telemetry.Quality{Level: 7, Code: 5}},
	}}
	var got telemetry.Batch
	if err := telemetry.DecodeBatch(telemetry.AppendBatch(nil, b), &got, nil); err != nil {
		t.Fatal(err)
	}
	if got.Points[0].Value != (telemetry.Value{}) {
		t.Errorf("unknown kind decoded as %+v, want the invalid value", got.Points[0].Value)
	}
	if q := got.Points[1].Quality; q != (telemetry.Quality{Level: telemetry.Bad, Code: 5}) {
		t.Errorf("out-of-range level decoded as %+v, want Bad with the code kept", q)
	}
}

func TestDecodeBatchRejectsMalformed(t *testing.T) {
	valid := telemetry.AppendBatch(nil, telemetry.Batch{Points: []telemetry.Point{
		pt("m", "a", 10, 20, telemetry.Float(1), telemetry.Quality{Level: telemetry.Uncertain, Code: 7}),
		pt("m", "b", 11, 21, telemetry.String("on"), telemetry.Quality{}),
	}})
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty input"},
		{"version", []byte{2, 0}, "version 2, expected 1"},
		{"trailing", append(append([]byte{}, valid...), 0), "1 trailing bytes"},
		{"absurd count", []byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f}, "cannot fit"},
		{"count overflow", []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, "overflows"},
		{"undefined string", []byte{1, 1, byte(telemetry.KindBool), 5, 0, 0, 0, 0, 0, 0}, "string reference 5, but only 0 strings are defined"},
		{"long string", []byte{1, 1, byte(telemetry.KindBool), 0, 100, 'a', 0, 0, 0, 0, 0}, "string of 100 bytes"},
		{"reserved bit", []byte{1, 1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "invalid header byte 0x80"},
		{"bad kind", []byte{1, 1, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "invalid header byte 0x05"},
		{"bad level", []byte{1, 1, 0x60 | byte(telemetry.KindBool), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "invalid header byte 0x63"},
		{"bool bit on int", []byte{1, 1, 0x08 | byte(telemetry.KindInt), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "invalid header byte 0x0a"},
		{"zero code", []byte{1, 1, 0x10 | byte(telemetry.KindBool), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "quality code"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := telemetry.Batch{Points: make([]telemetry.Point, 2)}
			err := telemetry.DecodeBatch(tc.in, &b, nil)
			if !errors.Is(err, telemetry.ErrMalformedBatch) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeBatch(% x) = %v, want ErrMalformedBatch mentioning %q", tc.in, err, tc.want)
			}
			if len(b.Points) != 0 {
				t.Errorf("batch keeps %d points after an error", len(b.Points))
			}
		})
	}
	t.Run("every truncation", func(t *testing.T) {
		var b telemetry.Batch
		for n := range len(valid) {
			if err := telemetry.DecodeBatch(valid[:n], &b, nil); !errors.Is(err, telemetry.ErrMalformedBatch) {
				t.Fatalf("DecodeBatch of the first %d of %d bytes = %v, want ErrMalformedBatch", n, len(valid), err)
			}
		}
	})
}

func TestCodecDoesNotAllocatePerPoint(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	b := benchBatch(1000)
	buf := telemetry.AppendBatch(nil, b)
	if n := testing.AllocsPerRun(50, func() { buf = telemetry.AppendBatch(buf[:0], b) }); n != 0 {
		t.Errorf("AppendBatch into a reused buffer: %v allocations per batch, want 0", n)
	}
	in := telemetry.NewInterner(1000)
	var out telemetry.Batch
	if err := telemetry.DecodeBatch(buf, &out, in); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(50, func() {
		if err := telemetry.DecodeBatch(buf, &out, in); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("DecodeBatch into a reused batch: %v allocations per batch, want 0", n)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0})
	f.Add(telemetry.AppendBatch(nil, benchBatch(5)))
	f.Add(telemetry.AppendBatch(nil, telemetry.Batch{Points: []telemetry.Point{
		pt("m", "s", -1, 1, telemetry.String("x"), telemetry.Quality{Level: telemetry.Bad, Code: 3}),
		pt("m", "b", 0, 0, telemetry.Bool(true), telemetry.Quality{}),
		pt("n", "i", 5, 5, telemetry.Int(-7), telemetry.Quality{Level: telemetry.Uncertain}),
	}}))
	in := telemetry.NewInterner(64)
	f.Fuzz(func(t *testing.T, data []byte) {
		var b telemetry.Batch
		if err := telemetry.DecodeBatch(data, &b, in); err != nil {
			if !errors.Is(err, telemetry.ErrMalformedBatch) {
				t.Fatalf("error %v does not wrap ErrMalformedBatch", err)
			}
			return
		}
		// What decodes must survive a round trip unchanged.
		var again telemetry.Batch
		if err := telemetry.DecodeBatch(telemetry.AppendBatch(nil, b), &again, nil); err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		assertBatchEqual(t, again, b)
	})
}

// benchBatch returns n points shaped like a real read: a few machines, dozens of signals,
// millisecond timestamps, mostly floats.
func benchBatch(n int) telemetry.Batch {
	b := telemetry.Batch{Points: make([]telemetry.Point, n)}
	base := int64(1_700_000_000_000_000_000)
	for i := range b.Points {
		p := &b.Points[i]
		p.Factory, p.Line = "plant-a", fmt.Sprintf("line-%d", i%2)
		p.Machine = fmt.Sprintf("press-%02d", i%10)
		p.Signal = fmt.Sprintf("signal-%02d", i%50)
		p.SourceTime = base + int64(i)*1e6
		p.ServerTime = p.SourceTime + 3e5
		switch i % 10 {
		case 0:
			p.Value = telemetry.Int(int64(i))
		case 1:
			p.Value = telemetry.Bool(i%4 == 1)
		case 2:
			p.Value = telemetry.String("RUNNING")
		default:
			p.Value = telemetry.Float(float64(i) * 0.25)
		}
	}
	return b
}

func BenchmarkAppendBatch(b *testing.B) {
	batch := benchBatch(1000)
	buf := telemetry.AppendBatch(nil, batch)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		buf = telemetry.AppendBatch(buf[:0], batch)
	}
	b.ReportMetric(float64(b.N*len(batch.Points))/b.Elapsed().Seconds(), "points/s")
	b.ReportMetric(float64(len(buf))/float64(len(batch.Points)), "bytes/point")
}

func BenchmarkDecodeBatch(b *testing.B) {
	batch := benchBatch(1000)
	buf := telemetry.AppendBatch(nil, batch)
	in := telemetry.NewInterner(1000)
	var out telemetry.Batch
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if err := telemetry.DecodeBatch(buf, &out, in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch.Points))/b.Elapsed().Seconds(), "points/s")
}
