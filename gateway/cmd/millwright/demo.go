package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/millwright-io/millwright/connectors/influxdb"
	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/gateway"
)

// demoMachine is a simulated machine of the first demo: a few physically plausible signals
// (later issues replace it with the simulated plant of connectors/sim).
type demoMachine struct {
	line, name string
	baseTemp   float64
	faultAfter time.Duration // vibration starts to grow after this long (0: never)
}

var demoMachines = []demoMachine{
	{line: "line-1", name: "pump-1", baseTemp: 41},
	{line: "line-1", name: "pump-2", baseTemp: 44, faultAfter: 5 * time.Second},
	{line: "line-2", name: "spindle-1", baseTemp: 36},
}

var demoSignals = []string{"temperature", "vibration_rms", "current", "speed"}

func (m demoMachine) sample(rng *rand.Rand, t time.Duration) string {
	sec := t.Seconds()
	vib := 1.2 + 0.1*rng.NormFloat64()
	if m.faultAfter > 0 && t > m.faultAfter {
		vib += 0.15 * (t - m.faultAfter).Seconds() // bearing wear developing
	}
	return fmt.Sprintf(`{"ts": %d, "temperature": %.3f, "vibration_rms": %.4f, "current": %.3f, "speed": %.1f}`,
		time.Now().UnixMilli(),
		m.baseTemp+2*math.Sin(sec/30)+0.2*rng.NormFloat64(),
		vib,
		12+0.5*math.Sin(sec/7)+0.1*rng.NormFloat64(),
		1480+5*rng.NormFloat64())
}

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
	if err := fs.Parse(args); err != nil {
		return 2
	}
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
		len(demoMachines), *mqttURL, *influxURL, *db)
	fmt.Fprintf(stdout, "gateway metrics: http://%s/metrics   run id (factory tag): %s\n\n", *httpAddr, run)

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

	var published, failed atomic.Int64
	rng := rand.New(rand.NewPCG(7, 11))
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	progress := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	defer progress.Stop()
publish:
	for {
		select {
		case <-ctx.Done():
			break publish
		case err := <-gdone:
			fmt.Fprintln(stderr, "demo: gateway stopped:", err)
			return 1
		case <-progress.C:
			fmt.Fprintf(stdout, "  %4.0fs  published %6d samples\n", time.Since(start).Seconds(), published.Load()*int64(len(demoSignals)))
		case <-tick.C:
			if time.Since(start) >= *duration {
				break publish
			}
			for _, m := range demoMachines {
				topic := fmt.Sprintf("demo/%s/%s/%s/telemetry", run, m.line, m.name)
				err := pub.Publish(ctx, topic, []byte(m.sample(rng, time.Since(start))), func(err error) {
					if err != nil {
						failed.Add(1)
					}
				})
				if err != nil {
					break publish
				}
				published.Add(1)
			}
		}
	}
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = pub.Flush(flushCtx)
	want := published.Load() * int64(len(demoSignals))
	fmt.Fprintf(stdout, "\npublished %d messages = %d samples (%d failed); waiting for them in InfluxDB...\n", published.Load(), want, failed.Load())

	q, err := influxdb.NewQuerier(*cfg.Sinks[0].InfluxDB)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer q.Close()
	var stored map[string]machineSummary
	for deadline := time.Now().Add(60 * time.Second); ; {
		stored, err = summarize(flushCtx, q, *db, run, start)
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
func summarize(ctx context.Context, q *influxdb.Querier, db, run string, since time.Time) (map[string]machineSummary, error) {
	out := map[string]machineSummary{}
	for _, m := range demoMachines {
		s := machineSummary{last: map[string]float64{}}
		base := fmt.Sprintf(`from(bucket: %q) |> range(start: %s) |> filter(fn: (r) => r._measurement == "telemetry" and r.factory == %q and r.machine == %q and r._field == "value")`,
			db, since.Add(-time.Minute).UTC().Format(time.RFC3339), run, m.name)
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
		out[m.name] = s
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
			fmt.Fprintf(tw, "%.2f\t", m.last[sig])
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
