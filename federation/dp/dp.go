// Package dp makes each participant's contribution to a federation differentially private
// and accounts for the privacy spent.
//
// Threat model: the guarantee is client-level (ε, δ)-DP given who took part: replacing
// what one participating factory contributed (its clipped update, its clipped metrics) with
// a zero contribution changes the probability of any published model by at most a factor
// e^ε, except with probability δ. Whether a factory took part is published (the round's
// participants), not protected, so every round is charged as the Gaussian mechanism,
// without amplification by sampling; two arbitrary contributions of one factory are two
// such replacements apart, (2ε, (1+e^ε)δ) by group privacy. Trusted: the clipping and
// noise really happen (on the client for local/distributed noise, on the hub for central
// noise) with an unpredictable noise source (crypto/rand in production), and the
// accountant is told the true noise multiplier. Verified: Budget refuses a round that would
// exceed the configured ε at δ. What leaks: everything within (ε, δ), which is a bound, not
// a measurement; the set of participants and their sample counts are not protected; noise
// is drawn in floating point, which is known to leak through the low bits (Mironov 2012)
// and is not hardened here; when the noise is split across clients (distributed DP with
// secure aggregation), each share is sized for the fewest clients whose sum may be
// released, so dropouts down to them leave at least σ·C in the sum (and more survivors
// leave more, which the accountant is told: SharedMultiplier), but clients that collude
// with the hub, or skip their noise, reduce it below σ·C.
// The sensitivity analysis assumes each client's clipped update enters the sum with
// weight 1: combine DP with an unweighted mean (every Samples equal), not with
// sample-weighted FedAvg, where a client claiming many samples gets more than its share.
package dp

import (
	"crypto/rand"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
)

// Clip scales v in place so that its L2 norm is at most c, and returns the norm it had
// before. c must be positive.
func Clip(v []float32, c float64) (norm float64) {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	norm = math.Sqrt(s)
	if norm > c {
		f := c / norm
		for i := range v {
			v[i] = float32(float64(v[i]) * f)
		}
	}
	return norm
}

// Noise draws Gaussian noise. It is not safe for concurrent use.
type Noise struct {
	r *mrand.Rand
}

// NewNoise returns a noise source seeded with 32 bytes read from src: crypto/rand.Reader
// when src is nil (production), a fixed reader in tests. The stream is ChaCha8, a
// cryptographically secure generator, so the noise cannot be predicted without the seed.
func NewNoise(src io.Reader) (*Noise, error) {
	if src == nil {
		src = rand.Reader
	}
	var seed [32]byte
	if _, err := io.ReadFull(src, seed[:]); err != nil {
		return nil, fmt.Errorf("dp: seeding the noise source: %w", err)
	}
	return &Noise{r: mrand.New(mrand.NewChaCha8(seed))}, nil
}

// Add adds independent N(0, std²) noise to every element of v.
func (n *Noise) Add(v []float32, std float64) {
	for i := range v {
		v[i] = float32(float64(v[i]) + n.r.NormFloat64()*std)
	}
}

// Mean returns the mean of rows (one value per metric in each, the same metrics in
// every row; at least one row) with client-level DP, at the privacy cost of one round:
// each value is clipped into [0, cfg.MetricBound] (ClipMetric), so that a row is a vector
// of L2 norm at most B = MetricBound·√m for m metrics; each metric's sum gets N(0, (σB)²)
// noise, σ the noise multiplier, as a round's sum of updates clipped to B would; the
// noised means are clamped into [0, MetricBound] again (MetricMeans). It also returns the
// noise's standard deviation on the mean, σB/len(rows). It is the central mechanism; under
// secure aggregation the gateways clip, and the noise is the hub's on the unmasked sums
// (central) or the gateways' shares in them (distributed, MetricStd).
func (n *Noise) Mean(rows [][]float64, cfg Config) ([]float64, float64) {
	m := len(rows[0])
	sum := make([]float32, m)
	for _, r := range rows {
		for j, v := range r {
			sum[j] += float32(ClipMetric(v, cfg.MetricBound))
		}
	}
	central := cfg // the hub adds the whole noise
	central.Noise = NoiseCentral
	std := central.MetricStd(m, len(rows))
	n.Add(sum, std)
	return cfg.MetricMeans(sum, len(rows)), std / float64(len(rows))
}

// ClipMetric clips a metric's value into [0, bound] (NaN, which the decoders refuse, to 0),
// as a gateway's metrics are before their noised mean (Config.MetricBound).
func ClipMetric(v, bound float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return min(max(v, 0), bound)
}

// MetricStd returns the standard deviation of the noise one party adds to each sum of m
// metrics, each clipped into [0, MetricBound]: σ·MetricSensitivity(m) for central noise;
// with distributed noise σ·MetricSensitivity(m)/√n for each client, n the fewest clients
// whose sum may be released, as NoiseStd is for updates.
func (c Config) MetricStd(m, n int) float64 {
	s := c.NoiseMultiplier * c.MetricSensitivity(m)
	if c.Noise == NoiseDistributed {
		s /= math.Sqrt(float64(max(n, 1)))
	}
	return s
}

// MetricSensitivity is the L2 sensitivity of one client's m metrics, each clipped into
// [0, MetricBound]: MetricBound·√m.
func (c Config) MetricSensitivity(m int) float64 {
	return c.MetricBound * math.Sqrt(float64(m))
}

// MetricMeans returns the means of sums (each over k clients, noised) clamped into
// [0, MetricBound], which costs no privacy (post-processing).
func (c Config) MetricMeans(sums []float32, k int) []float64 {
	out := make([]float64, len(sums))
	for j, s := range sums {
		out[j] = min(max(float64(s)/float64(k), 0), c.MetricBound)
	}
	return out
}

// Privatize clips v to cfg.ClipNorm and adds noise of standard deviation cfg.NoiseStd(n)
// to every element, where n is the fewest clients whose sum may be released: the whole
// noise for central DP (the hub calls it on the sum), a 1/√n share for distributed DP
// (each client calls it on its update before secure aggregation). It returns the norm v
// had before clipping.
func (n *Noise) Privatize(v []float32, cfg Config, clients int) float64 {
	norm := Clip(v, cfg.ClipNorm)
	n.Add(v, cfg.NoiseStd(clients))
	return norm
}
