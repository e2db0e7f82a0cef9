package sparkplug

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/connectors/mqtt"
	pb "github.com/millwright-io/millwright/connectors/sparkplug/sparkplugpb"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// inbox records the messages a test client receives.
type inbox struct {
	mu   sync.Mutex
	msgs []received
	cond chan struct{}
}

type received struct {
	topic   string
	payload []byte
}

func newInbox() *inbox { return &inbox{cond: make(chan struct{}, 1)} }

func (in *inbox) add(topic string, payload []byte) {
	in.mu.Lock()
	in.msgs = append(in.msgs, received{topic, append([]byte(nil), payload...)})
	in.mu.Unlock()
	select {
	case in.cond <- struct{}{}:
	default:
	}
}

// wait returns the first message that match accepts, waiting up to 10s.
func (in *inbox) wait(t *testing.T, what string, match func(received) bool) received {
	t.Helper()
	return in.waitN(t, what, 1, match)
}

// waitN returns the nth message that match accepts, waiting up to 10s.
func (in *inbox) waitN(t *testing.T, what string, n int, match func(received) bool) received {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		in.mu.Lock()
		seen := 0
		for _, m := range in.msgs {
			if match(m) {
				if seen++; seen == n {
					in.mu.Unlock()
					return m
				}
			}
		}
		in.mu.Unlock()
		select {
		case <-in.cond:
		case <-deadline.C:
			t.Fatalf("no %s within 10s", what)
		}
	}
}

