package federation

import (
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/federation/compress"
	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/federation/secagg"
	"github.com/millwright-io/millwright/internal/f32le"
	"github.com/millwright-io/millwright/models"
)

// Task tells a Trainer what to train for.
type Task struct {
	Federation string
	Round      uint64
	// GlobalRound is the round that produced the global model (its version rN).
	GlobalRound  uint64
	Architecture models.Architecture
	// ProximalMu is FedProx's μ: add μ/2·‖w − global‖² to the local loss (0: none).
	ProximalMu float64
}

// TrainResult is a Trainer's output.
type TrainResult struct {
	Params  []float32          // the locally trained parameters, in the global layout
	Samples int                // rows trained on (> 0)
	Metrics map[string]float64 // local metrics (loss, F1, ...), at most 32, names like participant names
}

// Trainer trains the shared model on the gateway's own data. It is called from one
// goroutine at a time and returns ctx's error when ctx ends first. global is a copy of the
// round's global model for the trainer to use: it may train in place and return global
// itself as Params, but it must not keep global once it returns.
type Trainer interface {
	Train(ctx context.Context, task Task, global []float32) (TrainResult, error)
}

// Evaluation is an Evaluator's output: how the global model did on the gateway's own
// held-out data.
type Evaluation struct {
	Samples int                // rows or windows judged on (> 0): the metrics' weight
	Metrics map[string]float64 // named as a Trainer names its own (false_alarm_rate), at most 32
}

// Evaluator is implemented by a Trainer that can also judge a global model without
// training from it, as it judges the model it trains from. A participant whose trainer
// is one answers a federation's final evaluation round (PhaseEvaluate); the others sit it
// out. Evaluate must not keep or modify global.
type Evaluator interface {
	Evaluate(ctx context.Context, task Task, global []float32) (Evaluation, error)
}

// ParticipantConfig configures a gateway's membership in one federation.
type ParticipantConfig struct {
	Federation string
	// Name is the gateway's member name (its NATS user).
	Name string
	// HubKey verifies the global models.
	HubKey ed25519.PublicKey
	// Codecs the gateway supports (default: every kind of package compress).
	Codecs []string
	// Peers are the identity keys of the federation's members by name, from the same
	// trusted source as HubKey. Secure aggregation checks the advertised keys and the
	// survivor-set signatures against them, so a hub cannot stand in for a member or fake
	// the consistency check. For a member not listed the gateway takes the key the hub
	// relays in the round state, which still detects a hub that shows gateways different
	// survivor sets, but not one that also invents members.
	Peers map[string]ed25519.PublicKey
	// Answered is a round the gateway answered before it was restarted (0: none): its
	// states are not answered again (a second update would be trained anew and refused as
	// duplicate_participant). Only that round: a federation made anew answers its rounds.
	Answered uint64
}

// Participant takes part in a federation's rounds for one gateway: it watches the round
// state, trains from each round's global model and sends a signed update.
type Participant struct {
	cfg     ParticipantConfig
	tr      Transport
	key     ed25519.PrivateKey
	trainer Trainer
	log     *slog.Logger
	fb      compress.Feedback
	owed    uint64 // the round of the last update fb encoded, until the next tells whether the hub used it (0: none)
	rnd     *rand.Rand
	noise   *dp.Noise
	m       participantMetrics
	last    uint64       // last round answered
	global  *GlobalModel // the last global model fetched, verified (one is kept: the next round's is new anyway)
	delta   []float32    // the buffer of the last update without secure aggregation
	input   []float32    // the buffer of the trainer's copy of the global model
	msg     []byte       // the buffer of the last message sent (the transport keeps none)
	sa      *saRound
	// watched is the newest round state Run's watcher has received (nil when Run is not
	// running): Answer reads it instead of asking the store again.
	watched atomic.Pointer[RoundState]
}

type participantMetrics struct {
	sent, superseded prometheus.Counter
	failed           *prometheus.CounterVec
	bytes            prometheus.Counter
}

