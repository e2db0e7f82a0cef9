package federation_test

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/compress"
	"github.com/millwright-io/millwright/federation/secagg"
	"github.com/millwright-io/millwright/models"
)

// BenchmarkRound measures whole rounds of 10 gateways × 100k parameters over an embedded
// NATS server on loopback (download the global model, train, upload, verify, aggregate,
// publish; with secagg, the four phases of secure aggregation), and, as the floor, moving
// the same bytes with the same transport calls and no protocol work (roundFloor: the
// round's state, the model, the updates, the release record, the version, the receipts
// and the deletions; thirty repetitions, enough that the garbage collector's share is
// averaged as it is over the rounds). round/move compares the two periods: how often a
// round completes, and how often the floor moves the same bytes. round/bulk is the earlier
// comparison with the model and the updates alone (bulkFloor), without the small calls.
// With -v it logs where a round's time goes: when, on average from the round's start,
// each transport call of the hub and the gateways starts and ends. cpu_ms/round and
// move_cpu_ms are the CPU time the process (hub, gateways and NATS server) spends per
// round and per floor repetition: on the shared machine they vary less than the wall
// times.
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
			tl := &timeline{}
			h := startHub(b, timed{Transport: e.hub, hub: true, tl: tl}, fc)
			buses := make([]federation.Transport, n)
			var stops []context.CancelFunc
			for i := range n {
				buses[i] = e.gatewayBus(i)
				p := gatewayOver(b, i, timed{Transport: e.gatewayBus(i), tl: tl}, &pullTrainer{target: target(i, dim), samples: 10})
				stops = append(stops, runParticipant(b, p))
			}
			last := h.next(b) // warm-up: connections, consumers, caches
			cpu0, began := cpuTime(b), time.Now()
			b.ResetTimer()
			var rounds, periods []time.Duration
			bytes := 0
			for prev := began; len(rounds) < b.N; {
				r := h.next(b)
				last = r
				if r.Outcome != "aggregated" || len(r.Used) != n {
					b.Fatalf("round %+v", r)
				}
				rounds = append(rounds, r.Duration)
				periods = append(periods, time.Since(prev))
				prev = prev.Add(periods[len(periods)-1])
				bytes += r.Bytes
			}
			b.StopTimer()
			period := time.Since(began) / time.Duration(b.N)
			cpu := (cpuTime(b) - cpu0) / time.Duration(b.N)
			perRound := meanDuration(rounds)
			updateBytes := bytes / b.N / n
			// The floors, with the hub and the gateways stopped.
			h.stop()
			for _, stop := range stops {
				stop()
			}
			model, err := e.hub.GetModel(context.Background(), fedName, last.Model)
			if err != nil {
				b.Fatal(err)
			}
			const reps = 30
			bulk, _ := bulkFloor(b, e.hub, buses, model, updateBytes, reps)
			movePeriods, moveCPU := roundFloor(b, e.hub, buses, model, updateBytes, reps)
			checks := checksCPU(b, len(model), updateBytes, n, reps)
			movePeriod := meanDuration(movePeriods)
			b.ReportMetric(float64(perRound)/1e6, "round_ms")
			b.ReportMetric(float64(movePeriod)/1e6, "move_ms")
			// The goal's ratio: how often a round completes against how often the same
			// bytes move, each with what happens between two (the receipts, the deletions).
			b.ReportMetric(float64(period)/float64(movePeriod), "round/move")
			// Medians too: one slow round or transfer (a GC cycle, the file store's flush)
			// moves a mean of 30 by several percent on a machine this busy.
			b.ReportMetric(float64(medianDuration(periods))/float64(medianDuration(movePeriods)), "round/move_p50")
			b.ReportMetric(float64(perRound)/float64(meanDuration(bulk)), "round/bulk")
			b.ReportMetric(float64(cpu)/1e6, "cpu_ms/round") // hub, gateways and server together, on a shared machine
			b.ReportMetric(float64(moveCPU)/1e6, "move_cpu_ms")
			// The round's signatures and hashes alone, on top of the floor: how far below
			// round/move the checks leave no room to go when the machine is CPU-bound.
			b.ReportMetric(float64(checks)/1e6, "checks_cpu_ms")
			b.ReportMetric(float64(moveCPU+checks)/float64(moveCPU), "(move+checks)/move_cpu")
			b.ReportMetric(float64(bytes/b.N), "update_bytes/round")
			b.ReportMetric(float64(len(model)*(n+1)+bytes/b.N), "bytes/round") // the hub stores the model, n gateways read it
			if kind != "secagg" {
				b.Logf("mean time from a round's start (first, last over the parties):%s", tl.breakdown(1, b.N))
			}
			b.Logf("%s: a round every %v, the same bytes moved every %v (%.2f×); %d update bytes per gateway (%.3f× float32)", kind, period, movePeriod,
				float64(period)/float64(movePeriod), updateBytes, float64(updateBytes)/float64(compress.RawBytes(dim)))
		})
	}
}

