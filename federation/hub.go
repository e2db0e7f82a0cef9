package federation

import (
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/federation/compress"
	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/ledger"
)

// Reasons an update is rejected; the label values of the rejection counter.
const (
	RejectMalformed      = "malformed"
	RejectBadSignature   = "bad_signature"
	RejectWrongFed       = "wrong_federation"
	RejectUnknownMember  = "unknown_member"
	RejectWrongKey       = "wrong_key"
	RejectWrongRound     = "wrong_round"
	RejectStale          = "stale"
	RejectNotSelected    = "not_selected"
	RejectDuplicate      = "duplicate_participant"
	RejectNonceReuse     = "nonce_reuse"
	RejectBadPayload     = "bad_payload"
	RejectAggregate      = "aggregation"
	RejectWrongSender    = "wrong_sender" // names another participant than the member that sent it
	outcomeAggregated    = "aggregated"
	outcomeAbandoned     = "abandoned"
	outcomeBudget        = "budget_exhausted"
	outcomeEvaluated     = "evaluated"
	resultAccepted       = "accepted"
	resultRedelivered    = "redelivered"
	resultUnread         = "unread" // a member's messages past MemberMessages in a round
	blobOptimizer        = "optimizer"
	blobPrivacy          = "privacy"
	transportRetryPeriod = time.Second
)

var rejectReasons = []string{RejectMalformed, RejectBadSignature, RejectWrongFed, RejectUnknownMember, RejectWrongKey,
	RejectWrongRound, RejectStale, RejectNotSelected, RejectDuplicate, RejectNonceReuse, RejectBadPayload, RejectAggregate, RejectSecAgg,
	RejectSecAggInconsistent, RejectWrongSender}

// Rejection is one update the hub refused, with the reason.
type Rejection struct {
	Participant string
	Round       uint64
	Reason      string // one of the Reject* constants
	Detail      string
}

// RoundReport is the outcome of one round, given to HubOptions.OnRound.
type RoundReport struct {
	Federation string
	Round      uint64
	Outcome    string // aggregated, abandoned, budget_exhausted
	// Reason says why an abandoned round closed without a model: quorum, aggregation, or
	// the secure-aggregation failure (a SecAggFail* constant).
	Reason   string
	Model    string   // SHA-256 of the published model (aggregated)
	Targets  []string // the participants asked to train
	Used     []string
	Rejected []Rejection // by the protocol and by the aggregation rule
	Privacy  *dp.Report
	// Metrics are the round's local metrics, combined over the updates the round used as
	// its rule combined them (roundMetrics), for the names every one of them reported;
	// with secure aggregation, the weighted mean of each metric secagg.metrics names over
	// the survivors that had it (nil when there are none). A restarted hub that completes
	// a round from its release commit reports the ones the release kept.
	// They go to OnRound, the hub's log and /metrics, the hub-only release commit, and into
	// the round's ledger record unless the round has DP (they carry no noise); never into
	// the model or a receipt.
	Metrics  map[string]float64
	Bytes    int // update bytes accepted
	Duration time.Duration
}

// HubOptions are the hub's collaborators; every field is optional.
type HubOptions struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Recorder   ledger.Recorder // FederatedRound records (nil: none)
	// OnRound is called after every round, from the federation's goroutine.
	OnRound func(RoundReport)
	// SignedOff returns the SHA-256 of every model of federation fed that people released,
	// or approved for release (the ledger's release and approval records). Retention keeps
	// those models past keep_models, so a fleet following a release channel can still
	// fetch them, and an approved model can still be released. Nil: none are kept.
	SignedOff func(ctx context.Context, fed string) (map[string]bool, error)
}

// hubMetrics are the hub's metrics; every one but the round metrics' gauge carries the
// federation's name (runMetrics binds it), so that a hub with several federations shows
// which one rejects or fails.
type hubMetrics struct {
	rounds       *prometheus.CounterVec
	updates      *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	bytes        *prometheus.CounterVec
	ledger       *prometheus.CounterVec
	receipts     *prometheus.CounterVec
	deleteErrors *prometheus.CounterVec
	secaggFailed *prometheus.CounterVec
	roundMetric  *prometheus.GaugeVec
}

