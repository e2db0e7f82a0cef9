package gateway

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/gateway/api"
	"github.com/millwright-io/millwright/internal/atomicfile"
	"github.com/millwright-io/millwright/internal/backoff"
)

// FederationStatus is the gateway's view of one federation it joined, as GET
// /api/v1/federation shows it.
type FederationStatus struct {
	Name string `json:"name"`
	// Member is the gateway's name in the federation (its NATS user).
	Member string `json:"member"`
	// Hub is the state of the link to the hub for this federation: connecting (dialling
	// the hub's NATS, until the round watch delivered the round state), connected
	// (watching the federation's round state, from the first it delivered), reconnecting
	// (the NATS connection dropped, or the site's leaf node lost its link to the hub; the
	// client or the leaf node relinks, and the watch resumes when it is back), retrying (the watch stopped with an error, such as a federation the hub has
	// not created yet; it is retried with backoff) or stopped.
	Hub string `json:"hub"`
	// Round is the round state the hub published last.
	Round *RoundSeen `json:"round,omitempty"`
	// LastTraining is the gateway's last local training for a round.
	LastTraining *RoundTraining `json:"last_training,omitempty"`
	// LastUpdate is the last update the gateway sent, and what became of it.
	LastUpdate *UpdateSent `json:"last_update,omitempty"`
	// GlobalModel is the last global model the gateway fetched and verified (hash, the
	// hub's signature, federation).
	GlobalModel *GlobalSeen `json:"global_model,omitempty"`
	// Rejections counts the gateway's updates that did not make it into a global model,
	// by reason (see UpdateSent.Outcome); LastRejection is the latest.
	Rejections    map[string]uint64 `json:"rejections"`
	LastRejection *Rejected         `json:"last_rejection,omitempty"`
	// LastError is the last error of the membership (connection, round state, model,
	// training, publishing), kept after the federation recovered.
	LastError *ErrorSeen `json:"last_error,omitempty"`
}

// RoundSeen is a round state as the gateway saw it.
type RoundSeen struct {
	Round       uint64    `json:"round"`
	Phase       string    `json:"phase"`
	Targeted    bool      `json:"targeted"` // the gateway is asked to train in this round
	Targets     int       `json:"targets"`  // gateways asked to train
	Quorum      int       `json:"quorum"`
	GlobalRound uint64    `json:"global_round"` // the round that produced the model to train from
	Global      string    `json:"global"`
	Deadline    time.Time `json:"deadline"`
	SeenAt      time.Time `json:"seen_at"`
}

// RoundTraining is one local training for a round: every machine of the federation
// continued the round's global model on its own history.
type RoundTraining struct {
	Round     uint64           `json:"round"`
	StartedAt time.Time        `json:"started_at"`
	Seconds   float64          `json:"seconds"` // waiting for a running training included
	Samples   int              `json:"samples"` // feature windows trained on, all machines
	Machines  []MachineTrained `json:"machines"`
	Error     string           `json:"error,omitempty"`
}

