package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// Integration tests against the real Mosquitto that deploy/services.sh starts. Each test uses
// its own topics and client ids, so they run in parallel with each other and with other
// packages' tests.

func brokerURL(t *testing.T) string {
	t.Helper()
	if os.Getenv("MILLWRIGHT_INTEGRATION") == "" {
		t.Skip("set MILLWRIGHT_INTEGRATION=1 (make test does) to run against the real Mosquitto")
	}
	if u := os.Getenv("MILLWRIGHT_MQTT_URL"); u != "" {
		return u
	}
	return "tcp://127.0.0.1:1883"
}

var uniqSeq atomic.Int64

// uniq returns a name no other test run uses, for topics and client ids.
func uniq(t *testing.T) string {
	r := strings.NewReplacer("/", "-", " ", "-", "#", "-", "+", "-")
	return fmt.Sprintf("mwtest-%s-%d-%d", r.Replace(t.Name()), time.Now().UnixNano(), uniqSeq.Add(1))
}

// publisher is a plain paho client that publishes test messages.
func publisher(t *testing.T, url string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(uniq(t) + "-pub").
		SetCleanSession(true).SetAutoReconnect(false).SetProtocolVersion(4)
	cl := paho.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(250) })
	return cl
}

// publish publishes every payload to topic at qos, pipelined, and waits for all of them.
func publish(t *testing.T, cl paho.Client, topic string, qos byte, payloads ...string) {
	t.Helper()
	toks := make([]paho.Token, len(payloads))
	for i, p := range payloads {
		toks[i] = cl.Publish(topic, qos, false, p)
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d to %s: %v", i, topic, tok.Error())
		}
	}
}

// dropSession removes a persistent session the test left at the broker.
func dropSession(t testing.TB, url, clientID string) {
	o := paho.NewClientOptions().AddBroker(url).SetClientID(clientID).SetCleanSession(true).
		SetAutoReconnect(false).SetProtocolVersion(4)
	cl := paho.NewClient(o)
	if tok := cl.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
		cl.Disconnect(250)
	}
}

type testSource struct {
	*Source
	dls *deadLetters
}

// startSource builds and connects a source; Close runs at cleanup, and persistent sessions
// are dropped.
func startSource(t *testing.T, cfg Config) testSource {
	t.Helper()
	env := testEnv(t)
	s, err := New("it", cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close(context.Background())
		if !s.cfg.CleanSession {
			for _, id := range s.cfg.clientIDs() {
				dropSession(t, s.cfg.Servers[0], id)
			}
		}
	})
	connect(t, s)
	return testSource{s, env.DeadLetters.(*deadLetters)}
}

func connect(t *testing.T, s *Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := s.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
}

// readPoints reads until it has n points, acknowledging every batch when ack is set.
func readPoints(t *testing.T, s *Source, n int, ack bool) []telemetry.Point {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var pts []telemetry.Point
	for len(pts) < n {
		b, a, err := s.Read(ctx)
		if err != nil {
			t.Fatalf("Read after %d of %d points: %v", len(pts), n, err)
		}
		pts = append(pts, b.Points...)
		if ack {
			a(ctx, nil)
		}
	}
	if len(pts) != n {
		t.Fatalf("read %d points, want %d", len(pts), n)
	}
	return pts
}

// expectNothing checks that no batch arrives for a while.
func expectNothing(t *testing.T, s *Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if b, _, err := s.Read(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read = %d points, %v; want nothing", b.Len(), err)
	}
}

func numbered(n int, format string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(format, i)
	}
	return out
}

// values returns the float values of points, sorted.
func values(pts []telemetry.Point) []int {
	out := make([]int, len(pts))
	for i, p := range pts {
		out[i] = int(p.Value.Float())
	}
	slices.Sort(out)
	return out
}

func checkSeq(t *testing.T, got []int, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d values, want %d", len(got), n)
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("values are not 0..%d exactly once: at %d got %d", n-1, i, v)
		}
	}
}

