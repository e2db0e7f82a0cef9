package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/millwright-io/millwright/connectors/influxdb"
	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/gateway"
)

// demoPlant is the simulated plant of the demo: four machines on two lines, and a bearing
// that starts to wear after a few seconds, so the table shows its vibration drifting up.
func demoPlant(seed uint64, interval time.Duration) sim.Config {
	return sim.Config{
		Seed:     seed,
		Interval: interval,
		Machines: []sim.Machine{
			{ID: "pump-1", Line: "line-1", Kind: sim.KindPump},
			{ID: "pump-2", Line: "line-1", Kind: sim.KindPump, Faults: []sim.Fault{
				{Kind: sim.FaultBearingWear, Onset: 4 * time.Second, Ramp: 20 * time.Second},
			}},
			{ID: "spindle-1", Line: "line-2", Kind: sim.KindSpindle},
			{ID: "motor-1", Line: "line-2", Kind: sim.KindMotor},
		},
	}
}

// demoSignals are the table's columns: every signal any machine reports.
var demoSignals = sim.KindPump.Signals()

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mqttURL := fs.String("mqtt", "tcp://127.0.0.1:1883", "MQTT broker the simulated machines publish to")
	influxURL := fs.String("influx", "http://127.0.0.1:8086", "InfluxDB the gateway writes to")
	db := fs.String("db", "millwright", "InfluxDB database (bucket)")
	duration := fs.Duration("duration", 15*time.Second, "how long the machines publish")
	rate := fs.Int("rate", 20, "samples per second per machine")
	httpAddr := fs.String("http", "127.0.0.1:9273", "gateway HTTP API (metrics, health)")
	stateDir := fs.String("state", "", "state directory (default: a temporary one, removed afterwards)")
	seed := fs.Uint64("seed", 1, "seed of the simulated plant: the same seed gives the same signals")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *rate <= 0 || *rate > 1000 {
		fmt.Fprintf(stderr, "demo: -rate %d is out of range; expected 1 to 1000 samples per second\n", *rate)
		return 2
	}
	interval := time.Second / time.Duration(*rate)
	plant, err := sim.New(demoPlant(*seed, interval))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	machines := plant.Config().Machines
	if *stateDir == "" {
		dir, err := os.MkdirTemp("", "millwright-demo-")
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		*stateDir = dir
	}
	run := fmt.Sprintf("demo-%d", time.Now().Unix())
	cfg, err := gateway.Parse(fmt.Appendf(nil, `
gateway:
  factory: %s
  state_dir: %q
  http: {listen: %q}
  log: {level: warn}
sources:
  - name: machines
    mqtt:
      servers: [%q]
      client_id: millwright-demo
      topics:
        - pattern: "demo/{factory}/{line}/{machine}/telemetry"
          qos: 1
sinks:
  - name: influx
    influxdb:
      url: %q
      bucket: %q
      flush_interval: 200ms
`, run, *stateDir, *httpAddr, *mqttURL, *influxURL, *db))
	if err != nil {
		fmt.Fprintln(stderr, "demo configuration:", err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g, err := gateway.New(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	gctx, stopGateway := context.WithCancel(ctx)
	defer stopGateway()
	gdone := make(chan error, 1)
	go func() { gdone <- g.Run(gctx) }()

	fmt.Fprintf(stdout, "Millwright demo: %d simulated machines -> MQTT %s -> gateway -> InfluxDB %s (database %q)\n",
		len(machines), *mqttURL, *influxURL, *db)
	fmt.Fprintf(stdout, "gateway metrics: http://%s/metrics   run id (factory tag): %s\n", *httpAddr, run)
	for _, m := range machines {
		for _, f := range m.Faults {
			fmt.Fprintf(stdout, "injected fault: %s %s from %s, full severity %s later (seed %d)\n", m.ID, f.Kind, f.Onset, f.Ramp, *seed)
		}
	}
	fmt.Fprintln(stdout)

	pub, err := mqtt.NewPublisher(mqtt.PublisherConfig{Server: *mqttURL, ClientID: "millwright-demo-machines", QoS: 1})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := pub.Connect(ctx); err != nil {
		fmt.Fprintln(stderr, "demo: cannot reach the broker (is `make services` running?):", err)
		return 1
	}
	defer pub.Close()

	steps := int(*duration / interval)
	start := time.Now()
	runner, err := sim.NewRunner(plant, pub, sim.RunOptions{
		Start: start,
		Topic: func(s sim.Sample) string {
			return "demo/" + run + "/" + s.Line + "/" + s.Machine + "/telemetry"
		},
		Steps: steps,
	})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	rctx, stopRunner := context.WithCancel(ctx)
	defer stopRunner()
	rdone := make(chan error, 1)
	go func() { rdone <- runner.Run(rctx) }()
	progress := time.NewTicker(3 * time.Second)
	defer progress.Stop()
	// samples counts the points of n messages, one per signal: the runner publishes the
	// machines in order, step after step.
	samples := func(n int64) int64 {
		var pts int64
		for i := range n {
			pts += int64(len(machines[i%int64(len(machines))].Kind.Signals()))
		}
		return pts
	}
publish:
	for {
		select {
		case err := <-rdone:
			if err != nil {
				fmt.Fprintln(stderr, "demo:", err)
				return 1
			}
			break publish
		case err := <-gdone:
			stopRunner()
			<-rdone
			fmt.Fprintln(stderr, "demo: gateway stopped:", err)
			return 1
		case <-progress.C:
			fmt.Fprintf(stdout, "  %4.0fs  published %6d samples\n", time.Since(start).Seconds(), samples(runner.Stats().Published))
		}
	}
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = pub.Flush(flushCtx)
	st := runner.Stats()
	want := samples(st.Published)
	fmt.Fprintf(stdout, "\npublished %d messages = %d samples (%d failed); waiting for them in InfluxDB...\n", st.Published, want, st.Failed)

	q, err := influxdb.NewQuerier(*cfg.Sinks[0].InfluxDB)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer q.Close()
	var stored map[string]machineSummary
	for deadline := time.Now().Add(60 * time.Second); ; {
		stored, err = summarize(flushCtx, q, *db, run, start, machines)
		if err == nil && total(stored) >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		fmt.Fprintln(stderr, "demo: query InfluxDB:", err)
		return 1
	}
	printSummary(stdout, stored)
	got := total(stored)
	stopGateway()
	<-gdone
	if got != want {
		fmt.Fprintf(stdout, "\nMISMATCH: %d of %d samples arrived in InfluxDB\n", got, want)
		return 1
	}
	fmt.Fprintf(stdout, "\nall %d samples arrived in InfluxDB. Query them with Flux:\n  from(bucket: %q) |> range(start: -1h) |> filter(fn: (r) => r.factory == %q)\n", got, *db, run)
	return 0
}

type machineSummary struct {
	points int64
	last   map[string]float64
}

func total(s map[string]machineSummary) int64 {
	var n int64
	for _, m := range s {
		n += m.points
	}
	return n
}

// summarize counts the run's points per machine and reads each signal's last value, one
// narrow Flux query per machine (InfluxDB 1.8's Flux is slow on wide queries).
func summarize(ctx context.Context, q *influxdb.Querier, db, run string, since time.Time, machines []sim.Machine) (map[string]machineSummary, error) {
	out := map[string]machineSummary{}
	for _, m := range machines {
		s := machineSummary{last: map[string]float64{}}
		base := fmt.Sprintf(`from(bucket: %q) |> range(start: %s) |> filter(fn: (r) => r._measurement == "telemetry" and r.factory == %q and r.machine == %q and r._field == "value")`,
			db, since.Add(-time.Minute).UTC().Format(time.RFC3339), run, m.ID)
		err := q.Query(ctx, base+` |> group() |> count()`, func(v map[string]any) error {
			if n, ok := v["_value"].(int64); ok {
				s.points += n
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		err = q.Query(ctx, base+` |> last()`, func(v map[string]any) error {
			sig, _ := v["signal"].(string)
			if f, ok := v["_value"].(float64); ok {
				s.last[sig] = f
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		out[m.ID] = s
	}
	return out, nil
}

func printSummary(w io.Writer, s map[string]machineSummary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "machine\tpoints in InfluxDB\t%s\t\n", strings.Join(demoSignals, "\t"))
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		m := s[n]
		fmt.Fprintf(tw, "%s\t%d\t", n, m.points)
		for _, sig := range demoSignals {
			if v, ok := m.last[sig]; ok {
				fmt.Fprintf(tw, "%.2f\t", v)
			} else {
				fmt.Fprint(tw, "-\t")
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