func newHubMetrics(reg prometheus.Registerer) *hubMetrics {
	fed := []string{"federation"}
	m := &hubMetrics{
		rounds:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_federation_rounds_total", Help: "Rounds closed by the hub, by outcome."}, append(fed, "outcome")),
		updates:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_federation_updates_total", Help: "Update messages handled by the hub: accepted, redelivered, or unread (a member's messages in a round past the 8 the hub reads)."}, append(fed, "result")),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_federation_updates_rejected_total", Help: "Updates rejected by the hub, by reason."}, append(fed, "reason")),
		bytes:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_federation_update_bytes_total", Help: "Bytes of accepted updates."}, fed),
		ledger:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_federation_ledger_errors_total", Help: "FederatedRound records the ledger refused."}, fed),
		receipts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_federation_receipt_errors_total", Help: "Rounds whose receipts the hub failed to write (some or all of them; the log names the error)."}, fed),
		deleteErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_federation_delete_errors_total",
			Help: "Deletions the hub failed: of a model older than keep_models rounds (what=model; tried again after the next round), or of a closed round's updates (what=updates; the next round's deletion takes them). The log names the error."}, append(fed, "what")),
		secaggFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_federation_secagg_failures_total",
			Help: "Rounds with secure aggregation abandoned, by reason."}, append(fed, "reason")),
		roundMetric: roundMetricGauge(),
	}
	if reg != nil {
		reg.MustRegister(m.rounds, m.updates, m.rejected, m.bytes, m.ledger, m.receipts, m.deleteErrors, m.secaggFailed, m.roundMetric)
	}
	return m
}

// runMetrics are the hub's metrics of one federation.
type runMetrics struct {
	rounds, updates, rejected, deleteErrors, secaggFailed *prometheus.CounterVec
	bytes, ledger, receipts                               prometheus.Counter
}

// of returns the metrics of federation fed, each series it can have at 0 from the start.
func (m *hubMetrics) of(fed string) *runMetrics {
	l := prometheus.Labels{"federation": fed}
	r := &runMetrics{
		rounds: m.rounds.MustCurryWith(l), updates: m.updates.MustCurryWith(l), rejected: m.rejected.MustCurryWith(l),
		deleteErrors: m.deleteErrors.MustCurryWith(l), secaggFailed: m.secaggFailed.MustCurryWith(l),
		bytes: m.bytes.With(l), ledger: m.ledger.With(l), receipts: m.receipts.With(l),
	}
	for _, reason := range rejectReasons {
		r.rejected.WithLabelValues(reason)
	}
	for _, reason := range secaggFailReasons {
		r.secaggFailed.WithLabelValues(reason)
	}
	for _, w := range []string{"model", "updates"} {
		r.deleteErrors.WithLabelValues(w)
	}
	for _, res := range []string{resultAccepted, resultRedelivered, resultUnread} {
		r.updates.WithLabelValues(res)
	}
	return r
}

// Hub runs the round protocol of its federations: it opens rounds, verifies and collects
// updates, aggregates them, enforces the privacy budget, publishes signed global models
// and records every round in the ledger.
type Hub struct {
	cfg  HubConfig
	tr   Transport
	key  ed25519.PrivateKey
	opts HubOptions
	log  *slog.Logger
	m    *hubMetrics
}

// NewHub returns a hub for cfg (defaults set, valid) that talks over tr and signs models
// with key. It does no I/O.
func NewHub(cfg HubConfig, tr Transport, key ed25519.PrivateKey, opts HubOptions) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("federation: hub config: %w", err)
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("federation: hub key is not an ed25519 private key")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{cfg: cfg, tr: tr, key: key, opts: opts, log: log.With("component", "federation_hub"), m: newHubMetrics(opts.Registerer)}, nil
}

// PublicKey is the key that verifies the hub's models.
func (h *Hub) PublicKey() ed25519.PublicKey { return h.key.Public().(ed25519.PublicKey) }