func TestIntegrationQoSAndMapping(t *testing.T) {
	url := brokerURL(t)
	t.Parallel()
	for qos := range 3 {
		t.Run("qos"+strconv.Itoa(qos), func(t *testing.T) {
			t.Parallel()
			prefix := uniq(t)
			s := startSource(t, Config{
				Servers: []string{url}, ClientID: prefix, CleanSession: true,
				Topics: []Topic{
					{Pattern: prefix + "/{line}/{machine}/telemetry", QoS: qos, Factory: "north"},
					{Pattern: prefix + "/sensors/{machine}/{signal}", QoS: qos, Payload: Payload{TimestampFormat: "rfc3339"}},
				},
			})
			pub := publisher(t, url)
			publish(t, pub, prefix+"/line-1/press-7/telemetry", byte(qos), numbered(20, `{"ts": 1700000000123, "seq": %d, "motor": {"on": true}}`)...)
			publish(t, pub, prefix+"/sensors/press-8/temp", byte(qos), `{"value": 21.5, "ts": "2023-11-14T22:13:20.5Z", "quality": 64}`)

			pts := readPoints(t, s.Source, 41, true)
			var seqs []telemetry.Point
			for _, p := range pts {
				switch {
				case p.Signal == "seq":
					if p.Factory != "north" || p.Line != "line-1" || p.Machine != "press-7" || p.SourceTime != 1700000000123*ms || p.ServerTime == 0 {
						t.Errorf("point %+v", p)
					}
					seqs = append(seqs, p)
				case p.Signal == "motor.on":
					if p.Value != telemetry.Bool(true) || p.Machine != "press-7" {
						t.Errorf("point %+v", p)
					}
				default:
					want := telemetry.Point{Machine: "press-8", Signal: "temp", SourceTime: 1700000000500 * ms,
						ServerTime: p.ServerTime, Value: telemetry.Float(21.5), Quality: telemetry.Quality{Level: telemetry.Bad, Code: 64}}
					if p != want {
						t.Errorf("point %+v, want %+v", p, want)
					}
				}
			}
			checkSeq(t, values(seqs), 20)
			// Messages of one topic arrive in order.
			for i, p := range seqs {
				if int(p.Value.Float()) != i {
					t.Fatalf("seq %d arrived at position %d", int(p.Value.Float()), i)
				}
			}
			if got := testutil.ToFloat64(s.m.connects); got != 1 {
				t.Errorf("connects_total = %v, want 1", got)
			}
			if got := testutil.ToFloat64(s.m.inflight); got != 0 {
				t.Errorf("inflight = %v, want 0 after every batch was acknowledged", got)
			}
		})
	}
}

func TestIntegrationPersistentSession(t *testing.T) {
	url := brokerURL(t)
	t.Parallel()
	// With a window smaller than the queue, the broker's queued messages fill the window
	// before the SUBACK arrives: Connect must not wait for it.
	for _, window := range []int{DefaultMaxInflight, 10} {
		t.Run(fmt.Sprintf("max_inflight=%d", window), func(t *testing.T) {
			t.Parallel()
			prefix := uniq(t)
			s := startSource(t, Config{
				Servers: []string{url}, ClientID: prefix, MaxInflight: window,
				Topics: []Topic{{Pattern: prefix + "/{machine}", QoS: 1, Signal: "v"}},
			})
			if err := s.Close(t.Context()); err != nil { // the session stays at the broker
				t.Fatal(err)
			}
			pub := publisher(t, url)
			const n = 500
			publish(t, pub, prefix+"/m1", 1, numbered(n, "%d")...)
			publish(t, pub, prefix+"/m1", 0, "1000") // QoS 0: not queued for an offline client

			connect(t, s.Source)
			checkSeq(t, values(readPoints(t, s.Source, n, true)), n)
			expectNothing(t, s.Source)
			if len(s.conn.subs) != 0 {
				t.Errorf("%d SUBACKs were never checked", len(s.conn.subs))
			}
		})
	}
}

