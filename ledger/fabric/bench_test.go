package fabric

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hyperledger/fabric-gateway/pkg/client"
	"golang.org/x/sync/errgroup"

	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/chaincode/wire"
)

// timedBackend records how long each Anchor took.
type timedBackend struct {
	ledger.Backend
	mu   sync.Mutex
	took []time.Duration
}

func (b *timedBackend) Anchor(ctx context.Context, rec ledger.Record) error {
	start := time.Now()
	err := b.Backend.Anchor(ctx, rec)
	b.mu.Lock()
	b.took = append(b.took, time.Since(start))
	b.mu.Unlock()
	return err
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func benchRecord(b *testing.B, s *ledger.Signer, site string, i int) ledger.Record {
	body, err := ledger.CanonicalMarshal(ledger.AlarmDigest{From: audittest.T0, To: audittest.T0.Add(time.Hour), Count: int64(i), LogHash: audittest.Hash(fmt.Appendf(nil, "%s %d", site, i))})
	if err != nil {
		b.Fatal(err)
	}
	rec, err := s.Sign(ledger.Record{Header: ledger.Header{ID: ledger.NewID(), SchemaVersion: ledger.SchemaVersion, Type: ledger.TypeAlarmDigest,
		Time: time.Now().UTC(), Site: site}, Body: body})
	if err != nil {
		b.Fatal(err)
	}
	return rec
}

// BenchmarkAnchor anchors b.N records through the outbox (ledger.Outbox.Run with this
// client as its backend: one record at a time, in order) and b.N records with a bare
// fabric-gateway submit loop (also one at a time), against the running network, and
// reports both rates, their ratio and the latency percentiles of one anchor.
// Run: . .fabric/env && go test -run '^$' -bench Anchor -benchtime 200x ./ledger/fabric/
func BenchmarkAnchor(b *testing.B) {
	c, signer := benchClient(b)
	ctx := context.Background()
	site := servicetest.UniqueName("bench")
	b.ReportAllocs()

	// Bare: the fabric-gateway submit loop the outbox is measured against.
	bare := make([]ledger.Record, b.N)
	for i := range bare {
		bare[i] = benchRecord(b, signer, site, i)
	}
	var bareTook []time.Duration
	b.ResetTimer()
	start := time.Now()
	for _, rec := range bare {
		payload, err := ledger.MarshalRecord(rec)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := c.contract.SubmitWithContext(ctx, wire.FnAnchor, client.WithArguments(string(payload))); err != nil {
			b.Fatal(err)
		}
		bareTook = append(bareTook, time.Since(t0))
	}
	bareRate := float64(b.N) / time.Since(start).Seconds()

	// Outbox: queue b.N records, then let Run anchor them.
	tb := &timedBackend{Backend: c}
	ocfg := ledger.Config{Dir: b.TempDir(), Site: site, RetryInitial: 50 * time.Millisecond, RetryMax: time.Second}
	ocfg.SetDefaults()
	ob, err := ledger.Open(ocfg, signer, tb)
	if err != nil {
		b.Fatal(err)
	}
	defer ob.Close()
	for i := range b.N {
		if _, err := ob.Record(ctx, ledger.AlarmDigest{From: audittest.T0, To: audittest.T0.Add(time.Hour), Count: int64(i),
			LogHash: audittest.Hash(fmt.Appendf(nil, "outbox %s %d", site, i))}); err != nil {
			b.Fatal(err)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	var g errgroup.Group
	start = time.Now()
	g.Go(func() error { return ob.Run(runCtx) })
	for ob.Stats().Pending > 0 {
		time.Sleep(time.Millisecond)
	}
	outboxRate := float64(b.N) / time.Since(start).Seconds()
	cancel()
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if st := ob.Stats(); st.Rejected != 0 || st.AnchorErrors != 0 {
		b.Fatalf("outbox stats %+v", st)
	}
	b.Logf("n=%d outbox %.3f rec/s, bare %.3f rec/s", b.N, outboxRate, bareRate)
	b.ReportMetric(outboxRate, "outbox-rec/s")
	b.ReportMetric(bareRate, "bare-rec/s")
	b.ReportMetric(100*outboxRate/bareRate, "outbox-%-of-bare")
	b.ReportMetric(float64(percentile(tb.took, 0.50).Milliseconds()), "outbox-p50-ms")
	b.ReportMetric(float64(percentile(tb.took, 0.99).Milliseconds()), "outbox-p99-ms")
	b.ReportMetric(float64(percentile(bareTook, 0.50).Milliseconds()), "bare-p50-ms")
	b.ReportMetric(float64(percentile(bareTook, 0.99).Milliseconds()), "bare-p99-ms")
}

// envOrSkip skips b unless the network's environment is loaded.
func envOrSkip(tb testing.TB) func(string) string {
	if getenv("MILLWRIGHT_FABRIC") != "1" {
		tb.Skip("Fabric network not available: MILLWRIGHT_FABRIC is not 1; run `make fabric-up && . .fabric/env` (make test does both)")
	}
	return getenv
}

// BenchmarkAnchorParallel anchors b.N records with 20 concurrent callers of Client.Anchor
// (several outboxes, or several gateways, sharing one peer), for the network's capacity.
// Run: . .fabric/env && go test -run '^$' -bench AnchorParallel -benchtime 1000x ./ledger/fabric/
func BenchmarkAnchorParallel(b *testing.B) {
	c, signer := benchClient(b)
	ctx := context.Background()
	site := servicetest.UniqueName("bench-par")
	recs := make([]ledger.Record, b.N)
	for i := range recs {
		recs[i] = benchRecord(b, signer, site, i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var g errgroup.Group
	var retries atomic.Int64
	g.SetLimit(20)
	for _, rec := range recs {
		g.Go(func() error {
			// Transient errors are retried as the outbox would: concurrent transactions
			// can meet peers at different block heights (their endorsements differ) or
			// conflict (MVCC).
			for attempt := 0; ; attempt++ {
				err := c.Anchor(ctx, rec)
				if err == nil || ledger.IsPermanent(err) || attempt == 10 {
					return err
				}
				retries.Add(1)
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rec/s")
	b.ReportMetric(float64(retries.Load()), "retries")
}

// benchClient opens a client of factory-a on the running network with a registered bench
// signer (networkClient).
func benchClient(b *testing.B) (*Client, *ledger.Signer) {
	c, signer, _ := networkClient(b, "bench-gw")
	return c, signer
}

// networkClient opens a client of factory-a on the running network with the registered
// signer name, closed when tb ends, and returns its configuration too; it skips tb when
// the network is not up.
func networkClient(tb testing.TB, name string) (*Client, *ledger.Signer, Config) {
	cfg, err := ConfigFromEnv("factory-a", envOrSkip(tb))
	if err != nil {
		tb.Fatal(err)
	}
	signer := audittest.Signer(tb, name, "factory-a")
	c, err := Open(cfg, WithActors(signer))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		tb.Fatal(err)
	}
	if err := c.RegisterKey(ctx, signer.Actor().Name, signer.Public()); err != nil {
		tb.Fatal(err)
	}
	return c, signer, cfg
}
