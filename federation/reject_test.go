package federation_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/compress"
	"github.com/millwright-io/millwright/internal/servicetest"
)

func signedUpdate(t *testing.T, key ed25519.PrivateKey, participant string, round uint64, dim int, nonce byte) []byte {
	t.Helper()
	return signedUpdateFrom(t, key, participant, round, round, dim, nonce)
}

// signedUpdateFrom is a zero update for round trained from the model of round base.
func signedUpdateFrom(t *testing.T, key ed25519.PrivateKey, participant string, round, base uint64, dim int, nonce byte) []byte {
	t.Helper()
	return signedDelta(t, key, federation.Update{Round: round, BaseRound: base, Participant: participant, Samples: 10}, make([]float32, dim), nonce)
}

// signedDelta is u (its federation fedName) carrying delta with codec none, signed.
func signedDelta(t *testing.T, key ed25519.PrivateKey, u federation.Update, delta []float32, nonce byte) []byte {
	t.Helper()
	c := compress.Codec{Kind: compress.None}
	c.SetDefaults()
	payload, err := compress.Encode(c, delta, nil)
	if err != nil {
		t.Fatal(err)
	}
	u.Federation, u.Payload = fedName, payload
	u.Nonce[0] = nonce
	u.Sign(key)
	return u.Marshal()
}

// publish publishes gateway i's message b for round.
func (e *env) publish(t *testing.T, i int, round uint64, b []byte) {
	t.Helper()
	if err := e.gatewayBus(i).PublishUpdate(context.Background(), fedName, round, gwName(i), b); err != nil {
		t.Fatal(err)
	}
}

