package sim_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/connectors/sparkplug"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// TestIntegrationSparkplugThroughMosquitto runs the plant as a Sparkplug B edge node through
// the real Mosquitto and reads it with the Sparkplug host source. The host joins after the
// births went out, so it sees data before any birth, asks for a rebirth, and the simulator
// answers: every point then carries the twin plant's exact value and time.
func TestIntegrationSparkplugThroughMosquitto(t *testing.T) {
	servicetest.Require(t, "Mosquitto")
	group := servicetest.UniqueName("simgroup")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	willTopic, willPayload := sim.SparkplugDeath(group, "plant", 0)
	pub, err := mqtt.NewPublisher(mqtt.PublisherConfig{
		Server: servicetest.MQTTURL(), ClientID: servicetest.UniqueName("simedge"), QoS: 1,
		Will: &mqtt.Message{Topic: willTopic, Payload: willPayload, QoS: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	const interval = 10 * time.Millisecond
	start := time.Now().Truncate(time.Millisecond)
	r, err := sim.NewSparkplugRunner(plantOfAllKinds(t), pub, sim.SparkplugOptions{
		Group: group, EdgeNode: "plant", Interval: interval, Start: start,
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopRunner := context.WithCancel(ctx)
	defer stopRunner()
	rdone := make(chan error, 1)
	go func() { rdone <- r.Run(rctx) }()
	for r.Stats().Steps < 5 { // the births are gone: nobody listened
		time.Sleep(interval)
	}

	hostID := servicetest.UniqueName("simhost")
	src, err := sparkplug.New("sim", sparkplug.Config{
		MQTT:   mqtt.Config{Servers: []string{servicetest.MQTTURL()}, ClientID: hostID},
		HostID: hostID,
		Groups: []string{group},
	}, connectors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = src.Close(context.Background())
		// Leave no retained STATE behind.
		if err := pub.PublishRetained(context.Background(), sparkplug.StateTopic(hostID), nil); err != nil {
			t.Errorf("clear the retained state: %v", err)
		}
	}()

	got := map[string][]telemetry.Point{}
	for len(got["pump-1"]) < 5*50 || len(got["spindle-1"]) < 4*50 || len(got["motor-1"]) < 4*50 {
		b, ack, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		for _, p := range b.Points {
			got[p.Machine] = append(got[p.Machine], p)
		}
		ack(ctx, nil)
	}
	stopRunner()
	if err := <-rdone; err != nil {
		t.Fatal(err)
	}
	if r.Rebirths() < 1 {
		t.Errorf("the simulator answered %d rebirth requests, want at least 1", r.Rebirths())
	}

	// The twin plant gives the sample of every (machine, time).
	twin := plantOfAllKinds(t)
	want := map[string]sim.Sample{}
	for i := range r.Stats().Steps {
		for _, s := range twin.Step(start.Add(time.Duration(i) * interval)) {
			want[fmt.Sprint(s.Machine, s.Time.UnixMilli())] = s
		}
	}
	for machine, pts := range got {
		for _, p := range pts {
			s, ok := want[fmt.Sprint(machine, p.SourceTime/int64(time.Millisecond))]
			if !ok {
				t.Fatalf("%s %s at %d: no sample at that time", machine, p.Signal, p.SourceTime)
			}
			if p.Value != telemetry.Float(s.Signals.Value(p.Signal)) || p.Quality.Level != telemetry.Good || p.Line != group {
				t.Fatalf("%s %s = %+v, want %v, good, line %s", machine, p.Signal, p, s.Signals.Value(p.Signal), group)
			}
		}
	}
}
