// Package autoencoder is an autoencoder anomaly detector whose weights are one flat float32 vector.
//
// The dense network maps Inputs through the hidden Layers (encoder then decoder, with tanh
// or relu) back to Inputs through a linear output layer. With Config.Kernel set, the network
// is instead a stack of 1-D convolutions over the window's time axis (Layers are then channel
// counts, the input and output have Config.Signals channels). It is trained with mini-batch Adam on
// the mean squared reconstruction error (or the huber loss, Config.Loss, which keeps rare
// extreme values from dominating the gradient), with early stopping on a validation split (the
// last rows of the training matrix, so that overlapping windows do not leak into it), and
// optionally FedProx's proximal term μ·‖w − w_global‖² when it continues from a federated
// model. The score of a row is its mean squared reconstruction error.
//
// Parameter layout (Architecture.Version 1): for each layer l from the input to the output,
// the weights W_l row-major — dense: out × in; convolutional: out × kernel × in — and then
// the biases b_l (out).
package autoencoder

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/models"
)

// Kind is the detector family name of the dense autoencoder, KindConv of the convolutional
// one.
const (
	Kind     = "autoencoder"
	KindConv = "conv_autoencoder"
)

// LayoutVersion is the version of the parameter layout described in the package comment.
const LayoutVersion = 1

// Activations.
const (
	ActTanh = "tanh"
	ActReLU = "relu"
)

// Training losses.
const (
	LossMSE   = "mse"
	LossHuber = "huber"
)

const (
	maxWidth  = 1 << 14
	maxLayers = 16
)

// Config configures an autoencoder. The zero value means the defaults.
type Config struct {
	// Inputs is the input width. 0 (the default) takes it from the first Fit; set it to
	// load parameters with SetParams before any Fit (a warm start from a federated model).
	Inputs int `yaml:"inputs" json:"inputs"`
	// Layers are the hidden widths, encoder then decoder, such as [32, 8, 32] (channel counts
	// when Kernel is set). Empty: derived by DefaultLayers (DefaultConvLayers).
	Layers []int `yaml:"layers" json:"layers"`
	// Kernel, when set (odd, 1 to 31), makes the network convolutional over time with this
	// kernel width; 0 (the default) is dense.
	Kernel int `yaml:"kernel" json:"kernel"`
	// Signals is the number of signals per time step of a window (its channels); required
	// with Kernel, whose inputs must be a multiple of it.
	Signals int `yaml:"signals" json:"signals"`
	// Activation of the hidden layers: tanh (default) or relu. The output is linear.
	Activation string `yaml:"activation" json:"activation"`
	// Epochs is the maximum number of passes over the training rows (default 60).
	Epochs int `yaml:"epochs" json:"epochs"`
	// BatchSize is the mini-batch size (default 64).
	BatchSize int `yaml:"batch_size" json:"batch_size"`
	// LearningRate is Adam's step size (default 0.002).
	LearningRate float64 `yaml:"learning_rate" json:"learning_rate"`
	// ValidationFraction is the share of rows, taken from the end, held out for early
	// stopping, at most 0.5 (0 means the default 0.1; a negative value holds out none, and
	// training then stops on the training loss).
	ValidationFraction float64 `yaml:"validation_fraction" json:"validation_fraction"`
	// Patience is how many epochs without improvement of the validation loss end training
	// (default 6).
	Patience int `yaml:"patience" json:"patience"`
	// MaxRows caps the training rows per epoch; more are subsampled with the seed (default
	// 30000; negative: no cap).
	MaxRows int `yaml:"max_rows" json:"max_rows"`
	// ProxMu is FedProx's μ: with a warm start, the loss adds μ·‖w − w_start‖² (default 0).
	ProxMu float64 `yaml:"prox_mu" json:"prox_mu"`
	// Loss is what training and early stopping minimise: "mse" (the default, also when
	// empty) or "huber", which is quadratic up to HuberDelta and linear beyond, so that a few
	// extreme values (a near-constant signal blown up by scaling, a spike) do not dominate
	// the gradient. The score is the mean squared reconstruction error either way.
	Loss string `yaml:"loss,omitempty" json:"loss,omitempty"`
	// HuberDelta is the huber loss's δ in the units of the (scaled) inputs (default 1 with
	// loss huber).
	HuberDelta float64 `yaml:"huber_delta,omitempty" json:"huber_delta,omitempty"`
	// Seed makes training reproducible.
	Seed uint64 `yaml:"seed" json:"seed"`
}

