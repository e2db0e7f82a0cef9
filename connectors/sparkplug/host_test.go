package sparkplug

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/connectors/mqtt"
	pb "github.com/millwright-io/millwright/connectors/sparkplug/sparkplugpb"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// testHost is a host with a clock the test moves.
type testHost struct {
	*host
	clock time.Time
}

func newTestHost(t testing.TB, cfg Config) *testHost {
	t.Helper()
	cfg.SetDefaults()
	m, err := newMetrics(prometheus.NewRegistry(), "test")
	if err != nil {
		t.Fatal(err)
	}
	h, err := newHost(cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	th := &testHost{host: h, clock: time.Unix(1700000000, 0)}
	h.now = func() time.Time { return th.clock }
	return th
}

func isDecodeError(err error) bool {
	var de *mqtt.DecodeError
	return errors.As(err, &de)
}

const recv = int64(1_800_000_000_000_000_000) // receive time of every message, Unix ns

// send handles one message and fails the test on an error.
func (h *testHost) send(t *testing.T, topic string, p *pb.Payload) []telemetry.Point {
	t.Helper()
	pts, err := h.Decode(topic, marshal(t, p), recv, nil)
	if err != nil {
		t.Fatalf("%s: %v", topic, err)
	}
	return pts
}

// rebirths returns the rebirth requests queued since the last call.
func (h *testHost) rebirthRequests() []rebirthRequest {
	var out []rebirthRequest
	for {
		select {
		case r := <-h.rebirths:
			out = append(out, r)
		default:
			return out
		}
	}
}

func (h *testHost) skipped(reason string) float64 {
	return testutil.ToFloat64(h.m.skipped.WithLabelValues(reason))
}

func (h *testHost) rebirthCount(reason string) float64 {
	return testutil.ToFloat64(h.m.rebirths.WithLabelValues(reason))
}

func nbirth(seq, bdSeq uint64, metrics ...*pb.Payload_Metric) *pb.Payload {
	all := append([]*pb.Payload_Metric{
		mLong(bdSeqMetric, 0, pb.DataType_Int64, bdSeq),
		mBool(rebirthMetric, 0, false),
	}, metrics...)
	return &pb.Payload{Timestamp: proto.Uint64(1700000000000), Seq: proto.Uint64(seq), Metrics: all}
}

func msg(seq uint64, metrics ...*pb.Payload_Metric) *pb.Payload {
	return &pb.Payload{Timestamp: proto.Uint64(1700000001000), Seq: proto.Uint64(seq), Metrics: metrics}
}

// byAlias returns a data metric that has only an alias and a value.
func byAlias(m *pb.Payload_Metric) *pb.Payload_Metric {
	m.Name, m.Datatype = nil, nil
	return m
}

type want struct {
	line, machine, signal string
	value                 telemetry.Value
	level                 telemetry.Level
	time                  int64
}

func checkPoints(t *testing.T, got []telemetry.Point, wants ...want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("got %d points %+v, want %d", len(got), got, len(wants))
	}
	for i, w := range wants {
		g := got[i]
		if g.Line != w.line || g.Machine != w.machine || g.Signal != w.signal || g.Value != w.value || g.Quality.Level != w.level || g.ServerTime != recv {
			t.Errorf("point %d = %+v, want %+v", i, g, w)
		}
		if w.time != 0 && g.SourceTime != w.time {
			t.Errorf("point %d source time = %d, want %d", i, g.SourceTime, w.time)
		}
	}
}

func TestBirthThenDataByAlias(t *testing.T) {
	h := newTestHost(t, Config{})
	pts := h.send(t, "spBv1.0/north/NBIRTH/plc-1", nbirth(0, 3,
		mDouble("Motor/Temp", 1, 40.5),
		mInt("Motor/Faults", 2, pb.DataType_Int32, 0),
	))
	birthTS := int64(1700000000000) * 1e6
	checkPoints(t, pts,
		want{"north", "plc-1", "Motor.Temp", telemetry.Float(40.5), telemetry.Good, birthTS},
		want{"north", "plc-1", "Motor.Faults", telemetry.Int(0), telemetry.Good, birthTS},
	)
	temp := byAlias(mDouble("", 1, 41.25))
	temp.Timestamp = proto.Uint64(1700000000500)
	pts = h.send(t, "spBv1.0/north/NDATA/plc-1", msg(1, temp, byAlias(mInt("", 2, pb.DataType_Int32, 0xFFFFFFFE))))
	checkPoints(t, pts,
		want{"north", "plc-1", "Motor.Temp", telemetry.Float(41.25), telemetry.Good, 1700000000500 * 1e6},
		want{"north", "plc-1", "Motor.Faults", telemetry.Int(-2), telemetry.Good, 1700000001000 * 1e6},
	)
	// By name, without alias.
	pts = h.send(t, "spBv1.0/north/NDATA/plc-1", msg(2, &pb.Payload_Metric{Name: proto.String("Motor/Temp"), Value: &pb.Payload_Metric_DoubleValue{DoubleValue: 7}}))
	checkPoints(t, pts, want{"north", "plc-1", "Motor.Temp", telemetry.Float(7), telemetry.Good, 0})
	if r := h.rebirthRequests(); len(r) != 0 {
		t.Errorf("rebirth requests %v after a clean sequence", r)
	}
	if g := testutil.ToFloat64(h.m.seqGaps); g != 0 {
		t.Errorf("seq gaps = %v, want 0", g)
	}
}

