package train

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/store"
	"github.com/millwright-io/millwright/models/threshold"
)

// CodeVersion names this training code in the models' lineage records.
const CodeVersion = "millwright-train/1"

// Stage is a step of a training, reported to the progress callback.
type Stage string

// The stages, in order.
const (
	StageRead     Stage = "read"     // reading history (Done/Total count chunks)
	StageAlign    Stage = "align"    // aligning and windowing
	StageFit      Stage = "fit"      // fitting the detector
	StageValidate Stage = "validate" // scoring the held-out part
	StageDone     Stage = "done"
)

// Progress is one progress report.
type Progress struct {
	Machine     string
	Stage       Stage
	Done, Total int
}

// Result is what one training did.
type Result struct {
	Model   *Model
	Current *Model // the model that was running before, or nil
	Swapped bool   // Model replaced Current
	Reason  string // why it was or was not swapped
	// Start is how the warm start's model (the federation's global model) did on the same
	// held-out data, judged as Model was, with a threshold of its own; nil without a warm
	// start, or when it could not be judged (logged).
	Start    *Quality
	Rows     int // grid rows read
	Windows  int // windows fitted on
	Dropped  []string
	Duration time.Duration
}

// Options are a Trainer's dependencies. Querier is required.
type Options struct {
	Querier Querier
	// Store keeps the artifacts: every trained model is saved there and a validated one
	// promoted to the machine's current model. Nil keeps nothing on disk.
	Store *store.Dir
	// Factory is the gateway's factory (it scopes the history query and names the models).
	Factory string
	// Current returns the model a machine runs now (nil when none); Install is called with
	// a model that validated at least as well. Both may be nil.
	Current func(machine string) *Model
	Install func(m *Model)
	// Recorder receives the lineage records; nil records nothing.
	Recorder   func() ledger.Recorder
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Trainer trains the configured machines' models, on a schedule (Run) or by hand (Train).
// It runs one training at a time: Train, TrainFrom and TrainHistory called while another
// training runs wait for it (in arrival order; the wait ends early when ctx does), so a
// gateway that shares one Trainer between its schedule and its federations never trains
// twice at once on the same data and cores.
type Trainer struct {
	cfg  Config
	opts Options
	log  *slog.Logger
	m    *trainMetrics
	// slot holds a token while a training runs (capacity 1).
	slot chan struct{}
}

type trainMetrics struct {
	runs     *prometheus.CounterVec // result: swapped, kept, skipped, failed
	seconds  prometheus.Histogram
	progress *prometheus.GaugeVec     // stage → share done of the running training
	wait     *prometheus.HistogramVec // kind → time waited for the running training
	waiting  prometheus.Gauge
}

// Kinds of training, the label values of the wait metric.
const (
	KindLocal     = "local"     // Train, TrainHistory: the machine's own model from scratch
	KindFederated = "federated" // TrainFrom: continuing a federation's global model
)

// New checks cfg and registers the metrics. It does no I/O.
func New(cfg Config, opts Options) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("training: %w", err)
	}
	if opts.Querier == nil {
		return nil, errors.New("training: no InfluxDB querier")
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
	m := &trainMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_model_trainings_total",
			Help: "Trainings by result: swapped (new model installed), kept (current model validated better), skipped (too little data), failed."}, []string{"result"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "millwright_model_training_seconds",
			Help: "Duration of a training, reading included.", Buckets: prometheus.ExponentialBuckets(0.5, 2, 12)}),
		progress: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "millwright_model_training_progress",
			Help: "Share done (0 to 1) of each stage of the running training."}, []string{"stage"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "millwright_model_training_wait_seconds",
			Help:    "Time a training waited for the running one to finish (one training at a time), by kind: local or federated.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10)}, []string{"kind"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "millwright_model_trainings_waiting",
			Help: "Trainings waiting for the running one to finish."}),
	}
	for _, k := range []string{KindLocal, KindFederated} {
		m.wait.WithLabelValues(k)
	}
	for _, c := range []prometheus.Collector{m.runs, m.seconds, m.progress, m.wait, m.waiting} {
		if err := opts.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("training: register metrics: %w", err)
		}
	}
	return &Trainer{cfg: cfg, opts: opts, log: opts.Logger, m: m, slot: make(chan struct{}, 1)}, nil
}

