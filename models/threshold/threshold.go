// Package threshold turns a detector's scores into alarms: a threshold fitted on normal validation scores, debounced with hysteresis.
//
// Two methods: "quantile" takes the q-quantile of the validation scores and widens it by a
// margin of its distance from the median, T = Q(q) + margin·(Q(q) − Q(0.5)); "pot"
// (peaks over threshold, Siffer et al.'s SPOT initialisation) fits a generalized Pareto
// distribution to the excesses over a high initial quantile by probability-weighted
// moments (Hosking and Wallis) and extrapolates to the score exceeded with the target
// false-alarm probability.
package threshold

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/models"
)

// Methods.
const (
	MethodQuantile = "quantile"
	MethodPOT      = "pot"
)

// Config configures the threshold. The zero value means the defaults.
type Config struct {
	// Method is quantile or pot (default pot).
	Method string `yaml:"method" json:"method"`
	// Quantile is the quantile of the quantile method, in (0.5, 1) (default 0.995).
	Quantile float64 `yaml:"quantile" json:"quantile"`
	// Margin widens the quantile method's threshold by this share of Q(q) − median, at least
	// 0 (default 0.2).
	Margin float64 `yaml:"margin" json:"margin"`
	// Risk is the pot method's target probability that a normal window exceeds the
	// threshold, in (0, 0.1) (default 1e-3).
	Risk float64 `yaml:"risk" json:"risk"`
	// InitialQuantile is the pot method's initial threshold u, in [0.8, 1) (default 0.98).
	InitialQuantile float64 `yaml:"initial_quantile" json:"initial_quantile"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	c := Config{}
	c.SetDefaults()
	return c
}

// SetDefaults fills zero values with the defaults.
func (c *Config) SetDefaults() {
	if c.Method == "" {
		c.Method = MethodPOT
	}
	if c.Quantile == 0 {
		c.Quantile = 0.995
	}
	if c.Margin == 0 {
		c.Margin = 0.2
	}
	if c.Risk == 0 {
		c.Risk = 1e-3
	}
	if c.InitialQuantile == 0 {
		c.InitialQuantile = 0.98
	}
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var p config.Problems
	if c.Method != MethodQuantile && c.Method != MethodPOT {
		p.Addf("method", "method %q is not known; expected quantile or pot", c.Method)
	}
	if !(c.Quantile > 0.5 && c.Quantile < 1) {
		p.Addf("quantile", "quantile %v is out of range; expected more than 0.5 and less than 1", c.Quantile)
	}
	if !(c.Margin >= 0) || math.IsInf(c.Margin, 0) {
		p.Addf("margin", "margin %v is out of range; expected 0 or more", c.Margin)
	}
	if !(c.Risk > 0 && c.Risk < 0.1) {
		p.Addf("risk", "risk %v is out of range; expected more than 0 and less than 0.1", c.Risk)
	}
	if !(c.InitialQuantile >= 0.8 && c.InitialQuantile < 1) {
		p.Addf("initial_quantile", "initial_quantile %v is out of range; expected 0.8 to less than 1", c.InitialQuantile)
	}
	return p.Err()
}

// Threshold is a fitted threshold, with what it was derived from.
type Threshold struct {
	Method string  `json:"method"`
	Value  float64 `json:"value"` // scores above it are anomalous
	N      int     `json:"n"`     // validation scores
	Median float64 `json:"median"`
	// Quantile method: the quantile's value.
	Q float64 `json:"q,omitempty"`
	// POT method: the initial threshold, the number of excesses, and the fitted GPD's
	// shape ξ and scale σ.
	U      float64 `json:"u,omitempty"`
	Peaks  int     `json:"peaks,omitempty"`
	Shape  float64 `json:"shape,omitempty"`
	ScaleG float64 `json:"scale,omitempty"`
}

// minPeaks is the fewest excesses the GPD is fitted to; with fewer, POT falls back to the
// quantile method on the same scores.
const minPeaks = 10

// Fit derives the threshold from validation scores of normal data.
func Fit(cfg Config, scores []float64) (Threshold, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return Threshold{}, fmt.Errorf("threshold: %w", err)
	}
	if len(scores) < 2 {
		return Threshold{}, fmt.Errorf("threshold: %d validation scores; expected at least 2", len(scores))
	}
	s := slices.Clone(scores)
	for i, v := range s {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return Threshold{}, fmt.Errorf("threshold: score %d is %v; expected finite scores", i, v)
		}
	}
	sort.Float64s(s)
	th := Threshold{N: len(s), Median: models.Quantile(s, 0.5)}
	if cfg.Method == MethodPOT {
		if ok := pot(&th, s, cfg); ok {
			return th, nil
		}
	}
	th.Method = MethodQuantile
	th.Q = models.Quantile(s, cfg.Quantile)
	th.Value = th.Q + cfg.Margin*(th.Q-th.Median)
	th.Value = nudge(th.Value, s[len(s)-1])
	return th, nil
}

// nudge makes a threshold that equals the largest score (all scores equal, say) strictly
// greater, so that normal data like the validation set does not alarm.
func nudge(v, top float64) float64 {
	if v <= top && top-v <= 1e-12*max(1, math.Abs(top)) {
		return top + 1e-9*max(1, math.Abs(top))
	}
	return v
}

// pot fits the GPD to the excesses over the initial quantile and sets th; false when there
// are too few distinct excesses.
func pot(th *Threshold, sorted []float64, cfg Config) bool {
	n := len(sorted)
	u := models.Quantile(sorted, cfg.InitialQuantile)
	first := sort.SearchFloat64s(sorted, u)
	for first < n && sorted[first] <= u {
		first++
	}
	ex := make([]float64, 0, n-first)
	for _, v := range sorted[first:] {
		ex = append(ex, v-u)
	}
	if len(ex) < minPeaks || ex[len(ex)-1] <= 0 {
		return false
	}
	// Probability-weighted moments of the ascending excesses: a0 = mean, a1 = E[X(1−F)].
	k := len(ex)
	var a0, a1 float64
	for i, y := range ex {
		a0 += y
		a1 += y * float64(k-1-i) / float64(k-1)
	}
	a0 /= float64(k)
	a1 /= float64(k)
	den := a0 - 2*a1
	if !(den > 0) {
		return false
	}
	shape := -(a0/den - 2) // ξ = −k_Hosking
	sigma := 2 * a0 * a1 / den
	if !(sigma > 0) {
		return false
	}
	r := cfg.Risk * float64(n) / float64(k)
	var z float64
	if r >= 1 {
		z = u // the risk is above the initial quantile's exceedance: u itself
	} else if math.Abs(shape) < 1e-6 {
		z = u - sigma*math.Log(r)
	} else {
		z = u + sigma/shape*(math.Pow(r, -shape)-1)
	}
	if math.IsNaN(z) || math.IsInf(z, 0) {
		return false
	}
	*th = Threshold{Method: MethodPOT, Value: nudge(z, sorted[n-1]), N: n, Median: th.Median, U: u, Peaks: k, Shape: shape, ScaleG: sigma}
	return true
}
