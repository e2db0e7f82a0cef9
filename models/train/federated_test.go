package train

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/store"
)

// TestTrainFromContinuesGlobalModel trains an autoencoder from scratch, then continues it
// with TrainFrom (as a federation round does): the warm start is used (not a fresh
// initialisation), the parameters move, the model is validated, stored and recorded with
// the warm start in its hyper-parameters, and the warm start is judged on the same held-out
// data; a layout that does not fit the machine's
// features is refused with ErrArchitecture.
func TestTrainFromContinuesGlobalModel(t *testing.T) {
	f := newInfluxFixture(t)
	const n = 7200
	f.write(t, simHistory(t, "acme", n))
	rec := &fakeRecorder{}
	dir, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(f.cfg.Bucket)
	cfg.Detector = autoencoder.Kind
	cfg.Autoencoder.Epochs = 5
	tr, err := New(cfg, Options{Querier: f.querier, Store: dir, Factory: "acme",
		Recorder: func() ledger.Recorder { return rec },
		Now:      func() time.Time { return historyStart.Add(n * time.Second) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, err := tr.Train(ctx, "pump-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	p := first.Model.Detector.(models.Parametric)
	global := p.Params()
	ws := WarmStart{Architecture: p.Architecture(), Params: slices.Clone(global), ProxMu: 0.1, From: "pumps@r1"}
	// Judged without training (a federation's final evaluation): exactly as the first
	// model was judged, nothing recorded, nothing installed.
	records := len(rec.types())
	q, err := tr.EvaluateFrom(ctx, "pump-1", ws)
	if fm := first.Model.Metrics(); err != nil || q.FalseAlarmRate != fm["false_alarm_rate"] || q.DetectionRate != fm["detection_rate"] ||
		float64(q.Windows) != fm["validation_windows"] {
		t.Errorf("EvaluateFrom judged %+v (%v), want the first model's %v", q, err, fm)
	}
	if got := len(rec.types()); got != records {
		t.Errorf("EvaluateFrom recorded %d records", got-records)
	}
	if h, err := dir.Head("pump-1"); err != nil || h.Current != first.Model.Hash {
		t.Errorf("after EvaluateFrom the store's head is %+v (%v), want the first model current", h, err)
	}
	if !slices.Equal(ws.Params, global) {
		t.Error("EvaluateFrom modified the warm start's parameters")
	}
	res, err := tr.TrainFrom(ctx, "pump-1", ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The warm start judged as the new model was: here it is the first model, trained
	// on the same data, so it does exactly as the first model did.
	if first.Start != nil {
		t.Errorf("a training without a warm start judged one: %+v", first.Start)
	}
	fm := first.Model.Metrics()
	if q := res.Start; q == nil || q.FalseAlarmRate != fm["false_alarm_rate"] || q.DetectionRate != fm["detection_rate"] ||
		float64(q.Windows) != fm["validation_windows"] {
		t.Errorf("the warm start judged %+v, want the first model's %v", res.Start, fm)
	}
	ae := res.Model.Detector.(*autoencoder.Detector)
	if !ae.Report().WarmStart {
		t.Error("TrainFrom did not continue from the given parameters")
	}
	if !slices.Equal(ws.Params, global) {
		t.Error("TrainFrom modified the warm start's parameters")
	}
	if slices.Equal(ae.Params(), global) {
		t.Error("the parameters did not move")
	}
	if hp := res.Model.Artifact.Training.HyperParameters; hp["warm_start"] != "pumps@r1" || hp["prox_mu"] != "0.1" {
		t.Errorf("hyper-parameters %v lack the warm start", hp)
	}
	if _, err := dir.Load("pump-1", res.Model.Hash); err != nil {
		t.Errorf("the continued model is not in the store: %v", err)
	}
	// After the first training's four records: the continued model's snapshot and training.
	if got := rec.types(); len(got) < 6 || got[5] != ledger.TypeLocalTraining {
		t.Errorf("records %v; want a LocalTraining for the continued model", got)
	}

	bad := ws
	bad.Architecture.Inputs++
	if _, err := tr.TrainFrom(ctx, "pump-1", bad, nil); !errors.Is(err, ErrArchitecture) {
		t.Errorf("a mismatched layout gave %v; want ErrArchitecture", err)
	}
	if _, err := tr.EvaluateFrom(ctx, "pump-1", bad); !errors.Is(err, ErrArchitecture) {
		t.Errorf("EvaluateFrom with a mismatched layout gave %v; want ErrArchitecture", err)
	}
}
