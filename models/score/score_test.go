package score

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/models/store"
	"github.com/millwright-io/millwright/models/train"
	"github.com/millwright-io/millwright/models/train/trainsim"
)

func TestMain(m *testing.M) { os.Exit(servicetest.RunWithLeakCheck(m)) }

var start = time.Date(2026, 1, 6, 8, 0, 0, 0, time.UTC)

// pumpPoints returns n seconds of one simulated pump from t0, one slice per second.
func pumpPoints(t testing.TB, seed uint64, t0 time.Time, n int, faults ...sim.Fault) [][]telemetry.Point {
	t.Helper()
	plant, err := sim.New(sim.Config{Seed: seed, Machines: []sim.Machine{{ID: "pump-1", Line: "l1", Kind: sim.KindPump, Faults: faults}}})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]telemetry.Point
	trainsim.Run(plant, "acme", t0, time.Second, n, func(pts []telemetry.Point, _ []sim.Sample) {
		out = append(out, append([]telemetry.Point(nil), pts...))
	})
	return out
}

// faultAt is when the bearing wear of the test pump starts (the first two hours are the
// training history, the next half hour healthy live data).
const faultAt = 150 * time.Minute

// pump returns 4 hours of the test pump: healthy until faultAt, then bearing wear.
func pump(t testing.TB) [][]telemetry.Point {
	return pumpPoints(t, 1, start, 4*3600, sim.Fault{Kind: sim.FaultBearingWear, Onset: faultAt, Ramp: 10 * time.Minute})
}

// trainedModel trains a PCA model of pump-1 on its first two hours.
func trainedModel(t testing.TB) *train.Model {
	t.Helper()
	var cfg train.Config
	cfg.SetDefaults()
	cfg.Machines, cfg.Window, cfg.MinRows = []string{"pump-1"}, 2*time.Hour, 1000
	tr, err := train.New(cfg, train.Options{Querier: noQuerier{}, Factory: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	h := &train.History{Factory: "acme", Machine: "pump-1", From: start, To: start.Add(2 * time.Hour)}
	for _, pts := range pump(t)[:7200] {
		h.Points = append(h.Points, pts...)
	}
	res, err := tr.TrainHistory(context.Background(), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Model
}

type noQuerier struct{}

func (noQuerier) Query(context.Context, string, func(map[string]any) error) error { return nil }

type fakeWriter struct {
	mu  sync.Mutex
	pts []telemetry.Point
}

func (f *fakeWriter) Write(_ context.Context, b telemetry.Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pts = append(f.pts, b.Points...)
	return nil
}

func (f *fakeWriter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pts)
}

type message struct {
	topic string
	msg   AlarmMessage
}

// fakePublisher is the alarm publisher and the alarm log.
type fakePublisher struct {
	mu     sync.Mutex
	msgs   []message
	logged []AlarmMessage
}

func (f *fakePublisher) Append(m AlarmMessage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logged = append(f.logged, m)
	return nil
}

// Last returns the last message logged of each factory's machine.
func (f *fakePublisher) Last() []AlarmMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	last := map[[2]string]AlarmMessage{}
	for _, m := range f.logged {
		last[[2]string{m.Factory, m.Machine}] = m
	}
	out := make([]AlarmMessage, 0, len(last))
	for _, m := range last {
		out = append(out, m)
	}
	return out
}

func (f *fakePublisher) Publish(_ context.Context, topic string, payload []byte, done func(error)) error {
	var m AlarmMessage
	if err := json.Unmarshal(payload, &m); err != nil {
		return err
	}
	f.mu.Lock()
	f.msgs = append(f.msgs, message{topic, m})
	f.mu.Unlock()
	if done != nil {
		done(nil)
	}
	return nil
}

func (f *fakePublisher) all() []message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]message(nil), f.msgs...)
}