// DefaultLayers returns the hidden widths used when Config.Layers is empty: a wide layer of
// about half the inputs (4 to 64), a bottleneck of about an eighth (2 to 16), and the wide
// layer again.
func DefaultLayers(inputs int) []int {
	wide := min(64, max(4, inputs/2))
	narrow := min(16, max(2, inputs/8))
	return []int{wide, narrow, wide}
}

// DefaultConvLayers returns the channel counts used when Config.Layers is empty and Kernel
// is set: twice the signals (8 to 64), half the signals (at least 2), twice again.
func DefaultConvLayers(signals int) []int {
	wide := min(64, max(8, 2*signals))
	narrow := max(2, signals/2)
	return []int{wide, narrow, wide}
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	c := Config{}
	c.SetDefaults()
	return c
}

// SetDefaults fills zero values with the defaults.
func (c *Config) SetDefaults() {
	if c.Activation == "" {
		c.Activation = ActTanh
	}
	if c.Epochs == 0 {
		c.Epochs = 60
	}
	if c.BatchSize == 0 {
		c.BatchSize = 64
	}
	if c.LearningRate == 0 {
		c.LearningRate = 0.002
	}
	if c.ValidationFraction == 0 {
		c.ValidationFraction = 0.1
	}
	if c.Patience == 0 {
		c.Patience = 6
	}
	if c.MaxRows == 0 {
		c.MaxRows = 30000
	}
	if c.Loss == LossHuber && c.HuberDelta == 0 {
		c.HuberDelta = 1
	}
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var p config.Problems
	if c.Inputs < 0 || c.Inputs > maxWidth {
		p.Addf("inputs", "inputs %d is out of range; expected 0 (from the data) to %d", c.Inputs, maxWidth)
	}
	if len(c.Layers) > maxLayers {
		p.Addf("layers", "%d hidden layers; expected at most %d", len(c.Layers), maxLayers)
	}
	for i, w := range c.Layers {
		if w < 1 || w > maxWidth {
			p.Addf(config.Index("layers", i), "width %d is out of range; expected 1 to %d", w, maxWidth)
		}
	}
	if c.Kernel != 0 && (c.Kernel < 1 || c.Kernel > 31 || c.Kernel%2 == 0) {
		p.Addf("kernel", "kernel %d is out of range; expected 0 (dense) or an odd width from 1 to 31", c.Kernel)
	}
	switch {
	case c.Signals < 0 || c.Signals > maxWidth:
		p.Addf("signals", "signals %d is out of range; expected 0 to %d", c.Signals, maxWidth)
	case c.Kernel > 0 && c.Signals == 0:
		p.Addf("signals", "signals is 0; a convolutional network (kernel %d) needs the signals per time step", c.Kernel)
	case c.Kernel > 0 && c.Inputs > 0 && c.Inputs%c.Signals != 0:
		p.Addf("signals", "inputs %d is not a multiple of signals %d", c.Inputs, c.Signals)
	}
	if c.Activation != ActTanh && c.Activation != ActReLU {
		p.Addf("activation", "activation %q is not known; expected tanh or relu", c.Activation)
	}
	if c.Epochs < 1 || c.Epochs > 100000 {
		p.Addf("epochs", "epochs %d is out of range; expected 1 to 100000", c.Epochs)
	}
	if c.BatchSize < 1 || c.BatchSize > 1<<16 {
		p.Addf("batch_size", "batch_size %d is out of range; expected 1 to 65536", c.BatchSize)
	}
	if !(c.LearningRate > 0 && c.LearningRate <= 1) {
		p.Addf("learning_rate", "learning_rate %v is out of range; expected more than 0 and at most 1", c.LearningRate)
	}
	if !(c.ValidationFraction <= 0.5) || math.IsInf(c.ValidationFraction, 0) {
		p.Addf("validation_fraction", "validation_fraction %v is out of range; expected at most 0.5 (negative: none)", c.ValidationFraction)
	}
	if c.Patience < 1 {
		p.Addf("patience", "patience %d is out of range; expected at least 1", c.Patience)
	}
	if !(c.ProxMu >= 0) || math.IsInf(c.ProxMu, 0) {
		p.Addf("prox_mu", "prox_mu %v is out of range; expected 0 or a positive number", c.ProxMu)
	}
	if c.Loss != "" && c.Loss != LossMSE && c.Loss != LossHuber {
		p.Addf("loss", "loss %q is not known; expected mse or huber", c.Loss)
	}
	switch {
	case c.Loss == LossHuber && !(c.HuberDelta > 0) || math.IsInf(c.HuberDelta, 0):
		p.Addf("huber_delta", "huber_delta %v is out of range; expected a positive finite number", c.HuberDelta)
	case c.Loss != LossHuber && c.HuberDelta != 0:
		p.Addf("huber_delta", "huber_delta %v is set but loss is %q; expected it only with loss huber", c.HuberDelta, c.Loss)
	}
	return p.Err()
}