// Run trains the configured machines until ctx is done: at once the machines that have
// no model yet, then every machine every Interval. While a machine still has no model
// (too little history so far), it is retried hourly (or every Interval, if shorter).
// Trainings run one after another in this goroutine, on one OS thread whose nice value
// is lowered: training uses at most one core and yields to ingest. A failed training is
// logged and counted; the machine keeps its model.
func (t *Trainer) Run(ctx context.Context) error {
	if t.cfg.Interval <= 0 || len(t.cfg.Machines) == 0 {
		<-ctx.Done()
		return nil
	}
	release, err := lowerPriority(t.cfg.Nice)
	defer release()
	if err != nil {
		t.log.Warn("training runs at normal priority", "err", err)
	}
	retry := min(t.cfg.Interval, time.Hour)
	var sinceAll time.Duration // time since every machine was last trained
	wait := time.Duration(0)
	for {
		if wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil
			case <-timer.C:
			}
			sinceAll += wait
		}
		all := wait > 0 && sinceAll >= t.cfg.Interval
		if all {
			sinceAll = 0
		}
		missing := false
		for _, machine := range t.cfg.Machines {
			if !all && t.current(machine) != nil {
				continue
			}
			if _, err := t.Train(ctx, machine, nil); err != nil && ctx.Err() == nil {
				t.log.Warn("training failed; the machine keeps its model", "machine", machine, "err", err)
			}
			if ctx.Err() != nil {
				return nil
			}
			missing = missing || t.current(machine) == nil
		}
		wait = t.cfg.Interval - sinceAll
		if missing {
			wait = min(wait, retry)
		}
	}
}

// current returns machine's running model, or nil.
func (t *Trainer) current(machine string) *Model {
	if t.opts.Current == nil {
		return nil
	}
	return t.opts.Current(machine)
}

// Train runs one training of machine now, in the calling goroutine (Run calls it on its
// low-priority thread; the command line calls it directly). progress, when not nil, is
// called at each stage and after each history chunk.
func (t *Trainer) Train(ctx context.Context, machine string, progress func(Progress)) (*Result, error) {
	return t.observe(ctx, machine, progress, nil)
}

// acquire waits until no other training runs (or ctx ends: then it returns ctx's error)
// and returns the function that ends this one's turn. The wait is measured by kind.
func (t *Trainer) acquire(ctx context.Context, machine, kind string) (release func(), err error) {
	begin := time.Now()
	t.m.waiting.Inc()
	defer t.m.waiting.Dec()
	select {
	case t.slot <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("train %s: waiting for the running training: %w", machine, ctx.Err())
	}
	t.m.wait.WithLabelValues(kind).Observe(time.Since(begin).Seconds())
	return func() { <-t.slot }, nil
}

// observe runs one training (from start when not nil), after any running one, and
// counts its result.
func (t *Trainer) observe(ctx context.Context, machine string, progress func(Progress), start *WarmStart) (*Result, error) {
	kind := KindLocal
	if start != nil {
		kind = KindFederated
	}
	release, err := t.acquire(ctx, machine, kind)
	if err != nil {
		return nil, err
	}
	defer release()
	begin := time.Now()
	res, err := t.train(ctx, machine, progress, start)
	t.m.seconds.Observe(time.Since(begin).Seconds())
	switch {
	case err != nil && errors.Is(err, errTooLittle):
		t.m.runs.WithLabelValues("skipped").Inc()
	case err != nil:
		t.m.runs.WithLabelValues("failed").Inc()
	case res.Swapped:
		t.m.runs.WithLabelValues("swapped").Inc()
	default:
		t.m.runs.WithLabelValues("kept").Inc()
	}
	if res != nil {
		res.Duration = time.Since(begin)
	}
	return res, err
}

var errTooLittle = errors.New("too little data")

func (t *Trainer) report(progress func(Progress), machine string, s Stage, done, total int) {
	if total > 0 {
		t.m.progress.WithLabelValues(string(s)).Set(float64(done) / float64(total))
	}
	if progress != nil {
		progress(Progress{Machine: machine, Stage: s, Done: done, Total: total})
	}
}

func (t *Trainer) train(ctx context.Context, machine string, progress func(Progress), start *WarmStart) (*Result, error) {
	hist, err := t.history(ctx, machine, progress)
	if err != nil {
		return nil, err
	}
	return t.fit(ctx, hist, progress, start)
}