// Run runs every federation until ctx ends (then it returns nil) or one fails for good.
func (h *Hub) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, fc := range h.cfg.Federations {
		g.Go(func() error {
			f, err := newFedRun(h, fc)
			if err != nil {
				return err
			}
			return f.run(ctx)
		})
	}
	return g.Wait()
}

// fedRun is one federation's round loop; it owns its aggregator and budget.
type fedRun struct {
	h       *Hub
	cfg     FederationConfig
	log     *slog.Logger
	members map[string]ed25519.PublicKey
	m       *runMetrics
	agg     *aggregate.Aggregator
	budget  *dp.Budget
	noise   *dp.Noise
	// released is the last round release committed (blobRelease), nil before the first.
	released *releasing
	// stored is the last model this hub stored (storeModel), the next round's global: the
	// round's end uses it instead of downloading, verifying and decoding it again.
	stored *GlobalModel
	// expireFrom is the oldest round whose model deleteExpired has not dealt with.
	expireFrom uint64
	// bufs are the last round's decoded updates, for the next round's to be decoded into.
	bufs buffers
}

func newFedRun(h *Hub, fc FederationConfig) (*fedRun, error) {
	s := fc.Strategy
	if fc.DP.Enabled && (s.ClipNorm == 0 || s.ClipNorm > fc.DP.ClipNorm) {
		s.ClipNorm = fc.DP.ClipNorm // the hub clips too: a gateway that does not is bounded anyway
	}
	agg, err := aggregate.New(s)
	if err != nil {
		return nil, fmt.Errorf("federation %s: %w", fc.Name, err)
	}
	f := &fedRun{h: h, cfg: fc, log: h.log.With("federation", fc.Name), members: map[string]ed25519.PublicKey{}, agg: agg, m: h.m.of(fc.Name),
		bufs: buffers{max: len(fc.Members)}}
	for _, m := range fc.Members {
		f.members[m.Name] = m.Key.PublicKey
	}
	return f, nil
}

// retry calls op until it succeeds or ctx ends, logging failures (the transport's errors
// are transient).
func retry[T any](ctx context.Context, log *slog.Logger, what string, op func() (T, error)) (T, error) {
	for {
		v, err := op()
		if err == nil || errors.Is(err, ErrNotFound) {
			return v, err
		}
		if ctx.Err() != nil { // stopping: the call failed because of it
			return v, ctx.Err()
		}
		log.Warn("transport error, retrying", "op", what, "err", err)
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(transportRetryPeriod):
		}
	}
}

