package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/servicetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSource hands out the batches sent on its channel and records how each was settled.
type fakeSource struct {
	batches     chan telemetry.Batch
	mu          sync.Mutex
	acked       []int // sequence numbers (Value.Int of the first point) acknowledged
	nacked      []int
	fail        chan error // an error here is returned by the next Read
	connects    int
	connectErrs int // the first connectErrs Connect calls fail
}

func newFakeSource() *fakeSource {
	return &fakeSource{batches: make(chan telemetry.Batch), fail: make(chan error, 1)}
}

func (f *fakeSource) Connect(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connects++
	if f.connects <= f.connectErrs {
		return errors.New("broker unreachable")
	}
	return nil
}

func (f *fakeSource) Read(ctx context.Context) (telemetry.Batch, connectors.AckFunc, error) {
	// A pending failure wins over a ready batch, so "the next Read" fails deterministically.
	select {
	case err := <-f.fail:
		return telemetry.Batch{}, nil, err
	default:
	}
	select {
	case err := <-f.fail:
		return telemetry.Batch{}, nil, err
	case b := <-f.batches:
		seq := int(b.Points[0].Value.Int())
		return b, func(_ context.Context, err error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if err != nil {
				f.nacked = append(f.nacked, seq)
			} else {
				f.acked = append(f.acked, seq)
			}
		}, nil
	case <-ctx.Done():
		return telemetry.Batch{}, nil, ctx.Err()
	}
}

func (f *fakeSource) Close(context.Context) error { return nil }

func (f *fakeSource) ackedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.acked)
}

// fakeSink stores what it is given, failing on demand.
type fakeSink struct {
	mu       sync.Mutex
	points   []telemetry.Point
	failNext int // this many writes fail (retryable) before one succeeds
	reject   func(p telemetry.Point) bool
	blocked  chan struct{} // when non-nil, Write waits for it to close
	writes   int
}

func (f *fakeSink) Connect(context.Context) error { return nil }
func (f *fakeSink) Close(context.Context) error   { return nil }

func (f *fakeSink) Write(ctx context.Context, b telemetry.Batch) error {
	if f.blocked != nil {
		select {
		case <-f.blocked:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.failNext > 0 {
		f.failNext--
		return fmt.Errorf("influx: 503 service unavailable: %w", connectors.ErrNotConnected)
	}
	var rej connectors.RejectedError
	for _, p := range b.Points {
		if f.reject != nil && f.reject(p) {
			rej.Rejected = append(rej.Rejected, connectors.Rejection{Point: p, Class: "type_conflict", Reason: "field type conflict"})
			continue
		}
		f.points = append(f.points, p)
	}
	if len(rej.Rejected) > 0 {
		return &rej
	}
	return nil
}

func (f *fakeSink) stored() []telemetry.Point {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]telemetry.Point(nil), f.points...)
}

type recordedLetters struct {
	mu  sync.Mutex
	dls []connectors.DeadLetter
}

func (r *recordedLetters) Put(_ context.Context, d connectors.DeadLetter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dls = append(r.dls, d)
}

func (r *recordedLetters) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.dls)
}

func batch(seq, n int) telemetry.Batch {
	b := telemetry.Batch{Points: make([]telemetry.Point, n)}
	for i := range b.Points {
		b.Points[i] = telemetry.Point{Machine: "m1", Signal: fmt.Sprintf("s%d", i), SourceTime: int64(seq*1000 + i + 1), Value: telemetry.Int(int64(seq))}
	}
	return b
}

type harness struct {
	wal    *buffer.WAL
	src    *fakeSource
	sink   *fakeSink
	dl     *recordedLetters
	reg    *prometheus.Registry
	engine *Engine
	cancel context.CancelFunc
	done   chan struct{}
}