// Report describes the last training run.
type Report struct {
	TrainRows      int     `json:"train_rows"`      // rows used per epoch
	ValidationRows int     `json:"validation_rows"` // rows held out for early stopping
	Epochs         int     `json:"epochs"`          // epochs run
	BestEpoch      int     `json:"best_epoch"`      // epoch whose weights were kept (1-based)
	TrainLoss      float64 `json:"train_loss"`      // mean training loss (Config.Loss) on the training rows at BestEpoch
	ValidationLoss float64 `json:"validation_loss"` // mean training loss on the validation rows at BestEpoch
	WarmStart      bool    `json:"warm_start"`      // training continued from parameters set before Fit
}

// State is what an artifact saves of an autoencoder.
type State struct {
	Config       Config              `json:"config"`
	Architecture models.Architecture `json:"architecture"`
	Params       []float32           `json:"params"`
	Report       Report              `json:"report"`
}

// Detector is an autoencoder. It implements models.Parametric, models.Contributor and
// models.Persistent.
type Detector struct {
	cfg    Config
	arch   models.Architecture // Params == 0 while the input width is unknown
	net    network             // nil while the input width is unknown
	params []float32           // nil until fitted or set
	w      []float64           // params as float64, what scoring computes with
	report Report
	// scratch activations for Score and Contributions, one per layer.
	acts [][]float64
}

var (
	_ models.Parametric  = (*Detector)(nil)
	_ models.Contributor = (*Detector)(nil)
	_ models.Persistent  = (*Detector)(nil)
)

// New returns an untrained autoencoder; cfg is defaulted and validated.
func New(cfg Config) (*Detector, error) {
	cfg.SetDefaults()
	cfg.Layers = slices.Clone(cfg.Layers)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("autoencoder: %w", err)
	}
	d := &Detector{cfg: cfg}
	if cfg.Inputs > 0 {
		if err := d.setShape(cfg.Inputs); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Kind returns "autoencoder", or "conv_autoencoder" with Config.Kernel set.
func (d *Detector) Kind() string {
	if d.cfg.Kernel > 0 {
		return KindConv
	}
	return Kind
}

// Config returns the configuration.
func (d *Detector) Config() Config { return d.cfg }

// Report returns the last training run's report.
func (d *Detector) Report() Report { return d.report }

// setShape builds the network for an input width.
func (d *Detector) setShape(inputs int) error {
	layers := d.cfg.Layers
	act := activation(d.cfg.Activation)
	d.arch = models.Architecture{Kind: d.Kind(), Version: LayoutVersion, Inputs: inputs, Activation: d.cfg.Activation}
	if k := d.cfg.Kernel; k > 0 {
		s := d.cfg.Signals
		if inputs%s != 0 {
			return fmt.Errorf("autoencoder: %d inputs are not a window of %d signals", inputs, s)
		}
		if len(layers) == 0 {
			layers = DefaultConvLayers(s)
		}
		d.net = newConv(inputs/s, k, append(append([]int{s}, layers...), s), act)
		d.arch.Channels, d.arch.Kernel = s, k
	} else {
		if len(layers) == 0 {
			layers = DefaultLayers(inputs)
		}
		d.net = &dense{sizes: append(append([]int{inputs}, layers...), inputs), act: act}
	}
	d.arch.Layers = slices.Clone(layers)
	d.arch.Params = d.net.params()
	d.acts = newActs(d.net)
	return nil
}

func newActs(n network) [][]float64 {
	acts := make([][]float64, len(n.widths()))
	for l, s := range n.widths() {
		acts[l] = make([]float64, s)
	}
	return acts
}

// Architecture describes the parameter vector's layout; Params is 0 while the input width
// is unknown (no Config.Inputs and no Fit yet).
func (d *Detector) Architecture() models.Architecture {
	a := d.arch
	a.Layers = slices.Clone(a.Layers)
	return a
}

// Params returns a copy of the parameters (nil before Fit or SetParams).
func (d *Detector) Params() []float32 { return slices.Clone(d.params) }

// SetParams replaces the parameters. The input width must be known (Config.Inputs or an
// earlier Fit). A following Fit continues from them.
func (d *Detector) SetParams(p []float32) error {
	if d.arch.Params == 0 {
		return fmt.Errorf("autoencoder: set params: the input width is unknown; set Config.Inputs or Fit first")
	}
	if len(p) != d.arch.Params {
		return fmt.Errorf("autoencoder: set params: %d values; the architecture %v has %d", len(p), d.arch.Layers, d.arch.Params)
	}
	for i, v := range p {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("autoencoder: set params: value %d is %v; expected a finite value", i, v)
		}
	}
	d.install(slices.Clone(p))
	return nil
}

