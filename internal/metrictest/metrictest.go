// Package metrictest reads the values of Prometheus metrics in tests.
package metrictest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Sum returns the total of the series of the metric family name in g whose labels include
// every name/value pair of labels ("name", "value", ...): a counter's or a gauge's value, a
// histogram's or a summary's sample count. It is 0 when no series matches; an error of
// Gather fails t.
func Sum(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	sum, _ := sum(t, g, name, labels)
	return sum
}

// Value is Sum for a metric that must be registered: it fails t when g has no family name
// (a metric without labels is gathered from its registration on, even at zero).
func Value(t testing.TB, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	v, ok := sum(t, g, name, nil)
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	return v
}

// sum returns Sum and whether g has a family name.
func sum(t testing.TB, g prometheus.Gatherer, name string, labels []string) (sum float64, found bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		found = true
		for _, m := range mf.GetMetric() {
			if !hasLabels(m.GetLabel(), labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			case m.Summary != nil:
				sum += float64(m.Summary.GetSampleCount())
			}
		}
	}
	return sum, found
}

// hasLabels reports whether got holds every name/value pair of want.
func hasLabels(got []*dto.LabelPair, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, l := range got {
			if l.GetName() == want[i] && l.GetValue() == want[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
