package features

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/models"
)

// Training is one machine's history turned into detector rows.
type Training struct {
	Grid    *Grid         // the aligned grid, without the dropped signals, unscaled
	Dropped []string      // signals dropped for coverage below Config.MinCoverage, then those with values in no WindowSize consecutive rows
	Scaler  *Scaler       // fitted on the kept signals
	Windows models.Matrix // scaled, flattened windows
	Starts  []int         // per window, the grid row it starts at
}

// ErrNoSignal is Prepare's error when every signal is dropped: the history is too sparse
// (or too gappy) to train on.
var ErrNoSignal = errors.New("no signal left to train on")

// Prepare drops the sparse signals of g (coverage below Config.MinCoverage) and those with
// values in no Config.WindowSize consecutive rows (no window can be complete with them),
// fits the scaler on the rest and cuts the scaled grid into windows with
// Config.TrainStride. g is not modified.
func Prepare(cfg Config, g *Grid) (*Training, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	kept, dropped := g.DropSparse(cfg.MinCoverage)
	if len(kept.Signals) == 0 {
		return nil, fmt.Errorf("features: every signal has coverage below min_coverage %v: %s: %w",
			cfg.MinCoverage, DescribeGaps(cfg, g.Continuity()), ErrNoSignal)
	}
	// A signal with values in no window_size consecutive rows is in no complete window;
	// it is dropped as a sparse one is, so the other signals still train.
	kept, short := kept.DropShortRuns(cfg.WindowSize)
	if len(kept.Signals) == 0 {
		return nil, fmt.Errorf("features: no signal has values in window_size %d consecutive rows, so no window is complete: %s: %w",
			cfg.WindowSize, DescribeGaps(cfg, g.Continuity()), ErrNoSignal)
	}
	dropped = append(dropped, short...)
	sc, err := FitScaler(kept.Signals, kept.Values)
	if err != nil {
		return nil, err
	}
	scaled := models.Matrix{Rows: kept.Values.Rows, Cols: kept.Values.Cols, Data: slices.Clone(kept.Values.Data)}
	sc.TransformMatrix(scaled)
	win, starts, err := Windows(scaled, kept.Complete, cfg.WindowSize, cfg.TrainStride)
	if err != nil {
		return nil, err
	}
	return &Training{Grid: kept, Dropped: dropped, Scaler: sc, Windows: win, Starts: starts}, nil
}

// maxDescribed bounds the signals DescribeGaps names.
const maxDescribed = 5

// DescribeGaps names the signals of cont that have gaps, at most maxDescribed of them, the
// least covered first: their coverage, longest runs with and without a value, and the
// fill_limit that would carry each value across its longest gap. Errors and logs use it
// to say which signal keeps rows incomplete and which setting would fix it.
func DescribeGaps(cfg Config, cont []Continuity) string {
	cfg.SetDefaults()
	var gaps []Continuity
	for _, c := range cont {
		if c.LongestGap > 0 {
			gaps = append(gaps, c)
		}
	}
	if len(gaps) == 0 {
		return "no signal has gaps"
	}
	slices.SortStableFunc(gaps, func(a, b Continuity) int { return cmp.Compare(a.Coverage, b.Coverage) })
	var b strings.Builder
	for i, c := range gaps[:min(len(gaps), maxDescribed)] {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%q has values in %.0f%% of the rows, in runs of at most %d rows, with gaps of up to %d rows of %s (fill_limit %d would bridge them)",
			c.Signal, 100*c.Coverage, c.LongestRun, c.LongestGap, cfg.Step, cfg.FillLimit+c.LongestGap)
	}
	if len(gaps) > maxDescribed {
		fmt.Fprintf(&b, "; and %d more", len(gaps)-maxDescribed)
	}
	fmt.Fprintf(&b, "; raise fill_limit (%d, at most %d) or step (%s) to carry slow signals across their gaps, or raise min_coverage (%v) to drop sparse ones",
		cfg.FillLimit, MaxFillLimit, cfg.Step, cfg.MinCoverage)
	return b.String()
}

// Stream turns live samples of one machine into scaled windows, with the model's signals,
// scaler and windowing. Its memory is fixed by the signal count and the window size. It is
// not safe for concurrent use.
type Stream struct {
	a  *Aligner
	sc *Scaler
	w  *Windower
}

// NewStream returns a stream for machine with the signals of sc.
func NewStream(cfg Config, machine string, sc *Scaler) (*Stream, error) {
	cfg.SetDefaults()
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("features: stream: %w", err)
	}
	a, err := NewAligner(cfg, machine, sc.Signals)
	if err != nil {
		return nil, err
	}
	w, err := NewWindower(len(sc.Signals), cfg.WindowSize, cfg.WindowStride)
	if err != nil {
		return nil, err
	}
	return &Stream{a: a, sc: sc, w: w}, nil
}

// Add offers one live sample.
func (s *Stream) Add(p *telemetry.Point) { s.a.Add(p) }

// Stats returns the aligner's counts so far.
func (s *Stream) Stats() Stats { return s.a.Stats() }

// Totals returns the aligner's per-signal counts summed over the signals (Signal, First and
// Last left zero) and its count of incomplete rows. Unlike Stats it does not allocate, so
// the live path can read it per batch.
func (s *Stream) Totals() (sum SignalStats, incompleteRows int) {
	for _, sg := range s.a.stats.Signals {
		sum.Samples += sg.Samples
		sum.BadQuality += sg.BadQuality
		sum.Invalid += sg.Invalid
		sum.Late += sg.Late
		sum.Overflow += sg.Overflow
		sum.Filled += sg.Filled
		sum.Missing += sg.Missing
	}
	return sum, s.a.stats.IncompleteRows
}

// Advance emits the grid rows up to until (from sets the first row on the first call) and
// calls fn with every window they complete: the grid time of the window's last row and
// the scaled window (valid only during the call).
func (s *Stream) Advance(from, until int64, fn func(end int64, window []float64)) {
	s.a.Emit(from, until, func(t int64, row []float64, complete bool) {
		s.sc.Transform(row)
		if win, ok := s.w.Push(row, complete); ok {
			fn(t, win)
		}
	})
}

// Apply cuts g into windows (with Config.WindowStride) scaled with a fitted scaler, taking the scaler's signals from g
// by name (so a grid aligned on more or reordered signals works). It returns the windows
// and, per window, the grid row it starts at.
func Apply(cfg Config, g *Grid, sc *Scaler) (models.Matrix, []int, error) {
	cfg.SetDefaults()
	if err := sc.Validate(); err != nil {
		return models.Matrix{}, nil, fmt.Errorf("features: apply: %w", err)
	}
	cols := make([]int, len(sc.Signals))
	for j, name := range sc.Signals {
		cols[j] = slices.Index(g.Signals, name)
		if cols[j] < 0 {
			return models.Matrix{}, nil, fmt.Errorf("features: apply: the grid has no signal %q (it has %v)", name, g.Signals)
		}
	}
	vals := models.NewMatrix(g.Values.Rows, len(cols))
	complete := make([]bool, g.Values.Rows)
	for r := range g.Values.Rows {
		src, dst := g.Values.Row(r), vals.Row(r)
		complete[r] = true
		for j, c := range cols {
			dst[j] = src[c]
			if math.IsNaN(dst[j]) {
				complete[r] = false
			}
		}
		sc.Transform(dst)
	}
	return Windows(vals, complete, cfg.WindowSize, cfg.WindowStride)
}
