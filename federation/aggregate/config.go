package aggregate

import (
	"math"

	"github.com/millwright-io/millwright/gateway/config"
)

// The names of Strategy.Name.
const (
	// FedAvg is the sample-weighted mean of the updates (McMahan et al. 2017).
	FedAvg = "fedavg"
	// FedProx aggregates like FedAvg; the difference is on the client, which adds the
	// proximal term μ/2·‖w − w_global‖² to its local loss (Li et al. 2020). Strategy.ProximalMu
	// is the μ the hub sends to the clients with the round.
	FedProx = "fedprox"
	// FedAdam applies Adam on the server to the mean update used as a pseudo-gradient
	// (Reddi et al. 2021, "Adaptive Federated Optimization").
	FedAdam = "fedadam"
	// FedYogi is FedAdam with Yogi's additive second-moment update (Reddi et al. 2021).
	FedYogi = "fedyogi"
	// Median is the coordinate-wise median of the updates (Yin et al. 2018).
	Median = "median"
	// TrimmedMean drops the Trim·n largest and smallest values of every coordinate and
	// averages the rest (Yin et al. 2018).
	TrimmedMean = "trimmed_mean"
	// Krum selects the one update closest to its n−f−2 nearest neighbours (Blanchard et al.
	// 2017).
	Krum = "krum"
	// MultiKrum averages the Select updates with the best Krum scores.
	MultiKrum = "multi_krum"
)

// Strategies lists every strategy name, in documentation order.
var Strategies = []string{FedAvg, FedProx, FedAdam, FedYogi, Median, TrimmedMean, Krum, MultiKrum}

// Strategy configures how the hub turns a round's updates into the next global model.
// Decode it with config.Decode after SetDefaults, then call Validate.
type Strategy struct {
	// Name selects the rule; see the constants FedAvg … MultiKrum. Default "fedavg".
	Name string `yaml:"name"`
	// ServerLR is the server learning rate η: the new global model is global + η·step.
	// Default 1 (plain averaging) for every rule except fedadam/fedyogi (default 0.01).
	ServerLR float64 `yaml:"server_lr"`
	// ServerMomentum is server momentum β (FedAvgM, Hsu et al. 2019) for every rule but
	// fedadam and fedyogi, which have their own (adam.beta1): the velocity m ← β·m + step
	// carries from round to round and the global model moves by η·m, which on its own
	// scales the step by up to 1/(1−β), so η is usually lowered with it. In [0, 1);
	// default 0 (off).
	ServerMomentum float64 `yaml:"server_momentum"`
	// ProximalMu is FedProx's μ, sent to clients with the round (0: no proximal term). It
	// does not change aggregation.
	ProximalMu float64 `yaml:"proximal_mu"`
	// Adam configures fedadam and fedyogi.
	Adam AdamConfig `yaml:"adam"`
	// Trim is trimmed_mean's β in [0, 0.5): the fraction cut from each end. Default 0.2.
	Trim float64 `yaml:"trim"`
	// Byzantine is the number f of updates krum and multi_krum tolerate; they need
	// n ≥ 2f+3 updates. Default 1.
	Byzantine int `yaml:"byzantine"`
	// Select is the number of updates multi_krum averages (0: n − f).
	Select int `yaml:"select"`
	// ClipNorm scales every update whose L2 norm exceeds it down to it, before anything
	// else (0: no clipping).
	ClipNorm float64 `yaml:"clip_norm"`
	// Reject configures the rejection of outlying updates.
	Reject RejectConfig `yaml:"reject"`
}

// AdamConfig holds the server optimizer's hyperparameters (Reddi et al. 2021, Algorithm 2).
type AdamConfig struct {
	Beta1 float64 `yaml:"beta1"` // first-moment decay, default 0.9
	Beta2 float64 `yaml:"beta2"` // second-moment decay, default 0.99
	Tau   float64 `yaml:"tau"`   // adaptivity τ (added to √v), default 1e-3
}

// RejectConfig configures the rejection of outlying updates against the robust center
// (the coordinate-wise median of the updates). A rejected update is left out of the
// aggregate and reported in Result.Rejected.
type RejectConfig struct {
	// NormRatio rejects an update whose L2 norm exceeds NormRatio times the median norm of
	// the round's updates (0: off). A typical value is 3.
	NormRatio float64 `yaml:"norm_ratio"`
	// MinCosine rejects an update whose cosine similarity with the robust center is below
	// it, in [-1, 1] (unset: off). A sign-flipped update has a cosine near −1.
	MinCosine *float64 `yaml:"min_cosine"`
	// MinUpdates is the least number of updates rejection leaves: when more would be
	// rejected, the round fails instead. Default 1.
	MinUpdates int `yaml:"min_updates"`
}

