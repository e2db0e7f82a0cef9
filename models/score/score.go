// Package score scores every completed window of every machine live, off the ingest path, and raises debounced alarms.
//
// The pipeline hands each durable batch to Offer, which copies the points of machines that
// have a model into a bounded queue and never blocks: when the queue is full the batch is
// skipped and counted. Run, one goroutine, feeds each machine's points through its
// model's feature stream (grid, scaler, windows), scores each window, updates the
// machine's alarm (k of n, hysteresis) and emits the score points (InfluxDB) and the alarm
// transitions (MQTT). Models are swapped in between batches.
//
// Samples stamped further ahead of the gateway's clock than Config.FutureTolerance are
// refused, and every sample the live path drops is counted per machine and reason. A
// machine's alarm raised before a restart is restored from the alarm log (see restore).
package score

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/store"
	"github.com/millwright-io/millwright/models/threshold"
	"github.com/millwright-io/millwright/models/train"
)

// PointWriter stores score points (the InfluxDB sink implements it).
type PointWriter interface {
	Write(ctx context.Context, b telemetry.Batch) error
}

// Publisher publishes alarm messages (connectors/mqtt's Publisher implements it).
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte, done func(error)) error
}

// AlarmLog keeps every alarm message (package alarmlog implements it).
type AlarmLog interface {
	// Append logs one message; it is called from Run's goroutine.
	Append(AlarmMessage) error
	// Last returns the last message of each factory's machine logged before this start
	// (the previous run's), in any order. The scorer calls it once, before its first
	// batch; it does no I/O.
	Last() []AlarmMessage
}

// Options are the scorer's outputs and observability; every field may be nil.
type Options struct {
	Points     PointWriter
	Alarms     Publisher
	Log        AlarmLog
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock samples' times are checked against (Config.FutureTolerance);
	// nil means time.Now.
	Now func() time.Time
}

// Contribution is one signal's share of an alarm's score.
type Contribution struct {
	Signal string  `json:"signal"`
	Share  float64 `json:"share"`
}

// AlarmMessage is the JSON published on <prefix>/<factory>/<machine>/alarm.
type AlarmMessage struct {
	Factory      string         `json:"factory"`
	Machine      string         `json:"machine"`
	State        string         `json:"state"`            // raised or cleared
	Reason       string         `json:"reason,omitempty"` // model_swapped when a new model ended the alarm (also across a restart)
	Time         time.Time      `json:"time"`
	Score        float64        `json:"score"`
	Threshold    float64        `json:"threshold"`
	ModelVersion string         `json:"model_version"`
	ModelHash    string         `json:"model_hash"`
	Top          []Contribution `json:"top_signals"`
}

// State is a machine's live scoring state, as the HTTP API shows it.
type State struct {
	Machine      string         `json:"machine"`
	Active       bool           `json:"active"`
	Since        time.Time      `json:"since,omitzero"` // last transition
	Score        float64        `json:"score"`
	Threshold    float64        `json:"threshold"`
	ModelVersion string         `json:"model_version"`
	ModelHash    string         `json:"model_hash"`
	Windows      int64          `json:"windows"`
	LastWindow   time.Time      `json:"last_window,omitzero"`
	Top          []Contribution `json:"top_signals,omitempty"`
}

// ModelInfo describes a machine's running model.
type ModelInfo struct {
	Machine   string             `json:"machine"`
	Version   string             `json:"version"`
	Hash      string             `json:"hash"`
	Detector  string             `json:"detector"`
	Signals   []string           `json:"signals"`
	Threshold float64            `json:"threshold"`
	TrainedAt time.Time          `json:"trained_at"`
	Metrics   map[string]float64 `json:"metrics,omitempty"`
}

// Scorer is the live scorer. Build it with New; Offer is safe for concurrent use; Run is
// called once.
type Scorer struct {
	cfg     Config
	factory string
	opts    Options
	log     *slog.Logger
	m       *metrics

	in   chan *[]telemetry.Point
	pool sync.Pool // *[]telemetry.Point

	known atomic.Pointer[map[string]bool] // machines with a model, for Offer
	gen   atomic.Int64                    // counts Install calls, so Run notices swaps cheaply

	mu      sync.Mutex
	want    map[string]*train.Model // models to run; Run picks them up
	states  map[string]State
	pending []telemetry.Point // score points not yet written

	// Owned by Run.
	resume map[string]AlarmMessage // machine → its raised alarm of the previous run, until the machine starts
}

