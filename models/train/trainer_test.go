package train

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/store"
)

// fakeRecorder keeps the bodies it is given.
type fakeRecorder struct {
	mu     sync.Mutex
	bodies []ledger.Body
}

func (f *fakeRecorder) Record(_ context.Context, b ledger.Body) (ledger.Record, error) {
	if err := b.Validate(); err != nil {
		return ledger.Record{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bodies = append(f.bodies, b)
	return ledger.Record{Header: ledger.Header{ID: ledger.NewID(), Type: b.Type()}}, nil
}

func (f *fakeRecorder) types() []ledger.Type {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ts []ledger.Type
	for _, b := range f.bodies {
		ts = append(ts, b.Type())
	}
	return ts
}

func testConfig(bucket string) Config {
	var c Config
	c.SetDefaults()
	c.Machines = []string{"pump-1"}
	c.Bucket = bucket
	c.Window = 2 * time.Hour
	c.MinRows = 1000
	c.Chunk = 30 * time.Minute
	return c
}

// TestTrainFromInfluxDB writes two hours of a healthy pump into a fresh database, trains
// from it through Flux, and checks the model: it validates, is installed, is recorded,
// is quiet on more healthy data and alarms on a developing fault.
func TestTrainFromInfluxDB(t *testing.T) {
	f := newInfluxFixture(t)
	const n = 7200
	f.write(t, simHistory(t, "acme", n))
	rec := &fakeRecorder{}
	var installed *Model
	dir, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var stages []Stage
	tr, err := New(testConfig(f.cfg.Bucket), Options{
		Querier: f.querier, Store: dir, Factory: "acme",
		Install:  func(m *Model) { installed = m },
		Recorder: func() ledger.Recorder { return rec },
		Now:      func() time.Time { return historyStart.Add(n * time.Second) },
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Train(context.Background(), "pump-1", func(p Progress) {
		if len(stages) == 0 || stages[len(stages)-1] != p.Stage {
			stages = append(stages, p.Stage)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Stage{StageRead, StageAlign, StageFit, StageValidate, StageDone}; !equal(stages, want) {
		t.Errorf("stages %v, want %v", stages, want)
	}
	if !res.Swapped || installed != res.Model {
		t.Fatalf("first model not installed: swapped %v (%s)", res.Swapped, res.Reason)
	}
	m := res.Model
	t.Logf("rows %d windows %d threshold %.3g metrics %v in %s", res.Rows, res.Windows, m.Threshold, m.Metrics(), res.Duration)
	// Window-level rate before debouncing; the k-of-n alarm filters isolated windows.
	if got := m.Metrics()["false_alarm_rate"]; got > 0.05 {
		t.Errorf("false-alarm rate on held-out normal data %.3f, want at most 0.05", got)
	}
	if got := m.Metrics()["detection_rate"]; got < 0.5 {
		t.Errorf("detection rate of synthetic faults %.3f, want at least 0.5", got)
	}
	if want := []ledger.Type{ledger.TypeDatasetSnapshot, ledger.TypeLocalTraining, ledger.TypeEvaluation, ledger.TypeDeployment}; !equal(rec.types(), want) {
		t.Errorf("records %v, want %v", rec.types(), want)
	}
	checkEvaluation(t, rec, m, true, "no current model", false)
	sm, fellBack, err := dir.Current("pump-1")
	if err != nil || fellBack {
		t.Fatalf("current artifact: %v (fell back %v)", err, fellBack)
	}
	loaded := FromStore(sm)
	if loaded.Hash != m.Hash || loaded.Version != m.Version {
		t.Fatalf("current artifact %s@%s; want the model's %s@%s", loaded.Hash, loaded.Version, m.Hash, m.Version)
	}

	// The loaded model is quiet on more healthy data and scores a developing fault high.
	healthy := scoreSim(t, loaded, 1800)
	faulty := scoreSim(t, loaded, 1800, sim.Fault{Kind: sim.FaultBearingWear, Onset: 0, Ramp: 10 * time.Minute})
	if r := above(healthy, m.Threshold); r > 0.02 {
		t.Errorf("healthy data: %.3f of windows above the threshold, want at most 0.02", r)
	}
	if r := above(faulty[len(faulty)/2:], m.Threshold); r < 0.9 {
		t.Errorf("bearing wear past half its ramp: %.3f of windows above the threshold, want at least 0.9", r)
	}

	// Training again on the same data gives an equal model: it validates as well and is
	// swapped in (FalseAlarmSlack), with the first as its parent.
	tr.opts.Current = func(string) *Model { return loaded }
	res2, err := tr.Train(context.Background(), "pump-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res2.Swapped {
		t.Errorf("an equal model was not swapped in: %s", res2.Reason)
	}
	if len(rec.types()) != 8 {
		t.Errorf("%d records after two trainings, want 8", len(rec.types()))
	}
	checkEvaluation(t, rec, res2.Model, res2.Swapped, res2.Reason, true)
}

// checkEvaluation checks the last evaluation record: about m, passed as the swap decided,
// stating the criteria and the outcome, on the training's dataset, with the current
// model's metrics when there was one to compare with.
func checkEvaluation(t *testing.T, rec *fakeRecorder, m *Model, passed bool, outcome string, compared bool) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var ev *ledger.Evaluation
	var tr *ledger.LocalTraining
	for _, b := range rec.bodies {
		switch b := b.(type) {
		case ledger.Evaluation:
			ev = &b
		case ledger.LocalTraining:
			tr = &b
		}
	}
	if ev == nil || tr == nil {
		t.Fatal("no evaluation or training recorded")
	}
	if ev.ModelRef != tr.ModelRef || ev.ArtifactHash != m.Hash || ev.Passed != passed || !equal(ev.Datasets, tr.Datasets) || len(ev.Datasets) != 1 {
		t.Errorf("evaluation %+v of training %+v, want passed %v", ev, tr, passed)
	}
	if !strings.HasPrefix(ev.Criteria, EvaluationCriteria) || !strings.HasSuffix(ev.Criteria, "Outcome: "+outcome) {
		t.Errorf("criteria %q, want the rule and the outcome %q", ev.Criteria, outcome)
	}
	if ev.Metrics["false_alarm_rate"] != m.Metrics()["false_alarm_rate"] || ev.Metrics["detection_rate"] != m.Metrics()["detection_rate"] {
		t.Errorf("metrics %v, want the model's %v", ev.Metrics, m.Metrics())
	}
	if _, ok := ev.Metrics["current_false_alarm_rate"]; ok != compared {
		t.Errorf("metrics %v: current model's present %v, want %v", ev.Metrics, ok, compared)
	}
}

func TestBetter(t *testing.T) {
	cur := Quality{FalseAlarmRate: 0.01, DetectionRate: 0.9}
	for _, tc := range []struct {
		name string
		q    Quality
		want bool
	}{
		{"equal", cur, true},
		{"quieter", Quality{FalseAlarmRate: 0, DetectionRate: 0.9}, true},
		{"noisier", Quality{FalseAlarmRate: 0.05, DetectionRate: 0.99}, false},
		{"blinder", Quality{FalseAlarmRate: 0.01, DetectionRate: 0.5}, false},
		{"within slack", Quality{FalseAlarmRate: 0.014, DetectionRate: 0.885}, true},
	} {
		if got, why := Better(tc.q, cur); got != tc.want {
			t.Errorf("%s: Better = %v (%s), want %v", tc.name, got, why, tc.want)
		}
	}
}

// scoreSim scores n seconds of the simulated pump, replayed from its start, with m.
func scoreSim(t *testing.T, m *Model, n int, faults ...sim.Fault) []float64 {
	t.Helper()
	pts := simHistory(t, "acme", n, faults...)
	for i := range pts {
		pts[i].Quality.Level = telemetry.Good
	}
	start := historyStart
	g, err := features.Align(m.Features(), "pump-1", m.Signals(), pts, start, start.Add(time.Duration(n)*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.ScoreGrid(g)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func above(s []float64, th float64) float64 {
	n := 0
	for _, v := range s {
		if v > th {
			n++
		}
	}
	return float64(n) / float64(len(s))
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