func TestDeviceBirthAndData(t *testing.T) {
	h := newTestHost(t, Config{})
	h.send(t, "spBv1.0/north/NBIRTH/edge", nbirth(10, 1))
	pts := h.send(t, "spBv1.0/north/DBIRTH/edge/pump-1", msg(11, mDouble("temperature", 1, 40), mString("mode", 2, "auto")))
	checkPoints(t, pts,
		want{"north", "pump-1", "temperature", telemetry.Float(40), telemetry.Good, 0},
		want{"north", "pump-1", "mode", telemetry.String("auto"), telemetry.Good, 0},
	)
	pts = h.send(t, "spBv1.0/north/DDATA/edge/pump-1", msg(12, byAlias(mDouble("", 1, 42)), byAlias(mString("", 2, "manual"))))
	checkPoints(t, pts,
		want{"north", "pump-1", "temperature", telemetry.Float(42), telemetry.Good, 0},
		want{"north", "pump-1", "mode", telemetry.String("manual"), telemetry.Good, 0},
	)
	// The node's aliases are not the device's.
	if pts := h.send(t, "spBv1.0/north/NDATA/edge", msg(13, byAlias(mDouble("", 1, 1)))); len(pts) != 0 {
		t.Errorf("node data by a device alias gave %v", pts)
	}
	if h.skipped(skipUnknownAlias) != 1 || h.rebirthCount(rebirthUnknownAlias) != 1 {
		t.Errorf("unknown alias: skipped %v, rebirths %v; want 1 and 1", h.skipped(skipUnknownAlias), h.rebirthCount(rebirthUnknownAlias))
	}
}

func TestSeqWraps(t *testing.T) {
	h := newTestHost(t, Config{})
	h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(254, 1, mDouble("x", 1, 0)))
	for _, seq := range []uint64{255, 0, 1, 2} {
		if pts := h.send(t, "spBv1.0/g/NDATA/n", msg(seq, byAlias(mDouble("", 1, float64(seq))))); len(pts) != 1 {
			t.Fatalf("seq %d: %d points", seq, len(pts))
		}
	}
	if g := testutil.ToFloat64(h.m.seqGaps); g != 0 {
		t.Errorf("seq gaps = %v across 254→255→0→1→2, want 0", g)
	}
	if r := h.rebirthRequests(); len(r) != 0 {
		t.Errorf("rebirth requests %v", r)
	}
}

func TestSeqGapRequestsRebirth(t *testing.T) {
	h := newTestHost(t, Config{RebirthInterval: 5 * time.Second})
	h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 1, mDouble("x", 1, 0)))
	pts := h.send(t, "spBv1.0/g/NDATA/n", msg(2, byAlias(mDouble("", 1, 2)))) // 1 is missing
	if len(pts) != 1 {
		t.Errorf("the data of a message after a gap is kept: got %d points", len(pts))
	}
	if r := h.rebirthRequests(); len(r) != 1 || r[0] != (rebirthRequest{"g", "n"}) {
		t.Fatalf("rebirth requests = %v, want one to g/n", r)
	}
	// Another gap within the interval is counted, not sent.
	h.send(t, "spBv1.0/g/NDATA/n", msg(9, byAlias(mDouble("", 1, 9))))
	if r := h.rebirthRequests(); len(r) != 0 {
		t.Fatalf("rebirth requests within the interval = %v", r)
	}
	if l := testutil.ToFloat64(h.m.rebirthsLimited); l != 1 {
		t.Errorf("limited = %v, want 1", l)
	}
	// In sequence again: nothing.
	h.send(t, "spBv1.0/g/NDATA/n", msg(10, byAlias(mDouble("", 1, 10))))
	h.clock = h.clock.Add(5 * time.Second)
	h.send(t, "spBv1.0/g/NDATA/n", msg(12, byAlias(mDouble("", 1, 12))))
	if r := h.rebirthRequests(); len(r) != 1 {
		t.Fatalf("rebirth requests after the interval = %v, want 1", r)
	}
	if g, s := testutil.ToFloat64(h.m.seqGaps), h.rebirthCount(rebirthSeqGap); g != 3 || s != 2 {
		t.Errorf("gaps %v, rebirths sent %v; want 3 and 2", g, s)
	}
	// A birth without a seq and data without one count as gaps.
	h.clock = h.clock.Add(time.Minute)
	d := msg(13, byAlias(mDouble("", 1, 13)))
	d.Seq = nil
	h.send(t, "spBv1.0/g/NDATA/n", d)
	if r := h.rebirthRequests(); len(r) != 1 {
		t.Errorf("data without seq: rebirth requests = %v, want 1", r)
	}
}

