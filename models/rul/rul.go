// Package rul predicts the remaining useful life (RUL) of run-to-failure equipment, such as the
// C-MAPSS turbofans, from windowed, per-operating-condition normalized sensor histories.
//
// Each cycle is assigned to its operating condition (k-means on the operating settings), its
// varying sensors are z-scored with that condition's statistics, and a row of features is
// taken from the window that ends at the cycle: recent means, slopes, drift from the engine's
// own baseline and its age. A small MLP ensemble (or ridge regression) maps the row to the RUL,
// learned against the piece-wise linear target min(RUL, Cap). Everything is pure Go and
// deterministic for a given seed.
package rul

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/millwright-io/millwright/gateway/config"
)

// The regressor families.
const (
	ModelMLP   = "mlp"
	ModelRidge = "ridge"
)

// The learning-rate schedules of Config.Schedule.
const (
	// ScheduleStep quarters the learning rate for the last third of a Fit's epochs.
	ScheduleStep = "step"
	// ScheduleConstant keeps the learning rate: a federation's rounds then carry the schedule
	// (RoundLearningRate), since every round's Fit would otherwise start at the high rate again.
	ScheduleConstant = "constant"
)

// Config configures a Regressor. The zero value means the defaults.
type Config struct {
	// Model is mlp (default) or ridge.
	Model string `yaml:"model" json:"model"`
	// Window is the number of cycles the longest features look back (default 30).
	Window int `yaml:"window" json:"window"`
	// Cap caps the RUL target, as in the C-MAPSS protocol (default 125).
	Cap float64 `yaml:"cap" json:"cap"`
	// Conditions is the number of operating conditions to normalize within (default 1; 6 for
	// C-MAPSS FD002/FD004).
	Conditions int `yaml:"conditions" json:"conditions"`
	// Hidden are the MLP's hidden layer widths (default 32, 16).
	Hidden []int `yaml:"hidden" json:"hidden"`
	// Members is the MLP ensemble size; predictions are averaged (default 3).
	Members int `yaml:"members" json:"members"`
	// Epochs, BatchSize and LearningRate drive Adam (defaults 40, 64, 0.002).
	Epochs       int     `yaml:"epochs" json:"epochs"`
	BatchSize    int     `yaml:"batch_size" json:"batch_size"`
	LearningRate float64 `yaml:"learning_rate" json:"learning_rate"`
	// Schedule is the learning-rate schedule within a Fit: step (default) or constant.
	Schedule string `yaml:"schedule" json:"schedule"`
	// Steps, when positive, ends a Fit after this many mini-batches even within an epoch: a
	// federated round's local work (default 0: Epochs whole epochs).
	Steps int `yaml:"steps" json:"steps"`
	// Ridge is the L2 penalty of the ridge model and the weight decay of the MLP (default 1e-3).
	Ridge float64 `yaml:"ridge" json:"ridge"`
	// Seed makes training deterministic.
	Seed uint64 `yaml:"seed" json:"seed"`
	// ProxMu is FedProx's proximal coefficient μ: a Fit that continues from SetWeights adds
	// μ/2·‖w − w₀‖² to the loss, w₀ being the weights it started from (default 0, off).
	ProxMu float64 `yaml:"prox_mu" json:"prox_mu"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	var c Config
	c.SetDefaults()
	return c
}

// SetDefaults fills zero values with the defaults.
func (c *Config) SetDefaults() {
	if c.Model == "" {
		c.Model = ModelMLP
	}
	if c.Window == 0 {
		c.Window = 30
	}
	if c.Cap == 0 {
		c.Cap = 125
	}
	if c.Conditions == 0 {
		c.Conditions = 1
	}
	if c.Hidden == nil {
		c.Hidden = []int{32, 16}
	}
	if c.Members == 0 {
		c.Members = 3
	}
	if c.Epochs == 0 {
		c.Epochs = 40
	}
	if c.BatchSize == 0 {
		c.BatchSize = 64
	}
	if c.LearningRate == 0 {
		c.LearningRate = 0.002
	}
	if c.Schedule == "" {
		c.Schedule = ScheduleStep
	}
	if c.Ridge == 0 {
		c.Ridge = 1e-3
	}
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var p config.Problems
	if c.Model != ModelMLP && c.Model != ModelRidge {
		p.Addf("model", "model %q is unknown; expected %s or %s", c.Model, ModelMLP, ModelRidge)
	}
	if c.Window < 2 {
		p.Addf("window", "window %d is too short; expected at least 2 cycles", c.Window)
	}
	if !(c.Cap > 0) {
		p.Addf("cap", "cap %v; expected a positive number of cycles", c.Cap)
	}
	if c.Conditions < 1 || c.Conditions > 64 {
		p.Addf("conditions", "conditions %d is out of range; expected 1 to 64", c.Conditions)
	}
	for i, h := range c.Hidden {
		if h < 1 || h > 1024 {
			p.Addf(config.Index("hidden", i), "hidden width %d is out of range; expected 1 to 1024", h)
		}
	}
	if c.Members < 1 || c.Members > 32 {
		p.Addf("members", "members %d is out of range; expected 1 to 32", c.Members)
	}
	if c.Epochs < 1 {
		p.Addf("epochs", "epochs %d; expected at least 1", c.Epochs)
	}
	if c.BatchSize < 1 {
		p.Addf("batch_size", "batch_size %d; expected at least 1", c.BatchSize)
	}
	if !(c.LearningRate > 0 && c.LearningRate < 1) {
		p.Addf("learning_rate", "learning_rate %v is out of range; expected more than 0 and less than 1", c.LearningRate)
	}
	if c.Schedule != ScheduleStep && c.Schedule != ScheduleConstant {
		p.Addf("schedule", "schedule %q is unknown; expected %s or %s", c.Schedule, ScheduleStep, ScheduleConstant)
	}
	if c.Steps < 0 {
		p.Addf("steps", "steps %d; expected 0 (whole epochs) or more", c.Steps)
	}
	if !(c.Ridge >= 0) {
		p.Addf("ridge", "ridge %v; expected 0 or more", c.Ridge)
	}
	if !(c.ProxMu >= 0) || math.IsInf(c.ProxMu, 0) {
		p.Addf("prox_mu", "prox_mu %v; expected a finite number, 0 or more", c.ProxMu)
	}
	return p.Err()
}

// Regressor predicts remaining useful life. It is not safe for concurrent use during Fit;
// Predict may be called concurrently after Fit.
type Regressor struct {
	cfg     Config
	norm    *normalizer
	fMean   []float64 // feature standardization
	fStd    []float64
	members []*mlp    // model mlp
	ridge   []float64 // model ridge: weights then bias
	// fixed is set by SetPreprocessing and SetWeights: Fit keeps norm, fMean and fStd.
	fixed bool
	// warm is set by SetWeights: Fit continues the MLP members instead of initialising them.
	warm bool
	// drift is set by SetDrift: the next Fit adds it to the members it trains.
	drift []*mlp
	// carry is set by SetAdamState: the next Fit's Adam starts from it, one per member.
	carry []*moments
	// adam is the Adam state the last MLP Fit ended with, one per member.
	adam []*moments
}

// New returns an untrained regressor for cfg (defaults filled in).
func New(cfg Config) (*Regressor, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Regressor{cfg: cfg}, nil
}

// Config returns the configuration in use, defaults filled in.
func (r *Regressor) Config() Config { return r.cfg }

// ErrNotFitted is returned by Predict before Fit.
var ErrNotFitted = errors.New("rul: regressor is not fitted")

// Fit learns from run-to-failure engines: every cycle of every engine is one sample whose target
// is min(cycles to its last cycle, Cap). It returns ctx's error if ctx ends first.
func (r *Regressor) Fit(ctx context.Context, train []Engine) error {
	n := 0
	for _, e := range train {
		n += len(e.Cycles)
	}
	if n < 2 {
		return fmt.Errorf("rul: %d training cycles; expected at least 2", n)
	}
	norm, mean, std := r.norm, r.fMean, r.fStd
	if !r.fixed {
		norm = fitNormalizer(train, r.cfg.Conditions)
		if len(norm.Keep) == 0 {
			return errors.New("rul: no sensor varies in the training data")
		}
	}
	width := numFeatures(len(norm.Keep))
	x := make([]float64, 0, n*width)
	y := make([]float64, 0, n)
	row := make([]float64, width)
	for i := range train {
		z := norm.normalize(&train[i])
		for t := range z {
			extract(z, t, r.cfg.Window, row)
			x = append(x, row...)
			y = append(y, math.Min(float64(len(z)-1-t), r.cfg.Cap)/r.cfg.Cap)
		}
	}
	if r.fixed {
		applyStandardization(x, mean, std)
	} else {
		mean, std = standardize(x, width)
	}
	rng := rand.New(rand.NewPCG(r.cfg.Seed, 0x72756c))
	var members []*mlp
	var adam []*moments
	var ridge []float64
	switch r.cfg.Model {
	case ModelRidge:
		var err error
		if ridge, err = fitRidge(x, y, width, r.cfg.Ridge); err != nil {
			return err
		}
	default:
		for i := range r.cfg.Members {
			var m, anchor, drift *mlp
			if r.warm {
				m, anchor = r.members[i].clone(), r.members[i]
			} else {
				m = newMLP(width, r.cfg.Hidden, rng)
			}
			if r.drift != nil {
				drift = r.drift[i]
			}
			opt := newMoments(m)
			if r.carry != nil {
				opt = r.carry[i].clone() // train updates it; a Fit that fails leaves r as it was
			}
			if err := m.train(ctx, x, y, r.cfg, rng, opt, anchor, drift); err != nil {
				return err
			}
			members, adam = append(members, m), append(adam, opt)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.norm, r.fMean, r.fStd, r.members, r.ridge, r.drift, r.carry, r.adam = norm, mean, std, members, ridge, nil, nil, adam
	return nil
}

// Predict returns the RUL at the engine's last cycle, clamped to [0, Cap].
func (r *Regressor) Predict(e Engine) (float64, error) {
	if r.norm == nil {
		return 0, ErrNotFitted
	}
	if len(e.Cycles) == 0 {
		return 0, fmt.Errorf("rul: engine %d has no cycles", e.Unit)
	}
	z := r.norm.normalize(&e)
	row := make([]float64, len(r.fMean))
	extract(z, len(z)-1, r.cfg.Window, row)
	for j := range row {
		row[j] = (row[j] - r.fMean[j]) / r.fStd[j]
	}
	var p float64
	if r.ridge != nil {
		p = r.ridge[len(row)]
		for j, v := range row {
			p += r.ridge[j] * v
		}
	} else {
		for _, m := range r.members {
			p += m.predict(row)
		}
		p /= float64(len(r.members))
	}
	return math.Min(math.Max(p*r.cfg.Cap, 0), r.cfg.Cap), nil
}

// Params returns the number of learned values (model and normalization), a measure of its size
// on the device.
func (r *Regressor) Params() int {
	if r.norm == nil {
		return 0
	}
	n := r.preprocessingSize() + len(r.ridge)
	for _, m := range r.members {
		n += m.size()
	}
	return n
}

// applyStandardization z-scores the columns of x (rows of len(mean)) in place with fixed
// statistics.
func applyStandardization(x, mean, std []float64) {
	width := len(mean)
	for i := range len(x) / width {
		for j := range width {
			x[i*width+j] = (x[i*width+j] - mean[j]) / std[j]
		}
	}
}

// preprocessingSize is the number of learned values of the preprocessing.
func (r *Regressor) preprocessingSize() int {
	return len(r.fMean)*2 + len(r.norm.Centroids)*Settings + 2*len(r.norm.Mean)*len(r.norm.Keep)
}

// standardize z-scores the columns of x (rows of width) in place and returns their statistics.
func standardize(x []float64, width int) (mean, std []float64) {
	rows := len(x) / width
	mean = make([]float64, width)
	std = make([]float64, width)
	for i := range rows {
		for j := range width {
			mean[j] += x[i*width+j]
		}
	}
	for j := range width {
		mean[j] /= float64(rows)
	}
	for i := range rows {
		for j := range width {
			d := x[i*width+j] - mean[j]
			std[j] += d * d
		}
	}
	for j := range width {
		std[j] = math.Max(math.Sqrt(std[j]/float64(rows)), 1e-9)
	}
	for i := range rows {
		for j := range width {
			x[i*width+j] = (x[i*width+j] - mean[j]) / std[j]
		}
	}
	return mean, std
}

// fitRidge solves (XᵀX + λI)w = Xᵀy with an unpenalized bias, by Cholesky decomposition.
func fitRidge(x, y []float64, width int, lambda float64) ([]float64, error) {
	d := width + 1
	a := make([]float64, d*d)
	b := make([]float64, d)
	xi := make([]float64, d)
	for i := range y {
		copy(xi, x[i*width:(i+1)*width])
		xi[width] = 1
		for p := range d {
			b[p] += xi[p] * y[i]
			for q := 0; q <= p; q++ {
				a[p*d+q] += xi[p] * xi[q]
			}
		}
	}
	for p := range width {
		a[p*d+p] += lambda * float64(len(y))
	}
	for p := range d {
		for q := 0; q < p; q++ {
			a[q*d+p] = a[p*d+q]
		}
	}
	// Cholesky: a = L Lᵀ, L stored in the lower triangle.
	for j := range d {
		s := a[j*d+j]
		for k := range j {
			s -= a[j*d+k] * a[j*d+k]
		}
		if s <= 0 {
			return nil, errors.New("rul: ridge system is not positive definite; expected a positive ridge penalty or varying features")
		}
		a[j*d+j] = math.Sqrt(s)
		for i := j + 1; i < d; i++ {
			s := a[i*d+j]
			for k := range j {
				s -= a[i*d+k] * a[j*d+k]
			}
			a[i*d+j] = s / a[j*d+j]
		}
	}
	w := make([]float64, d)
	for i := range d { // L z = b
		s := b[i]
		for k := range i {
			s -= a[i*d+k] * w[k]
		}
		w[i] = s / a[i*d+i]
	}
	for i := d - 1; i >= 0; i-- { // Lᵀ w = z
		s := w[i]
		for k := i + 1; k < d; k++ {
			s -= a[k*d+i] * w[k]
		}
		w[i] = s / a[i*d+i]
	}
	return w, nil
}
