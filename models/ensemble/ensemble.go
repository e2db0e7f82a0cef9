// Package ensemble picks or combines a machine's detectors on validation data when there are no labels.
//
// Fit trains every member on the first rows of the training matrix and holds the last
// HoldoutFraction back. The holdout's first half calibrates each member: its score median
// and spread (Q(0.99) − median) normalise the member's scores, and a threshold (package
// threshold) is fitted on it. The holdout's second half judges each candidate — every member
// alone, and the mean of the members' normalised scores — by
//
//	utility = detection − FARWeight · FAR
//
// where FAR is the share of the (normal) second-half rows scored above the candidate's
// threshold and detection the share of the same rows scored above it after a synthetic fault:
// one signal (every column of it in a window) shifted by ±Perturbation robust units. The
// candidate with the highest utility wins; ties go to the simpler one (members in order,
// the mean last). The ensemble's score is the winner's normalised score.
package ensemble

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/pca"
	"github.com/millwright-io/millwright/models/threshold"
)

// Kind is the detector family name.
const Kind = "ensemble"

// Mean is the name of the combined candidate in a Report.
const Mean = "mean"

// Config configures the selection. The zero value means the defaults.
type Config struct {
	// HoldoutFraction is the share of training rows, from the end, held out for selection,
	// in [0.1, 0.6] (default 0.3).
	HoldoutFraction float64 `yaml:"holdout_fraction" json:"holdout_fraction"`
	// Signals is the number of signals per grid row when rows are flattened windows (column
	// j belongs to signal j mod Signals); 0 treats every column as its own signal.
	Signals int `yaml:"signals" json:"signals"`
	// Perturbation is the synthetic fault's shift in robust units (default 3).
	Perturbation float64 `yaml:"perturbation" json:"perturbation"`
	// FARWeight is the cost of a false alarm relative to a missed synthetic fault (default 5).
	FARWeight float64 `yaml:"far_weight" json:"far_weight"`
	// Threshold is how each candidate's threshold is fitted for the criterion.
	Threshold threshold.Config `yaml:"threshold" json:"threshold"`
	// Seed makes the perturbations reproducible.
	Seed uint64 `yaml:"seed" json:"seed"`
}

// SetDefaults fills zero values with the defaults.
func (c *Config) SetDefaults() {
	if c.HoldoutFraction == 0 {
		c.HoldoutFraction = 0.3
	}
	if c.Perturbation == 0 {
		c.Perturbation = 3
	}
	if c.FARWeight == 0 {
		c.FARWeight = 5
	}
	c.Threshold.SetDefaults()
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var p config.Problems
	if !(c.HoldoutFraction >= 0.1 && c.HoldoutFraction <= 0.6) {
		p.Addf("holdout_fraction", "holdout_fraction %v is out of range; expected 0.1 to 0.6", c.HoldoutFraction)
	}
	if c.Signals < 0 {
		p.Addf("signals", "signals %d is negative; expected 0 or the signals per grid row", c.Signals)
	}
	if !(c.Perturbation > 0) || math.IsInf(c.Perturbation, 0) {
		p.Addf("perturbation", "perturbation %v is out of range; expected a positive number", c.Perturbation)
	}
	if !(c.FARWeight >= 0) || math.IsInf(c.FARWeight, 0) {
		p.Addf("far_weight", "far_weight %v is out of range; expected 0 or more", c.FARWeight)
	}
	p.Nest("threshold", c.Threshold.Validate())
	return p.Err()
}

// Candidate is one judged candidate.
type Candidate struct {
	Name      string  `json:"name"`
	FAR       float64 `json:"far"`
	Detection float64 `json:"detection"`
	Utility   float64 `json:"utility"`
}

// Report is the outcome of the selection.
type Report struct {
	Chosen     string      `json:"chosen"`
	Candidates []Candidate `json:"candidates"`
	FitRows    int         `json:"fit_rows"`
	HoldRows   int         `json:"holdout_rows"`
}

// norm maps a member's score to robust units of its calibration scores.
type norm struct {
	Median float64 `json:"median"`
	Spread float64 `json:"spread"`
}

// apply returns s in robust units, kept finite (a detector's largest score stays largest).
func (n norm) apply(s float64) float64 {
	v := (s - n.Median) / n.Spread
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return math.Copysign(math.MaxFloat64, v)
	}
	return v
}