func TestDataBeforeBirthRequestsRebirth(t *testing.T) {
	h := newTestHost(t, Config{})
	if pts := h.send(t, "spBv1.0/g/NDATA/n", msg(5, byAlias(mDouble("", 1, 1)), byAlias(mDouble("", 2, 2)))); len(pts) != 0 {
		t.Fatalf("points before birth: %v", pts)
	}
	if r := h.rebirthRequests(); len(r) != 1 || r[0] != (rebirthRequest{"g", "n"}) {
		t.Fatalf("rebirth requests = %v", r)
	}
	if h.skipped(skipNotBorn) != 2 || h.rebirthCount(rebirthBeforeBirth) != 1 {
		t.Errorf("not born skipped %v, rebirths %v; want 2 and 1", h.skipped(skipNotBorn), h.rebirthCount(rebirthBeforeBirth))
	}
	// A device's data before its DBIRTH asks too (after the interval).
	h.clock = h.clock.Add(time.Hour)
	h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 1))
	if pts := h.send(t, "spBv1.0/g/DDATA/n/d", msg(1, byAlias(mDouble("", 1, 1)))); len(pts) != 0 {
		t.Fatalf("points before the device birth: %v", pts)
	}
	if r := h.rebirthRequests(); len(r) != 1 {
		t.Fatalf("device data before birth: rebirth requests = %v", r)
	}
}

func TestDeathMarksMetricsBad(t *testing.T) {
	h := newTestHost(t, Config{})
	h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 7, mDouble("t", 1, 20)))
	h.send(t, "spBv1.0/g/DBIRTH/n/d", msg(1, mInt("c", 1, pb.DataType_UInt16, 5), mBool("on", 2, true)))
	h.send(t, "spBv1.0/g/NDATA/n", msg(2, byAlias(mDouble("", 1, 21))))

	// An NDEATH of an earlier session (other bdSeq) is ignored.
	stale := &pb.Payload{Metrics: []*pb.Payload_Metric{mLong(bdSeqMetric, 0, pb.DataType_Int64, 6)}}
	if pts := h.send(t, "spBv1.0/g/NDEATH/n", stale); len(pts) != 0 {
		t.Fatalf("a stale death gave %v", pts)
	}
	if c := testutil.ToFloat64(h.m.staleDeaths); c != 1 {
		t.Errorf("stale deaths = %v, want 1", c)
	}

	death := &pb.Payload{Metrics: []*pb.Payload_Metric{mLong(bdSeqMetric, 0, pb.DataType_Int64, 7)}}
	pts := h.send(t, "spBv1.0/g/NDEATH/n", death)
	got := map[string]telemetry.Point{}
	for _, p := range pts {
		got[p.Machine+"/"+p.Signal] = p
	}
	if len(pts) != 3 || len(got) != 3 {
		t.Fatalf("death gave %d points %v, want 3 (t, c, on)", len(pts), pts)
	}
	for key, v := range map[string]telemetry.Value{"n/t": telemetry.Float(21), "d/c": telemetry.Int(5), "d/on": telemetry.Bool(true)} {
		if p := got[key]; p.Value != v || p.Quality.Level != telemetry.Bad {
			t.Errorf("%s = %+v, want last value %v with quality bad", key, p, v)
		}
	}
	// Data after the death gives nothing and asks for a rebirth; the metrics stay bad.
	if pts := h.send(t, "spBv1.0/g/NDATA/n", msg(3, byAlias(mDouble("", 1, 22)))); len(pts) != 0 {
		t.Errorf("data after death gave %v", pts)
	}
	if pts := h.send(t, "spBv1.0/g/DDATA/n/d", msg(4, byAlias(mBool("", 2, false)))); len(pts) != 0 {
		t.Errorf("device data after death gave %v", pts)
	}
	if r := h.rebirthRequests(); len(r) != 1 {
		t.Errorf("rebirth requests after death = %v, want 1 (rate limited)", r)
	}
	// A new birth makes it good again.
	pts = h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 8, mDouble("t", 1, 23)))
	checkPoints(t, pts, want{"g", "n", "t", telemetry.Float(23), telemetry.Good, 0})
}

func TestDeviceDeath(t *testing.T) {
	h := newTestHost(t, Config{})
	h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 1, mDouble("t", 1, 20)))
	h.send(t, "spBv1.0/g/DBIRTH/n/d", msg(1, mDouble("x", 1, 1.5)))
	pts := h.send(t, "spBv1.0/g/DDEATH/n/d", msg(2))
	checkPoints(t, pts, want{"g", "d", "x", telemetry.Float(1.5), telemetry.Bad, 0})
	// The node lives on.
	pts = h.send(t, "spBv1.0/g/NDATA/n", msg(3, byAlias(mDouble("", 1, 3))))
	checkPoints(t, pts, want{"g", "n", "t", telemetry.Float(3), telemetry.Good, 0})
	if pts := h.send(t, "spBv1.0/g/DDATA/n/d", msg(4, byAlias(mDouble("", 1, 1)))); len(pts) != 0 {
		t.Errorf("data of a dead device gave %v", pts)
	}
}

