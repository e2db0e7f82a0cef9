package sim_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/connectors/sparkplug"
	pb "github.com/millwright-io/millwright/connectors/sparkplug/sparkplugpb"
)

// fakeSparkplugClient is a fakePublisher that records subscriptions and lets the test send
// commands.
type fakeSparkplugClient struct {
	fakePublisher
	subMu    sync.Mutex
	handlers map[string]func(string, []byte)
}

func (f *fakeSparkplugClient) Subscribe(_ context.Context, filter string, _ byte, h func(string, []byte)) error {
	f.subMu.Lock()
	defer f.subMu.Unlock()
	if f.handlers == nil {
		f.handlers = map[string]func(string, []byte){}
	}
	f.handlers[filter] = h
	return nil
}

func (f *fakeSparkplugClient) command(topic string, payload []byte) {
	f.subMu.Lock()
	h := f.handlers[topic]
	f.subMu.Unlock()
	if h != nil {
		h(topic, payload)
	}
}

func (f *fakeSparkplugClient) decoded(t *testing.T) (topics []string, payloads []*pb.Payload) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.msgs {
		var p pb.Payload
		if err := proto.Unmarshal([]byte(m.payload), &p); err != nil {
			t.Fatalf("%s: %v", m.topic, err)
		}
		topics = append(topics, m.topic)
		payloads = append(payloads, &p)
	}
	return topics, payloads
}

func TestSparkplugRunnerBirthsDataAndRebirth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := &fakeSparkplugClient{}
		r, err := sim.NewSparkplugRunner(plantOfAllKinds(t), client, sim.SparkplugOptions{
			Group: "g", EdgeNode: "plant", BdSeq: 4, Interval: time.Second, Steps: 100,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		time.Sleep(1500 * time.Millisecond) // births and two steps
		synctest.Wait()
		client.command(sparkplug.Topic("g", sparkplug.NCmd, "plant", ""), sparkplug.RebirthRequest(time.Now()))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		topics, payloads := client.decoded(t)
		// NBIRTH, 3 DBIRTH, 100 steps of 3 DDATA, and one rebirth (4 messages).
		if len(topics) != 4+300+4 || r.Rebirths() != 1 {
			t.Fatalf("%d messages, %d rebirths; want 308 and 1", len(topics), r.Rebirths())
		}
		var seq uint64
		births := 0
		for i, tp := range topics {
			p := payloads[i]
			switch {
			case strings.Contains(tp, "/NBIRTH/"):
				births++
				if p.GetSeq() != 0 || p.Metrics[0].GetName() != sparkplug.BdSeqMetric || p.Metrics[0].GetLongValue() != 4 {
					t.Fatalf("message %d: NBIRTH = %v", i, p)
				}
				seq = 0
				continue
			case strings.Contains(tp, "/DBIRTH/"):
				for _, m := range p.Metrics {
					if m.GetName() == "" || m.Alias == nil || m.GetDatatype() != uint32(pb.DataType_Double) {
						t.Fatalf("message %d: DBIRTH metric %v lacks name, alias or type", i, m)
					}
				}
				if births == 2 && p.Metrics[0].GetIsNull() {
					t.Errorf("message %d: a rebirth after data must carry the latest values", i)
				}
			case strings.Contains(tp, "/DDATA/"):
				for _, m := range p.Metrics {
					if m.Name != nil || m.Alias == nil || m.Timestamp == nil {
						t.Fatalf("message %d: DDATA metric %v, want alias, timestamp and no name", i, m)
					}
				}
			default:
				t.Fatalf("message %d: unexpected topic %s", i, tp)
			}
			seq = (seq + 1) % 256
			if p.GetSeq() != seq {
				t.Fatalf("message %d (%s): seq %d, want %d", i, tp, p.GetSeq(), seq)
			}
		}
		if births != 2 {
			t.Errorf("%d NBIRTHs, want 2", births)
		}
		// The pump has five metrics, the spindle four (no pressure).
		if tp := topics[1]; tp != "spBv1.0/g/DBIRTH/plant/pump-1" || len(payloads[1].Metrics) != 5 || len(payloads[2].Metrics) != 4 {
			t.Errorf("first DBIRTH %s with %d metrics, second %d", tp, len(payloads[1].Metrics), len(payloads[2].Metrics))
		}
	})
}

func TestSparkplugDeath(t *testing.T) {
	topic, payload := sim.SparkplugDeath("g", "n", 9)
	var p pb.Payload
	if err := proto.Unmarshal(payload, &p); err != nil {
		t.Fatal(err)
	}
	if topic != "spBv1.0/g/NDEATH/n" || len(p.Metrics) != 1 || p.Metrics[0].GetName() != "bdSeq" || p.Metrics[0].GetLongValue() != 9 || p.Seq != nil {
		t.Errorf("death %s %v", topic, &p)
	}
}

func TestSparkplugRunnerArguments(t *testing.T) {
	p := plantOfAllKinds(t)
	c := &fakeSparkplugClient{}
	for _, tc := range []struct {
		opts sim.SparkplugOptions
		want string
	}{
		{sim.SparkplugOptions{EdgeNode: "n"}, `group "" is not a Sparkplug id`},
		{sim.SparkplugOptions{Group: "g", EdgeNode: "a/b"}, `edge node "a/b" is not a Sparkplug id`},
		{sim.SparkplugOptions{Group: "g", EdgeNode: "n", Steps: -1}, "steps -1 is negative"},
	} {
		if _, err := sim.NewSparkplugRunner(p, c, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.opts, err, tc.want)
		}
	}
}