// history reads the window of machine's history a training fits on (Config.Window, up
// to now).
func (t *Trainer) history(ctx context.Context, machine string, progress func(Progress)) (*History, error) {
	cfg := t.cfg
	to := t.opts.Now().UTC().Truncate(cfg.Features.Step)
	from := to.Add(-cfg.Window)
	return ReadHistory(ctx, t.opts.Querier, HistoryQuery{
		Bucket: cfg.Bucket, Measurement: cfg.Measurement, Factory: t.opts.Factory, Machine: machine,
		From: from, To: to, Chunk: cfg.Chunk, ChunkTimeout: cfg.ChunkTimeout,
	}, func(done, total int) { t.report(progress, machine, StageRead, done, total) })
}

// TrainHistory trains machine h.Machine on history already read (tests, tools): the
// same steps as Train after reading, after any running training.
func (t *Trainer) TrainHistory(ctx context.Context, h *History, progress func(Progress)) (*Result, error) {
	release, err := t.acquire(ctx, h.Machine, KindLocal)
	if err != nil {
		return nil, err
	}
	defer release()
	return t.fit(ctx, h, progress, nil)
}

// minWindows is the fewest complete windows a detector is fitted on.
const minWindows = 10

// prepared is a machine's history made ready to fit on and to judge with: its grid, the
// rows from the first complete one, the windows and scaler of the fitting part, and the
// held-out part split in two, the first half to set a threshold on (calib), the second to
// judge on (judge).
type prepared struct {
	grid         *features.Grid
	rows         int
	prep         *features.Training
	calib, judge *features.Grid
}

// prepare aligns hist and splits it into the fitting and held-out parts as every training
// does (Config.Holdout), the scaler fitted on the fitting part.
func (t *Trainer) prepare(hist *History, progress func(Progress)) (*prepared, error) {
	cfg, machine, from, to := t.cfg, hist.Machine, hist.From, hist.To
	signals := hist.Signals()
	if len(signals) == 0 {
		return nil, fmt.Errorf("train %s: no samples from %s to %s: %w", machine, from.Format(time.RFC3339), to.Format(time.RFC3339), errTooLittle)
	}
	t.report(progress, machine, StageAlign, 0, 1)
	grid, err := features.Align(cfg.Features, machine, signals, hist.Points, from, to)
	if err != nil {
		return nil, fmt.Errorf("train %s: %w", machine, err)
	}
	// The first rows before any sample are not data: start at the first complete row.
	first := slices.Index(grid.Complete, true)
	if first < 0 || countTrue(grid.Complete) < cfg.MinRows {
		return nil, fmt.Errorf("train %s: %d complete grid rows, expected at least %d (min_rows); %s: %w",
			machine, countTrue(grid.Complete), cfg.MinRows, features.DescribeGaps(cfg.Features, grid.Continuity()), errTooLittle)
	}
	rows := grid.Values.Rows - first
	split := first + int(float64(rows)*(1-cfg.Holdout))
	fitGrid, holdGrid := gridRows(grid, first, split), gridRows(grid, split, grid.Values.Rows)
	prep, err := features.Prepare(cfg.Features, fitGrid)
	if errors.Is(err, features.ErrNoSignal) {
		return nil, fmt.Errorf("train %s: %w: %w", machine, err, errTooLittle)
	}
	if err != nil {
		return nil, fmt.Errorf("train %s: %w", machine, err)
	}
	t.report(progress, machine, StageAlign, 1, 1)
	if prep.Windows.Rows < minWindows {
		return nil, fmt.Errorf("train %s: %d complete windows of %d rows to fit on, expected at least %d; %s: %w",
			machine, prep.Windows.Rows, cfg.Features.WindowSize, minWindows, features.DescribeGaps(cfg.Features, prep.Grid.Continuity()), errTooLittle)
	}
	if len(prep.Dropped) > 0 {
		t.log.Warn("signals left out of the model", "machine", machine, "signals", prep.Dropped,
			"why", features.DescribeGaps(cfg.Features, fitGrid.Continuity()))
	}
	// The held-out part is split in two: the threshold is set on the first half, and both
	// the new and the current model are judged on the second.
	calib, judge := gridRows(holdGrid, 0, holdGrid.Values.Rows/2), gridRows(holdGrid, holdGrid.Values.Rows/2, holdGrid.Values.Rows)
	return &prepared{grid: grid, rows: rows, prep: prep, calib: calib, judge: judge}, nil
}

