package rul

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/millwright-io/millwright/models"
)

// Federated training of a Regressor without sharing cycles:
//
//  1. The factories agree on the operating conditions' centroids (ConditionCentroids on any
//     fleet's settings; with one condition any centroid will do).
//  2. Each factory sends CollectSensorStats of its engines; the merged SensorStats fix the
//     per-condition normalization (NewPreprocessing).
//  3. Each factory sends Preprocessing.CollectFeatureStats; the merged FeatureStats fix the
//     feature standardization (Preprocessing.SetFeatureStats).
//  4. Every party calls SetPreprocessing with the result, so the feature layout and scaling
//     are the same everywhere; the MLP weights (Weights, SetWeights) are then averaged round
//     by round, each factory continuing the global weights with Fit (and Config.ProxMu for
//     FedProx).
//
// When the factories' data differ (non-IID), whole local epochs pull each factory's weights
// towards its own data and the average falls short of central training. Many short rounds do
// better: Config.Steps mini-batches per round, Config.Schedule constant with the round's
// RoundLearningRate (otherwise every round restarts at the high rate), a fresh Config.Seed
// per round (otherwise every round trains on the same first mini-batches), and SetDrift with
// the global weights minus the factory's previous result.
//
// The statistics are counts, sums and sums of squares over a whole fleet: aggregates, not
// data, and additive, so a secure-aggregation sum works as well as a plain one. Fixing the
// preprocessing from the merged statistics gives what Fit computes on the union of the
// fleets, to rounding.

// ArchitectureKind is the Architecture.Kind of the regressor's weight vector.
const ArchitectureKind = "rul-mlp"

// ConditionCentroids clusters the engines' operating settings into k operating conditions, as
// Fit does.
func ConditionCentroids(engines []Engine, k int) ([][Settings]float64, error) {
	rows := cycleRows(engines)
	if len(rows) == 0 {
		return nil, errors.New("rul: condition centroids: no cycles")
	}
	if k < 1 || k > 64 {
		return nil, fmt.Errorf("rul: condition centroids: k %d is out of range; expected 1 to 64", k)
	}
	return kmeans(rows, k), nil
}

func cycleRows(engines []Engine) []*[Settings + Sensors]float64 {
	var rows []*[Settings + Sensors]float64
	for i := range engines {
		for j := range engines[i].Cycles {
			rows = append(rows, &engines[i].Cycles[j])
		}
	}
	return rows
}

// SensorStats are a fleet's per-condition sensor statistics: cycle counts, sums and sums of
// squares of each raw sensor, for agreed condition centroids.
type SensorStats struct {
	Centroids [][Settings]float64 `json:"centroids"`
	Count     []float64           `json:"count"`  // [condition]
	Sum       [][Sensors]float64  `json:"sum"`    // [condition][sensor]
	SumSq     [][Sensors]float64  `json:"sum_sq"` // [condition][sensor]
}

// CollectSensorStats computes the engines' SensorStats for the centroids.
func CollectSensorStats(engines []Engine, centroids [][Settings]float64) (SensorStats, error) {
	if len(centroids) == 0 {
		return SensorStats{}, errors.New("rul: sensor stats: no condition centroids; expected at least one")
	}
	cnt, sum, sq := sensorSums(cycleRows(engines), centroids)
	return SensorStats{Centroids: slices.Clone(centroids), Count: cnt, Sum: sum, SumSq: sq}, nil
}

// Merge adds o's statistics to s. Both must be for the same centroids.
func (s *SensorStats) Merge(o SensorStats) error {
	if !slices.Equal(s.Centroids, o.Centroids) || len(o.Count) != len(o.Centroids) || len(o.Sum) != len(o.Centroids) || len(o.SumSq) != len(o.Centroids) ||
		len(s.Count) != len(s.Centroids) || len(s.Sum) != len(s.Centroids) || len(s.SumSq) != len(s.Centroids) {
		return fmt.Errorf("rul: merge sensor stats: centroids %v and %v (or their shapes) differ; expected statistics for the same agreed conditions", s.Centroids, o.Centroids)
	}
	for c := range s.Count {
		s.Count[c] += o.Count[c]
		for k := range Sensors {
			s.Sum[c][k] += o.Sum[c][k]
			s.SumSq[c][k] += o.SumSq[c][k]
		}
	}
	return nil
}

// FeatureStats are a fleet's feature-row statistics under a Preprocessing: the row count and
// each feature's sum and sum of squares.
type FeatureStats struct {
	Count float64   `json:"count"`
	Sum   []float64 `json:"sum"`
	SumSq []float64 `json:"sum_sq"`
}