func (f *fedRun) run(ctx context.Context) error {
	st, err := f.restore(ctx)
	if err != nil {
		return ignoreCanceled(err)
	}
	for {
		if st.Phase != PhaseOpen && st.Phase != PhaseEvaluate {
			f.log.Info("federation idle", "phase", st.Phase, "round", st.Round)
			<-ctx.Done()
			return nil
		}
		next, err := f.round(ctx, st)
		if err != nil {
			return ignoreCanceled(err)
		}
		st = next
	}
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// restore loads the federation's state, or publishes the initial model and opens round 1.
func (f *fedRun) restore(ctx context.Context) (RoundState, error) {
	if f.cfg.DP.Enabled {
		var steps []dp.Step
		b, err := retry(ctx, f.log, "get privacy", func() ([]byte, error) { return f.h.tr.GetBlob(ctx, f.cfg.Name, blobPrivacy) })
		if err == nil {
			if err := json.Unmarshal(b, &steps); err != nil {
				return RoundState{}, fmt.Errorf("federation %s: privacy spent: %w", f.cfg.Name, err)
			}
		} else if !errors.Is(err, ErrNotFound) {
			return RoundState{}, err
		}
		if f.budget, err = dp.NewBudget(f.cfg.DP, steps...); err != nil {
			return RoundState{}, fmt.Errorf("federation %s: %w", f.cfg.Name, err)
		}
		if f.noise, err = dp.NewNoise(nil); err != nil {
			return RoundState{}, err
		}
	}
	if err := f.loadRelease(ctx); err != nil {
		return RoundState{}, err
	}
	b, err := retry(ctx, f.log, "get round", func() ([]byte, error) { return f.h.tr.GetRound(ctx, f.cfg.Name) })
	if err == nil {
		st, err := DecodeRoundState(b)
		if err != nil {
			return RoundState{}, err
		}
		f.log.Info("federation resumed", "round", st.Round, "phase", st.Phase)
		return st, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return RoundState{}, err
	}
	// A new federation: the initial model.
	arch := f.cfg.Architecture
	r := rand.New(rand.NewPCG(f.cfg.InitSeed, 0x6d696c6c))
	params := make([]float32, arch.Params)
	for i := range params {
		params[i] = float32((2*r.Float64() - 1) * f.cfg.InitScale)
	}
	g := GlobalModel{Header: ModelHeader{Federation: f.cfg.Name, Round: 0, Architecture: arch, Created: time.Now().UTC()}, Params: params}
	hash, err := f.publishInitial(ctx, &g)
	if err != nil {
		return RoundState{}, err
	}
	st := f.open(1, hash, 0)
	return st, f.putState(ctx, st)
}

// storeModel signs g and stores it (with retries); it returns its hash.
func (f *fedRun) storeModel(ctx context.Context, g *GlobalModel) (string, error) {
	data, err := g.SignedBytes(f.h.key)
	if err != nil {
		return "", fmt.Errorf("federation %s: sign model: %w", f.cfg.Name, err)
	}
	hash := g.Hash() // SignedBytes hashed it
	_, err = retry(ctx, f.log, "put model", func() (struct{}, error) { return struct{}{}, f.h.tr.PutModel(ctx, f.cfg.Name, hash, data) })
	if err == nil {
		f.stored = g
	}
	return hash, err
}

// publishInitial stores a new federation's initial model g, signed, and names it as
// version r0. Rounds publish through release.
func (f *fedRun) publishInitial(ctx context.Context, g *GlobalModel) (string, error) {
	hash, err := f.storeModel(ctx, g)
	if err != nil {
		return "", err
	}
	_, err = retry(ctx, f.log, "put version", func() (struct{}, error) {
		return struct{}{}, f.h.tr.PutVersion(ctx, f.cfg.Name, g.Header.Version(), hash)
	})
	return hash, err
}

func (f *fedRun) putState(ctx context.Context, st RoundState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = retry(ctx, f.log, "put round", func() (struct{}, error) { return struct{}{}, f.h.tr.PutRound(ctx, f.cfg.Name, b) })
	return err
}

// open returns the state of a new round that trains from model global.
func (f *fedRun) open(round uint64, global string, globalRound uint64) RoundState {
	st := RoundState{
		Version: StateVersion, Federation: f.cfg.Name, Round: round, Phase: PhaseOpen,
		Global: global, GlobalRound: globalRound, Quorum: f.cfg.quorum(),
		Deadline:     time.Now().Add(f.cfg.RoundTimeout).UTC(),
		MaxStaleness: f.cfg.MaxStaleness, Codecs: f.cfg.Codecs, ProximalMu: f.cfg.Strategy.ProximalMu,
		Targets: f.selectTargets(),
	}
	st.ClipNorm = f.clipNorm()
	if f.cfg.Rounds > 0 && round > f.cfg.Rounds {
		if !f.cfg.FinalEvaluation || round > f.cfg.Rounds+1 {
			st.Phase = PhaseFinished
			return st
		}
		st.Phase = PhaseEvaluate
	}
	if f.budget != nil {
		if _, err := f.budget.Preview(); err != nil {
			// The round cannot be paid for: round ends the federation on this state at
			// once, and no gateway is to train for it in between.
			st.Targets = nil
			return st
		}
	}
	if f.cfg.SecAgg.Enabled {
		sa, err := f.secaggState(st, st.Targets)
		if err != nil {
			// No gateway trains for a round that cannot run; secaggRound abandons it
			// with the reason.
			f.log.Warn("round cannot run with secure aggregation", "round", round, "targets", len(st.Targets), "err", err)
			st.Targets = nil
			return st
		}
		st.SecAgg = sa
		st.Noise = f.noiseShare(st.Quorum, sa.Params)
	}
	return st
}

// selectTargets picks the round's participants: a uniformly random subset of Participants
// members (all by default).
func (f *fedRun) selectTargets() []string {
	var seed [8]byte
	_, _ = crand.Read(seed[:])
	r := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:]), 1))
	names := make([]string, 0, len(f.cfg.Members))
	for _, m := range f.cfg.Members {
		names = append(names, m.Name)
	}
	r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	out := names[:f.cfg.participants()]
	sort.Strings(out)
	return out
}

