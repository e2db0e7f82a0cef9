package score

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/train"
)

// mixedRates returns n seconds of machine m1 from t0, one batch per second: signals a and
// c every second, b (a slow temperature, say) every slowEvery seconds.
func mixedRates(seed uint64, t0 time.Time, n, slowEvery int) [][]telemetry.Point {
	r := rand.New(rand.NewPCG(seed, 3))
	out := make([][]telemetry.Point, n)
	for i := range n {
		at := t0.Add(time.Duration(i) * time.Second).UnixNano()
		x := math.Sin(2*math.Pi*float64(i)/30) + 0.1*r.NormFloat64()
		pt := func(sig string, v float64) telemetry.Point {
			return telemetry.Point{Factory: "acme", Machine: "m1", Signal: sig, SourceTime: at, Value: telemetry.Float(v)}
		}
		out[i] = append(out[i], pt("a", x), pt("c", 0.5*x+0.1*r.NormFloat64()))
		if i%slowEvery == 0 {
			out[i] = append(out[i], pt("b", math.Cos(2*math.Pi*float64(i)/3600)+0.05*r.NormFloat64()))
		}
	}
	return out
}

// TestSlowSignalLiveWindowsEqualTraining: a machine whose signals have different sampling
// rates (a and c every second, b every slow seconds; fill_limit 90 steps) is scored live on
// the windows training would cut from the same samples, as docs/models.md promises. The
// scorer holds the grid rows until b has moved past them (its watermark), up to
// fill_limit+1 rows, and the aligner holds the pending samples of a and c meanwhile (up to
// fill_limit+2 per signal, not a fixed 64): none is dropped. b every 91 s lags the newest
// signal by up to fill_limit+1 steps, the most the watermark waits for.
func TestSlowSignalLiveWindowsEqualTraining(t *testing.T) {
	for _, slow := range []int{80, 91} {
		t.Run(fmt.Sprintf("b every %d s", slow), func(t *testing.T) { slowSignalLiveEqualsTraining(t, slow) })
	}
}

func slowSignalLiveEqualsTraining(t *testing.T, slow int) {
	t0 := time.Date(2026, 1, 6, 8, 0, 0, 0, time.UTC)
	var cfg train.Config
	cfg.SetDefaults()
	cfg.Machines, cfg.Window, cfg.MinRows = []string{"m1"}, 3*time.Hour, 1000
	cfg.Features.FillLimit = 90
	tr, err := train.New(cfg, train.Options{Querier: noQuerier{}, Factory: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	h := &train.History{Factory: "acme", Machine: "m1", From: t0, To: t0.Add(3 * time.Hour)}
	for _, b := range mixedRates(1, t0, 3*3600, slow) {
		h.Points = append(h.Points, b...)
	}
	res, err := tr.TrainHistory(context.Background(), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := res.Model

	liveFrom := t0.Add(3 * time.Hour)
	live := mixedRates(2, liveFrom, 1200, slow)
	// Live, through the scorer.
	s := newSyncScorer(t, m, Options{})
	s.scoreAll(live)
	got := s.scores()
	// As training would: align the same samples, cut and score the windows.
	var pts []telemetry.Point
	for _, b := range live {
		pts = append(pts, b...)
	}
	g, err := features.Align(m.Features(), "m1", m.Signals(), pts, liveFrom, liveFrom.Add(1200*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	win, starts, err := features.Apply(m.Features(), g, &m.Artifact.Scaler)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float64, win.Rows)
	if err := m.Detector.Score(win, want); err != nil {
		t.Fatal(err)
	}
	size := int64(m.Features().WindowSize)
	var same, differ, missing int
	for i, st := range starts {
		end := g.Start + (int64(st)+size-1)*int64(g.Step)
		gs, ok := got[end]
		switch {
		case !ok:
			missing++
		case gs == want[i]:
			same++
		default:
			differ++
		}
	}
	overflow := s.machines["m1"].stream.Stats().Signals
	t.Logf("%d windows: %d live scores equal training's, %d differ, %d not scored live; aligner overflow a=%d c=%d",
		len(starts), same, differ, missing, overflow[0].Overflow, overflow[2].Overflow)
	if overflow[0].Overflow+overflow[2].Overflow > 0 {
		t.Errorf("the aligner dropped %d samples of a and %d of c while rows waited for b", overflow[0].Overflow, overflow[2].Overflow)
	}
	if differ > 0 {
		t.Errorf("%d of %d live windows are scored on other values than training would cut from the same samples", differ, len(starts))
	}
}
