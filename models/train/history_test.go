package train

import (
	"context"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/connectors/influxdb"
	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/models/train/trainsim"
)

// historyStart is a fixed time in the middle of one of InfluxDB's 7-day shard groups.
var historyStart = time.Date(2026, 1, 6, 8, 0, 0, 0, time.UTC)

// influxFixture is a fresh database on the shared InfluxDB with a sink and a querier on it.
type influxFixture struct {
	cfg     influxdb.Config
	sink    *influxdb.Sink
	querier *influxdb.Querier
}

func newInfluxFixture(t testing.TB) *influxFixture {
	t.Helper()
	servicetest.Require(t, "InfluxDB")
	url := servicetest.InfluxURL()
	db := servicetest.Database(t, url)
	var cfg influxdb.Config
	cfg.SetDefaults()
	cfg.URL, cfg.Bucket, cfg.Timeout = url, db, 30*time.Second
	sink, err := influxdb.New("history", cfg, connectors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close(context.Background()) })
	q, err := influxdb.NewQuerier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return &influxFixture{cfg: cfg, sink: sink, querier: q}
}

// write stores pts through the sink in batches.
func (f *influxFixture) write(t testing.TB, pts []telemetry.Point) {
	t.Helper()
	for i := 0; i < len(pts); i += 5000 {
		if err := f.sink.Write(context.Background(), telemetry.Batch{Points: pts[i:min(i+5000, len(pts))]}); err != nil {
			t.Fatal(err)
		}
	}
}

// simHistory returns n seconds of 1 Hz samples of one pump as points, with every 100th
// temperature sample marked bad.
func simHistory(t testing.TB, factory string, n int, faults ...sim.Fault) []telemetry.Point {
	t.Helper()
	plant, err := sim.New(sim.Config{Seed: 7, Machines: []sim.Machine{{ID: "pump-1", Line: "line-1", Kind: sim.KindPump, Faults: faults}}})
	if err != nil {
		t.Fatal(err)
	}
	var all []telemetry.Point
	i := 0
	trainsim.Run(plant, factory, historyStart, time.Second, n, func(pts []telemetry.Point, _ []sim.Sample) {
		for _, p := range pts {
			if p.Signal == sim.SignalTemperature && i%100 == 0 {
				p.Quality.Level = telemetry.Bad
			}
			all = append(all, p)
		}
		i++
	})
	return all
}

func TestReadHistoryFromInfluxDB(t *testing.T) {
	f := newInfluxFixture(t)
	const n = 1800
	f.write(t, simHistory(t, "acme", n))
	var calls []int
	h, err := ReadHistory(context.Background(), f.querier, HistoryQuery{
		Bucket: f.cfg.Bucket, Measurement: "telemetry", Factory: "acme", Machine: "pump-1",
		From: historyStart, To: historyStart.Add(n * time.Second),
		Chunk: 10 * time.Minute, ChunkTimeout: 30 * time.Second,
	}, func(done, total int) { calls = append(calls, done*10+total) })
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{13, 23, 33}; len(calls) != 3 || calls[0] != want[0] || calls[2] != want[2] {
		t.Errorf("progress calls %v, want done*10+total = %v", calls, want)
	}
	if got := h.Signals(); len(got) != 5 {
		t.Fatalf("signals %v, want the pump's five", got)
	}
	count, bad, last := map[string]int{}, map[string]int{}, map[string]int64{}
	for _, p := range h.Points {
		if p.SourceTime <= last[p.Signal] {
			t.Fatalf("%s: sample at %d not after the one before", p.Signal, p.SourceTime)
		}
		last[p.Signal] = p.SourceTime
		count[p.Signal]++
		if p.Quality.Level == telemetry.Bad {
			bad[p.Signal]++
		}
	}
	for _, sig := range h.Signals() {
		if count[sig] != n {
			t.Errorf("%s: %d samples, want %d", sig, count[sig], n)
		}
		if want := map[bool]int{true: n / 100, false: 0}[sig == sim.SignalTemperature]; bad[sig] != want {
			t.Errorf("%s: %d bad samples, want %d", sig, bad[sig], want)
		}
	}
	// Another factory's machine of the same name is not read.
	h, err = ReadHistory(context.Background(), f.querier, HistoryQuery{
		Bucket: f.cfg.Bucket, Measurement: "telemetry", Factory: "other", Machine: "pump-1",
		From: historyStart, To: historyStart.Add(n * time.Second), Chunk: time.Hour, ChunkTimeout: 30 * time.Second,
	}, nil)
	if err != nil || len(h.Points) != 0 {
		t.Fatalf("other factory: %d points, err %v; want none", len(h.Points), err)
	}
}