// Ensemble is a selection or combination of detectors. It implements models.Detector,
// models.Contributor and models.Persistent.
type Ensemble struct {
	cfg     Config
	members []models.Detector
	norms   []norm
	chosen  int // member index, or len(members) for the mean
	fitted  bool
	report  Report
	buf     []float64
	cbuf    []float64
}

var (
	_ models.Detector    = (*Ensemble)(nil)
	_ models.Contributor = (*Ensemble)(nil)
	_ models.Persistent  = (*Ensemble)(nil)
)

// New returns an unfitted ensemble of members (at least one, each of a distinct kind).
func New(cfg Config, members ...models.Detector) (*Ensemble, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ensemble: %w", err)
	}
	if len(members) == 0 {
		return nil, errors.New("ensemble: no members; expected at least one detector")
	}
	seen := map[string]bool{}
	for _, m := range members {
		if seen[m.Kind()] {
			return nil, fmt.Errorf("ensemble: two members of kind %q; expected one of each kind", m.Kind())
		}
		seen[m.Kind()] = true
	}
	return &Ensemble{cfg: cfg, members: slices.Clone(members)}, nil
}

// NewDefault returns an ensemble of a PCA detector and an autoencoder with their default
// configurations and seed.
func NewDefault(cfg Config, seed uint64) (*Ensemble, error) {
	p, err := pca.New(pca.Config{})
	if err != nil {
		return nil, err
	}
	a, err := autoencoder.New(autoencoder.Config{Seed: seed})
	if err != nil {
		return nil, err
	}
	if cfg.Seed == 0 {
		cfg.Seed = seed
	}
	return New(cfg, p, a)
}

// Kind returns "ensemble".
func (e *Ensemble) Kind() string { return Kind }

// Report returns the selection's report.
func (e *Ensemble) Report() Report { return e.report }

// Members returns the members, in order. The slice is shared: do not modify it.
func (e *Ensemble) Members() []models.Detector { return e.members }

// Chosen returns the chosen member, or nil when the ensemble scores with the mean.
func (e *Ensemble) Chosen() models.Detector {
	if e.chosen < len(e.members) {
		return e.members[e.chosen]
	}
	return nil
}

// Fit trains the members and selects among them as the package comment describes. It
// needs at least 20 rows. On error the ensemble is unchanged, but its members may have been
// refitted.
func (e *Ensemble) Fit(ctx context.Context, train models.Matrix) error {
	if err := train.Check(20); err != nil {
		return fmt.Errorf("ensemble: fit: %w", err)
	}
	nHold := int(e.cfg.HoldoutFraction * float64(train.Rows))
	nFit := train.Rows - nHold
	fit, calib, test := train.Slice(0, nFit), train.Slice(nFit, nFit+nHold/2), train.Slice(nFit+nHold/2, train.Rows)
	pert := perturb(fit, test, e.cfg)
	nm := len(e.members)
	norms := make([]norm, nm)
	calScores := make([][]float64, nm)
	testScores := make([][]float64, nm)
	pertScores := make([][]float64, nm)
	for i, m := range e.members {
		if err := m.Fit(ctx, fit); err != nil {
			return fmt.Errorf("ensemble: fit member %s: %w", m.Kind(), err)
		}
		var err error
		if calScores[i], err = score(m, calib); err == nil {
			if testScores[i], err = score(m, test); err == nil {
				pertScores[i], err = score(m, pert)
			}
		}
		if err != nil {
			return fmt.Errorf("ensemble: member %s: %w", m.Kind(), err)
		}
		norms[i] = fitNorm(calScores[i])
	}
	rep := Report{FitRows: nFit, HoldRows: nHold}
	best, bestU := -1, math.Inf(-1)
	judge := func(name string, cal, tst, prt []float64) error {
		th, err := threshold.Fit(e.cfg.Threshold, cal)
		if err != nil {
			return fmt.Errorf("ensemble: candidate %s: %w", name, err)
		}
		c := Candidate{Name: name, FAR: above(tst, th.Value), Detection: above(prt, th.Value)}
		c.Utility = c.Detection - e.cfg.FARWeight*c.FAR
		rep.Candidates = append(rep.Candidates, c)
		if c.Utility > bestU {
			best, bestU = len(rep.Candidates)-1, c.Utility
		}
		return nil
	}
	for i, m := range e.members {
		if err := judge(m.Kind(), calScores[i], testScores[i], pertScores[i]); err != nil {
			return err
		}
	}
	if nm > 1 {
		mean := func(s [][]float64) []float64 {
			out := make([]float64, len(s[0]))
			for i := range s {
				for r, v := range s[i] {
					out[r] += norms[i].apply(v) / float64(nm)
				}
			}
			return out
		}
		if err := judge(Mean, mean(calScores), mean(testScores), mean(pertScores)); err != nil {
			return err
		}
	}
	rep.Chosen = rep.Candidates[best].Name
	e.norms, e.chosen, e.report, e.fitted = norms, best, rep, true
	return nil
}