// MachineTrained is one machine's part of a round's training.
type MachineTrained struct {
	Machine   string `json:"machine"`
	Version   string `json:"version,omitempty"`
	Hash      string `json:"hash,omitempty"`
	Windows   int    `json:"windows,omitempty"`
	Installed bool   `json:"installed"` // it validated at least as well and now scores the machine
	Reason    string `json:"reason,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Outcomes of a sent update.
const (
	OutcomePending   = "pending"   // the round has not closed yet
	OutcomeUsed      = "used"      // the round's global model lists the gateway
	OutcomeExcluded  = "excluded"  // the round's global model does not list it: the hub refused it or it came too late
	OutcomeAbandoned = "abandoned" // the round closed without a model (quorum not met, aggregation failed, or the privacy budget ran out)
	OutcomeUnknown   = "unknown"   // later rounds closed before the gateway saw this one's result, or a final evaluation's receipt did not come
)

// UpdateSent is an update the gateway sent (with secure aggregation, the messages of one
// round together).
type UpdateSent struct {
	Round uint64 `json:"round"`
	Kind  string `json:"kind"` // delta, secagg or evaluation (a final evaluation round's metrics)
	// Samples is the sample count the update was trained on (with secure aggregation,
	// from the gateway's training: the messages themselves do not tell the hub).
	Samples uint64    `json:"samples"`
	Bytes   int       `json:"bytes"`
	SentAt  time.Time `json:"sent_at"`
	Outcome string    `json:"outcome"`
}

// GlobalSeen is a verified global model.
type GlobalSeen struct {
	Round        uint64    `json:"round"`
	Version      string    `json:"version"` // such as pumps@r12
	Hash         string    `json:"hash"`
	Participants []string  `json:"participants"`
	Created      time.Time `json:"created"`
	VerifiedAt   time.Time `json:"verified_at"`
}

// Rejected is an update that did not make it into a global model.
type Rejected struct {
	Round  uint64 `json:"round"`
	Reason string `json:"reason"` // excluded or abandoned
	// HubOutcome, HubReason and Detail are what the hub's receipt for the round says
	// (federation.Receipt), once the gateway has read it: rejected (HubReason: the
	// rejection reason, such as stale or aggregation), missing (the update did not arrive
	// before the round closed) or abandoned (HubReason: quorum, aggregation or the
	// secure-aggregation failure).
	HubOutcome string    `json:"hub_outcome,omitempty"`
	HubReason  string    `json:"hub_reason,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	At         time.Time `json:"at"`
}

// ErrorSeen is an error and where it happened.
type ErrorSeen struct {
	Stage   string    `json:"stage"` // connect, leaf, round_state, model, train, publish, receipt, participant
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// Hub link states.
const (
	hubConnecting = "connecting"
	hubConnected  = "connected"
	hubReconnect  = "reconnecting"
	hubRetrying   = "retrying"
	hubStopped    = "stopped"
)

// fedMetrics are the gateway's per-federation series (label federation), next to the
// participant's own (updates sent, bytes, failed rounds by stage) and the trainer's.
type fedMetrics struct {
	connected   *prometheus.GaugeVec
	round       *prometheus.GaugeVec
	globalRound *prometheus.GaugeVec
	joined      *prometheus.CounterVec
	training    *prometheus.HistogramVec
	rejections  *prometheus.CounterVec // federation, reason
}

func newFedMetrics(reg prometheus.Registerer, feds []string) (*fedMetrics, error) {
	fed := []string{"federation"}
	m := &fedMetrics{
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "millwright_federation_participant_connected",
			Help: "1 while the gateway watches the federation's round state on the hub over a live connection, else 0."}, fed),
		round: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "millwright_federation_participant_round",
			Help: "The round the hub published last."}, fed),
		globalRound: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "millwright_federation_participant_global_round",
			Help: "The round that produced the last global model the gateway verified."}, fed),
		joined: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_federation_participant_rounds_joined_total",
			Help: "Rounds the gateway trained for."}, fed),
		training: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "millwright_federation_participant_training_seconds",
			Help:    "Duration of a round's local training over all the federation's machines, waiting for a running training included.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 12)}, fed),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_federation_participant_rejections_total",
			Help: "Updates of the gateway that no global model used, by reason: excluded (the round's model does not list the gateway) or abandoned (the round closed without a model)."},
			[]string{"federation", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.connected, m.round, m.globalRound, m.joined, m.training, m.rejections} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("federation: register metrics: %w", err)
		}
	}
	for _, f := range feds {
		m.connected.WithLabelValues(f)
		m.joined.WithLabelValues(f)
		m.training.WithLabelValues(f)
		for _, r := range []string{OutcomeExcluded, OutcomeAbandoned} {
			m.rejections.WithLabelValues(f, r)
		}
	}
	return m, nil
}

// fedStatus observes one federation's membership: the transport the participant uses is
// wrapped (observedTransport) to see round states, models and updates; the trainer and
// the runtime report trainings and errors.
type fedStatus struct {
	name, member string
	hubKey       ed25519.PublicKey
	m            *fedMetrics
	// check carries the hash of a global model that closed the round of the pending
	// update to the checker (capacity 1; a newer hash replaces an unread one: the check
	// is about the single pending update, so nothing is lost).
	check chan string
	// receipts carries the round of an update that was not used to the checker, which
	// reads the hub's receipt for it (capacity 1; a newer round replaces an unread one).
	receipts chan uint64

	mu        sync.Mutex
	s         FederationStatus
	watch     string // the round watch's state: hubConnecting, hubConnected, hubRetrying or hubStopped
	linkDown  bool   // the NATS connection is lost (natsbus.ClientConfig.OnLink)
	leafDown  bool   // the site's leaf node lost its link to the hub
	modelHash string // the last model fetched and verified, served again from memory
	model     []byte

	// sentPath keeps the round of the last update sent ("": not kept); written is the
	// round it holds.
	sentPath string
	written  uint64
}