// New checks cfg and registers the metrics. It does no I/O.
func New(cfg Config, factory string, opts Options) (*Scorer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("scorer: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("scorer: register metrics: %w", err)
	}
	s := &Scorer{cfg: cfg, factory: factory, opts: opts, log: opts.Logger, m: m,
		in: make(chan *[]telemetry.Point, cfg.Queue), want: map[string]*train.Model{}, states: map[string]State{}}
	s.known.Store(&map[string]bool{})
	return s, nil
}

// Offer hands the scorer a durable batch (pipeline.Options.Tap). It copies the points of
// machines that have a model and queues them without blocking; when the queue is full
// the batch is skipped and counted (millwright_scorer_skipped_*). It keeps nothing of b.
func (s *Scorer) Offer(b telemetry.Batch) {
	known := *s.known.Load()
	if len(known) == 0 {
		return
	}
	bp, _ := s.pool.Get().(*[]telemetry.Point)
	if bp == nil {
		bp = new([]telemetry.Point)
	}
	pts := (*bp)[:0]
	// Points come grouped by machine: look each run of one machine up once.
	var last string
	var keep bool
	for i := range b.Points {
		p := &b.Points[i]
		if i == 0 || p.Machine != last {
			last, keep = p.Machine, known[p.Machine]
		}
		if keep && (s.factory == "" || p.Factory == s.factory) {
			pts = append(pts, *p)
		}
	}
	*bp = pts
	if len(pts) == 0 {
		s.pool.Put(bp)
		return
	}
	select {
	case s.in <- bp:
		s.m.queued.Inc()
	default:
		s.m.skippedBatches.Inc()
		s.m.skippedPoints.Add(float64(len(pts)))
		s.pool.Put(bp)
	}
}

// Install makes m the model of its machine; Run swaps it in before the next batch. The
// machine's alarm starts afresh.
func (s *Scorer) Install(m *train.Model) {
	s.mu.Lock()
	s.want[m.Machine] = m
	known := make(map[string]bool, len(s.want))
	for k := range s.want {
		known[k] = true
	}
	s.mu.Unlock()
	s.known.Store(&known)
	s.gen.Add(1)
	s.m.swaps.Inc()
	s.log.Info("model installed", "machine", m.Machine, "version", m.Version, "hash", m.Hash)
}

// Load installs the current models of machines from the artifact store. A machine whose
// current artifact is corrupt runs its previous one; with neither it keeps the model it
// runs. Each failure is logged and counted, never fatal.
func (s *Scorer) Load(dir *store.Dir, machines []string) {
	for _, machine := range machines {
		sm, fellBack, err := dir.Current(machine)
		switch {
		case err != nil && sm == nil && errors.Is(err, fs.ErrNotExist):
			continue // no model yet
		case err != nil:
			s.m.loadErrors.Inc()
			s.log.Warn("cannot load a model artifact; the machine keeps the model it has", "machine", machine,
				"fell_back_to_previous", fellBack, "err", err)
		}
		if sm != nil {
			if cur := s.Model(machine); cur == nil || cur.Hash != sm.ID {
				s.Install(train.FromStore(sm))
			}
		}
	}
}

// Model returns the model installed for machine, or nil.
func (s *Scorer) Model(machine string) *train.Model {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.want[machine]
}

// Models describes the installed models, sorted by machine.
func (s *Scorer) Models() []ModelInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ModelInfo, 0, len(s.want))
	for _, m := range s.want {
		out = append(out, ModelInfo{Machine: m.Machine, Version: m.Version, Hash: m.Hash, Detector: m.Detector.Kind(),
			Signals: m.Signals(), Threshold: m.Threshold, TrainedAt: m.Artifact.CreatedAt, Metrics: m.Metrics()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Machine < out[j].Machine })
	return out
}

func (s *Scorer) stateOf(machine string) State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.states[machine]
}

// States returns every scored machine's state, sorted by machine.
func (s *Scorer) States() []State {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]State, 0, len(s.states))
	for _, st := range s.states {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Machine < out[j].Machine })
	return out
}

