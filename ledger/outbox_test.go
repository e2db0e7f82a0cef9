package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/dirlock"
	"github.com/millwright-io/millwright/internal/metrictest"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
)

// fakeBackend accepts records while it is up and below its limit; it fails the first
// failN attempts, and rejects for good the records reject names.
type fakeBackend struct {
	mu       sync.Mutex
	down     bool
	failN    int
	limit    int // accept at most limit records (0: no limit), then fail transiently
	reject   map[int]error
	attempts int
	recs     []ledger.Record
	hashes   map[string]string
}

func newFake() *fakeBackend {
	return &fakeBackend{hashes: map[string]string{}, reject: map[int]error{}}
}

var errDown = errors.New("fake backend down")

func (f *fakeBackend) Anchor(ctx context.Context, rec ledger.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	if f.down || (f.limit > 0 && len(f.recs) >= f.limit) {
		return errDown
	}
	if f.failN > 0 {
		f.failN--
		return errDown
	}
	hash, err := ledger.Hash(rec)
	if err != nil {
		return err
	}
	if h, ok := f.hashes[rec.Header.ID]; ok {
		if h == hash {
			return nil
		}
		return ledger.ErrConflict
	}
	// reject is keyed by the order in which distinct records arrive.
	n := len(f.hashes)
	f.hashes[rec.Header.ID] = hash
	if err := f.reject[n]; err != nil {
		return err
	}
	f.recs = append(f.recs, rec)
	return nil
}

func (f *fakeBackend) Get(ctx context.Context, id string) (ledger.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return ledger.Record{}, errDown
	}
	for _, r := range f.recs {
		if r.Header.ID == id {
			return r, nil
		}
	}
	return ledger.Record{}, ledger.ErrNotFound
}

func (f *fakeBackend) set(fn func(f *fakeBackend)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeBackend) anchored() []ledger.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ledger.Record(nil), f.recs...)
}

func (f *fakeBackend) attemptCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts
}

func testConfig(dir string) ledger.Config {
	return ledger.Config{Dir: dir, Site: "site-a", Gateway: "gw-1", FirmwareVersion: "3.4.1",
		RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond}
}

// running is an outbox with its Run service started; stop waits for Run to return.
type running struct {
	*ledger.Outbox
	stop func()
}

func start(t *testing.T, cfg ledger.Config, b ledger.Backend, reg prometheus.Registerer) running {
	t.Helper()
	o, err := ledger.Open(cfg, testSigner(t, "gw-1", "acme"), b, ledger.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	var once sync.Once
	r := running{Outbox: o, stop: func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			if err := o.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}}
	t.Cleanup(r.stop)
	return r
}

func recordN(t *testing.T, r ledger.Recorder, n int) []ledger.Record {
	t.Helper()
	var out []ledger.Record
	for i := range n {
		body := ledger.AlarmDigest{From: t0, To: t0.Add(time.Duration(i+1) * time.Minute), Count: int64(i), LogHash: h(fmt.Sprint(i))}
		rec, err := r.Record(context.Background(), body)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		out = append(out, rec)
	}
	return out
}

// checkSame fails unless got holds the records of want, in order.
func checkSame(t *testing.T, got, want []ledger.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("backend holds %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Header.ID != want[i].Header.ID {
			t.Fatalf("record %d is %s, want %s (order lost)", i, got[i].Header.ID, want[i].Header.ID)
		}
	}
}

// checkChain fails unless every record names the hash of the one before.
func checkChain(t *testing.T, recs []ledger.Record) {
	t.Helper()
	for i := 1; i < len(recs); i++ {
		want, _ := ledger.Hash(recs[i-1])
		if recs[i].Header.Prev != want {
			t.Fatalf("record %d: prev %q, want %q", i, recs[i].Header.Prev, want)
		}
	}
	if len(recs) > 0 && recs[0].Header.Prev != "" {
		t.Fatalf("first record has prev %q", recs[0].Header.Prev)
	}
}

