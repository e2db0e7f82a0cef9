package federation

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/federation/compress"
	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/federation/secagg"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/models"
)

// PublicKey is an ed25519 public key written in YAML as 64 hex digits.
type PublicKey struct{ ed25519.PublicKey }

// DecodeScalar implements config.ScalarDecoder.
func (k *PublicKey) DecodeScalar(text string) error {
	b, err := hex.DecodeString(text)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return fmt.Errorf("%q is not an ed25519 public key; expected %d hex digits", text, 2*ed25519.PublicKeySize)
	}
	k.PublicKey = b
	return nil
}

// ParsePublicKey parses 64 hex digits.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	var k PublicKey
	if err := k.DecodeScalar(s); err != nil {
		return nil, err
	}
	return k.PublicKey, nil
}

// Member is a gateway allowed to take part in a federation, by name and identity key.
type Member struct {
	Name string    `yaml:"name"`
	Key  PublicKey `yaml:"key"`
}

// DefaultKeepModels is FederationConfig.KeepModels' default.
const DefaultKeepModels = 64

// FederationConfig configures one federation run by the hub.
type FederationConfig struct {
	// Name identifies the federation (subjects, buckets, model names).
	Name string `yaml:"name"`
	// Members are the gateways that may send updates, with their ed25519 public keys.
	Members []Member `yaml:"members"`
	// Architecture is the shared model's layout (params: the length of its parameter
	// vector); the initial global model is drawn uniformly from ±InitScale with InitSeed.
	Architecture models.Architecture `yaml:"architecture"`
	InitScale    float64             `yaml:"init_scale"`
	InitSeed     uint64              `yaml:"init_seed"`
	// Rounds is the federation's last round (0: run until stopped): it stops after round
	// Rounds, whether each round was aggregated or abandoned for want of its quorum.
	Rounds uint64 `yaml:"rounds"`
	// Participants is the number of members asked per round (0: all).
	Participants int `yaml:"participants"`
	// Quorum is the least number of accepted updates that closes a round at its deadline
	// (default: the larger of the strategy's minimum and half the participants, rounded up).
	Quorum int `yaml:"quorum"`
	// RoundTimeout is how long a round stays open (default 10m). A round closes earlier
	// when every participant has answered.
	RoundTimeout time.Duration `yaml:"round_timeout"`
	// MaxStaleness is how many rounds old the global model an update was trained from may
	// be (default 0: only the current round's).
	MaxStaleness uint64 `yaml:"max_staleness"`
	// KeepModels is how many of the latest rounds' models the hub keeps in the object store
	// (default 64): once round r has closed it deletes the models of the rounds up to
	// r − KeepModels, so the store stays bounded. An older version still names its model's
	// hash (and the ledger records every model), but `models pull` can no longer fetch it.
	// It must be above MaxStaleness: a gateway may still train from a model that many
	// rounds old.
	KeepModels uint64 `yaml:"keep_models"`
	// Strategy is the aggregation rule.
	Strategy aggregate.Strategy `yaml:"strategy"`
	// DP is client-level differential privacy, enforced as a budget by the hub.
	DP dp.Config `yaml:"dp"`
	// Codecs are offered to gateways in order of preference (default: none). Rounds with
	// secure aggregation send masked float32-sized inputs instead.
	Codecs []compress.Codec `yaml:"codecs"`
	// SecAgg turns on secure aggregation: the hub learns only the sum of the updates.
	SecAgg secagg.Config `yaml:"secagg"`
	// Acceptance bounds the federated evaluation of each global model (its metrics by
	// name, such as false_alarm_rate: {max: 0.05}): the evaluation record says whether
	// the model met every bound. The gateways report the metrics as global_<name>; with
	// secure aggregation, secagg.metrics must name them.
	Acceptance map[string]Bound `yaml:"acceptance"`
	// FinalEvaluation adds, after the last of Rounds, a round in which the participants
	// judge the last global model on their held-out data without training (PhaseEvaluate),
	// so the model an OEM releases has a federated evaluation like every earlier one (which
	// the round training from it records). It needs Rounds > 0. With DP the hub releases
	// the noised mean of the clipped metrics (dp.Noise.Mean), which costs a round's
	// privacy; with secure aggregation the gateways mask only the weight and
	// secagg.metrics, which must name the global_ metrics, and the hub learns their
	// weighted means; with both, the gateways clip the metrics before masking them (and
	// add their shares of the noise with dp.noise distributed; the hub adds it with
	// central), every weight is 1, and the round costs a round's privacy.
	FinalEvaluation bool `yaml:"final_evaluation"`
}