// machine is one machine's scoring state, owned by Run.
type machine struct {
	model   *train.Model
	stream  *features.Stream
	alarm   *threshold.Alarm
	contrib models.Contributor
	index   map[string]int // signal → column
	latest  []int64        // per signal, the newest sample time seen
	lag     int64          // how far a signal may lag the newest before it is left behind
	out     [1]float64
	cols    []float64
	shares  []float64
	started bool

	// Samples dropped on the live path: counted so far by reason and incomplete rows, and
	// how many of them the metrics have.
	future      int // refused: stamped beyond Config.FutureTolerance (counted at once, in drops)
	counted     [numReasons]int
	countedRows int
	drops       [numReasons]prometheus.Counter
	incomplete  prometheus.Counter
}

// Run reads the alarms the previous run left raised (AlarmLog.Last), scores queued batches
// until ctx is done, then writes the score points still pending (bounded by a short
// drain) and returns nil.
func (s *Scorer) Run(ctx context.Context) error {
	s.resume = s.lastRaised()
	machines := map[string]*machine{}
	var gen int64
	flush := time.NewTicker(time.Second)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			s.flush(dctx)
			cancel()
			return nil
		case <-flush.C:
			s.flush(ctx)
		case bp := <-s.in:
			s.score(ctx, machines, &gen, *bp)
			*bp = (*bp)[:0]
			s.pool.Put(bp)
		}
	}
}

// score runs one batch's points through their machines' streams. Models installed since
// the last batch replace the running ones first.
func (s *Scorer) score(ctx context.Context, machines map[string]*machine, gen *int64, pts []telemetry.Point) {
	if g := s.gen.Load(); g != *gen {
		*gen = g
		for name, mc := range machines {
			if mc.model == s.Model(name) {
				continue
			}
			delete(machines, name)
			if mc.alarm.Active() {
				// The new model starts with a fresh alarm: say so, rather than leave
				// subscribers with an alarm that is never cleared.
				s.m.alarms.WithLabelValues(threshold.Cleared.String()).Inc()
				st := s.stateOf(name)
				s.publish(ctx, AlarmMessage{Factory: s.factory, Machine: name, State: threshold.Cleared.String(),
					Reason: "model_swapped", Time: st.LastWindow, Score: st.Score, Threshold: mc.model.Threshold,
					ModelVersion: mc.model.Version, ModelHash: mc.model.Hash})
			}
		}
	}
	horizon := s.opts.Now().Add(s.cfg.FutureTolerance).UnixNano()
	for i := range pts {
		p := &pts[i]
		mc := machines[p.Machine]
		if mc == nil {
			var err error
			if mc, err = s.newMachine(p.Machine); err != nil {
				s.m.loadErrors.Inc()
				s.log.Warn("cannot start scoring", "machine", p.Machine, "err", err)
				continue
			}
			machines[p.Machine] = mc
			s.restore(ctx, mc, p.Time())
		}
		if p.Time() > horizon {
			if _, known := mc.index[p.Signal]; known {
				s.refuseFuture(mc, p, horizon)
				continue
			}
		}
		mc.stream.Add(p)
		if until, ok := mc.watermark(p); ok {
			mc.stream.Advance(p.Time(), until, func(end int64, window []float64) { s.window(ctx, mc, end, window) })
		}
	}
	for _, mc := range machines {
		s.countDrops(mc) // a machine without points in this batch adds nothing
	}
}

// refuseFuture counts p, stamped after horizon (the scorer's clock plus FutureTolerance),
// instead of feeding it to the stream: the watermark would move to its time, emitting the
// grid rows up to it at once (one goroutine scores every machine) and making every
// correctly stamped sample before it late. The first such sample of a machine is logged.
func (s *Scorer) refuseFuture(mc *machine, p *telemetry.Point, horizon int64) {
	mc.drops[reasonFuture].Inc()
	mc.future++
	if mc.future == 1 {
		s.log.Warn("samples stamped ahead of the gateway's clock are refused and counted", "machine", p.Machine,
			"signal", p.Signal, "time", time.Unix(0, p.Time()).UTC(),
			"clock", time.Unix(0, horizon).Add(-s.cfg.FutureTolerance).UTC(), "future_tolerance", s.cfg.FutureTolerance)
	}
}

