package deadletter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

func open(t *testing.T, mutate func(*Config)) (*Store, *bytes.Buffer, *prometheus.Registry) {
	t.Helper()
	var cfg Config
	cfg.SetDefaults()
	cfg.Dir = t.TempDir()
	if mutate != nil {
		mutate(&cfg)
	}
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	s, err := Open(cfg, slog.New(slog.NewTextHandler(&logs, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, &logs, reg
}

func readLines(t *testing.T, path string) []record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

func TestPutWritesCountsAndLogs(t *testing.T) {
	s, logs, _ := open(t, nil)
	ctx := context.Background()
	garbage := bytes.Repeat([]byte{0xff, 'x'}, 2000)
	s.Put(ctx, connectors.DeadLetter{Component: "source", Name: "plant", Class: "json_syntax", Reason: "bad json at offset 3", Origin: "a/b", Payload: garbage})
	p := telemetry.Point{Machine: "m1", Signal: "temp", Value: telemetry.Float(1.5), ServerTime: 7}
	s.Put(ctx, connectors.DeadLetter{Component: "sink", Name: "influx", Class: "type conflict!", Reason: "field type conflict", Point: &p})

	recs := readLines(t, s.Path())
	if len(recs) != 2 {
		t.Fatalf("got %d records, want 2", len(recs))
	}
	if recs[0].Truncated != len(garbage)-1024 || recs[0].Origin != "a/b" || recs[0].Class != "json_syntax" {
		t.Errorf("first record = %+v", recs[0])
	}
	if recs[1].Point == nil || recs[1].Point.Value != "1.5" || recs[1].Class != "type_conflict_" {
		t.Errorf("second record = %+v", recs[1])
	}
	if got := testutil.ToFloat64(s.total.WithLabelValues("source", "plant", "json_syntax")); got != 1 {
		t.Errorf("counter = %v, want 1", got)
	}
	if !strings.Contains(logs.String(), "bad json at offset 3") {
		t.Errorf("log does not name the reason: %s", logs)
	}
}

func TestLogIsRateLimitedButEveryLetterCounted(t *testing.T) {
	s, logs, _ := open(t, func(c *Config) { c.LogInterval = time.Hour })
	for i := 0; i < 1000; i++ {
		s.Put(context.Background(), connectors.DeadLetter{Component: "source", Name: "plant", Class: "json_syntax", Reason: "bad"})
	}
	if n := strings.Count(logs.String(), "dead letter"); n != 1 {
		t.Errorf("logged %d lines, want 1", n)
	}
	if got := testutil.ToFloat64(s.total.WithLabelValues("source", "plant", "json_syntax")); got != 1000 {
		t.Errorf("counted %v, want 1000", got)
	}
	if n := len(readLines(t, s.Path())); n != 1000 {
		t.Errorf("stored %d, want 1000", n)
	}
}

func TestRotationBoundsDiskAndCountsOverwrites(t *testing.T) {
	s, _, _ := open(t, func(c *Config) { c.MaxBytes = 4 << 10; c.MaxPayloadBytes = 100 })
	for i := 0; i < 500; i++ {
		s.Put(context.Background(), connectors.DeadLetter{Component: "source", Name: "n", Class: "c", Reason: strings.Repeat("r", 50)})
	}
	for _, p := range []string{s.Path(), s.Path() + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 4<<10 {
			t.Errorf("%s is %d bytes, over the 4KiB bound", p, st.Size())
		}
	}
	kept := len(readLines(t, s.Path())) + len(readLines(t, s.Path()+".1"))
	if over := testutil.ToFloat64(s.overwritten); int(over)+kept != 500 {
		t.Errorf("overwritten %v + kept %d != 500", over, kept)
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	err := Config{MaxBytes: 10, MaxPayloadBytes: -1, LogInterval: -time.Second}.Validate()
	for _, want := range []string{"dir: must be set", "max_bytes: 10B is too small", "max_payload_bytes", "log_interval"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not contain %q", err, want)
		}
	}
}