// checksCPU returns the CPU time (mean of reps) of a round's cryptographic checks alone,
// with no transport and no other protocol work: each of n gateways hashes the model
// (modelBytes) and verifies the hub's signature, then hashes its update (updateBytes) and
// signs it; the hub hashes and verifies the n updates, and hashes the new model once (for
// its signature and its content address) and signs it. SHA-256 and ed25519, as the
// protocol uses them.
func checksCPU(b *testing.B, modelBytes, updateBytes, n, reps int) time.Duration {
	model, update := make([]byte, modelBytes), make([]byte, updateBytes)
	key := hubKey()
	pub := key.Public().(ed25519.PublicKey)
	sig := ed25519.Sign(key, []byte("signed"))
	verify := func(msg []byte) {
		d := sha256.Sum256(msg)
		_ = ed25519.Verify(pub, d[:], sig) // its cost is measured, not its outcome
	}
	sign := func(msg []byte) {
		d := sha256.Sum256(msg)
		ed25519.Sign(key, d[:])
	}
	cpu := cpuTime(b)
	for range reps {
		for range n {
			verify(model)
			sign(update)
		}
		for range n {
			verify(update)
		}
		sign(model)
	}
	return (cpuTime(b) - cpu) / time.Duration(reps)
}

// bulkFloor moves a round's bulk bytes reps times with the same transport calls and no
// protocol work: the hub stores a model of the same size, each gateway downloads it and
// uploads an update of updateBytes, and the hub reads the ten uploads. It returns the
// time of each repetition and their mean CPU time. It leaves out the round's small
// transport calls (its state, which tells the gateways the model's hash, the release
// record, the version, the receipts and the deletions): roundFloor has them.
func bulkFloor(b *testing.B, hub federation.Transport, buses []federation.Transport, model []byte, updateBytes, reps int) ([]time.Duration, time.Duration) {
	payload := make([]byte, updateBytes)
	var moves []time.Duration
	cpu := cpuTime(b)
	for rep := range reps {
		round := uint64(1_000_000 + rep)
		start := time.Now()
		hash, err := putModel(context.Background(), hub, freshModel(model, rep))
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for i, bus := range buses {
			wg.Go(func() {
				if _, err := bus.GetModel(context.Background(), fedName, hash); err != nil {
					b.Error(err)
				}
				if err := bus.PublishUpdate(context.Background(), fedName, round, gwName(i), payload); err != nil {
					b.Error(err)
				}
			})
		}
		readUpdates(b, hub, round, len(buses))
		wg.Wait()
		moves = append(moves, time.Since(start))
	}
	return moves, (cpuTime(b) - cpu) / time.Duration(reps)
}

// putModel stores a floor's model under its SHA-256, which it returns: the floors hash the
// model for its name in the object store, as the hub does once for its signature and name.
func putModel(ctx context.Context, hub federation.Transport, model []byte) (string, error) {
	hash := federation.HashHex(model)
	return hash, hub.PutModel(ctx, fedName, hash, model)
}