// SetDefaults fills in every field left at its zero value.
func (c *FederationConfig) SetDefaults() {
	if c.InitScale == 0 {
		c.InitScale = 0.1
	}
	if c.RoundTimeout == 0 {
		c.RoundTimeout = 10 * time.Minute
	}
	if c.KeepModels == 0 {
		c.KeepModels = DefaultKeepModels
	}
	c.Strategy.SetDefaults()
	c.DP.SetDefaults()
	c.SecAgg.SetDefaults()
	if len(c.Codecs) == 0 {
		c.Codecs = []compress.Codec{{Kind: compress.None}}
	}
	for i := range c.Codecs {
		c.Codecs[i].SetDefaults()
	}
}

func (c FederationConfig) participants() int {
	if c.Participants > 0 {
		return c.Participants
	}
	return len(c.Members)
}

// RoundSpan is the longest a round lasts while the hub runs: a deadline of round_timeout
// per phase, of which a round with secure aggregation has five, any other round one. A hub
// restarted in a round reads its updates again from the update stream, which must still
// hold them.
func (c FederationConfig) RoundSpan() (span time.Duration, phases int) {
	phases = 1
	if c.SecAgg.Enabled {
		phases = len(secaggPhases)
	}
	return time.Duration(phases) * c.RoundTimeout, phases
}

func (c FederationConfig) quorum() int {
	if c.Quorum > 0 {
		return c.Quorum
	}
	return max(c.Strategy.MinUpdates(), (c.participants()+1)/2)
}

// Validate reports every problem at once, with paths relative to the federation.
func (c FederationConfig) Validate() error {
	var p config.Problems
	if err := CheckName(c.Name); err != nil {
		p.Addf("name", "%v", err)
	}
	if len(c.Members) == 0 {
		p.Addf("members", "is empty; expected at least one gateway")
	}
	seen := map[string]bool{}
	for i, m := range c.Members {
		path := config.Index("members", i)
		if err := CheckName(m.Name); err != nil {
			p.Addf(config.Join(path, "name"), "%v", err)
		}
		if seen[m.Name] {
			p.Addf(config.Join(path, "name"), "%q appears twice", m.Name)
		}
		seen[m.Name] = true
		if len(m.Key.PublicKey) != ed25519.PublicKeySize {
			p.Addf(config.Join(path, "key"), "is required: the gateway's ed25519 public key in hex")
		}
	}
	if c.Architecture.Kind == "" {
		p.Addf("architecture.kind", "is required, e.g. autoencoder")
	}
	if c.Architecture.Params <= 0 || c.Architecture.Params > MaxParams {
		p.Addf("architecture.params", "%d is out of range; expected 1..%d", c.Architecture.Params, MaxParams)
	}
	if !(c.InitScale > 0) || c.InitScale > math.MaxFloat32 {
		// The parameters are float32: a larger scale draws infinities.
		p.Addf("init_scale", "%v; expected a positive number up to %g (float32's largest)", c.InitScale, math.MaxFloat32)
	}
	if c.Participants < 0 || c.Participants > len(c.Members) {
		p.Addf("participants", "%d is out of range; expected 0..%d (the members)", c.Participants, len(c.Members))
	}
	if c.Quorum < 0 || c.Quorum > c.participants() {
		p.Addf("quorum", "%d is out of range; expected 0..%d (the participants per round)", c.Quorum, c.participants())
	} else if q := c.quorum(); q < c.Strategy.MinUpdates() {
		p.Addf("quorum", "%d is below the %d updates strategy %s needs", q, c.Strategy.MinUpdates(), c.Strategy.Name)
	} else if n := c.participants(); c.Quorum == 0 && q > n && c.Participants <= len(c.Members) {
		// The default quorum is what the strategy needs: no round could close.
		p.Addf("strategy.name", "%q needs %d updates per round (2·byzantine + 3, byzantine %d), more than the %d participants per round, so every round would be abandoned; expected at least %d participants, a lower strategy.byzantine, or another strategy",
			c.Strategy.Name, q, c.Strategy.Byzantine, n, q)
	}
	if c.RoundTimeout <= 0 {
		p.Addf("round_timeout", "%v must be positive", c.RoundTimeout)
	}
	if c.KeepModels <= c.MaxStaleness {
		p.Addf("keep_models", "%d is not above max_staleness %d; expected at least %d, or the hub deletes models that gateways may still train from", c.KeepModels, c.MaxStaleness, c.MaxStaleness+1)
	}
	p.Nest("strategy", c.Strategy.Validate())
	p.Nest("dp", c.DP.Validate())
	p.Nest("secagg", c.SecAgg.Validate())
	if c.SecAgg.Enabled && c.SecAgg.Validate() == nil && c.Participants >= 0 && c.Participants <= len(c.Members) {
		// Every round has the configured participants: if they do not fit, the hub abandons
		// every round (reason params).
		if _, err := c.SecAgg.Params(0, c.participants(), 1); err != nil {
			if inner := errors.Unwrap(err); inner != nil {
				err = inner
			}
			p.Addf("secagg.enabled", "true, but no round can run with %d participants per round: %v", c.participants(), err)
		}
	}
	if c.DP.Enabled {
		if c.DP.Noise == dp.NoiseDistributed && !c.SecAgg.Enabled {
			p.Addf("dp.noise", "%q needs secagg.enabled (without it the hub sees each noised update); expected %q", c.DP.Noise, dp.NoiseCentral)
		}
		if !c.Strategy.Mean() {
			p.Addf("strategy.name", "%q cannot be combined with dp (the noise calibration assumes a mean); expected fedavg, fedprox, fedadam or fedyogi", c.Strategy.Name)
		}
		c.validateRejectWithDP(&p)
		c.validateNoiseShares(&p)
	}
	c.validateSecAggMetrics(&p)
	c.validateAcceptance(&p)
	if c.FinalEvaluation {
		switch {
		case c.Rounds == 0:
			p.Addf("final_evaluation", "needs a last round: rounds is 0 (run until stopped); expected rounds > 0 or final_evaluation false")
		case c.SecAgg.Enabled && !slices.ContainsFunc(c.SecAgg.Metrics, func(m string) bool { return strings.HasPrefix(m, GlobalMetricPrefix) }):
			p.Addf("final_evaluation", "with secagg, secagg.metrics %q names no %s metric, so the round would learn nothing; expected them listed (global_false_alarm_rate, ...)", c.SecAgg.Metrics, GlobalMetricPrefix)
		}
	}
	if c.SecAgg.Enabled && !c.Strategy.Mean() {
		p.Addf("strategy.name", "%q needs every update in the clear and cannot run on masked updates; expected fedavg, fedprox, fedadam or fedyogi with secagg", c.Strategy.Name)
	}
	if len(c.Codecs) == 0 {
		p.Addf("codecs", "is empty; expected at least {kind: none}")
	}
	for i, cd := range c.Codecs {
		p.Nest(config.Index("codecs", i), cd.Validate())
	}
	return p.Err()
}