// collected is what a round has accepted so far.
type collected struct {
	updates map[string]*Update // by participant
	deltas  map[string][]float32
	nonces  map[[nonceLen]byte]string // nonce → update id
	seen    map[string]bool           // ids of the messages handled, accepted or not
	bytes   int
	rejects []Rejection
}

// round runs one open round to its end and returns the next state.
func (f *fedRun) round(ctx context.Context, st RoundState) (RoundState, error) {
	start := time.Now()
	report := RoundReport{Federation: f.cfg.Name, Round: st.Round, Targets: st.Targets}
	if rel := f.released; rel != nil && rel.Round == st.Round && rel.Parent == st.Global {
		// The previous hub stopped after committing this round's release and before
		// opening the next round: the round is over; it completes the release.
		if err := f.resumeRelease(ctx, st, *rel); err != nil {
			return st, err
		}
		report.Model, report.Used, report.Privacy = rel.Model, rel.Used, rel.Privacy
		report.Rejected, report.Bytes, report.Metrics = rel.Rejected, rel.Bytes, rel.Metrics
		return f.finish(ctx, report, start, outcomeAggregated, f.open(st.Round+1, rel.Model, st.Round))
	}
	if f.budget != nil {
		if _, err := f.budget.Preview(); err != nil {
			f.log.Warn("privacy budget exhausted, federation stops", "round", st.Round, "err", err)
			st.Phase = PhaseBudgetExhausted
			if err := f.putState(ctx, st); err != nil {
				return st, err
			}
			f.m.rounds.WithLabelValues(outcomeBudget).Inc()
			report.Outcome = outcomeBudget
			f.notify(report)
			return st, nil
		}
	}
	if f.cfg.SecAgg.Enabled {
		return f.secaggRound(ctx, st)
	}
	if time.Now().After(st.Deadline) {
		// The hub was stopped past the round's deadline and came back: the updates the
		// round accepted are in the stream, and a fresh deadline lets it read them (and
		// the members still answer), as secure aggregation does, instead of abandoning
		// a round that had its quorum.
		st.Deadline = time.Now().Add(f.cfg.RoundTimeout).UTC()
		if err := f.putState(ctx, st); err != nil {
			return st, err
		}
		f.log.Info("round resumed past its deadline, with a new one", "round", st.Round, "deadline", st.Deadline)
	}
	c, err := f.collect(ctx, st)
	if err != nil {
		return st, err
	}
	report.Rejected, report.Bytes = c.rejects, c.bytes
	if len(c.updates) < st.Quorum {
		// A final evaluation short of its quorum records nothing; the next state finishes.
		f.log.Warn("round abandoned: quorum not met by the deadline", "round", st.Round, "phase", st.Phase, "updates", len(c.updates), "quorum", st.Quorum)
		report.Reason = SecAggFailQuorum
		return f.finish(ctx, report, start, outcomeAbandoned, f.open(st.Round+1, st.Global, st.GlobalRound))
	}
	global, err := f.globalModel(ctx, st)
	if err != nil {
		return st, err
	}
	if st.Phase == PhaseEvaluate {
		used := slices.Sorted(maps.Keys(c.updates))
		if f.budget == nil {
			report.Metrics = roundMetrics(f.cfg.Strategy, c.updates, used)
			return f.finishEvaluation(ctx, st, report, start, global.Header, used, 0)
		}
		metrics, privacy, std, err := f.privateMetrics(ctx, c.updates, used)
		if err != nil {
			return st, err
		}
		report.Metrics, report.Privacy = metrics, privacy
		return f.finishEvaluation(ctx, st, report, start, global.Header, used, std)
	}
	ups := make([]aggregate.Update, 0, len(c.updates))
	for name, u := range c.updates {
		samples := int(u.Samples)
		if f.cfg.DP.Enabled {
			samples = 1 // DP's sensitivity analysis needs equal weights
		}
		// Finite: compress.Decode refused any NaN or infinity.
		ups = append(ups, aggregate.Update{Participant: name, Delta: c.deltas[name], Samples: samples, Finite: true})
	}
	var noise func(step []float32, n int)
	if f.budget != nil {
		// Central noise on the mean of n clipped updates, N(0, (σC/n)²), before the server
		// optimizer (momentum) takes the step: its state then holds no un-noised mean.
		noise = func(step []float32, n int) { f.noise.Add(step, f.cfg.DP.NoiseStd(n)/float64(n)) }
	}
	res, err := f.agg.AggregateNoised(global.Params, ups, noise)
	f.bufs.put(slices.Collect(maps.Values(c.deltas))...) // res holds none of them
	for _, r := range res.Rejected {
		report.Rejected = append(report.Rejected, Rejection{Participant: r.Participant, Round: st.Round, Reason: RejectAggregate, Detail: r.Reason})
		f.m.rejected.WithLabelValues(RejectAggregate).Inc()
		f.log.Warn("update rejected", "participant", r.Participant, "round", st.Round, "reason", RejectAggregate, "detail", r.Reason)
	}
	var privacy *dp.Report
	if f.budget != nil && (err == nil || errors.Is(err, aggregate.ErrNotFinite)) {
		// A model the noise pushed past float32's edge is not published, but whether it
		// was depends on the noised mean: the round is paid for (over-counting is safe).
		rep, err := f.spend(ctx, f.cfg.DP.NoiseMultiplier)
		if err != nil {
			return st, err
		}
		privacy = &rep
	}
	if err != nil {
		f.log.Warn("round abandoned: aggregation failed", "round", st.Round, "err", err)
		report.Reason, report.Privacy = RejectAggregate, privacy
		return f.finish(ctx, report, start, outcomeAbandoned, f.open(st.Round+1, st.Global, st.GlobalRound))
	}
	out := GlobalModel{Header: ModelHeader{Federation: f.cfg.Name, Round: st.Round, Architecture: global.Header.Architecture,
		Parent: st.Global, Created: time.Now().UTC(), Participants: res.Used}, Params: res.Params}
	report.Metrics = roundMetrics(f.cfg.Strategy, c.updates, res.Used)
	hash, err := f.release(ctx, st, global.Header, &out, c, privacy, report)
	if err != nil {
		return st, err
	}
	report.Model, report.Used, report.Privacy = hash, res.Used, privacy
	return f.finish(ctx, report, start, outcomeAggregated, f.open(st.Round+1, hash, st.Round))
}

