package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/connectors/sparkplug"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// TestE2ESparkplugSimToInfluxDB runs the simulated plant as a Sparkplug B edge node through
// Mosquitto into a gateway with a sparkplug source and an InfluxDB sink: the last step of
// every machine arrives in InfluxDB with the twin plant's exact values.
func TestE2ESparkplugSimToInfluxDB(t *testing.T) {
	servicetest.Require(t, "Mosquitto and InfluxDB")
	influx := servicetest.InfluxURL()
	s := newSetup(t, influx, servicetest.Database(t, influx))
	hostID := servicetest.UniqueName("e2esphost")
	cfg, err := Parse(fmt.Appendf(nil, `
gateway:
  factory: e2e
  state_dir: %s
  http: {listen: "%s"}
  log: {level: warn}
sources:
  - name: plant
    sparkplug:
      mqtt: {servers: ["%s"], client_id: %s}
      host_id: %s
      groups: [%s]
sinks:
  - name: influx
    influxdb: {url: %s, bucket: %s, flush_interval: 50ms, timeout: 2s}
`, s.stateDir, s.httpAddr, servicetest.MQTTURL(), hostID, hostID, s.root, s.influx, s.db))
	if err != nil {
		t.Fatal(err)
	}
	// Leave no retained STATE behind (registered before the gateway, so that it runs after the gateway has stopped and published its offline state).
	t.Cleanup(func() {
		c, err := mqtt.NewPublisher(mqtt.PublisherConfig{Server: servicetest.MQTTURL(), ClientID: servicetest.UniqueName("e2espclean"), QoS: 1})
		if err == nil && c.Connect(context.Background()) == nil {
			_ = c.PublishRetained(context.Background(), sparkplug.StateTopic(hostID), nil)
			c.Close()
		}
	})
	runGateway(t, cfg, slog.New(slog.DiscardHandler))

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	willTopic, willPayload := sim.SparkplugDeath(s.root, "plant", 0)
	pub, err := mqtt.NewPublisher(mqtt.PublisherConfig{
		Server: servicetest.MQTTURL(), ClientID: servicetest.UniqueName("e2espedge"), QoS: 1,
		Will: &mqtt.Message{Topic: willTopic, Payload: willPayload, QoS: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		pub.Close()
	}()
	plantCfg := sim.Config{Seed: 3, Machines: []sim.Machine{
		{ID: "pump-1", Line: "l1", Kind: sim.KindPump},
		{ID: "spindle-1", Line: "l1", Kind: sim.KindSpindle},
	}}
	plant, err := sim.New(plantCfg)
	if err != nil {
		t.Fatal(err)
	}
	const steps, interval = 300, 5 * time.Millisecond
	start := time.Now().Truncate(time.Millisecond)
	r, err := sim.NewSparkplugRunner(plant, pub, sim.SparkplugOptions{Group: s.root, EdgeNode: "plant", Interval: interval, Start: start, Steps: steps})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	twin, _ := sim.New(plantCfg)
	var last []sim.Sample
	for i := range steps {
		last = twin.Step(start.Add(time.Duration(i) * interval))
	}
	at := last[0].Time.UnixMilli()
	q := fmt.Sprintf(`SELECT count("value") FROM "telemetry" WHERE time = %dms`, at)
	if got := servicetest.WaitCount(t, influx, s.db, q, 9, time.Minute); got != 9 {
		t.Fatalf("InfluxDB holds %d points of the last step, want 9 (5 pump + 4 spindle signals)", got)
	}
	series, err := servicetest.InfluxQL(influx, s.db, fmt.Sprintf(`SELECT "value" FROM "telemetry" WHERE time = %dms AND machine = 'pump-1' AND signal = 'temperature' AND line = '%s'`, at, s.root))
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 1 || len(series[0].Values) != 1 || series[0].Values[0][1] != last[0].Signals.Temperature {
		t.Errorf("pump-1 temperature at the last step = %+v, want %v", series, last[0].Signals.Temperature)
	}
}