func TestIntegrationUnackedRedelivered(t *testing.T) {
	url := brokerURL(t)
	t.Parallel()
	prefix := uniq(t)
	s := startSource(t, Config{
		Servers: []string{url}, ClientID: prefix, MaxBatchPoints: 7,
		Topics: []Topic{{Pattern: prefix + "/{machine}/{signal}", QoS: 1}},
	})
	pub := publisher(t, url)
	const n = 30
	publish(t, pub, prefix+"/m1/a", 1, numbered(n, "%d")...)

	// Read without acknowledging, then reconnect: the broker delivers them all again.
	checkSeq(t, values(readPoints(t, s.Source, n, false)), n)
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	connect(t, s.Source)

	// A failed batch: nothing more is acknowledged and the next Read asks for a reconnect.
	ctx := t.Context()
	b, ack, err := s.Read(ctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if b.Len() != 7 {
		t.Errorf("batch of %d points, want max_batch_points 7", b.Len())
	}
	ack(ctx, errors.New("store failed"))
	_, _, err = s.Read(ctx)
	if !errors.Is(err, connectors.ErrNotConnected) || !strings.Contains(err.Error(), "a batch was not stored") {
		t.Fatalf("Read after a failed batch = %v, want ErrNotConnected", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	connect(t, s.Source)
	checkSeq(t, values(readPoints(t, s.Source, n, true)), n)
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Everything was acknowledged this time.
	connect(t, s.Source)
	expectNothing(t, s.Source)
}

func TestIntegrationBackpressure(t *testing.T) {
	url := brokerURL(t)
	t.Parallel()
	prefix := uniq(t)
	const window, n = 50, 2000
	s := startSource(t, Config{
		Servers: []string{url}, ClientID: prefix, MaxInflight: window, MaxBatchPoints: 1000,
		Topics: []Topic{{Pattern: prefix + "/{machine}", QoS: 1, Signal: "v"}},
	})
	pub := publisher(t, url)
	done := make(chan struct{})
	var maxSeen atomic.Int64
	go func() { // sample the gauge while nothing reads
		defer close(done)
		for {
			maxSeen.Store(max(maxSeen.Load(), int64(testutil.ToFloat64(s.m.inflight))))
			select {
			case <-t.Context().Done():
				return
			case <-time.After(time.Millisecond):
			}
			if testutil.ToFloat64(s.m.messages) >= window && maxSeen.Load() >= window {
				return
			}
		}
	}()
	publish(t, pub, prefix+"/m1", 1, numbered(n, "%d")...)
	<-done
	time.Sleep(200 * time.Millisecond) // give the source every chance to take too much
	if got := testutil.ToFloat64(s.m.messages); got != window {
		t.Errorf("source took %v messages without a Read, want exactly the window of %d", got, window)
	}
	if got := testutil.ToFloat64(s.m.inflight); got > window || maxSeen.Load() > window {
		t.Errorf("in-flight gauge = %v (max %d), want <= %d", got, maxSeen.Load(), window)
	}
	checkSeq(t, values(readPoints(t, s.Source, n, true)), n)
	if got := testutil.ToFloat64(s.m.inflight); got != 0 {
		t.Errorf("in-flight gauge = %v after everything was acknowledged", got)
	}
}

func TestIntegrationSharedSubscription(t *testing.T) {
	url := brokerURL(t)
	t.Parallel()
	prefix := uniq(t)
	s := startSource(t, Config{
		Servers: []string{url}, ClientID: prefix, Connections: 2, ShareGroup: prefix, CleanSession: true,
		Topics: []Topic{{Pattern: prefix + "/{machine}", QoS: 1, Signal: "v"}},
	})
	pub := publisher(t, url)
	const n = 400
	publish(t, pub, prefix+"/m1", 1, numbered(n, "%d")...)
	checkSeq(t, values(readPoints(t, s.Source, n, true)), n) // each exactly once
	expectNothing(t, s.Source)
	if got := testutil.ToFloat64(s.m.connects); got != 2 {
		t.Errorf("connects_total = %v, want 2", got)
	}
}

func TestIntegrationDeadLetters(t *testing.T) {
	url := brokerURL(t)
	t.Parallel()
	prefix := uniq(t)
	s := startSource(t, Config{
		Servers: []string{url}, ClientID: prefix, CleanSession: true, MaxPayloadBytes: 100,
		Topics: []Topic{{Pattern: prefix + "/{machine}/{signal}", QoS: 1}},
	})
	pub := publisher(t, url)
	publish(t, pub, prefix+"/m1/a", 1, `{"value": [1]}`, `{not json`, strings.Repeat("1", 101), "1", "2")
	pts := readPoints(t, s.Source, 2, true)
	if got := values(pts); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("values = %v", got)
	}
	dls := s.dls.all()
	var classes []string
	for _, dl := range dls {
		classes = append(classes, dl.Class)
		if dl.Origin != prefix+"/m1/a" || dl.Name != "it" || dl.Reason == "" {
			t.Errorf("dead letter %+v", dl)
		}
	}
	if want := []string{ClassWrongType, ClassJSONSyntax, ClassPayloadTooLarge}; !slices.Equal(classes, want) {
		t.Errorf("dead letter classes = %q, want %q", classes, want)
	}
	if len(dls) == 3 && len(dls[2].Payload) != 101 {
		t.Errorf("dead letter payload of %d bytes, want 101", len(dls[2].Payload))
	}
	expectNothing(t, s.Source)
}

func TestIntegrationConnectionLost(t *testing.T) {
	url := brokerURL(t)
	t.Parallel()
	tests := []struct {
		name   string
		window int
	}{
		{"reading", DefaultMaxInflight},
		// The handler waits for the window, so paho reads nothing from the socket: the loss
		// shows only when the keep-alive ping goes unanswered.
		{"window full", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			prefix := uniq(t)
			s := startSource(t, Config{
				Servers: []string{url}, ClientID: prefix, MaxInflight: tt.window, KeepAlive: 2 * time.Second,
				Topics: []Topic{{Pattern: prefix + "/{machine}", QoS: 1, Signal: "v"}},
			})
			pub := publisher(t, url)
			publish(t, pub, prefix+"/m1", 1, numbered(20, "%d")...)
			if _, _, err := s.Read(t.Context()); err != nil { // not acknowledged: delivered again later
				t.Fatalf("Read: %v", err)
			}

			// Another client with the same id takes the session over: the broker drops the source.
			intruder := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(prefix).
				SetCleanSession(false).SetAutoReconnect(false).SetProtocolVersion(4))
			if tok := intruder.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("intruder connect: %v", tok.Error())
			}
			intruder.Disconnect(250)

			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			var err error
			for err == nil {
				_, _, err = s.Read(ctx)
			}
			if !errors.Is(err, connectors.ErrNotConnected) || !strings.Contains(err.Error(), "lost") {
				t.Fatalf("Read = %v, want a lost connection (ErrNotConnected)", err)
			}
			t.Logf("Read: %v", err)
			if got := testutil.ToFloat64(s.m.lost); got != 1 {
				t.Errorf("connection_lost_total = %v, want 1", got)
			}
			if err := s.Close(ctx); err != nil {
				t.Fatal(err)
			}
			connect(t, s.Source)
			checkSeq(t, values(readPoints(t, s.Source, 20, true)), 20)
		})
	}
}

