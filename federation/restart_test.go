package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/federation/secagg"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/local"
)

// crashingTransport is a transport on which the hub "dies" at one point of releasing round
// 1: from then on every write blocks until the hub's context ends (the hub is then
// stopped). The points, in the order the hub reaches them:
//   - crashBeforeCommit: round 1's model is stored, its release is not committed;
//   - crashAfterCommit: the release is committed, not yet recorded or versioned;
//   - crashBeforeVersion: the model is recorded in the ledger, not yet named r1;
//   - crashAfterVersion: the model is recorded and named r1, round 2 is not opened.
type crashingTransport struct {
	federation.Transport
	at      string
	version string // the version whose release the hub dies in: r1
	mu      sync.Mutex
	dead    bool
	model   string        // the hash of the last model stored
	crashed chan struct{} // closed at the crash
}

const (
	crashBeforeCommit  = "before the release is committed"
	crashAfterCommit   = "after the release is committed"
	crashBeforeVersion = "between the ledger record and the version"
	crashAfterVersion  = "after the model is versioned"
	// crashBeforeFinished: a final evaluation round's record is made, the state that
	// finishes the federation is not.
	crashBeforeFinished = "before the federation's finished state"
)

func newCrashingTransport(tr federation.Transport, at string) *crashingTransport {
	return &crashingTransport{Transport: tr, at: at, version: "r1", crashed: make(chan struct{})}
}