// edgeClient is a test client playing an edge node: it publishes and watches the broker.
func edgeClient(t *testing.T, id string, filters ...string) (*mqtt.Publisher, *inbox) {
	t.Helper()
	pub, err := mqtt.NewPublisher(mqtt.PublisherConfig{Server: servicetest.MQTTURL(), ClientID: id, QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := pub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	in := newInbox()
	for _, f := range filters {
		if err := pub.Subscribe(ctx, f, 1, in.add); err != nil {
			t.Fatal(err)
		}
	}
	return pub, in
}

func publishPB(t *testing.T, pub *mqtt.Publisher, topic string, p *pb.Payload) {
	t.Helper()
	publishRaw(t, pub, topic, marshal(t, p))
}

func publishRaw(t *testing.T, pub *mqtt.Publisher, topic string, payload []byte) {
	t.Helper()
	done := make(chan error, 1)
	if err := pub.Publish(t.Context(), topic, payload, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// readPoints reads and acknowledges batches until it has n points.
func readPoints(t *testing.T, src connectors.Source, n int) []telemetry.Point {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out []telemetry.Point
	for len(out) < n {
		b, ack, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("read after %d of %d points: %v", len(out), n, err)
		}
		out = append(out, b.Points...)
		ack(ctx, nil)
	}
	if len(out) != n {
		t.Fatalf("got %d points, want %d: %+v", len(out), n, out)
	}
	return out
}

// newTestSource builds a source on the test broker.
func newTestSource(t *testing.T, clientID, hostID, group string) *Source {
	t.Helper()
	src, err := New("sp", Config{
		MQTT:   mqtt.Config{Servers: []string{servicetest.MQTTURL()}, ClientID: clientID},
		HostID: hostID,
		Groups: []string{group},
	}, connectors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestIntegrationHostThroughMosquitto(t *testing.T) {
	servicetest.Require(t, "Mosquitto")
	group := servicetest.UniqueName("spgroup")
	hostID := servicetest.UniqueName("sphost")
	node := "edge-1"
	edge, in := edgeClient(t, servicetest.UniqueName("spedge"),
		Topic(group, NCmd, "#", ""), StateTopic(hostID))

	src := newTestSource(t, servicetest.UniqueName("sphost"), hostID, group)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := src.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = src.Close(context.Background())
		}
	}()

	// The host announces itself.
	in.wait(t, "online STATE", func(m received) bool {
		return m.topic == StateTopic(hostID) && strings.HasPrefix(string(m.payload), `{"online":true,"timestamp":`)
	})

	// An offline STATE of this host (a late will) makes it announce itself again.
	publishRaw(t, edge, StateTopic(hostID), []byte(`{"online":false,"timestamp":1}`))
	in.waitN(t, "online STATE again", 2, func(m received) bool {
		return m.topic == StateTopic(hostID) && strings.HasPrefix(string(m.payload), `{"online":true,"timestamp":`)
	})

	// Births define the metrics; data comes by alias.
	publishPB(t, edge, Topic(group, NBirth, node, ""), nbirth(0, 0, mDouble("Line/Speed", 1, 1.5)))
	publishPB(t, edge, Topic(group, DBirth, node, "pump-1"), msg(1, mDouble("temperature", 1, 40), mInt("faults", 2, pb.DataType_UInt8, 0)))
	publishPB(t, edge, Topic(group, DData, node, "pump-1"), msg(2, byAlias(mDouble("", 1, 41.5)), byAlias(mInt("", 2, pb.DataType_UInt8, 3))))
	pts := readPoints(t, src, 5)
	last := pts[3:]
	if last[0].Machine != "pump-1" || last[0].Signal != "temperature" || last[0].Value != telemetry.Float(41.5) || last[0].Line != group ||
		last[1].Signal != "faults" || last[1].Value != telemetry.Int(3) {
		t.Fatalf("data by alias = %+v", last)
	}
	if pts[0].Machine != node || pts[0].Signal != "Line.Speed" || pts[0].Value != telemetry.Float(1.5) {
		t.Errorf("node birth point = %+v", pts[0])
	}

	// A sequence gap: the data still counts, and the host asks the node for a rebirth.
	publishPB(t, edge, Topic(group, DData, node, "pump-1"), msg(9, byAlias(mDouble("", 1, 42))))
	readPoints(t, src, 1)
	in.wait(t, "rebirth NCMD", func(m received) bool {
		return m.topic == Topic(group, NCmd, node, "") && IsRebirthRequest(m.payload)
	})

	// The node's death marks its metrics and its devices' bad.
	publishPB(t, edge, Topic(group, NDeath, node, ""), &pb.Payload{Metrics: []*pb.Payload_Metric{mLong(bdSeqMetric, 0, pb.DataType_UInt64, 0)}})
	dead := readPoints(t, src, 3)
	for _, p := range dead {
		if p.Quality.Level != telemetry.Bad {
			t.Errorf("after death: %+v, want quality bad", p)
		}
	}

	// Close announces that the host is offline.
	closed = true
	if err := src.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	in.wait(t, "offline STATE", func(m received) bool {
		return m.topic == StateTopic(hostID) && strings.HasPrefix(string(m.payload), `{"online":false,"timestamp":`)
	})
	// Leave no retained STATE behind.
	clearRetained(t, edge, StateTopic(hostID))
}

// clearRetained removes the retained message of topic.
func clearRetained(t *testing.T, pub *mqtt.Publisher, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := pub.PublishRetained(ctx, topic, nil); err != nil {
		t.Errorf("clear the retained %s: %v", topic, err)
	}
}

// TestIntegrationWillIsOfflineState drops the host's connection by taking over its client
// id: the broker publishes the will, the offline STATE with the timestamp of the online one.
func TestIntegrationWillIsOfflineState(t *testing.T) {
	servicetest.Require(t, "Mosquitto")
	hostID := servicetest.UniqueName("sphost")
	clientID := servicetest.UniqueName("sphostclient")
	watcher, in := edgeClient(t, servicetest.UniqueName("spwatch"), StateTopic(hostID))
	src := newTestSource(t, clientID, hostID, servicetest.UniqueName("spgroup"))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := src.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	online := in.wait(t, "online STATE", func(m received) bool {
		return m.topic == StateTopic(hostID) && strings.HasPrefix(string(m.payload), `{"online":true,`)
	})
	ts := strings.TrimPrefix(string(online.payload), `{"online":true,`)

	edgeClient(t, clientID) // takes over the session: the broker drops the host's connection
	in.wait(t, "offline STATE from the will", func(m received) bool {
		return m.topic == StateTopic(hostID) && string(m.payload) == `{"online":false,`+ts
	})
	if _, _, err := src.Read(ctx); !errors.Is(err, connectors.ErrNotConnected) {
		t.Errorf("Read after the connection was taken over: %v, want ErrNotConnected", err)
	}
	_ = src.Close(context.Background())
	clearRetained(t, watcher, StateTopic(hostID))
}