func score(d models.Detector, x models.Matrix) ([]float64, error) {
	out := make([]float64, x.Rows)
	return out, d.Score(x, out)
}

func fitNorm(s []float64) norm {
	sorted := slices.Clone(s)
	sort.Float64s(sorted)
	med := models.Quantile(sorted, 0.5)
	spread := models.Quantile(sorted, 0.99) - med
	if !(spread > 1e-12*max(1, math.Abs(med))) {
		spread = max(1e-12, 1e-6*max(1, math.Abs(med)))
	}
	return norm{Median: med, Spread: spread}
}

func above(s []float64, t float64) float64 {
	if len(s) == 0 {
		return 0
	}
	n := 0
	for _, v := range s {
		if v > t {
			n++
		}
	}
	return float64(n) / float64(len(s))
}

// perturb returns a copy of rows with one signal per row shifted by ±Perturbation times
// that signal's robust spread on ref.
func perturb(ref, rows models.Matrix, cfg Config) models.Matrix {
	sig := cfg.Signals
	if sig <= 0 || rows.Cols%sig != 0 {
		sig = rows.Cols
	}
	spread := make([]float64, rows.Cols)
	col := make([]float64, ref.Rows)
	for j := range rows.Cols {
		for i := range ref.Rows {
			col[i] = ref.Data[i*ref.Cols+j]
		}
		sort.Float64s(col)
		spread[j] = (models.Quantile(col, 0.75) - models.Quantile(col, 0.25)) / 1.349
		if !(spread[j] > 1e-9) {
			spread[j] = 1
		}
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x656e73656d626c65))
	out := models.Matrix{Rows: rows.Rows, Cols: rows.Cols, Data: slices.Clone(rows.Data)}
	for i := range out.Rows {
		s := rng.IntN(sig)
		sign := 1.0
		if rng.IntN(2) == 0 {
			sign = -1
		}
		row := out.Row(i)
		for j := s; j < len(row); j += sig {
			row[j] += sign * cfg.Perturbation * spread[j]
		}
	}
	return out
}

// Score writes the chosen candidate's normalised score of every row into out.
func (e *Ensemble) Score(x models.Matrix, out []float64) error {
	if !e.fitted {
		return fmt.Errorf("ensemble: %w", models.ErrNotFitted)
	}
	if e.chosen < len(e.members) {
		if err := e.members[e.chosen].Score(x, out); err != nil {
			return err
		}
		for i, v := range out {
			out[i] = e.norms[e.chosen].apply(v)
		}
		return nil
	}
	if len(out) != x.Rows {
		return fmt.Errorf("ensemble: score: %d outputs for %d rows", len(out), x.Rows)
	}
	if cap(e.buf) < x.Rows {
		e.buf = make([]float64, x.Rows)
	}
	buf := e.buf[:x.Rows]
	clear(out)
	for i, m := range e.members {
		if err := m.Score(x, buf); err != nil {
			return err
		}
		for r, v := range buf {
			out[r] += e.norms[i].apply(v) / float64(len(e.members))
		}
	}
	for r, v := range out {
		if math.IsInf(v, 0) {
			out[r] = math.Copysign(math.MaxFloat64, v)
		}
	}
	return nil
}