// spend accounts one round whose sums carried noise of multiplier sigma in the privacy
// budget, and persists the privacy spent before anything is published (a crash after it
// over-counts, which is safe).
func (f *fedRun) spend(ctx context.Context, sigma float64) (dp.Report, error) {
	rep, err := f.budget.SpendAt(sigma)
	if err != nil {
		// Preview said yes at the configured σ. Only a round that carried less noise (its
		// shares sized by a hub before this one) or a concurrent change gets here; nothing
		// of it is published.
		return rep, err
	}
	b, _ := json.Marshal(f.budget.Steps())
	_, err = retry(ctx, f.log, "put privacy", func() (struct{}, error) { return struct{}{}, f.h.tr.PutBlob(ctx, f.cfg.Name, blobPrivacy, b) })
	f.log.Info("privacy spent", "epsilon", rep.Epsilon, "delta", rep.Delta, "limit", rep.Limit)
	return rep, err
}

func (f *fedRun) finish(ctx context.Context, report RoundReport, start time.Time, outcome string, next RoundState) (RoundState, error) {
	if err := f.putState(ctx, next); err != nil {
		return next, err
	}
	report.Outcome, report.Duration = outcome, time.Since(start)
	f.m.rounds.WithLabelValues(outcome).Inc()
	if outcome == outcomeAggregated {
		f.h.m.setRoundMetrics(f.cfg.Name, report.Metrics)
	}
	attrs := []any{"round", report.Round, "outcome", outcome, "used", len(report.Used), "rejected", len(report.Rejected), "model", report.Model}
	if report.Metrics != nil {
		attrs = append(attrs, "metrics", report.Metrics)
	}
	f.log.Info("round closed", attrs...)
	f.notify(report)
	f.sendReceipts(ctx, report)
	f.deleteExpired(ctx, report.Round, next.Global)
	f.deleteUpdates(ctx, report.Round)
	return next, nil
}