// runScorer starts a scorer with fakes and returns it with a stop function.
func runScorer(t *testing.T, cfg Config) (*Scorer, *fakeWriter, *fakePublisher, *prometheus.Registry, func()) {
	t.Helper()
	w, p, reg := &fakeWriter{}, &fakePublisher{}, prometheus.NewRegistry()
	s, err := New(cfg, "acme", Options{Points: w, Alarms: p, Log: p, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	return s, w, p, reg, func() { cancel(); <-done }
}

// syncScorer is a scorer with m installed whose batches the test scores synchronously, as
// Run does.
type syncScorer struct {
	*Scorer
	machines map[string]*machine
	gen      int64
}

// newSyncScorer returns a syncScorer with the default config; opts.Points is a fakeWriter
// when nil.
func newSyncScorer(t testing.TB, m *train.Model, opts Options) *syncScorer {
	t.Helper()
	if opts.Points == nil {
		opts.Points = &fakeWriter{}
	}
	s, err := New(defaultConfig(), "acme", opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Install(m)
	s.resume = s.lastRaised() // as Run does before the first batch
	return &syncScorer{Scorer: s, machines: map[string]*machine{}}
}

// scoreAll scores batches in order.
func (s *syncScorer) scoreAll(batches [][]telemetry.Point) {
	for _, pts := range batches {
		s.score(context.Background(), s.machines, &s.gen, pts)
	}
}

// scores returns the pending score points' values by time.
func (s *syncScorer) scores() map[int64]float64 {
	out := map[int64]float64{}
	for _, p := range s.pending {
		if p.Signal == "score" {
			out[p.SourceTime] = p.Value.Float()
		}
	}
	return out
}

func defaultConfig() Config {
	var c Config
	c.SetDefaults()
	c.Queue = 1 << 14
	return c
}

func offerAll(s *Scorer, batches [][]telemetry.Point) {
	for _, b := range batches {
		s.Offer(telemetry.Batch{Points: b})
	}
}

// TestAlarmOnFaultNotOnNormal: healthy data raises no alarm; a developing bearing fault
// raises one, published with its topic, score, threshold, top signals and model version,
// and the scores reach the point writer.
func TestAlarmOnFaultNotOnNormal(t *testing.T) {
	m := trainedModel(t)
	s, w, p, reg, stop := runScorer(t, defaultConfig())
	defer stop()
	s.Install(m)

	data := pump(t)
	offerAll(s, data[7200:9000])
	// One window per stride rows, once the first window is full.
	want := float64((1800 - m.Features().WindowSize) / m.Features().WindowStride)
	servicetest.WaitFor(t, 20*time.Second, "healthy windows scored", func() bool { return testutil.ToFloat64(s.m.windows) >= want })
	if msgs := p.all(); len(msgs) != 0 {
		t.Fatalf("healthy data raised %d alarm messages, first %+v", len(msgs), msgs[0].msg)
	}

	offerAll(s, data[9000:10200])
	servicetest.WaitFor(t, 20*time.Second, "an alarm", func() bool { return len(p.all()) > 0 })
	got := p.all()[0]
	if got.topic != "millwright/acme/pump-1/alarm" || got.msg.State != "raised" {
		t.Fatalf("first message %q %+v, want raised on millwright/acme/pump-1/alarm", got.topic, got.msg)
	}
	if got.msg.Score <= got.msg.Threshold || got.msg.ModelVersion != m.Version || got.msg.ModelHash != m.Hash || len(got.msg.Top) != 3 {
		t.Fatalf("alarm %+v: want score above threshold, the model's version and hash, 3 top signals", got.msg)
	}
	st := s.States()
	if len(st) != 1 || !st[0].Active {
		t.Fatalf("states %+v, want pump-1 active", st)
	}
	if testutil.ToFloat64(s.m.skippedBatches) != 0 {
		t.Fatal("batches skipped with a large queue")
	}
	servicetest.WaitFor(t, 20*time.Second, "score points written", func() bool { return w.count() >= 4*int(want) })
	if got := testutil.ToFloat64(s.m.alarms.WithLabelValues("raised")); got != 1 {
		t.Errorf("raised %v alarms, want 1 (debounced)", got)
	}

	// A new model ends the active alarm with a cleared message.
	n := len(p.all())
	next := *m
	next.Hash = "new"
	s.Install(&next)
	offerAll(s, data[10200:10210])
	servicetest.WaitFor(t, 20*time.Second, "the cleared message of the swap", func() bool { return len(p.all()) > n })
	if last := p.all()[n]; last.msg.State != "cleared" || last.msg.Reason != "model_swapped" || last.msg.ModelHash != m.Hash {
		t.Fatalf("after the swap: %+v, want cleared (model_swapped) by the old model", last.msg)
	}
	// The alarm log has every message published, as published.
	p.mu.Lock()
	logged := p.logged
	p.mu.Unlock()
	published := p.all()
	if len(logged) != len(published) {
		t.Fatalf("%d messages logged, %d published", len(logged), len(published))
	}
	for i := range logged {
		if a, b := logged[i], published[i].msg; a.State != b.State || a.Reason != b.Reason || !a.Time.Equal(b.Time) || a.ModelHash != b.ModelHash || a.Score != b.Score {
			t.Errorf("message %d logged %+v, published %+v", i, a, b)
		}
	}
	_ = reg
}

// TestOfferNeverBlocks: with no one draining the queue, Offer returns at once and counts
// the skipped batches.
func TestOfferNeverBlocks(t *testing.T) {
	cfg := defaultConfig()
	cfg.Queue = 2
	s, err := New(cfg, "acme", Options{})
	if err != nil {
		t.Fatal(err)
	}
	batches := pumpPoints(t, 1, start, 10)
	offerAll(s, batches) // no model: nothing is queued
	if n := len(s.in); n != 0 {
		t.Fatalf("queued %d batches for a machine without a model", n)
	}
	s.Install(trainedModel(t))
	offerAll(s, batches)
	if got := testutil.ToFloat64(s.m.skippedBatches); got != 8 {
		t.Fatalf("skipped %v batches, want 8 (10 offered, queue of 2)", got)
	}
	if got := testutil.ToFloat64(s.m.skippedPoints); got != 8*5 {
		t.Fatalf("skipped %v points, want 40", got)
	}
}

// TestCorruptArtifactKeepsModel: a corrupt current artifact falls back to the previous one;
// with both corrupt, the running model is kept. Each failure is counted.
func TestCorruptArtifactKeepsModel(t *testing.T) {
	m := trainedModel(t)
	s, err := New(defaultConfig(), "acme", Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s.Load(dir, []string{"pump-1"}) // no model yet: nothing happens
	if s.Model("pump-1") != nil || testutil.ToFloat64(s.m.loadErrors) != 0 {
		t.Fatal("a machine without an artifact got a model or an error")
	}
	first := *m.Artifact
	id1, err := dir.Save(&first)
	if err != nil {
		t.Fatal(err)
	}
	second := first
	second.CreatedAt = first.CreatedAt.Add(time.Hour)
	id2, err := dir.Save(&second)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{id1, id2} {
		if err := dir.Promote("pump-1", id); err != nil {
			t.Fatal(err)
		}
	}
	s.Load(dir, []string{"pump-1"})
	if got := s.Model("pump-1"); got == nil || got.Hash != id2 {
		t.Fatalf("loaded %v, want the current artifact %s", got, id2)
	}
	// The current artifact is damaged on disk: the previous one runs.
	if err := os.WriteFile(dir.Path("pump-1", id2), []byte(`{"format":"millwright-model"`), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Load(dir, []string{"pump-1"})
	if got := s.Model("pump-1"); got == nil || got.Hash != id1 {
		t.Fatalf("after a corrupt current artifact: %v, want the previous %s", got, id1)
	}
	if testutil.ToFloat64(s.m.loadErrors) != 1 {
		t.Fatal("the corrupt artifact was not counted")
	}
	// Both damaged: the running model stays.
	if err := os.WriteFile(dir.Path("pump-1", id1), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Load(dir, []string{"pump-1"})
	if got := s.Model("pump-1"); got == nil || got.Hash != id1 {
		t.Fatal("with both artifacts corrupt the running model was not kept")
	}
	if testutil.ToFloat64(s.m.loadErrors) != 2 {
		t.Fatal("the second failure was not counted")
	}
}

// BenchmarkScoreBatch measures the scorer's cost per ingest batch of one second of one
// pump (5 points; a window is completed every window_stride batches) and per window.
func BenchmarkScoreBatch(b *testing.B) {
	s := newSyncScorer(b, trainedModel(b), Options{})
	batches := pump(b)[7200 : 7200+1800]
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		pts := batches[i%len(batches)]
		if i > 0 && i%len(batches) == 0 { // another round, later
			for _, bt := range batches {
				for j := range bt {
					bt[j].SourceTime += int64(len(batches)) * int64(time.Second)
				}
			}
		}
		s.scoreAll([][]telemetry.Point{pts})
		if len(s.pending) > 1000 {
			s.pending = s.pending[:0]
		}
	}
	b.StopTimer()
	windows := testutil.ToFloat64(s.m.windows)
	b.ReportMetric(windows, "windows")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/windows, "µs/window")
}

// TestSkewedSignalsStillScored: one signal arriving 3 s behind the others (another
// connection, a slow device) must not change the windows: the rows wait for it, so every
// window is scored with the same values as when the signals arrive in order.
func TestSkewedSignalsStillScored(t *testing.T) {
	m := trainedModel(t)
	scores := func(steps [][]telemetry.Point) map[int64]float64 {
		s := newSyncScorer(t, m, Options{})
		s.scoreAll(steps)
		return s.scores()
	}
	steps := pump(t)[7200:7500]
	inOrder := scores(steps)
	const lag = 3
	skewed := make([][]telemetry.Point, len(steps))
	for i := range steps {
		for _, p := range steps[i] {
			if p.Signal != sim.SignalVibrationRMS {
				skewed[i] = append(skewed[i], p)
			}
		}
		if i >= lag {
			for _, p := range steps[i-lag] {
				if p.Signal == sim.SignalVibrationRMS {
					skewed[i] = append(skewed[i], p)
				}
			}
		}
	}
	got := scores(skewed)
	if len(inOrder) < 50 || len(got) < len(inOrder)-1 {
		t.Fatalf("%d windows scored with a lagging signal, %d in order", len(got), len(inOrder))
	}
	for at, want := range inOrder {
		if g, ok := got[at]; ok && g != want {
			t.Fatalf("window ending %d scored %v with a lagging signal, %v in order", at, g, want)
		}
	}
}
