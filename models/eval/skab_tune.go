package eval

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/millwright-io/millwright/models/threshold"
)

// TuneLOGO is the TuneSKAB split that holds out each SKAB experiment folder in turn.
const TuneLOGO = "logo"

// SKABGroup is the experiment folder of a SKAB file (valve1, valve2, other): the first element
// of its name, or "" for a file at the top of the directory.
func SKABGroup(name string) string {
	if i := strings.IndexByte(name, '/'); i > 0 {
		return name[:i]
	}
	return ""
}

// SKABGrid lists the settings TuneSKAB tries around a setup's detector: every combination of
// window, threshold scores (in-sample or cross-fitted), threshold factor and alarm. The
// detector and its threshold rule stay the setup's.
type SKABGrid struct {
	Windows []int
	// Folds are the threshold's cross-fitting block counts tried (see
	// SKABConfig.CrossFitFolds), 1 meaning the in-sample scores; empty: the setup's own.
	Folds   []int
	Factors []float64
	// Alarms are the debouncing candidates; a nil entry predicts each row by its own score.
	Alarms []*threshold.AlarmConfig
	// MaxFAR is the false-alarm rate (in %) a chosen setting may have on the tuning files
	// (default 15, the project's target).
	MaxFAR float64
}

// DefaultSKABGrid is the grid the eval command tunes over: the windows, factors and alarms the
// original sweep on all of SKAB explored.
func DefaultSKABGrid() SKABGrid {
	g := SKABGrid{
		Windows: []int{5, 10, 15, 20, 30},
		Folds:   []int{1, 2, 5},
		Factors: []float64{0.7, 0.8, 0.9, 1, 1.2, 1.5, 2, 3},
		Alarms:  []*threshold.AlarmConfig{nil},
		MaxFAR:  15,
	}
	for _, a := range []threshold.AlarmConfig{
		{K: 3, N: 5, ClearRatio: 1, ClearCount: 5},
		{K: 5, N: 10, ClearRatio: 1, ClearCount: 10},
		{K: 5, N: 10, ClearRatio: 1, ClearCount: 20},
		{K: 8, N: 10, ClearRatio: 1, ClearCount: 20},
		{K: 5, N: 10, ClearRatio: 0.8, ClearCount: 20},
	} {
		g.Alarms = append(g.Alarms, &a)
	}
	return g
}

// SKABFold is one tuning split: the setting chosen on the Tuned folders and how it does there
// and on the HeldOut folders.
type SKABFold struct {
	Tuned, HeldOut       []string // folder names
	Setup                Setup    // the setup with the chosen window, factor and alarm
	TuneResult, HeldRes  *SKABResult
	Candidates, Feasible int // settings tried, and those within MaxFAR on the tuning files
}

// SKABTuneResult is the outcome of TuneSKAB.
type SKABTuneResult struct {
	Split  string
	MaxFAR float64 // the FAR limit of the choice, in %
	Folds  []SKABFold
	// HeldOut counts every file with the setting chosen without its folder (with a fixed split,
	// the held-out files only; with TuneLOGO, every file).
	HeldOut *SKABResult
	// All is the first fold's setting on every file, tuned-on files included.
	All *SKABResult
}

// skabCandidate is one grid point, by index into the grid.
type skabCandidate struct {
	window, folds, factor, alarm int
}

