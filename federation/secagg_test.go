package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/federation/secagg"
	"github.com/millwright-io/millwright/internal/metrictest"
)

func secaggConfig(n, dim int) federation.FederationConfig {
	fc := fedConfig(n, dim)
	fc.SecAgg = secagg.Config{Enabled: true}
	fc.Rounds = 1
	return fc
}

// dropoutConfig is secaggConfig for rounds where one of the n gateways drops out: a
// quorum of n−1 and a short deadline.
func dropoutConfig(n, dim int) federation.FederationConfig {
	fc := secaggConfig(n, dim)
	fc.Quorum = n - 1
	fc.RoundTimeout = 2 * time.Second
	return fc
}

// checkMean checks that round 1's model is the initial model plus the mean of the honest
// updates of the gateways in used (pullTrainer: 0.8 × (target − global)).
func checkMean(t *testing.T, tr federation.Transport, dim int, used []string, r federation.RoundReport) {
	t.Helper()
	w := map[string]float64{}
	for _, name := range used {
		w[name] = 1
	}
	checkWeightedMean(t, tr, dim, w, r)
}

// checkWeightedMean checks that round 1's model is the initial model plus the mean of
// the honest updates weighted by w, computed in the clear.
func checkWeightedMean(t *testing.T, tr federation.Transport, dim int, w map[string]float64, r federation.RoundReport) {
	t.Helper()
	ctx := context.Background()
	key := hubKey().Public().(ed25519.PublicKey)
	h0, err := tr.GetVersion(ctx, fedName, "r0")
	if err != nil {
		t.Fatal(err)
	}
	g0, err := federation.FetchModel(ctx, tr, fedName, h0, key)
	if err != nil {
		t.Fatal(err)
	}
	g1, err := federation.FetchModel(ctx, tr, fedName, r.Model, key)
	if err != nil {
		t.Fatal(err)
	}
	worst, total := 0.0, 0.0
	for _, wi := range w {
		total += wi
	}
	for j := range dim {
		mean := 0.0
		for name, wi := range w {
			i := int(name[1] - '0')
			mean += wi * 0.8 * float64(target(i, dim)[j]-g0.Params[j])
		}
		mean /= total
		worst = max(worst, math.Abs(float64(g1.Params[j]-g0.Params[j])-mean))
	}
	if worst > 1e-3 { // fixed point 2^-16 per gateway
		t.Fatalf("unmasked mean off by up to %g", worst)
	}
}

func TestSecAggRound(t *testing.T) {
	const n, dim = 4, 64
	e := newEnv(t, n, false)
	h := startHub(t, e.hub, secaggConfig(n, dim))
	for i := range n {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
	}
	r := h.next(t)
	if r.Outcome != "aggregated" || len(r.Used) != n {
		t.Fatalf("round: %+v", r)
	}
	checkMean(t, e.hub, dim, r.Used, r)
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if len(h.rec.bodies) != 1 || h.rec.bodies[0].Aggregation != "fedavg+secagg" || len(h.rec.bodies[0].InputUpdates) != n {
		t.Fatalf("ledger: %+v", h.rec.bodies)
	}
}

// stateLog is a transport that keeps every round state the hub writes.
type stateLog struct {
	federation.Transport
	mu     sync.Mutex
	states []federation.RoundState
}

func (l *stateLog) PutRound(ctx context.Context, fed string, state []byte) error {
	st, err := federation.DecodeRoundState(state)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.states = append(l.states, st)
	l.mu.Unlock()
	return l.Transport.PutRound(ctx, fed, state)
}