func TestOutboxAnchorsInOrderWithRetries(t *testing.T) {
	b := newFake()
	b.failN = 3
	reg := prometheus.NewRegistry()
	o := start(t, testConfig(t.TempDir()), b, reg)
	want := recordN(t, o, 5)
	servicetest.WaitFor(t, 10*time.Second, "5 records anchored", func() bool { return len(b.anchored()) == 5 })
	checkSame(t, b.anchored(), want)
	checkChain(t, want)
	if got := b.attemptCount(); got != 8 {
		t.Errorf("attempts = %d, want 5 + 3 retries", got)
	}
	servicetest.WaitFor(t, 10*time.Second, "stats", func() bool { return o.Stats().Anchored == 5 })
	if st := o.Stats(); st.AnchorErrors != 3 || st.Pending != 0 || st.Rejected != 0 {
		t.Errorf("stats = %+v", st)
	}
	for name, want := range map[string]float64{
		"millwright_ledger_anchored_total": 5, "millwright_ledger_anchor_errors_total": 3,
		"millwright_ledger_outbox_records": 0, "millwright_ledger_anchor_seconds": 8, "millwright_ledger_rejected_total": 0,
	} {
		if got := metrictest.Value(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

func TestOutboxGrowsWhileBackendDownThenDrains(t *testing.T) {
	b := newFake()
	b.down = true
	reg := prometheus.NewRegistry()
	o := start(t, testConfig(t.TempDir()), b, reg)
	want := recordN(t, o, 50)
	servicetest.WaitFor(t, 10*time.Second, "retries", func() bool { return b.attemptCount() >= 3 })
	if st := o.Stats(); st.Pending != 50 || len(b.anchored()) != 0 {
		t.Fatalf("while down: stats %+v, anchored %d", st, len(b.anchored()))
	}
	if got := metrictest.Value(t, reg, "millwright_ledger_outbox_records"); got != 50 {
		t.Errorf("outbox gauge = %v", got)
	}
	b.set(func(f *fakeBackend) { f.down = false })
	servicetest.WaitFor(t, 10*time.Second, "drain", func() bool { return o.Stats().Pending == 0 })
	checkSame(t, b.anchored(), want)
	checkChain(t, b.anchored())
}

func TestOutboxRestart(t *testing.T) {
	for _, compact := range []int64{0, 1} { // default (never reached here), after every record
		t.Run(fmt.Sprintf("compact=%d", compact), func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			cfg.CompactBytes = ledgerSize(compact)
			reg := prometheus.NewRegistry()
			b1 := newFake()
			b1.limit = 4
			o := start(t, cfg, b1, reg)
			first := recordN(t, o, 10)
			servicetest.WaitFor(t, 10*time.Second, "4 anchored", func() bool { return o.Stats().Anchored == 4 })
			o.stop()

			b2 := newFake()
			b2.down = true               // until the state after reopening is checked
			o2 := start(t, cfg, b2, reg) // the same registerer: metrics are reused
			if st := o2.Stats(); st.Pending != 6 {
				t.Fatalf("after reopen pending = %d, want 6", st.Pending)
			}
			b2.set(func(f *fakeBackend) { f.down = false })
			more := recordN(t, o2, 3)
			servicetest.WaitFor(t, 10*time.Second, "drain after restart", func() bool { return o2.Stats().Pending == 0 })
			checkSame(t, b2.anchored(), append(first[4:], more...))
			checkChain(t, append(first, more...))
			o2.stop()

			// A third open sends nothing again.
			b3 := newFake()
			o3 := start(t, cfg, b3, reg)
			if st := o3.Stats(); st.Pending != 0 {
				t.Errorf("third open: pending %d", st.Pending)
			}
			last := recordN(t, o3, 1)
			servicetest.WaitFor(t, 10*time.Second, "drain", func() bool { return o3.Stats().Pending == 0 })
			checkSame(t, b3.anchored(), last)
			checkChain(t, append(append(first, more...), last...))
			if compact == 1 {
				queues, _ := filepath.Glob(filepath.Join(dir, "queue-*"))
				if len(queues) != 1 {
					t.Errorf("queue files after compaction: %v", queues)
				}
			}
		})
	}
}

func ledgerSize(n int64) config.ByteSize { return config.ByteSize(n) }

func TestOutboxFull(t *testing.T) {
	b := newFake()
	b.down = true
	reg := prometheus.NewRegistry()
	cfg := testConfig(t.TempDir())
	cfg.MaxBytes = 8 << 10
	o := start(t, cfg, b, reg)
	var want []ledger.Record
	var err error
	for range 1000 {
		var rec ledger.Record
		rec, err = o.Record(context.Background(), sampleBodies()[8])
		if err != nil {
			break
		}
		want = append(want, rec)
	}
	if !errors.Is(err, ledger.ErrOutboxFull) || len(want) == 0 {
		t.Fatalf("after %d records: err = %v, want ErrOutboxFull", len(want), err)
	}
	if !strings.Contains(err.Error(), "max_bytes is 8KiB") {
		t.Errorf("error does not say the bound: %v", err)
	}
	if got := metrictest.Value(t, reg, "millwright_ledger_outbox_full_total"); got != 1 {
		t.Errorf("full counter = %v", got)
	}
	b.set(func(f *fakeBackend) { f.down = false })
	servicetest.WaitFor(t, 10*time.Second, "drain", func() bool { return o.Stats().Pending == 0 })
	rec, err := o.Record(context.Background(), sampleBodies()[8])
	if err != nil {
		t.Fatalf("record after drain: %v", err)
	}
	want = append(want, rec)
	servicetest.WaitFor(t, 10*time.Second, "drain", func() bool { return o.Stats().Pending == 0 })
	checkSame(t, b.anchored(), want)
	checkChain(t, want)
}

func TestOutboxDeadLetters(t *testing.T) {
	b := newFake()
	b.reject[1] = fmt.Errorf("schema: %w", ledger.ErrRejected)
	b.reject[3] = ledger.ErrConflict
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	o := start(t, testConfig(dir), b, reg)
	recs := recordN(t, o, 5)
	servicetest.WaitFor(t, 10*time.Second, "drain", func() bool { return o.Stats().Pending == 0 })
	checkSame(t, b.anchored(), []ledger.Record{recs[0], recs[2], recs[4]})
	if st := o.Stats(); st.Rejected != 2 || st.Anchored != 3 || st.AnchorErrors != 0 {
		t.Errorf("stats = %+v", st)
	}
	if got := metrictest.Value(t, reg, "millwright_ledger_rejected_total"); got != 2 {
		t.Errorf("rejected_total = %v", got)
	}
	dl, err := os.ReadFile(filepath.Join(dir, "dead-letter.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(dl), []byte("\n"))
	if len(lines) != 2 || !bytes.Contains(lines[0], []byte(recs[1].Header.ID)) || !bytes.Contains(lines[0], []byte("schema: record rejected")) ||
		!bytes.Contains(lines[1], []byte(recs[3].Header.ID)) {
		t.Errorf("dead letters:\n%s", dl)
	}
	if b.attemptCount() != 5 {
		t.Errorf("attempts = %d: a rejected record was retried", b.attemptCount())
	}
}

func TestOutboxTornTail(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	b := newFake()
	b.down = true
	reg := prometheus.NewRegistry()
	o := start(t, cfg, b, reg)
	first := recordN(t, o, 3)
	o.stop()
	queues, _ := filepath.Glob(filepath.Join(dir, "queue-*"))
	f, err := os.OpenFile(queues[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := `0badc0de {"header":{"id":`
	if _, err := f.WriteString(torn); err != nil {
		t.Fatal(err)
	}
	f.Close()

	b2 := newFake()
	b2.down = true
	o2 := start(t, cfg, b2, reg)
	if st := o2.Stats(); st.TornBytes != int64(len(torn)) || st.Pending != 3 {
		t.Fatalf("after reopen: %+v", st)
	}
	b2.set(func(f *fakeBackend) { f.down = false })
	more := recordN(t, o2, 1)
	servicetest.WaitFor(t, 10*time.Second, "drain", func() bool { return o2.Stats().Pending == 0 })
	checkSame(t, b2.anchored(), append(first, more...))
	checkChain(t, b2.anchored())
}

func TestOutboxRefusesDamage(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	b := newFake()
	b.down = true
	o := start(t, cfg, b, prometheus.NewRegistry())
	recordN(t, o, 3)
	o.stop()
	queues, _ := filepath.Glob(filepath.Join(dir, "queue-*"))
	data, _ := os.ReadFile(queues[0])
	data[20] ^= 0x01 // inside the first of three lines: not a torn tail
	if err := os.WriteFile(queues[0], data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ledger.Open(cfg, testSigner(t, "gw-1", "acme"), b)
	if err == nil || !strings.Contains(err.Error(), "line at offset 0 is damaged: checksum mismatch") {
		t.Errorf("Open of a damaged queue = %v", err)
	}
}

func TestOutboxRecordErrors(t *testing.T) {
	b := newFake()
	o := start(t, testConfig(t.TempDir()), b, prometheus.NewRegistry())
	_, err := o.Record(context.Background(), ledger.Rollback{Model: "m", FromVersion: "1", ToVersion: "1"})
	want := "ledger record rollback: body.to_version: \"1\" is from_version, expected another version\nbody.reason: missing, expected text"
	if err == nil || err.Error() != want {
		t.Errorf("Record of an invalid body:\n got %v\nwant %s", err, want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := o.Record(ctx, sampleBodies()[8]); !errors.Is(err, context.Canceled) {
		t.Errorf("Record with a cancelled context = %v", err)
	}
	o.stop()
	if _, err := o.Record(context.Background(), sampleBodies()[8]); !errors.Is(err, ledger.ErrClosed) {
		t.Errorf("Record after Close = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := ledger.Config{Site: "bad site", MaxBytes: 100, RetryInitial: time.Second, RetryMax: time.Millisecond}
	err := cfg.Validate()
	want := strings.Join([]string{
		"dir: missing, expected a directory",
		"max_bytes: 100B is too small, expected at least 4KiB",
		`site: "bad site" is not an identifier, expected 1 to 128 of A-Z a-z 0-9 _ . : @ / + - starting with a letter or digit`,
		"retry_max: 1ms is below retry_initial (1s)",
	}, "\n")
	if err == nil || err.Error() != want {
		t.Errorf("Validate:\n got %v\nwant %s", err, want)
	}
}

func BenchmarkOutboxRecord(b *testing.B) {
	cfg := testConfig(b.TempDir())
	cfg.MaxBytes = 1 << 40
	o, err := ledger.Open(cfg, testSigner(b, "gw-1", "acme"), newFake())
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	body := sampleBodies()[1]
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := o.Record(ctx, body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func TestOutboxRunTwice(t *testing.T) {
	b := newFake()
	o := start(t, testConfig(t.TempDir()), b, prometheus.NewRegistry())
	recordN(t, o, 1)
	servicetest.WaitFor(t, 10*time.Second, "anchored", func() bool { return o.Stats().Anchored == 1 }) // Run is running
	if err := o.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Run called twice") {
		t.Errorf("second Run = %v", err)
	}
}

// TestOutboxRecordedFindsARecordByItsID: a record made under a NameID is found again while
// it waits in the queue (also after the outbox is reopened, as after a crash), and once the
// backend has it; an id never recorded is not found, and a backend that does not answer is
// an error, not a "no".
func TestOutboxRecordedFindsARecordByItsID(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := testConfig(dir)
	reg := prometheus.NewRegistry()
	b := newFake()
	b.down = true
	o := start(t, cfg, b, reg)
	id := ledger.NameID("federated_round", "f1", "7")
	if id == ledger.NameID("federated_round", "f17", "") || id != ledger.NameID("federated_round", "f1", "7") {
		t.Fatalf("NameID is not a function of its parts alone: %s", id)
	}
	if _, err := o.RecordAs(ctx, "Not-A-UUID", ledger.AlarmDigest{From: t0, To: t0.Add(time.Minute), LogHash: h("x")}); err == nil {
		t.Error("RecordAs took an id that is not a UUID")
	}
	recordN(t, o, 2)
	body := ledger.AlarmDigest{From: t0, To: t0.Add(time.Hour), Count: 3, LogHash: h("round 7")}
	made, err := o.RecordAs(ctx, id, body)
	if err != nil || made.Header.ID != id {
		t.Fatalf("RecordAs: %s, %v", made.Header.ID, err)
	}
	recordN(t, o, 1)
	check := func(when string, o *ledger.Outbox, up bool) {
		t.Helper()
		got, ok, err := o.Recorded(ctx, id)
		if err != nil || !ok {
			t.Fatalf("%s: Recorded = %v, %v", when, ok, err)
		}
		checkSame(t, []ledger.Record{got}, []ledger.Record{made})
		if _, ok, err := o.Recorded(ctx, ledger.NameID("federated_round", "f1", "8")); up && (ok || err != nil) {
			t.Errorf("%s: an id never recorded: %v, %v", when, ok, err)
		}
	}
	check("waiting in the queue", o.Outbox, false)
	o.stop()

	o2 := start(t, cfg, b, reg)
	check("waiting in the queue after a reopen", o2.Outbox, false)
	if _, ok, err := o2.Recorded(ctx, ledger.NameID("x")); ok || !errors.Is(err, errDown) {
		t.Errorf("an id not waiting, with the backend down: %v, %v; want the backend's error", ok, err)
	}
	b.set(func(f *fakeBackend) { f.down = false })
	servicetest.WaitFor(t, 10*time.Second, "drain", func() bool { return o2.Stats().Pending == 0 })
	check("anchored", o2.Outbox, true)
}

// TestOutboxDrain: Drain anchors what is queued and returns, reports a record the backend
// refuses for good (dead-lettered, as by Run), and, with a backend that does not answer,
// returns when its context ends, saying how many records wait; a later Drain anchors them.
func TestOutboxDrain(t *testing.T) {
	b := newFake()
	b.reject[1] = fmt.Errorf("schema: %w", ledger.ErrRejected)
	dir := t.TempDir()
	o, err := ledger.Open(testConfig(dir), testSigner(t, "gw-1", "acme"), b)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	recs := recordN(t, o, 3)
	err = o.Drain(context.Background())
	if !errors.Is(err, ledger.ErrRejected) || !strings.Contains(err.Error(), recs[1].Header.ID) {
		t.Errorf("Drain = %v, want the refusal of %s", err, recs[1].Header.ID)
	}
	checkSame(t, b.anchored(), []ledger.Record{recs[0], recs[2]})

	b.set(func(f *fakeBackend) { f.down = true })
	late := recordN(t, o, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := o.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 records still queued") {
		t.Errorf("Drain with the backend down = %v", err)
	}
	b.set(func(f *fakeBackend) { f.down = false })
	if err := o.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkSame(t, b.anchored(), []ledger.Record{recs[0], recs[2], late[0]})
}

// TestOutboxOneProcess: a second outbox on the same directory is refused while the first
// is open (it would remove the first one's queue file).
func TestOutboxOneProcess(t *testing.T) {
	dir := t.TempDir()
	o, err := ledger.Open(testConfig(dir), testSigner(t, "gw-1", "acme"), newFake())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.Open(testConfig(dir), testSigner(t, "gw-1", "acme"), newFake()); !errors.Is(err, dirlock.ErrLocked) {
		t.Errorf("second outbox: %v, want dirlock.ErrLocked", err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := ledger.Open(testConfig(dir), testSigner(t, "gw-1", "acme"), newFake())
	if err != nil {
		t.Fatalf("outbox after the first closed: %v", err)
	}
	_ = again.Close()
}