func (d *Detector) install(p []float32) {
	d.params = p
	d.w = make([]float64, len(p))
	for i, v := range p {
		d.w[i] = float64(v)
	}
}

// forward runs the network on x with weights w into acts and returns the output layer.
func (d *Detector) forward(w []float64, x []float64, acts [][]float64) []float64 {
	copy(acts[0], x)
	d.net.forward(w, acts)
	return acts[len(acts)-1]
}

func (d *Detector) fitted() error {
	if d.params == nil {
		return fmt.Errorf("autoencoder: %w", models.ErrNotFitted)
	}
	return nil
}

// Score writes each row's mean squared reconstruction error into out. It allocates nothing.
func (d *Detector) Score(x models.Matrix, out []float64) error {
	if err := d.fitted(); err != nil {
		return err
	}
	if err := models.CheckScoreArgs(x, d.arch.Inputs, out); err != nil {
		return fmt.Errorf("autoencoder: score: %w", err)
	}
	for i := range x.Rows {
		row := x.Row(i)
		y := d.forward(d.w, row, d.acts)
		var s float64
		for j, v := range y {
			e := v - row[j]
			s += e * e
		}
		s /= float64(len(row))
		if math.IsNaN(s) || math.IsInf(s, 0) {
			s = math.MaxFloat64
		}
		out[i] = s
	}
	return nil
}

// Contributions writes each column's squared reconstruction error into out.
func (d *Detector) Contributions(row []float64, out []float64) error {
	if err := d.fitted(); err != nil {
		return err
	}
	if err := models.CheckContributionArgs(row, d.arch.Inputs, out); err != nil {
		return fmt.Errorf("autoencoder: contributions: %w", err)
	}
	y := d.forward(d.w, row, d.acts)
	for j, v := range y {
		e := v - row[j]
		out[j] = e * e
	}
	return nil
}

// MarshalState returns the configuration, architecture, parameters and training report as
// JSON.
func (d *Detector) MarshalState() ([]byte, error) {
	if d.params == nil {
		return nil, fmt.Errorf("autoencoder: %w", models.ErrNotFitted)
	}
	return json.Marshal(State{Config: d.cfg, Architecture: d.arch, Params: d.params, Report: d.report})
}

// UnmarshalState restores a State written by MarshalState; the architecture must be the one
// the configuration implies.
func (d *Detector) UnmarshalState(data []byte) error {
	var st State
	if err := models.DecodeJSON(data, &st); err != nil {
		return fmt.Errorf("autoencoder: state: %w", err)
	}
	if err := st.Config.Validate(); err != nil {
		return fmt.Errorf("autoencoder: state: config: %w", err)
	}
	if st.Architecture.Inputs < 1 || st.Architecture.Inputs > maxWidth {
		return fmt.Errorf("autoencoder: state: architecture inputs %d is out of range; expected 1 to %d", st.Architecture.Inputs, maxWidth)
	}
	nd := &Detector{cfg: st.Config}
	nd.cfg.Inputs = st.Architecture.Inputs
	if err := nd.cfg.Validate(); err != nil {
		return fmt.Errorf("autoencoder: state: %w", err)
	}
	if err := nd.setShape(st.Architecture.Inputs); err != nil {
		return fmt.Errorf("autoencoder: state: %w", err)
	}
	if !nd.arch.Equal(st.Architecture) {
		return fmt.Errorf("autoencoder: state: architecture %+v does not match the one its configuration implies (%+v)", st.Architecture, nd.arch)
	}
	if err := nd.SetParams(st.Params); err != nil {
		return fmt.Errorf("autoencoder: state: %w", err)
	}
	nd.report = st.Report
	*d = *nd
	return nil
}
