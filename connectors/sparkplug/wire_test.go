package sparkplug

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/millwright-io/millwright/connectors/sparkplug/sparkplugpb"
)

// metric builders for tests.
func mInt(name string, alias uint64, dt pb.DataType, v uint32) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Datatype: proto.Uint32(uint32(dt)), Value: &pb.Payload_Metric_IntValue{IntValue: v}}
	named(m, name, alias)
	return m
}

func mLong(name string, alias uint64, dt pb.DataType, v uint64) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Datatype: proto.Uint32(uint32(dt)), Value: &pb.Payload_Metric_LongValue{LongValue: v}}
	named(m, name, alias)
	return m
}

func mDouble(name string, alias uint64, v float64) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Datatype: proto.Uint32(uint32(pb.DataType_Double)), Value: &pb.Payload_Metric_DoubleValue{DoubleValue: v}}
	named(m, name, alias)
	return m
}

func mFloat(name string, alias uint64, v float32) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Datatype: proto.Uint32(uint32(pb.DataType_Float)), Value: &pb.Payload_Metric_FloatValue{FloatValue: v}}
	named(m, name, alias)
	return m
}

func mBool(name string, alias uint64, v bool) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Datatype: proto.Uint32(uint32(pb.DataType_Boolean)), Value: &pb.Payload_Metric_BooleanValue{BooleanValue: v}}
	named(m, name, alias)
	return m
}

func mString(name string, alias uint64, v string) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Datatype: proto.Uint32(uint32(pb.DataType_String)), Value: &pb.Payload_Metric_StringValue{StringValue: v}}
	named(m, name, alias)
	return m
}

// named sets the name (if not empty) and the alias (if not 0).
func named(m *pb.Payload_Metric, name string, alias uint64) {
	if name != "" {
		m.Name = proto.String(name)
	}
	if alias != 0 {
		m.Alias = proto.Uint64(alias)
	}
}