// TestSecAggRoundOpensWithItsState: every round state the hub writes for an open round of
// a federation with secure aggregation carries the secure-aggregation section, from the
// first write on. A state without it would have the gateways train and send plain updates
// the hub refuses (bad_payload), one wasted training per gateway per round.
func TestSecAggRoundOpensWithItsState(t *testing.T) {
	const n, dim, rounds = 3, 16, 3
	e := newEnv(t, n, false)
	fc := secaggConfig(n, dim)
	fc.Rounds = rounds
	log := &stateLog{Transport: e.hub}
	h := startHub(t, log, fc)
	for i := range n {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
	}
	for range rounds {
		if r := h.next(t); r.Outcome != "aggregated" || len(r.Used) != n {
			t.Fatalf("round: %+v", r)
		}
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	opened := map[uint64]bool{}
	for _, st := range log.states {
		if st.Phase != federation.PhaseOpen {
			continue
		}
		if st.SecAgg == nil || len(st.SecAgg.IDs) != len(st.Targets) {
			t.Errorf("round %d written without its secure-aggregation state: %+v", st.Round, st)
		} else if !opened[st.Round] && st.SecAgg.Phase != federation.SecAggAdvertise {
			t.Errorf("round %d first written in phase %q, want %q", st.Round, st.SecAgg.Phase, federation.SecAggAdvertise)
		}
		opened[st.Round] = true
	}
	if len(opened) != rounds {
		t.Errorf("open states of rounds %v, want %d rounds", opened, rounds)
	}
	if got := h.counter("millwright_federation_updates_rejected_total", "reason", federation.RejectBadPayload); got != 0 {
		t.Errorf("%v plain updates rejected, want none", got)
	}
}

// TestSecAggSampleWeighted: with a sample cap, the hub's model moves by the
// sample-weighted mean of the updates (capped at the cap), computed from masked inputs.
func TestSecAggSampleWeighted(t *testing.T) {
	const n, dim = 4, 64
	e := newEnv(t, n, false)
	fc := secaggConfig(n, dim)
	fc.SecAgg.SampleCap = 30
	h := startHub(t, e.hub, fc)
	samples := []int{10, 20, 30, 400}
	w := map[string]float64{}
	for i := range n {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: samples[i]})
		w[gwName(i)] = float64(min(samples[i], 30)) / 30
	}
	r := h.next(t)
	if r.Outcome != "aggregated" || len(r.Used) != n {
		t.Fatalf("round: %+v", r)
	}
	checkWeightedMean(t, e.hub, dim, w, r)
}

// TestSecAggMetrics: the metrics the federation names (secagg.metrics) are summed under the
// mask after the update and its weight; the hub reports each one's weighted mean over the
// gateways that had it within ±range, and the model is still the weighted mean of the
// updates (the weight element sits before the metrics).
func TestSecAggMetrics(t *testing.T) {
	const n, dim = 4, 64
	e := newEnv(t, n, false)
	fc := secaggConfig(n, dim)
	fc.SecAgg.SampleCap = 30
	fc.SecAgg.Metrics = []string{"false_alarm_rate", "loss", "separation"}
	h := startHub(t, e.hub, fc)
	samples := []int{10, 20, 30, 400} // weights 1/3, 2/3, 1, 1
	metrics := []map[string]float64{
		{"false_alarm_rate": 0.1, "loss": 1, "separation": 3},
		{"false_alarm_rate": 0.2, "loss": 2},                    // no separation
		{"false_alarm_rate": 0.3, "loss": 3, "separation": 100}, // beyond ±8: left out
		{"false_alarm_rate": 0.4, "loss": 4, "separation": 5, "extra": 9},
	}
	w := map[string]float64{}
	for i := range n {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: samples[i], metrics: func(uint64) map[string]float64 { return metrics[i] }})
		w[gwName(i)] = float64(min(samples[i], 30)) / 30
	}
	r := h.next(t)
	if r.Outcome != "aggregated" || len(r.Used) != n {
		t.Fatalf("round: %+v", r)
	}
	checkWeightedMean(t, e.hub, dim, w, r)
	want := map[string]float64{
		"false_alarm_rate": (0.1/3 + 0.2*2/3 + 0.3 + 0.4) / 3,
		"loss":             (1.0/3 + 2*2.0/3 + 3 + 4) / 3,
		"separation":       (3.0/3 + 5) / (1.0/3 + 1),
	}
	// Each masked element is rounded to 2^-16: a few of those per mean.
	if len(r.Metrics) != len(want) {
		t.Fatalf("metrics %v; want %v", r.Metrics, want)
	}
	for k, v := range want {
		if got := r.Metrics[k]; math.Abs(got-v) > 1e-3 {
			t.Errorf("metric %s: %v; want %v", k, got, v)
		}
		if got := metrictest.Sum(t, h.reg, "millwright_federation_round_metric", "metric", k); math.Abs(got-v) > 1e-3 {
			t.Errorf("gauge of %s: %v; want %v", k, got, v)
		}
	}
}