// roundFloor moves all of a round's bytes reps times, with every transport call the round
// makes and no protocol work, timed as the hub times a round. Each gateway watches the
// round state; on a new one it downloads the model the state names and uploads an update
// of updateBytes. The hub reads the round's updates, stores the next model, its release
// record and its version, and puts the next round's state. Then, as the hub does after a
// round, it puts the receipts and deletes the round's updates and the
// previous model. It returns the time of each repetition, from one to the next as a
// round's period, and their mean CPU time. The state, the release record and the receipts have the sizes of
// the last round's, which hub has stored; the gateways must be stopped.
func roundFloor(b *testing.B, hub federation.Transport, buses []federation.Transport, model []byte, updateBytes, reps int) (periods []time.Duration, cpu time.Duration) {
	ctx := context.Background()
	check := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	last, err := hub.GetRound(ctx, fedName)
	check(err)
	stateSize := len(last)
	rel, err := hub.GetBlob(ctx, fedName, "release")
	check(err)
	release := make([]byte, len(rel))
	receipts := map[string][]byte{}
	for i := range buses {
		r, err := hub.GetReceipt(ctx, fedName, gwName(i))
		check(err)
		receipts[gwName(i)] = make([]byte, len(r))
	}
	// A state is "floor ROUND HASH", padded to the size of the hub's.
	state := func(round uint64, hash string) []byte {
		s := []byte(fmt.Sprintf("floor %d %s ", round, hash))
		return append(s, make([]byte, max(0, stateSize-len(s)))...)
	}
	payload := make([]byte, updateBytes)
	watching, stop := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	for i, bus := range buses {
		watchers.Go(func() {
			_ = bus.WatchRound(watching, fedName, func(st []byte) {
				var round uint64
				var hash string
				if _, err := fmt.Sscanf(string(st), "floor %d %s ", &round, &hash); err != nil {
					return // the hub's own last state
				}
				if _, err := bus.GetModel(ctx, fedName, hash); err != nil {
					b.Error(err)
				}
				if err := bus.PublishUpdate(ctx, fedName, round, gwName(i), payload); err != nil {
					b.Error(err)
				}
			})
		})
	}
	defer func() { stop(); watchers.Wait() }()
	const first = 2_000_000 // after bulkFloor's rounds, whose updates are still stored
	prev, err := putModel(ctx, hub, freshModel(model, -1))
	check(err)
	check(hub.PutRound(ctx, fedName, state(first, prev)))
	cpu0 := cpuTime(b)
	for rep := range reps {
		round := uint64(first + rep)
		start := time.Now()
		readUpdates(b, hub, round, len(buses))
		hash, err := putModel(ctx, hub, freshModel(model, rep))
		check(err)
		check(hub.PutBlob(ctx, fedName, "floor", release))
		check(hub.PutVersion(ctx, fedName, fmt.Sprintf("r%d", round), hash))
		check(hub.PutRound(ctx, fedName, state(round+1, hash)))
		check(hub.PutReceipts(ctx, fedName, receipts))
		check(hub.DeleteModel(ctx, fedName, prev))
		check(hub.DeleteUpdates(ctx, fedName, round))
		prev = hash
		periods = append(periods, time.Since(start))
	}
	return periods, (cpuTime(b) - cpu0) / time.Duration(reps)
}

// freshModel is model with its first bytes changed, so that it was never stored before.
func freshModel(model []byte, rep int) []byte {
	fresh := slices.Clone(model)
	fresh[0], fresh[1], fresh[2] = byte(rep), byte(rep>>8), 0xff
	return fresh
}

// readUpdates reads updates of round until it has n.
func readUpdates(b *testing.B, hub federation.Transport, round uint64, n int) {
	got := 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := hub.Updates(ctx, fedName, round, func(federation.UpdateMessage) {
		if got++; got == n {
			cancel()
		}
	}); err != nil {
		b.Fatal(err)
	}
}

func meanDuration(ds []time.Duration) time.Duration {
	var s time.Duration
	for _, d := range ds {
		s += d
	}
	return s / time.Duration(len(ds))
}

func medianDuration(ds []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}

// cpuTime is the CPU time the process has used so far (user and system).
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timeline records when the transport calls of hub and gateways start and end, to break a
// round's time down: the mean offset of each call from the round's start (the end of the
// previous round's state write), first and last over the parties.
type timeline struct {
	mu     sync.Mutex
	events []stamp
}

type stamp struct {
	at        time.Time
	hub       bool
	what      string
	roundEnds bool
}

func (tl *timeline) add(hub bool, what string) {
	tl.mu.Lock()
	tl.events = append(tl.events, stamp{at: time.Now(), hub: hub, what: what, roundEnds: hub && what == "put round done"})
	tl.mu.Unlock()
}

// timed is a Transport whose calls are recorded in a timeline.
type timed struct {
	federation.Transport
	hub bool
	tl  *timeline
}

func (t timed) span(what string) func() {
	t.tl.add(t.hub, what)
	return func() { t.tl.add(t.hub, what+" done") }
}

func (t timed) GetModel(ctx context.Context, fed, hash string) ([]byte, error) {
	defer t.span("get model")()
	return t.Transport.GetModel(ctx, fed, hash)
}

func (t timed) PutModel(ctx context.Context, fed, hash string, data []byte) error {
	defer t.span("put model")()
	return t.Transport.PutModel(ctx, fed, hash, data)
}

func (t timed) GetRound(ctx context.Context, fed string) ([]byte, error) {
	defer t.span("get round")()
	return t.Transport.GetRound(ctx, fed)
}

func (t timed) PutRound(ctx context.Context, fed string, state []byte) error {
	defer t.span("put round")()
	return t.Transport.PutRound(ctx, fed, state)
}

func (t timed) GetVersion(ctx context.Context, fed, version string) (string, error) {
	defer t.span("get version")()
	return t.Transport.GetVersion(ctx, fed, version)
}