// NewParticipant returns a participant; it does no I/O. log and reg may be nil.
func NewParticipant(cfg ParticipantConfig, tr Transport, key ed25519.PrivateKey, trainer Trainer, log *slog.Logger, reg prometheus.Registerer) (*Participant, error) {
	if err := CheckName(cfg.Federation); err != nil {
		return nil, fmt.Errorf("federation: participant federation: %w", err)
	}
	if err := CheckName(cfg.Name); err != nil {
		return nil, fmt.Errorf("federation: participant name: %w", err)
	}
	if len(cfg.HubKey) != ed25519.PublicKeySize || len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("federation: participant needs the hub's public key and its own ed25519 private key")
	}
	if len(cfg.Codecs) == 0 {
		cfg.Codecs = []string{compress.Int8, compress.TopK, compress.None}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var seed [16]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, err
	}
	noise, err := dp.NewNoise(nil)
	if err != nil {
		return nil, err
	}
	p := &Participant{cfg: cfg, tr: tr, key: key, trainer: trainer, noise: noise,
		log: log.With("component", "federation_participant", "federation", cfg.Federation),
		rnd: rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:]))),
		m: participantMetrics{
			sent:       prometheus.NewCounter(prometheus.CounterOpts{Name: "millwright_federation_participant_updates_sent_total", Help: "Updates sent to the hub."}),
			superseded: prometheus.NewCounter(prometheus.CounterOpts{Name: "millwright_federation_participant_states_superseded_total", Help: "Round states replaced by a newer one before they were handled."}),
			failed:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_federation_participant_rounds_failed_total", Help: "Rounds the gateway could not answer, by stage."}, []string{"stage"}),
			bytes:      prometheus.NewCounter(prometheus.CounterOpts{Name: "millwright_federation_participant_update_bytes_total", Help: "Bytes of updates sent."}),
		}}
	if reg != nil {
		reg.MustRegister(p.m.sent, p.m.superseded, p.m.failed, p.m.bytes)
	}
	return p, nil
}

// Run takes part in rounds until ctx ends (then it returns nil).
func (p *Participant) Run(ctx context.Context) error {
	// The watcher hands over only the newest state (capacity 1, older states replaced and
	// counted): a gateway that trains slowly answers the current round, not a backlog.
	latest := make(chan RoundState, 1)
	done := make(chan error, 1)
	defer p.watched.Store(nil)
	go func() {
		done <- p.tr.WatchRound(ctx, p.cfg.Federation, func(b []byte) {
			st, err := DecodeRoundState(b)
			if err != nil {
				p.log.Warn("round state refused", "err", err)
				return
			}
			p.watched.Store(&st)
			select {
			case <-latest:
				p.m.superseded.Inc()
			default:
			}
			latest <- st
		})
	}()
	for {
		select {
		case <-ctx.Done():
			<-done
			return nil
		case err := <-done:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("federation %s: watch round state: %w", p.cfg.Federation, err)
		case st := <-latest:
			if err := p.Answer(ctx, st); err != nil && ctx.Err() == nil {
				p.log.Warn("round not answered", "round", st.Round, "err", err)
			}
		}
	}
}