// TestSecAggDropoutRecovered: a gateway shares its keys and dies before uploading; the
// round still completes at the deadline and its pairwise masks are removed with the
// survivors' shares, so the result is exactly the survivors' mean.
func TestSecAggDropoutRecovered(t *testing.T) {
	const n, dim = 4, 64
	e := newEnv(t, n, false)
	h := startHub(t, e.hub, dropoutConfig(n, dim))
	for i := range n - 1 {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
	}
	dying := e.participants(t, dim)[n-1]
	for _, phase := range []string{federation.SecAggAdvertise, federation.SecAggShare} {
		st := waitPhase(t, e.hub, phase)
		if err := dying.Answer(context.Background(), st); err != nil {
			t.Fatal(err)
		}
	}
	r := h.next(t)
	if r.Outcome != "aggregated" || !slices.Equal(r.Used, []string{"g0", "g1", "g2"}) {
		t.Fatalf("round with a dropout: %+v", r)
	}
	checkMean(t, e.hub, dim, r.Used, r)
}

func waitPhase(t *testing.T, tr federation.Transport, phase string) federation.RoundState {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if b, err := tr.GetRound(context.Background(), fedName); err == nil {
			if st, err := federation.DecodeRoundState(b); err == nil && st.SecAgg != nil && st.SecAgg.Phase == phase {
				return st
			}
		}
	}
	t.Fatalf("phase %s did not come", phase)
	return federation.RoundState{}
}

// answer hands state st to the participants ps[i] for i in which (all when nil).
func answer(t *testing.T, ps []*federation.Participant, st federation.RoundState, which ...int) {
	t.Helper()
	if which == nil {
		which = make([]int, len(ps))
		for i := range which {
			which[i] = i
		}
	}
	for _, i := range which {
		if err := ps[i].Answer(context.Background(), st); err != nil {
			t.Fatalf("%s in phase %s: %v", gwName(i), st.SecAgg.Phase, err)
		}
	}
}

// waitAccepted waits until hub h has accepted n messages.
func waitAccepted(t *testing.T, h *hubRun, n float64) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); h.counter("millwright_federation_updates_total", "result", "accepted") < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the hub accepted %v messages, want %v", h.counter("millwright_federation_updates_total", "result", "accepted"), n)
		}
	}
}