func TestIntegrationConnectErrors(t *testing.T) {
	url := brokerURL(t)
	t.Parallel()
	// Mosquitto here allows anonymous clients, so a wrong password cannot be tested; an
	// unreachable broker and TLS to the plain port can.
	plain := strings.TrimPrefix(url, "tcp://")
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"unreachable", Config{Servers: []string{"tcp://127.0.0.1:1"}},
			[]string{`mqtt source "it": connect to tcp://127.0.0.1:1 as client id "`, "connection refused"}},
		{"tls to the plain port", Config{Servers: []string{"ssl://" + plain}, TLS: config.TLS{Enabled: true}},
			[]string{`mqtt source "it": connect to ssl://` + plain + ` as client id "`, "network Error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg
			cfg.ClientID, cfg.CleanSession, cfg.ConnectTimeout = uniq(t), true, 5*time.Second
			cfg.Topics = []Topic{{Pattern: "x/{machine}", QoS: 1, Signal: "v"}}
			s, err := New("it", cfg, testEnv(t))
			if err != nil {
				t.Fatal(err)
			}
			err = s.Connect(t.Context())
			if err == nil {
				t.Fatal("Connect succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Connect error %q does not contain %q", err, w)
				}
			}
			t.Logf("Connect: %v", err)
			if _, _, err := s.Read(t.Context()); !errors.Is(err, connectors.ErrNotConnected) {
				t.Errorf("Read after a failed Connect = %v", err)
			}
			if err := s.Close(t.Context()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// BenchmarkIntegrationDrain measures how fast the source drains messages the broker queued
// for its persistent session (QoS 1, 4 signals each), reading and acknowledging as the
// pipeline does. Run it with -benchtime=1x: each iteration queues 50,000 messages first.
func BenchmarkIntegrationDrain(b *testing.B) {
	if os.Getenv("MILLWRIGHT_INTEGRATION") == "" {
		b.Skip("set MILLWRIGHT_INTEGRATION=1 (make test does) to run against the real Mosquitto")
	}
	url := os.Getenv("MILLWRIGHT_MQTT_URL")
	if url == "" {
		url = "tcp://127.0.0.1:1883"
	}
	const n = 50_000
	for _, conns := range []int{1, 2} {
		b.Run(fmt.Sprintf("connections=%d", conns), func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				total += drainOnce(b, url, conns, n)
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "msgs/s")
			b.ReportMetric(4*float64(n*b.N)/total.Seconds(), "points/s")
		})
	}
}