func TestValues(t *testing.T) {
	bytesMetric := &pb.Payload_Metric{Name: proto.String("b"), Alias: proto.Uint64(1), Datatype: proto.Uint32(uint32(pb.DataType_Bytes)), Value: &pb.Payload_Metric_BytesValue{BytesValue: []byte{1}}}
	dataset := &pb.Payload_Metric{Name: proto.String("ds"), Alias: proto.Uint64(1), Datatype: proto.Uint32(uint32(pb.DataType_DataSet)), Value: &pb.Payload_Metric_DatasetValue{DatasetValue: &pb.Payload_DataSet{}}}
	template := &pb.Payload_Metric{Name: proto.String("tp"), Alias: proto.Uint64(1), Datatype: proto.Uint32(uint32(pb.DataType_Template)), Value: &pb.Payload_Metric_TemplateValue{TemplateValue: &pb.Payload_Template{}}}
	null := mDouble("n", 1, 0)
	null.IsNull = proto.Bool(true)
	text := mString("s", 1, "txt")
	text.Datatype = proto.Uint32(uint32(pb.DataType_Text))
	for _, tc := range []struct {
		name   string
		m      *pb.Payload_Metric
		want   telemetry.Value
		reason string
	}{
		{"int8 negative", mInt("v", 1, pb.DataType_Int8, 0xFFFFFFFF), telemetry.Int(-1), ""},
		{"int8 sign-extended by width", mInt("v", 1, pb.DataType_Int8, 0x80), telemetry.Int(-128), ""},
		{"int16", mInt("v", 1, pb.DataType_Int16, 0xFFFF8000), telemetry.Int(-32768), ""},
		{"int32", mInt("v", 1, pb.DataType_Int32, 123456), telemetry.Int(123456), ""},
		{"int64", mLong("v", 1, pb.DataType_Int64, math.MaxUint64), telemetry.Int(-1), ""},
		{"uint8", mInt("v", 1, pb.DataType_UInt8, 255), telemetry.Int(255), ""},
		{"uint16", mInt("v", 1, pb.DataType_UInt16, 65535), telemetry.Int(65535), ""},
		{"uint32", mInt("v", 1, pb.DataType_UInt32, math.MaxUint32), telemetry.Int(math.MaxUint32), ""},
		{"uint32 in long", mLong("v", 1, pb.DataType_UInt32, 7), telemetry.Int(7), ""},
		{"uint64 small", mLong("v", 1, pb.DataType_UInt64, 42), telemetry.Int(42), ""},
		{"uint64 large", mLong("v", 1, pb.DataType_UInt64, math.MaxUint64), telemetry.Float(math.MaxUint64), ""},
		{"datetime", mLong("v", 1, pb.DataType_DateTime, 1700000000123), telemetry.Int(1700000000123), ""},
		{"float", mFloat("v", 1, 1.5), telemetry.Float(1.5), ""},
		{"double", mDouble("v", 1, -2.25), telemetry.Float(-2.25), ""},
		{"boolean", mBool("v", 1, true), telemetry.Bool(true), ""},
		{"string", mString("v", 1, "héllo"), telemetry.String("héllo"), ""},
		{"text", text, telemetry.String("txt"), ""},
		{"null", null, telemetry.Value{}, skipNull},
		{"bytes", bytesMetric, telemetry.Value{}, skipUnsupportedType},
		{"dataset", dataset, telemetry.Value{}, skipUnsupportedType},
		{"template", template, telemetry.Value{}, skipUnsupportedType},
		{"double declared, float sent", &pb.Payload_Metric{Name: proto.String("m"), Alias: proto.Uint64(1), Datatype: proto.Uint32(uint32(pb.DataType_Double)), Value: &pb.Payload_Metric_FloatValue{FloatValue: 1}}, telemetry.Value{}, skipTypeMismatch},
		{"no value", &pb.Payload_Metric{Name: proto.String("m"), Alias: proto.Uint64(1), Datatype: proto.Uint32(uint32(pb.DataType_Int32))}, telemetry.Value{}, skipTypeMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHost(t, Config{})
			pts := h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 1, tc.m))
			if tc.reason != "" {
				if len(pts) != 0 || h.skipped(tc.reason) != 1 {
					t.Fatalf("points %v, skipped %s = %v; want none and 1", pts, tc.reason, h.skipped(tc.reason))
				}
				return
			}
			if len(pts) != 1 || pts[0].Value != tc.want {
				t.Fatalf("points = %+v, want one with %v", pts, tc.want)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	// The birth's Node Control/Rebirth metric takes a place too (it is defined, not stored).
	h := newTestHost(t, Config{MaxNodes: 1, MaxDevicesPerNode: 1, MaxMetricsPerNode: 3})
	pts := h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 1, mDouble("a", 1, 1), mDouble("b", 2, 2), mDouble("c", 3, 3)))
	if len(pts) != 2 || h.skipped(skipTableFull) != 1 {
		t.Errorf("3 metrics with room for 2: %d points, %v table_full", len(pts), h.skipped(skipTableFull))
	}
	h.send(t, "spBv1.0/g/NBIRTH/other", nbirth(0, 1, mDouble("a", 1, 1)))
	if c := testutil.ToFloat64(h.m.nodesOverLimit); c != 1 || len(h.nodes) != 1 {
		t.Errorf("nodes over limit = %v with %d nodes, want 1 and 1", c, len(h.nodes))
	}
	h.send(t, "spBv1.0/g/DBIRTH/n/d1", msg(1))
	h.send(t, "spBv1.0/g/DBIRTH/n/d2", msg(2))
	if c := testutil.ToFloat64(h.m.devicesOverLimit); c != 1 {
		t.Errorf("devices over limit = %v, want 1", c)
	}
	// Duplicate names and aliases in a birth keep the first.
	h2 := newTestHost(t, Config{})
	pts = h2.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 1, mDouble("a", 1, 1), mDouble("a", 2, 2), mDouble("b", 1, 3)))
	if len(pts) != 1 || h2.skipped(skipDuplicate) != 2 {
		t.Errorf("duplicates: %d points, %v skipped; want 1 and 2", len(pts), h2.skipped(skipDuplicate))
	}
}

