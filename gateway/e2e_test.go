package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/internal/metrictest"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/internal/testlog"
)

// The end-to-end tests run the whole gateway against the real Mosquitto and InfluxDB that
// `make test` starts: MQTT QoS 1 in, write-ahead log, InfluxDB out.

const gatewayChildEnv = "MILLWRIGHT_E2E_GATEWAY_CONFIG"

func TestMain(m *testing.M) {
	// The kill -9 test re-executes this test binary as a gateway process.
	if path := os.Getenv(gatewayChildEnv); path != "" {
		os.Exit(runChildGateway(path))
	}
	os.Exit(servicetest.RunWithLeakCheck(m))
}

func runChildGateway(path string) int {
	cfg, err := Load(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	g, err := New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signalContext()
	defer stop()
	if err := g.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signalNotify(ch)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// e2eSetup is one test's topic root, database and gateway configuration.
type e2eSetup struct {
	root, db, influx, httpAddr, stateDir string
}

func newSetup(t *testing.T, influxURL, db string) e2eSetup {
	return e2eSetup{
		root: servicetest.UniqueName("e2e"), db: db, influx: influxURL,
		httpAddr: fmt.Sprintf("127.0.0.1:%d", servicetest.FreePort(t)), stateDir: t.TempDir(),
	}
}

func (s e2eSetup) yaml(extraBuffer string) string {
	return fmt.Sprintf(`
gateway:
  factory: e2e
  state_dir: %s
  http: {listen: "%s"}
  log: {level: warn}
buffer:
  segment_bytes: 4MiB
%s
dead_letters:
  log_interval: 1ms
sources:
  - name: broker
    mqtt:
      servers: ["%s"]
      client_id: %s
      max_inflight: 2000
      topics:
        - pattern: "%s/{machine}/{signal}"
          qos: 1
sinks:
  - name: influx
    influxdb:
      url: %s
      bucket: %s
      batch_points: 2000
      writers: 4
      flush_interval: 50ms
      timeout: 2s
`, s.stateDir, s.httpAddr, extraBuffer, servicetest.MQTTURL(), s.root, s.root, s.influx, s.db)
}

func (s e2eSetup) config(t *testing.T) Config {
	t.Helper()
	cfg, err := Parse([]byte(s.yaml("")))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// runGateway runs a gateway in this process until the test ends and waits until it is ready.
func runGateway(t *testing.T, cfg Config, log *slog.Logger) *Gateway {
	t.Helper()
	g, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	waitReady(t, cfg.Gateway.HTTP.Listen, done)
	return g
}

func waitReady(t *testing.T, addr string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		select {
		case gerr := <-done:
			t.Fatalf("gateway stopped before ready: %v", gerr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// machines plays N machines: message i goes to <root>/m<i%10>/s<i/10%4> with a timestamp
// unique within its series, and records which messages the broker acknowledged.
type machines struct {
	t     *testing.T
	root  string
	pub   *mqtt.Publisher
	base  int64 // ms
	sent  atomic.Int64
	acked atomic.Int64
	fails atomic.Int64
}

func newMachines(t *testing.T, root string) *machines {
	t.Helper()
	pub, err := mqtt.NewPublisher(mqtt.PublisherConfig{Server: servicetest.MQTTURL(), ClientID: servicetest.UniqueName("pub"), QoS: 1, MaxInflight: 500})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	return &machines{t: t, root: root, pub: pub, base: time.Now().Add(-time.Hour).UnixMilli()}
}

func (m *machines) topic(i int64) string {
	return fmt.Sprintf("%s/m%d/s%d", m.root, i%10, i/10%4)
}

// publish sends messages [from, to) and returns without waiting for their acknowledgements.
func (m *machines) publish(ctx context.Context, from, to int64, pace time.Duration) {
	m.t.Helper()
	for i := from; i < to; i++ {
		payload := fmt.Appendf(nil, `{"ts": %d, "value": %d}`, m.base+i, i)
		if err := m.pub.Publish(ctx, m.topic(i), payload, m.settle); err != nil {
			m.t.Errorf("publish %d: %v", i, err)
			return
		}
		m.sent.Add(1)
		if pace > 0 {
			time.Sleep(pace)
		}
	}
}

func (m *machines) settle(err error) {
	if err != nil {
		m.fails.Add(1)
		return
	}
	m.acked.Add(1)
}

func (m *machines) flush() {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.pub.Flush(ctx); err != nil {
		m.t.Fatal(err)
	}
	if f := m.fails.Load(); f > 0 {
		m.t.Fatalf("%d publishes failed", f)
	}
}

const countAll = `SELECT count("value") FROM "telemetry"`

// (a) 100,000 QoS 1 messages in, 100,000 points in InfluxDB.
func TestE2EHundredThousandQoS1Messages(t *testing.T) {
	servicetest.Require(t, "Mosquitto and InfluxDB")
	influx := servicetest.InfluxURL()
	s := newSetup(t, influx, servicetest.Database(t, influx))
	g := runGateway(t, s.config(t), slog.New(slog.DiscardHandler))
	m := newMachines(t, s.root)

	const n = 100_000
	m.publish(context.Background(), 0, n, 0)
	m.flush()
	got := servicetest.WaitCount(t, influx, s.db, countAll, n, 2*time.Minute)
	if got != n {
		t.Fatalf("InfluxDB holds %d points, want %d", got, n)
	}
	if in := metrictest.Sum(t, g.Registry(), "millwright_points_in_total"); in < n {
		t.Errorf("millwright_points_in_total = %v, want >= %d", in, n)
	}
	if out := metrictest.Sum(t, g.Registry(), "millwright_points_out_total"); out < n {
		t.Errorf("millwright_points_out_total = %v, want >= %d", out, n)
	}
}

// (b) InfluxDB is killed in the middle of a stream and restarted: nothing is lost, the
// write-ahead log holds the points meanwhile, and a later write of the same series and
// time wins, as it was published later.
func TestE2EInfluxDBOutage(t *testing.T) {
	servicetest.Require(t, "Mosquitto and InfluxDB")
	s := newSetup(t, "", "outage")
	influxd := servicetest.StartInfluxd(t, s.db)
	s.influx = influxd.URL
	g := runGateway(t, s.config(t), slog.New(slog.DiscardHandler))
	m := newMachines(t, s.root)
	ctx := context.Background()

	m.publish(ctx, 0, 5000, 0)
	m.flush()
	servicetest.WaitCount(t, influxd.URL, s.db, countAll, 5000, time.Minute)

	influxd.Stop()
	m.publish(ctx, 5000, 15000, 0)
	// The same series and time twice, with different values: the later must win.
	m.publish(ctx, 20000, 20001, 0)
	if err := m.pub.Publish(ctx, m.topic(20000), fmt.Appendf(nil, `{"ts": %d, "value": -1}`, m.base+20000), m.settle); err != nil {
		t.Fatal(err)
	}
	m.flush()
	waitMetric(t, g, "millwright_buffer_pending_points", func(v float64) bool { return v > 0 })
	time.Sleep(time.Second) // a few failed writes and backoffs while InfluxDB is down
	influxd.Start()

	const want = 15001
	if got := servicetest.WaitCount(t, influxd.URL, s.db, countAll, want, 2*time.Minute); got != want {
		t.Fatalf("after the outage InfluxDB holds %d points, want %d", got, want)
	}
	series, err := servicetest.InfluxQL(influxd.URL, s.db, fmt.Sprintf(`SELECT "value" FROM "telemetry" WHERE time = %dms`, m.base+20000))
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 1 || len(series[0].Values) != 1 || series[0].Values[0][1] != float64(-1) {
		t.Errorf("the later write of one series and time did not win: %+v", series)
	}
	if errs := metrictest.Sum(t, g.Registry(), "millwright_sink_write_errors_total"); errs == 0 {
		t.Error("no failed write was counted while InfluxDB was down")
	}
}

// (c) The gateway process is killed with SIGKILL while QoS 1 messages flow and started
// again: every message the broker acknowledged to the publisher is in InfluxDB.
func TestE2EKill9(t *testing.T) {
	servicetest.Require(t, "Mosquitto and InfluxDB")
	influx := servicetest.InfluxURL()
	s := newSetup(t, influx, servicetest.Database(t, influx))
	cfgPath := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(cfgPath, []byte(s.yaml("")), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), gatewayChildEnv+"="+cfgPath)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait(); close(done) }()
		waitReady(t, s.httpAddr, done)
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-done
			if t.Failed() {
				t.Logf("gateway stderr:\n%s", stderr.String())
			}
		})
		return cmd
	}
	child := start()
	m := newMachines(t, s.root)

	ctx, stopPublishing := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { m.publish(ctx, 0, 40_000, 20*time.Microsecond) })
	for m.sent.Load() < 10_000 {
		time.Sleep(10 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := m.sent.Load()
	time.Sleep(500 * time.Millisecond) // messages keep arriving at the broker while the gateway is dead
	start()
	wg.Wait()
	stopPublishing()
	m.flush()
	acked := m.acked.Load()
	t.Logf("killed after %d messages; %d published and acknowledged by the broker", killedAt, acked)
	if got := servicetest.WaitCount(t, influx, s.db, countAll, acked, 2*time.Minute); got != acked {
		t.Fatalf("InfluxDB holds %d points, want every one of the %d acknowledged messages", got, acked)
	}
}

// (d) Malformed payloads become counted dead letters with a clear log line, and the stream
// goes on.
func TestE2EMalformedPayloads(t *testing.T) {
	servicetest.Require(t, "Mosquitto and InfluxDB")
	influx := servicetest.InfluxURL()
	s := newSetup(t, influx, servicetest.Database(t, influx))
	log, logs := testlog.New(slog.LevelWarn)
	cfg := s.config(t)
	g := runGateway(t, cfg, log)
	m := newMachines(t, s.root)
	ctx := context.Background()

	garbage := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range garbage {
		garbage[i] = byte(rng.UintN(256))
	}
	bad := []struct {
		name    string
		payload []byte
		class   string
	}{
		{"bad json", []byte(`{"ts": 1, "value": `), "json_syntax"},
		{"wrong type", []byte(`{"ts": 1700000000000, "value": {"nested": [1, 2]}}`), "wrong_type"},
		{"bad timestamp", []byte(`{"ts": true, "value": 1}`), "bad_timestamp"},
		{"missing fields", []byte(`{"ts": 1700000000000}`), "no_signal"},
		{"1 MB garbage", garbage, "payload_too_large"},
	}
	m.publish(ctx, 0, 100, 0)
	for i, b := range bad {
		if err := m.pub.Publish(ctx, m.topic(int64(i)), b.payload, m.settle); err != nil {
			t.Fatal(err)
		}
	}
	m.publish(ctx, 100, 200, 0)
	m.flush()
	if got := servicetest.WaitCount(t, influx, s.db, countAll, 200, time.Minute); got != 200 {
		t.Fatalf("InfluxDB holds %d points, want the 200 good ones", got)
	}
	lines := readDeadLetters(t, filepath.Join(cfg.DeadLetters.Dir, "deadletters.jsonl"), len(bad))
	for i, b := range bad {
		c := metrictest.Sum(t, g.Registry(), "millwright_dead_letters_total", "component", "source", "name", "broker", "class", b.class)
		if c != 1 {
			t.Errorf("%s: dead letters of class %s = %v, want 1", b.name, b.class, c)
		}
		if !strings.Contains(lines[i], `"class":"`+b.class+`"`) {
			t.Errorf("%s: dead letter line %d = %s", b.name, i, lines[i])
		}
		if !strings.Contains(logs.String(), "class="+b.class) {
			t.Errorf("%s: no log line for class %s:\n%s", b.name, b.class, logs.String())
		}
	}
}

func readDeadLetters(t *testing.T, path string, want int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(b) > 0 && len(lines) >= want {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead-letter file %s has %d lines, want %d", path, len(lines), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
