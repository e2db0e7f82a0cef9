package buffer_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig returns a valid config in a fresh directory with small segments; mods adjust it.
func testConfig(t testing.TB, mods ...func(*buffer.Config)) buffer.Config {
	t.Helper()
	cfg := buffer.Config{Dir: t.TempDir(), SegmentBytes: 4 << 10, MaxBytes: 64 << 20, Fsync: buffer.FsyncOff}
	cfg.SetDefaults()
	for _, m := range mods {
		m(&cfg)
	}
	return cfg
}

// openWAL opens a WAL with a private registry and closes it when the test ends.
func openWAL(t testing.TB, cfg buffer.Config, readers ...string) (*buffer.WAL, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	w, err := buffer.Open(cfg, readers, buffer.WithRegisterer(reg))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return w, reg
}

// seqBatch returns a batch of n points that carries seq: every point's value is
// seq*1000+i, so a reader can tell which append a point came from.
func seqBatch(seq, n int) telemetry.Batch {
	b := telemetry.Batch{Points: make([]telemetry.Point, n)}
	for i := range b.Points {
		b.Points[i] = telemetry.Point{
			Factory: "plant", Line: "line-1", Machine: fmt.Sprintf("m%d", i%3), Signal: fmt.Sprintf("s%d", i),
			SourceTime: int64(seq)*1e9 + int64(i), Value: telemetry.Int(int64(seq*1000 + i)),
		}
	}
	return b
}

// seqsOf returns the sequence numbers of the records in b, checking each record is whole
// and intact.
func seqsOf(t testing.TB, b telemetry.Batch) []int {
	t.Helper()
	var seqs []int
	for i := 0; i < len(b.Points); {
		seq := int(b.Points[i].Value.Int() / 1000)
		j := 0
		for ; i+j < len(b.Points) && int(b.Points[i+j].Value.Int()/1000) == seq; j++ {
			p := b.Points[i+j]
			if p.Value.Int() != int64(seq*1000+j) || p.Signal != fmt.Sprintf("s%d", j) || p.SourceTime != int64(seq)*1e9+int64(j) {
				t.Fatalf("record %d point %d is not what was appended: %+v", seq, j, p)
			}
		}
		seqs = append(seqs, seq)
		i += j
	}
	return seqs
}

func appendSeqs(t testing.TB, w *buffer.WAL, from, to, points int) {
	t.Helper()
	for seq := from; seq < to; seq++ {
		if err := w.Append(context.Background(), seqBatch(seq, points)); err != nil {
			t.Fatalf("Append %d: %v", seq, err)
		}
	}
}

// readSeqs reads want records one at a time (failing after a timeout), committing each
// when commit is set, and returns their sequence numbers.
func readSeqs(t testing.TB, r *buffer.Reader, want int, commit bool) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var seqs []int
	for len(seqs) < want {
		b, pos, err := r.Next(ctx, 1, 0)
		if err != nil {
			t.Fatalf("Next after %d of %d records: %v", len(seqs), want, err)
		}
		seqs = append(seqs, seqsOf(t, b)...)
		if commit {
			if err := r.Commit(pos); err != nil {
				t.Fatalf("Commit: %v", err)
			}
		}
	}
	return seqs
}

// assertNothingUnread checks that Next has nothing more to return.
func assertNothingUnread(t testing.TB, r *buffer.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if b, _, err := r.Next(ctx, 1000, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next = %d points, %v; want nothing more to read", b.Len(), err)
	}
}

func seqRange(from, to int) []int {
	s := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func assertSeqs(t testing.TB, got, want []int) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("read records\n %v\nwant\n %v", got, want)
	}
}

// segmentFiles lists the segment files in dir, oldest first.
func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// modifyCursor rewrites the position in a cursor file's bytes, with a valid checksum.
func modifyCursor(t testing.TB, data []byte, f func(uint64) uint64) []byte {
	t.Helper()
	if len(data) != 20 {
		t.Fatalf("cursor file of %d bytes", len(data))
	}
	out := slices.Clone(data)
	binary.LittleEndian.PutUint64(out[8:], f(binary.LittleEndian.Uint64(out[8:])))
	binary.LittleEndian.PutUint32(out[16:], crc32.Checksum(out[:16], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
