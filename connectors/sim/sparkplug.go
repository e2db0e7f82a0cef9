package sim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/millwright-io/millwright/connectors/sparkplug"
	pb "github.com/millwright-io/millwright/connectors/sparkplug/sparkplugpb"
)

// SparkplugClient is the MQTT connection of a simulated Sparkplug edge node.
// connectors/mqtt's Publisher implements it; its will must be the node's death certificate
// (see SparkplugDeath). Subscribe calls handler for each message of filter, one at a time,
// from the client's goroutine.
type SparkplugClient interface {
	Publisher
	Subscribe(ctx context.Context, filter string, qos byte, handler func(topic string, payload []byte)) error
}

// SparkplugOptions configure a SparkplugRunner.
type SparkplugOptions struct {
	// Group and EdgeNode are the Sparkplug group id and edge node id; required. The plant's
	// machines are the node's devices. For an edge node per line, run one SparkplugRunner
	// per line, each with a plant of that line's machines (the same seed gives each machine
	// the same samples).
	Group, EdgeNode string
	// BdSeq is the birth/death sequence number of this connection: the NBIRTH carries it,
	// and so must the NDEATH registered as the client's will.
	BdSeq uint64
	// Interval, Start and Steps are as in RunOptions.
	Interval time.Duration
	Start    time.Time
	Steps    int
}

// SparkplugRunner publishes a plant as a Sparkplug B edge node: an NBIRTH, a DBIRTH per
// machine defining its signals as Double metrics with aliases, then every step a DDATA per
// machine with the values by alias, each message with the next sequence number. It answers
// an NCMD Node Control/Rebirth by publishing the births again.
type SparkplugRunner struct {
	plant  *Plant
	client SparkplugClient
	opts   SparkplugOptions
	seq    uint64
	last   []Sample // the latest sample of each machine, for the births
	wake   chan struct{}

	counts   // Stats counts messages, births included
	rebirths atomic.Int64
}

// sparkplugSignals are the metric names of a machine's signals; a metric's alias is its
// index plus one.
var sparkplugSignals = [...]string{SignalTemperature, SignalVibrationRMS, SignalCurrent, SignalPressure, SignalSpeed}

// SparkplugDeath returns the topic and payload of the edge node's NDEATH, to register as
// the MQTT will of its client.
func SparkplugDeath(group, edgeNode string, bdSeq uint64) (topic string, payload []byte) {
	b, err := proto.Marshal(&pb.Payload{
		Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())),
		Metrics:   []*pb.Payload_Metric{bdSeqMetric(bdSeq)},
	})
	if err != nil {
		panic("sim: marshal an NDEATH: " + err.Error()) // a fixed, valid message
	}
	return sparkplug.Topic(group, sparkplug.NDeath, edgeNode, ""), b
}

// NewSparkplugRunner checks its arguments and returns a runner. It does no I/O.
func NewSparkplugRunner(plant *Plant, client SparkplugClient, opts SparkplugOptions) (*SparkplugRunner, error) {
	validID := func(s string) bool { return s != "" && !strings.ContainsAny(s, "/+#") }
	switch {
	case plant == nil:
		return nil, errors.New("simulated sparkplug edge node: no plant")
	case client == nil:
		return nil, errors.New("simulated sparkplug edge node: no client")
	case !validID(opts.Group):
		return nil, fmt.Errorf("simulated sparkplug edge node: group %q is not a Sparkplug id; expected a non-empty name without '/', '+', '#'", opts.Group)
	case !validID(opts.EdgeNode):
		return nil, fmt.Errorf("simulated sparkplug edge node: edge node %q is not a Sparkplug id; expected a non-empty name without '/', '+', '#'", opts.EdgeNode)
	case opts.Interval < 0:
		return nil, fmt.Errorf("simulated sparkplug edge node: interval %s is negative; expected 0 (the plant's) or more", opts.Interval)
	case opts.Steps < 0:
		return nil, fmt.Errorf("simulated sparkplug edge node: steps %d is negative; expected 0 (no limit) or more", opts.Steps)
	}
	if opts.Interval == 0 {
		opts.Interval = plant.cfg.Interval
	}
	return &SparkplugRunner{plant: plant, client: client, opts: opts, wake: make(chan struct{}, 1)}, nil
}