func start(t *testing.T, walCfg func(*buffer.Config), sink *fakeSink) *harness {
	t.Helper()
	wal := openWAL(t, walCfg, "out")
	var err error
	h := &harness{wal: wal, src: newFakeSource(), sink: sink, dl: &recordedLetters{}, reg: prometheus.NewRegistry(), done: make(chan struct{})}
	h.engine, err = New(wal, []Source{{Name: "src", Source: h.src}},
		[]Sink{{Name: "out", Sink: sink, Cursor: wal.Reader("out"), MaxPoints: 100, Linger: time.Millisecond}},
		Options{Registerer: h.reg, DeadLetters: h.dl, Factory: "acme", BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { defer close(h.done); h.engine.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	<-h.done
	h.wal.Close()
}

func TestDeliversInOrderAndAcksAfterStoring(t *testing.T) {
	sink := &fakeSink{failNext: 3}
	h := start(t, nil, sink)
	for seq := range 50 {
		h.src.batches <- batch(seq, 7)
	}
	servicetest.WaitFor(t, 10*time.Second, "all points stored", func() bool { return len(sink.stored()) == 50*7 })
	pts := sink.stored()
	for i, p := range pts {
		if want := int64(i/7*1000 + i%7 + 1); p.SourceTime != want {
			t.Fatalf("point %d has time %d, want %d: order not kept", i, p.SourceTime, want)
		}
		if p.Factory != "acme" {
			t.Fatalf("point %d factory %q, want the gateway's", i, p.Factory)
		}
	}
	servicetest.WaitFor(t, 10*time.Second, "acks", func() bool { return h.src.ackedCount() == 50 })
	if got := testutil.ToFloat64(h.engine.m.pointsIn.WithLabelValues("src")); got != 350 {
		t.Errorf("points in = %v", got)
	}
	if got := testutil.ToFloat64(h.engine.m.pointsOut.WithLabelValues("out")); got != 350 {
		t.Errorf("points out = %v", got)
	}
	if got := testutil.ToFloat64(h.engine.m.writeErrors.WithLabelValues("out")); got != 3 {
		t.Errorf("write errors = %v, want the 3 injected", got)
	}
}

func TestRejectedPointsAreDeadLetteredAndTheRestStored(t *testing.T) {
	sink := &fakeSink{reject: func(p telemetry.Point) bool { return p.Signal == "s2" }}
	h := start(t, nil, sink)
	for seq := range 10 {
		h.src.batches <- batch(seq, 4)
	}
	servicetest.WaitFor(t, 10*time.Second, "stored", func() bool { return len(sink.stored()) == 30 })
	servicetest.WaitFor(t, 10*time.Second, "dead letters", func() bool { return h.dl.len() == 10 })
	d := h.dl.dls[0]
	if d.Component != "sink" || d.Name != "out" || d.Class != "type_conflict" || d.Point == nil || d.Point.Signal != "s2" {
		t.Errorf("dead letter = %+v", d)
	}
	if got := testutil.ToFloat64(h.engine.m.rejected.WithLabelValues("out")); got != 10 {
		t.Errorf("rejected = %v", got)
	}
}

func TestSourceReconnectsAfterLostConnection(t *testing.T) {
	sink := &fakeSink{}
	h := start(t, nil, sink)
	h.src.mu.Lock()
	h.src.connectErrs = 0
	h.src.mu.Unlock()
	h.src.batches <- batch(1, 1)
	servicetest.WaitFor(t, 10*time.Second, "ready", func() bool { return h.engine.Ready() == nil })
	h.src.mu.Lock()
	h.src.connectErrs = h.src.connects + 2 // the next two connects fail
	h.src.mu.Unlock()
	h.src.fail <- fmt.Errorf("read: %w", connectors.ErrNotConnected)
	h.src.batches <- batch(2, 1) // accepted only after reconnecting
	servicetest.WaitFor(t, 10*time.Second, "second batch stored", func() bool { return len(sink.stored()) == 2 })
	if got := testutil.ToFloat64(h.engine.m.connectErrors.WithLabelValues("source", "src")); got != 2 {
		t.Errorf("connect errors = %v, want 2", got)
	}
	if got := testutil.ToFloat64(h.engine.m.readErrors.WithLabelValues("src")); got != 1 {
		t.Errorf("read errors = %v, want 1", got)
	}
}

// With the sink stalled and the log full, Append blocks, so the source is not read again
// and nothing more is acknowledged: the pressure reaches the peer. Once the sink drains,
// everything flows and nothing is lost.
func TestBackpressureWhenLogIsFull(t *testing.T) {
	sink := &fakeSink{blocked: make(chan struct{})}
	h := start(t, func(c *buffer.Config) { c.MaxBytes = 64 << 10; c.SegmentBytes = 16 << 10 }, sink)
	sent := make(chan int, 1)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for seq := range 400 {
			select {
			case h.src.batches <- batch(seq, 20):
				n++
			case <-time.After(500 * time.Millisecond):
				return // the engine stopped reading: backpressure
			}
		}
	}()
	n := <-sent
	if n == 400 {
		t.Fatalf("all 400 batches were taken with the sink stalled and a 64KiB log; expected backpressure")
	}
	acked := h.src.ackedCount()
	if acked >= n {
		t.Errorf("acked %d of %d taken batches; the blocked one must not be acknowledged", acked, n)
	}
	close(sink.blocked)
	for seq := n; seq < 400; seq++ {
		h.src.batches <- batch(seq, 20)
	}
	servicetest.WaitFor(t, 10*time.Second, "all stored after the sink recovered", func() bool { return len(sink.stored()) == 400*20 })
	servicetest.WaitFor(t, 10*time.Second, "all acked", func() bool { return h.src.ackedCount() == 400 })
}

// A source batch larger than a record of the log is split rather than refused, so it is
// stored and acknowledged instead of being redelivered forever; a point too large on its
// own is dead-lettered.
func TestBatchLargerThanASegmentIsSplit(t *testing.T) {
	sink := &fakeSink{}
	h := start(t, func(c *buffer.Config) { c.SegmentBytes = 4 << 10; c.MaxBytes = 1 << 20 }, sink)
	h.src.batches <- batch(1, 2000) // about 25 KiB encoded: several segments' worth
	huge := batch(2, 1)
	huge.Points[0].Value = telemetry.String(strings.Repeat("x", 8<<10))
	h.src.batches <- huge
	h.src.batches <- batch(3, 5)
	servicetest.WaitFor(t, 10*time.Second, "the split batch and the next one stored", func() bool { return len(sink.stored()) == 2005 })
	servicetest.WaitFor(t, 10*time.Second, "all three acknowledged", func() bool { return h.src.ackedCount() == 3 })
	servicetest.WaitFor(t, 10*time.Second, "the oversized point dead-lettered", func() bool { return h.dl.len() == 1 })
	if d := h.dl.dls[0]; d.Class != "too_large" || d.Point == nil || d.Point.Value.Kind != telemetry.KindString {
		t.Errorf("dead letter = %+v", d)
	}
}

func TestNewRejectsBadWiring(t *testing.T) {
	wal := openWAL(t, nil, "a")
	src := newFakeSource()
	if _, err := New(wal, []Source{{Name: "x", Source: src}, {Name: "x", Source: src}}, nil, Options{}); err == nil {
		t.Error("duplicate source names accepted")
	}
	if _, err := New(wal, nil, []Sink{{Name: "a", Sink: &fakeSink{}}}, Options{}); err == nil {
		t.Error("sink without cursor accepted")
	}
}

// openWAL opens a write-ahead log in a temporary directory with the default configuration,
// changed by adjust (nil: none), and a reader per name; the test closes it.
func openWAL(t testing.TB, adjust func(*buffer.Config), readers ...string) *buffer.WAL {
	t.Helper()
	var cfg buffer.Config
	cfg.SetDefaults()
	cfg.Dir = t.TempDir()
	if adjust != nil {
		adjust(&cfg)
	}
	wal, err := buffer.Open(cfg, readers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wal.Close() })
	return wal
}

// runEngine runs e until the returned stop is called; stop waits for Run to return.
func runEngine(e *Engine) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	return func() { cancel(); <-done }
}
