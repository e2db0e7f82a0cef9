package alarmlog_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/internal/metrictest"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/models/alarmlog"
	"github.com/millwright-io/millwright/models/score"
)

// recorder is an IDRecorder in memory.
type recorder struct {
	mu     sync.Mutex
	ids    []string
	bodies []ledger.AlarmDigest
}

func (r *recorder) Record(ctx context.Context, b ledger.Body) (ledger.Record, error) {
	return r.RecordAs(ctx, ledger.NewID(), b)
}

func (r *recorder) RecordAs(_ context.Context, id string, b ledger.Body) (ledger.Record, error) {
	if err := b.Validate(); err != nil {
		return ledger.Record{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, id)
	r.bodies = append(r.bodies, b.(ledger.AlarmDigest))
	return ledger.Record{Header: ledger.Header{ID: id}}, nil
}

func (r *recorder) Recorded(_ context.Context, id string) (ledger.Record, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, have := range r.ids {
		if have == id {
			return ledger.Record{Header: ledger.Header{ID: id}}, true, nil
		}
	}
	return ledger.Record{}, false, nil
}

func (r *recorder) digests() []ledger.AlarmDigest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ledger.AlarmDigest(nil), r.bodies...)
}

// clock runs at real speed from start.
func clock(start time.Time) func() time.Time {
	real := time.Now()
	return func() time.Time { return start.Add(time.Since(real)) }
}

func alarm(state string) score.AlarmMessage {
	return score.AlarmMessage{Factory: "acme", Machine: "pump-1", State: state, Time: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC),
		Score: 3.2, Threshold: 1.5, ModelVersion: "20261125T080000Z", ModelHash: strings.Repeat("ab", 32)}
}

func open(t *testing.T, cfg alarmlog.Config, rec ledger.Recorder, now func() time.Time, reg prometheus.Registerer) *alarmlog.Log {
	t.Helper()
	l, err := alarmlog.Open(cfg, alarmlog.Options{Recorder: func() ledger.Recorder { return rec }, Now: now, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func appendAll(t *testing.T, l *alarmlog.Log, states ...string) {
	t.Helper()
	for _, s := range states {
		if err := l.Append(alarm(s)); err != nil {
			t.Fatal(err)
		}
	}
}

// checkFile checks that the digested file of d exists and that d is its digest.
func checkFile(t *testing.T, dir string, d ledger.AlarmDigest, lines int) {
	t.Helper()
	path := filepath.Join(dir, d.From.Format(alarmlog.Stamp)+"_"+d.To.Format(alarmlog.Stamp)+".jsonl")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("digested file: %v", err)
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != d.LogHash {
		t.Errorf("digest %s, file's SHA-256 %x", d.LogHash, sum)
	}
	if n := strings.Count(string(b), "\n"); n != lines {
		t.Errorf("%s: %d lines, want %d", filepath.Base(path), n, lines)
	}
}

// TestPeriods: a period ends at its boundary with a digest of its alarms (two raised of
// three messages), the next period starts there, and the gateway's stop ends it with a
// digest too.
func TestPeriods(t *testing.T) {
	dir := t.TempDir()
	boundary := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	rec, reg := &recorder{}, prometheus.NewRegistry()
	l := open(t, alarmlog.Config{Dir: dir, Period: time.Minute}, rec, clock(boundary.Add(-300*time.Millisecond)), reg)
	appendAll(t, l, "raised", "cleared", "raised")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	servicetest.WaitFor(t, 10*time.Second, "the first digest", func() bool { return len(rec.digests()) == 1 })
	appendAll(t, l, "cleared")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ds := rec.digests()
	if len(ds) != 2 {
		t.Fatalf("%d digests, want 2", len(ds))
	}
	if !ds[0].To.Equal(boundary) || !ds[1].From.Equal(boundary) || !ds[1].To.After(boundary) || ds[0].Count != 2 || ds[1].Count != 0 {
		t.Errorf("digests %+v, want [..., %v) with 2 alarms, then [%v, stop) with none", ds, boundary, boundary)
	}
	checkFile(t, dir, ds[0], 3)
	checkFile(t, dir, ds[1], 1)
	if got := metrictest.Value(t, reg, "millwright_alarm_log_messages_total"); got != 4 {
		t.Errorf("messages_total %v, want 4", got)
	}
	if err := l.Append(alarm("raised")); err == nil {
		t.Error("Append after Run returned: no error")
	}
}

// TestCrash: a file a crash left open is closed at its last write and digested at the next
// start; a digest recorded before a crash that left its file pending is not recorded again.
func TestCrash(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	rec := &recorder{}
	crashed := open(t, alarmlog.Config{Dir: dir}, rec, clock(start), nil)
	appendAll(t, crashed, "raised")
	// The process dies ten minutes later: nothing closes the file, last written then.
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	lastWrite := start.Add(10 * time.Minute)
	if len(files) != 1 || os.Chtimes(files[0], lastWrite, lastWrite) != nil {
		t.Fatalf("open files %v", files)
	}
	l := open(t, alarmlog.Config{Dir: dir}, rec, clock(start.Add(time.Hour)), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run digests what is pending, then the (empty) period it opened
	if err := l.Run(ctx); err != nil {
		t.Fatal(err)
	}
	ds := rec.digests()
	if len(ds) != 2 || ds[0].From.Sub(start) > time.Second || !ds[0].To.Equal(lastWrite) || ds[0].Count != 1 || !ds[1].From.After(ds[0].To) {
		t.Fatalf("digests %+v", ds)
	}
	checkFile(t, dir, ds[0], 1)

	// A digest recorded, its file still pending (a crash between the two).
	d := ds[1]
	digested := filepath.Join(dir, d.From.Format(alarmlog.Stamp)+"_"+d.To.Format(alarmlog.Stamp))
	if err := os.Rename(digested+".jsonl", digested+".pending"); err != nil {
		t.Fatal(err)
	}
	again := open(t, alarmlog.Config{Dir: dir}, rec, clock(start.Add(2*time.Hour)), nil)
	if err := again.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.digests()); n != 3 { // the new start's period only
		t.Errorf("%d digests, want 3: the pending one was recorded again", n)
	}
	if _, err := os.Stat(digested + ".jsonl"); err != nil {
		t.Errorf("the pending file was not renamed: %v", err)
	}
}

// TestBounded: messages beyond a period's max_bytes are dropped and counted; only the
// newest keep digested files stay.
func TestBounded(t *testing.T) {
	dir := t.TempDir()
	rec, reg := &recorder{}, prometheus.NewRegistry()
	cfg := alarmlog.Config{Dir: dir, MaxBytes: 4096, Keep: 1}
	l := open(t, cfg, rec, clock(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)), reg)
	for range 40 {
		appendAll(t, l, "raised")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Run(ctx); err != nil {
		t.Fatal(err)
	}
	written := metrictest.Value(t, reg, "millwright_alarm_log_messages_total")
	if dropped := metrictest.Value(t, reg, "millwright_alarm_log_dropped_total"); dropped == 0 || written+dropped != 40 {
		t.Errorf("written %v + dropped %v, want 40 with some dropped", written, dropped)
	}
	d := rec.digests()[0]
	if float64(d.Count) != written {
		t.Errorf("digest counts %d alarms, the log wrote %v", d.Count, written)
	}
	l2 := open(t, cfg, rec, clock(time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC)), nil)
	if err := l2.Run(ctx); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if len(files) != 1 || !strings.HasPrefix(filepath.Base(files[0]), "20261125T11") {
		t.Errorf("files %v, want only the newest digested one", files)
	}
}

func TestConfigValidate(t *testing.T) {
	err := alarmlog.Config{Period: time.Second, MaxBytes: 10, Keep: -1}.Validate()
	for _, want := range []string{"dir: missing", "period: 1s is shorter than 1m", "max_bytes: 10B is below 4KiB", "keep: -1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want %q", err, want)
		}
	}
}

