package opcua

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// BenchmarkSubscriptionStart connects the source to the simulator b.N times, each a new
// session and subscription, and reports how long the first values take (p50, p99, max)
// and how often the watchdog had to resume gopcua's publish loop (lost at the start, see
// watchdog.go) or end the connection at the first-values deadline:
//
//	go test -run '^$' -bench SubscriptionStart -benchtime 200x ./connectors/opcua/
func BenchmarkSubscriptionStart(b *testing.B) {
	cfg := simPlantConfig()
	s := startSimServer(b, cfg, SimServerOptions{})
	m := cfg.Machines[0]
	var firsts []time.Duration
	var resumes, stalls float64
	b.ResetTimer()
	for range b.N {
		src, err := New(servicetest.UniqueName("start"), Config{
			Endpoint:     s.URL(),
			PKI:          PKI{Dir: b.TempDir()},
			Subscription: Subscription{PublishingInterval: 100 * time.Millisecond},
			Nodes:        []Node{{NodeID: s.NodeID(m.Line, m.ID, m.Kind.Signals()[0]), Machine: m.ID, Signal: m.Kind.Signals()[0]}},
		}, connectors.Env{})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		if err := src.Connect(ctx); err != nil {
			b.Fatal(err)
		}
		for {
			_, ack, err := src.Read(ctx)
			if err == nil {
				ack(ctx, nil)
				break
			}
			if ctx.Err() != nil {
				b.Fatal(err)
			}
			// A stalled start ends the connection: reconnect, as the pipeline does.
			if err := src.Connect(ctx); err != nil {
				b.Fatal(err)
			}
		}
		firsts = append(firsts, time.Since(start))
		resumes += testutil.ToFloat64(src.m.resumes)
		stalls += testutil.ToFloat64(src.m.stalls)
		cancel()
		_ = src.Close(context.Background())
	}
	b.StopTimer()
	slices.Sort(firsts)
	at := func(q float64) float64 { return float64(firsts[int(q*float64(len(firsts)-1))]) / 1e6 }
	b.ReportMetric(at(0.5), "first_ms_p50")
	b.ReportMetric(at(0.99), "first_ms_p99")
	b.ReportMetric(at(1), "first_ms_max")
	b.ReportMetric(resumes, "resumes")
	b.ReportMetric(stalls, "stalls")
}