// validateRejectWithDP refuses outlier rejection with DP: it compares every update with the
// round's median norm or center, so one gateway's update can bring others in or leave them
// out, and move the sum by more than dp.clip_norm, the sensitivity the noise is calibrated
// to.
func (c FederationConfig) validateRejectWithDP(p *config.Problems) {
	const why = "cannot be combined with dp.enabled: rejection relative to the round's median lets one gateway change which other updates are used, moving the sum by more than dp.clip_norm, the sensitivity the noise is calibrated to"
	r := c.Strategy.Reject
	if r.NormRatio != 0 {
		p.Addf("strategy.reject.norm_ratio", "%v %s; expected 0 (off) with dp", r.NormRatio, why)
	}
	if r.MinCosine != nil {
		p.Addf("strategy.reject.min_cosine", "%v %s; expected it unset with dp", *r.MinCosine, why)
	}
}

// validateNoiseShares checks that, with distributed DP noise and secure aggregation, a
// gateway's masked elements keep their noise shares: secure aggregation clips every element
// to ±secagg.range, so an element's bound plus 6 standard deviations of its share must fit,
// or the sum carries less noise than the budget charges for. The shares are largest for
// the fewest survivors a round may be released with (fewestSurvivors: every round has
// the configured participants and quorum).
func (c FederationConfig) validateNoiseShares(p *config.Problems) {
	if c.DP.Noise != dp.NoiseDistributed || !c.SecAgg.Enabled {
		return
	}
	for _, v := range []float64{c.DP.ClipNorm, c.DP.NoiseMultiplier, c.DP.MetricBound} {
		if !(v > 0) || math.IsInf(v, 0) {
			return // dp.Config.Validate reports it
		}
	}
	params, err := c.SecAgg.Params(0, c.participants(), 1)
	if err != nil {
		return // no round can run; secagg.Config.Validate or the hub report why
	}
	k := fewestSurvivors(c.quorum(), params)
	c.checkNoiseShare(p, "update", "dp.clip_norm", c.DP.ClipNorm, c.DP.NoiseStd(k), k)
	if c.FinalEvaluation && len(c.SecAgg.Metrics) > 0 {
		c.checkNoiseShare(p, "final evaluation metric", "dp.metric_bound", c.DP.MetricBound, c.DP.MetricStd(len(c.SecAgg.Metrics), k), k)
	}
}

