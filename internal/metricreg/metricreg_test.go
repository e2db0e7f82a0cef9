package metricreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterReusesTheExistingCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "millwright_test_total", Help: "h"}
	a, err := Register(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Register(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatal(err)
	}
	a.Inc()
	b.Inc()
	mfs, _ := reg.Gather()
	if got := mfs[0].GetMetric()[0].GetCounter().GetValue(); got != 2 {
		t.Errorf("counter = %v, want both increments on one series", got)
	}
	// A collector of the same name with a different shape is a real conflict.
	if _, err := Register(reg, prometheus.NewCounterVec(opts, []string{"x"})); err == nil {
		t.Error("conflicting registration accepted")
	}
}