// Answer trains for round st and sends the update, if the gateway is a target of an open
// round it has not answered yet, or judges the model of a final evaluation round
// (PhaseEvaluate) and sends its metrics, if its trainer is an Evaluator; otherwise it
// does nothing. It is not safe for concurrent use (Run calls it from one goroutine): the
// participant keeps the last model and its buffers from one call to the next.
func (p *Participant) Answer(ctx context.Context, st RoundState) error {
	if !slices.Contains(st.Targets, p.cfg.Name) || st.Phase != PhaseOpen && st.Phase != PhaseEvaluate ||
		p.cfg.Answered != 0 && st.Round == p.cfg.Answered {
		return nil
	}
	if st.SecAgg != nil {
		return p.answerSecAgg(ctx, st)
	}
	if st.Phase == PhaseEvaluate {
		return p.evaluate(ctx, st)
	}
	if st.Round <= p.last {
		return nil
	}
	// The delta is encoded (copied) at once, so its buffer is reused from round to round.
	delta, res, err := p.train(ctx, st, p.delta)
	if err != nil {
		return err
	}
	p.delta = delta
	u := Update{Federation: p.cfg.Federation, Round: st.Round, BaseRound: st.Round, Participant: p.cfg.Name,
		Samples: uint64(res.Samples), Metrics: res.Metrics}
	// A slow gateway whose round has moved on sends to the current round, if its model is
	// fresh enough for the hub's staleness limit, with a codec that round offers (the hub
	// refuses the others; a hub restarted with new codecs offers them from its next round).
	offer := st.Codecs
	if cur, err := p.current(ctx); err == nil && cur.Round > st.Round && cur.Phase == PhaseOpen && cur.SecAgg == nil &&
		cur.Round-st.Round <= cur.MaxStaleness && slices.Contains(cur.Targets, p.cfg.Name) {
		u.Round, offer = cur.Round, cur.Codecs
	}
	codec, err := compress.Negotiate(offer, p.cfg.Codecs)
	if err != nil {
		p.m.failed.WithLabelValues("codec").Inc()
		return err
	}
	// Error feedback kept what the last update left out on the ground that the hub applied
	// the rest. If it did not (the global model is older than that update's round, which
	// closed without a model, or is its model and does not list this gateway), the update
	// is forgotten, as if the gateway had sat the round out: its delta is trained again
	// from this model. A newer model says nothing about it: the residual is kept.
	if p.owed != 0 {
		if h := p.global.Header; h.Round < p.owed || h.Round == p.owed && !slices.Contains(h.Participants, p.cfg.Name) {
			p.fb.Undo()
		}
		p.owed = 0
	}
	// The delta is encoded, with error feedback, straight into the signed message.
	err = p.send(ctx, &u, compress.Bound(codec, len(delta)), func(b []byte) ([]byte, error) {
		b, err := p.fb.Append(b, codec, delta, p.rnd)
		if err == nil {
			p.owed = u.Round // sent or not, the next round's model says whether it was used
		}
		return b, err
	})
	if err != nil {
		return err
	}
	p.last = max(st.Round, u.Round)
	p.log.Debug("update sent", "round", u.Round, "codec", codec.Kind)
	return nil
}

// evaluate answers a final evaluation round once: it judges the round's global model
// with the trainer's Evaluator and sends the metrics, named GlobalMetricPrefix+name as
// in a training round's update, in an update of KindEvaluation.
func (p *Participant) evaluate(ctx context.Context, st RoundState) error {
	if _, ok := p.trainer.(Evaluator); !ok || st.Round <= p.last {
		return nil
	}
	res, err := p.judge(ctx, st)
	if err != nil {
		return err
	}
	u := Update{Federation: p.cfg.Federation, Round: st.Round, BaseRound: st.Round, Participant: p.cfg.Name,
		Kind: KindEvaluation, Samples: uint64(res.Samples), Metrics: res.Metrics}
	if err := p.send(ctx, &u, 0, func(b []byte) ([]byte, error) { return b, nil }); err != nil {
		return err
	}
	p.last = st.Round
	p.log.Debug("evaluation sent", "round", st.Round)
	return nil
}

// judge judges round st's global model with the trainer's Evaluator, which the caller
// checked it is, and returns its result with the metrics named GlobalMetricPrefix+name,
// as in a training round's update.
func (p *Participant) judge(ctx context.Context, st RoundState) (Evaluation, error) {
	g, err := p.model(ctx, st.Global)
	if err != nil {
		p.m.failed.WithLabelValues("model").Inc()
		return Evaluation{}, err
	}
	task := Task{Federation: p.cfg.Federation, Round: st.Round, GlobalRound: g.Header.Round, Architecture: g.Header.Architecture}
	res, err := p.trainer.(Evaluator).Evaluate(ctx, task, p.trainerInput(g.Params))
	if err == nil && (res.Samples <= 0 || len(res.Metrics) == 0) {
		err = fmt.Errorf("%d samples and %d metrics; expected both > 0", res.Samples, len(res.Metrics))
	}
	if err != nil {
		p.m.failed.WithLabelValues("evaluate").Inc()
		return Evaluation{}, fmt.Errorf("evaluate round %d: %w", st.Round, err)
	}
	metrics := make(map[string]float64, len(res.Metrics))
	for k, v := range res.Metrics {
		metrics[GlobalMetricPrefix+k] = v
	}
	if err := checkMetrics(metrics); err != nil {
		p.m.failed.WithLabelValues("evaluate").Inc()
		return Evaluation{}, fmt.Errorf("evaluate round %d: %w", st.Round, err)
	}
	return Evaluation{Samples: res.Samples, Metrics: metrics}, nil
}

