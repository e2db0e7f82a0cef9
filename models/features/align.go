// Package features turns one machine's telemetry into the rows detectors score: signals aligned on a fixed time grid, robustly scaled, cut into sliding windows.
//
// Alignment keeps, per signal, the newest good sample and carries it forward for at most
// FillLimit grid steps; a grid row in which some signal has no such sample is incomplete, is
// counted, and never enters a window. Bad-quality samples (and, when configured, uncertain
// ones) and non-numeric values are excluded and counted per signal. The same Aligner and
// Windower serve training on history and live scoring, so both see identical rows.
package features

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/models"
)

// Config configures alignment and windowing. The zero value means the defaults.
type Config struct {
	// Step is the grid's time step (default 1s).
	Step time.Duration `yaml:"step" json:"step"`
	// FillLimit is how many grid steps a sample is carried forward after the step it falls
	// in (default 5; 0 uses only samples of the row's own step).
	FillLimit int `yaml:"fill_limit" json:"fill_limit"`
	// ExcludeUncertain excludes uncertain-quality samples as well as bad ones.
	ExcludeUncertain bool `yaml:"exclude_uncertain" json:"exclude_uncertain"`
	// WindowSize is the number of grid rows in a window (default 10).
	WindowSize int `yaml:"window_size" json:"window_size"`
	// WindowStride is the number of grid rows between the starts of scored windows (default
	// 5). With an alarm that needs K windows, one noisy sample (which lies in at most
	// ceil(WindowSize/WindowStride) windows) cannot raise it alone when K is larger.
	WindowStride int `yaml:"window_stride" json:"window_stride"`
	// TrainStride is the stride of the windows training fits on (default 1: every window).
	TrainStride int `yaml:"train_stride" json:"train_stride"`
	// MinCoverage is the share of grid rows in which a signal must have a value for
	// training to use it, in [0, 1] (default 0.5); sparser signals are dropped from the model.
	MinCoverage float64 `yaml:"min_coverage" json:"min_coverage"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	c := Config{}
	c.SetDefaults()
	return c
}

// SetDefaults fills zero values with the defaults.
func (c *Config) SetDefaults() {
	if c.Step == 0 {
		c.Step = time.Second
	}
	if c.FillLimit == 0 {
		c.FillLimit = 5
	}
	if c.WindowSize == 0 {
		c.WindowSize = 10
	}
	if c.WindowStride == 0 {
		c.WindowStride = 5
	}
	if c.TrainStride == 0 {
		c.TrainStride = 1
	}
	if c.MinCoverage == 0 {
		c.MinCoverage = 0.5
	}
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var p config.Problems
	if c.Step < time.Millisecond || c.Step > 24*time.Hour {
		p.Addf("step", "step %s is out of range; expected 1ms to 24h", c.Step)
	}
	if c.FillLimit < 0 || c.FillLimit > MaxFillLimit {
		p.Addf("fill_limit", "fill_limit %d (%s at step %s) is out of range; expected 0 to %d (%s at this step): live scoring holds every signal's samples while it waits for a signal lagging up to fill_limit steps, and holds at most %d per signal; use a longer step",
			c.FillLimit, time.Duration(c.FillLimit)*c.Step, c.Step, MaxFillLimit, time.Duration(MaxFillLimit)*c.Step, pendingLimit(MaxFillLimit))
	}
	if c.WindowSize < 1 || c.WindowSize > 4096 {
		p.Addf("window_size", "window_size %d is out of range; expected 1 to 4096", c.WindowSize)
	}
	if c.WindowStride < 1 || c.WindowStride > 1<<20 {
		p.Addf("window_stride", "window_stride %d is out of range; expected 1 to %d", c.WindowStride, 1<<20)
	}
	if c.TrainStride < 1 || c.TrainStride > 1<<20 {
		p.Addf("train_stride", "train_stride %d is out of range; expected 1 to %d", c.TrainStride, 1<<20)
	}
	if !(c.MinCoverage >= 0 && c.MinCoverage <= 1) {
		p.Addf("min_coverage", "min_coverage %v is out of range; expected 0 to 1", c.MinCoverage)
	}
	return p.Err()
}

// SignalStats counts what alignment did with one signal's samples.
type SignalStats struct {
	Signal string `json:"signal"`
	// Samples is the number of samples seen, BadQuality those excluded for their quality,
	// Invalid those excluded for a non-numeric or non-finite value or no timestamp, Late
	// those older than a sample already held for the same or a later step.
	Samples    int `json:"samples"`
	BadQuality int `json:"bad_quality"`
	Invalid    int `json:"invalid"`
	Late       int `json:"late"`
	// Overflow counts samples dropped because more grid steps of them waited for Emit
	// than the aligner holds (the larger of 64 and fill_limit+2).
	Overflow int `json:"overflow"`
	// First and Last are the times of the first and last usable samples, Unix nanoseconds
	// (0 when there were none): the signal's data window.
	First int64 `json:"first"`
	Last  int64 `json:"last"`
	// Filled is the number of grid rows whose value was carried forward from an earlier
	// step, Missing the number without a value.
	Filled  int `json:"filled"`
	Missing int `json:"missing"`
}

// Stats summarises an alignment.
type Stats struct {
	Rows           int           `json:"rows"`
	IncompleteRows int           `json:"incomplete_rows"`
	Ignored        int           `json:"ignored"` // points of other machines or signals, or (Align) outside the window
	Signals        []SignalStats `json:"signals"`
}

// MaxFillLimit caps Config.FillLimit, and with it the samples an Aligner holds per signal
// (pendingLimit): at most MaxFillLimit+2 samples of about 24 bytes, 393 KiB per signal,
// allocated only as samples wait.
const MaxFillLimit = 1 << 14

// minPending is the smallest pending bound, so a source may always run 64 steps ahead of
// Emit whatever the fill limit.
const minPending = 64

// pendingLimit bounds, per signal, the samples held for grid rows not emitted yet (one per
// grid step). A live scorer emits a row only once every signal lagging the newest by at
// most fillLimit steps has moved past it (models/score's watermark), so the newest signal
// holds the samples of up to fillLimit+1 steps, plus the one just added before the rows are
// emitted: fillLimit+2. Beyond the bound the oldest pending sample is dropped and counted
// as Overflow, and its row would differ from the one training aligns from the same samples.
func pendingLimit(fillLimit int) int { return max(minPending, fillLimit+2) }

// sample is one accepted sample.
type sample struct {
	v    float64
	at   int64 // time, Unix nanoseconds
	grid int64 // grid time of the step it falls in
}

// signalState is the aligner's state for one signal.
type signalState struct {
	held    sample // newest sample of a step already emitted
	has     bool
	pending ring // samples of steps not emitted yet, ascending by grid time, one per step
}

// ring is a queue of samples in a circular buffer, so that dropping the oldest (as Emit and
// an overflow do) costs O(1) however many are held. Its buffer grows by doubling up to the
// limit insert is given.
type ring struct {
	buf  []sample
	head int // index in buf of the oldest sample
	n    int // samples held
}

// at returns the j-th oldest sample, 0 <= j < n.
func (r *ring) at(j int) *sample { return &r.buf[(r.head+j)%len(r.buf)] }

// drop removes the k oldest samples, 0 <= k <= n.
func (r *ring) drop(k int) {
	if k > 0 {
		r.head, r.n = (r.head+k)%len(r.buf), r.n-k
	}
}

// insert places smp at position k, 0 <= k <= n < limit, shifting the newer ones.
func (r *ring) insert(k int, smp sample, limit int) {
	if r.n == len(r.buf) {
		buf := make([]sample, min(max(2*len(r.buf), minPending), limit))
		for j := range r.n {
			buf[j] = *r.at(j)
		}
		r.buf, r.head = buf, 0
	}
	for j := r.n; j > k; j-- {
		*r.at(j) = *r.at(j - 1)
	}
	*r.at(k) = smp
	r.n++
}

// Aligner aligns one machine's samples onto the grid, incrementally: Add samples, then Emit
// the grid rows up to a time. Row t holds, per signal, the newest sample of the step
// [t, t+Step) or, when there is none, of the last FillLimit steps before it. Samples may
// arrive in any order and ahead of Emit (see pendingLimit). It is not safe for concurrent
// use; its memory is bounded by the number of signals and the fill limit.
type Aligner struct {
	machine string
	signals []string
	index   map[string]int
	step    int64
	fill    int64
	uncert  bool
	sig     []signalState
	pending int   // most samples held per signal (pendingLimit)
	next    int64 // next grid time to emit, once started
	started bool
	stats   Stats
	row     []float64
}

// NewAligner returns an aligner for machine's signals (in column order). An empty machine
// accepts points of any machine.
func NewAligner(cfg Config, machine string, signals []string) (*Aligner, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	if len(signals) == 0 {
		return nil, fmt.Errorf("features: no signals; expected at least one")
	}
	a := &Aligner{
		machine: machine, signals: slices.Clone(signals), index: make(map[string]int, len(signals)),
		step: int64(cfg.Step), fill: int64(cfg.FillLimit), uncert: cfg.ExcludeUncertain, pending: pendingLimit(cfg.FillLimit),
		sig: make([]signalState, len(signals)), row: make([]float64, len(signals)),
	}
	a.stats.Signals = make([]SignalStats, len(signals))
	for i, s := range signals {
		if _, dup := a.index[s]; dup {
			return nil, fmt.Errorf("features: signal %q is listed twice", s)
		}
		a.index[s] = i
		a.stats.Signals[i].Signal = s
		a.sig[i].pending.buf = make([]sample, minPending)
	}
	return a, nil
}

// Signals returns the column order. It is shared: do not modify it.
func (a *Aligner) Signals() []string { return a.signals }

// Stats returns the counts so far.
func (a *Aligner) Stats() Stats {
	s := a.stats
	s.Signals = slices.Clone(s.Signals)
	return s
}

// Add offers one sample. Points of other machines or signals are counted as ignored;
// excluded samples are counted per signal.
func (a *Aligner) Add(p *telemetry.Point) {
	i, ok := a.index[p.Signal]
	if !ok || (a.machine != "" && p.Machine != a.machine) {
		a.stats.Ignored++
		return
	}
	st := &a.stats.Signals[i]
	st.Samples++
	if p.Quality.Level == telemetry.Bad || (a.uncert && p.Quality.Level == telemetry.Uncertain) {
		st.BadQuality++
		return
	}
	v := p.Value.Float()
	t := p.Time()
	if math.IsNaN(v) || math.IsInf(v, 0) || t == 0 {
		st.Invalid++
		return
	}
	s := &a.sig[i]
	smp := sample{v: v, at: t, grid: a.GridTime(t)}
	switch {
	case a.started && smp.grid < a.next:
		// Its row is out already; it still serves later rows if it is the newest.
		if s.has && t < s.held.at {
			st.Late++
			return
		}
		s.held, s.has = smp, true
	default:
		q := &s.pending
		k := sort.Search(q.n, func(j int) bool { return q.at(j).grid >= smp.grid })
		switch {
		case k < q.n && q.at(k).grid == smp.grid:
			if t < q.at(k).at {
				st.Late++
				return
			}
			*q.at(k) = smp
		case q.n == a.pending && k == 0:
			st.Overflow++
			return
		default:
			if q.n == a.pending {
				st.Overflow++
				q.drop(1)
				k--
			}
			q.insert(k, smp, a.pending)
		}
	}
	if st.First == 0 || t < st.First {
		st.First = t
	}
	st.Last = max(st.Last, t)
}

// GridTime returns the grid time at or before t.
func (a *Aligner) GridTime(t int64) int64 {
	g := t - t%a.step
	if t < 0 && t%a.step != 0 {
		g -= a.step
	}
	return g
}

// Emit produces the grid rows from the last emitted one (or from the grid time at or before
// from, on the first call) up to and including the grid time at or before until, calling fn
// with each row's time, values (NaN where missing; the slice is reused) and completeness.
// A row's samples must have arrived when it is emitted: a live caller passes until = now
// minus one step and the expected delivery delay.
func (a *Aligner) Emit(from, until int64, fn func(t int64, row []float64, complete bool)) {
	if !a.started {
		a.next, a.started = a.GridTime(from), true
	}
	end := a.GridTime(until)
	for ; a.next <= end; a.next += a.step {
		t := a.next
		complete := true
		for i := range a.sig {
			s := &a.sig[i]
			q := &s.pending
			n := 0
			for n < q.n && q.at(n).grid <= t {
				n++
			}
			if n > 0 {
				if last := q.at(n - 1); !s.has || last.at >= s.held.at {
					s.held, s.has = *last, true
				}
				q.drop(n)
			}
			age := (t - s.held.grid) / a.step
			if !s.has || age > a.fill {
				a.row[i] = math.NaN()
				complete = false
				a.stats.Signals[i].Missing++
				continue
			}
			a.row[i] = s.held.v
			if age > 0 {
				a.stats.Signals[i].Filled++
			}
		}
		a.stats.Rows++
		if !complete {
			a.stats.IncompleteRows++
		}
		fn(t, a.row, complete)
	}
}

// Grid is one machine's signals aligned on the time grid.
type Grid struct {
	Start    int64         // time of row 0, Unix nanoseconds
	Step     time.Duration // time between rows
	Signals  []string      // column order
	Values   models.Matrix // rows × signals, NaN where missing
	Complete []bool        // per row: every signal has a value
	Stats    Stats
}

// Align aligns the points of machine (any machine when empty) on the grid from the grid
// time at or before from to the one at or before to. Points may come in any order; Align
// sorts a copy of their order, not the points.
func Align(cfg Config, machine string, signals []string, points []telemetry.Point, from, to time.Time) (*Grid, error) {
	if !to.After(from) {
		return nil, fmt.Errorf("features: align: window %s to %s is empty; expected from before to", from, to)
	}
	a, err := NewAligner(cfg, machine, signals)
	if err != nil {
		return nil, err
	}
	order := make([]int, len(points))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool { return points[order[i]].Time() < points[order[j]].Time() })
	g := &Grid{Start: a.GridTime(from.UnixNano()), Step: time.Duration(a.step), Signals: a.Signals()}
	rows := int((a.GridTime(to.UnixNano())-g.Start)/a.step) + 1
	g.Values = models.NewMatrix(0, len(signals))
	g.Values.Data = make([]float64, 0, rows*len(signals))
	g.Complete = make([]bool, 0, rows)
	k := 0
	for ; k < len(order) && points[order[k]].Time() < g.Start; k++ {
		a.stats.Ignored++ // before the window
	}
	for t := g.Start; t <= to.UnixNano(); t += a.step {
		for ; k < len(order) && points[order[k]].Time() < t+a.step; k++ {
			a.Add(&points[order[k]])
		}
		a.Emit(from.UnixNano(), t, func(_ int64, row []float64, complete bool) {
			g.Values.Data = append(g.Values.Data, row...)
			g.Values.Rows++
			g.Complete = append(g.Complete, complete)
		})
	}
	for ; k < len(order); k++ {
		a.stats.Ignored++ // after the window
	}
	g.Stats = a.Stats()
	return g, nil
}

// Coverage returns, per signal, the share of rows with a value (counted from Values, so it
// holds for a grid sliced from a longer one).
func (g *Grid) Coverage() []float64 {
	out := make([]float64, len(g.Signals))
	if g.Values.Rows == 0 {
		return out
	}
	for r := range g.Values.Rows {
		for j, v := range g.Values.Row(r) {
			if !math.IsNaN(v) {
				out[j]++
			}
		}
	}
	for j := range out {
		out[j] /= float64(g.Values.Rows)
	}
	return out
}

// Continuity is how continuously one signal has values on a grid.
type Continuity struct {
	Signal     string
	Coverage   float64 // share of rows with a value
	LongestRun int     // most consecutive rows with a value
	LongestGap int     // most consecutive rows without one
}

// Continuity returns, per signal in column order, its coverage and its longest run of rows
// with and without a value.
func (g *Grid) Continuity() []Continuity {
	out := make([]Continuity, len(g.Signals))
	run, gap := make([]int, len(g.Signals)), make([]int, len(g.Signals))
	for j := range out {
		out[j].Signal = g.Signals[j]
	}
	for r := range g.Values.Rows {
		for j, v := range g.Values.Row(r) {
			if math.IsNaN(v) {
				run[j], gap[j] = 0, gap[j]+1
			} else {
				run[j], gap[j] = run[j]+1, 0
				out[j].Coverage++ // counted here, divided below
			}
			out[j].LongestRun = max(out[j].LongestRun, run[j])
			out[j].LongestGap = max(out[j].LongestGap, gap[j])
		}
	}
	if g.Values.Rows > 0 {
		for j := range out {
			out[j].Coverage /= float64(g.Values.Rows)
		}
	}
	return out
}

// DropSparse returns the grid without the signals whose coverage is below minCoverage,
// with completeness recomputed, and the names of the dropped signals. It returns g itself
// when nothing is dropped.
func (g *Grid) DropSparse(minCoverage float64) (*Grid, []string) {
	cov := g.Coverage()
	return g.keep(func(i int) bool { return cov[i] >= minCoverage && cov[i] > 0 })
}

// DropShortRuns returns the grid without the signals that have a value in no run of size
// consecutive rows, with completeness recomputed, and the names of the dropped signals: no
// window of size rows can be complete with such a signal, whatever the others do. It
// returns g itself when nothing is dropped.
func (g *Grid) DropShortRuns(size int) (*Grid, []string) {
	cont := g.Continuity()
	return g.keep(func(i int) bool { return cont[i].LongestRun >= size })
}

// keep returns the grid with only the signals i for which keep(i) holds, and the names of
// the others.
func (g *Grid) keep(keep func(i int) bool) (*Grid, []string) {
	var kept []int
	var dropped []string
	for i, name := range g.Signals {
		if keep(i) {
			kept = append(kept, i)
		} else {
			dropped = append(dropped, name)
		}
	}
	if len(dropped) == 0 {
		return g, nil
	}
	out := &Grid{Start: g.Start, Step: g.Step, Complete: make([]bool, g.Values.Rows)}
	out.Values = models.NewMatrix(g.Values.Rows, len(kept))
	for _, i := range kept {
		out.Signals = append(out.Signals, g.Signals[i])
	}
	out.Stats = g.Stats
	out.Stats.Signals = nil
	for _, i := range kept {
		out.Stats.Signals = append(out.Stats.Signals, g.Stats.Signals[i])
	}
	out.Stats.IncompleteRows = 0
	for r := range g.Values.Rows {
		src, dst := g.Values.Row(r), out.Values.Row(r)
		complete := true
		for j, i := range kept {
			dst[j] = src[i]
			if math.IsNaN(src[i]) {
				complete = false
			}
		}
		out.Complete[r] = complete
		if !complete {
			out.Stats.IncompleteRows++
		}
	}
	return out, dropped
}