// A metric beyond float32's range is finite as a float64, but the hub combines metrics in
// float32, where it would be an infinity that no ledger record or JSON can hold: the
// update is malformed, the round goes on with the others, and the hub keeps running.
// A gateway whose trainer reports one says so itself and sends nothing.
func TestMetricBeyondFloat32Refused(t *testing.T) {
	const n, dim = 2, 8
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Quorum, fc.RoundTimeout = 1, 2*time.Second // the round closes at its deadline with g1's
	h := startHub(t, e.hub, fc)
	waitRound(t, e.hub, 1)
	for i, loss := range []float64{1e39, 0.5} {
		e.publish(t, i, 1, signedDelta(t, gatewayKey(i), federation.Update{Round: 1, BaseRound: 1, Participant: gwName(i), Samples: 10,
			Metrics: map[string]float64{"loss": loss}}, make([]float32, dim), byte(i+1)))
	}
	r := h.next(t)
	if r.Outcome != "aggregated" || !slices.Equal(r.Used, []string{"g1"}) || len(r.Rejected) != 1 || r.Rejected[0].Reason != federation.RejectMalformed ||
		!strings.Contains(r.Rejected[0].Detail, `metric "loss" is 1e+39`) || r.Metrics["loss"] != 0.5 {
		t.Fatalf("round 1: %s, used %v, rejected %+v, metrics %v; want g1's update alone and g0's refused as malformed", r.Outcome, r.Used, r.Rejected, r.Metrics)
	}
	waitRound(t, e.hub, 2) // the hub goes on

	p, err := federation.NewParticipant(federation.ParticipantConfig{Federation: fedName, Name: "g0", HubKey: hubKey().Public().(ed25519.PublicKey)},
		e.gatewayBus(0), gatewayKey(0), &pullTrainer{target: target(0, dim), samples: 10, metrics: func(uint64) map[string]float64 {
			return map[string]float64{"loss": math.Inf(1)}
		}}, discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Answer(context.Background(), roundState(t, e.hub)); err == nil || !strings.Contains(err.Error(), `metric "loss" is +Inf`) {
		t.Fatalf("a trainer's infinite metric: Answer = %v; want an error naming it", err)
	}
}

// A message the transport delivers twice (JetStream redelivers; a consumer started again
// reads the round from its start) is handled once: a rejected one is one rejection, as an
// accepted one is one update.
func TestRedeliveredRejectionCountedOnce(t *testing.T) {
	const n, dim = 3, 8
	e := newEnv(t, n, false)
	h := startHub(t, twice{e.hub}, fedConfig(n, dim))
	waitRound(t, e.hub, 1)
	e.publish(t, 0, 1, signedDelta(t, gatewayKey(0), federation.Update{Round: 1, BaseRound: 1, Participant: "g0", Samples: 10}, make([]float32, dim+1), 1))
	e.publish(t, 1, 1, []byte("not an update"))
	for i := range n {
		e.publish(t, i, 1, signedUpdate(t, gatewayKey(i), gwName(i), 1, dim, byte(10+i)))
	}
	r := h.next(t)
	if r.Outcome != "aggregated" || len(r.Used) != n {
		t.Fatalf("round 1: %+v", r)
	}
	bad, malformed := h.counter("millwright_federation_updates_rejected_total", "reason", federation.RejectBadPayload),
		h.counter("millwright_federation_updates_rejected_total", "reason", federation.RejectMalformed)
	if len(r.Rejected) != 2 || bad != 1 || malformed != 1 {
		t.Fatalf("two bad messages, each delivered twice: rejections %+v, counters bad_payload %v, malformed %v; want one each", r.Rejected, bad, malformed)
	}
	// Every message's second delivery is a redelivery, but the last update's: the round
	// closed with the first.
	if got := h.counter("millwright_federation_updates_total", "result", "redelivered"); got != n+1 {
		t.Fatalf("%v redeliveries counted; want %d", got, n+1)
	}
}

// twice delivers every update message twice, as the Transport contract allows.
type twice struct{ federation.Transport }

func (d twice) Updates(ctx context.Context, fed string, round uint64, fn func(federation.UpdateMessage)) error {
	return d.Transport.Updates(ctx, fed, round, func(m federation.UpdateMessage) { fn(m); fn(m) })
}

// Finite updates whose FedAvg overflows float32 (one member's huge deltas with an
// inflated sample count: FedAvg trusts counts) would make a model no decoder accepts, the
// hub's own after a restart included. The round is abandoned instead, and the next one
// trains from the last good model.
func TestOverflowingRoundAbandoned(t *testing.T) {
	const n, dim = 2, 8
	e := newEnv(t, n, false)
	fc := fedConfig(n, dim)
	fc.Quorum = 2
	h := startHub(t, e.hub, fc)
	var good string
	for round := uint64(1); round <= 2; round++ {
		waitRound(t, e.hub, round)
		for i := range n {
			delta, samples := make([]float32, dim), uint64(1)
			if i == 0 {
				delta, samples = slices.Repeat([]float32{math.MaxFloat32}, dim), 1<<40
			}
			e.publish(t, i, round, signedDelta(t, gatewayKey(i), federation.Update{Round: round, BaseRound: round, Participant: gwName(i), Samples: samples}, delta, byte(i+1)))
		}
		r := h.next(t)
		if round == 1 {
			if r.Outcome != "aggregated" {
				t.Fatalf("round 1: %+v", r)
			}
			good = r.Model
			continue
		}
		if r.Outcome != "abandoned" || r.Reason != federation.RejectAggregate || r.Model != "" {
			t.Fatalf("round 2, whose mean overflows: %s (%s), model %q; want abandoned for aggregation", r.Outcome, r.Reason, r.Model)
		}
	}
	if st := waitRound(t, e.hub, 3); st.Global != good || st.GlobalRound != 1 {
		t.Fatalf("round 3 trains from %s (round %d); want round 1's model %s", st.Global, st.GlobalRound, good)
	}
	if _, err := federation.FetchModel(context.Background(), e.hub, fedName, good, hubKey().Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
}

func waitRound(t *testing.T, tr federation.Transport, round uint64) federation.RoundState {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := tr.GetRound(context.Background(), fedName); err == nil {
			if st, err := federation.DecodeRoundState(b); err == nil && st.Round == round {
				return st
			}
		}
	}
	t.Fatalf("round %d did not open", round)
	return federation.RoundState{}
}

func TestForgedAndReplayedUpdatesRejected(t *testing.T) {
	const n, dim = 3, 16
	e := newEnv(t, n, false)
	h := startHub(t, e.hub, fedConfig(n, dim))
	ctx := context.Background()
	ps := e.participants(t, dim) // driven by hand with Answer
	st := waitRound(t, e.hub, 1)
	for _, p := range ps[:n-1] {
		if err := p.Answer(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	// g0's genuine round-1 update, as an eavesdropper captures it while the round is open
	// (the hub deletes a round's updates once it has closed).
	var old []byte
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		_ = e.hub.Updates(cctx, fedName, 1, dataOf(func(b []byte) {
			if u, err := federation.DecodeUpdate(b); err == nil && u.Participant == "g0" {
				old = b
				cancel()
			}
		}))
	}()
	<-cctx.Done()
	if err := ps[n-1].Answer(ctx, st); err != nil {
		t.Fatal(err)
	}
	if r := h.next(t); r.Outcome != "aggregated" || len(r.Rejected) != 0 {
		t.Fatalf("round 1: %+v", r)
	}

	st = waitRound(t, e.hub, 2)
	pub := func(participant string, b []byte) {
		t.Helper()
		if err := e.hub.PublishUpdate(ctx, fedName, 2, participant, b); err != nil {
			t.Fatal(err)
		}
	}
	tampered, _ := federation.DecodeUpdate(old)
	tampered.Round = 2 // re-bound to round 2 without the key: the signature no longer matches
	attacker := ed25519.NewKeyFromSeed(make([]byte, 32))
	pub("g0", old)                                             // cross-round replay
	pub("g0", tampered.Marshal())                              // tampered binding
	pub("g1", signedUpdate(t, attacker, "g1", 2, dim, 1))      // forged: g1's name, another key
	pub("g2", signedUpdate(t, attacker, "mallory", 2, dim, 2)) // naming another than its sender (a non-member)
	pub("g1", []byte("MWU1 garbage"))                          // malformed
	if err := ps[0].Answer(ctx, st); err != nil {              // the genuine one
		t.Fatal(err)
	}
	var genuine []byte
	cctx, cancel = context.WithCancel(ctx)
	go func() {
		_ = e.hub.Updates(cctx, fedName, 2, dataOf(func(b []byte) {
			if u, err := federation.DecodeUpdate(b); err == nil && u.Participant == "g0" && u.Round == 2 && u.Key.Equal(gatewayKey(0).Public().(ed25519.PublicKey)) {
				genuine = b
				cancel()
			}
		}))
	}()
	<-cctx.Done()
	pub("g0", genuine)                                         // redelivery: harmless
	pub("g0", signedUpdate(t, gatewayKey(0), "g0", 2, dim, 9)) // a second, different update
	for _, p := range ps[1:] {
		if err := p.Answer(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	r := h.next(t)
	if r.Outcome != "aggregated" || !slices.Equal(r.Used, []string{"g0", "g1", "g2"}) {
		t.Fatalf("round 2: %+v", r)
	}
	var reasons []string
	for _, rj := range r.Rejected {
		reasons = append(reasons, rj.Reason)
	}
	want := []string{federation.RejectWrongRound, federation.RejectBadSignature, federation.RejectWrongKey,
		federation.RejectWrongSender, federation.RejectMalformed, federation.RejectDuplicate}
	if !slices.Equal(reasons, want) {
		t.Fatalf("rejections %q, want %q", reasons, want)
	}
	for _, reason := range want {
		if got := h.counter("millwright_federation_updates_rejected_total", "reason", reason); got != 1 {
			t.Errorf("rejected{reason=%q} = %v, want 1", reason, got)
		}
	}
	if got := h.counter("millwright_federation_updates_total", "result", "redelivered"); got != 1 {
		t.Errorf("redelivered = %v, want 1", got)
	}
}

// TestMetricsNameTheFederation: a hub running two federations counts each one's
// rejections under its own name, so an operator sees which federation is being fed bad
// updates (the counters had no federation label and added the two together).
func TestMetricsNameTheFederation(t *testing.T) {
	const dim = 8
	e := newEnv(t, 2, false)
	const other = "plant-b"
	if err := e.hub.EnsureFederation(context.Background(), other, []string{gwName(0), gwName(1)}, time.Hour); err != nil {
		t.Fatal(err)
	}
	fa, fb := fedConfig(2, dim), fedConfig(2, dim)
	fb.Name = other
	h := startHub(t, e.hub, fa, fb)
	waitRound := func(fed string) {
		t.Helper()
		servicetest.WaitFor(t, 10*time.Second, fed+"'s round 1", func() bool {
			b, err := e.hub.GetRound(context.Background(), fed)
			return err == nil && len(b) > 0
		})
	}
	waitRound(fedName)
	waitRound(other)
	if err := e.hub.PublishUpdate(context.Background(), other, 1, gwName(0), []byte("not an update")); err != nil {
		t.Fatal(err)
	}
	servicetest.WaitFor(t, 10*time.Second, "the rejection counted", func() bool {
		return metricValue(h, "millwright_federation_updates_rejected_total", other, federation.RejectMalformed) == 1
	})
	if got := metricValue(h, "millwright_federation_updates_rejected_total", fedName, federation.RejectMalformed); got != 0 {
		t.Fatalf("%s counts %v malformed updates; only %s received one", fedName, got, other)
	}
}

// metricValue is the counter name of federation fed with the second label's value value.
func metricValue(h *hubRun, name, fed, value string) float64 {
	mfs, _ := h.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var f, v bool
			for _, l := range m.GetLabel() {
				f = f || l.GetName() == "federation" && l.GetValue() == fed
				v = v || l.GetName() != "federation" && l.GetValue() == value
			}
			if f && v {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// TestHubReadsAtMostEightMessagesOfAMember: a member that sends message after message in a
// round (here junk, each handled before the next is sent) has its first
// federation.MemberMessages read and rejected, and the rest left unread and counted once
// each, its own valid update at the end included; the other members' updates are read and
// the round aggregates them. Through a transport that delivers every message twice, each
// is counted once, the second delivery as a redelivery.
func TestHubReadsAtMostEightMessagesOfAMember(t *testing.T) {
	const n, dim, junk = 3, 8, federation.MemberMessages + 4
	for _, redeliver := range []bool{false, true} {
		t.Run(fmt.Sprintf("redelivered=%v", redeliver), func(t *testing.T) {
			e := newEnv(t, n, false)
			fc := fedConfig(n, dim)
			fc.Quorum = n - 1
			fc.RoundTimeout = 8 * time.Second // g0's update goes unread: the round closes at its deadline
			var tr federation.Transport = e.hub
			if redeliver {
				tr = twice{e.hub}
			}
			h := startHub(t, tr, fc)
			waitRound(t, e.hub, 1)
			handled := func() float64 {
				return h.counter("millwright_federation_updates_rejected_total", "reason", federation.RejectMalformed) +
					h.counter("millwright_federation_updates_total", "result", "unread")
			}
			send := func(b []byte, want float64) {
				t.Helper()
				e.publish(t, 0, 1, b)
				for deadline := time.Now().Add(10 * time.Second); handled() < want; time.Sleep(5 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("the hub handled %v of g0's messages; want %v", handled(), want)
					}
				}
			}
			for i := range junk {
				send(fmt.Appendf(nil, "junk %d", i), float64(i+1))
			}
			send(signedUpdate(t, gatewayKey(0), "g0", 1, dim, 1), junk+1)
			for i := 1; i < n; i++ {
				e.publish(t, i, 1, signedUpdate(t, gatewayKey(i), gwName(i), 1, dim, byte(i+1)))
			}
			r := h.next(t)
			if r.Outcome != "aggregated" || !slices.Equal(r.Used, []string{"g1", "g2"}) {
				t.Fatalf("round 1: %s, used %v; want g1's and g2's updates", r.Outcome, r.Used)
			}
			malformed := h.counter("millwright_federation_updates_rejected_total", "reason", federation.RejectMalformed)
			unread := h.counter("millwright_federation_updates_total", "result", "unread")
			if malformed != federation.MemberMessages || unread != junk+1-federation.MemberMessages {
				t.Fatalf("g0 sent %d messages: %v rejected as malformed and %v unread; want %d and %d",
					junk+1, malformed, unread, federation.MemberMessages, junk+1-federation.MemberMessages)
			}
			if want := float64(junk + 1 + n - 1); redeliver && h.counter("millwright_federation_updates_total", "result", "redelivered") < want-1 {
				t.Errorf("%v redeliveries counted; want at least %v (every message's second delivery but, maybe, the last one's)",
					h.counter("millwright_federation_updates_total", "result", "redelivered"), want-1)
			}
		})
	}
}

// lostAcks stores every update publish and then reports the calls in lose (1-based) as
// failed, as when JetStream stored the message and its acknowledgement was lost on the
// way back: the participant publishes the same bytes again.
type lostAcks struct {
	federation.Transport
	mu   sync.Mutex
	n    int
	lose map[int]bool
}

func (l *lostAcks) PublishUpdate(ctx context.Context, fed string, round uint64, p string, data []byte) error {
	err := l.Transport.PublishUpdate(ctx, fed, round, p, data)
	l.mu.Lock()
	l.n++
	lose := l.lose[l.n]
	l.mu.Unlock()
	if err == nil && lose {
		return errors.New("nats: timeout (ack lost)")
	}
	return err
}

// TestRetriedPublishesDoNotCountAgainstTheLimit: in a round with secure aggregation (five
// messages a member), g0's acknowledgements are lost four times for its first message
// and twice for its second, so the stream holds eleven of its messages, six of them
// copies. The copies are not counted against federation.MemberMessages: g0's masked input
// is read and the round uses all four members.
func TestRetriedPublishesDoNotCountAgainstTheLimit(t *testing.T) {
	const n, dim = 4, 64
	e := newEnv(t, n, false)
	fc := secaggConfig(n, dim)
	fc.Quorum = n - 1
	fc.RoundTimeout = 10 * time.Second
	h := startHub(t, e.hub, fc)
	tr := &lostAcks{Transport: e.gatewayBus(0), lose: map[int]bool{1: true, 2: true, 3: true, 4: true, 6: true, 7: true}}
	runParticipant(t, gatewayOver(t, 0, tr, &pullTrainer{target: target(0, dim), samples: 10}))
	for i := 1; i < n; i++ {
		e.gateway(t, i, &pullTrainer{target: target(i, dim), samples: 10})
	}
	r := h.next(t)
	unread := h.counter("millwright_federation_updates_total", "result", "unread")
	if r.Outcome != "aggregated" || !slices.Equal(r.Used, []string{"g0", "g1", "g2", "g3"}) || unread != 0 {
		t.Fatalf("round 1: %s, used %v, %v messages unread; want all four members used and nothing unread", r.Outcome, r.Used, unread)
	}
}