// Merge adds o's statistics to s.
func (s *FeatureStats) Merge(o FeatureStats) error {
	if len(s.Sum) != len(o.Sum) || len(s.SumSq) != len(o.SumSq) || len(s.Sum) != len(s.SumSq) {
		return fmt.Errorf("rul: merge feature stats: %d and %d features; expected the same preprocessing", len(s.Sum), len(o.Sum))
	}
	s.Count += o.Count
	for j := range s.Sum {
		s.Sum[j] += o.Sum[j]
		s.SumSq[j] += o.SumSq[j]
	}
	return nil
}

// Preprocessing is the regressor's fixed input pipeline: the operating conditions, the kept
// sensors with their per-condition mean and standard deviation, and the feature
// standardization. Its Keep fixes the feature layout (6 features per kept sensor, then the age).
type Preprocessing struct {
	Centroids   [][Settings]float64 `json:"centroids"`
	Keep        []int               `json:"keep"`
	Mean        [][]float64         `json:"mean"` // [condition][kept sensor]
	Std         [][]float64         `json:"std"`
	FeatureMean []float64           `json:"feature_mean"`
	FeatureStd  []float64           `json:"feature_std"`
}

// NewPreprocessing fixes the normalization from (merged) sensor statistics; the feature
// standardization is still to be set with SetFeatureStats.
func NewPreprocessing(s SensorStats) (Preprocessing, error) {
	if len(s.Centroids) == 0 || len(s.Count) != len(s.Centroids) || len(s.Sum) != len(s.Centroids) || len(s.SumSq) != len(s.Centroids) {
		return Preprocessing{}, errors.New("rul: preprocessing: sensor stats are empty or malformed; expected one count, sum and sum of squares per centroid")
	}
	n := normalizerFromSums(slices.Clone(s.Centroids), slices.Clone(s.Count), slices.Clone(s.Sum), slices.Clone(s.SumSq))
	if len(n.Keep) == 0 {
		return Preprocessing{}, errors.New("rul: preprocessing: no sensor varies in the statistics")
	}
	return Preprocessing{Centroids: n.Centroids, Keep: n.Keep, Mean: n.Mean, Std: n.Std}, nil
}

func (p Preprocessing) normalizer() *normalizer {
	return &normalizer{Centroids: p.Centroids, Keep: p.Keep, Mean: p.Mean, Std: p.Std}
}

// Features returns the width of a feature row.
func (p Preprocessing) Features() int { return numFeatures(len(p.Keep)) }

// CollectFeatureStats computes the engines' feature-row statistics (every cycle of every
// engine, features over window cycles) under p's normalization.
func (p Preprocessing) CollectFeatureStats(engines []Engine, window int) (FeatureStats, error) {
	if err := p.check(false); err != nil {
		return FeatureStats{}, err
	}
	if window < 2 {
		return FeatureStats{}, fmt.Errorf("rul: feature stats: window %d; expected at least 2 cycles", window)
	}
	width := p.Features()
	f := FeatureStats{Sum: make([]float64, width), SumSq: make([]float64, width)}
	row := make([]float64, width)
	n := p.normalizer()
	for i := range engines {
		z := n.normalize(&engines[i])
		for t := range z {
			extract(z, t, window, row)
			f.Count++
			for j, v := range row {
				f.Sum[j] += v
				f.SumSq[j] += v * v
			}
		}
	}
	return f, nil
}

// SetFeatureStats fixes the feature standardization from (merged) feature statistics.
func (p *Preprocessing) SetFeatureStats(f FeatureStats) error {
	if f.Count < 2 || len(f.Sum) != p.Features() || len(f.SumSq) != len(f.Sum) {
		return fmt.Errorf("rul: preprocessing: feature stats of %d rows and %d features; expected at least 2 rows of %d", int(f.Count), len(f.Sum), p.Features())
	}
	p.FeatureMean = make([]float64, len(f.Sum))
	p.FeatureStd = make([]float64, len(f.Sum))
	for j := range f.Sum {
		m := f.Sum[j] / f.Count
		p.FeatureMean[j] = m
		p.FeatureStd[j] = math.Max(math.Sqrt(math.Max(f.SumSq[j]/f.Count-m*m, 0)), 1e-9)
	}
	return nil
}