func drainOnce(b *testing.B, url string, conns, n int) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	ctx := b.Context()
	prefix := fmt.Sprintf("mwbench-%d-%d", time.Now().UnixNano(), uniqSeq.Add(1))
	env := testEnv(b)
	env.Logger = slog.New(slog.DiscardHandler)
	s, err := New("bench", Config{
		Servers: []string{url}, ClientID: prefix, Connections: conns, ShareGroup: prefix,
		Topics: []Topic{{Pattern: prefix + "/{line}/{machine}/telemetry", QoS: 1}},
	}, env)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = s.Close(context.Background())
		for _, id := range s.cfg.clientIDs() {
			dropSession(b, url, id)
		}
	}()
	if err := s.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		b.Fatal(err)
	}
	pub, err := NewPublisher(PublisherConfig{Server: url, ClientID: prefix + "-pub", QoS: 1, MaxInflight: 2000})
	if err != nil {
		b.Fatal(err)
	}
	if err := pub.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	for i := range n {
		payload := fmt.Appendf(nil, `{"ts": %d, "temp": 21.5, "rpm": %d, "pressure": 3.25, "motor": {"current": 12.75}}`, int64(1700000000000)+int64(i), i)
		if err := pub.Publish(ctx, fmt.Sprintf("%s/line-1/m%d/telemetry", prefix, i%300), payload, nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	pub.Close()

	start := time.Now()
	if err := s.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	got := 0
	for got < 4*n {
		batch, ack, err := s.Read(ctx)
		if err != nil {
			b.Fatalf("Read after %d points: %v", got, err)
		}
		got += batch.Len()
		ack(ctx, nil)
	}
	return time.Since(start)
}
