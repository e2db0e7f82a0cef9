package gateway

import (
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/millwright-io/millwright/internal/metrictest"
)

func signalNotify(ch chan<- os.Signal) { signal.Notify(ch, syscall.SIGTERM, os.Interrupt) }

func waitMetric(t *testing.T, g *Gateway, name string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok(metrictest.Sum(t, g.Registry(), name)) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached the expected value (now %v)", name, metrictest.Sum(t, g.Registry(), name))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