// check validates p's shapes and values (with the feature standardization when full).
func (p Preprocessing) check(full bool) error {
	k := len(p.Centroids)
	if k < 1 || len(p.Keep) == 0 || len(p.Mean) != k || len(p.Std) != k {
		return fmt.Errorf("rul: preprocessing has %d conditions, %d kept sensors, %d means and %d deviations; expected at least one condition and sensor, and one mean and deviation row per condition", k, len(p.Keep), len(p.Mean), len(p.Std))
	}
	for i, s := range p.Keep {
		if s < 0 || s >= Sensors || (i > 0 && s <= p.Keep[i-1]) {
			return fmt.Errorf("rul: preprocessing: keep %v; expected increasing sensor indices 0 to %d", p.Keep, Sensors-1)
		}
	}
	for c := range k {
		if len(p.Mean[c]) != len(p.Keep) || len(p.Std[c]) != len(p.Keep) {
			return fmt.Errorf("rul: preprocessing: condition %d has %d means and %d deviations; expected %d", c, len(p.Mean[c]), len(p.Std[c]), len(p.Keep))
		}
		if err := models.CheckFinite(fmt.Sprintf("mean[%d]", c), p.Mean[c]); err != nil {
			return fmt.Errorf("rul: preprocessing: %w", err)
		}
		for j, v := range p.Std[c] {
			if !(v > 0) || math.IsInf(v, 0) {
				return fmt.Errorf("rul: preprocessing: std[%d][%d] is %v; expected a positive finite value", c, j, v)
			}
		}
	}
	if !full {
		return nil
	}
	if len(p.FeatureMean) != p.Features() || len(p.FeatureStd) != p.Features() {
		return fmt.Errorf("rul: preprocessing: %d feature means and %d deviations; expected %d (SetFeatureStats)", len(p.FeatureMean), len(p.FeatureStd), p.Features())
	}
	if err := models.CheckFinite("feature_mean", p.FeatureMean); err != nil {
		return fmt.Errorf("rul: preprocessing: %w", err)
	}
	for j, v := range p.FeatureStd {
		if !(v > 0) || math.IsInf(v, 0) {
			return fmt.Errorf("rul: preprocessing: feature_std[%d] is %v; expected a positive finite value", j, v)
		}
	}
	return nil
}

// Preprocessing returns a copy of the fitted (or set) preprocessing.
func (r *Regressor) Preprocessing() (Preprocessing, error) {
	if r.norm == nil {
		return Preprocessing{}, ErrNotFitted
	}
	p := Preprocessing{Centroids: slices.Clone(r.norm.Centroids), Keep: slices.Clone(r.norm.Keep),
		FeatureMean: slices.Clone(r.fMean), FeatureStd: slices.Clone(r.fStd)}
	for c := range r.norm.Mean {
		p.Mean = append(p.Mean, slices.Clone(r.norm.Mean[c]))
		p.Std = append(p.Std, slices.Clone(r.norm.Std[c]))
	}
	return p, nil
}

// SetPreprocessing fixes the preprocessing: later Fits keep it instead of fitting their own,
// so every party of a federation builds the same features. It drops any learned model (the
// old weights belong to the old features) and refuses a malformed p, or one with a different
// number of conditions than the configuration, leaving r unchanged.
func (r *Regressor) SetPreprocessing(p Preprocessing) error {
	if err := p.check(true); err != nil {
		return err
	}
	if len(p.Centroids) != r.cfg.Conditions {
		return fmt.Errorf("rul: preprocessing has %d conditions; the configuration says %d", len(p.Centroids), r.cfg.Conditions)
	}
	c := p
	c.Centroids, c.Keep = slices.Clone(p.Centroids), slices.Clone(p.Keep)
	c.Mean, c.Std = nil, nil
	for i := range p.Mean {
		c.Mean = append(c.Mean, slices.Clone(p.Mean[i]))
		c.Std = append(c.Std, slices.Clone(p.Std[i]))
	}
	r.norm, r.fMean, r.fStd = c.normalizer(), slices.Clone(p.FeatureMean), slices.Clone(p.FeatureStd)
	r.members, r.ridge, r.fixed, r.warm, r.drift, r.carry, r.adam = nil, nil, true, false, nil, nil, nil
	return nil
}