// countDrops adds to the metrics what mc's stream has dropped since the last call (future
// samples never reach the stream: refuseFuture counts them).
func (s *Scorer) countDrops(mc *machine) {
	sum, incomplete := mc.stream.Totals()
	var n [numReasons]int
	n[reasonLate], n[reasonOverflow], n[reasonInvalid], n[reasonBadQuality] =
		sum.Late, sum.Overflow, sum.Invalid, sum.BadQuality
	for r := range n {
		if d := n[r] - mc.counted[r]; d > 0 {
			mc.drops[r].Add(float64(d))
		}
	}
	mc.counted = n
	if d := incomplete - mc.countedRows; d > 0 {
		mc.incomplete.Add(float64(d))
	}
	mc.countedRows = incomplete
}

// lastRaised returns, per machine of this factory, the alarm the alarm log says the
// previous run left raised.
func (s *Scorer) lastRaised() map[string]AlarmMessage {
	if s.opts.Log == nil {
		return nil
	}
	out := map[string]AlarmMessage{}
	for _, msg := range s.opts.Log.Last() {
		if msg.Factory == s.factory && msg.State == threshold.Raised.String() {
			out[msg.Machine] = msg
		}
	}
	return out
}

// restore carries the alarm of a machine starting its first scoring of this run across
// the restart, when the alarm log says the previous run left it raised: the subscribers
// (and the log's auditor) hold it raised. The alarm is restored rather than ended with a
// "cleared" at start, as an operator of an alarm system expects (ISA-18.2: an alarm
// returns to normal when its condition does, not when the system restarts): a fault still
// present stays one alarm, not cleared and raised again moments later as if it were a
// second fault, and a machine repaired meanwhile gets the usual "cleared" after
// clear_count quiet windows. Only when the model that raised it no longer runs is the
// alarm cleared at once, with reason model_swapped, as a swap without a restart does.
func (s *Scorer) restore(ctx context.Context, mc *machine, at int64) {
	m := mc.model
	msg, ok := s.resume[m.Machine]
	if !ok {
		return
	}
	delete(s.resume, m.Machine)
	if msg.ModelHash == m.Hash && mc.alarm.Restore() {
		s.mu.Lock()
		st := s.states[m.Machine]
		st.Active, st.Since, st.Score, st.Top = true, msg.Time, msg.Score, msg.Top
		s.states[m.Machine] = st
		s.mu.Unlock()
		s.log.Info("alarm raised before the restart restored", "machine", m.Machine, "since", msg.Time, "model_version", m.Version)
		return
	}
	reason := "model_swapped"
	if msg.ModelHash == m.Hash {
		reason = "restarted" // a threshold no score exceeds: the alarm cannot be held
	}
	s.m.alarms.WithLabelValues(threshold.Cleared.String()).Inc()
	s.publish(ctx, AlarmMessage{Factory: s.factory, Machine: m.Machine, State: threshold.Cleared.String(),
		Reason: reason, Time: time.Unix(0, at).UTC(), Score: msg.Score, Threshold: msg.Threshold,
		ModelVersion: msg.ModelVersion, ModelHash: msg.ModelHash})
}

// watermark records p's time and returns the time up to which the grid rows can be
// emitted: every signal has moved past it, except signals lagging the newest by more than
// the fill limit, which are missing anyway (so one dead signal does not stop the machine's
// scoring; its windows are incomplete and not scored).
func (mc *machine) watermark(p *telemetry.Point) (int64, bool) {
	i, ok := mc.index[p.Signal]
	if !ok {
		return 0, false
	}
	t := p.Time()
	mc.latest[i] = max(mc.latest[i], t)
	newest := slices.Max(mc.latest)
	until := newest
	for _, l := range mc.latest {
		if l < until && newest-l <= mc.lag {
			until = l
		}
	}
	return until - 1, true
}