func TestTopics(t *testing.T) {
	h := newTestHost(t, Config{})
	for _, tc := range []struct {
		topic string
		class string // "" for no error
	}{
		{"spBv1.0/STATE/other-host", ""},
		{"spBv1.0/g/NCMD/n", ""},
		{"spBv1.0/g/DCMD/n/d", ""},
		{"spAv1.0/g/NDATA/n", classTopic},
		{"spBv1.0/g/NDATA", classTopic},
		{"spBv1.0/g/NDATA/n/d", classTopic},
		{"spBv1.0/g/DDATA/n", classTopic},
		{"spBv1.0/g/XDATA/n", classTopic},
		{"spBv1.0/g/DDATA/n/d/e", classTopic},
		{"spBv1.0//NDATA/n", classTopic},
	} {
		_, err := h.Decode(tc.topic, nil, recv, nil)
		var de *mqtt.DecodeError
		switch {
		case tc.class == "" && err != nil:
			t.Errorf("%s: %v", tc.topic, err)
		case tc.class != "" && (!errors.As(err, &de) || de.Class != tc.class):
			t.Errorf("%s: err = %v, want class %s", tc.topic, err, tc.class)
		}
	}
	if _, err := h.Decode("spBv1.0/g/NDATA/n", []byte{0xff}, recv, nil); !isDecodeError(err) {
		t.Errorf("malformed payload: err = %v, want a decode error", err)
	}
}

func TestOwnOfflineState(t *testing.T) {
	h := newTestHost(t, Config{HostID: "me"})
	for _, tc := range []struct {
		topic, payload string
		signal         bool
	}{
		{"spBv1.0/STATE/me", `{"online":true,"timestamp":1}`, false},
		{"spBv1.0/STATE/other", `{"online":false,"timestamp":1}`, false},
		{"spBv1.0/STATE/me", `not json`, false},
		{"spBv1.0/STATE/me", `{"timestamp":1}`, false},
		{"spBv1.0/STATE/me", `{"online":false,"timestamp":1}`, true},
	} {
		if _, err := h.Decode(tc.topic, []byte(tc.payload), recv, nil); err != nil {
			t.Fatalf("%s %s: %v", tc.topic, tc.payload, err)
		}
		select {
		case <-h.offline:
			if !tc.signal {
				t.Errorf("%s %s: republish signalled", tc.topic, tc.payload)
			}
		default:
			if tc.signal {
				t.Errorf("%s %s: no republish signalled", tc.topic, tc.payload)
			}
		}
	}
}

func TestMappingRules(t *testing.T) {
	cfg := Config{Map: Mapping{Rules: []Rule{
		{EdgeNode: `^plc-`, Metric: `^(?P<machine>[^/]+)/(?P<signal>.+)$`, Machine: "${machine}", Signal: "${signal}"},
		{Device: `^(?P<line>[^.]+)\.(?P<machine>.+)$`, Line: "${line}", Machine: "${machine}"},
		{Group: `^site-(.*)$`, Metric: `^(.*)$`, Factory: "${group}", Signal: "raw_$1"},
	}}}
	h := newTestHost(t, cfg)
	for _, tc := range []struct {
		group, node, device, metric string
		want                        pointNames
	}{
		{"north", "plc-7", "", "Press/Hydraulic/Pressure", pointNames{"", "north", "Press", "Hydraulic/Pressure"}},
		{"north", "gw", "", "Press/Temp", pointNames{"", "north", "gw", "Press.Temp"}},
		{"north", "gw", "l2.pump-4", "Temp", pointNames{"", "l2", "pump-4", "Temp"}},
		{"site-x", "gw", "", "a/b", pointNames{"site-x", "site-x", "gw", "raw_a/b"}},
	} {
		got := h.mapper.names(&metricNames{group: tc.group, edgeNode: tc.node, device: tc.device}, tc.metric)
		if got != tc.want {
			t.Errorf("%s/%s/%s %q = %+v, want %+v", tc.group, tc.node, tc.device, tc.metric, got, tc.want)
		}
	}
	// group_as factory, a fixed separator, and excluded control metrics.
	h = newTestHost(t, Config{Map: Mapping{GroupAs: GroupAsFactory, Separator: "_"}})
	if got := h.mapper.names(&metricNames{group: "g", edgeNode: "n"}, "a/b"); got != (pointNames{"g", "", "n", "a_b"}) {
		t.Errorf("group_as factory: %+v", got)
	}
	pts := h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 1, mBool("Node Control/Reboot", 5, false)))
	if len(pts) != 0 {
		t.Errorf("control metrics stored: %v", pts)
	}
}