func (t *Trainer) fit(ctx context.Context, hist *History, progress func(Progress), start *WarmStart) (*Result, error) {
	started := time.Now()
	cfg, machine, from, to := t.cfg, hist.Machine, hist.From, hist.To
	p, err := t.prepare(hist, progress)
	if err != nil {
		return nil, err
	}
	grid, rows, prep, calib, judge := p.grid, p.rows, p.prep, p.calib, p.judge

	t.report(progress, machine, StageFit, 0, 1)
	det, err := t.detector(len(prep.Scaler.Signals), prep.Windows.Cols, start)
	if err != nil {
		return nil, fmt.Errorf("train %s: %w", machine, err)
	}
	if err := det.Fit(ctx, prep.Windows); err != nil {
		return nil, fmt.Errorf("train %s: fit %s: %w", machine, cfg.Detector, err)
	}
	t.report(progress, machine, StageFit, 1, 1)

	t.report(progress, machine, StageValidate, 0, 1)
	trainedAt := t.opts.Now().UTC()
	art := &store.Artifact{
		Machine: machine, CreatedAt: trainedAt, CodeVersion: CodeVersion, Features: cfg.Features,
		Scaler: *prep.Scaler, Dropped: prep.Dropped,
		Training: store.Training{From: from, To: to, Signals: grid.Stats.Signals, GridRows: grid.Values.Rows,
			IncompleteRows: grid.Stats.IncompleteRows, TrainWindows: prep.Windows.Rows,
			HyperParameters: t.hyperParameters(start)},
	}
	art.Alarm.SetDefaults()
	m := &Model{Machine: machine, Version: versionOf(trainedAt), Artifact: art, Detector: det} // threshold set below
	th, cs, err := calibrate(cfg.Threshold, m, calib)
	if err != nil {
		return nil, fmt.Errorf("train %s: %w", machine, err)
	}
	art.Threshold = th
	newQ, err := Judge(m, judge)
	if err != nil {
		return nil, fmt.Errorf("train %s: validate: %w", machine, err)
	}
	art.Training.Metrics = newQ.Metrics()
	art.Training.ValidWindows = newQ.Windows + len(cs)
	art.Training.Windows = prep.Windows.Rows + art.Training.ValidWindows
	res := &Result{Model: m, Rows: rows, Windows: prep.Windows.Rows, Dropped: prep.Dropped}
	if start != nil {
		// The model the training started from, judged as the new one is: what the
		// federation's global model does on this machine's data, with its own threshold.
		if q, err := t.judgeStart(m, start, len(prep.Scaler.Signals), prep.Windows.Cols, calib, judge); err != nil {
			t.log.Warn("the warm start cannot be judged", "machine", machine, "from", start.From, "err", err)
		} else {
			res.Start = &q
		}
	}
	res.Current = t.current(machine)
	res.Swapped, res.Reason = true, "no current model"
	var curQ *Quality // the current model's, when it could be judged
	if res.Current != nil {
		q, err := Judge(res.Current, judge)
		if err != nil {
			res.Reason = "the current model cannot score the data: " + err.Error()
		} else {
			curQ = &q
			res.Swapped, res.Reason = Better(newQ, q)
		}
	}
	t.report(progress, machine, StageValidate, 1, 1)

	art.Training.Duration = time.Since(started)
	if err := art.SetDetector(det.(models.Persistent)); err != nil {
		return nil, fmt.Errorf("train %s: %w", machine, err)
	}
	if t.opts.Store != nil {
		m.Hash, err = t.opts.Store.Save(art)
	} else {
		_, m.Hash, err = store.Encode(art)
	}
	if err != nil {
		return nil, fmt.Errorf("train %s: %w", machine, err)
	}
	datasetID := t.recordDataset(ctx, grid, hist)
	t.recordTraining(ctx, res, datasetID)
	t.recordEvaluation(ctx, res, newQ, curQ, datasetID)
	if res.Swapped {
		if t.opts.Store != nil {
			if err := t.opts.Store.Promote(machine, m.Hash); err != nil {
				return res, fmt.Errorf("train %s: %w", machine, err)
			}
		}
		if t.opts.Install != nil {
			t.opts.Install(m)
		}
		t.recordDeployment(ctx, res)
	}
	t.log.Info("training done", "machine", machine, "version", m.Version, "hash", m.Hash, "swapped", res.Swapped, "reason", res.Reason,
		"rows", rows, "windows", prep.Windows.Rows, "false_alarm_rate", newQ.FalseAlarmRate, "detection_rate", newQ.DetectionRate)
	t.report(progress, machine, StageDone, 1, 1)
	return res, nil
}

