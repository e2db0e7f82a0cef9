package sim_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// TestIntegrationThroughMosquitto publishes a plant through the real Mosquitto that
// deploy/services.sh starts and reads it back with the MQTT source: every sample arrives
// with its signals, its time and its machine.
func TestIntegrationThroughMosquitto(t *testing.T) {
	if os.Getenv("MILLWRIGHT_INTEGRATION") == "" {
		t.Skip("set MILLWRIGHT_INTEGRATION=1 (make test does) to run against the real Mosquitto")
	}
	url := os.Getenv("MILLWRIGHT_MQTT_URL")
	if url == "" {
		url = "tcp://127.0.0.1:1883"
	}
	prefix := fmt.Sprintf("mwtest-sim-%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	src, err := mqtt.New("sim", mqtt.Config{
		Servers: []string{url}, ClientID: prefix + "-src", CleanSession: true,
		Topics: []mqtt.Topic{{Pattern: prefix + "/{line}/{machine}/telemetry", QoS: 1}},
	}, connectors.Env{}.WithDefaults())
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Connect(ctx); err != nil {
		t.Fatalf("source connect: %v", err)
	}
	defer src.Close(context.Background())

	pub, err := mqtt.NewPublisher(mqtt.PublisherConfig{Server: url, ClientID: prefix + "-pub", QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Connect(ctx); err != nil {
		t.Fatalf("publisher connect: %v", err)
	}
	defer pub.Close()

	// A twin plant with the same seed gives the samples the source must see.
	const steps = 200
	start := time.Now().Truncate(time.Millisecond)
	r, err := sim.NewRunner(plantOfAllKinds(t), pub, sim.RunOptions{
		Topic:    func(s sim.Sample) string { return prefix + "/" + s.Line + "/" + s.Machine + "/telemetry" },
		Interval: time.Millisecond, Start: start, Steps: steps,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Published != 3*steps || st.Delivered != 3*steps || st.Failed != 0 {
		t.Fatalf("stats %+v; want %d published and delivered", st, 3*steps)
	}

	want := map[string][]sim.Sample{} // by machine, in order
	twin := plantOfAllKinds(t)
	for i := range steps {
		for _, s := range twin.Step(start.Add(time.Duration(i) * time.Millisecond)) {
			want[s.Machine] = append(want[s.Machine], s)
		}
	}
	got := map[string][]telemetry.Point{}
	n := 0
	for n < steps*(5+4+4) {
		b, ack, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("Read after %d points: %v", n, err)
		}
		for _, p := range b.Points {
			got[p.Machine] = append(got[p.Machine], p)
		}
		n += b.Len()
		ack(ctx, nil)
	}
	for machine, samples := range want {
		pts := got[machine]
		per := len(samples[0].Kind.Signals())
		if len(pts) != len(samples)*per {
			t.Fatalf("%s: %d points, want %d", machine, len(pts), len(samples)*per)
		}
		// One connection and QoS 1 from one publisher: per machine, the order is kept.
		for i, s := range samples {
			checkPoints(t, s, pts[i*per:(i+1)*per])
		}
	}
	if machines := slices.Sorted(maps.Keys(got)); !slices.Equal(machines, []string{"motor-1", "pump-1", "spindle-1"}) {
		t.Errorf("machines %v", machines)
	}
}
