package mqtt

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/connectors"
)

// deadLetters records dead letters.
type deadLetters struct {
	mu  sync.Mutex
	dls []connectors.DeadLetter
}

func (d *deadLetters) Put(_ context.Context, dl connectors.DeadLetter) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dls = append(d.dls, dl)
}

func (d *deadLetters) all() []connectors.DeadLetter {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.dls)
}

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testEnv(t testing.TB) connectors.Env {
	return connectors.Env{
		Logger:      slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer:  prometheus.NewRegistry(),
		DeadLetters: &deadLetters{},
	}
}

// ackLog records acknowledgements in the order they are sent.
type ackLog struct {
	mu  sync.Mutex
	ids []uint16
}

func (a *ackLog) add(id uint16) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ids = append(a.ids, id)
}

func (a *ackLog) get() []uint16 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.ids)
}

// fakeMsg is a received message whose acknowledgement goes to an ackLog.
type fakeMsg struct {
	topic   string
	payload []byte
	id      uint16
	acks    *ackLog
}

func (m *fakeMsg) Duplicate() bool   { return false }
func (m *fakeMsg) Qos() byte         { return 1 }
func (m *fakeMsg) Retained() bool    { return false }
func (m *fakeMsg) Topic() string     { return m.topic }
func (m *fakeMsg) MessageID() uint16 { return m.id }
func (m *fakeMsg) Payload() []byte   { return m.payload }
func (m *fakeMsg) Ack()              { m.acks.add(m.id) }

// fakeClient is the paho client a handler sees; only IsConnectionOpen is used.
type fakeClient struct {
	paho.Client
	closed atomic.Bool
}

func (c *fakeClient) IsConnectionOpen() bool { return !c.closed.Load() }

// harness is a source whose connection is fed by hand, as paho's dispatcher would.
type harness struct {
	t    testing.TB
	src  *Source
	conn *connection
	recv *receiver
	cl   *fakeClient
	acks *ackLog
	dls  *deadLetters
	next uint16
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	if cfg.Servers == nil {
		cfg.Servers = []string{"tcp://127.0.0.1:1"}
	}
	if cfg.Topics == nil {
		cfg.Topics = []Topic{
			{Pattern: "plant/{line}/{machine}/telemetry", QoS: 1},
			{Pattern: "sensors/{machine}/{signal}", QoS: 1},
		}
	}
	env := testEnv(t)
	src, err := New("test", cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	decs, err := src.newDecoders()
	if err != nil {
		t.Fatal(err)
	}
	c := newConnection(src, 1)
	src.conn = c
	return &harness{t: t, src: src, conn: c, recv: &receiver{c: c, decs: decs}, cl: &fakeClient{},
		acks: &ackLog{}, dls: env.DeadLetters.(*deadLetters)}
}

// publish hands one message to the handler, as paho does, and returns its id.
func (h *harness) publish(topic, payload string) uint16 {
	h.next++
	h.recv.onMessage(h.cl, &fakeMsg{topic: topic, payload: []byte(payload), id: h.next, acks: h.acks})
	return h.next
}

func (h *harness) read(ctx context.Context) ([]string, connectors.AckFunc) {
	h.t.Helper()
	b, ack, err := h.src.Read(ctx)
	if err != nil {
		h.t.Fatalf("Read: %v", err)
	}
	var sigs []string
	for _, p := range b.Points {
		sigs = append(sigs, p.Machine+"/"+p.Signal)
	}
	return sigs, ack
}

// publishBeyondWindow fills a window of one message, then publishes a second message from a
// goroutine, where the handler waits for room, and returns once that goroutine is durably
// blocked or done. The channel is closed when the second publish returns. Call it inside a
// synctest bubble.
func (h *harness) publishBeyondWindow() <-chan struct{} {
	h.publish("sensors/m1/a", `1`)
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		h.publish("sensors/m1/b", `2`) // waits for the window
	}()
	synctest.Wait()
	return returned
}

func (h *harness) inflight() float64 { return testutil.ToFloat64(h.src.m.inflight) }

