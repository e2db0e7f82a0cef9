package federation

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// roundMetrics is the sample-weighted mean, over the updates a round used, of each local
// metric (Update.Metrics) that every one of them reported: a name that some participants
// send and others do not is left out, so no participant adds a series to the hub's
// metrics on its own. It is nil when the round used no update with metrics.
func roundMetrics(updates map[string]*Update, used []string) map[string]float64 {
	var names []string
	var total float64
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
		total += float64(u.Samples)
	}
	if len(names) == 0 || total == 0 {
		return nil
	}
	out := make(map[string]float64, len(names))
	for _, name := range used {
		u := updates[name]
		w := float64(u.Samples) / total
		for _, k := range names {
			out[k] += w * u.Metrics[k]
		}
	}
	return out
}

// roundMetricGauge is millwright_federation_round_metric: the last aggregated round's
// metrics, by federation and metric name.
func roundMetricGauge() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "millwright_federation_round_metric",
		Help: "The last aggregated round's local metrics (false_alarm_rate, detection_rate, ... as the gateways report them), their sample-weighted mean over the updates the round used; only names every used update reported. With secure aggregation, only the metrics secagg.metrics names, summed under the mask."},
		[]string{"federation", "metric"})
}

// setRoundMetrics replaces the federation's series of the round metric gauge with ms.
func (m *hubMetrics) setRoundMetrics(fed string, ms map[string]float64) {
	m.roundMetric.DeletePartialMatch(prometheus.Labels{"federation": fed})
	for k, v := range ms {
		m.roundMetric.WithLabelValues(fed, k).Set(v)
	}
}
