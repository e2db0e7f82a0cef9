package score

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/models/threshold"
	"github.com/millwright-io/millwright/models/train"
)

// TestNegativeThresholdAlarmDoesNotFlap: the ensemble scores in robust units of its own
// calibration scores, so when the newest history (where the trainer sets the threshold) is
// quieter than the ensemble's calibration rows, say after maintenance, the trainer
// produces a negative threshold. A steady moderate anomaly, scoring above it, raises the
// alarm once and keeps it raised: the clear level lies below a negative threshold too
// (ClearRatio·T would lie above it, and such a score would raise, clear and raise the
// alarm again, forever).
func TestNegativeThresholdAlarmDoesNotFlap(t *testing.T) {
	t0 := time.Date(2026, 1, 6, 8, 0, 0, 0, time.UTC)
	var cfg train.Config
	cfg.SetDefaults()
	cfg.Machines, cfg.Window, cfg.MinRows = []string{"m1"}, 2*time.Hour, 1000
	cfg.Detector = "ensemble"
	tr, err := train.New(cfg, train.Options{Querier: noQuerier{}, Factory: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	h := &train.History{Factory: "acme", Machine: "m1", From: t0, To: t0.Add(2 * time.Hour)}
	r := rand.New(rand.NewPCG(1, 2))
	const n = 7200
	for i := range n {
		noise := 0.5
		if i > n*78/100 { // the newest 22 %: quieter (a serviced machine)
			noise = 0.02
		}
		at := t0.Add(time.Duration(i) * time.Second).UnixNano()
		x := math.Sin(2 * math.Pi * float64(i) / 30)
		for j, sig := range []string{"a", "b", "c"} {
			h.Points = append(h.Points, telemetry.Point{Factory: "acme", Machine: "m1", Signal: sig, SourceTime: at,
				Value: telemetry.Float(x*float64(j+1) + noise*r.NormFloat64())})
		}
	}
	res, err := tr.TrainHistory(context.Background(), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	T := res.Model.Threshold
	t.Logf("trained threshold %v (%s)", T, res.Model.Artifact.Threshold.Method)
	if T >= 0 {
		t.Skip("the trainer made a non-negative threshold; the scenario did not arise")
	}
	a, err := threshold.NewAlarm(defaultConfig().Alarm, T)
	if err != nil {
		t.Fatal(err)
	}
	score := 0.9 * T // above T, the machine is anomalous all along
	var raised, cleared int
	for range 40 {
		switch a.Update(score) {
		case threshold.Raised:
			raised++
		case threshold.Cleared:
			cleared++
		}
	}
	if raised != 1 || cleared != 0 {
		t.Errorf("40 windows all scoring %v, above the threshold %v: the alarm was raised %d times and cleared %d times; want raised once", score, T, raised, cleared)
	}
}
