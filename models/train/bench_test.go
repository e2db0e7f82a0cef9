package train

import (
	"context"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/models/store"
	"github.com/millwright-io/millwright/models/train/trainsim"
)

// dayOfTenSignals is one day of 1 Hz history of one machine with 10 signals: a simulated
// pump's five, a motor's four (prefixed "m_") and the motor's current once more as a
// second sensor.
func dayOfTenSignals(b *testing.B) *History {
	plant, err := sim.New(sim.Config{Seed: 5, Machines: []sim.Machine{
		{ID: "pump-1", Line: "l1", Kind: sim.KindPump}, {ID: "motor-1", Line: "l1", Kind: sim.KindMotor}}})
	if err != nil {
		b.Fatal(err)
	}
	const n = 86400
	h := &History{Factory: "acme", Machine: "m", From: historyStart, To: historyStart.Add(n * time.Second)}
	h.Points = make([]telemetry.Point, 0, n*10)
	trainsim.Run(plant, "acme", historyStart, time.Second, n, func(pts []telemetry.Point, _ []sim.Sample) {
		for _, p := range pts {
			if p.Machine == "motor-1" {
				p.Signal = "m_" + p.Signal
			}
			p.Machine = "m"
			h.Points = append(h.Points, p)
		}
		// A tenth signal: the motor's current once more, as a second sensor would read it.
		extra := pts[len(pts)-2]
		extra.Machine, extra.Signal = "m", "m_current_2"
		h.Points = append(h.Points, extra)
	})
	return h
}

// BenchmarkTrainDay trains on one day of 1 Hz data of 10 signals (86,400 grid rows) with
// each detector, on one goroutine, and reports the seconds per training and the artifact
// size.
func BenchmarkTrainDay(b *testing.B) {
	h := dayOfTenSignals(b)
	for _, det := range []string{"pca", "autoencoder", "ensemble"} {
		b.Run(det, func(b *testing.B) {
			cfg := testConfig("db")
			cfg.Machines, cfg.Window, cfg.Detector = []string{"m"}, 24*time.Hour, det
			tr, err := New(cfg, Options{Querier: &countingQuerier{}, Factory: "acme", Now: func() time.Time { return h.To }})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			var res *Result
			for range b.N {
				if res, err = tr.TrainHistory(context.Background(), h, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/training")
			data, _, err := store.Encode(res.Model.Artifact)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(len(data)), "artifact_bytes")
			b.ReportMetric(res.Model.Metrics()["false_alarm_rate"], "held_out_FAR")
			b.ReportMetric(res.Model.Metrics()["detection_rate"], "synthetic_detection")
		})
	}
}