// DefaultStrategy returns plain FedAvg.
func DefaultStrategy() Strategy {
	var s Strategy
	s.SetDefaults()
	return s
}

// SetDefaults fills in every field left at its zero value.
func (s *Strategy) SetDefaults() {
	if s.Name == "" {
		s.Name = FedAvg
	}
	if s.ServerLR == 0 {
		s.ServerLR = 1
		if s.Name == FedAdam || s.Name == FedYogi {
			s.ServerLR = 0.01
		}
	}
	if s.Adam.Beta1 == 0 {
		s.Adam.Beta1 = 0.9
	}
	if s.Adam.Beta2 == 0 {
		s.Adam.Beta2 = 0.99
	}
	if s.Adam.Tau == 0 {
		s.Adam.Tau = 1e-3
	}
	if s.Trim == 0 {
		s.Trim = 0.2
	}
	if s.Byzantine == 0 {
		s.Byzantine = 1
	}
	if s.Reject.MinUpdates == 0 {
		s.Reject.MinUpdates = 1
	}
}

// Validate reports every problem of the strategy at once, with paths relative to it.
func (s Strategy) Validate() error {
	var p config.Problems
	known := false
	for _, n := range Strategies {
		known = known || n == s.Name
	}
	if !known {
		p.Addf("name", "%q is not a strategy; expected one of %q", s.Name, Strategies)
	}
	positive := func(path string, v float64) {
		if !(v > 0) || math.IsInf(v, 0) {
			p.Addf(path, "%v must be a positive finite number", v)
		}
	}
	positive("server_lr", s.ServerLR)
	switch m := s.ServerMomentum; {
	case !(m >= 0 && m < 1):
		p.Addf("server_momentum", "%v is out of range; expected [0, 1)", m)
	case m > 0 && (s.Name == FedAdam || s.Name == FedYogi):
		p.Addf("server_momentum", "%v with %s, which has its own momentum (adam.beta1); expected 0", m, s.Name)
	}
	if s.ProximalMu < 0 || math.IsNaN(s.ProximalMu) || math.IsInf(s.ProximalMu, 0) {
		p.Addf("proximal_mu", "%v must be a finite number ≥ 0", s.ProximalMu)
	}
	for _, b := range []struct {
		path string
		v    float64
	}{{"adam.beta1", s.Adam.Beta1}, {"adam.beta2", s.Adam.Beta2}} {
		if !(b.v >= 0 && b.v < 1) {
			p.Addf(b.path, "%v is out of range; expected [0, 1)", b.v)
		}
	}
	positive("adam.tau", s.Adam.Tau)
	if !(s.Trim >= 0 && s.Trim < 0.5) {
		p.Addf("trim", "%v is out of range; expected [0, 0.5)", s.Trim)
	}
	if s.Byzantine < 0 {
		p.Addf("byzantine", "%d must be ≥ 0", s.Byzantine)
	}
	if s.Select < 0 {
		p.Addf("select", "%d must be ≥ 0 (0: n − byzantine)", s.Select)
	}
	if s.ClipNorm < 0 || math.IsNaN(s.ClipNorm) || math.IsInf(s.ClipNorm, 0) {
		p.Addf("clip_norm", "%v must be a finite number ≥ 0 (0: off)", s.ClipNorm)
	}
	if r := s.Reject.NormRatio; r != 0 && !(r >= 1 && !math.IsInf(r, 0)) {
		p.Addf("reject.norm_ratio", "%v is out of range; expected 0 (off) or a finite number ≥ 1", r)
	}
	if c := s.Reject.MinCosine; c != nil && !(*c >= -1 && *c <= 1) {
		p.Addf("reject.min_cosine", "%v is out of range; expected [-1, 1]", *c)
	}
	if s.Reject.MinUpdates < 1 {
		p.Addf("reject.min_updates", "%d must be ≥ 1", s.Reject.MinUpdates)
	}
	return p.Err()
}

// Mean reports whether the strategy combines the updates by their (weighted) mean, with or
// without a server optimizer on it (FedAvg, FedProx, FedAdam, FedYogi): what secure
// aggregation, which yields only a sum, and the DP noise's calibration need.
func (s Strategy) Mean() bool {
	switch s.Name {
	case FedAvg, FedProx, FedAdam, FedYogi:
		return true
	}
	return false
}

// MinUpdates is the least number of updates (after rejection) the strategy needs.
func (s Strategy) MinUpdates() int {
	switch s.Name {
	case Krum, MultiKrum:
		return 2*s.Byzantine + 3
	}
	return 1
}