// current returns the newest round state: the one Run's watcher received last (a round
// trip saved on every answer), else the stored one.
func (p *Participant) current(ctx context.Context) (RoundState, error) {
	if st := p.watched.Load(); st != nil {
		return *st, nil
	}
	b, err := p.tr.GetRound(ctx, p.cfg.Federation)
	if err != nil {
		return RoundState{}, err
	}
	return DecodeRoundState(b)
}

// train trains from the round's global model and returns the update (clipped, and noised
// for distributed DP, as the round state says), in into's buffer if it is large enough.
func (p *Participant) train(ctx context.Context, st RoundState, into []float32) ([]float32, TrainResult, error) {
	g, err := p.model(ctx, st.Global)
	if err != nil {
		p.m.failed.WithLabelValues("model").Inc()
		return nil, TrainResult{}, err
	}
	res, err := p.trainer.Train(ctx, Task{Federation: p.cfg.Federation, Round: st.Round, GlobalRound: g.Header.Round, Architecture: g.Header.Architecture, ProximalMu: st.ProximalMu}, p.trainerInput(g.Params))
	if err != nil {
		p.m.failed.WithLabelValues("train").Inc()
		return nil, res, fmt.Errorf("train round %d: %w", st.Round, err)
	}
	if len(res.Params) != len(g.Params) || res.Samples <= 0 {
		p.m.failed.WithLabelValues("train").Inc()
		return nil, res, fmt.Errorf("train round %d: %d parameters and %d samples; expected %d and > 0", st.Round, len(res.Params), res.Samples, len(g.Params))
	}
	if err := checkMetrics(res.Metrics); err != nil { // the hub would drop the update with them
		p.m.failed.WithLabelValues("train").Inc()
		return nil, res, fmt.Errorf("train round %d: %w", st.Round, err)
	}
	delta := into[:0]
	if cap(delta) < len(g.Params) {
		delta = make([]float32, 0, len(g.Params))
	}
	delta = delta[:len(g.Params)]
	for i := range delta {
		delta[i] = res.Params[i] - g.Params[i]
	}
	if i := f32le.NonFinite(delta); i >= 0 {
		p.m.failed.WithLabelValues("train").Inc()
		return nil, res, fmt.Errorf("train round %d: parameter %d is not finite", st.Round, i)
	}
	if st.ClipNorm > 0 {
		dp.Clip(delta, st.ClipNorm) // the gateway clips; the noise is the hub's (central) or below
	}
	if st.Noise > 0 {
		p.noise.Add(delta, st.Noise) // distributed DP: this gateway's share of the noise
	}
	return delta, res, nil
}

// trainerInput returns a copy of global for the trainer, which may train in place, in a
// buffer reused from round to round (a Trainer keeps no global); the cached model the
// delta is taken from stays as it was.
func (p *Participant) trainerInput(global []float32) []float32 {
	p.input = append(p.input[:0], global...)
	return p.input
}