func (f *fedRun) notify(r RoundReport) {
	if f.h.opts.OnRound != nil {
		f.h.opts.OnRound(r)
	}
}

// collect receives the round's updates until every target has answered, or until the
// deadline once the quorum is reached (or not: the caller abandons the round).
func (f *fedRun) collect(ctx context.Context, st RoundState) (*collected, error) {
	c := &collected{updates: map[string]*Update{}, deltas: map[string][]float32{}, nonces: map[[nonceLen]byte]string{}, seen: map[string]bool{}}
	fd := f.feed(ctx, st.Round)
	defer fd.close()
	timer := time.NewTimer(time.Until(st.Deadline))
	defer timer.Stop()
	targets := map[string]bool{}
	for _, t := range st.Targets {
		targets[t] = true
	}
	for len(c.updates) < len(st.Targets) {
		m, err := fd.next(ctx, timer.C)
		if err != nil {
			return nil, fmt.Errorf("federation %s round %d: %w", f.cfg.Name, st.Round, err)
		}
		if m == nil {
			return c, nil
		}
		f.handle(st, targets, c, m)
	}
	return c, nil
}

type rejectFunc func(participant, reason, detail string)

// rejecter returns the function that records, counts and logs a rejection in round.
func (f *fedRun) rejecter(round uint64, into *[]Rejection) rejectFunc {
	return func(participant, reason, detail string) {
		*into = append(*into, Rejection{Participant: participant, Round: round, Reason: reason, Detail: detail})
		f.m.rejected.WithLabelValues(reason).Inc()
		f.log.Warn("update rejected", "participant", participant, "round", round, "reason", reason, "detail", detail)
	}
}

// verify checks a decoded message of the round and who sent it: signature, sender,
// federation, membership and key, round, staleness and selection. It returns nil after
// rejecting. A rejection names the member the transport took the message from, not the
// participant the message names: one member cannot have another blamed.
func (f *fedRun) verify(st RoundState, targets map[string]bool, reject rejectFunc, m *message) *Update {
	u, err := m.u, m.err
	if errors.Is(err, ErrBadSignature) {
		reject(m.sender, RejectBadSignature, err.Error())
		return nil
	}
	if err != nil {
		reject(m.sender, RejectMalformed, err.Error())
		return nil
	}
	if m.sender != "" && u.Participant != m.sender { // "": a transport that cannot tell
		reject(m.sender, RejectWrongSender, fmt.Sprintf("the update names participant %q; %q sent it", u.Participant, m.sender))
		return nil
	}
	key, member := f.members[u.Participant]
	switch {
	case u.Federation != f.cfg.Name:
		reject(u.Participant, RejectWrongFed, fmt.Sprintf("update for federation %q", u.Federation))
	case !member:
		reject(u.Participant, RejectUnknownMember, "not a member of the federation")
	case !key.Equal(u.Key):
		reject(u.Participant, RejectWrongKey, fmt.Sprintf("signed with key %s, not the member's", ledger.KeyID(u.Key)))
	case u.Round != st.Round:
		reject(u.Participant, RejectWrongRound, fmt.Sprintf("update for round %d in round %d", u.Round, st.Round))
	case st.Round-u.BaseRound > st.MaxStaleness:
		reject(u.Participant, RejectStale, fmt.Sprintf("trained from round %d's model; at most %d rounds old allowed", u.BaseRound, st.MaxStaleness))
	case !targets[u.Participant]:
		reject(u.Participant, RejectNotSelected, "not selected for this round")
	default:
		return u
	}
	return nil
}