func TestReadBatchesAndAcksInOrder(t *testing.T) {
	h := newHarness(t, Config{MaxBatchPoints: 4})
	ctx := t.Context()
	h.publish("plant/l1/m1/telemetry", `{"a": 1, "b": 2}`)
	h.publish("plant/l1/m1/telemetry", `{"a": [1]}`) // dead-lettered, acknowledged in its place
	h.publish("sensors/m2/temp", `{"value": 1, "ts": 1700000000123}`)
	h.publish("plant/l1/m3/telemetry", `{"a": 1, "b": 2}`) // does not fit the first batch
	h.publish("other/topic", `1`)                          // matches no pattern

	sigs, ack1 := h.read(ctx)
	if want := []string{"m1/a", "m1/b", "m2/temp"}; !slices.Equal(sigs, want) {
		t.Fatalf("first batch = %q, want %q", sigs, want)
	}
	sigs, ack2 := h.read(ctx)
	if want := []string{"m3/a", "m3/b"}; !slices.Equal(sigs, want) {
		t.Fatalf("second batch = %q, want %q", sigs, want)
	}
	if got := h.inflight(); got != 5 {
		t.Errorf("in-flight gauge = %v, want 5", got)
	}
	ack2(ctx, nil)
	if got := h.acks.get(); len(got) != 0 {
		t.Fatalf("acknowledged %v before the first batch was settled", got)
	}
	ack1(ctx, nil)
	if got, want := h.acks.get(), []uint16{1, 2, 3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("acknowledged %v, want %v (receive order)", got, want)
	}
	if got := h.inflight(); got != 0 {
		t.Errorf("in-flight gauge = %v, want 0", got)
	}
	ack1(ctx, errors.New("late second call")) // ignored
	if got := len(h.acks.get()); got != 5 {
		t.Errorf("a second AckFunc call changed the acknowledgements: %d", got)
	}

	dls := h.dls.all()
	if len(dls) != 2 {
		t.Fatalf("dead letters = %+v, want 2", dls)
	}
	if dl := dls[0]; dl.Class != ClassWrongType || dl.Origin != "plant/l1/m1/telemetry" || string(dl.Payload) != `{"a": [1]}` ||
		dl.Component != "source" || dl.Name != "test" || dl.Time.IsZero() ||
		dl.Reason != `"a" is an array [1]; expected a number, string, true, false or null` {
		t.Errorf("dead letter = %+v", dl)
	}
	if dl := dls[1]; dl.Class != ClassTopicMismatch ||
		dl.Reason != `topic "other/topic" matches none of the patterns ["plant/{line}/{machine}/telemetry" "sensors/{machine}/{signal}"]` {
		t.Errorf("dead letter = %+v", dl)
	}
	if got := testutil.ToFloat64(h.src.m.messages); got != 5 {
		t.Errorf("messages_total = %v, want 5", got)
	}
	if got := testutil.ToFloat64(h.src.m.payloadBytes); got != 16+10+33+16+1 {
		t.Errorf("payload_bytes_total = %v, want %d", got, 16+10+33+16+1)
	}
}

func TestReadAcksPointlessMessagesDirectly(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := t.Context()
	h.publish("sensors/m1/temp", `not json`)
	h.publish("sensors/m1/temp", `null`)
	read := make(chan []string)
	go func() {
		sigs, _ := h.read(ctx)
		read <- sigs
	}()
	// Read takes the two point-less messages, acknowledges them and waits for more.
	deadline := time.Now().Add(5 * time.Second)
	for len(h.acks.get()) < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := h.acks.get(); !slices.Equal(got, []uint16{1, 2}) {
		t.Fatalf("acknowledged %v, want [1 2] before any batch", got)
	}
	h.publish("sensors/m1/temp", `3`)
	if sigs := <-read; !slices.Equal(sigs, []string{"m1/temp"}) {
		t.Errorf("batch = %q", sigs)
	}
	if got := h.dls.all(); len(got) != 1 || got[0].Class != ClassJSONSyntax {
		t.Errorf("dead letters = %+v", got)
	}
}