// Contributions attributes a row's score to its columns: the chosen member's, or the
// members' contributions in their normalised units, averaged. Members that are not
// Contributors add nothing.
func (e *Ensemble) Contributions(row []float64, out []float64) error {
	if !e.fitted {
		return fmt.Errorf("ensemble: %w", models.ErrNotFitted)
	}
	clear(out)
	if cap(e.cbuf) < len(out) {
		e.cbuf = make([]float64, len(out))
	}
	buf := e.cbuf[:len(out)]
	for i, m := range e.members {
		if e.chosen < len(e.members) && i != e.chosen {
			continue
		}
		c, ok := m.(models.Contributor)
		if !ok {
			continue
		}
		if err := c.Contributions(row, buf); err != nil {
			return err
		}
		for j, v := range buf {
			out[j] += v / e.norms[i].Spread
		}
	}
	return nil
}

// memberState is one member in the ensemble's state.
type memberState struct {
	Kind  string          `json:"kind"`
	State json.RawMessage `json:"state"`
	Norm  norm            `json:"norm"`
}

// state is what MarshalState writes.
type state struct {
	Config  Config        `json:"config"`
	Chosen  int           `json:"chosen"`
	Members []memberState `json:"members"`
	Report  Report        `json:"report"`
}

// MarshalState returns the configuration, the members' states and the selection as JSON.
// Every member must be models.Persistent.
func (e *Ensemble) MarshalState() ([]byte, error) {
	if !e.fitted {
		return nil, fmt.Errorf("ensemble: %w", models.ErrNotFitted)
	}
	st := state{Config: e.cfg, Chosen: e.chosen, Report: e.report}
	for i, m := range e.members {
		p, ok := m.(models.Persistent)
		if !ok {
			return nil, fmt.Errorf("ensemble: member %s cannot save its state", m.Kind())
		}
		b, err := p.MarshalState()
		if err != nil {
			return nil, err
		}
		st.Members = append(st.Members, memberState{Kind: m.Kind(), State: b, Norm: e.norms[i]})
	}
	return json.Marshal(st)
}

// UnmarshalState restores a state written by MarshalState, members included.
func (e *Ensemble) UnmarshalState(data []byte) error {
	var st state
	if err := models.DecodeJSON(data, &st); err != nil {
		return fmt.Errorf("ensemble: state: %w", err)
	}
	if err := st.Config.Validate(); err != nil {
		return fmt.Errorf("ensemble: state: config: %w", err)
	}
	if len(st.Members) == 0 || len(st.Members) > 8 {
		return fmt.Errorf("ensemble: state: %d members; expected 1 to 8", len(st.Members))
	}
	if st.Chosen < 0 || st.Chosen > len(st.Members) || (st.Chosen == len(st.Members) && len(st.Members) == 1) {
		return fmt.Errorf("ensemble: state: chosen %d is out of range for %d members", st.Chosen, len(st.Members))
	}
	ne := &Ensemble{cfg: st.Config, chosen: st.Chosen, report: st.Report, fitted: true}
	for i, ms := range st.Members {
		if ms.Kind == Kind {
			return fmt.Errorf("ensemble: state: members[%d] is an ensemble; expected a detector", i)
		}
		d, err := Restore(ms.Kind, ms.State)
		if err != nil {
			return fmt.Errorf("ensemble: state: members[%d]: %w", i, err)
		}
		if !(ms.Norm.Spread > 0) || math.IsInf(ms.Norm.Spread, 0) || math.IsNaN(ms.Norm.Median) || math.IsInf(ms.Norm.Median, 0) {
			return fmt.Errorf("ensemble: state: members[%d].norm %+v; expected a finite median and a positive finite spread", i, ms.Norm)
		}
		ne.members = append(ne.members, d)
		ne.norms = append(ne.norms, ms.Norm)
	}
	*e = *ne
	return nil
}

// Restore builds a detector of kind (pca, autoencoder, conv_autoencoder or ensemble) from
// its saved state.
func Restore(kind string, data []byte) (models.Persistent, error) {
	var d models.Persistent
	switch kind {
	case pca.Kind:
		d = &pca.Detector{}
	case autoencoder.Kind, autoencoder.KindConv:
		d = &autoencoder.Detector{}
	case Kind:
		d = &Ensemble{}
	default:
		return nil, fmt.Errorf("detector kind %q is not known; expected %s, %s, %s or %s", kind, pca.Kind, autoencoder.Kind, autoencoder.KindConv, Kind)
	}
	if err := d.UnmarshalState(data); err != nil {
		return nil, err
	}
	if d.Kind() != kind {
		return nil, fmt.Errorf("detector state is of kind %q, not %q", d.Kind(), kind)
	}
	return d, nil
}
