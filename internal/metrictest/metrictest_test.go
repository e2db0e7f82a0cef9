package metrictest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestSum(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "c"}, []string{"kind", "name"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "g"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h_seconds", Help: "h"})
	s := prometheus.NewSummary(prometheus.SummaryOpts{Name: "s_seconds", Help: "s"})
	reg.MustRegister(c, g, h, s)
	c.WithLabelValues("source", "a").Add(2)
	c.WithLabelValues("source", "b").Add(3)
	c.WithLabelValues("sink", "a").Add(5)
	g.Set(-1.5)
	h.Observe(0.1)
	h.Observe(7)
	s.Observe(1)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"c_total", nil, 10},
		{"c_total", []string{"kind", "source"}, 5},
		{"c_total", []string{"kind", "source", "name", "b"}, 3},
		{"c_total", []string{"kind", "other"}, 0},
		{"g", nil, -1.5},
		{"h_seconds", nil, 2},
		{"s_seconds", nil, 1},
		{"absent", nil, 0},
	} {
		if got := Sum(t, reg, tc.name, tc.labels...); got != tc.want {
			t.Errorf("Sum(%s, %q) = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if got := Value(t, reg, "g"); got != -1.5 {
		t.Errorf("Value(g) = %v, want -1.5", got)
	}
	if _, found := sum(t, reg, "absent", nil); found {
		t.Error("an absent metric was found")
	}
	if _, found := sum(t, reg, "c_total", []string{"kind", "other"}); !found {
		t.Error("a registered metric without a matching series was not found")
	}
}