// send signs u with a fresh nonce and its payload, which appendPayload writes (at most
// size bytes; see Update.sealed), and publishes it, retrying transient failures.
func (p *Participant) send(ctx context.Context, u *Update, size int, appendPayload func([]byte) ([]byte, error)) error {
	if _, err := crand.Read(u.Nonce[:]); err != nil {
		return err
	}
	data, err := u.sealed(p.msg, p.key, size, appendPayload)
	if err != nil {
		p.m.failed.WithLabelValues("codec").Inc()
		return err
	}
	p.msg = data // reused by the next message: PublishUpdate keeps none
	for attempt := 0; ; attempt++ {
		err = p.tr.PublishUpdate(ctx, p.cfg.Federation, u.Round, p.cfg.Name, data)
		if err == nil || attempt == 4 || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1) * 500 * time.Millisecond):
		}
	}
	if err != nil {
		p.m.failed.WithLabelValues("publish").Inc()
		return err
	}
	p.m.sent.Inc()
	p.m.bytes.Add(float64(len(data)))
	return nil
}

// saRound is a gateway's state in one round with secure aggregation.
type saRound struct {
	round  uint64
	client *secagg.Client
	input  []float32       // what it masks: SecAggState.maskedInput
	done   map[string]bool // phases answered
}

// answerSecAgg answers the phase of a round with secure aggregation, once per phase.
func (p *Participant) answerSecAgg(ctx context.Context, st RoundState) error {
	sa := st.SecAgg
	id, ok := sa.IDs[p.cfg.Name]
	if !ok {
		return nil
	}
	if p.sa == nil || p.sa.round != st.Round {
		if sa.Phase != SecAggAdvertise {
			return nil // joined too late for this round
		}
		if _, ok := p.trainer.(Evaluator); !ok && st.Phase == PhaseEvaluate {
			return nil // sits the final evaluation out
		}
		p.sa = &saRound{round: st.Round, done: map[string]bool{}}
	}
	r := p.sa
	if r.done[sa.Phase] {
		return nil
	}
	var msg secagg.Message
	var err error
	switch sa.Phase {
	case SecAggAdvertise:
		ids, err := p.identities(sa)
		if err != nil {
			p.m.failed.WithLabelValues("secagg").Inc()
			return err
		}
		if st.Phase == PhaseEvaluate { // only the weight and the metrics are masked
			res, err := p.judge(ctx, st)
			if err != nil {
				return err
			}
			r.input = sa.maskedInput(nil, res.Samples, res.Metrics, p.noise)
		} else {
			delta, res, err := p.train(ctx, st, nil) // kept for the round's phases
			if err != nil {
				return err
			}
			// Weighted inside the masked sum with a sample cap (the hub sees only Σw), and the
			// metrics the hub asked for.
			r.input = sa.maskedInput(delta, res.Samples, res.Metrics, p.noise)
		}
		if r.client, err = secagg.NewClient(sa.Params, id, p.key, ids, nil); err != nil {
			p.m.failed.WithLabelValues("secagg").Inc()
			return err
		}
		msg, err = r.client.Advertise()
		if err != nil {
			return err
		}
	case SecAggShare, SecAggMask, SecAggCheck, SecAggUnmask:
		if r.client == nil {
			return nil
		}
		var in []byte
		switch sa.Phase {
		case SecAggShare:
			in = sa.Roster
		case SecAggMask:
			in = sa.Bundles[p.cfg.Name]
		case SecAggCheck:
			in = sa.Request
		default:
			in = sa.Signatures
		}
		if in == nil {
			return nil // not in this phase's set (the hub counted this gateway out)
		}
		round, m, err := secagg.Unmarshal(in)
		if err != nil || round != st.Round {
			return fmt.Errorf("secagg %s message of round %d: %v", sa.Phase, round, err)
		}
		switch m := m.(type) {
		case *secagg.Roster:
			msg, err = r.client.ShareKeys(m)
		case *secagg.ShareBundle:
			msg, err = r.client.MaskInput(m, r.input)
		case *secagg.UnmaskRequest:
			msg, err = r.client.SignSurvivors(m)
		case *secagg.SurvivorSigs:
			msg, err = r.client.Unmask(m)
		default:
			err = fmt.Errorf("unexpected %T in phase %s", m, sa.Phase)
		}
		if err != nil {
			r.done[sa.Phase] = true // the client answers each phase at most once anyway
			stage := "secagg"
			if errors.Is(err, secagg.ErrInconsistent) {
				stage = "secagg_inconsistent" // the hub showed gateways different survivor sets
			}
			p.m.failed.WithLabelValues(stage).Inc()
			return fmt.Errorf("secagg %s: %w", sa.Phase, err)
		}
	default:
		return fmt.Errorf("secagg phase %q is unknown", sa.Phase)
	}
	// Samples is 1: the count in the clear would tell the hub what secure aggregation hides.
	u := Update{Federation: p.cfg.Federation, Round: st.Round, BaseRound: st.Round, Participant: p.cfg.Name,
		Kind: KindSecAgg, Samples: 1}
	payload := secagg.Marshal(st.Round, msg)
	if err = p.send(ctx, &u, len(payload), func(b []byte) ([]byte, error) { return append(b, payload...), nil }); err != nil {
		return err
	}
	r.done[sa.Phase] = true
	if sa.Phase == SecAggUnmask {
		p.last = st.Round
	}
	return nil
}