func (s *Scorer) newMachine(name string) (*machine, error) {
	m := s.Model(name)
	if m == nil {
		return nil, errors.New("no model")
	}
	st, err := features.NewStream(m.Features(), name, &m.Artifact.Scaler)
	if err != nil {
		return nil, err
	}
	al, err := threshold.NewAlarm(s.cfg.Alarm, m.Threshold)
	if err != nil {
		return nil, err
	}
	mc := &machine{model: m, stream: st, alarm: al, shares: make([]float64, len(m.Signals())),
		index: make(map[string]int, len(m.Signals())), latest: make([]int64, len(m.Signals())),
		lag: int64(m.Features().FillLimit) * int64(m.Features().Step)}
	for i, sig := range m.Signals() {
		mc.index[sig] = i
	}
	mc.contrib, _ = m.Detector.(models.Contributor)
	for r := range mc.drops {
		mc.drops[r] = s.m.droppedSamples.WithLabelValues(name, reasons[r])
	}
	mc.incomplete = s.m.incompleteRows.WithLabelValues(name)
	s.mu.Lock()
	s.states[name] = State{Machine: name, Threshold: m.Threshold, ModelVersion: m.Version, ModelHash: m.Hash}
	s.mu.Unlock()
	return mc, nil
}

// window scores one completed window and acts on the alarm's transition.
func (s *Scorer) window(ctx context.Context, mc *machine, end int64, window []float64) {
	m := mc.model
	if err := m.Detector.Score(models.Matrix{Rows: 1, Cols: len(window), Data: window}, mc.out[:]); err != nil {
		s.m.scoreErrors.Inc()
		return
	}
	score := mc.out[0]
	tr := mc.alarm.Update(score)
	s.m.windows.Inc()
	var top []Contribution
	if tr != threshold.Unchanged {
		top = s.top(mc, window)
	}
	at := time.Unix(0, end).UTC()
	s.mu.Lock()
	st := s.states[m.Machine]
	st.Score, st.Active, st.LastWindow = score, mc.alarm.Active(), at
	st.Windows++
	if tr != threshold.Unchanged {
		st.Since, st.Top = at, top
	}
	s.states[m.Machine] = st
	if s.cfg.Measurement != "" && s.opts.Points != nil {
		s.addPoints(m, end, score, mc.alarm.Active())
	}
	s.mu.Unlock()
	if tr == threshold.Unchanged {
		return
	}
	s.m.alarms.WithLabelValues(tr.String()).Inc()
	msg := AlarmMessage{Factory: s.factory, Machine: m.Machine, State: tr.String(), Time: at, Score: score,
		Threshold: m.Threshold, ModelVersion: m.Version, ModelHash: m.Hash, Top: top}
	s.log.Info("alarm "+tr.String(), "machine", m.Machine, "score", score, "threshold", m.Threshold, "model_version", m.Version)
	s.publish(ctx, msg)
}

// top returns the signals contributing most to window's score.
func (s *Scorer) top(mc *machine, window []float64) []Contribution {
	if mc.contrib == nil || s.cfg.TopSignals == 0 {
		return nil
	}
	if cap(mc.cols) < len(window) {
		mc.cols = make([]float64, len(window))
	}
	cols := mc.cols[:len(window)]
	if err := mc.contrib.Contributions(window, cols); err != nil {
		return nil
	}
	features.SignalShares(cols, mc.shares)
	var total float64
	for _, v := range mc.shares {
		total += v
	}
	out := make([]Contribution, len(mc.shares))
	for i, v := range mc.shares {
		share := 0.0
		if total > 0 {
			share = v / total
		}
		out[i] = Contribution{Signal: mc.model.Signals()[i], Share: share}
	}
	slices.SortStableFunc(out, func(a, b Contribution) int {
		switch {
		case a.Share > b.Share:
			return -1
		case a.Share < b.Share:
			return 1
		}
		return 0
	})
	return out[:min(s.cfg.TopSignals, len(out))]
}

// addPoints queues the window's score points (s.mu held): signals score, threshold,
// alarm (0 or 1) and model_version, in the anomaly measurement.
func (s *Scorer) addPoints(m *train.Model, end int64, score float64, active bool) {
	if len(s.pending)+4 > s.cfg.MaxPending {
		s.m.droppedPoints.Add(4)
		return
	}
	if math.IsNaN(score) || math.IsInf(score, 0) {
		score = math.MaxFloat64
	}
	p := telemetry.Point{Factory: s.factory, Machine: m.Machine, SourceTime: end}
	for _, f := range []struct {
		signal string
		v      telemetry.Value
	}{{"score", telemetry.Float(score)}, {"threshold", telemetry.Float(m.Threshold)},
		{"alarm", telemetry.Bool(active)}, {"model_version", telemetry.String(m.Version)}} {
		p.Signal, p.Value = f.signal, f.v
		s.pending = append(s.pending, p)
	}
}

