package ensemble_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/ensemble"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/pca"
	"github.com/millwright-io/millwright/models/threshold"
)

var simSeed uint64 = 7

var simStart = time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)

const (
	trainSpan = 3 * time.Hour
	testSpan  = 2 * time.Hour
	onset     = trainSpan + 40*time.Minute // after the start of the plant
	ramp      = 30 * time.Minute
)

// plantPoints runs a plant of one healthy pump and one pump per fault kind (each fault
// starting at onset) at 1 Hz and returns each machine's points.
func plantPoints(t testing.TB) (map[string][]telemetry.Point, []sim.Machine) {
	t.Helper()
	machines := []sim.Machine{{ID: "pump-ok", Line: "l1", Kind: sim.KindPump}}
	for _, f := range []sim.FaultKind{sim.FaultBearingWear, sim.FaultImbalance, sim.FaultCavitation, sim.FaultOverheating} {
		machines = append(machines, sim.Machine{ID: "pump-" + string(f), Line: "l1", Kind: sim.KindPump,
			Faults: []sim.Fault{{Kind: f, Onset: onset, Ramp: ramp}}})
	}
	plant, err := sim.New(sim.Config{Seed: simSeed, Machines: machines})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]telemetry.Point{}
	n := int((trainSpan + testSpan) / time.Second)
	for i := range n {
		for _, s := range plant.Step(simStart.Add(time.Duration(i) * time.Second)) {
			ts := s.Time.UnixNano()
			vals := []float64{s.Signals.Temperature, s.Signals.VibrationRMS, s.Signals.Current, s.Signals.Pressure, s.Signals.Speed}
			for j, name := range s.Kind.Signals() {
				out[s.Machine] = append(out[s.Machine], telemetry.Point{Machine: s.Machine, Signal: name, SourceTime: ts, Value: telemetry.Float(vals[j])})
			}
		}
	}
	return out, machines
}

type trained struct {
	det   models.Detector
	sc    *features.Scaler
	th    threshold.Threshold
	feats features.Config
}

// trainOn follows the training path of a gateway: align the history, scale, window, fit on
// the first 80 % of the windows and set the threshold on the scores of the rest.
func trainOn(t testing.TB, det models.Detector, pts []telemetry.Point, signals []string) trained {
	t.Helper()
	fc := features.Config{WindowSize: 10}
	g, err := features.Align(fc, "", signals, pts, simStart, simStart.Add(trainSpan-time.Second))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := features.Prepare(fc, g)
	if err != nil {
		t.Fatal(err)
	}
	cut := tr.Windows.Rows * 8 / 10
	if err := det.Fit(context.Background(), tr.Windows.Slice(0, cut)); err != nil {
		t.Fatal(err)
	}
	val := tr.Windows.Slice(cut, tr.Windows.Rows)
	s := make([]float64, val.Rows)
	if err := det.Score(val, s); err != nil {
		t.Fatal(err)
	}
	th, err := threshold.Fit(threshold.Config{}, s)
	if err != nil {
		t.Fatal(err)
	}
	return trained{det: det, sc: tr.Scaler, th: th, feats: fc}
}

// firstAlarm scores the test span and returns when the debounced alarm was first raised
// (0: never) and how many windows were scored.
func firstAlarm(t testing.TB, m trained, pts []telemetry.Point, signals []string) (time.Duration, int) {
	t.Helper()
	g, err := features.Align(m.feats, "", signals, pts, simStart.Add(trainSpan), simStart.Add(trainSpan+testSpan-time.Second))
	if err != nil {
		t.Fatal(err)
	}
	win, starts, err := features.Apply(m.feats, g, m.sc)
	if err != nil {
		t.Fatal(err)
	}
	s := make([]float64, win.Rows)
	if err := m.det.Score(win, s); err != nil {
		t.Fatal(err)
	}
	a, err := threshold.NewAlarm(threshold.AlarmConfig{}, m.th.Value)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range s {
		if a.Update(v) == threshold.Raised {
			end := trainSpan + time.Duration(starts[i]+m.feats.WindowSize-1)*time.Second
			return end, win.Rows
		}
	}
	return 0, win.Rows
}

// A model trained on a machine's normal history raises no alarm on its later normal data
// and raises one within the fault's ramp on every injected fault.
func TestFlagsSimulatorFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("trains 20 models on simulated data")
	}
	points, machines := plantPoints(t)
	signals := sim.KindPump.Signals()
	dets := map[string]func() models.Detector{
		"pca": func() models.Detector { d, _ := pca.New(pca.Config{}); return d },
		"autoencoder": func() models.Detector {
			d, _ := autoencoder.New(autoencoder.Config{Seed: 1, Epochs: 15, MaxRows: 4000})
			return d
		},
		"conv_autoencoder": func() models.Detector {
			d, _ := autoencoder.New(autoencoder.Config{Kernel: 3, Signals: len(signals), Seed: 1, Epochs: 15, MaxRows: 4000})
			return d
		},
		"ensemble": func() models.Detector {
			p, _ := pca.New(pca.Config{})
			a, _ := autoencoder.New(autoencoder.Config{Seed: 1, Epochs: 15, MaxRows: 4000})
			e, _ := ensemble.New(ensemble.Config{Signals: len(signals), Seed: 1}, p, a)
			return e
		},
	}
	for _, name := range []string{"pca", "autoencoder", "conv_autoencoder", "ensemble"} {
		for _, m := range machines {
			t.Run(fmt.Sprintf("%s/%s", name, m.ID), func(t *testing.T) {
				model := trainOn(t, dets[name](), points[m.ID], signals)
				at, n := firstAlarm(t, model, points[m.ID], signals)
				if n < 1400 {
					t.Fatalf("only %d windows scored", n)
				}
				switch {
				case len(m.Faults) == 0 && at != 0:
					t.Errorf("false alarm on normal data at %s after the start", at)
				case len(m.Faults) > 0 && at == 0:
					t.Errorf("%s never raised an alarm", m.Faults[0].Kind)
				case len(m.Faults) > 0 && at < onset:
					t.Errorf("%s: alarm at %s, before the fault's onset at %s", m.Faults[0].Kind, at, onset)
				case len(m.Faults) > 0 && at > onset+ramp:
					t.Errorf("%s: alarm at %s, after the fault's ramp ended at %s", m.Faults[0].Kind, at, onset+ramp)
				case len(m.Faults) > 0:
					t.Logf("%s: alarm %s after onset", m.Faults[0].Kind, at-onset)
				}
			})
		}
	}
}
