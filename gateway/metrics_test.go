package gateway

import (
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

func signalNotify(ch chan<- os.Signal) { signal.Notify(ch, syscall.SIGTERM, os.Interrupt) }

// metricValue sums the series of the named counter or gauge whose labels include labels.
func metricValue(t *testing.T, g *Gateway, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsMatch(m.GetLabel(), labels) {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// labelsMatch reports whether got holds every name/value pair of want ("name", "value", ...).
func labelsMatch(got []*dto.LabelPair, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, l := range got {
			if l.GetName() == want[i] && l.GetValue() == want[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func waitMetric(t *testing.T, g *Gateway, name string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok(metricValue(t, g, name)) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached the expected value (now %v)", name, metricValue(t, g, name))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