// flush writes the pending score points; on failure they are dropped and counted (the
// telemetry itself is safe in the write-ahead log).
func (s *Scorer) flush(ctx context.Context) {
	s.mu.Lock()
	pts := s.pending
	s.pending = nil
	s.mu.Unlock()
	if len(pts) == 0 || s.opts.Points == nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.opts.Points.Write(wctx, telemetry.Batch{Points: pts}); err != nil {
		s.m.writeErrors.Inc()
		s.m.droppedPoints.Add(float64(len(pts)))
		s.log.Warn("cannot write score points; they are dropped", "points", len(pts), "err", err)
	}
}

// publish writes an alarm message to the alarm log and sends it, waiting at most 5 s for
// room in the publisher's window.
func (s *Scorer) publish(ctx context.Context, msg AlarmMessage) {
	if s.opts.Log != nil {
		if err := s.opts.Log.Append(msg); err != nil {
			s.log.Warn("cannot log an alarm", "machine", msg.Machine, "state", msg.State, "err", err)
		}
	}
	if s.opts.Alarms == nil {
		return
	}
	payload, err := json.Marshal(msg)
	if err != nil {
		return
	}
	topic := s.cfg.TopicPrefix + "/" + msg.Factory + "/" + msg.Machine + "/alarm"
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = s.opts.Alarms.Publish(pctx, topic, payload, func(err error) {
		if err != nil {
			s.m.publishErrors.Inc()
		}
	})
	if err != nil {
		s.m.publishErrors.Inc()
		s.log.Warn("cannot publish an alarm", "machine", msg.Machine, "state", msg.State, "err", err)
	}
}

// Reasons a live sample is dropped, the reason label of millwright_scorer_dropped_samples_total.
const (
	reasonFuture = iota
	reasonLate
	reasonOverflow
	reasonInvalid
	reasonBadQuality
	numReasons
)

var reasons = [numReasons]string{"future", "late", "overflow", "invalid", "bad_quality"}

type metrics struct {
	queued, skippedBatches, skippedPoints, windows, scoreErrors  prometheus.Counter
	droppedPoints, writeErrors, publishErrors, loadErrors, swaps prometheus.Counter
	alarms, droppedSamples, incompleteRows                       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "millwright_scorer_" + name, Help: help})
	}
	m := &metrics{
		queued:         c("batches_queued_total", "Ingest batches queued for scoring."),
		skippedBatches: c("skipped_batches_total", "Ingest batches not scored because the scorer's queue was full (their windows are skipped)."),
		skippedPoints:  c("skipped_points_total", "Points of skipped batches."),
		windows:        c("windows_total", "Windows scored."),
		scoreErrors:    c("score_errors_total", "Windows a model failed to score."),
		droppedPoints:  c("dropped_points_total", "Score points dropped: the pending bound was reached or InfluxDB refused the write."),
		writeErrors:    c("write_errors_total", "Failed writes of score points."),
		publishErrors:  c("publish_errors_total", "Alarm messages that could not be published."),
		loadErrors:     c("model_load_errors_total", "Model files or models that could not be loaded (the machine keeps its model)."),
		swaps:          c("model_swaps_total", "Models installed."),
		alarms: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_scorer_alarms_total",
			Help: "Alarm transitions by state (raised, cleared)."}, []string{"state"}),
		// machine is bounded: only machines with a model are scored.
		droppedSamples: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_scorer_dropped_samples_total",
			Help: "Live samples of a model's signals not used, by machine and reason: future (stamped beyond future_tolerance " +
				"ahead of the gateway's clock), late (older than a sample already used for its grid step), overflow " +
				"(too far ahead of the machine's other signals), invalid (not a finite number, no time), bad_quality."},
			[]string{"machine", "reason"}),
		incompleteRows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_scorer_incomplete_rows_total",
			Help: "Grid rows not scored because a signal had no value within fill_limit steps, by machine."}, []string{"machine"}),
	}
	for _, col := range []prometheus.Collector{m.queued, m.skippedBatches, m.skippedPoints, m.windows, m.scoreErrors,
		m.droppedPoints, m.writeErrors, m.publishErrors, m.loadErrors, m.swaps, m.alarms, m.droppedSamples, m.incompleteRows} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}