// An NDEATH is the node's MQTT will, built when it connected (Sparkplug 3.0 §5: its
// timestamp is not useful to a host): the stale points of a death take the time the host
// received it, and never precede the node's last data.
func TestDeathMarksPointsAtTheReceiveTime(t *testing.T) {
	const connectMS = 1700000000000
	death := &pb.Payload{Timestamp: proto.Uint64(connectMS), Metrics: []*pb.Payload_Metric{mLong(bdSeqMetric, 0, pb.DataType_Int64, 1)}}
	for _, tc := range []struct {
		name       string
		lastDataMS uint64
		want       int64
	}{
		{"data before the receive time", connectMS + 2*3600*1000, recv},
		{"data stamped after the receive time", uint64(recv/1e6) + 60_000, recv + 60_000*1e6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHost(t, Config{})
			birth := nbirth(0, 1, mDouble("t", 1, 20))
			birth.Timestamp = proto.Uint64(connectMS + 5)
			h.send(t, "spBv1.0/g/NBIRTH/n", birth)
			d := msg(1, byAlias(mDouble("", 1, 21)))
			d.Timestamp = proto.Uint64(tc.lastDataMS)
			h.send(t, "spBv1.0/g/NDATA/n", d)
			pts := h.send(t, "spBv1.0/g/NDEATH/n", death)
			checkPoints(t, pts, want{"g", "n", "t", telemetry.Float(21), telemetry.Bad, tc.want})
		})
	}
}

// Sparkplug 3.0 §5: a host that loses its connection marks the metrics of every known edge
// node stale, and it cannot use the old aliases afterwards (the node may have been born
// again with others meanwhile). Close, which the pipeline calls after a loss, makes every
// node unborn; Read returns the stale points before anything of the next connection.
func TestConnectionLossMarksNodesStaleAndForgetsAliases(t *testing.T) {
	s, err := New("lost", Config{MQTT: mqtt.Config{Servers: []string{"tcp://127.0.0.1:1"}}},
		connectors.Env{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	h := &testHost{host: s.host, clock: time.Unix(1_900_000_000, 0)}
	s.host.now = func() time.Time { return h.clock }
	h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 1, mDouble("Temp", 1, 20), mDouble("Pressure", 2, 3)))
	h.send(t, "spBv1.0/g/DBIRTH/n/d", msg(1, mDouble("Level", 1, 7)))
	h.send(t, "spBv1.0/g/NBIRTH/other", nbirth(0, 1)) // born, with nothing to mark stale

	lostAt := h.clock.UnixNano()
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.clock = h.clock.Add(time.Minute)

	// The node was born again meanwhile with 1=Pressure, 2=Temp; its data on the new
	// connection is not resolved with the old aliases, and asks for the births.
	if pts := h.send(t, "spBv1.0/g/NDATA/n", msg(1, byAlias(mDouble("", 1, 4.5)))); len(pts) != 0 {
		t.Errorf("data after the connection was lost resolved with the old aliases: %+v", pts)
	}
	if r := h.rebirthRequests(); len(r) != 1 || r[0] != (rebirthRequest{"g", "n"}) {
		t.Errorf("rebirth requests = %v, want one to g/n", r)
	}

	ctx := context.Background()
	wantStale := map[string]telemetry.Value{"n/Temp": telemetry.Float(20), "n/Pressure": telemetry.Float(3), "d/Level": telemetry.Float(7)}
	read := func(storeErr error) {
		t.Helper()
		b, ack, err := s.Read(ctx)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		got := map[string]telemetry.Point{}
		for _, p := range b.Points {
			got[p.Machine+"/"+p.Signal] = p
		}
		if len(got) != len(wantStale) || len(b.Points) != len(wantStale) {
			t.Fatalf("Read gave %+v, want the stale points of %v", b.Points, wantStale)
		}
		for k, v := range wantStale {
			if p := got[k]; p.Value != v || p.Quality.Level != telemetry.Bad || p.SourceTime != lostAt {
				t.Errorf("%s = %+v, want %v, quality bad, source time %d (the loss)", k, p, v, lostAt)
			}
		}
		ack(ctx, storeErr)
	}
	read(errors.New("store failed"))
	read(nil) // a batch that was not stored is read again
	if pts, _ := s.host.takeStale(100, 0); len(pts) != 0 {
		t.Errorf("stale points %+v left after they were stored", pts)
	}

	// The node's births on the new connection define the new aliases.
	h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 2, mDouble("Pressure", 1, 4), mDouble("Temp", 2, 21)))
	pts := h.send(t, "spBv1.0/g/NDATA/n", msg(1, byAlias(mDouble("", 1, 4.5))))
	checkPoints(t, pts, want{"g", "n", "Pressure", telemetry.Float(4.5), telemetry.Good, 0})
}