// write runs a write unless the hub is dead; crash says whether the hub dies at it
// (before it when early, else after it).
func (c *crashingTransport) write(ctx context.Context, crash, early bool, op func() error) error {
	c.mu.Lock()
	dead := c.dead
	c.mu.Unlock()
	if !dead && !(crash && early) {
		if err := op(); err != nil || !crash {
			return err
		}
	}
	c.mu.Lock()
	if !c.dead {
		c.dead = true
		close(c.crashed)
	}
	c.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

func (c *crashingTransport) PutModel(ctx context.Context, fed, hash string, data []byte) error {
	return c.write(ctx, false, false, func() error {
		err := c.Transport.PutModel(ctx, fed, hash, data)
		c.mu.Lock()
		c.model = hash
		if err != nil {
			c.model = ""
		}
		c.mu.Unlock()
		return err
	})
}

func (c *crashingTransport) PutBlob(ctx context.Context, fed, name string, data []byte) error {
	crash := name == "release" && (c.at == crashBeforeCommit || c.at == crashAfterCommit)
	return c.write(ctx, crash, c.at == crashBeforeCommit, func() error { return c.Transport.PutBlob(ctx, fed, name, data) })
}

func (c *crashingTransport) PutVersion(ctx context.Context, fed, version, hash string) error {
	crash := version == c.version && (c.at == crashAfterVersion || c.at == crashBeforeVersion)
	return c.write(ctx, crash, c.at == crashBeforeVersion, func() error { return c.Transport.PutVersion(ctx, fed, version, hash) })
}

func (c *crashingTransport) PutRound(ctx context.Context, fed string, state []byte) error {
	st, err := federation.DecodeRoundState(state)
	crash := err == nil && c.at == crashBeforeFinished && st.Phase == federation.PhaseFinished
	return c.write(ctx, crash, true, func() error { return c.Transport.PutRound(ctx, fed, state) })
}

// crashWhileReleasing runs fc's hub on a crashingTransport that dies at at, with every
// member of fc answering (pullTrainer), until the crash; it returns the stopped hub.
func crashWhileReleasing(t *testing.T, e *env, fc federation.FederationConfig, at string) (*hubRun, *crashingTransport) {
	t.Helper()
	crash := newCrashingTransport(e.hub, at)
	return crashRecording(t, e, nil, fc, crash, nil), crash
}

// crashRecording runs fc's hub on crash with its ledger records going to rec, and gateway
// i training with trainer(i) (nil: every member a pullTrainer), until the crash; it
// returns the stopped hub.
func crashRecording(t *testing.T, e *env, rec ledger.Recorder, fc federation.FederationConfig, crash *crashingTransport, trainer func(i int) federation.Trainer) *hubRun {
	t.Helper()
	if trainer == nil {
		trainer = func(i int) federation.Trainer {
			return &pullTrainer{target: target(i, fc.Architecture.Params), samples: 10}
		}
	}
	h := startHubRecording(t, crash, rec, fc)
	for i := range fc.Members {
		e.gateway(t, i, trainer(i))
	}
	select {
	case <-crash.crashed:
	case <-time.After(60 * time.Second):
		t.Fatalf("the hub did not reach the crash point (%s)", crash.at)
	}
	h.stop()
	return h
}

// TestHubRestartWhileReleasing stops the hub at each point of releasing round 1's model
// (crashingTransport) and restarts it. Before the release is committed, the restarted hub
// aggregates round 1 again from the stream (the privacy spent before the crash stays
// spent, which over-counts safely; nothing was recorded or versioned). Once it is
// committed, the restarted hub completes that release and opens round 2 from it: no second
// model for round 1, no second collection, no second DP spend, and one ledger record.
func TestHubRestartWhileReleasing(t *testing.T) {
	const n, dim = 3, 32
	for _, at := range []string{crashBeforeCommit, crashAfterCommit, crashAfterVersion} {
		for _, noise := range []string{dp.NoiseCentral, dp.NoiseDistributed} {
			name := "plain, central DP"
			if noise == dp.NoiseDistributed {
				name = "secagg, distributed DP"
			}
			t.Run(at+"/"+name, func(t *testing.T) {
				e := newEnv(t, n, false)
				fc := fedConfig(n, dim)
				fc.Rounds = 2
				fc.DP = dp.Config{Enabled: true, ClipNorm: 1, NoiseMultiplier: 2, Noise: noise, EpsilonLimit: 100}
				if noise == dp.NoiseDistributed {
					fc.SecAgg = secagg.Config{Enabled: true}
				}
				h, crash := crashWhileReleasing(t, e, fc, at)
				h.rec.mu.Lock()
				first := len(h.rec.bodies)
				h.rec.mu.Unlock()
				if st := roundState(t, e.hub); st.Round != 1 {
					t.Fatalf("round state after the crash is round %d, want still 1", st.Round)
				}

				h2 := startHub(t, e.hub, fc)
				r := h2.next(t)
				if r.Round != 1 || r.Outcome != "aggregated" || len(r.Used) != n {
					t.Fatalf("restarted hub's round 1: %+v", r)
				}
				collected := h2.counter("millwright_federation_updates_total", "result", "accepted")
				wantFirst, wantSteps := 0, 2
				if at == crashBeforeCommit {
					// Aggregated again: a new model (fresh noise), collected again.
					if r.Model == crash.model || collected == 0 {
						t.Errorf("round 1 after a crash before the commit: model %s (stored before the crash: %s), %v messages collected; want a new aggregation", r.Model, crash.model, collected)
					}
					wantSteps = 3
				} else {
					if r.Model != crash.model || collected != 0 {
						t.Errorf("round 1 after a crash %s: model %s, %v messages collected again; want the committed model %s and none", at, r.Model, collected, crash.model)
					}
					if at == crashAfterVersion {
						wantFirst = 1
					}
				}
				if v, err := e.hub.GetVersion(context.Background(), fedName, "r1"); err != nil || v != r.Model {
					t.Fatalf("version r1 = %s, %v; want %s", v, err, r.Model)
				}
				r2 := h2.next(t)
				if r2.Round != 2 || r2.Outcome != "aggregated" {
					t.Fatalf("round 2: %+v", r2)
				}
				g2, err := federation.FetchModel(context.Background(), e.hub, fedName, r2.Model, hubKey().Public().(ed25519.PublicKey))
				if err != nil {
					t.Fatal(err)
				}
				if g2.Header.Parent != r.Model {
					t.Errorf("round 2 trained from %s, want round 1's released model %s", g2.Header.Parent, r.Model)
				}
				b, err := e.hub.GetBlob(context.Background(), fedName, "privacy")
				if err != nil {
					t.Fatal(err)
				}
				var steps []dp.Step
				if err := json.Unmarshal(b, &steps); err != nil {
					t.Fatal(err)
				}
				if len(steps) != wantSteps {
					t.Errorf("privacy spent in %d steps, want %d", len(steps), wantSteps)
				}
				h2.rec.mu.Lock()
				defer h2.rec.mu.Unlock()
				var after []uint64
				for _, b := range h2.rec.bodies {
					after = append(after, uint64(b.Round))
					if b.Round == 1 && b.OutputHash != r.Model {
						t.Errorf("round 1 recorded with model %s, released %s", b.OutputHash, r.Model)
					}
				}
				want := []uint64{1, 2}
				if wantFirst == 1 {
					want = []uint64{2}
				}
				if first != wantFirst || !slices.Equal(after, want) {
					t.Errorf("ledger records of rounds: %d before the crash, %v after it; want %d and %v", first, after, wantFirst, want)
				}
			})
		}
	}
}

// TestHubRestartBetweenRecordAndVersion stops the hub after it recorded round 1 in the
// ledger (through the real outbox, into a local ledger) and before it named the model r1,
// with the record still waiting in the outbox, then restarts the hub and the outbox as
// after a power cut: the restarted hub finds the record by the id its release committed
// and does not record the round again; the ledger ends with one record per round and the
// outbox refused nothing.
func TestHubRestartBetweenRecordAndVersion(t *testing.T) {
	const n, dim = 3, 32
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Rounds = 2
	dir := t.TempDir()
	lg, signer := hubLedger(t, dir)
	backend := &gatedBackend{Querier: lg, open: make(chan struct{})}
	outbox := func() (*ledger.Outbox, func()) { return runOutbox(t, filepath.Join(dir, "outbox"), signer, backend) }
	o1, stop1 := outbox()
	crash := newCrashingTransport(e.hub, crashBeforeVersion)
	crashRecording(t, e, o1, fc, crash, nil)
	if st := o1.Stats(); st.Pending != 1 {
		t.Fatalf("outbox before the restart: %+v; want round 1's record waiting", st)
	}
	stop1()

	o2, stop2 := outbox()
	defer stop2()
	h := startHubRecording(t, e.hub, o2, fc)
	r1, r2 := h.next(t), h.next(t)
	if r1.Round != 1 || r1.Model != crash.model || r2.Round != 2 || r2.Outcome != "aggregated" {
		t.Fatalf("after the restart: %+v, %+v; want round 1 released with %s, then round 2", r1, r2, crash.model)
	}
	close(backend.open)
	servicetest.WaitFor(t, 10*time.Second, "records anchored", func() bool { return o2.Stats().Pending == 0 })
	recs, err := lg.Query(context.Background(), ledger.Query{Type: ledger.TypeFederatedRound})
	if err != nil {
		t.Fatal(err)
	}
	var rounds []int64
	for _, rec := range recs {
		b, err := rec.DecodeBody()
		if err != nil {
			t.Fatal(err)
		}
		rounds = append(rounds, b.(ledger.FederatedRound).Round)
	}
	if !slices.Equal(rounds, []int64{1, 2}) || o2.Stats().Rejected != 0 {
		t.Errorf("ledger records of rounds %v, %d refused by the ledger; want [1 2] and none", rounds, o2.Stats().Rejected)
	}
}

// TestHubRestartRecordsEvaluationOnce: the hub stops in round 2's release after it
// recorded the round and the evaluation of r1 (the gateways report global_ metrics), before
// it named r2; the restarted hub finds both records by the ids the release committed and
// records neither again. The ledger ends with one record per round and one evaluation per
// evaluated model, and the outbox refused nothing.
func TestHubRestartRecordsEvaluationOnce(t *testing.T) {
	const n, dim = 3, 32
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Rounds = 3
	dir := t.TempDir()
	lg, signer := hubLedger(t, dir)
	outbox := func() (*ledger.Outbox, func()) { return runOutbox(t, filepath.Join(dir, "outbox"), signer, lg) }
	o1, stop1 := outbox()
	crash := newCrashingTransport(e.hub, crashBeforeVersion)
	crash.version = "r2"
	crashRecording(t, e, o1, fc, crash, func(i int) federation.Trainer {
		return &pullTrainer{target: target(i, dim), samples: 10, metrics: func(uint64) map[string]float64 {
			return map[string]float64{"false_alarm_rate": 0.2, "global_false_alarm_rate": 0.1}
		}}
	})
	stop1()

	o2, stop2 := outbox()
	defer stop2()
	h2 := startHubRecording(t, e.hub, o2, fc)
	for r := h2.next(t); r.Round < 3; r = h2.next(t) {
	}
	servicetest.WaitFor(t, 10*time.Second, "records anchored", func() bool { return o2.Stats().Pending == 0 })
	count := func(typ ledger.Type) []string {
		recs, err := lg.Query(context.Background(), ledger.Query{Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		var about []string
		for _, rec := range recs {
			b, err := rec.DecodeBody()
			if err != nil {
				t.Fatal(err)
			}
			about = append(about, b.(ledger.Subject).About().Version)
		}
		return about
	}
	if rounds, evals := count(ledger.TypeFederatedRound), count(ledger.TypeEvaluation); !slices.Equal(rounds, []string{"r1", "r2", "r3"}) ||
		!slices.Equal(evals, []string{"r1", "r2"}) || o2.Stats().Rejected != 0 {
		t.Errorf("records of rounds %v and evaluations of %v, %d refused; want r1-r3, r1-r2 and none", rounds, evals, o2.Stats().Rejected)
	}
}

// TestHubRestartRecordsFinalEvaluationOnce stops the hub in the final evaluation round
// after its record and before the state that finishes the federation: the restarted hub
// collects the evaluations again from the stream and does not record them twice.
func TestHubRestartRecordsFinalEvaluationOnce(t *testing.T) {
	const n, dim = 3, 32
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Rounds, fc.FinalEvaluation = 1, true
	dir := t.TempDir()
	lg, signer := hubLedger(t, dir)
	outbox := func() (*ledger.Outbox, func()) { return runOutbox(t, filepath.Join(dir, "outbox"), signer, lg) }
	o1, stop1 := outbox()
	judged := make(chan federation.Task, n)
	crashRecording(t, e, o1, fc, newCrashingTransport(e.hub, crashBeforeFinished), func(i int) federation.Trainer {
		return &evalTrainer{pullTrainer: &pullTrainer{target: target(i, dim), samples: 10}, far: 0.1, samples: 10, judged: judged}
	})
	stop1()
	if st := roundState(t, e.hub); st.Phase != federation.PhaseEvaluate {
		t.Fatalf("after the crash the state is %+v; want the final evaluation still open", st)
	}

	o2, stop2 := outbox()
	defer stop2()
	h2 := startHubRecording(t, e.hub, o2, fc)
	if r := h2.next(t); r.Outcome != "evaluated" || len(r.Used) != n {
		t.Fatalf("the restarted hub's round %+v; want the final evaluation with every gateway's", r)
	}
	if len(judged) != n {
		t.Errorf("the gateways judged the model %d times; want %d: the restarted hub reads what they sent", len(judged), n)
	}
	servicetest.WaitFor(t, 10*time.Second, "records anchored", func() bool { return o2.Stats().Pending == 0 })
	recs, err := lg.Query(context.Background(), ledger.Query{Type: ledger.TypeEvaluation})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || o2.Stats().Rejected != 0 {
		t.Errorf("%d evaluation records, %d refused; want one, of r1", len(recs), o2.Stats().Rejected)
	}
	if st := roundState(t, e.hub); st.Phase != federation.PhaseFinished {
		t.Errorf("after the restart the state is %+v; want finished", st)
	}
}

// hubLedger opens a local ledger in dir/ledger and the hub's signer for it.
func hubLedger(t *testing.T, dir string) (*local.Ledger, *ledger.Signer) {
	t.Helper()
	lg, err := local.Open(filepath.Join(dir, "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lg.Close() })
	signer, err := ledger.NewSigner(hubKey(), "hub", "oem")
	if err != nil {
		t.Fatal(err)
	}
	return lg, signer
}

// runOutbox opens the hub's ledger outbox in dir in front of backend and runs it, as after
// a start; the returned function stops it, as a power cut would (what is queued stays).
func runOutbox(t *testing.T, dir string, signer *ledger.Signer, backend ledger.Backend) (*ledger.Outbox, func()) {
	t.Helper()
	o, err := ledger.Open(ledger.Config{Dir: dir, Site: "oem-hub", RetryInitial: time.Millisecond, RetryMax: 10 * time.Millisecond}, signer, backend)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	return o, func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		_ = o.Close()
	}
}

// gatedBackend holds every record back (a transient error) until open is closed.
type gatedBackend struct {
	ledger.Querier
	open chan struct{}
}

func (g *gatedBackend) Anchor(ctx context.Context, rec ledger.Record) error {
	select {
	case <-g.open:
		return g.Querier.Anchor(ctx, rec)
	default:
		return errors.New("ledger not reachable yet")
	}
}

// TestHubRestartStepsOptimizerOnce: with FedAdam, whose server optimizer carries state
// from round to round, a hub stopped before round 1's release is committed aggregates the
// round again from the optimizer's state before it, and produces the model it had stored
// (up to the summation order); once committed, the restarted hub releases that model.
// An optimizer state saved before the commit would step Adam twice and move the model.
func TestHubRestartStepsOptimizerOnce(t *testing.T) {
	const n, dim = 3, 32
	for _, c := range []struct {
		at string
		s  aggregate.Strategy
	}{
		{crashBeforeCommit, aggregate.Strategy{Name: aggregate.FedAdam, ServerLR: 0.1}},
		{crashAfterCommit, aggregate.Strategy{Name: aggregate.FedAdam, ServerLR: 0.1}},
		{crashAfterCommit, aggregate.Strategy{Name: aggregate.FedAvg, ServerLR: 0.5, ServerMomentum: 0.9}},
	} {
		at := c.at
		t.Run(c.s.Name+"/"+at, func(t *testing.T) {
			e := newEnv(t, n, false)
			fc := fedConfig(n, dim)
			fc.Rounds = 1
			fc.Strategy = c.s
			_, crash := crashWhileReleasing(t, e, fc, at)
			stored := crash.model
			r := startHub(t, e.hub, fc).next(t)
			if r.Round != 1 || r.Outcome != "aggregated" {
				t.Fatalf("restarted hub's round 1: %+v", r)
			}
			key := hubKey().Public().(ed25519.PublicKey)
			before, err := federation.FetchModel(context.Background(), e.hub, fedName, stored, key)
			if err != nil {
				t.Fatal(err)
			}
			after, err := federation.FetchModel(context.Background(), e.hub, fedName, r.Model, key)
			if err != nil {
				t.Fatal(err)
			}
			if d := dist(before.Params, after.Params); d > 1e-4 {
				t.Errorf("round 1's model moved by %g across the restart; want the same Adam step", d)
			}
			if at == crashAfterCommit && r.Model != stored {
				t.Errorf("released %s, want the committed %s", r.Model, stored)
			}
		})
	}
}

// TestSecAggRestartRecountsRejections: a message the hub rejected before its restart is
// read again when the restarted hub replays the round, and rejected again: once in the
// new process's counters (which start at 0) and once in the round's report, never twice
// in one process.
func TestSecAggRestartRecountsRejections(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	fc := secaggConfig(n, dim)
	h := startHub(t, e.hub, fc)
	ps := e.participants(t, dim)
	adv := waitPhase(t, e.hub, federation.SecAggAdvertise)
	plain := federation.Update{Federation: fedName, Round: 1, BaseRound: 1, Participant: "g0", Kind: federation.KindDelta, Samples: 1, Payload: []byte{0}}
	plain.Sign(gatewayKey(0))
	if err := e.gatewayBus(0).PublishUpdate(context.Background(), fedName, 1, "g0", plain.Marshal()); err != nil {
		t.Fatal(err)
	}
	answer(t, ps, adv)
	share := waitPhase(t, e.hub, federation.SecAggShare)
	const rejected = "millwright_federation_updates_rejected_total"
	if got := h.counter(rejected, "reason", federation.RejectBadPayload); got != 1 {
		t.Fatalf("first hub: %v bad_payload rejections, want 1", got)
	}
	h.stop()
	h = startHub(t, e.hub, fc)
	answer(t, ps, share)
	for _, phase := range []string{federation.SecAggMask, federation.SecAggCheck, federation.SecAggUnmask} {
		answer(t, ps, waitPhase(t, e.hub, phase))
	}
	r := h.next(t)
	if r.Outcome != "aggregated" || len(r.Used) != n {
		t.Fatalf("round: %+v", r)
	}
	if len(r.Rejected) != 1 || r.Rejected[0].Participant != "g0" || r.Rejected[0].Reason != federation.RejectBadPayload {
		t.Errorf("round report's rejections: %+v; want g0's plain update once", r.Rejected)
	}
	if got := h.counter(rejected, "reason", federation.RejectBadPayload); got != 1 {
		t.Errorf("restarted hub: %v bad_payload rejections, want 1", got)
	}
}

// failingUpdates is a transport on which starting an update consumer fails the first fails
// times, as when the server refuses it for a moment.
type failingUpdates struct {
	federation.Transport
	mu    sync.Mutex
	fails int
}

func (f *failingUpdates) Updates(ctx context.Context, fed string, round uint64, fn func(federation.UpdateMessage)) error {
	f.mu.Lock()
	fail := f.fails > 0
	f.fails--
	f.mu.Unlock()
	if fail {
		return errors.New("maximum consumers limit reached")
	}
	return f.Transport.Updates(ctx, fed, round, fn)
}

// TestHubRetriesTheUpdateConsumer: a consumer the transport cannot start is retried; the
// round completes instead of the hub stopping (it stopped before, at round 1001 of a fast
// federation, when the server refused a new consumer).
func TestHubRetriesTheUpdateConsumer(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Rounds = 2
	h := startHub(t, &failingUpdates{Transport: e.hub, fails: 2}, fc)
	for i := range n {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
	}
	for round := uint64(1); round <= 2; round++ {
		if r := h.next(t); r.Round != round || r.Outcome != "aggregated" || len(r.Used) != n {
			t.Fatalf("round %d: %+v", round, r)
		}
	}
}

// TestRestartedReleaseKeepsTheRoundsReport: a hub restarted after committing round 1's
// release reports the round as the hub before it closed it, with the update bytes it
// accepted and the member it rejected, and that member's receipt says rejected, with the
// reason, not missing.
func TestRestartedReleaseKeepsTheRoundsReport(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Quorum, fc.Rounds, fc.RoundTimeout = 2, 1, 2*time.Second
	crash := newCrashingTransport(e.hub, crashAfterCommit)
	h := startHubRecording(t, crash, nil, fc)
	waitRound(t, e.hub, 1)
	bytes := 0
	for i := range 2 {
		b := signedUpdate(t, gatewayKey(i), gwName(i), 1, dim, byte(i+1))
		bytes += len(b)
		e.publish(t, i, 1, b)
	}
	e.publish(t, 2, 1, signedDelta(t, gatewayKey(2), federation.Update{Round: 1, BaseRound: 1, Participant: "g2", Samples: 10}, make([]float32, dim+1), 3))
	select {
	case <-crash.crashed:
	case <-time.After(30 * time.Second):
		t.Fatal("the hub did not commit round 1's release")
	}
	h.stop()

	r := startHub(t, e.hub, fc).next(t)
	if r.Round != 1 || r.Outcome != "aggregated" || !slices.Equal(r.Used, []string{"g0", "g1"}) || r.Bytes != bytes ||
		len(r.Rejected) != 1 || r.Rejected[0].Participant != "g2" || r.Rejected[0].Reason != federation.RejectBadPayload {
		t.Fatalf("round 1 completed after the restart: %s, used %v, %d bytes, rejected %+v; want g0 and g1, %d bytes, g2 rejected for its payload",
			r.Outcome, r.Used, r.Bytes, r.Rejected, bytes)
	}
	if rc := receipt(t, e.hub, "g2", 1); rc.Outcome != federation.ReceiptRejected || rc.Reason != federation.RejectBadPayload {
		t.Fatalf("g2's receipt: %+v; want rejected for its payload", rc)
	}
}