// identities returns the round's identity keys by secagg client id: the configured peer
// key of each participant, else the one the hub relays. A relayed key that contradicts a
// configured one, or one for this gateway that is not its own, refuses the round.
func (p *Participant) identities(sa *SecAggState) (secagg.Identities, error) {
	ids := secagg.Identities{Context: p.cfg.Federation, Keys: map[uint32]ed25519.PublicKey{}}
	own := p.key.Public().(ed25519.PublicKey)
	for name, id := range sa.IDs {
		k, configured := p.cfg.Peers[name]
		relayed := sa.Keys[name]
		switch {
		case name == p.cfg.Name && !own.Equal(relayed):
			return ids, fmt.Errorf("secagg: the hub relays key %x for this gateway, not its own", relayed)
		case name == p.cfg.Name:
			k = own
		case configured && relayed != nil && !k.Equal(relayed):
			return ids, fmt.Errorf("secagg: the hub relays key %x for member %s, configured %x", relayed, name, k)
		case !configured:
			k = relayed
		}
		if len(k) != ed25519.PublicKeySize {
			return ids, fmt.Errorf("secagg: no identity key for member %s", name)
		}
		ids.Keys[id] = k
	}
	return ids, nil
}

// model fetches, verifies and keeps a global model (p.global).
func (p *Participant) model(ctx context.Context, hash string) (*GlobalModel, error) {
	if p.global != nil && p.global.Hash() == hash {
		return p.global, nil
	}
	// The kept model's parameters, which nothing else holds, are decoded over, so it is
	// dropped first, whether the new one checks or not.
	var reuse []float32
	if p.global != nil {
		reuse, p.global = p.global.Params, nil
	}
	g, err := fetchModel(ctx, p.tr, p.cfg.Federation, hash, p.cfg.HubKey, reuse)
	if err != nil {
		return nil, err
	}
	p.global = g
	return g, nil
}

// FetchModel downloads the global model stored under hash and checks its hash, its
// signature by hubKey and that it belongs to fed.
func FetchModel(ctx context.Context, tr Transport, fed, hash string, hubKey ed25519.PublicKey) (*GlobalModel, error) {
	return fetchModel(ctx, tr, fed, hash, hubKey, nil)
}

// fetchModel is FetchModel, with the parameters decoded into params's storage when it has
// room for them.
func fetchModel(ctx context.Context, tr Transport, fed, hash string, hubKey ed25519.PublicKey, params []float32) (*GlobalModel, error) {
	b, err := tr.GetModel(ctx, fed, hash)
	if err != nil {
		return nil, fmt.Errorf("get model %s: %w", hash, err)
	}
	g, err := decodeModel(b, hubKey, params) // hashes b once, for the signature and for g.Hash
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", hash, err)
	}
	if got := g.Hash(); got != hash {
		return nil, fmt.Errorf("model %s: content hashes to %s", hash, got)
	}
	if g.Header.Federation != fed {
		return nil, fmt.Errorf("model %s belongs to federation %q, not %q", hash, g.Header.Federation, fed)
	}
	return g, nil
}