// Sparkplug 3.0 §6.4.18 Quality Codes: the property "Quality" of a metric carries the
// quality of its value (0 BAD, 192 GOOD, 500 STALE).
func TestQualityPropertySetsPointQuality(t *testing.T) {
	intValue := func(v uint32) *pb.Payload_PropertyValue {
		return &pb.Payload_PropertyValue{Type: proto.Uint32(uint32(pb.DataType_Int32)), Value: &pb.Payload_PropertyValue_IntValue{IntValue: v}}
	}
	for _, tc := range []struct {
		name   string
		keys   []string
		values []*pb.Payload_PropertyValue
		want   telemetry.Quality
	}{
		{"none", nil, nil, telemetry.Quality{}},
		{"bad", []string{"Quality"}, []*pb.Payload_PropertyValue{intValue(0)}, telemetry.Quality{Level: telemetry.Bad, Code: 0}},
		{"good", []string{"Quality"}, []*pb.Payload_PropertyValue{intValue(192)}, telemetry.Quality{Level: telemetry.Good, Code: 192}},
		{"stale", []string{"Quality"}, []*pb.Payload_PropertyValue{intValue(500)}, telemetry.Quality{Level: telemetry.Bad, Code: 500}},
		{"unknown code", []string{"Quality"}, []*pb.Payload_PropertyValue{intValue(7)}, telemetry.Quality{Level: telemetry.Uncertain, Code: 7}},
		{"long value, second key", []string{"engUnit", "Quality"},
			[]*pb.Payload_PropertyValue{{Value: &pb.Payload_PropertyValue_StringValue{StringValue: "C"}}, {Value: &pb.Payload_PropertyValue_LongValue{LongValue: 0}}},
			telemetry.Quality{Level: telemetry.Bad}},
		{"null", []string{"Quality"}, []*pb.Payload_PropertyValue{{IsNull: proto.Bool(true)}}, telemetry.Quality{}},
		{"string value", []string{"Quality"}, []*pb.Payload_PropertyValue{{Value: &pb.Payload_PropertyValue_StringValue{StringValue: "0"}}}, telemetry.Quality{}},
		{"no value for the key", []string{"engUnit", "Quality"}, []*pb.Payload_PropertyValue{intValue(0)}, telemetry.Quality{}},
		{"other key", []string{"quality"}, []*pb.Payload_PropertyValue{intValue(0)}, telemetry.Quality{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHost(t, Config{})
			h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 1, mDouble("t", 1, 20)))
			m := byAlias(mDouble("", 1, -9999))
			if tc.keys != nil {
				m.Properties = &pb.Payload_PropertySet{Keys: tc.keys, Values: tc.values}
			}
			pts := h.send(t, "spBv1.0/g/NDATA/n", msg(1, m))
			if len(pts) != 1 || pts[0].Quality != tc.want {
				t.Errorf("points %+v, want one of quality %+v", pts, tc.want)
			}
		})
	}
}

// is_transient: "should not be stored in a historian". A transient metric, flagged in its
// birth or in a message, gives no point, is counted, and is not reported at a death.
func TestTransientMetricsAreNotStored(t *testing.T) {
	h := newTestHost(t, Config{})
	tr := mDouble("tr", 2, 1)
	tr.IsTransient = proto.Bool(true)
	pts := h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 1, mDouble("t", 1, 20), tr))
	checkPoints(t, pts, want{"g", "n", "t", telemetry.Float(20), telemetry.Good, 0})

	m := byAlias(mDouble("", 1, 21))
	m.IsTransient = proto.Bool(true)
	if pts := h.send(t, "spBv1.0/g/NDATA/n", msg(1, m, byAlias(mDouble("", 2, 5)))); len(pts) != 0 {
		t.Errorf("transient metrics gave points %+v", pts)
	}
	if s := h.skipped(skipTransient); s != 3 {
		t.Errorf("skipped transient = %v, want 3", s)
	}
	pts = h.send(t, "spBv1.0/g/NDEATH/n", &pb.Payload{Metrics: []*pb.Payload_Metric{mLong(bdSeqMetric, 0, pb.DataType_Int64, 1)}})
	checkPoints(t, pts, want{"g", "n", "t", telemetry.Float(20), telemetry.Bad, 0})
}

// is_historical: "should not be considered a real time/current value". A historical value is
// stored at its own time but does not become the last value a death reports.
func TestHistoricalValueIsStoredButNotCurrent(t *testing.T) {
	h := newTestHost(t, Config{})
	h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 1, mDouble("t", 1, 20)))
	h.send(t, "spBv1.0/g/NDATA/n", msg(1, byAlias(mDouble("", 1, 30))))
	old := byAlias(mDouble("", 1, 5)) // store-and-forward backfill
	old.IsHistorical = proto.Bool(true)
	old.Timestamp = proto.Uint64(1600000000000)
	pts := h.send(t, "spBv1.0/g/NDATA/n", msg(2, old))
	checkPoints(t, pts, want{"g", "n", "t", telemetry.Float(5), telemetry.Good, 1600000000000 * 1e6})
	pts = h.send(t, "spBv1.0/g/NDEATH/n", &pb.Payload{Metrics: []*pb.Payload_Metric{mLong(bdSeqMetric, 0, pb.DataType_Int64, 1)}})
	checkPoints(t, pts, want{"g", "n", "t", telemetry.Float(30), telemetry.Bad, recv})
}

// A rebirth cannot make room in a full metric table: data on the aliases a birth refused for
// max_metrics_per_node is counted as table_full and asks for no rebirth (which would repeat
// every rebirth_interval for ever).
func TestDataOnAliasRefusedForTableFullAsksNoRebirth(t *testing.T) {
	h := newTestHost(t, Config{MaxMetricsPerNode: 2, RebirthInterval: time.Second})
	// Node Control/Rebirth and "a" fill the table; "b" is refused.
	h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 1, mDouble("a", 1, 1), mDouble("b", 2, 2)))
	for seq := range uint64(3) {
		h.clock = h.clock.Add(2 * time.Second)
		h.send(t, "spBv1.0/g/NDATA/n", msg(seq+1, byAlias(mDouble("", 2, 5))))
	}
	if r := h.rebirthRequests(); len(r) != 0 {
		t.Errorf("rebirth requests %v for an alias refused by max_metrics_per_node, want none", r)
	}
	if s := h.skipped(skipTableFull); s != 4 {
		t.Errorf("skipped table_full = %v, want 4 (1 at the birth, 3 data)", s)
	}
	// A birth that fits asks again for unknown aliases.
	h.send(t, "spBv1.0/g/NBIRTH/n", nbirth(0, 2, mDouble("a", 1, 1)))
	h.send(t, "spBv1.0/g/NDATA/n", msg(1, byAlias(mDouble("", 2, 5))))
	if r := h.rebirthRequests(); len(r) != 1 {
		t.Errorf("rebirth requests %v for an unknown alias of a table with room, want 1", r)
	}
}