func marshal(t testing.TB, p *pb.Payload) []byte {
	t.Helper()
	b, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// crossCheck decodes b with the wire decoder and with the generated code and reports the
// first difference. The wire decoder must accept whatever the generated code accepts.
func crossCheck(b []byte) error {
	var want pb.Payload
	genErr := proto.Unmarshal(b, &want)
	var p Payload
	err := p.Unmarshal(b)
	var got []Metric
	if err == nil {
		for {
			var m Metric
			ok, merr := p.NextMetric(&m)
			if merr != nil {
				err = merr
				break
			}
			if !ok {
				break
			}
			got = append(got, m)
		}
	}
	if err != nil && !errors.Is(err, errMalformed) {
		return errors.New("wire error does not wrap errMalformed: " + err.Error())
	}
	if genErr != nil {
		return nil // the wire decoder may accept more (it skips nested messages it does not use)
	}
	if err != nil {
		return errors.New("generated code accepts, wire decoder refuses: " + err.Error())
	}
	switch {
	case p.HasTimestamp() != (want.Timestamp != nil) || p.Timestamp != want.GetTimestamp():
		return errors.New("timestamp differs")
	case p.HasSeq() != (want.Seq != nil) || p.Seq != want.GetSeq():
		return errors.New("seq differs")
	case string(p.UUID) != want.GetUuid() || !bytes.Equal(p.Body, want.GetBody()):
		return errors.New("uuid or body differs")
	case len(got) != len(want.Metrics) || p.Metrics != len(want.Metrics):
		return errors.New("metric count differs")
	}
	for i, w := range want.Metrics {
		g := &got[i]
		switch {
		case g.HasName() != (w.Name != nil) || string(g.Name) != w.GetName():
			return errors.New("name differs")
		case g.HasAlias() != (w.Alias != nil) || g.Alias != w.GetAlias():
			return errors.New("alias differs")
		case g.HasTimestamp() != (w.Timestamp != nil) || g.Timestamp != w.GetTimestamp():
			return errors.New("metric timestamp differs")
		case g.HasDatatype() != (w.Datatype != nil) || g.Datatype != w.GetDatatype():
			return errors.New("datatype differs")
		case g.IsNull != w.GetIsNull() || g.IsHistorical != w.GetIsHistorical() || g.IsTransient != w.GetIsTransient():
			return errors.New("flags differ")
		}
		if q, ok := genQuality(w.GetProperties()); g.HasQuality() != ok || g.Quality != q {
			return fmt.Errorf("quality differs: %d %v, generated %d %v", g.Quality, g.HasQuality(), q, ok)
		}
		var ok bool
		switch v := w.Value.(type) {
		case nil:
			ok = g.Value == 0
		case *pb.Payload_Metric_IntValue:
			ok = g.Value == fieldMetricInt && g.Bits == uint64(v.IntValue)
		case *pb.Payload_Metric_LongValue:
			ok = g.Value == fieldMetricLong && g.Bits == v.LongValue
		case *pb.Payload_Metric_FloatValue:
			ok = g.Value == fieldMetricFloat && uint32(g.Bits) == math.Float32bits(v.FloatValue)
		case *pb.Payload_Metric_DoubleValue:
			ok = g.Value == fieldMetricDouble && g.Bits == math.Float64bits(v.DoubleValue)
		case *pb.Payload_Metric_BooleanValue:
			ok = g.Value == fieldMetricBoolean && (g.Bits != 0) == v.BooleanValue
		case *pb.Payload_Metric_StringValue:
			ok = g.Value == fieldMetricString && string(g.Bytes) == v.StringValue
		case *pb.Payload_Metric_BytesValue:
			ok = g.Value == fieldMetricBytes && bytes.Equal(g.Bytes, v.BytesValue)
		case *pb.Payload_Metric_DatasetValue:
			ok = g.Value == fieldMetricDataSet
		case *pb.Payload_Metric_TemplateValue:
			ok = g.Value == fieldMetricTemplate
		case *pb.Payload_Metric_ExtensionValue:
			ok = g.Value == fieldMetricExtension
		}
		if !ok {
			return errors.New("value differs")
		}
	}
	return nil
}

// genQuality returns the integer value of the property "Quality" of a generated property set.
func genQuality(ps *pb.Payload_PropertySet) (uint64, bool) {
	for i, k := range ps.GetKeys() {
		if k != qualityProperty {
			continue
		}
		if i >= len(ps.GetValues()) || ps.GetValues()[i].GetIsNull() {
			return 0, false
		}
		switch v := ps.GetValues()[i].GetValue().(type) {
		case *pb.Payload_PropertyValue_IntValue:
			return uint64(v.IntValue), true
		case *pb.Payload_PropertyValue_LongValue:
			return v.LongValue, true
		}
		return 0, false
	}
	return 0, false
}

// samplePayloads are valid payloads of every shape the host handles.
func samplePayloads(t testing.TB) [][]byte {
	full := &pb.Payload{
		Timestamp: proto.Uint64(1700000000123),
		Seq:       proto.Uint64(7),
		Uuid:      proto.String("u-1"),
		Body:      []byte{1, 2, 3},
		Metrics: []*pb.Payload_Metric{
			mInt("Motor/Temp", 1, pb.DataType_Int32, uint32(0xFFFFFFFF)),
			mLong("Counter", 2, pb.DataType_UInt64, math.MaxUint64),
			mDouble("Pressure", 3, 4.25),
			mFloat("Speed", 4, 1480.5),
			mBool("Running", 5, true),
			mString("Mode", 6, "auto"),
			{Name: proto.String("Blob"), Datatype: proto.Uint32(uint32(pb.DataType_Bytes)), Value: &pb.Payload_Metric_BytesValue{BytesValue: []byte("xyz")}},
			{Name: proto.String("Table"), Datatype: proto.Uint32(uint32(pb.DataType_DataSet)), Value: &pb.Payload_Metric_DatasetValue{DatasetValue: &pb.Payload_DataSet{
				NumOfColumns: proto.Uint64(1), Columns: []string{"a"}, Types: []uint32{uint32(pb.DataType_Int32)},
				Rows: []*pb.Payload_DataSet_Row{{Elements: []*pb.Payload_DataSet_DataSetValue{{Value: &pb.Payload_DataSet_DataSetValue_IntValue{IntValue: 1}}}}},
			}}},
			{Name: proto.String("UDT"), Datatype: proto.Uint32(uint32(pb.DataType_Template)), Value: &pb.Payload_Metric_TemplateValue{TemplateValue: &pb.Payload_Template{
				TemplateRef: proto.String("Motor"), Metrics: []*pb.Payload_Metric{mDouble("x", 0, 1)},
			}}},
			{Name: proto.String("Nothing"), Datatype: proto.Uint32(uint32(pb.DataType_Double)), IsNull: proto.Bool(true)},
			{Alias: proto.Uint64(9), Timestamp: proto.Uint64(1700000000100), IsHistorical: proto.Bool(true), IsTransient: proto.Bool(true),
				Properties: &pb.Payload_PropertySet{Keys: []string{"q"}, Values: []*pb.Payload_PropertyValue{{Type: proto.Uint32(3), Value: &pb.Payload_PropertyValue_IntValue{IntValue: 192}}}},
				Metadata:   &pb.Payload_MetaData{ContentType: proto.String("text/plain")},
				Value:      &pb.Payload_Metric_DoubleValue{DoubleValue: -1}},
			{Alias: proto.Uint64(10), Value: &pb.Payload_Metric_DoubleValue{DoubleValue: 2},
				Properties: &pb.Payload_PropertySet{Keys: []string{"engUnit", "Quality"}, Values: []*pb.Payload_PropertyValue{
					{Type: proto.Uint32(12), Value: &pb.Payload_PropertyValue_StringValue{StringValue: "C"}},
					{Type: proto.Uint32(3), Value: &pb.Payload_PropertyValue_IntValue{IntValue: 500}},
				}}},
		},
	}
	return [][]byte{
		marshal(t, full),
		marshal(t, &pb.Payload{}),
		marshal(t, &pb.Payload{Seq: proto.Uint64(0), Metrics: []*pb.Payload_Metric{mLong(bdSeqMetric, 0, pb.DataType_Int64, 3)}}),
		dataPayload(t, 255, 100),
	}
}

// dataPayload is an NDATA-like payload of n Double metrics by alias 1..n, with timestamps.
func dataPayload(t testing.TB, seq uint64, n int) []byte {
	p := &pb.Payload{Timestamp: proto.Uint64(1700000000000), Seq: proto.Uint64(seq)}
	for i := range n {
		m := mDouble("", uint64(i+1), float64(i)*0.5)
		m.Datatype = nil
		m.Timestamp = proto.Uint64(1700000000000 + uint64(i))
		p.Metrics = append(p.Metrics, m)
	}
	return marshal(t, p)
}

func TestWireMatchesGenerated(t *testing.T) {
	for i, b := range samplePayloads(t) {
		if err := crossCheck(b); err != nil {
			t.Errorf("payload %d: %v", i, err)
		}
	}
}

func TestWireOddEncodings(t *testing.T) {
	var b []byte
	// seq twice (the last wins), an unknown field, a known field with the wrong wire type.
	b = protowire.AppendTag(b, fieldPayloadSeq, protowire.VarintType)
	b = protowire.AppendVarint(b, 1)
	b = protowire.AppendTag(b, 99, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 42)
	b = protowire.AppendTag(b, fieldPayloadTimestamp, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("not a varint field"))
	b = protowire.AppendTag(b, fieldPayloadSeq, protowire.VarintType)
	b = protowire.AppendVarint(b, 2)
	// a metric whose value oneof is set twice (the last wins) and whose name is a varint.
	var m []byte
	m = protowire.AppendTag(m, fieldMetricInt, protowire.VarintType)
	m = protowire.AppendVarint(m, 5)
	m = protowire.AppendTag(m, fieldMetricName, protowire.VarintType)
	m = protowire.AppendVarint(m, 5)
	m = protowire.AppendTag(m, fieldMetricDouble, protowire.Fixed64Type)
	m = protowire.AppendFixed64(m, math.Float64bits(2.5))
	b = protowire.AppendTag(b, fieldPayloadMetrics, protowire.BytesType)
	b = protowire.AppendBytes(b, m)
	if err := crossCheck(b); err != nil {
		t.Fatal(err)
	}
	var p Payload
	if err := p.Unmarshal(b); err != nil || p.Seq != 2 || p.HasTimestamp() || p.Metrics != 1 {
		t.Fatalf("Unmarshal = %v, seq %d, has timestamp %v, metrics %d; want seq 2, no timestamp, 1 metric", err, p.Seq, p.HasTimestamp(), p.Metrics)
	}

	// Two property sets in a metric are merged: the key in one, its value in the other.
	var keys, values, vm []byte
	keys = protowire.AppendTag(keys, fieldPropertyKeys, protowire.BytesType)
	keys = protowire.AppendString(keys, qualityProperty)
	vm = protowire.AppendTag(vm, fieldPropertyIntValue, protowire.VarintType)
	vm = protowire.AppendVarint(vm, 500)
	values = protowire.AppendTag(values, fieldPropertyValues, protowire.BytesType)
	values = protowire.AppendBytes(values, vm)
	m = m[:0]
	for _, set := range [][]byte{keys, values} {
		m = protowire.AppendTag(m, fieldMetricProperties, protowire.BytesType)
		m = protowire.AppendBytes(m, set)
	}
	b = protowire.AppendTag(nil, fieldPayloadMetrics, protowire.BytesType)
	b = protowire.AppendBytes(b, m)
	if err := crossCheck(b); err != nil {
		t.Fatal(err)
	}
	var metric Metric
	if err := p.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if ok, err := p.NextMetric(&metric); !ok || err != nil || !metric.HasQuality() || metric.Quality != 500 {
		t.Fatalf("merged property sets: quality %d (present %v), err %v; want 500", metric.Quality, metric.HasQuality(), err)
	}
}

func TestWireMalformed(t *testing.T) {
	good := samplePayloads(t)[0]
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"truncated", good[:len(good)-3]},
		{"bad tag", []byte{0x00}},
		{"bad length", []byte{0x12, 0x7f, 0x01}},
		{"bad varint", []byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"bad metric", []byte{0x12, 0x02, 0x08, 0xff}},
		{"bad property set", []byte{0x12, 0x03, 0x4a, 0x01, 0x00}},
		{"bad quality value", []byte{0x12, 0x0f, 0x4a, 0x0d, 0x0a, 0x07, 'Q', 'u', 'a', 'l', 'i', 't', 'y', 0x12, 0x02, 0x18, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Payload
			err := p.Unmarshal(tc.b)
			if err == nil {
				var m Metric
				for {
					ok, merr := p.NextMetric(&m)
					if merr != nil || !ok {
						err = merr
						break
					}
				}
			}
			if !errors.Is(err, errMalformed) {
				t.Fatalf("err = %v, want errMalformed", err)
			}
			if proto.Unmarshal(tc.b, &pb.Payload{}) == nil {
				t.Fatalf("the generated code accepts it; the case is not malformed")
			}
		})
	}
}

