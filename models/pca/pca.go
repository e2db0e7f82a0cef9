// Package pca detects anomalies with principal components: Hotelling's T² inside the model
// plane, the squared prediction error Q (SPE) off it, each with a statistical control limit.
//
// Fit centres the training rows, keeps the leading principal components that explain the
// configured share of the variance, and derives the limits at significance Alpha: T² from the
// F distribution, Q from Jackson and Mudholkar's approximation (Box's scaled χ² when that one
// is undefined). The score of a row is selected by Config.Statistic; the default, "combined",
// is T²/T²_lim + Q/Q_lim, so a row on both limits scores 2 and a normal row about 1 or less.
package pca

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/stat/distuv"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/models"
)

// Kind is the detector family name.
const Kind = "pca"

// The statistics a detector can score with.
const (
	StatCombined = "combined" // T²/T²_lim + Q/Q_lim
	StatT2       = "t2"       // Hotelling's T²
	StatQ        = "q"        // squared prediction error
)

// Config configures a PCA detector. The zero value means the defaults.
type Config struct {
	// ExplainedVariance is the share of the total variance the kept components explain, in
	// (0, 1] (default 0.9).
	ExplainedVariance float64 `yaml:"explained_variance" json:"explained_variance"`
	// MaxComponents caps the number of kept components (0: no cap).
	MaxComponents int `yaml:"max_components" json:"max_components"`
	// Alpha is the significance of the control limits, in (0, 0.5) (default 0.01).
	Alpha float64 `yaml:"alpha" json:"alpha"`
	// Statistic is what Score returns: combined (default), t2 or q.
	Statistic string `yaml:"statistic" json:"statistic"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	c := Config{}
	c.SetDefaults()
	return c
}

// SetDefaults fills zero values with the defaults.
func (c *Config) SetDefaults() {
	if c.ExplainedVariance == 0 {
		c.ExplainedVariance = 0.9
	}
	if c.Alpha == 0 {
		c.Alpha = 0.01
	}
	if c.Statistic == "" {
		c.Statistic = StatCombined
	}
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var p config.Problems
	if !(c.ExplainedVariance > 0 && c.ExplainedVariance <= 1) {
		p.Addf("explained_variance", "explained_variance %v is out of range; expected more than 0 and at most 1", c.ExplainedVariance)
	}
	if c.MaxComponents < 0 {
		p.Addf("max_components", "max_components %d is negative; expected 0 (no cap) or more", c.MaxComponents)
	}
	if !(c.Alpha > 0 && c.Alpha < 0.5) {
		p.Addf("alpha", "alpha %v is out of range; expected more than 0 and less than 0.5", c.Alpha)
	}
	switch c.Statistic {
	case StatCombined, StatT2, StatQ:
	default:
		p.Addf("statistic", "statistic %q is not known; expected combined, t2 or q", c.Statistic)
	}
	return p.Err()
}

// State is the learned state of a fitted detector, as saved in an artifact.
type State struct {
	Config Config `json:"config"`
	// Inputs is the column count.
	Inputs int `json:"inputs"`
	// Rows is the number of training rows.
	Rows int `json:"rows"`
	// Mean is the column means of the training rows (len Inputs).
	Mean []float64 `json:"mean"`
	// Components is the kept loadings, row-major Inputs × K: column a is component a.
	Components []float64 `json:"components"`
	// Eigenvalues holds every eigenvalue of the covariance, descending (len Inputs); the
	// first K are the kept components' variances.
	Eigenvalues []float64 `json:"eigenvalues"`
	// K is the number of kept components.
	K int `json:"k"`
	// T2Limit and QLimit are the control limits at Config.Alpha.
	T2Limit float64 `json:"t2_limit"`
	QLimit  float64 `json:"q_limit"`
}

// Detector is a PCA anomaly detector. It implements models.Detector, models.Contributor
// and models.Persistent.
type Detector struct {
	cfg    Config
	st     *State
	invLam []float64 // 1/λ_a for the kept components
	// scratch for Score and Contributions: not safe for concurrent use.
	c, t []float64
}

var (
	_ models.Detector    = (*Detector)(nil)
	_ models.Contributor = (*Detector)(nil)
	_ models.Persistent  = (*Detector)(nil)
)

// New returns an unfitted detector; cfg is defaulted and validated.
func New(cfg Config) (*Detector, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pca: %w", err)
	}
	return &Detector{cfg: cfg}, nil
}

// Kind returns "pca".
func (d *Detector) Kind() string { return Kind }

// State returns the learned state (nil before Fit). It is shared: do not modify it.
func (d *Detector) State() *State { return d.st }

// Fit learns the principal components and the control limits from train, which needs at
// least two rows.
func (d *Detector) Fit(ctx context.Context, train models.Matrix) error {
	if err := train.Check(2); err != nil {
		return fmt.Errorf("pca: fit: %w", err)
	}
	if err := models.CheckFinite("train", train.Data); err != nil {
		return fmt.Errorf("pca: fit: %w", err)
	}
	n, p := train.Rows, train.Cols
	mean := make([]float64, p)
	for i := range n {
		floats.Add(mean, train.Row(i))
	}
	floats.Scale(1/float64(n), mean)

	// Covariance, accumulated as the upper triangle of XᵀX of the centred rows.
	cov := make([]float64, p*p)
	c := make([]float64, p)
	for i := range n {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		floats.SubTo(c, train.Row(i), mean)
		for a := range p {
			if c[a] != 0 {
				floats.AddScaled(cov[a*p+a:a*p+p], c[a], c[a:])
			}
		}
	}
	floats.Scale(1/float64(n-1), cov)
	sym := mat.NewSymDense(p, cov)
	var eig mat.EigenSym
	if !eig.Factorize(sym, true) {
		return fmt.Errorf("pca: fit: eigen decomposition of the %d×%d covariance did not converge", p, p)
	}
	vals := eig.Values(nil)
	var vecs mat.Dense
	eig.VectorsTo(&vecs)
	order := make([]int, p)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return vals[order[a]] > vals[order[b]] })
	lam := make([]float64, p)
	for i, o := range order {
		lam[i] = max(0, vals[o])
	}
	total := floats.Sum(lam)
	// Eigenvalues below this are numerical zeros: their directions carry no variance.
	tiny := 1e-12 * max(lam[0], 1e-300)
	k := 0
	if total > 0 {
		cum := 0.0
		for k < p && lam[k] > tiny {
			cum += lam[k]
			k++
			if cum >= d.cfg.ExplainedVariance*total*(1-1e-12) {
				break
			}
		}
	}
	if d.cfg.MaxComponents > 0 {
		k = min(k, d.cfg.MaxComponents)
	}
	k = min(k, n-1)
	comps := make([]float64, p*k)
	for j := range p {
		for a := range k {
			comps[j*k+a] = vecs.At(j, order[a])
		}
	}
	// Fix each component's sign (largest loading positive) so the state is reproducible.
	for a := range k {
		big, sign := 0.0, 1.0
		for j := range p {
			if v := comps[j*k+a]; math.Abs(v) > big {
				big, sign = math.Abs(v), math.Copysign(1, v)
			}
		}
		for j := range p {
			comps[j*k+a] *= sign
		}
	}
	st := &State{Config: d.cfg, Inputs: p, Rows: n, Mean: mean, Components: comps, Eigenvalues: lam, K: k}
	st.T2Limit = t2Limit(k, n, d.cfg.Alpha)
	st.QLimit = qLimit(lam[k:], d.cfg.Alpha)
	d.install(st)
	return nil
}

// t2Limit is the control limit of Hotelling's T² for a new observation with k components
// estimated from n rows, at significance alpha.
func t2Limit(k, n int, alpha float64) float64 {
	if k == 0 {
		return 1 // T² is always 0; any positive limit keeps the ratio 0
	}
	if n-k < 1 {
		return distuv.ChiSquared{K: float64(k)}.Quantile(1 - alpha)
	}
	f := distuv.F{D1: float64(k), D2: float64(n - k)}.Quantile(1 - alpha)
	return float64(k) * float64(n*n-1) / float64(n*(n-k)) * f
}

// qLimit is the control limit of Q given the residual eigenvalues, at significance alpha:
// Jackson and Mudholkar's, or Box's g·χ²_h when h0 ≤ 0.
func qLimit(resid []float64, alpha float64) float64 {
	var t1, t2, t3 float64
	for _, l := range resid {
		t1 += l
		t2 += l * l
		t3 += l * l * l
	}
	// A floor relative to nothing at all: with no residual variance any residual is an
	// anomaly, but the limit must stay positive and finite.
	const floor = 1e-12
	if t1 <= floor || t2 <= 0 {
		return floor
	}
	h0 := 1 - 2*t1*t3/(3*t2*t2)
	if h0 > 1e-3 {
		ca := distuv.UnitNormal.Quantile(1 - alpha)
		base := ca*math.Sqrt(2*t2*h0*h0)/t1 + 1 + t2*h0*(h0-1)/(t1*t1)
		if base > 0 {
			if q := t1 * math.Pow(base, 1/h0); q > 0 && !math.IsInf(q, 0) {
				return max(q, floor)
			}
		}
	}
	g, h := t2/t1, t1*t1/t2
	return max(g*distuv.ChiSquared{K: h}.Quantile(1-alpha), floor)
}

func (d *Detector) install(st *State) {
	d.cfg = st.Config
	d.st = st
	d.invLam = make([]float64, st.K)
	for a := range st.K {
		d.invLam[a] = 1 / st.Eigenvalues[a]
	}
	d.c = make([]float64, st.Inputs)
	d.t = make([]float64, st.K)
}

// stats computes T² and Q of row into d's scratch (d.c holds the centred row and d.t the
// scores on the components afterwards).
func (d *Detector) stats(row []float64) (t2, q float64) {
	st := d.st
	k := st.K
	floats.SubTo(d.c, row, st.Mean)
	clear(d.t)
	for j, cj := range d.c {
		if cj != 0 {
			floats.AddScaled(d.t, cj, st.Components[j*k:j*k+k])
		}
	}
	var proj float64
	for a, ta := range d.t {
		t2 += ta * ta * d.invLam[a]
		proj += ta * ta
	}
	q = floats.Dot(d.c, d.c) - proj
	return t2, max(0, q)
}

func (d *Detector) fitted() error {
	if d.st == nil {
		return fmt.Errorf("pca: %w", models.ErrNotFitted)
	}
	return nil
}

// Score writes one score per row of x into out, according to Config.Statistic. It
// allocates nothing.
func (d *Detector) Score(x models.Matrix, out []float64) error {
	if err := d.fitted(); err != nil {
		return err
	}
	if err := models.CheckScoreArgs(x, d.st.Inputs, out); err != nil {
		return fmt.Errorf("pca: score: %w", err)
	}
	for i := range x.Rows {
		t2, q := d.stats(x.Row(i))
		switch d.cfg.Statistic {
		case StatT2:
			out[i] = t2
		case StatQ:
			out[i] = q
		default:
			out[i] = t2/d.st.T2Limit + q/d.st.QLimit
		}
		if math.IsNaN(out[i]) || math.IsInf(out[i], 0) {
			out[i] = math.MaxFloat64
		}
	}
	return nil
}

// Stats returns the T² and Q statistics of one row.
func (d *Detector) Stats(row []float64) (t2, q float64, err error) {
	if err := d.fitted(); err != nil {
		return 0, 0, err
	}
	if len(row) != d.st.Inputs {
		return 0, 0, fmt.Errorf("pca: stats: row has %d columns; the model takes %d", len(row), d.st.Inputs)
	}
	t2, q = d.stats(row)
	return t2, q, nil
}

// Contributions writes each column's squared residual (its share of Q) into out. It
// allocates nothing.
func (d *Detector) Contributions(row []float64, out []float64) error {
	if err := d.fitted(); err != nil {
		return err
	}
	if err := models.CheckContributionArgs(row, d.st.Inputs, out); err != nil {
		return fmt.Errorf("pca: contributions: %w", err)
	}
	d.stats(row)
	k := d.st.K
	for j := range row {
		r := d.c[j] - floats.Dot(d.st.Components[j*k:j*k+k], d.t)
		out[j] = r * r
	}
	return nil
}

// MarshalState returns the State as JSON.
func (d *Detector) MarshalState() ([]byte, error) {
	if d.st == nil {
		return nil, fmt.Errorf("pca: %w", models.ErrNotFitted)
	}
	return json.Marshal(d.st)
}

// UnmarshalState restores a State written by MarshalState, after checking its shapes and
// values.
func (d *Detector) UnmarshalState(data []byte) error {
	var st State
	if err := models.DecodeJSON(data, &st); err != nil {
		return fmt.Errorf("pca: state: %w", err)
	}
	if err := st.validate(); err != nil {
		return fmt.Errorf("pca: state: %w", err)
	}
	d.install(&st)
	return nil
}

func (st *State) validate() error {
	if err := st.Config.Validate(); err != nil {
		return err
	}
	p, k := st.Inputs, st.K
	switch {
	case p <= 0 || p > 1<<20:
		return fmt.Errorf("inputs %d is out of range; expected 1 to %d", p, 1<<20)
	case k < 0 || k > p:
		return fmt.Errorf("k %d is out of range; expected 0 to inputs (%d)", k, p)
	case len(st.Mean) != p:
		return fmt.Errorf("mean has %d values; expected inputs (%d)", len(st.Mean), p)
	case len(st.Eigenvalues) != p:
		return fmt.Errorf("eigenvalues has %d values; expected inputs (%d)", len(st.Eigenvalues), p)
	case len(st.Components) != p*k:
		return fmt.Errorf("components has %d values; expected inputs×k (%d)", len(st.Components), p*k)
	case !(st.T2Limit > 0) || math.IsInf(st.T2Limit, 0):
		return fmt.Errorf("t2_limit %v is not a positive finite number", st.T2Limit)
	case !(st.QLimit > 0) || math.IsInf(st.QLimit, 0):
		return fmt.Errorf("q_limit %v is not a positive finite number", st.QLimit)
	}
	for _, f := range []struct {
		name string
		v    []float64
	}{{"mean", st.Mean}, {"components", st.Components}, {"eigenvalues", st.Eigenvalues}} {
		if err := models.CheckFinite(f.name, f.v); err != nil {
			return err
		}
	}
	for a := range k {
		if !(st.Eigenvalues[a] > 0) {
			return fmt.Errorf("eigenvalues[%d] is %v; the kept components need positive variances", a, st.Eigenvalues[a])
		}
	}
	return nil
}