func newFedStatus(name, member string, hubKey ed25519.PublicKey, m *fedMetrics) *fedStatus {
	return &fedStatus{name: name, member: member, hubKey: hubKey, m: m, check: make(chan string, 1), receipts: make(chan uint64, 1), watch: hubConnecting,
		s: FederationStatus{Name: name, Member: member, Hub: hubConnecting, Rejections: map[string]uint64{}}}
}

// snapshot returns a copy of the status.
func (f *fedStatus) snapshot() FederationStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.s
	s.Rejections = make(map[string]uint64, len(f.s.Rejections))
	for k, v := range f.s.Rejections {
		s.Rejections[k] = v
	}
	s.Round, s.LastUpdate, s.LastRejection, s.LastError = clonePtr(s.Round), clonePtr(s.LastUpdate), clonePtr(s.LastRejection), clonePtr(s.LastError)
	if s.GlobalModel = clonePtr(s.GlobalModel); s.GlobalModel != nil {
		s.GlobalModel.Participants = slices.Clone(s.GlobalModel.Participants)
	}
	if s.LastTraining = clonePtr(s.LastTraining); s.LastTraining != nil {
		s.LastTraining.Machines = slices.Clone(s.LastTraining.Machines)
	}
	return s
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

// setHub records the round watch's state.
func (f *fedStatus) setHub(state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watch = state
	f.hubChanged()
}

// link records that the NATS connection is up or lost.
func (f *fedStatus) link(up bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.linkDown = !up
	f.hubChanged()
}

// leafLink records that the site's leaf node is linked to the hub, or lost the link.
func (f *fedStatus) leafLink(up bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leafDown = !up
	f.hubChanged()
}

// hubChanged sets the link state shown from the watch's, the connection's and the leaf
// node's; f.mu is held.
func (f *fedStatus) hubChanged() {
	f.s.Hub = f.watch
	if f.watch == hubConnected && (f.linkDown || f.leafDown) {
		f.s.Hub = hubReconnect
	}
	v := 0.0
	if f.s.Hub == hubConnected {
		v = 1
	}
	f.m.connected.WithLabelValues(f.name).Set(v)
}

// fail records err as the last error of stage.
func (f *fedStatus) fail(stage string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.s.LastError = &ErrorSeen{Stage: stage, Message: err.Error(), At: time.Now().UTC()}
}

// roundState records a round state and, when it closes the round of the pending update,
// settles the update (abandoned) or asks the checker to look at the new global model.
func (f *fedStatus) roundState(b []byte) {
	st, err := federation.DecodeRoundState(b)
	if err != nil {
		f.fail("round_state", err)
		return
	}
	f.m.round.WithLabelValues(f.name).Set(float64(st.Round))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.s.Round = &RoundSeen{Round: st.Round, Phase: st.Phase, Targeted: slices.Contains(st.Targets, f.member),
		Targets: len(st.Targets), Quorum: st.Quorum, GlobalRound: st.GlobalRound, Global: st.Global,
		Deadline: st.Deadline, SeenAt: time.Now().UTC()}
	f.closed()
}

// sentRound is what sentPath holds.
type sentRound struct {
	Round uint64 `json:"round"`
}

