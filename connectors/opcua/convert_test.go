package opcua

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

func TestQualityMapping(t *testing.T) {
	tests := []struct {
		code     ua.StatusCode
		level    telemetry.Level
		overflow bool
	}{
		{ua.StatusOK, telemetry.Good, false},
		{ua.StatusGoodClamped, telemetry.Good, false},
		{ua.StatusUncertainLastUsableValue, telemetry.Uncertain, false},
		{ua.StatusBadSensorFailure, telemetry.Bad, false},
		{ua.StatusBadNodeIDUnknown, telemetry.Bad, false},
		{0x00000480, telemetry.Good, true}, // Good, DataValue info type, Overflow
		{ua.StatusUncertainLastUsableValue | 0x480, telemetry.Uncertain, true},
		{0x00000080, telemetry.Good, false}, // overflow bit without the DataValue info type
	}
	for _, tt := range tests {
		q := quality(tt.code)
		if q.Level != tt.level || q.Code != uint32(tt.code) || overflowed(tt.code) != tt.overflow {
			t.Errorf("%#x: quality %+v overflow %v; want %v, code kept, overflow %v", uint32(tt.code), q, overflowed(tt.code), tt.level, tt.overflow)
		}
	}
}

func TestAppendValueTypes(t *testing.T) {
	it := &item{names: names{machine: "m", signal: "s"}, arrays: ArraysFlatten}
	tests := []struct {
		v    any
		want telemetry.Value
	}{
		{float64(1.5), telemetry.Float(1.5)},
		{float32(2.5), telemetry.Float(2.5)},
		{int8(-3), telemetry.Int(-3)},
		{uint8(3), telemetry.Int(3)},
		{int16(-4), telemetry.Int(-4)},
		{uint16(4), telemetry.Int(4)},
		{int32(-5), telemetry.Int(-5)},
		{uint32(5), telemetry.Int(5)},
		{int64(-6), telemetry.Int(-6)},
		{uint64(6), telemetry.Int(6)},
		{uint64(math.MaxUint64), telemetry.Float(float64(uint64(math.MaxUint64)))},
		{true, telemetry.Bool(true)},
		{"x", telemetry.String("x")},
	}
	for _, tt := range tests {
		cv := conversion{maxArray: 4, now: 1}
		pts := cv.appendValue(nil, it, &ua.DataValue{Value: ua.MustVariant(tt.v)})
		if len(pts) != 1 || pts[0].Value != tt.want || pts[0].ServerTime != 1 {
			t.Errorf("%T %v -> %+v, want %v with the receive time", tt.v, tt.v, pts, tt.want)
		}
	}
	cv := conversion{maxArray: 2}
	pts := cv.appendValue(nil, it, &ua.DataValue{Value: ua.MustVariant([]int32{1, 2, 3})})
	if len(pts) != 2 || pts[1].Signal != "s[1]" || pts[1].Value.Int() != 2 || cv.drops[dropArrayTruncated] != 1 {
		t.Errorf("array: %+v drops %v", pts, cv.drops)
	}
	pts = cv.appendValue(nil, it, &ua.DataValue{Value: ua.MustVariant(time.Now())})
	if len(pts) != 0 || cv.drops[dropUnsupported] != 1 {
		t.Errorf("DateTime: %+v drops %v; want skipped and counted", pts, cv.drops)
	}
}

// FuzzVariantToPoints feeds arbitrary bytes, decoded as an OPC-UA DataValue the way they
// arrive from a server, through the conversion: it must never panic, and every point it
// makes must carry a valid kind and the item's names.
func FuzzVariantToPoints(f *testing.F) {
	for _, v := range []any{1.5, int32(7), true, "s", []float64{1, 2}, []string{"a"}, uint64(1 << 63), time.Unix(0, 0)} {
		dv := &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueStatusCode | ua.DataValueSourceTimestamp,
			Value: ua.MustVariant(v), Status: ua.StatusUncertainLastUsableValue, SourceTimestamp: time.Unix(1, 0)}
		b, err := dv.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
	}
	f.Fuzz(func(t *testing.T, data []byte, skip bool) {
		dv, ok := decodeDataValue(data)
		if !ok {
			return
		}
		it := &item{names: names{machine: "m", signal: "s"}, arrays: ArraysFlatten}
		if skip {
			it.arrays = ArraysSkip
		}
		cv := conversion{maxArray: 16, names: telemetry.NewInterner(64), now: 42}
		pts := cv.appendValue(nil, it, &dv)
		if len(pts) > 16 {
			t.Fatalf("%d points from one value, more than max_array_elements", len(pts))
		}
		for _, p := range pts {
			if p.Value.Kind < telemetry.KindFloat || p.Value.Kind > telemetry.KindString || p.Machine != "m" || p.ServerTime == 0 {
				t.Fatalf("bad point %+v", p)
			}
			if skip && p.Signal != "s" {
				t.Fatalf("array element %q with arrays: skip", p.Signal)
			}
		}
	})
}

// decodeDataValue decodes with gopcua's decoder, which panics on some malformed input (a
// negative array length: reflect.MakeSlice in ua.Variant.Decode, v0.8.0); that is the
// library's bug, reported, not the conversion's, so the fuzz target skips such input.
func decodeDataValue(data []byte) (dv ua.DataValue, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	_, err := dv.Decode(data)
	return dv, err == nil
}

// TestAppendValueMultiDimensionalArray: a matrix (a Variant with ArrayDimensions, which
// gopcua decodes into nested slices) is flattened element by element into signal[i][j],
// within max_array_elements, and an empty array, a sample without a value, is counted.
func TestAppendValueMultiDimensionalArray(t *testing.T) {
	it := &item{names: names{machine: "m", signal: "s"}, arrays: ArraysFlatten}
	wire := func(v any) *ua.DataValue {
		b, err := (&ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(v)}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		var dv ua.DataValue
		if _, err := dv.Decode(b); err != nil {
			t.Fatal(err)
		}
		return &dv
	}
	cv := conversion{maxArray: 5}
	pts := cv.appendValue(nil, it, wire([][]int32{{1, 2, 3}, {4, 5, 6}}))
	var got []string
	for _, p := range pts {
		got = append(got, fmt.Sprintf("%s=%d", p.Signal, p.Value.Int()))
	}
	want := "s[0][0]=1 s[0][1]=2 s[0][2]=3 s[1][0]=4 s[1][1]=5"
	if strings.Join(got, " ") != want || cv.drops[dropArrayTruncated] != 1 || cv.drops[dropUnsupported] != 0 {
		t.Errorf("matrix -> %v drops %v; want %s and 1 truncated", got, cv.drops, want)
	}
	cv = conversion{maxArray: 5}
	if pts := cv.appendValue(nil, it, wire([]float64{})); len(pts) != 0 || cv.drops[dropNoValue] != 1 {
		t.Errorf("empty array -> %+v drops %v; want no point and 1 no_value drop", pts, cv.drops)
	}
}
