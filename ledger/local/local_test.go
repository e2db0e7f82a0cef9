package local_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/internal/dirlock"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/local"
)

func TestMain(m *testing.M) { os.Exit(servicetest.RunWithLeakCheck(m)) }

// h returns the hex SHA-256 of s.
func h(s string) string { return audittest.Hash([]byte(s)) }

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

func record(t testing.TB, s *ledger.Signer, site string, at time.Duration, body ledger.Body) ledger.Record {
	t.Helper()
	b, err := ledger.CanonicalMarshal(body)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Sign(ledger.Record{Header: ledger.Header{ID: ledger.NewID(), SchemaVersion: ledger.SchemaVersion,
		Type: body.Type(), Time: t0.Add(at), Site: site}, Body: b})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func snapshot(rows int64) ledger.DatasetSnapshot {
	return ledger.DatasetSnapshot{Windows: []ledger.SignalWindow{{Signal: "f/l/m/s", From: t0, To: t0.Add(time.Hour), Rows: rows}},
		Rows: rows, MetadataHash: h("meta")}
}

func mref(v string) ledger.ModelRef { return ledger.ModelRef{Model: "press", Version: v} }

// fixture is a federated lineage: two sites train 1-a and 1-b on their snapshots, a round
// aggregates them into 2, site a fine-tunes 2 into 3, which is evaluated.
type fixture struct {
	keys                                ledger.Keyring
	snapA, snapB, trainA, trainB, round ledger.Record
	train3, eval3                       ledger.Record
	all                                 []ledger.Record
	missingID                           string
}

func newFixture(t testing.TB) fixture {
	a, b, hub := audittest.Signer(t, "gw-a", "factory-a"), audittest.Signer(t, "gw-b", "factory-b"), audittest.Signer(t, "hub", "oem")
	var f fixture
	f.keys = ledger.NewKeyring(a.Public(), b.Public(), hub.Public())
	f.snapA = record(t, a, "site-a", 0, snapshot(100))
	f.snapB = record(t, b, "site-b", time.Minute, snapshot(200))
	f.trainA = record(t, a, "site-a", 2*time.Minute, ledger.LocalTraining{ModelRef: mref("1-a"), ArtifactHash: h("1a"),
		Datasets: []string{f.snapA.Header.ID}, CodeVersion: "v1"})
	f.trainB = record(t, b, "site-b", 3*time.Minute, ledger.LocalTraining{ModelRef: mref("1-b"), ArtifactHash: h("1b"),
		Datasets: []string{f.snapB.Header.ID}, CodeVersion: "v1"})
	f.round = record(t, hub, "hub", 4*time.Minute, ledger.FederatedRound{Federation: "presses", Round: 1,
		Participants: []string{"site-a", "site-b"}, Aggregation: "fedavg", InputUpdates: []string{h("1a"), h("1b")},
		Output: mref("2"), OutputHash: h("2"), Parents: []ledger.ModelRef{mref("1-a"), mref("1-b")}})
	f.missingID = ledger.NewID()
	f.train3 = record(t, a, "site-a", 5*time.Minute, ledger.LocalTraining{ModelRef: mref("3"), ArtifactHash: h("3"),
		Parents: []ledger.ModelRef{mref("2"), {Model: "press", Version: "0-lost"}}, Datasets: []string{f.snapA.Header.ID, f.missingID}, CodeVersion: "v2"})
	f.eval3 = record(t, a, "site-a", 6*time.Minute, ledger.Evaluation{ModelRef: mref("3"), ArtifactHash: h("3"), Passed: true})
	f.all = []ledger.Record{f.snapA, f.snapB, f.trainA, f.trainB, f.round, f.train3, f.eval3}
	return f
}

func openWith(t testing.TB, dir string, f fixture) *local.Ledger {
	t.Helper()
	l, err := local.Open(dir, local.WithKeyring(f.keys))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for _, r := range f.all {
		if err := l.Anchor(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func ids(recs []ledger.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Header.ID)
	}
	return out
}

func TestAnchorAndQuery(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	l := openWith(t, dir, f)
	ctx := context.Background()
	for _, r := range f.all {
		got, err := l.Get(ctx, r.Header.ID)
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Errorf("Get(%s) = %v, %v", r.Header.ID, got.Header.ID, err)
		}
	}
	if _, err := l.Get(ctx, f.missingID); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("Get of a missing id = %v", err)
	}
	tests := []struct {
		name string
		q    ledger.Query
		want []ledger.Record
	}{
		{"all", ledger.Query{}, f.all},
		{"by type", ledger.Query{Type: ledger.TypeLocalTraining}, []ledger.Record{f.trainA, f.trainB, f.train3}},
		{"by site", ledger.Query{Site: "site-b"}, []ledger.Record{f.snapB, f.trainB}},
		{"by model version", ledger.Query{Model: mref("3")}, []ledger.Record{f.train3, f.eval3}},
		{"by model", ledger.Query{Model: ledger.ModelRef{Model: "press"}}, []ledger.Record{f.trainA, f.trainB, f.round, f.train3, f.eval3}},
		{"by time", ledger.Query{From: t0.Add(time.Minute), To: t0.Add(3 * time.Minute)}, []ledger.Record{f.snapB, f.trainA}},
		{"limit", ledger.Query{Site: "site-a", Limit: 2}, []ledger.Record{f.snapA, f.trainA}},
	}
	for _, tt := range tests {
		got, err := l.Query(ctx, tt.q)
		if err != nil || !reflect.DeepEqual(ids(got), ids(tt.want)) {
			t.Errorf("%s: got %v, %v; want %v", tt.name, ids(got), err, ids(tt.want))
		}
	}
	if n, head := l.Head(); n != int64(len(f.all)) || len(head) != 64 {
		t.Errorf("Head = %d, %q", n, head)
	}
	rep, err := l.Verify(ctx)
	if err != nil || rep.Entries != int64(len(f.all)) {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

func TestLineage(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	l := openWith(t, dir, f)
	l.Close()
	l2, err := local.Open(dir) // the index is rebuilt from the file
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	lin, err := l2.Lineage(context.Background(), mref("3"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(lin.Versions), ids([]ledger.Record{f.train3, f.round, f.trainA, f.trainB}); !reflect.DeepEqual(got, want) {
		t.Errorf("versions = %v, want %v", got, want)
	}
	if got, want := ids(lin.Datasets), ids([]ledger.Record{f.snapA, f.snapB}); !reflect.DeepEqual(got, want) {
		t.Errorf("datasets = %v, want %v", got, want)
	}
	if want := []string{f.missingID, "press@0-lost"}; !reflect.DeepEqual(lin.Missing, want) {
		t.Errorf("missing = %v, want %v", lin.Missing, want)
	}
	wantEdges := []ledger.LineEdge{{Child: mref("3"), Parent: mref("2")}, {Child: mref("3"), Parent: mref("0-lost")},
		{Child: mref("2"), Parent: mref("1-a")}, {Child: mref("2"), Parent: mref("1-b")}}
	if !reflect.DeepEqual(lin.Edges, wantEdges) {
		t.Errorf("edges = %v", lin.Edges)
	}
	if _, err := l2.Lineage(context.Background(), mref("9")); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("lineage of an unknown version = %v", err)
	}
}

func TestAnchorRejects(t *testing.T) {
	f := newFixture(t)
	l := openWith(t, t.TempDir(), f)
	ctx := context.Background()
	if err := l.Anchor(ctx, f.snapA); err != nil {
		t.Errorf("re-anchoring the same record = %v, want success", err)
	}
	forged, err := audittest.Signer(t, "gw-a", "factory-a").Sign(ledger.Record{Header: f.snapA.Header, Body: f.snapA.Body})
	if err != nil {
		t.Fatal(err)
	}
	forged.Header.Time = forged.Header.Time.Add(time.Second)
	if forged, err = audittest.Signer(t, "gw-a", "factory-a").Sign(forged); err != nil {
		t.Fatal(err)
	}
	stranger := record(t, audittest.Signer(t, "mallory", "evil"), "site-a", 0, snapshot(1))
	invalid := f.eval3
	invalid.Header.ID = "nope"
	n, head := l.Head()
	tests := []struct {
		name string
		rec  ledger.Record
		want []error
	}{
		{"same id, other content", forged, []error{ledger.ErrConflict}},
		{"unknown actor", stranger, []error{ledger.ErrRejected, ledger.ErrUnknownActor}},
		{"bad signature", func() ledger.Record { r := f.eval3; r.Header.ID = ledger.NewID(); return r }(), []error{ledger.ErrRejected, ledger.ErrBadSignature}},
		{"invalid", invalid, []error{ledger.ErrRejected}},
	}
	for _, tt := range tests {
		err := l.Anchor(ctx, tt.rec)
		for _, w := range tt.want {
			if !errors.Is(err, w) {
				t.Errorf("%s: Anchor = %v, want %v", tt.name, err, w)
			}
		}
		if !ledger.IsPermanent(err) {
			t.Errorf("%s: %v is not permanent", tt.name, err)
		}
	}
	if n2, head2 := l.Head(); n2 != n || head2 != head {
		t.Error("a rejected record changed the ledger")
	}
}

// ledgerFile writes the fixture's ledger and returns its path and lines.
func ledgerFile(t *testing.T, f fixture) (string, [][]byte) {
	dir := t.TempDir()
	l := openWith(t, dir, f)
	l.Close()
	path := filepath.Join(dir, local.FileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, bytes.SplitAfter(data, []byte("\n"))[:len(f.all)]
}

func TestVerifyDetectsTampering(t *testing.T) {
	f := newFixture(t)
	path, lines := ledgerFile(t, f)
	write := func(lines ...[]byte) {
		if err := os.WriteFile(path, bytes.Join(lines, nil), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	clone := func() [][]byte {
		out := make([][]byte, len(lines))
		for i, l := range lines {
			out[i] = bytes.Clone(l)
		}
		return out
	}
	// A flipped byte anywhere in any entry (the last line's newline aside: that makes a
	// torn tail, checked below) is found, at that entry.
	for i := range lines {
		for j := 0; j < len(lines[i])-1; j += 11 {
			ls := clone()
			ls[i][j] ^= 0x04
			write(ls...)
			_, err := local.VerifyFile(path, f.keys)
			var ve *local.VerifyError
			if !errors.As(err, &ve) || ve.Entry != int64(i) {
				t.Fatalf("flip at entry %d byte %d: %v", i, j, err)
			}
			if _, err := local.Open(filepath.Dir(path)); !errors.Is(err, local.ErrTampered) {
				t.Fatalf("Open after flip at entry %d byte %d: %v", i, j, err)
			}
		}
	}
	tests := []struct {
		name  string
		lines [][]byte
		entry int64
		want  string
	}{
		{"deleted", append(clone()[:2], clone()[3:]...), 2, "sequence number is 3, expected 2"},
		{"deleted first", clone()[1:], 0, "sequence number is 1, expected 0"},
		{"reordered", func() [][]byte { ls := clone(); ls[3], ls[4] = ls[4], ls[3]; return ls }(), 3, "sequence number is 4, expected 3"},
		{"duplicated", append(clone()[:3], clone()[2:]...), 3, "sequence number is 2, expected 3"},
	}
	for _, tt := range tests {
		write(tt.lines...)
		_, err := local.VerifyFile(path, f.keys)
		var ve *local.VerifyError
		if !errors.As(err, &ve) || ve.Entry != tt.entry || !strings.Contains(ve.Reason, tt.want) {
			t.Errorf("%s: %v, want entry %d: %s", tt.name, err, tt.entry, tt.want)
		}
	}
	// A record re-signed by another key, with the chain recomputed, is found by its
	// signature when the verifier holds the actors' keys.
	write(lines...)
	if _, err := local.VerifyFile(path, ledger.NewKeyring()); !errors.Is(err, ledger.ErrUnknownActor) {
		t.Errorf("verify with an empty keyring = %v", err)
	}
}

func TestTornTail(t *testing.T) {
	f := newFixture(t)
	path, lines := ledgerFile(t, f)
	whole := bytes.Join(lines, nil)
	torn := lines[len(lines)-1][:40]
	if err := os.WriteFile(path, append(bytes.Clone(whole), torn...), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := local.VerifyFile(path, f.keys)
	if err != nil || rep.Torn != int64(len(torn)) || rep.Entries != int64(len(f.all)) {
		t.Fatalf("VerifyFile with a torn tail = %+v, %v", rep, err)
	}
	l, err := local.Open(filepath.Dir(path), local.WithKeyring(f.keys))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.TornBytes() != int64(len(torn)) {
		t.Errorf("TornBytes = %d", l.TornBytes())
	}
	if data, _ := os.ReadFile(path); !bytes.Equal(data, whole) {
		t.Error("torn tail not truncated")
	}
	extra := record(t, audittest.Signer(t, "gw-a", "factory-a"), "site-a", time.Hour, snapshot(5))
	if err := l.Anchor(context.Background(), extra); err != nil {
		t.Fatal(err)
	}
	if rep, err := l.Verify(context.Background()); err != nil || rep.Entries != int64(len(f.all)+1) || rep.Torn != 0 {
		t.Errorf("Verify after append = %+v, %v", rep, err)
	}
}

// A reader opening a ledger that another process is appending to must not cut the
// append in progress: ReadOnly reads every whole entry, leaves the torn tail alone and
// refuses to anchor. A directory without a ledger is an error, not a new ledger.
func TestReadOnly(t *testing.T) {
	f := newFixture(t)
	path, lines := ledgerFile(t, f)
	inProgress := append(bytes.Join(lines, nil), lines[len(lines)-1][:40]...)
	if err := os.WriteFile(path, inProgress, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := local.Open(filepath.Dir(path), local.ReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if n, _ := l.Head(); n != int64(len(f.all)) {
		t.Errorf("read-only open sees %d entries, want %d", n, len(f.all))
	}
	if _, err := l.Get(context.Background(), f.eval3.Header.ID); err != nil {
		t.Error(err)
	}
	if data, _ := os.ReadFile(path); !bytes.Equal(data, inProgress) {
		t.Error("read-only open changed the file")
	}
	extra := record(t, audittest.Signer(t, "gw-a", "factory-a"), "site-a", time.Hour, snapshot(5))
	if err := l.Anchor(context.Background(), extra); !errors.Is(err, local.ErrReadOnly) {
		t.Errorf("Anchor on a read-only ledger = %v, want ErrReadOnly", err)
	}
	missing := filepath.Join(t.TempDir(), "none")
	if _, err := local.Open(missing, local.ReadOnly()); err == nil {
		t.Error("read-only open of a missing ledger succeeded")
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read-only open created %s", missing)
	}
}

// TestOneWriter: a second writer of the same ledger is refused while the first has it
// open (it would append under the same sequence numbers), a reader is not, and the ledger
// is free again once the writer closes it.
func TestOneWriter(t *testing.T) {
	dir := t.TempDir()
	first, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := local.Open(dir); !errors.Is(err, dirlock.ErrLocked) || !strings.Contains(err.Error(), "another writer of the local ledger") {
		t.Fatalf("second writer: %v, want dirlock.ErrLocked", err)
	}
	reader, err := local.Open(dir, local.ReadOnly())
	if err != nil {
		t.Fatalf("reader beside the writer: %v", err)
	}
	_ = reader.Close()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := local.Open(dir)
	if err != nil {
		t.Fatalf("writer after the first closed: %v", err)
	}
	_ = second.Close()
}

func BenchmarkAnchor(b *testing.B) {
	s := audittest.Signer(b, "gw-a", "factory-a")
	// Without a keyring: records past the pre-signed ones get fresh ids, which breaks their
	// signatures. Signature verification costs about 50µs per record on top.
	l, err := local.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	recs := make([]ledger.Record, 0, 4096)
	for i := range cap(recs) {
		recs = append(recs, record(b, s, "site-a", time.Duration(i), snapshot(int64(i))))
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		rec := recs[i%len(recs)]
		if i >= len(recs) {
			rec.Header.ID = ledger.NewID()
		}
		if err := l.Anchor(ctx, rec); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