// restore reads from path the round of the last update the gateway sent before it
// started, the round not to answer again (0: none), and keeps the round of every update
// sent there. A missing file is a gateway that has sent nothing yet.
func (f *fedStatus) restore(path string) (uint64, error) {
	var r sentRound
	err := os.MkdirAll(filepath.Dir(path), 0o750)
	if err == nil {
		var b []byte
		if b, err = os.ReadFile(path); err == nil {
			if err = json.Unmarshal(b, &r); err != nil {
				err = fmt.Errorf("%s: %w", path, err)
			}
		} else if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sentPath, f.written = path, r.Round
	return r.Round, err
}

// remember keeps the round of the last update sent in sentPath, once per round; it is
// called from the participant's goroutine only.
func (f *fedStatus) remember() {
	f.mu.Lock()
	path, u := f.sentPath, f.s.LastUpdate
	if path == "" || u == nil || u.Round == f.written {
		f.mu.Unlock()
		return
	}
	round := u.Round
	f.mu.Unlock()
	b, _ := json.Marshal(sentRound{Round: round})
	if err := atomicfile.WriteFile(path, b, 0o640, true); err != nil {
		f.fail("publish", fmt.Errorf("keep the round of the update sent: %w", err))
		return
	}
	f.mu.Lock()
	f.written = round
	f.mu.Unlock()
}

// closed settles the pending update when the last round state seen closed its round
// (abandoned), or asks the checker to look at the round's global model; f.mu is held. It
// runs on both orders of events: the state that closes a round can arrive before the
// store's acknowledgement of the update that completed the quorum.
func (f *fedStatus) closed() {
	u, r := f.s.LastUpdate, f.s.Round
	if u == nil || r == nil || u.Outcome != OutcomePending {
		return
	}
	if r.Round == u.Round && r.Phase == federation.PhaseBudgetExhausted {
		// The hub's privacy budget could not pay for the round: it ended without a model,
		// and the federation with it.
		f.settle(OutcomeAbandoned)
		return
	}
	if r.Round == u.Round && r.Phase == federation.PhaseFinished {
		// A final evaluation round closed (plain or masked): it produces no model, so the
		// hub's receipt says whether the gateway's part was used.
		f.askReceipt(u.Round)
		return
	}
	if r.Round <= u.Round {
		return
	}
	switch {
	case r.GlobalRound < u.Round:
		f.settle(OutcomeAbandoned)
	case r.GlobalRound == u.Round:
		select {
		case <-f.check:
		default:
		}
		f.check <- r.Global
	default:
		f.settle(OutcomeUnknown)
	}
}

// settle sets the pending update's outcome and counts a rejection; f.mu is held.
func (f *fedStatus) settle(outcome string) {
	u := f.s.LastUpdate
	u.Outcome = outcome
	if outcome == OutcomeExcluded || outcome == OutcomeAbandoned {
		f.s.Rejections[outcome]++
		f.s.LastRejection = &Rejected{Round: u.Round, Reason: outcome, At: time.Now().UTC()}
		f.m.rejections.WithLabelValues(f.name, outcome).Inc()
		f.askReceipt(u.Round)
	}
}

// askReceipt asks the checker to read round's receipt, replacing an unread request.
func (f *fedStatus) askReceipt(round uint64) {
	select {
	case <-f.receipts:
	default:
	}
	f.receipts <- round
}

// kindEvaluation is UpdateSent.Kind of a final evaluation (federation.KindEvaluation).
const kindEvaluation = "evaluation"

// receiptOutcomes is the outcome of a final evaluation by its receipt's outcome.
var receiptOutcomes = map[string]string{federation.ReceiptUsed: OutcomeUsed, federation.ReceiptRejected: OutcomeExcluded,
	federation.ReceiptMissing: OutcomeExcluded, federation.ReceiptAbandoned: OutcomeAbandoned}

// sent records an update the participant published.
func (f *fedStatus) sent(data []byte) {
	u, err := federation.DecodeUpdate(data)
	if err != nil { // our own bytes: cannot happen unless the format changed
		f.fail("publish", err)
		return
	}
	kind := "delta"
	switch u.Kind {
	case federation.KindSecAgg:
		kind = "secagg"
	case federation.KindEvaluation:
		kind = kindEvaluation
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.s.LastUpdate; l != nil && l.Round == u.Round && l.Kind == kind {
		l.Bytes += len(data) // the next message of a round with secure aggregation
		l.SentAt = time.Now().UTC()
		return
	}
	samples := u.Samples
	if t := f.s.LastTraining; u.Kind == federation.KindSecAgg && t != nil && t.Round == u.Round {
		samples = uint64(t.Samples) // the masked messages carry 1: the hub must not learn it
	}
	f.s.LastUpdate = &UpdateSent{Round: u.Round, Kind: kind, Samples: samples, Bytes: len(data),
		SentAt: time.Now().UTC(), Outcome: OutcomePending}
	f.closed()
}

// cached returns the bytes of the model stored under hash if it is the last one fetched.
func (f *fedStatus) cached(hash string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.modelHash == hash && hash != "" {
		return slices.Clone(f.model)
	}
	return nil
}

// fetched verifies a model the participant (or the checker) fetched, records it and
// settles the pending update it answers. A model that does not verify is not recorded
// (the participant refuses and counts it too).
func (f *fedStatus) fetched(hash string, b []byte) {
	g, err := federation.DecodeModel(b, f.hubKey) // hashes b once, for the signature and Hash
	if err != nil || g.Hash() != hash || g.Header.Federation != f.name {
		return
	}
	f.m.globalRound.WithLabelValues(f.name).Set(float64(g.Header.Round))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.modelHash, f.model = hash, slices.Clone(b)
	f.s.GlobalModel = &GlobalSeen{Round: g.Header.Round, Version: f.name + "@" + g.Header.Version(), Hash: hash,
		Participants: append([]string{}, g.Header.Participants...), Created: g.Header.Created, VerifiedAt: time.Now().UTC()}
	if u := f.s.LastUpdate; u != nil && u.Outcome == OutcomePending && g.Header.Round == u.Round {
		if slices.Contains(g.Header.Participants, f.member) {
			f.settle(OutcomeUsed)
		} else {
			f.settle(OutcomeExcluded)
		}
	}
}

// trained records a round's local training; a failed one (no machine trained) is not a
// round joined.
func (f *fedStatus) trained(t RoundTraining, err error) {
	f.m.training.WithLabelValues(f.name).Observe(t.Seconds)
	if err != nil {
		t.Error = err.Error()
		f.fail("train", err)
	} else {
		f.m.joined.WithLabelValues(f.name).Inc()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.s.LastTraining = &t
}

// runChecker fetches the global models that closed the rounds of the gateway's updates
// (through tr, so the model is verified and kept for the participant's next round) until
// ctx ends: it settles whether the update was used even when the gateway is not asked
// to train in the next round. A download that fails is tried again with backoff while
// the update is pending and no newer model is asked for: in a federation's last round
// nothing else fetches that model.
func (f *fedStatus) runChecker(ctx context.Context, tr federation.Transport) {
	bo := backoff.Backoff{Initial: time.Second, Max: time.Minute}
	var (
		hash  string           // the model to try again
		again <-chan time.Time // when; nil: nothing to try again
	)
	fetch := func(h string) {
		again = nil
		if _, err := tr.GetModel(ctx, f.name, h); err != nil && ctx.Err() == nil {
			f.fail("model", err)
			if f.awaits(h) {
				hash, again = h, time.After(bo.Next())
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case h := <-f.check:
			bo.Reset()
			fetch(h)
		case <-again:
			if f.awaits(hash) {
				fetch(hash)
			}
		case round := <-f.receipts:
			f.readReceipt(ctx, tr, round)
		}
	}
}

// awaits reports whether the pending update still waits for the model stored under hash:
// the last round state closed the update's round with it.
func (f *fedStatus) awaits(hash string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, r := f.s.LastUpdate, f.s.Round
	return u != nil && u.Outcome == OutcomePending && r != nil && r.GlobalRound == u.Round && r.Global == hash
}

// Reading a round's receipt: the hub writes it just after the round state that closes
// the round, so the first reads may still find the previous round's. Each read is bounded
// by the transport's timeout (nats.timeout); one that gets no answer within it is not
// tried again: through a leaf node, a read of the bucket an older hub never made waits
// for that timeout every time, and the checker, which also fetches the global models,
// would wait twenty of them.
const (
	receiptTries = 20
	receiptWait  = 250 * time.Millisecond
)

// readReceipt reads the hub's receipt of round and adds what it says to the last
// rejection, if that is still round's. A hub that writes no receipts (an older one) or a
// receipt that does not come leaves the rejection as it is; an update of round still
// pending (a final evaluation's, which only the receipt settles) is then unknown: its
// round has closed.
func (f *fedStatus) readReceipt(ctx context.Context, tr federation.Transport, round uint64) {
	for range receiptTries {
		b, err := tr.GetReceipt(ctx, f.name, f.member)
		if err == nil {
			r, err := federation.DecodeReceipt(b)
			if err != nil {
				f.fail("receipt", err)
				f.noReceipt(round)
				return
			}
			if r.Round > round || r.Participant != f.member || r.Federation != f.name {
				f.noReceipt(round)
				return
			}
			if r.Round == round {
				f.mu.Lock()
				if u := f.s.LastUpdate; u != nil && u.Round == round && u.Outcome == OutcomePending { // a final evaluation's
					f.settle(receiptOutcomes[r.Outcome])
				}
				if l := f.s.LastRejection; l != nil && l.Round == round {
					l.HubOutcome, l.HubReason, l.Detail = r.Outcome, r.Reason, r.Detail
				}
				f.mu.Unlock()
				return
			}
		} else if !errors.Is(err, federation.ErrNotFound) {
			if ctx.Err() != nil {
				return
			}
			f.fail("receipt", err)
			if errors.Is(err, context.DeadlineExceeded) {
				break // no answer in the transport's time: another try waits as long
			}
			// and try again: a final evaluation's outcome depends on it
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(receiptWait):
		}
	}
	f.noReceipt(round)
}

// noReceipt settles the update of round as unknown if it is still pending: its round
// closed and the hub's receipt, the only word on it, did not come.
func (f *fedStatus) noReceipt(round uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u := f.s.LastUpdate; u != nil && u.Round == round && u.Outcome == OutcomePending {
		f.settle(OutcomeUnknown)
	}
}

// observedTransport is the transport a participant uses, seen by its federation's status.
type observedTransport struct {
	federation.Transport
	st *fedStatus
}

// WatchRound implements federation.Transport. The link shows connected once the watch
// has delivered the round state (a watch starts with the current one), not when it is
// asked for: a watch that cannot reach the hub leaves the state it had.
func (o observedTransport) WatchRound(ctx context.Context, fed string, fn func([]byte)) error {
	watching := false // fn's calls are not concurrent
	err := o.Transport.WatchRound(ctx, fed, func(b []byte) {
		if !watching {
			watching = true
			o.st.setHub(hubConnected)
		}
		o.st.roundState(b)
		fn(b)
	})
	switch {
	case ctx.Err() != nil:
		o.st.setHub(hubStopped)
	case err != nil:
		o.st.setHub(hubRetrying)
		o.st.fail("round_state", err)
	}
	return err
}

// GetModel implements federation.Transport: the last verified model is served from
// memory (the checker usually fetched it before the participant needs it).
func (o observedTransport) GetModel(ctx context.Context, fed, hash string) ([]byte, error) {
	if b := o.st.cached(hash); b != nil {
		return b, nil
	}
	b, err := o.Transport.GetModel(ctx, fed, hash)
	if err != nil {
		if ctx.Err() == nil {
			o.st.fail("model", err)
		}
		return nil, err
	}
	o.st.fetched(hash, b)
	return b, nil
}

// PublishUpdate implements federation.Transport.
func (o observedTransport) PublishUpdate(ctx context.Context, fed string, round uint64, participant string, data []byte) error {
	if err := o.Transport.PublishUpdate(ctx, fed, round, participant, data); err != nil {
		if ctx.Err() == nil {
			o.st.fail("publish", err)
		}
		return err
	}
	o.st.sent(data)
	o.st.remember()
	return nil
}

// Federations returns the state of every federation the gateway joined (empty when the
// federation block is off).
func (fr *federationRuntime) Federations() []FederationStatus {
	if fr == nil {
		return []FederationStatus{}
	}
	out := make([]FederationStatus, 0, len(fr.status))
	for _, s := range fr.status {
		out = append(out, s.snapshot())
	}
	return out
}

// serve adds GET /api/v1/federation to the HTTP API (an empty list when the federation
// block is off).
func (fr *federationRuntime) serve(srv *api.Server) {
	srv.HandleJSON("/api/v1/federation", func() any { return fr.Federations() })
}