// Architecture describes the layout of the weight vector: Inputs is the feature width (0
// while the preprocessing is unknown, and then Params is 0 too), Layers the hidden widths,
// and Params covers every ensemble member (member after member; per layer the weights,
// output-major, then the biases).
func (r *Regressor) Architecture() models.Architecture {
	a := models.Architecture{Kind: ArchitectureKind, Version: 1, Layers: slices.Clone(r.cfg.Hidden), Activation: "relu"}
	if r.norm == nil || r.cfg.Model != ModelMLP {
		return a
	}
	a.Inputs = numFeatures(len(r.norm.Keep))
	sizes := append(append([]int{a.Inputs}, r.cfg.Hidden...), 1)
	per := 0
	for l := 0; l+1 < len(sizes); l++ {
		per += sizes[l]*sizes[l+1] + sizes[l+1]
	}
	a.Params = per * r.cfg.Members
	return a
}

// Weights returns the MLP ensemble's weights as one flat vector in the Architecture's layout
// (nil before Fit or SetWeights, and for the ridge model).
func (r *Regressor) Weights() []float32 {
	if len(r.members) == 0 {
		return nil
	}
	return appendFlat(make([]float32, 0, r.Architecture().Params), r.members)
}

// appendFlat appends the weights of nets to out in the Weights layout: for each network, for
// each layer, its weights then its biases.
func appendFlat[T float32 | float64](out []T, nets []*mlp) []T {
	for _, m := range nets {
		for l := range m.w {
			for _, v := range m.w[l] {
				out = append(out, T(v))
			}
			for _, v := range m.b[l] {
				out = append(out, T(v))
			}
		}
	}
	return out
}

// SetWeights installs an MLP ensemble from a flat vector. The preprocessing must be known
// (SetPreprocessing or an earlier Fit) and is kept from then on; a following Fit continues
// from these weights (with Config.ProxMu's proximal term). It drops a drift set before. It
// refuses a vector of the wrong length or with a non-finite value, leaving r unchanged.
func (r *Regressor) SetWeights(p []float32) error {
	members, err := unflatten(r, "set weights", p)
	if err != nil {
		return err
	}
	r.members, r.fixed, r.warm, r.drift, r.carry = members, true, true, nil, nil
	return nil
}

// SetDrift makes the next Fit, which must continue from SetWeights, add d (a vector in the
// Weights layout) to the weights it learns, an equal share after every mini-batch, so d in
// all. It corrects a federated participant's client drift, as SCAFFOLD's control variates do
// (Karimireddy et al. 2020), with nothing but what the participant already holds: d is the
// current global weights minus its own result of the previous round, the difference between
// where the federation moved and where its own data pulled. It refuses a vector of the wrong
// length or with a non-finite value, and is refused before SetWeights.
func (r *Regressor) SetDrift(d []float32) error {
	if !r.warm {
		return errors.New("rul: set drift: no weights to continue; call SetWeights first")
	}
	drift, err := unflatten(r, "set drift", d)
	if err != nil {
		return err
	}
	r.drift = drift
	return nil
}

// RoundLearningRate is the learning rate of a federation's round (from 1) of rounds under the
// step schedule spread over the rounds: base, then a quarter of it for the last third of the
// rounds (base throughout when rounds is 0, an open-ended federation). Use it with
// Config.Schedule constant.
func RoundLearningRate(base float64, round, rounds uint64) float64 {
	if rounds > 0 && round >= 1 && round-1 >= 2*rounds/3 {
		return base / 4
	}
	return base
}

// AdamState is the local Adam optimizer's state after a Fit of the MLP ensemble: the first
// (M) and second (V) moment of every weight, in the Weights layout, and how many mini-batch
// steps each has averaged, which sets Adam's bias correction. A federated participant that
// keeps it from round to round (SetAdamState) continues its local Adam where it stopped;
// otherwise every round's Fit starts from zero moments, estimated from that round's few
// dozen mini-batches alone.
type AdamState struct {
	M, V           []float64
	StepsM, StepsV int
}

// AdamState returns a copy of the Adam state the last Fit ended with (the zero value
// before an MLP Fit).
func (r *Regressor) AdamState() AdamState {
	if len(r.adam) == 0 {
		return AdamState{}
	}
	s := AdamState{StepsM: r.adam[0].stepsM, StepsV: r.adam[0].stepsV}
	for _, o := range r.adam {
		s.M = appendFlat(s.M, []*mlp{o.m})
		s.V = appendFlat(s.V, []*mlp{o.v})
	}
	return s
}

