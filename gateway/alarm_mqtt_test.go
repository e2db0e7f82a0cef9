package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/connectors/mqtt"
)

// startMosquitto runs a private mosquitto on port and returns a function that stops it.
func startMosquitto(t *testing.T, port int) func() {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
		if _, err := exec.LookPath(bin); err != nil {
			t.Skip("mosquitto is not installed")
		}
	}
	cmd := exec.Command(bin, "-p", fmt.Sprint(port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("mosquitto did not listen on %d: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
}

// gatedConnect holds the outbox's connection attempts while closed is set, so the test's
// subscriber is back on a restarted broker before the queued alarms are published.
type gatedConnect struct {
	alarmPublisher
	closed *atomic.Bool
}

func (g gatedConnect) Connect(ctx context.Context) error {
	if g.closed.Load() {
		return fmt.Errorf("held by the test")
	}
	return g.alarmPublisher.Connect(ctx)
}

// subscribeAlarms subscribes a client of the broker at server to every alarm topic.
func subscribeAlarms(t *testing.T, ctx context.Context, server string) (<-chan string, func()) {
	t.Helper()
	sub, err := mqtt.NewPublisher(mqtt.PublisherConfig{Server: server, ClientID: "alarm-subscriber", QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	if err := sub.Subscribe(ctx, "millwright/+/+/alarm", 1, func(_ string, p []byte) {
		select {
		case got <- string(p):
		default:
			t.Errorf("subscriber: message %q beyond the 16 expected", p)
		}
	}); err != nil {
		t.Fatal(err)
	}
	return got, sub.Close
}

func expectAlarm(t *testing.T, got <-chan string, want string) {
	t.Helper()
	select {
	case m := <-got:
		if m != want {
			t.Errorf("received %q; want %q", m, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%q not received", want)
	}
}

// TestAlarmOutputReconnectsAfterBrokerRestart: the gateway's alarm output, against a real
// mosquitto, keeps publishing after the broker restarts (an upgrade, a reboot of the broker
// host). Alarms raised and cleared while the broker is down are published, in order, once
// it is back; the status shows the connection. (The output used to connect once, with
// paho's reconnect off: after a broker restart every alarm was lost until the gateway
// restarted.)
func TestAlarmOutputReconnectsAfterBrokerRestart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	stopBroker := startMosquitto(t, port)
	defer func() { stopBroker() }()
	server := fmt.Sprintf("tcp://127.0.0.1:%d", port)

	cfg := AlarmMQTTConfig{Server: server}
	cfg.SetDefaults()
	o, err := newAlarmOutbox(cfg, "acme", slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	o.backoffInitial, o.backoffMax = 50*time.Millisecond, 500*time.Millisecond
	var held atomic.Bool
	o.pub = gatedConnect{alarmPublisher: o.pub, closed: &held}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stopped := make(chan struct{})
	runCtx, stopRun := context.WithCancel(ctx)
	go func() { _ = o.Run(runCtx); close(stopped) }()
	defer func() { stopRun(); <-stopped }()

	const topic = "millwright/acme/pump-1/alarm"
	got, closeSub := subscribeAlarms(t, ctx, server)
	_ = o.Publish(ctx, topic, []byte(`{"state":"raised","n":1}`), nil)
	expectAlarm(t, got, `{"state":"raised","n":1}`)
	closeSub()

	// The broker restarts; the outbox may reconnect only once the subscriber is back.
	held.Store(true)
	stopBroker()
	for deadline := time.Now().Add(10 * time.Second); o.Status().Connected; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the broker stopped 10 s ago and the status still shows the alarm output connected")
		}
	}
	_ = o.Publish(ctx, topic, []byte(`{"state":"cleared","n":1}`), nil)
	_ = o.Publish(ctx, topic, []byte(`{"state":"raised","n":2}`), nil)
	stopBroker = startMosquitto(t, port)
	got, closeSub = subscribeAlarms(t, ctx, server)
	defer closeSub()
	held.Store(false)
	expectAlarm(t, got, `{"state":"cleared","n":1}`)
	expectAlarm(t, got, `{"state":"raised","n":2}`)
	// The subscriber can have the last message before the broker's acknowledgement, which
	// the status counts, reaches the outbox.
	st := o.Status()
	for deadline := time.Now().Add(10 * time.Second); st.Published < 3 && time.Now().Before(deadline); st = o.Status() {
		time.Sleep(10 * time.Millisecond)
	}
	if !st.Connected || st.Published != 3 || st.Dropped != 0 || testutil.ToFloat64(o.up) != 1 {
		t.Errorf("status %+v, connection_up %v; want connected, 3 published, none dropped", st, testutil.ToFloat64(o.up))
	}
}