// hyperParameters are the training settings an artifact and its ledger record carry.
func (t *Trainer) hyperParameters(start *WarmStart) map[string]string {
	c := t.cfg
	hp := map[string]string{
		"detector": c.Detector, "seed": fmt.Sprint(c.Seed), "holdout": fmt.Sprint(c.Holdout),
		"window": c.Window.String(), "threshold_method": c.Threshold.Method,
	}
	if start != nil {
		hp["detector"] = start.Architecture.Kind
		hp["warm_start"] = start.From
		hp["prox_mu"] = fmt.Sprint(start.ProxMu)
	}
	return hp
}

func countTrue(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

// gridRows returns rows [from, to) of g, sharing its storage.
func gridRows(g *features.Grid, from, to int) *features.Grid {
	return &features.Grid{
		Start: g.Start + int64(from)*int64(g.Step), Step: g.Step, Signals: g.Signals,
		Values: g.Values.Slice(from, to), Complete: g.Complete[from:to], Stats: g.Stats,
	}
}

// Quality is how a model does on held-out normal data at its own threshold.
type Quality struct {
	// FalseAlarmRate is the share of held-out normal windows scored above the threshold.
	FalseAlarmRate float64
	// DetectionRate is the share of synthetic faults detected: the same windows with one
	// signal at a time shifted by FaultShift of its robust spread (as the new model's
	// scaler measured it) scored above the threshold.
	DetectionRate float64
	// Separation is the median score of the shifted windows over the threshold.
	Separation float64
	Windows    int
}

// FaultShift is the size of Judge's synthetic faults, in robust standard deviations.
const FaultShift = 4.0

// Metrics are q as the metrics a model, its training record and its evaluation carry.
func (q Quality) Metrics() map[string]float64 {
	return map[string]float64{"false_alarm_rate": q.FalseAlarmRate, "detection_rate": q.DetectionRate,
		"separation": q.Separation, "validation_windows": float64(q.Windows)}
}

// Judge measures m on the held-out grid g. The synthetic faults shift each of g's signals
// in turn by FaultShift times that signal's scale in m's scaler (or its spread in g when m
// does not score it), so two models judged on the same g face the same faults only when
// they share the scale; the trainer judges both with the same g.
func Judge(m *Model, g *features.Grid) (Quality, error) {
	normal, err := m.ScoreGrid(g)
	if err != nil {
		return Quality{}, err
	}
	if len(normal) == 0 {
		return Quality{}, errors.New("no complete windows in the held-out data")
	}
	q := Quality{Windows: len(normal)}
	for _, s := range normal {
		if s > m.Threshold {
			q.FalseAlarmRate++
		}
	}
	q.FalseAlarmRate /= float64(len(normal))
	var shifted []float64
	buf := slices.Clone(g.Values.Data)
	for j, sig := range g.Signals {
		shift := FaultShift * spread(g, j)
		if k := slices.Index(m.Signals(), sig); k >= 0 {
			shift = FaultShift * m.Artifact.Scaler.Scale[k]
		}
		fg := *g
		fg.Values = models.Matrix{Rows: g.Values.Rows, Cols: g.Values.Cols, Data: slices.Clone(buf)}
		for r := range fg.Values.Rows {
			fg.Values.Data[r*fg.Values.Cols+j] += shift
		}
		s, err := m.ScoreGrid(&fg)
		if err != nil {
			return Quality{}, err
		}
		shifted = append(shifted, s...)
	}
	for _, s := range shifted {
		if s > m.Threshold {
			q.DetectionRate++
		}
	}
	q.DetectionRate /= float64(len(shifted))
	slices.Sort(shifted)
	q.Separation = models.Quantile(shifted, 0.5) / m.Threshold
	return q, nil
}

// spread is the standard deviation of column j of g over its non-NaN values (1 if none).
func spread(g *features.Grid, j int) float64 {
	var n, sum, sq float64
	for r := range g.Values.Rows {
		if v := g.Values.Data[r*g.Values.Cols+j]; !math.IsNaN(v) {
			n, sum, sq = n+1, sum+v, sq+v*v
		}
	}
	if n < 2 {
		return 1
	}
	return math.Sqrt(max(sq/n-(sum/n)*(sum/n), 0)) + 1e-12
}

// FalseAlarmSlack is how much higher a new model's false-alarm rate may be than the
// current one's and still count as "at least as good" (a new model is rarely exactly as
// quiet), and DetectionSlack how much lower its detection rate.
const (
	FalseAlarmSlack = 0.005
	DetectionSlack  = 0.02
)

// Better decides whether the new model validated at least as well as the current one on
// the same held-out data: its false-alarm rate at its own threshold is no more than the
// current one's plus FalseAlarmSlack, and it detects the synthetic faults at least as often
// (minus DetectionSlack). It returns the decision and the reason.
func Better(newQ, curQ Quality) (bool, string) {
	switch {
	case newQ.FalseAlarmRate > curQ.FalseAlarmRate+FalseAlarmSlack:
		return false, fmt.Sprintf("false-alarm rate %.4f is above the current model's %.4f", newQ.FalseAlarmRate, curQ.FalseAlarmRate)
	case newQ.DetectionRate < curQ.DetectionRate-DetectionSlack:
		return false, fmt.Sprintf("detection rate %.3f is below the current model's %.3f", newQ.DetectionRate, curQ.DetectionRate)
	}
	return true, fmt.Sprintf("false-alarm rate %.4f (current %.4f), detection rate %.3f (current %.3f)",
		newQ.FalseAlarmRate, curQ.FalseAlarmRate, newQ.DetectionRate, curQ.DetectionRate)
}

func (t *Trainer) recorder() ledger.Recorder {
	if t.opts.Recorder == nil {
		return nil
	}
	return t.opts.Recorder()
}

// modelRef names a model version in the ledger: anomaly.<machine>@<version>.
func (t *Trainer) modelRef(m *Model) ledger.ModelRef {
	return ledger.ModelRef{Model: "anomaly." + m.Machine, Version: m.Version}
}

// recordDataset records the training's dataset snapshot and returns its record id ("" when
// nothing was recorded).
func (t *Trainer) recordDataset(ctx context.Context, g *features.Grid, h *History) string {
	rec := t.recorder()
	if rec == nil {
		return ""
	}
	var snap ledger.DatasetSnapshot
	uncertain := map[string]int64{}
	for i := range h.Points {
		if h.Points[i].Quality.Level == 1 {
			uncertain[h.Points[i].Signal]++
		}
	}
	for _, s := range g.Stats.Signals {
		w := ledger.SignalWindow{Signal: t.opts.Factory + "//" + h.Machine + "/" + s.Signal,
			From: time.Unix(0, s.First).UTC(), To: time.Unix(0, s.Last).UTC(),
			Rows: int64(s.Samples), BadQuality: int64(s.BadQuality), Uncertain: uncertain[s.Signal]}
		if s.Samples == 0 {
			w.From, w.To = h.From, h.To
		}
		if w.BadQuality+w.Uncertain > w.Rows {
			w.Uncertain = w.Rows - w.BadQuality
		}
		snap.Windows = append(snap.Windows, w)
		snap.Rows += w.Rows
	}
	meta, _ := json.Marshal(struct {
		Windows []ledger.SignalWindow `json:"windows"`
		Stats   features.Stats        `json:"stats"`
	}{snap.Windows, g.Stats})
	sum := sha256.Sum256(meta)
	snap.MetadataHash = hex.EncodeToString(sum[:])
	r, err := rec.Record(ctx, snap)
	if err != nil {
		t.log.Warn("cannot record the dataset snapshot", "machine", h.Machine, "err", err)
		return ""
	}
	return r.Header.ID
}

func (t *Trainer) recordTraining(ctx context.Context, res *Result, datasetID string) {
	rec := t.recorder()
	if rec == nil {
		return
	}
	m := res.Model
	hp := map[string]any{}
	for k, v := range m.Artifact.Training.HyperParameters {
		hp[k] = v
	}
	body := ledger.LocalTraining{
		ModelRef: t.modelRef(m), ArtifactHash: m.Hash, CodeVersion: CodeVersion,
		Metrics: m.Metrics(), HyperParams: hp,
	}
	if res.Current != nil && res.Current.Version != m.Version {
		body.Parents = []ledger.ModelRef{t.modelRef(res.Current)}
	}
	if datasetID != "" {
		body.Datasets = []string{datasetID}
	}
	if _, err := rec.Record(ctx, body); err != nil {
		t.log.Warn("cannot record the training", "machine", m.Machine, "err", err)
	}
}

// calibrate sets m's threshold on the scores of the calibration grid (at least 10
// windows), as configured, and returns it with the scores.
func calibrate(c threshold.Config, m *Model, calib *features.Grid) (threshold.Threshold, []float64, error) {
	cs, err := m.ScoreGrid(calib)
	if err != nil || len(cs) < 10 {
		return threshold.Threshold{}, nil, fmt.Errorf("%d held-out windows to set the threshold on (%v): %w", len(cs), err, errTooLittle)
	}
	th, err := threshold.Fit(c, cs)
	if err != nil {
		return threshold.Threshold{}, nil, err
	}
	m.Threshold = th.Value
	return th, cs, nil
}

// judgeStart judges the warm start's model as the trained model m was judged: m's
// features and scaler (signals signals, windows of cols columns), a threshold set on
// calib, judged on judge.
func (t *Trainer) judgeStart(m *Model, start *WarmStart, signals, cols int, calib, judge *features.Grid) (Quality, error) {
	det, err := t.detector(signals, cols, start)
	if err != nil {
		return Quality{}, err
	}
	sm := &Model{Machine: m.Machine, Artifact: m.Artifact, Detector: det}
	if _, _, err := calibrate(t.cfg.Threshold, sm, calib); err != nil {
		return Quality{}, err
	}
	return Judge(sm, judge)
}

// EvaluationCriteria is the rule an evaluation record states: what a new model must do on
// the held-out data to replace the machine's current one.
var EvaluationCriteria = fmt.Sprintf("judged on the second half of the held-out data at its own threshold (set on the first half): "+
	"its false-alarm rate on normal windows at most the current model's + %g, and its detection rate of synthetic faults "+
	"(one signal at a time shifted by %g robust standard deviations) at least the current model's − %g; "+
	"a machine's first model, or one whose current model cannot score the data, passes", FalseAlarmSlack, FaultShift, DetectionSlack)

// recordEvaluation records how the trained model was evaluated against the current one
// (newQ, and curQ when the current model could be judged): the metrics of both, the
// criteria and whether it passed them, which is whether it was installed.
func (t *Trainer) recordEvaluation(ctx context.Context, res *Result, newQ Quality, curQ *Quality, datasetID string) {
	rec := t.recorder()
	if rec == nil {
		return
	}
	m := res.Model
	metrics := newQ.Metrics()
	if curQ != nil {
		for k, v := range curQ.Metrics() {
			metrics["current_"+k] = v
		}
	}
	body := ledger.Evaluation{ModelRef: t.modelRef(m), ArtifactHash: m.Hash, Metrics: metrics,
		Criteria: EvaluationCriteria + ". Outcome: " + res.Reason, Passed: res.Swapped}
	if datasetID != "" {
		body.Datasets = []string{datasetID}
	}
	if _, err := rec.Record(ctx, body); err != nil {
		t.log.Warn("cannot record the evaluation", "machine", m.Machine, "err", err)
	}
}

func (t *Trainer) recordDeployment(ctx context.Context, res *Result) {
	rec := t.recorder()
	if rec == nil {
		return
	}
	body := ledger.Deployment{ModelRef: t.modelRef(res.Model), ArtifactHash: res.Model.Hash}
	if res.Current != nil && res.Current.Version != res.Model.Version {
		body.Previous = res.Current.Version
	}
	if _, err := rec.Record(ctx, body); err != nil {
		t.log.Warn("cannot record the deployment", "machine", res.Model.Machine, "err", err)
	}
}
