package federation_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/compress"
	"github.com/millwright-io/millwright/federation/secagg"
)

// BenchmarkRound measures whole rounds of 10 gateways × 100k parameters over an embedded
// NATS server on loopback (download the global model, train, upload, verify, aggregate,
// publish; with secagg, the four phases of secure aggregation), and, as the floor, moving
// the same bytes with the same transport calls and no protocol work: the hub storing a
// model of the same size, each gateway downloading it and uploading an update of the same
// size, and the hub reading the ten uploads (the mean of five repetitions).
func BenchmarkRound(b *testing.B) {
	const n, dim = 10, 100_000
	for _, kind := range []string{compress.None, compress.Int8, "secagg"} {
		b.Run("codec="+kind, func(b *testing.B) {
			e := newEnv(b, n, false)
			fc := fedConfig(n, dim)
			if kind == "secagg" {
				fc.SecAgg = secagg.Config{Enabled: true}
			} else {
				fc.Codecs = []compress.Codec{{Kind: kind}}
			}
			fc.Rounds = uint64(b.N) + 1
			h := startHub(b, e.hub, fc)
			buses := make([]federation.Transport, n)
			for i := range n {
				buses[i] = e.gatewayBus(i)
				e.gateway(b, i, &pullTrainer{target: target(i, dim), samples: 10})
			}
			first := h.next(b) // warm-up: connections, consumers, caches
			b.ResetTimer()
			var roundTime time.Duration
			bytes := 0
			for range b.N {
				r := h.next(b)
				if r.Outcome != "aggregated" || len(r.Used) != n {
					b.Fatalf("round %+v", r)
				}
				roundTime += r.Duration
				bytes += r.Bytes
			}
			b.StopTimer()
			perRound := roundTime / time.Duration(b.N)
			updateBytes := bytes / b.N / n
			// The floor: the same bytes moved with no protocol work.
			model, err := e.hub.GetModel(context.Background(), fedName, first.Model)
			if err != nil {
				b.Fatal(err)
			}
			payload := make([]byte, updateBytes)
			const reps = 5
			var move time.Duration
			for rep := range reps {
				round := uint64(1_000_000 + rep)
				fresh := slices.Clone(model)
				fresh[0], fresh[1] = byte(rep), 0xff // a model never stored before
				start := time.Now()
				hash, err := e.hub.PutModel(context.Background(), fedName, fresh)
				if err != nil {
					b.Fatal(err)
				}
				var wg sync.WaitGroup
				for i := range n {
					wg.Go(func() {
						if _, err := buses[i].GetModel(context.Background(), fedName, hash); err != nil {
							b.Error(err)
						}
						if err := buses[i].PublishUpdate(context.Background(), fedName, round, gwName(i), payload); err != nil {
							b.Error(err)
						}
					})
				}
				got := 0
				ctx, cancel := context.WithCancel(context.Background())
				_ = e.hub.Updates(ctx, fedName, round, func([]byte) {
					if got++; got == n {
						cancel()
					}
				})
				wg.Wait()
				move += time.Since(start)
			}
			move /= reps
			b.ReportMetric(float64(perRound.Milliseconds()), "round_ms")
			b.ReportMetric(float64(move.Milliseconds()), "move_ms")
			b.ReportMetric(float64(perRound)/float64(move), "round/move")
			b.ReportMetric(float64(bytes/b.N), "update_bytes/round")
			b.ReportMetric(float64(len(model)*(n+1)+bytes/b.N), "bytes/round") // the hub stores the model, n gateways read it
			b.Logf("%s: round %v, moving the same bytes %v (%.2f×); %d update bytes per gateway (%.3f× float32)", kind, perRound, move,
				float64(perRound)/float64(move), updateBytes, float64(updateBytes)/float64(compress.RawBytes(dim)))
		})
	}
}