// TestSecAggHubRestart kills the hub in each phase of a round with secure aggregation (the
// messages of the phase it dies in arriving before, during and after its death) and
// starts another: the round completes with the plain mean, and the gateways, which keep
// their masking state in memory and never restart, resend nothing.
func TestSecAggHubRestart(t *testing.T) {
	const n, dim = 4, 64
	phases := []string{federation.SecAggAdvertise, federation.SecAggShare, federation.SecAggMask, federation.SecAggCheck, federation.SecAggUnmask}
	for _, tc := range []struct {
		name string
		kill string // the phase the first hub dies in
		// before is how many gateways answer that phase before the hub dies; the others
		// answer while no hub runs.
		before int
	}{
		{"during key advertisement", federation.SecAggAdvertise, 2},
		{"after key advertisement", federation.SecAggShare, 0},
		{"during share routing", federation.SecAggShare, 2},
		{"after share routing", federation.SecAggMask, 0},
		{"after masked inputs", federation.SecAggCheck, 0},
		{"during the consistency check", federation.SecAggCheck, 3},
		{"during unmasking", federation.SecAggUnmask, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, n, false)
			fc := secaggConfig(n, dim)
			fc.SecAgg.Metrics = []string{"loss"} // recorded in the round state a restarted hub checks
			h := startHub(t, e.hub, fc)
			ps := e.participants(t, dim)
			for k, phase := range phases {
				st := waitPhase(t, e.hub, phase)
				if phase != tc.kill {
					answer(t, ps, st)
					continue
				}
				answer(t, ps, st, slices.Collect(func(yield func(int) bool) {
					for i := range tc.before {
						yield(i)
					}
				})...)
				waitAccepted(t, h, float64(n*k+tc.before))
				h.stop()
				for i := tc.before; i < n; i++ {
					answer(t, ps, st, i)
				}
				h = startHub(t, e.hub, fc)
			}
			r := h.next(t)
			if r.Round != 1 || r.Outcome != "aggregated" || len(r.Used) != n {
				t.Fatalf("round after the restart: %+v", r)
			}
			checkMean(t, e.hub, dim, r.Used, r)
			if loss := r.Metrics["loss"]; math.Abs(loss-0.5) > 1e-3 { // every pullTrainer reports 0.5
				t.Errorf("round metrics after the restart %v; want loss 0.5", r.Metrics)
			}
			// The restarted hub rebuilt every closed phase from the log, accepting each
			// message once: 5 phases × 4 gateways.
			if got := h.counter("millwright_federation_updates_total", "result", "accepted"); got != 5*n {
				t.Errorf("restarted hub accepted %v messages, want %d", got, 5*n)
			}
		})
	}
}

// TestSecAggRestartKeepsSurvivorSet: a gateway counted out at the masking deadline sends
// its masked input late, while the hub is down. The restarted hub does not let it into the
// survivor set it had published (which would make the others reveal both kinds of
// shares of it): the round completes with the three survivors.
func TestSecAggRestartKeepsSurvivorSet(t *testing.T) {
	const n, dim = 4, 64
	e := newEnv(t, n, false)
	fc := dropoutConfig(n, dim)
	h := startHub(t, e.hub, fc)
	ps := e.participants(t, dim)
	answer(t, ps, waitPhase(t, e.hub, federation.SecAggAdvertise))
	answer(t, ps, waitPhase(t, e.hub, federation.SecAggShare))
	mask := waitPhase(t, e.hub, federation.SecAggMask)
	answer(t, ps, mask, 0, 1, 2)
	check := waitPhase(t, e.hub, federation.SecAggCheck) // g3 counted out at the deadline
	h.stop()
	answer(t, ps, mask, 3) // late
	answer(t, ps, check, 0, 1, 2)
	h = startHub(t, e.hub, fc)
	answer(t, ps, waitPhase(t, e.hub, federation.SecAggUnmask), 0, 1, 2)
	r := h.next(t)
	if r.Outcome != "aggregated" || !slices.Equal(r.Used, []string{"g0", "g1", "g2"}) {
		t.Fatalf("round: %+v", r)
	}
	checkMean(t, e.hub, dim, r.Used, r)
	if !slices.ContainsFunc(r.Rejected, func(x federation.Rejection) bool {
		return x.Participant == "g3" && x.Reason == federation.RejectSecAgg
	}) {
		t.Errorf("g3's late masked input was not rejected: %+v", r.Rejected)
	}
}

// roundMessages returns the secagg messages stored for round of the federation.
func roundMessages(t *testing.T, tr federation.Transport, round uint64) map[string][]secagg.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	out := map[string][]secagg.Message{}
	if err := secaggMessages(ctx, t, tr, round, func(from string, m secagg.Message) { out[from] = append(out[from], m) }); err != nil {
		t.Fatal(err)
	}
	return out
}

// secaggMessages calls add with the sender and the message of every secagg message of round
// the transport delivers, until ctx ends (an update that does not decode is an error of t).
func secaggMessages(ctx context.Context, t *testing.T, tr federation.Transport, round uint64, add func(from string, m secagg.Message)) error {
	return tr.Updates(ctx, fedName, round, dataOf(func(b []byte) {
		u, err := federation.DecodeUpdate(b)
		if err != nil {
			t.Error(err)
			return
		}
		if _, m, err := secagg.Unmarshal(u.Payload); err == nil {
			add(u.Participant, m)
		}
	}))
}