// Run subscribes to the node's commands, publishes the births, then steps the plant and
// publishes its samples until ctx ends or Steps steps are published (it returns nil then,
// without waiting for the deliveries). A rebirth request is answered before the next step.
// It returns an error only when the client fails in another way than by ctx ending.
func (r *SparkplugRunner) Run(ctx context.Context) error {
	err := r.client.Subscribe(ctx, sparkplug.Topic(r.opts.Group, sparkplug.NCmd, r.opts.EdgeNode, ""), 1, func(_ string, payload []byte) {
		if sparkplug.IsRebirthRequest(payload) {
			select {
			case r.wake <- struct{}{}:
			default: // one is pending already
			}
		}
	})
	if err != nil {
		return r.fail(ctx, err)
	}
	if err := r.births(ctx); err != nil {
		return r.fail(ctx, err)
	}
	start := r.opts.Start
	if start.IsZero() {
		start = time.Now()
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for n := 0; r.opts.Steps == 0 || n < r.opts.Steps; n++ {
		at := start.Add(time.Duration(n) * r.opts.Interval)
		for wait := time.Until(at); wait > 0; wait = time.Until(at) {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil
			case <-timer.C:
			case <-r.wake:
				timer.Stop()
				if err := r.rebirth(ctx); err != nil {
					return r.fail(ctx, err)
				}
			}
		}
		select {
		case <-r.wake: // requested while publishing
			if err := r.rebirth(ctx); err != nil {
				return r.fail(ctx, err)
			}
		default:
		}
		if ctx.Err() != nil {
			return nil
		}
		r.last = r.plant.Step(at)
		for i := range r.last {
			s := &r.last[i]
			if err := r.publish(ctx, sparkplug.DData, s.Machine, r.metrics(s, false)); err != nil {
				return r.fail(ctx, err)
			}
		}
		r.steps.Add(1)
	}
	return nil
}

func (r *SparkplugRunner) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("simulated sparkplug edge node %s/%s: %w", r.opts.Group, r.opts.EdgeNode, err)
}

// rebirth answers a rebirth request.
func (r *SparkplugRunner) rebirth(ctx context.Context) error {
	r.rebirths.Add(1)
	return r.births(ctx)
}

// births publishes the NBIRTH (seq 0) and a DBIRTH per machine, with the latest values.
func (r *SparkplugRunner) births(ctx context.Context) error {
	r.seq = 0
	now := uint64(time.Now().UnixMilli())
	rebirth := &pb.Payload_Metric{
		Name: proto.String(sparkplug.RebirthMetric), Datatype: proto.Uint32(uint32(pb.DataType_Boolean)),
		Value: &pb.Payload_Metric_BooleanValue{BooleanValue: false},
	}
	if err := r.send(ctx, sparkplug.NBirth, "", now, []*pb.Payload_Metric{bdSeqMetric(r.opts.BdSeq), rebirth}); err != nil {
		return err
	}
	for i, m := range r.plant.cfg.Machines {
		s := Sample{Machine: m.ID, Kind: m.Kind}
		if i < len(r.last) {
			s = r.last[i]
		}
		if err := r.publish(ctx, sparkplug.DBirth, m.ID, r.metrics(&s, true)); err != nil {
			return err
		}
	}
	return nil
}

// metrics returns a sample's metrics: named, typed and with aliases for a birth (null
// before the first step), by alias for data.
func (r *SparkplugRunner) metrics(s *Sample, birth bool) []*pb.Payload_Metric {
	values := [...]float64{s.Signals.Temperature, s.Signals.VibrationRMS, s.Signals.Current, s.Signals.Pressure, s.Signals.Speed}
	hasPressure := kinds[s.Kind].pressure > 0
	ms := uint64(s.Time.UnixMilli())
	out := make([]*pb.Payload_Metric, 0, len(values))
	for i, v := range values {
		if sparkplugSignals[i] == SignalPressure && !hasPressure {
			continue
		}
		m := &pb.Payload_Metric{Alias: proto.Uint64(uint64(i + 1))}
		if birth {
			m.Name = proto.String(sparkplugSignals[i])
			m.Datatype = proto.Uint32(uint32(pb.DataType_Double))
		}
		if s.Time.IsZero() {
			m.IsNull = proto.Bool(true)
		} else {
			m.Timestamp = proto.Uint64(ms)
			m.Value = &pb.Payload_Metric_DoubleValue{DoubleValue: v}
		}
		out = append(out, m)
	}
	return out
}

// publish sends a device message with the next sequence number.
func (r *SparkplugRunner) publish(ctx context.Context, msgType, device string, metrics []*pb.Payload_Metric) error {
	r.seq = (r.seq + 1) % 256
	return r.send(ctx, msgType, device, uint64(time.Now().UnixMilli()), metrics)
}

func (r *SparkplugRunner) send(ctx context.Context, msgType, device string, now uint64, metrics []*pb.Payload_Metric) error {
	b, err := proto.Marshal(&pb.Payload{Timestamp: proto.Uint64(now), Seq: proto.Uint64(r.seq), Metrics: metrics})
	if err != nil {
		return fmt.Errorf("marshal %s: %w", msgType, err)
	}
	topic := sparkplug.Topic(r.opts.Group, msgType, r.opts.EdgeNode, device)
	if err := r.client.Publish(ctx, topic, b, r.settle); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	r.published.Add(1)
	return nil
}

// Rebirths returns how many rebirth requests the runner has answered.
func (r *SparkplugRunner) Rebirths() int64 { return r.rebirths.Load() }

func bdSeqMetric(v uint64) *pb.Payload_Metric {
	return &pb.Payload_Metric{
		Name: proto.String(sparkplug.BdSeqMetric), Datatype: proto.Uint32(uint32(pb.DataType_UInt64)),
		Value: &pb.Payload_Metric_LongValue{LongValue: v},
	}
}