// TestLastReadBack: Open reads back each machine's last message, across the periods of
// earlier runs, newest first, including a file a crash left open. The scorer restores the
// alarms it finds raised.
func TestLastReadBack(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	msg := func(machine, state string) score.AlarmMessage {
		m := alarm(state)
		m.Machine = machine
		return m
	}
	write := func(l *alarmlog.Log, msgs ...score.AlarmMessage) {
		for _, m := range msgs {
			if err := l.Append(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	first := open(t, alarmlog.Config{Dir: dir}, nil, clock(start), nil)
	if got := first.Last(); len(got) != 0 {
		t.Fatalf("an empty log's last messages: %+v", got)
	}
	write(first, msg("pump-1", "raised"), msg("pump-2", "raised"), msg("pump-2", "cleared"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := first.Run(ctx); err != nil { // closes and digests the period
		t.Fatal(err)
	}
	crashed := open(t, alarmlog.Config{Dir: dir}, nil, clock(start.Add(time.Hour)), nil)
	write(crashed, msg("pump-2", "raised")) // and the process dies: the file stays open
	l := open(t, alarmlog.Config{Dir: dir}, nil, clock(start.Add(2*time.Hour)), nil)
	got := map[string]string{}
	for _, m := range l.Last() {
		got[m.Factory+"/"+m.Machine] = m.State
	}
	want := map[string]string{"acme/pump-1": "raised", "acme/pump-2": "raised"}
	if len(got) != len(want) || got["acme/pump-1"] != "raised" || got["acme/pump-2"] != "raised" {
		t.Errorf("last messages %v, want %v", got, want)
	}
}

// TestLastSkipsLinesThatDoNotDecode: a machine's last line that is not an alarm message (a
// torn write, a damaged file) is skipped for the line before it; lines of other factories
// are kept apart.
func TestLastSkipsLinesThatDoNotDecode(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	first := open(t, alarmlog.Config{Dir: dir}, nil, clock(start), nil)
	other := alarm("cleared")
	other.Factory = "globex"
	for _, m := range []score.AlarmMessage{alarm("raised"), other} {
		if err := first.Append(m); err != nil {
			t.Fatal(err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if len(files) != 1 {
		t.Fatalf("%d open files, want 1", len(files))
	}
	f, err := os.OpenFile(files[0], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The crash: a line of pump-1 whose score is no number, then a torn one.
	if _, err := f.WriteString(`{"factory":"acme","machine":"pump-1","state":"cleared","score":"x"}` + "\n" + `{"factory":"acme","mach`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	l := open(t, alarmlog.Config{Dir: dir}, nil, clock(start.Add(time.Hour)), nil)
	got := map[string]string{}
	for _, m := range l.Last() {
		got[m.Factory+"/"+m.Machine] = m.State
	}
	if len(got) != 2 || got["acme/pump-1"] != "raised" || got["globex/pump-1"] != "cleared" {
		t.Errorf("last messages %v, want acme/pump-1 raised and globex/pump-1 cleared", got)
	}
}