// roundLog keeps the secagg messages of a round as the transport delivers them, read from
// before they are sent: the hub deletes a round's messages once the round has closed.
type roundLog struct {
	mu   sync.Mutex
	msgs map[string][]secagg.Message
}

func logRound(t *testing.T, tr federation.Transport, round uint64) *roundLog {
	t.Helper()
	l := &roundLog{msgs: map[string][]secagg.Message{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = secaggMessages(ctx, t, tr, round, func(from string, m secagg.Message) {
			l.mu.Lock()
			l.msgs[from] = append(l.msgs[from], m)
			l.mu.Unlock()
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

// survivorSigs waits until the log holds a survivor-set signature from n gateways and
// returns the last of each.
func (l *roundLog) survivorSigs(t *testing.T, n int) map[string]secagg.SurvivorSig {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		sigs := map[string]secagg.SurvivorSig{}
		l.mu.Lock()
		for name, ms := range l.msgs {
			for _, m := range ms {
				if s, ok := m.(*secagg.SurvivorSig); ok {
					sigs[name] = *s
				}
			}
		}
		l.mu.Unlock()
		if len(sigs) >= n || time.Now().After(deadline) {
			return sigs
		}
	}
}

// TestSecAggSplitSurvivorSets plays a hub that lies to gateways (the test stands in for a
// tampering transport: each gateway's Participant.Answer is handed the state the lying
// hub shows it). g0 and g1 are told that g3 dropped out, g2 and g3 that everyone
// survived, so that the hub could collect both the self-mask and the mask-key shares of
// g3. The consistency check stops it: the real hub counts the signatures over the other
// set and abandons the round with a counted reason, and when the lying hub relays
// signatures anyway (all of them, or only those over each gateway's own set) no gateway
// reveals a single share.
func TestSecAggSplitSurvivorSets(t *testing.T) {
	const n, dim = 4, 64 // t = 3
	e := newEnv(t, n, false)
	fc := secaggConfig(n, dim)
	fc.RoundTimeout = 3 * time.Second
	h := startHub(t, e.hub, fc)
	lg := logRound(t, e.hub, 1) // what the lying hub keeps
	ps := e.participants(t, dim)
	answer(t, ps, waitPhase(t, e.hub, federation.SecAggAdvertise))
	answer(t, ps, waitPhase(t, e.hub, federation.SecAggShare))
	answer(t, ps, waitPhase(t, e.hub, federation.SecAggMask))
	check := waitPhase(t, e.hub, federation.SecAggCheck)
	lie := check
	sa := *check.SecAgg
	sa.Request = secagg.Marshal(1, &secagg.UnmaskRequest{Survivors: []uint32{1, 2, 3}, Dropped: []uint32{4}})
	lie.SecAgg = &sa
	answer(t, ps, lie, 0, 1)
	answer(t, ps, check, 2, 3)

	r := h.next(t)
	if r.Outcome != "abandoned" {
		t.Fatalf("round with split survivor sets: %+v", r)
	}
	if got := h.counter("millwright_federation_secagg_failures_total", "reason", federation.SecAggFailInconsistent); got != 1 {
		t.Errorf("secagg failures (inconsistent_survivors) = %v, want 1", got)
	}
	if got := h.counter("millwright_federation_updates_rejected_total", "reason", federation.RejectSecAggInconsistent); got != 2 {
		t.Errorf("rejections (secagg_inconsistent) = %v, want 2 (g0's and g1's signatures)", got)
	}

	// The lying hub relays the signatures it collected.
	sigs := lg.survivorSigs(t, n)
	if len(sigs) != n {
		t.Fatalf("%d survivor-set signatures in the log, want %d", len(sigs), n)
	}
	relay := func(st federation.RoundState, names ...string) federation.RoundState {
		var out secagg.SurvivorSigs
		for _, name := range names {
			out.Sigs = append(out.Sigs, sigs[name])
		}
		sa := *st.SecAgg
		sa.Phase, sa.Signatures = federation.SecAggUnmask, secagg.Marshal(1, &out)
		st.SecAgg = &sa
		return st
	}
	// Each gateway answers the unmasking once, so the two relaying strategies are tried on
	// two gateways of each view: every signature (g0, g2), and only the signatures over
	// the gateway's own set (g1, g3: two, below t).
	all := []string{"g0", "g1", "g2", "g3"}
	for i, st := range []federation.RoundState{relay(lie, all...), relay(lie, "g0", "g1"), relay(check, all...), relay(check, "g2", "g3")} {
		err := ps[i].Answer(context.Background(), st)
		if !errors.Is(err, secagg.ErrInconsistent) {
			t.Errorf("%s: %v, want a refusal wrapping secagg.ErrInconsistent", gwName(i), err)
		}
	}
	for name, ms := range roundMessages(t, e.hub, 1) {
		for _, m := range ms {
			if _, ok := m.(*secagg.UnmaskResponse); ok {
				t.Errorf("%s revealed shares", name)
			}
		}
	}
}

// FuzzDecodeRoundState: gateways decode the round state, with its secure-aggregation
// record, from the transport; the decoder is strict and never panics.
func FuzzDecodeRoundState(f *testing.F) {
	st := federation.RoundState{Version: federation.StateVersion, Federation: fedName, Round: 2, Phase: federation.PhaseOpen,
		Targets: []string{"g0", "g1"}, SecAgg: &federation.SecAggState{IDs: map[string]uint32{"g0": 1, "g1": 2}, Phase: federation.SecAggCheck,
			Request:    secagg.Marshal(2, &secagg.UnmaskRequest{Survivors: []uint32{1, 2}}),
			Keys:       map[string]ed25519.PublicKey{"g0": gatewayKey(0).Public().(ed25519.PublicKey)},
			Signatures: secagg.Marshal(2, &secagg.SurvivorSigs{Sigs: []secagg.SurvivorSig{{From: 1}}})}}
	b, err := json.Marshal(st)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"version":1,"federation":"plant","secagg":{"phase":"unmask","unknown":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := federation.DecodeRoundState(b)
		if err != nil {
			if !errors.Is(err, federation.ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if _, err := json.Marshal(st); err != nil {
			t.Fatalf("decoded state does not encode: %v", err)
		}
	})
}

// TestSecAggPeerKeysPinned: a gateway configured with its peers' identity keys refuses a
// round in which the hub relays another key for one of them (a hub standing in for a
// member), and takes part when the keys agree.
func TestSecAggPeerKeysPinned(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	startHub(t, e.hub, secaggConfig(n, dim))
	st := waitPhase(t, e.hub, federation.SecAggAdvertise)
	peers := map[string]ed25519.PublicKey{}
	for i := range n {
		peers[gwName(i)] = gatewayKey(i).Public().(ed25519.PublicKey)
	}
	for _, tc := range []struct {
		name  string
		relay ed25519.PublicKey // what the hub relays for g1
		want  string            // "" for success
	}{
		{"keys agree", peers["g1"], ""},
		{"hub relays another key for g1", gatewayKey(7).Public().(ed25519.PublicKey), "relays key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := federation.NewParticipant(federation.ParticipantConfig{Federation: fedName, Name: "g0",
				HubKey: hubKey().Public().(ed25519.PublicKey), Peers: peers}, e.gatewayBus(0), gatewayKey(0),
				&pullTrainer{target: target(0, dim), samples: 10}, discard, nil)
			if err != nil {
				t.Fatal(err)
			}
			lie := st
			sa := *st.SecAgg
			sa.Keys = maps.Clone(sa.Keys)
			sa.Keys["g1"] = tc.relay
			lie.SecAgg = &sa
			err = p.Answer(context.Background(), lie)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("answer: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestSecAggRestartAfterMessagesAgedOut: the hub is down, in a round with secure
// aggregation, for longer than the update stream keeps messages (update_retention, the
// stream's max age; shortened here and restored before the restart). The restarted hub
// cannot replay the closed key-advertisement phase: it abandons the round at the
// deadline, counted with reason resume and with no rejection, and the next round, from
// the same global model, aggregates every gateway.
func TestSecAggRestartAfterMessagesAgedOut(t *testing.T) {
	const n, dim = 4, 32
	e := newEnv(t, n, false)
	fc := secaggConfig(n, dim)
	fc.Rounds, fc.RoundTimeout = 2, 2*time.Second
	h := startHub(t, e.hub, fc)
	ps := e.participants(t, dim)
	answer(t, ps, waitPhase(t, e.hub, federation.SecAggAdvertise))
	waitPhase(t, e.hub, federation.SecAggShare) // advertisement closed and recorded
	h.stop()

	ctx := context.Background()
	members := []string{"g0", "g1", "g2", "g3"}
	if err := e.hub.EnsureFederation(ctx, fedName, members, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); len(roundMessages(t, e.hub, 1)) > 0; {
		if time.Now().After(deadline) {
			t.Fatal("round 1's messages did not age out of the update stream")
		}
	}
	if err := e.hub.EnsureFederation(ctx, fedName, members, time.Hour); err != nil {
		t.Fatal(err)
	}

	h = startHub(t, e.hub, fc)
	r := h.next(t)
	if r.Round != 1 || r.Outcome != "abandoned" || len(r.Rejected) != 0 {
		t.Fatalf("round 1 after the restart: %+v; want abandoned without rejections", r)
	}
	if got := h.counter("millwright_federation_secagg_failures_total", "reason", federation.SecAggFailResume); got != 1 {
		t.Errorf("secagg failures (resume) = %v, want 1", got)
	}
	st := waitPhase(t, e.hub, federation.SecAggAdvertise)
	if st.Round != 2 {
		t.Fatalf("the next round is %d, want 2", st.Round)
	}
	answer(t, ps, st)
	for _, phase := range []string{federation.SecAggShare, federation.SecAggMask, federation.SecAggCheck, federation.SecAggUnmask} {
		answer(t, ps, waitPhase(t, e.hub, phase))
	}
	r = h.next(t)
	if r.Round != 2 || r.Outcome != "aggregated" || len(r.Used) != n {
		t.Fatalf("round 2: %+v", r)
	}
	checkMean(t, e.hub, dim, r.Used, r) // from round 0's model: round 1 changed nothing
}

// TestSecAggTurnedOnAcrossARestart: a round opened without secure aggregation, by a hub
// restarted with it, is abandoned (it cannot run as one: the gateways were not told, and
// with distributed DP they would add no noise); the next round opens with its secure-
// aggregation state and the gateways' noise, and completes.
func TestSecAggTurnedOnAcrossARestart(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	plain := fedConfig(n, dim)
	h := startHub(t, e.hub, plain)
	if st := waitRound(t, e.hub, 1); st.SecAgg != nil {
		t.Fatalf("plain round 1 opened with secure aggregation: %+v", st)
	}
	h.stop()
	fc := secaggConfig(n, dim)
	fc.Rounds = 2
	fc.DP = dp.Config{Enabled: true, ClipNorm: 1, NoiseMultiplier: 1, Noise: dp.NoiseDistributed, EpsilonLimit: 100}
	h = startHub(t, e.hub, fc)
	if r := h.next(t); r.Round != 1 || r.Outcome != "abandoned" || r.Reason != federation.SecAggFailResume {
		t.Fatalf("round 1 after turning secure aggregation on: %+v; want abandoned, resume", r)
	}
	if st := roundState(t, e.hub); st.Round != 2 || st.SecAgg == nil || !(st.Noise > 0) {
		t.Fatalf("round 2: %+v; want its secure-aggregation state and the gateways' noise", st)
	}
	for i := range n {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
	}
	if r := h.next(t); r.Round != 2 || r.Outcome != "aggregated" || len(r.Used) != n {
		t.Fatalf("round 2: %+v", r)
	}
}