func (t timed) PutVersion(ctx context.Context, fed, version, hash string) error {
	defer t.span("put version")()
	return t.Transport.PutVersion(ctx, fed, version, hash)
}

func (t timed) PutBlob(ctx context.Context, fed, name string, data []byte) error {
	defer t.span("put blob")()
	return t.Transport.PutBlob(ctx, fed, name, data)
}

func (t timed) PutReceipts(ctx context.Context, fed string, receipts map[string][]byte) error {
	defer t.span("put receipts")()
	return t.Transport.PutReceipts(ctx, fed, receipts)
}

func (t timed) PublishUpdate(ctx context.Context, fed string, round uint64, participant string, data []byte) error {
	defer t.span("publish update")()
	return t.Transport.PublishUpdate(ctx, fed, round, participant, data)
}

func (t timed) Updates(ctx context.Context, fed string, round uint64, fn func(federation.UpdateMessage)) error {
	defer t.span("consume updates")()
	stop := context.AfterFunc(ctx, func() { t.tl.add(t.hub, "consume updates cancelled") })
	defer stop()
	return t.Transport.Updates(ctx, fed, round, func(m federation.UpdateMessage) { t.tl.add(t.hub, "update received"); fn(m) })
}

func (t timed) WatchRound(ctx context.Context, fed string, fn func([]byte)) error {
	return t.Transport.WatchRound(ctx, fed, func(b []byte) { t.tl.add(t.hub, "round state received"); fn(b) })
}

// breakdown returns, for rounds skip+1 .. skip+rounds, the mean offset of each recorded
// call from the round's start, first and last over the parties, in the order of the means.
func (tl *timeline) breakdown(skip, rounds int) string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	type span struct{ first, last time.Duration }
	sums := map[string]*span{}
	var cur map[string]*span
	flush := func() {
		for k, s := range cur {
			if sums[k] == nil {
				sums[k] = &span{}
			}
			sums[k].first += s.first
			sums[k].last += s.last
		}
	}
	var start time.Time
	round := -1
	for _, e := range tl.events {
		if e.roundEnds {
			if round >= skip && round < skip+rounds {
				flush()
			}
			round++
			start, cur = e.at, map[string]*span{}
			continue
		}
		if round < 0 {
			continue
		}
		who := "gateway"
		if e.hub {
			who = "hub"
		}
		key, off := who+" "+e.what, e.at.Sub(start)
		if s := cur[key]; s != nil {
			s.last = off
		} else {
			cur[key] = &span{off, off}
		}
	}
	keys := slices.Collect(maps.Keys(sums))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(sums[a].first, sums[b].first) })
	var sb strings.Builder
	n := time.Duration(rounds)
	for _, k := range keys {
		fmt.Fprintf(&sb, "\n  %-34s %8.2f ms %8.2f ms", k, float64(sums[k].first/n)/1e6, float64(sums[k].last/n)/1e6)
	}
	return sb.String()
}

// BenchmarkMessages measures the protocol's per-message work for a model of 100k
// parameters: the hub signing a global model, a gateway verifying it, a gateway signing an
// update (int8, as sent) and the hub verifying it.
func BenchmarkMessages(b *testing.B) {
	const dim = 100_000
	g := federation.GlobalModel{Header: federation.ModelHeader{Federation: fedName, Round: 3,
		Architecture: models.Architecture{Kind: "linear", Version: 1, Inputs: dim, Params: dim}, Created: time.Now().UTC()},
		Params: target(0, dim)}
	model, err := g.SignedBytes(hubKey())
	if err != nil {
		b.Fatal(err)
	}
	payload, err := compress.Encode(compress.Codec{Kind: compress.Int8, Chunk: compress.DefaultChunk}, target(1, dim), rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		b.Fatal(err)
	}
	u := federation.Update{Federation: fedName, Round: 4, BaseRound: 4, Participant: gwName(0), Samples: 10,
		Metrics: map[string]float64{"loss": 0.5}, Payload: payload}
	u.Sign(gatewayKey(0))
	update := u.Marshal()
	for _, c := range []struct {
		name  string
		bytes int
		run   func() error
	}{
		{"sign-model", len(model), func() error { _, err := g.SignedBytes(hubKey()); return err }},
		{"verify-model", len(model), func() error {
			_, err := federation.DecodeModel(model, hubKey().Public().(ed25519.PublicKey))
			return err
		}},
		{"sign-update", len(update), func() error { u.Sign(gatewayKey(0)); _ = u.Marshal(); return nil }},
		{"verify-update", len(update), func() error { _, err := federation.DecodeUpdate(update); return err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(c.bytes))
			for b.Loop() {
				if err := c.run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
