// Package trainsim turns a simulated plant's samples into telemetry points, for training and scoring tests and benchmarks.
package trainsim

import (
	"context"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/connectors/influxdb"
	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/models/features"
)

// Points appends one point per signal of s (in Kind.Signals order) to dst, tagged with
// factory and the sample's line and machine, stamped with the sample's time.
func Points(dst []telemetry.Point, factory string, s sim.Sample) []telemetry.Point {
	t := s.Time.UnixNano()
	for _, name := range s.Kind.Signals() {
		dst = append(dst, telemetry.Point{
			Factory: factory, Line: s.Line, Machine: s.Machine, Signal: name,
			SourceTime: t, Value: telemetry.Float(s.Signals.Value(name)),
		})
	}
	return dst
}

// Run steps plant from start every interval, n times, and calls fn with each step's points
// (all machines) and samples. The points slice is reused between calls.
func Run(plant *sim.Plant, factory string, start time.Time, interval time.Duration, n int, fn func(pts []telemetry.Point, samples []sim.Sample)) {
	var pts []telemetry.Point
	for i := range n {
		samples := plant.Step(start.Add(time.Duration(i) * interval))
		pts = pts[:0]
		for _, s := range samples {
			pts = Points(pts, factory, s)
		}
		fn(pts, samples)
	}
}

// History returns n steps of plant from start, every interval, as one slice of points.
func History(plant *sim.Plant, factory string, start time.Time, interval time.Duration, n int) []telemetry.Point {
	var all []telemetry.Point
	Run(plant, factory, start, interval, n, func(pts []telemetry.Point, _ []sim.Sample) { all = append(all, pts...) })
	return all
}

// Store writes pts into database db of the InfluxDB at url through the gateway's own
// InfluxDB sink, failing t on any error: the history a training test reads back.
func Store(t testing.TB, url, db string, pts []telemetry.Point) {
	t.Helper()
	var cfg influxdb.Config
	cfg.SetDefaults()
	cfg.URL, cfg.Bucket, cfg.Timeout = url, db, 30*time.Second
	sink, err := influxdb.New("history", cfg, connectors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := sink.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer sink.Close(ctx)
	if err := sink.Write(ctx, telemetry.Batch{Points: pts}); err != nil {
		t.Fatal(err)
	}
}

// WindowWidth is the width of the feature windows fc makes of machine's points in pts
// (one machine's history): the input width a federated model of that machine needs.
func WindowWidth(t testing.TB, fc features.Config, machine string, pts []telemetry.Point) int {
	t.Helper()
	seen := map[string]bool{}
	var signals []string
	for _, p := range pts {
		if p.Machine == machine && !seen[p.Signal] {
			seen[p.Signal] = true
			signals = append(signals, p.Signal)
		}
	}
	if len(signals) == 0 {
		t.Fatalf("no points of %s", machine)
	}
	from, to := time.Unix(0, pts[0].Time()), time.Unix(0, pts[len(pts)-1].Time()).Add(time.Second)
	g, err := features.Align(fc, machine, signals, pts, from, to)
	if err != nil {
		t.Fatal(err)
	}
	prep, err := features.Prepare(fc, g)
	if err != nil {
		t.Fatal(err)
	}
	return prep.Windows.Cols
}
