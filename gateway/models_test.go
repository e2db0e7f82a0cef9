package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"log/slog"

	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/metrictest"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/models/score"
	"github.com/millwright-io/millwright/models/train/trainsim"
)

// TestIntegrationTrainAndAlarm is the "done means": the gateway trains a pump's
// model from its InfluxDB history (through Flux), then scores the pump's live MQTT
// telemetry: healthy data raises no alarm; a developing bearing fault raises one, which
// is published (acknowledged by Mosquitto), shown on /api/v1/alarms and written to the
// anomaly measurement.
func TestIntegrationTrainAndAlarm(t *testing.T) {
	servicetest.Require(t, "Mosquitto and InfluxDB")
	influx := servicetest.InfluxURL()
	s := newSetup(t, influx, servicetest.Database(t, influx))
	doc := s.yaml("") + fmt.Sprintf(`
models:
  enabled: true
  train:
    machines: [pump-1]
    interval: 0
    window: 2h
    min_rows: 1000
    chunk: 30m
  score:
    topic_prefix: %s
    future_tolerance: 30m # the live data below runs up to 20 minutes ahead of the clock
  mqtt:
    server: %s
`, s.root, servicetest.MQTTURL())
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}

	// Two hours of history ending now, then live data: 5 healthy minutes, then bearing wear.
	now := time.Now().Truncate(time.Second)
	t0 := now.Add(-2 * time.Hour)
	plant, err := sim.New(sim.Config{Seed: 1, Machines: []sim.Machine{{ID: "pump-1", Line: "l1", Kind: sim.KindPump,
		Faults: []sim.Fault{{Kind: sim.FaultBearingWear, Onset: 2*time.Hour + 5*time.Minute, Ramp: 5 * time.Minute}}}}})
	if err != nil {
		t.Fatal(err)
	}
	var steps [][]telemetry.Point
	trainsim.Run(plant, "e2e", t0, time.Second, 7200+1200, func(pts []telemetry.Point, _ []sim.Sample) {
		steps = append(steps, append([]telemetry.Point(nil), pts...))
	})
	var hist []telemetry.Point
	for _, pts := range steps[:7200] {
		hist = append(hist, pts...)
	}
	trainsim.Store(t, cfg.Sinks[0].InfluxDB.URL, cfg.Sinks[0].InfluxDB.Bucket, hist)
	ctx := context.Background()

	tr, closeQ, err := Trainer(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Train(ctx, "pump-1", nil)
	closeQ()
	if err != nil {
		t.Fatal(err)
	}
	if !res.Swapped {
		t.Fatalf("first model not installed: %s", res.Reason)
	}

	g := runGateway(t, cfg, slog.New(slog.DiscardHandler))
	pub, err := mqtt.NewPublisher(mqtt.PublisherConfig{Server: servicetest.MQTTURL(), ClientID: servicetest.UniqueName("pump"), QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	received := make(chan score.AlarmMessage, 16)
	alarmTopic := s.root + "/e2e/pump-1/alarm"
	if err := pub.Subscribe(ctx, alarmTopic, 1, func(_ string, payload []byte) {
		var m score.AlarmMessage
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Errorf("alarm payload %q: %v", payload, err)
			return
		}
		select {
		case received <- m:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	send := func(steps [][]telemetry.Point) {
		for _, pts := range steps {
			for _, p := range pts {
				payload := fmt.Appendf(nil, `{"ts": %d, "value": %g}`, p.SourceTime/1e6, p.Value.Float())
				if err := pub.Publish(ctx, s.root+"/"+p.Machine+"/"+p.Signal, payload, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := pub.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	alarms := func() []score.State {
		resp, err := http.Get("http://" + s.httpAddr + "/api/v1/alarms")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st []score.State
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitWindows := func(n int64) {
		deadline := time.Now().Add(time.Minute)
		for {
			if st := alarms(); len(st) == 1 && st[0].Windows >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("scorer did not score %d windows: %+v; skipped batches %v, points in %v", n, alarms(),
					metrictest.Sum(t, g.Registry(), "millwright_scorer_skipped_batches_total"), metrictest.Sum(t, g.Registry(), "millwright_source_points_total"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	stride := int64(cfg.Models.Train.Features.WindowStride)
	send(steps[7200 : 7200+300])
	waitWindows(250 / stride)
	if st := alarms()[0]; st.Active || metrictest.Sum(t, g.Registry(), "millwright_scorer_alarms_total") != 0 {
		t.Fatalf("healthy live data raised an alarm: %+v", st)
	}
	send(steps[7200+300:])
	waitWindows(1100 / stride)
	st := alarms()[0]
	if raised := metrictest.Sum(t, g.Registry(), "millwright_scorer_alarms_total"); raised == 0 || !st.Active {
		t.Fatalf("bearing wear raised no alarm: %+v", st)
	}
	select {
	case m := <-received:
		if m.State != "raised" || m.Machine != "pump-1" || m.Factory != "e2e" || m.Score <= m.Threshold ||
			m.ModelVersion != res.Model.Version || len(m.Top) == 0 || m.Top[0].Signal != sim.SignalVibrationRMS {
			t.Errorf("alarm message %+v: want pump-1 raised above its threshold by the model %s, vibration first", m, res.Model.Version)
		}
		onset := t0.Add(2*time.Hour + 5*time.Minute)
		if !m.Time.After(onset) {
			t.Errorf("alarm at %s, before the fault's onset %s", m.Time, onset)
		}
		t.Logf("alarm raised %s after the fault's onset", m.Time.Sub(onset))
	case <-time.After(10 * time.Second):
		t.Fatalf("no alarm message on %s", alarmTopic)
	}
	if n := servicetest.WaitCount(t, influx, s.db, `SELECT count("value_bool") FROM "anomaly" WHERE "signal" = 'alarm' AND "value_bool" = true`, 1, 30*time.Second); n < 1 {
		t.Fatal("no anomaly point with the alarm raised in InfluxDB")
	}
	t.Logf("alarm: %+v; skipped batches %v", st, metrictest.Sum(t, g.Registry(), "millwright_scorer_skipped_batches_total"))
}