// checkNoiseShare reports at dp.noise_multiplier a masked element, bounded by field
// (bound), whose noise share of standard deviation std (sized for k survivors) can reach
// beyond ±secagg.range, naming the smallest range and the largest multiplier that fit.
func (c FederationConfig) checkNoiseShare(p *config.Problems, what, field string, bound, std float64, k int) {
	reach := bound + 6*std
	if reach <= c.SecAgg.Range {
		return
	}
	fit := fmt.Sprintf("secagg.range ≥ %.3g", roundSignificant(reach, math.Ceil))
	if sigma := c.DP.NoiseMultiplier * (c.SecAgg.Range - bound) / (6 * std); sigma > 0 {
		fit += fmt.Sprintf(", or dp.noise_multiplier ≤ %.3g", roundSignificant(sigma, math.Floor))
	}
	p.Addf("dp.noise_multiplier", "%v with dp.noise distributed and secagg.range %v: a gateway's %s element (up to %s %v) plus 6 standard deviations of its noise share (%.3g, sized for %d survivors, the fewest a round may be released with) reaches %.3g, and secure aggregation clips it to ±secagg.range, removing noise the budget charges for; expected %s",
		c.DP.NoiseMultiplier, c.SecAgg.Range, what, field, bound, std, k, reach, fit)
}

// roundSignificant rounds x > 0 to 3 significant digits with round (math.Ceil or math.Floor).
func roundSignificant(x float64, round func(float64) float64) float64 {
	unit := math.Pow(10, math.Floor(math.Log10(x))-2)
	return round(x/unit) * unit
}

// validateSecAggMetrics checks secagg.metrics: names like an update's metric names, at
// most as many as an update carries, each once; and the setting it needs (secure
// aggregation on, DP off, range ≥ 1 for the weight elements).
func (c FederationConfig) validateSecAggMetrics(p *config.Problems) {
	ms := c.SecAgg.Metrics
	if len(ms) == 0 {
		return
	}
	if len(ms) > maxMetrics {
		p.Addf("secagg.metrics", "%d names; expected at most %d, as many as an update carries", len(ms), maxMetrics)
	}
	for i, m := range ms {
		if err := CheckName(m); err != nil {
			p.Addf(config.Index("secagg.metrics", i), "%v", err)
		} else if slices.Contains(ms[:i], m) {
			p.Addf(config.Index("secagg.metrics", i), "%q appears twice", m)
		}
	}
	if c.SecAgg.Range < 1 {
		p.Addf("secagg.range", "%v with metrics: each metric's weight element (up to 1) needs range ≥ 1", c.SecAgg.Range)
	}
	switch {
	case !c.SecAgg.Enabled:
		p.Addf("secagg.metrics", "is set but secagg is not enabled; without secure aggregation the hub reports the mean of every metric all used updates carry")
	case c.DP.Enabled && !c.FinalEvaluation:
		p.Addf("secagg.metrics", "with dp are masked, clipped and noised in the final evaluation round only (a training round's would carry no noise); expected final_evaluation true, or no metrics")
	case c.DP.Enabled && c.DP.MetricBound > c.SecAgg.Range:
		p.Addf("dp.metric_bound", "%v exceeds secagg.range %v, which the masked metrics are clipped to; expected at most %v", c.DP.MetricBound, c.SecAgg.Range, c.SecAgg.Range)
	}
}

// HubConfig configures the hub's federations.
type HubConfig struct {
	Federations []FederationConfig `yaml:"federations"`
}

// SetDefaults fills in every field left at its zero value.
func (c *HubConfig) SetDefaults() {
	for i := range c.Federations {
		c.Federations[i].SetDefaults()
	}
}

// Validate reports every problem at once.
func (c HubConfig) Validate() error {
	var p config.Problems
	if len(c.Federations) == 0 {
		p.Addf("federations", "is empty; expected at least one federation")
	}
	seen := map[string]bool{}
	for i, f := range c.Federations {
		p.Nest(config.Index("federations", i), f.Validate())
		if seen[f.Name] {
			p.Addf(config.Join(config.Index("federations", i), "name"), "%q appears twice", f.Name)
		}
		seen[f.Name] = true
	}
	return p.Err()
}

