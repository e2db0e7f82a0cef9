package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/models/train/trainsim"
)

func TestModelsTrainUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"models", "train"}, 2, "--machine ID"},
		{[]string{"models", "train", "--config", filepath.Join(t.TempDir(), "missing.yaml"), "--machine", "m"}, 1, "invalid configuration"},
	} {
		runCLI(t, tc.args, tc.code, nil, []string{tc.want})
	}
}

// TestModelsTrainByHand trains a pump's model from two hours of history in a fresh
// InfluxDB database, with the progress bar on stderr, and installs it in the store.
func TestModelsTrainByHand(t *testing.T) {
	servicetest.Require(t, "InfluxDB")
	url := servicetest.InfluxURL()
	db := servicetest.Database(t, url)
	plant, err := sim.New(sim.Config{Seed: 3, Machines: []sim.Machine{{ID: "pump-1", Line: "l1", Kind: sim.KindPump}}})
	if err != nil {
		t.Fatal(err)
	}
	trainsim.Store(t, url, db, trainsim.History(plant, "acme", time.Now().Add(-2*time.Hour), time.Second, 7200))

	state := t.TempDir()
	cfg := filepath.Join(state, "gateway.yaml")
	doc := fmt.Sprintf(`
gateway: {factory: acme, state_dir: %s}
sources:
  - name: broker
    mqtt: {servers: ["tcp://127.0.0.1:1"], topics: [{pattern: "p/{machine}/{signal}"}]}
sinks:
  - name: influx
    influxdb: {url: %s, bucket: %s}
models:
  enabled: true
  train: {machines: [pump-1], interval: 0, window: 2h, min_rows: 1000, chunk: 30m}
`, state, url, db)
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"models", "train", "--config", cfg, "--machine", "pump-1"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	t.Logf("stdout:\n%s", stdout.String())
	for _, want := range []string{"read", "(4/4 queries)", "validate", "100%"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("progress on stderr lacks %q: %q", want, stderr.String())
		}
	}
	if out := stdout.String(); !strings.Contains(out, "machine pump-1: model") || !strings.Contains(out, "installed in "+filepath.Join(state, "models")) {
		t.Errorf("stdout %q: want the model's summary and where it was installed", out)
	}
	heads, _ := filepath.Glob(filepath.Join(state, "models", "pump-1", "HEAD.json"))
	if len(heads) != 1 {
		t.Errorf("no HEAD.json for pump-1 in the store")
	}
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"models", "train", "--config", cfg, "--machine", "pump-9"}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "too little data") {
		t.Errorf("machine without history: exit %d, stderr %q; want 1 and too little data", code, stderr.String())
	}
}