// TuneSKAB chooses a setup's window, threshold scores, threshold factor and alarm on some of SKAB's experiment
// folders and reports them on the others, so that the reported numbers are not tuned on the
// files they are measured on. split names the folders to tune on (comma-separated, e.g.
// "valve1"), the held-out part being the rest; or TuneLOGO: each folder is held out in turn and
// predicted with the setting chosen on the other folders. The chosen setting maximizes F1 over
// the tuning files among those with FAR ≤ MaxFAR (the lowest FAR if none qualifies); ties go to
// the higher standard changepoint score, then to the earlier grid point.
func TuneSKAB(ctx context.Context, files []*Series, setup Setup, grid SKABGrid, split string) (*SKABTuneResult, error) {
	if grid.MaxFAR == 0 {
		grid.MaxFAR = 15
	}
	if len(grid.Windows) == 0 || len(grid.Factors) == 0 || len(grid.Alarms) == 0 {
		return nil, fmt.Errorf("skab tune: empty grid %+v; expected windows, factors and alarms", grid)
	}
	var groups []string
	for _, f := range files {
		if g := SKABGroup(f.Name); !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	slices.Sort(groups)
	var folds [][]string // tuned folders per fold
	switch split {
	case TuneLOGO:
		if len(groups) < 2 {
			return nil, fmt.Errorf("skab tune: %d experiment folder(s) %q; leave-one-group-out needs at least 2", len(groups), groups)
		}
		for _, held := range groups {
			folds = append(folds, slices.DeleteFunc(slices.Clone(groups), func(g string) bool { return g == held }))
		}
	default:
		tuned := strings.Split(split, ",")
		for _, g := range tuned {
			if !slices.Contains(groups, g) {
				return nil, fmt.Errorf("skab tune: folder %q is not in the data; expected %s or %s", g, strings.Join(groups, ", "), TuneLOGO)
			}
		}
		if len(tuned) == len(groups) {
			return nil, fmt.Errorf("skab tune: tuning on every folder (%s) leaves nothing held out", split)
		}
		folds = append(folds, tuned)
	}

	// Scores depend on the window and the folds only: fit each file's detectors once for each.
	type scored struct {
		scores []float64
		level  float64
	}
	if len(grid.Folds) == 0 {
		grid.Folds = []int{max(2, setup.CrossFitFolds)}
		if !setup.CrossFit {
			grid.Folds[0] = 1
		}
	}
	withFolds := func(s Setup, k int) Setup {
		s.CrossFit, s.CrossFitFolds = k > 1, 0
		if k > 2 {
			s.CrossFitFolds = k
		}
		return s
	}
	cache := make([][][]scored, len(grid.Windows)) // [window][folds][file]
	for wi, w := range grid.Windows {
		cache[wi] = make([][]scored, len(grid.Folds))
		for ki, k := range grid.Folds {
			cfg := withFolds(setup, k).SKABConfig()
			cfg.SetDefaults()
			cfg.Window = w
			if err := cfg.Validate(); err != nil {
				return nil, fmt.Errorf("skab tune: %w", err)
			}
			cache[wi][ki] = make([]scored, len(files))
			for fi, f := range files {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				s, l, err := scoreSKABFile(ctx, f, cfg, setup.New)
				if err != nil {
					return nil, fmt.Errorf("skab %s (window %d, folds %d): %w", f.Name, w, k, err)
				}
				cache[wi][ki][fi] = scored{s, l}
			}
		}
	}
	setupOf := func(c skabCandidate) Setup {
		s := setup
		s.Window, s.ThresholdFactor = grid.Windows[c.window], grid.Factors[c.factor]
		s = withFolds(s, grid.Folds[c.folds])
		s.Alarm = nil
		if a := grid.Alarms[c.alarm]; a != nil {
			ac := *a
			s.Alarm = &ac
		}
		s.Description = fmt.Sprintf("%s; tuned: %s", setup.Description, describeSetting(s))
		return s
	}
	run := func(c skabCandidate, into *SKABResult, in func(group string) bool) error {
		cfg := setupOf(c).SKABConfig()
		cfg.SetDefaults()
		for fi, f := range files {
			if !in(SKABGroup(f.Name)) {
				continue
			}
			sc := cache[c.window][c.folds][fi]
			fr, err := predictSKABFile(f, sc.scores, cfg, sc.level*cfg.ThresholdFactor)
			if err != nil {
				return err
			}
			if err := into.add(f, fr, cfg); err != nil {
				return err
			}
		}
		return nil
	}
	newResult := func() *SKABResult { return &SKABResult{Changepoints: NewChangepointScore()} }

	res := &SKABTuneResult{Split: split, MaxFAR: grid.MaxFAR, HeldOut: newResult()}
	for _, tuned := range folds {
		isTuned := func(g string) bool { return slices.Contains(tuned, g) }
		fold := SKABFold{Tuned: tuned}
		for _, g := range groups {
			if !isTuned(g) {
				fold.HeldOut = append(fold.HeldOut, g)
			}
		}
		var best skabCandidate
		var bestRes *SKABResult
		better := func(r *SKABResult) bool {
			if bestRes == nil {
				return true
			}
			okR, okB := r.Confusion.FAR() <= grid.MaxFAR, bestRes.Confusion.FAR() <= grid.MaxFAR
			switch {
			case okR != okB:
				return okR
			case !okR:
				return r.Confusion.FAR() < bestRes.Confusion.FAR()
			case r.Confusion.F1() != bestRes.Confusion.F1():
				return r.Confusion.F1() > bestRes.Confusion.F1()
			}
			return r.Changepoints.Normalized()[0] > bestRes.Changepoints.Normalized()[0]
		}
		for wi := range grid.Windows {
			for ki := range grid.Folds {
				for fi := range grid.Factors {
					for ai := range grid.Alarms {
						c := skabCandidate{wi, ki, fi, ai}
						r := newResult()
						if err := run(c, r, isTuned); err != nil {
							return nil, err
						}
						fold.Candidates++
						if r.Confusion.FAR() <= grid.MaxFAR {
							fold.Feasible++
						}
						if better(r) {
							best, bestRes = c, r
						}
					}
				}
			}
		}
		fold.Setup, fold.TuneResult = setupOf(best), bestRes
		fold.HeldRes = newResult()
		held := func(g string) bool { return !isTuned(g) }
		if err := run(best, fold.HeldRes, held); err != nil {
			return nil, err
		}
		if err := run(best, res.HeldOut, held); err != nil {
			return nil, err
		}
		if res.All == nil {
			res.All = newResult()
			if err := run(best, res.All, func(string) bool { return true }); err != nil {
				return nil, err
			}
		}
		res.Folds = append(res.Folds, fold)
	}
	return res, nil
}

// describeSetting is the tuned part of a setup in a few words.
func describeSetting(s Setup) string {
	a := "none"
	if s.Alarm != nil {
		a = fmt.Sprintf("%d of %d, cleared by %d below %g×", s.Alarm.K, s.Alarm.N, s.Alarm.ClearCount, s.Alarm.ClearRatio)
	}
	cf := "in-sample threshold"
	if s.CrossFit {
		cf = fmt.Sprintf("cross-fitted in %d folds", max(2, s.CrossFitFolds))
	}
	return fmt.Sprintf("window %d, %s, factor %g, alarm %s", s.Window, cf, s.ThresholdFactor, a)
}

// skabRow formats one result as a table row: F1, FAR, MAR, the three changepoint scores,
// missed changepoints and changepoint FPs.
func skabRow(r *SKABResult) string {
	c := r.Confusion
	n := r.Changepoints.Normalized()
	f1 := c.F1()
	if math.IsNaN(f1) {
		f1 = 0
	}
	return fmt.Sprintf("%.3f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d/%d\t%d\t", f1, c.FAR(), c.MAR(), n[0], n[1], n[2],
		r.Changepoints.Missed, r.Changepoints.Windows, r.Changepoints.FPs)
}

// PrintSKABTune writes a tuning run: per fold the chosen setting and its numbers on the tuning
// and the held-out folders, then the held-out files together and every file.
func PrintSKABTune(w io.Writer, r *SKABTuneResult, setup Setup, dir string) error {
	fmt.Fprintf(w, "SKAB %s: detector %s, tuned by split %q (window, threshold scores, factor and alarm chosen on the tuning folders: best F1 with FAR ≤ %g %%)\n  %s\n\n",
		dir, setup.Name, r.Split, r.MaxFAR, setup.Description)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "files\tF1\tFAR, %\tMAR, %\tCP standard\tCP low FP\tCP low FN\tmissed CPs\tCP FPs\t")
	for _, f := range r.Folds {
		fmt.Fprintf(tw, "tuned on %s (%d of %d settings within the FAR limit)\t%s\n", strings.Join(f.Tuned, "+"), f.Feasible, f.Candidates, skabRow(f.TuneResult))
		fmt.Fprintf(tw, "  held out %s\t%s\n", strings.Join(f.HeldOut, "+"), skabRow(f.HeldRes))
	}
	label := "held-out files together"
	if r.Split == TuneLOGO {
		label = "all files, each with the setting tuned without its folder"
	}
	fmt.Fprintf(tw, "%s\t%s\n", label, skabRow(r.HeldOut))
	fmt.Fprintf(tw, "all files, setting of %s (tuned-on files included)\t%s\n", strings.Join(r.Folds[0].Tuned, "+"), skabRow(r.All))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, f := range r.Folds {
		fmt.Fprintf(w, "chosen on %s: %s\n", strings.Join(f.Tuned, "+"), describeSetting(f.Setup))
	}
	return nil
}