// Nodes that are not born (stray publishers, dead or renamed nodes) do not hold max_nodes
// for ever: a birth takes the place of the longest unborn one; data from an unknown node does
// only once that one's rebirth request is older than rebirth_interval, so that its rate
// limit holds. Born nodes keep their places.
func TestBirthTakesThePlaceOfAnUnbornNode(t *testing.T) {
	h := newTestHost(t, Config{MaxNodes: 2, RebirthInterval: 10 * time.Second})
	h.send(t, "spBv1.0/g/NDATA/stray-1", msg(5, byAlias(mDouble("", 1, 1))))
	h.send(t, "spBv1.0/g/NDATA/stray-2", msg(5, byAlias(mDouble("", 1, 1))))
	h.rebirthRequests()

	// Data from a third unknown node within the interval: no place, no request.
	h.send(t, "spBv1.0/g/NDATA/stray-3", msg(5, byAlias(mDouble("", 1, 1))))
	if r := h.rebirthRequests(); len(r) != 0 {
		t.Errorf("rebirth requests %v for a node without a place", r)
	}
	if c := testutil.ToFloat64(h.m.nodesOverLimit); c != 1 {
		t.Errorf("nodes over limit = %v, want 1", c)
	}

	pts := h.send(t, "spBv1.0/g/NBIRTH/real", nbirth(0, 1, mDouble("t", 1, 20)))
	checkPoints(t, pts, want{"g", "real", "t", telemetry.Float(20), telemetry.Good, 0})
	if _, ok := h.nodes[nodeKey{"g", "stray-1"}]; ok {
		t.Errorf("the birth did not take the place of the longest unborn node stray-1")
	}

	// After the interval, data from an unknown node takes stray-2's place and asks.
	h.clock = h.clock.Add(10 * time.Second)
	h.send(t, "spBv1.0/g/NDATA/late", msg(5, byAlias(mDouble("", 1, 1))))
	if r := h.rebirthRequests(); len(r) != 1 || r[0] != (rebirthRequest{"g", "late"}) {
		t.Errorf("rebirth requests %v, want one to g/late", r)
	}
	// A born node is never replaced; a dead one is.
	h.send(t, "spBv1.0/g/NBIRTH/late", nbirth(0, 1))
	h.send(t, "spBv1.0/g/NBIRTH/new", nbirth(0, 1))
	if _, ok := h.nodes[nodeKey{"g", "new"}]; ok || len(h.nodes) != 2 {
		t.Errorf("a birth took the place of a born node: %d nodes", len(h.nodes))
	}
	h.send(t, "spBv1.0/g/NDEATH/real", &pb.Payload{Metrics: []*pb.Payload_Metric{mLong(bdSeqMetric, 0, pb.DataType_Int64, 1)}})
	if pts := h.send(t, "spBv1.0/g/NBIRTH/new", nbirth(0, 1, mDouble("t", 1, 1))); len(pts) != 1 {
		t.Errorf("a birth did not take the place of a dead node: %d points", len(pts))
	}
	if e := testutil.ToFloat64(h.m.nodesEvicted); e != 3 || len(h.nodes) != 2 {
		t.Errorf("nodes evicted = %v with %d nodes, want 3 and 2", e, len(h.nodes))
	}
}

// BenchmarkHostData measures the whole hot path of the host: an NDATA of 100 Double metrics
// by alias, decoded, resolved and turned into points.
func BenchmarkHostData(b *testing.B) {
	h := newTestHost(b, Config{})
	birth := nbirth(0, 1)
	for i := range 100 {
		birth.Metrics = append(birth.Metrics, mDouble("Motor/Signal"+string(rune('A'+i%26))+string(rune('a'+i/26)), uint64(i+1), 0))
	}
	if _, err := h.Decode("spBv1.0/g/NBIRTH/n", marshal(b, birth), recv, nil); err != nil {
		b.Fatal(err)
	}
	payloads := make([][]byte, 256)
	for i := range payloads {
		payloads[i] = dataPayload(b, uint64(i), 100)
	}
	dst := make([]telemetry.Point, 0, 100)
	b.ReportAllocs()
	n := 1
	for b.Loop() {
		pts, err := h.Decode("spBv1.0/g/NDATA/n", payloads[n&255], recv, dst[:0])
		if err != nil || len(pts) != 100 {
			b.Fatalf("%d points, %v", len(pts), err)
		}
		n++
	}
	b.ReportMetric(float64(b.N)*100/b.Elapsed().Seconds(), "metrics/s")
	if g := testutil.ToFloat64(h.m.seqGaps); g != 0 {
		b.Fatalf("%v seq gaps", g)
	}
}