// redelivered reports whether m was handled before in the round, whose handled messages'
// ids seen holds, and counts it; else it adds m's id to seen. JetStream redelivers, and a
// consumer started again reads the round from its start: a message accepted or rejected
// once is neither counted nor rejected again.
func (f *fedRun) redelivered(seen map[string]bool, m *message) bool {
	id := m.id()
	if seen[id] {
		f.m.updates.WithLabelValues(resultRedelivered).Inc()
		f.bufs.put(m.delta) // its delta is the first delivery's again
		return true
	}
	seen[id] = true
	return false
}

// handle verifies one update message; it is idempotent (a redelivered message is
// recognised by its id and changes nothing).
func (f *fedRun) handle(st RoundState, targets map[string]bool, c *collected, m *message) {
	if f.redelivered(c.seen, m) {
		return
	}
	reject := f.rejecter(st.Round, &c.rejects)
	u := f.verify(st, targets, reject, m)
	if u == nil {
		return
	}
	evaluating := st.Phase == PhaseEvaluate
	switch {
	case evaluating && u.Kind != KindEvaluation:
		reject(u.Participant, RejectBadPayload, "a model update in a final evaluation round; expected an evaluation")
	case !evaluating && u.Kind == KindEvaluation:
		reject(u.Participant, RejectBadPayload, "an evaluation in a training round; expected a model update")
	case !evaluating && u.Kind != KindDelta:
		reject(u.Participant, RejectBadPayload, "a secure-aggregation message in a round without secure aggregation")
	case c.updates[u.Participant] != nil:
		reject(u.Participant, RejectDuplicate, "a different update of this participant was accepted in this round")
	case c.nonces[u.Nonce] != "":
		reject(u.Participant, RejectNonceReuse, "nonce already used in this round")
	case evaluating:
		f.accept(c, u, nil, m)
	default:
		delta, kind := m.delta, m.kind
		switch {
		case m.derr != nil:
			reject(u.Participant, RejectBadPayload, m.derr.Error())
		case len(delta) != f.cfg.Architecture.Params:
			reject(u.Participant, RejectBadPayload, fmt.Sprintf("%d parameters; expected %d", len(delta), f.cfg.Architecture.Params))
		case !slices.ContainsFunc(st.Codecs, func(cd compress.Codec) bool { return cd.Kind == kind }):
			reject(u.Participant, RejectBadPayload, fmt.Sprintf("codec %q was not offered", kind))
		default:
			f.accept(c, u, delta, m)
		}
	}
}

// accept adds u, with its decoded delta (nil for an evaluation), received as m, to the
// round's accepted updates.
func (f *fedRun) accept(c *collected, u *Update, delta []float32, m *message) {
	c.updates[u.Participant], c.nonces[u.Nonce] = u, u.ID()
	if delta != nil {
		c.deltas[u.Participant] = delta
	}
	c.bytes += len(m.b)
	f.m.updates.WithLabelValues(resultAccepted).Inc()
	f.m.bytes.Add(float64(len(m.b)))
}

// globalModel returns the round's global model: the one this hub stored last, or else
// (after a restart) downloaded, with retries, and checked.
func (f *fedRun) globalModel(ctx context.Context, st RoundState) (*GlobalModel, error) {
	if f.stored != nil && f.stored.hash == st.Global {
		return f.stored, nil
	}
	gb, err := retry(ctx, f.log, "get model", func() ([]byte, error) { return f.h.tr.GetModel(ctx, f.cfg.Name, st.Global) })
	if err == nil {
		var g *GlobalModel
		if g, err = DecodeModel(gb, f.h.PublicKey()); err == nil {
			return g, nil
		}
	}
	return nil, fmt.Errorf("federation %s: global model %s: %w", f.cfg.Name, st.Global, err)
}
