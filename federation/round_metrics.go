package federation

import (
	"context"
	"maps"
	"math"
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/federation/dp"
)

// roundMetrics combines, over the updates a round used, each local metric
// (Update.Metrics) that every one of them reported, the way the round's rule combined the
// updates (aggregate.Strategy.Combine): the sample-weighted mean under fedavg, fedprox,
// fedadam and fedyogi, the median or trimmed mean under those rules, so that the gateways
// the rule discounts cannot move the metrics either, and the mean of the updates Krum
// chose. A name that some participants send and others do not is left out, so no
// participant adds a series to the hub's metrics on its own. It is nil when the round
// used no update with metrics.
func roundMetrics(s aggregate.Strategy, updates map[string]*Update, used []string) map[string]float64 {
	names := commonMetrics(updates, used)
	if len(names) == 0 {
		return nil
	}
	ups := make([]aggregate.Update, len(used))
	for i, name := range used {
		u := updates[name]
		v := make([]float32, len(names))
		for j, k := range names {
			v[j] = float32(u.Metrics[k])
		}
		ups[i] = aggregate.Update{Participant: name, Delta: v, Samples: int(u.Samples)}
	}
	out := make(map[string]float64, len(names))
	for j, x := range s.Combine(ups) {
		out[names[j]] = float32Value(x)
	}
	return out
}

// commonMetrics returns, sorted, the names of the metrics every update of used reported
// (none if one of them is not among updates).
func commonMetrics(updates map[string]*Update, used []string) []string {
	var names []string
	for i, name := range used {
		u := updates[name]
		if u == nil {
			return nil
		}
		if i == 0 {
			names = slices.Sorted(maps.Keys(u.Metrics))
		} else {
			names = slices.DeleteFunc(names, func(k string) bool { _, ok := u.Metrics[k]; return !ok })
		}
	}
	return names
}

// privateMetrics returns the mean of the metrics every update of used reported, with
// client-level DP (dp.Noise.Mean: clipped into [0, dp.metric_bound], noised as a round's
// sum is), after spending a round of the privacy budget; and the noise's standard
// deviation on the mean. Nothing is spent when no metric is common to them.
func (f *fedRun) privateMetrics(ctx context.Context, updates map[string]*Update, used []string) (map[string]float64, *dp.Report, float64, error) {
	names := commonMetrics(updates, used)
	if len(names) == 0 {
		return nil, nil, 0, nil
	}
	rows := make([][]float64, len(used))
	for i, name := range used {
		rows[i] = make([]float64, len(names))
		for j, k := range names {
			rows[i][j] = updates[name].Metrics[k]
		}
	}
	rep, err := f.spend(ctx, f.cfg.DP.NoiseMultiplier)
	if err != nil {
		return nil, nil, 0, err
	}
	mean, std := f.noise.Mean(rows, f.cfg.DP)
	out := make(map[string]float64, len(names))
	for j, v := range mean {
		out[names[j]] = float32Value(float32(v))
	}
	return out, &rep, std, nil
}

// privateMaskedMetrics returns the means of the metrics whose sums pairs holds (a final
// evaluation round with DP under secure aggregation; see SecAggState.maskedInput): each
// gateway clipped its values into [0, dp.metric_bound] and, with distributed noise, added
// its share of the noise; the hub adds central noise here, as dp.Noise.Mean does in the
// clear. Only the metrics whose count is one per survivor are kept (a mean over the
// survivors that had a metric is not the mean the noise was sized for, and a larger count
// no honest survivors send); the others are returned as incomplete. It spends a round of
// the privacy budget first, whatever is kept (the hub has unmasked every sum), and returns
// the noise's standard deviation on each mean.
func (f *fedRun) privateMaskedMetrics(ctx context.Context, sa *SecAggState, pairs []float32, survivors int) (map[string]float64, *dp.Report, float64, []string, error) {
	const slack = 1e-3 // fixed-point rounding of the sums
	var names, incomplete []string
	var sums []float32
	for i, name := range sa.Metrics {
		if math.Abs(float64(pairs[2*i+1])-float64(survivors)) > slack {
			incomplete = append(incomplete, name)
			continue
		}
		names, sums = append(names, name), append(sums, pairs[2*i])
	}
	cfg := f.cfg.DP
	// The noise on each sum: the hub's, or the survivors' shares (sized for the fewest
	// survivors, as for the updates, so that more of them add more). Every masked metric
	// counts in a gateway's sensitivity, the left-out ones too.
	std, sigma := sa.MetricNoise*math.Sqrt(float64(survivors)), cfg.NoiseMultiplier
	if sa.MetricNoise > 0 {
		sigma = dp.SharedMultiplier(sa.MetricNoise, survivors, cfg.MetricSensitivity(len(sa.Metrics)))
	}
	rep, err := f.spend(ctx, sigma)
	if err != nil {
		return nil, nil, 0, nil, err
	}
	if len(names) == 0 {
		return nil, &rep, 0, incomplete, nil
	}
	if cfg.Noise == dp.NoiseCentral {
		std = cfg.MetricStd(len(sa.Metrics), survivors)
		f.noise.Add(sums, std)
	}
	out := make(map[string]float64, len(names))
	for j, v := range cfg.MetricMeans(sums, survivors) {
		out[names[j]] = float32Value(float32(v))
	}
	return out, &rep, std / float64(survivors), incomplete, nil
}

// float32Value is x as the shortest decimal that is the same float32 (0.31, not
// 0.3100000023841858): both ways of combining metrics, in the clear and under the mask,
// compute in float32 and hold no more.
func float32Value(x float32) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
	return v
}

// roundMetricGauge is millwright_federation_round_metric: the last aggregated round's
// metrics, by federation and metric name.
func roundMetricGauge() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "millwright_federation_round_metric",
		Help: "The last aggregated round's local metrics (false_alarm_rate, detection_rate, ... as the gateways report them), combined over the updates the round used as its rule combined them (sample-weighted mean; median or trimmed mean under those rules); only names every used update reported. With secure aggregation, only the metrics secagg.metrics names, summed under the mask."},
		[]string{"federation", "metric"})
}

// setRoundMetrics replaces the federation's series of the round metric gauge with ms.
func (m *hubMetrics) setRoundMetrics(fed string, ms map[string]float64) {
	m.roundMetric.DeletePartialMatch(prometheus.Labels{"federation": fed})
	for k, v := range ms {
		m.roundMetric.WithLabelValues(fed, k).Set(v)
	}
}