func TestWireRandomPayloads(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		p := &pb.Payload{}
		if r.IntN(2) == 0 {
			p.Timestamp = proto.Uint64(r.Uint64())
		}
		if r.IntN(2) == 0 {
			p.Seq = proto.Uint64(uint64(r.IntN(300)))
		}
		for range r.IntN(20) {
			var m *pb.Payload_Metric
			switch r.IntN(6) {
			case 0:
				m = mInt("i", r.Uint64N(10), pb.DataType_Int16, r.Uint32())
			case 1:
				m = mLong("", r.Uint64N(10), pb.DataType_Int64, r.Uint64())
			case 2:
				m = mDouble("d/x", 0, r.NormFloat64())
			case 3:
				m = mFloat("f", r.Uint64N(3), float32(r.NormFloat64()))
			case 4:
				m = mBool("", 1, r.IntN(2) == 0)
			default:
				m = mString("s", 2, "v")
				m.IsNull = proto.Bool(r.IntN(2) == 0)
			}
			if r.IntN(2) == 0 {
				m.Timestamp = proto.Uint64(r.Uint64())
			}
			p.Metrics = append(p.Metrics, m)
		}
		if err := crossCheck(marshal(t, p)); err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
	}
}

// FuzzDecode checks the wire decoder against the generated code on arbitrary bytes, and
// that the host never fails on them in any other way than with a decode error.
func FuzzDecode(f *testing.F) {
	for _, b := range samplePayloads(f) {
		f.Add(b)
	}
	f.Add([]byte{0x12, 0x02, 0x08, 0xff})
	h := newTestHost(f, Config{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := crossCheck(b); err != nil {
			t.Fatal(err)
		}
		for _, topic := range []string{"spBv1.0/g/NBIRTH/n", "spBv1.0/g/NDATA/n", "spBv1.0/g/DBIRTH/n/d", "spBv1.0/g/DDATA/n/d", "spBv1.0/g/NDEATH/n"} {
			if _, err := h.Decode(topic, b, 1, nil); err != nil && !isDecodeError(err) {
				t.Fatalf("%s: %v", topic, err)
			}
		}
	})
}

// BenchmarkDecode measures the wire decoder alone over an NDATA of 100 Double metrics by
// alias with timestamps, the shape of most Sparkplug traffic.
func BenchmarkDecode(b *testing.B) {
	payload := dataPayload(b, 1, 100)
	var p Payload
	var m Metric
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	var sum uint64
	for b.Loop() {
		if err := p.Unmarshal(payload); err != nil {
			b.Fatal(err)
		}
		for {
			ok, err := p.NextMetric(&m)
			if err != nil {
				b.Fatal(err)
			}
			if !ok {
				break
			}
			sum += m.Bits
		}
	}
	b.ReportMetric(float64(b.N)*100/b.Elapsed().Seconds(), "metrics/s")
	_ = sum
}

// BenchmarkDecodeGenerated is the generated code's Unmarshal over the same payload, for
// comparison.
func BenchmarkDecodeGenerated(b *testing.B) {
	payload := dataPayload(b, 1, 100)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		var p pb.Payload
		if err := proto.Unmarshal(payload, &p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*100/b.Elapsed().Seconds(), "metrics/s")
}
