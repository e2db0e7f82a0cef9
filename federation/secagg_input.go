package federation

import (
	"math"

	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/federation/secagg"
)

// The layout of a gateway's masked input in a round with secure aggregation, in one place
// for the gateway that builds it and the hub that reads the unmasked sum:
//
//	update·w | w (with SampleCap) | value₁·w, w | … | valueₘ·w, w (one pair per Metrics name)
//
// w is secagg.Weight(samples, SampleCap) with a sample cap, else 1. A gateway without a
// metric, or with a value not within ±Params.Range (which the clipping would change; NaN,
// which secagg refuses), sends 0, 0 for it, so the hub's mean of that metric is over the
// gateways that had it. With DP (the final evaluation round only), a value is clipped into
// [0, MetricBound] and noised instead, and w is 1; a metric the gateway lacks is its share
// of the noise alone, with w 0.

// inputLen is the length of a masked input for a model of params parameters.
func (sa *SecAggState) inputLen(params int) int {
	n := params + 2*len(sa.Metrics)
	if sa.SampleCap > 0 {
		n++
	}
	return n
}

// maskedInput lays out a gateway's update and metrics, trained on samples rows, as above.
// With DP (MetricBound > 0) each metric it has is clipped into [0, MetricBound], and, with
// MetricNoise > 0, every metric, had or not, gets noise's share of the noise (distributed
// DP); none is left out for its range, which the clipping bounds (the encoding clips a
// noised value to ±Range).
func (sa *SecAggState) maskedInput(delta []float32, samples int, metrics map[string]float64, noise *dp.Noise) []float32 {
	w := float32(1)
	if sa.SampleCap > 0 {
		w = secagg.Weight(samples, sa.SampleCap)
	}
	in := make([]float32, 0, sa.inputLen(len(delta)))
	for _, d := range delta {
		in = append(in, w*d)
	}
	if sa.SampleCap > 0 {
		in = append(in, w)
	}
	for _, name := range sa.Metrics {
		v, ok := metrics[name]
		switch {
		case sa.MetricBound > 0:
			// Every survivor's share of the noise goes into every sum, one it lacks the
			// metric for too (as 0 with weight 0): the hub unmasks all the sums, and each
			// must carry the noise the budget pays for.
			x, w := []float32{0}, float32(0)
			if ok {
				x[0], w = float32(dp.ClipMetric(v, sa.MetricBound)), 1
			}
			if sa.MetricNoise > 0 {
				noise.Add(x, sa.MetricNoise)
			}
			in = append(in, x[0], w)
		case !ok || !(math.Abs(v) <= sa.Params.Range): // NaN too
			in = append(in, 0, 0)
		default:
			in = append(in, w*float32(v), w)
		}
	}
	return in
}

// metricMeans reads the metrics' means from the unmasked sums of their pairs: Σ w·value /
// Σ w for each metric some of the survivors had (as float32Value: the sums are float32,
// of elements rounded to 2^-FracBits).
// Masking hides inputs, it does not check them: a metric whose sums no honest survivors
// can produce (weights summing to more than one per survivor, or a mean beyond ±Range) is
// left out and named in implausible. means is nil when no metric is left.
func (sa *SecAggState) metricMeans(pairs []float32, survivors int) (means map[string]float64, implausible []string) {
	const slack = 1e-3 // fixed-point rounding of the sums
	for i, name := range sa.Metrics {
		sum, weight := float64(pairs[2*i]), float64(pairs[2*i+1])
		if weight <= 0 {
			continue // no survivor had it
		}
		mean := sum / weight
		if weight > float64(survivors)+slack || math.Abs(mean) > sa.Params.Range+slack {
			implausible = append(implausible, name)
			continue
		}
		if means == nil {
			means = map[string]float64{}
		}
		means[name] = float32Value(float32(mean))
	}
	return means, implausible
}
