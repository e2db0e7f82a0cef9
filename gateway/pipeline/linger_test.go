package pipeline

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/connectors/influxdb"
)

// batcherSink is a fakeSink that asks for chunks of maxPoints, lingering linger.
type batcherSink struct {
	fakeSink
	maxPoints int
	linger    time.Duration
}

func (s *batcherSink) BatchPolicy() (int, time.Duration) { return s.maxPoints, s.linger }

// TestZeroFlushIntervalDoesNotLinger: the InfluxDB sink accepts flush_interval: 0 and
// reports it through BatchPolicy, and the engine then writes points as soon as they are in
// the log instead of waiting for a batch to fill.
func TestZeroFlushIntervalDoesNotLinger(t *testing.T) {
	var cfg influxdb.Config
	cfg.SetDefaults()
	cfg.URL, cfg.Bucket, cfg.FlushInterval = "http://127.0.0.1:1", "db", 0
	s, err := influxdb.New("influx", cfg, connectors.Env{})
	if err != nil {
		t.Fatalf("flush_interval 0 is refused: %v", err)
	}
	maxPoints, linger := s.BatchPolicy()
	if linger != 0 {
		t.Fatalf("BatchPolicy linger = %s for flush_interval 0", linger)
	}

	synctest.Test(t, func(t *testing.T) {
		wal := openWAL(t, nil, "influx")
		sink := &batcherSink{maxPoints: maxPoints, linger: linger}
		e, err := New(wal, nil, []Sink{{Name: "influx", Sink: sink, Cursor: wal.Reader("influx")}}, Options{Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		defer runEngine(e)()

		start := time.Now()
		if err := wal.Append(context.Background(), batch(1, 5)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // everything that can happen without time passing has happened
		if n := len(sink.stored()); n != 5 || time.Since(start) != 0 {
			t.Errorf("%d of 5 points written when the log had them (%s later); want all at once, with a linger of 0", n, time.Since(start))
		}
	})
}