// RoundState is the round state the hub publishes (KV) and gateways watch.
type RoundState struct {
	Version      int              `json:"version"`
	Federation   string           `json:"federation"`
	Round        uint64           `json:"round"`
	Phase        string           `json:"phase"`        // open, finished, budget_exhausted
	Global       string           `json:"global"`       // SHA-256 of the model to train from
	GlobalRound  uint64           `json:"global_round"` // the round that produced it
	Targets      []string         `json:"targets"`
	Quorum       int              `json:"quorum"`
	Deadline     time.Time        `json:"deadline"`
	MaxStaleness uint64           `json:"max_staleness"`
	Codecs       []compress.Codec `json:"codecs"`
	ProximalMu   float64          `json:"proximal_mu,omitempty"`
	ClipNorm     float64          `json:"clip_norm,omitempty"` // gateways clip their update to it (DP)
	// Noise is the standard deviation each gateway adds to its clipped update (distributed DP).
	Noise  float64      `json:"noise,omitempty"`
	SecAgg *SecAggState `json:"secagg,omitempty"`
}

// Phases of a round with secure aggregation: the hub moves the round state through them.
const (
	SecAggAdvertise = "advertise" // train, then send AdvertiseKeys
	SecAggShare     = "share"     // Roster is set: send ShareKeys
	SecAggMask      = "mask"      // Bundles are set: send the MaskedInput
	SecAggCheck     = "check"     // Request is set: sign its survivor set (SurvivorSig)
	SecAggUnmask    = "unmask"    // Signatures are set: check them, send the UnmaskResponse
)

// SecAggState is the secure-aggregation part of a round state: the parameters, each
// participant's client id and identity key, the phase, and the hub's messages to the
// gateways (marshalled by package secagg; the bundles are encrypted pairwise). It is also
// the hub's durable record of every phase it closed: a restarted hub replays the round's
// messages and refuses to go on unless they rebuild exactly these messages.
type SecAggState struct {
	Params  secagg.Params     `json:"params"`
	IDs     map[string]uint32 `json:"ids"`
	Phase   string            `json:"phase"`
	Roster  []byte            `json:"roster,omitempty"`
	Bundles map[string][]byte `json:"bundles,omitempty"`
	Request []byte            `json:"request,omitempty"`
	// Keys are the participants' identity keys as the hub knows them; a gateway uses them
	// only for members it has no key of its own for (ParticipantConfig.Peers).
	Keys       map[string]ed25519.PublicKey `json:"keys,omitempty"`
	Signatures []byte                       `json:"signatures,omitempty"`
	// SampleCap > 0: gateways mask [w·update, w] with w = secagg.Weight(samples, SampleCap)
	// (Params.Dim is the model's parameters + 1); 0: the update alone (w = 1).
	SampleCap uint64 `json:"sample_cap,omitempty"`
	// Metrics are the local metrics masked after that, two elements each: w·value and w, or
	// 0 and 0 when the gateway has no such metric (or one outside ±Params.Range). Params.Dim
	// counts them.
	Metrics []string `json:"metrics,omitempty"`
	// MetricBound > 0 (DP, the final evaluation round only): each metric's value is clipped
	// into [0, MetricBound] before it is masked (dp.ClipMetric), and MetricNoise > 0
	// (distributed DP) is the standard deviation of the noise each gateway adds to it
	// (dp.Config.MetricStd). The weight is then 1.
	MetricBound float64 `json:"metric_bound,omitempty"`
	MetricNoise float64 `json:"metric_noise,omitempty"`
}

// Round phases.
const (
	PhaseOpen = "open"
	// PhaseEvaluate is the final evaluation round (FederationConfig.FinalEvaluation): the
	// targets judge Global without training and send an evaluation (KindEvaluation).
	PhaseEvaluate        = "evaluate"
	PhaseFinished        = "finished"
	PhaseBudgetExhausted = "budget_exhausted"
)

// DecodeRoundState decodes a round state strictly.
func DecodeRoundState(b []byte) (RoundState, error) {
	var s RoundState
	if err := models.DecodeJSON(b, &s); err != nil {
		return s, fmt.Errorf("%w: round state: %v", ErrMalformed, err)
	}
	if s.Version != StateVersion {
		return s, fmt.Errorf("%w: round state version %d; expected %d", ErrMalformed, s.Version, StateVersion)
	}
	if err := CheckName(s.Federation); err != nil {
		return s, fmt.Errorf("%w: round state: %v", ErrMalformed, err)
	}
	return s, nil
}