func TestFailedBatchStopsAcksAndReconnects(t *testing.T) {
	h := newHarness(t, Config{MaxBatchPoints: 1})
	ctx := t.Context()
	h.publish("sensors/m1/a", `1`)
	h.publish("sensors/m1/b", `2`)
	h.publish("sensors/m1/c", `3`)
	_, ack1 := h.read(ctx)
	_, ack2 := h.read(ctx)
	ack2(ctx, nil)
	ack1(ctx, errors.New("disk full"))
	if got := h.acks.get(); len(got) != 0 {
		t.Errorf("acknowledged %v after a failed batch, want nothing", got)
	}
	_, _, err := h.src.Read(ctx)
	if !errors.Is(err, connectors.ErrNotConnected) {
		t.Fatalf("Read after a failed batch = %v, want ErrNotConnected", err)
	}
	want := `mqtt source "test": a batch was not stored; reconnecting so that the broker delivers its messages again: disk full`
	if err.Error() != want {
		t.Errorf("Read error = %q, want %q", err, want)
	}
	if got := h.inflight(); got != 1 { // the third message, still waiting
		t.Errorf("in-flight gauge = %v, want 1", got)
	}
	if err := h.src.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.inflight(); got != 0 {
		t.Errorf("in-flight gauge after Close = %v, want 0", got)
	}
}

func TestStaleAcksAreNotSent(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := t.Context()
	h.publish("sensors/m1/a", `1`)
	_, ack := h.read(ctx)
	if err := h.src.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// A batch of the closed connection settles after Close (the pipeline stored it late):
	// its packet ids belong to the old connection, so nothing is acknowledged.
	ack(ctx, nil)
	if got := h.acks.get(); len(got) != 0 {
		t.Errorf("acknowledged %v on a closed connection", got)
	}
	if got := h.inflight(); got != 0 {
		t.Errorf("in-flight gauge = %v, want 0", got)
	}
	if _, _, err := h.src.Read(ctx); !errors.Is(err, connectors.ErrNotConnected) {
		t.Errorf("Read after Close = %v, want ErrNotConnected", err)
	}
	// Messages paho still hands over after Close are left alone.
	h.publish("sensors/m1/a", `1`)
	if got := h.inflight(); got != 0 {
		t.Errorf("in-flight gauge = %v, want 0", got)
	}
}

func TestReadContextAndNotConnected(t *testing.T) {
	h := newHarness(t, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := h.src.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Read with a cancelled context = %v", err)
	}
	h.src.conn = nil
	_, _, err := h.src.Read(t.Context())
	if !errors.Is(err, connectors.ErrNotConnected) || err.Error() != `mqtt source "test": not connected` {
		t.Errorf("Read before Connect = %v", err)
	}
	h.conn.shutdown(t.Context())
}

func TestConnectionLostEndsRead(t *testing.T) {
	h := newHarness(t, Config{})
	errc := make(chan error)
	go func() {
		_, _, err := h.src.Read(t.Context())
		errc <- err
	}()
	h.conn.fail(&connError{msg: `connection of client "x" lost`, cause: errors.New("EOF")})
	err := <-errc
	if !errors.Is(err, connectors.ErrNotConnected) || err.Error() != `mqtt source "test": connection of client "x" lost: EOF` {
		t.Errorf("Read = %v", err)
	}
	h.conn.shutdown(t.Context())
}

func TestBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{MaxInflight: 3})
		ctx := t.Context()
		fed := make(chan struct{})
		go func() { // paho's dispatcher: one message after the other
			defer close(fed)
			for range 5 {
				h.publish("sensors/m1/a", `1`)
			}
		}()
		synctest.Wait()
		if got := h.inflight(); got != 3 {
			t.Fatalf("in-flight gauge = %v, want 3 (the window)", got)
		}
		if got := testutil.ToFloat64(h.src.m.messages); got != 3 {
			t.Fatalf("messages taken = %v, want 3: the handler must block at the window", got)
		}
		sigs, ack := h.read(ctx)
		if len(sigs) != 3 {
			t.Fatalf("batch of %d points, want 3", len(sigs))
		}
		synctest.Wait()
		if got := testutil.ToFloat64(h.src.m.messages); got != 3 {
			t.Fatalf("messages taken = %v: a read but unsettled batch must still hold the window", got)
		}
		ack(ctx, nil)
		<-fed
		if got := h.inflight(); got != 2 {
			t.Errorf("in-flight gauge = %v, want 2", got)
		}
		sigs, ack = h.read(ctx)
		if len(sigs) != 2 {
			t.Fatalf("batch of %d points, want 2", len(sigs))
		}
		ack(ctx, nil)
		if got := h.acks.get(); !slices.Equal(got, []uint16{1, 2, 3, 4, 5}) {
			t.Errorf("acknowledged %v", got)
		}
		h.conn.shutdown(ctx)
	})
}

func TestHandlerGivesUpWhenConnectionCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{MaxInflight: 1})
		returned := h.publishBeyondWindow()
		select {
		case <-returned:
			t.Fatal("the handler did not wait for the window")
		default:
		}
		// paho reports the loss only once the handler returns; the handler notices by itself.
		h.cl.closed.Store(true)
		<-returned
		if got := testutil.ToFloat64(h.src.m.messages); got != 1 {
			t.Errorf("messages taken = %v, want 1", got)
		}
		h.conn.shutdown(t.Context())
	})
}

func TestCloseReleasesWaitingHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{MaxInflight: 1})
		returned := h.publishBeyondWindow()
		if err := h.src.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		<-returned
		if got := h.inflight(); got != 0 {
			t.Errorf("in-flight gauge = %v, want 0", got)
		}
	})
}

func TestMetricsShareSeriesAcrossRebuilds(t *testing.T) {
	env := testEnv(t)
	cfg := Config{Servers: []string{"tcp://h:1883"}, Topics: []Topic{{Pattern: "a/{machine}", QoS: 1}}}
	a, err := New("s", cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New("s", cfg, env)
	if err != nil {
		t.Fatalf("New with the same name and registerer: %v", err)
	}
	a.m.messages.Inc()
	if got := testutil.ToFloat64(b.m.messages); got != 1 {
		t.Errorf("rebuilt source counts on its own series: %v", got)
	}
	if _, err := New("t", cfg, env); err != nil {
		t.Errorf("second source on the same registerer: %v", err)
	}
	n, err := testutil.GatherAndCount(env.Registerer.(*prometheus.Registry), "millwright_mqtt_messages_total")
	if err != nil || n != 2 {
		t.Errorf("series of millwright_mqtt_messages_total = %d, %v; want one per source", n, err)
	}
}

// BenchmarkReceive measures the source's own work per message, without paho and the network:
// the handler (window, decoding, hand-over) then Read and the acknowledgement, for messages of
// 4 signals read in batches of 1,000 messages.
func BenchmarkReceive(b *testing.B) {
	h := newHarness(b, Config{MaxInflight: 1000, MaxBatchPoints: 4000})
	h.src.log = slog.New(slog.DiscardHandler)
	ctx := b.Context()
	msg := &fakeMsg{topic: "plant/line-1/press-7/telemetry", acks: &ackLog{},
		payload: []byte(`{"ts": 1700000000123, "temp": 21.5, "rpm": 1500, "pressure": 3.25, "motor": {"current": 12.75}}`)}
	b.SetBytes(int64(len(msg.payload)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		h.recv.onMessage(h.cl, msg)
		if n++; n == 1000 {
			batch, ack, err := h.src.Read(ctx)
			if err != nil || batch.Len() != 4000 {
				b.Fatalf("Read = %d points, %v", batch.Len(), err)
			}
			ack(ctx, nil)
			n = 0
			msg.acks.ids = msg.acks.ids[:0]
		}
	}
	b.ReportMetric(4*float64(b.N)/b.Elapsed().Seconds(), "points/s")
	h.conn.shutdown(ctx)
}