// SetAdamState makes the next Fit, which must continue from SetWeights, start its Adam from
// s instead of zero moments. A nil M (or V) with StepsM (StepsV) 0 starts that moment
// fresh: a participant may keep only the second moments, the scale of each weight's
// gradients, and not the first, the direction its own data pulled last round. It refuses a
// vector of the wrong length, a non-finite value, a negative second moment or step count,
// and a step count without its moments, and is refused before SetWeights; SetWeights
// drops it.
func (r *Regressor) SetAdamState(s AdamState) error {
	if !r.warm {
		return errors.New("rul: set adam state: no weights to continue; call SetWeights first")
	}
	part := func(name string, p []float64, steps int) ([]*mlp, error) {
		switch {
		case steps < 0:
			return nil, fmt.Errorf("rul: set adam state: %s steps %d; expected 0 or more", name, steps)
		case p == nil && steps != 0:
			return nil, fmt.Errorf("rul: set adam state: %s steps %d without its moments; expected 0", name, steps)
		case p == nil:
			return nil, nil
		}
		if name == "V" {
			if i := slices.IndexFunc(p, func(v float64) bool { return v < 0 }); i >= 0 {
				return nil, fmt.Errorf("rul: set adam state: V value %d is %v; expected 0 or more", i, p[i])
			}
		}
		return unflatten(r, "set adam state "+name, p)
	}
	ms, err := part("M", s.M, s.StepsM)
	if err != nil {
		return err
	}
	vs, err := part("V", s.V, s.StepsV)
	if err != nil {
		return err
	}
	carry := make([]*moments, len(r.members))
	for i, m := range r.members {
		o := newMoments(m)
		if ms != nil {
			o.m, o.stepsM = ms[i], s.StepsM
		}
		if vs != nil {
			o.v, o.stepsV = vs[i], s.StepsV
		}
		carry[i] = o
	}
	r.carry = carry
	return nil
}

// unflatten splits a flat vector in the Architecture's layout into MLP members.
func unflatten[T float32 | float64](r *Regressor, op string, p []T) ([]*mlp, error) {
	a := r.Architecture()
	switch {
	case r.cfg.Model != ModelMLP:
		return nil, fmt.Errorf("rul: %s: model %q has no weight vector; expected %s", op, r.cfg.Model, ModelMLP)
	case a.Params == 0:
		return nil, fmt.Errorf("rul: %s: the preprocessing is unknown; call SetPreprocessing or Fit first", op)
	case len(p) != a.Params:
		return nil, fmt.Errorf("rul: %s: %d values; the architecture (%d inputs, hidden %v, %d members) has %d", op, len(p), a.Inputs, a.Layers, r.cfg.Members, a.Params)
	}
	for i, v := range p {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("rul: %s: value %d is %v; expected a finite value", op, i, v)
		}
	}
	sizes := append(append([]int{a.Inputs}, r.cfg.Hidden...), 1)
	members := make([]*mlp, r.cfg.Members)
	k := 0
	take := func(n int) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = float64(p[k+i])
		}
		k += n
		return out
	}
	for i := range members {
		m := &mlp{sizes: sizes}
		for l := 0; l+1 < len(sizes); l++ {
			m.w = append(m.w, take(sizes[l]*sizes[l+1]))
			m.b = append(m.b, take(sizes[l+1]))
		}
		members[i] = m
	}
	return members, nil
}

// SharedPreprocessing runs steps 1-3 above for fleets held in one place (tests, simulations):
// centroids from the first fleet's settings, then the merged sensor and feature statistics.
// A real federation collects each fleet's statistics where its data lives.
func SharedPreprocessing(fleets [][]Engine, conditions, window int) (Preprocessing, error) {
	if len(fleets) == 0 {
		return Preprocessing{}, errors.New("rul: shared preprocessing: no fleets")
	}
	cs, err := ConditionCentroids(fleets[0], conditions)
	if err != nil {
		return Preprocessing{}, err
	}
	var ss SensorStats
	for i, f := range fleets {
		s, err := CollectSensorStats(f, cs)
		if err != nil {
			return Preprocessing{}, err
		}
		if i == 0 {
			ss = s
		} else if err := ss.Merge(s); err != nil {
			return Preprocessing{}, err
		}
	}
	p, err := NewPreprocessing(ss)
	if err != nil {
		return Preprocessing{}, err
	}
	var fs FeatureStats
	for i, f := range fleets {
		s, err := p.CollectFeatureStats(f, window)
		if err != nil {
			return Preprocessing{}, err
		}
		if i == 0 {
			fs = s
		} else if err := fs.Merge(s); err != nil {
			return Preprocessing{}, err
		}
	}
	return p, p.SetFeatureStats(fs)
}
