package opcua

import (
	"math"
	"reflect"
	"strconv"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

// Status code bits (OPC-UA Part 4, 7.39): the severity in the top two bits, the info type
// in bits 10-11 and, for the DataValue info type, the Overflow bit 7.
const (
	severityMask      = 0xC0000000
	severityGood      = 0x00000000
	severityUncertain = 0x40000000
	infoTypeMask      = 0x00000C00
	infoTypeData      = 0x00000400
	overflowBit       = 0x00000080
)

// quality maps an OPC-UA StatusCode to a telemetry quality, keeping the raw code.
func quality(code ua.StatusCode) telemetry.Quality {
	c := uint32(code)
	level := telemetry.Bad
	switch c & severityMask {
	case severityGood:
		level = telemetry.Good
	case severityUncertain:
		level = telemetry.Uncertain
	}
	return telemetry.Quality{Level: level, Code: c}
}

// overflowed reports whether the status says the server's queue dropped samples.
func overflowed(code ua.StatusCode) bool {
	c := uint32(code)
	return c&infoTypeMask == infoTypeData && c&overflowBit != 0
}

// conversion holds what converting values needs besides the item: the array policy and
// bound, the interner for element signal names, and the drop counts of the current call.
type conversion struct {
	maxArray int
	names    *telemetry.Interner
	now      int64 // receive time, Unix ns: the server time when the server gives none
	drops    map[string]int
	overflow int
}

func (cv *conversion) drop(reason string, n int) {
	if cv.drops == nil {
		cv.drops = make(map[string]int, 2)
	}
	cv.drops[reason] += n
}

// appendValue appends the points of one data value of item it to dst.
func (cv *conversion) appendValue(dst []telemetry.Point, it *item, dv *ua.DataValue) []telemetry.Point {
	if dv == nil {
		cv.drop(dropNoValue, 1)
		return dst
	}
	if overflowed(dv.Status) {
		cv.overflow++
	}
	p := telemetry.Point{
		Factory:    it.names.factory,
		Line:       it.names.line,
		Machine:    it.names.machine,
		Signal:     it.names.signal,
		SourceTime: unixNano(dv.SourceTimestamp),
		ServerTime: unixNano(dv.ServerTimestamp),
		Quality:    quality(dv.Status),
	}
	if p.ServerTime == 0 {
		p.ServerTime = cv.now
	}
	if dv.Value == nil || dv.Value.Value() == nil {
		cv.drop(dropNoValue, 1)
		return dst
	}
	raw := dv.Value.Value()
	if v, ok := scalar(raw); ok {
		p.Value = v
		return append(dst, p)
	}
	rv := reflect.ValueOf(raw)
	if rv.Kind() != reflect.Slice || rv.Type() == reflect.TypeFor[[]byte]() {
		cv.drop(dropUnsupported, 1)
		return dst
	}
	n := rv.Len()
	if it.arrays == ArraysSkip {
		cv.drop(dropArraySkipped, 1)
		return dst
	}
	if n > cv.maxArray {
		cv.drop(dropArrayTruncated, n-cv.maxArray)
		n = cv.maxArray
	}
	for i := range n {
		v, ok := scalar(rv.Index(i).Interface())
		if !ok {
			cv.drop(dropUnsupported, 1)
			continue
		}
		q := p
		q.Signal = it.element(i, cv.names)
		q.Value = v
		dst = append(dst, q)
	}
	return dst
}

// scalar converts the Go value of a scalar variant: every numeric type, bool and string.
func scalar(v any) (telemetry.Value, bool) {
	switch x := v.(type) {
	case float64:
		return telemetry.Float(x), true
	case float32:
		return telemetry.Float(float64(x)), true
	case int32:
		return telemetry.Int(int64(x)), true
	case int64:
		return telemetry.Int(x), true
	case int16:
		return telemetry.Int(int64(x)), true
	case int8:
		return telemetry.Int(int64(x)), true
	case uint8:
		return telemetry.Int(int64(x)), true
	case uint16:
		return telemetry.Int(int64(x)), true
	case uint32:
		return telemetry.Int(int64(x)), true
	case uint64:
		if x > math.MaxInt64 {
			return telemetry.Float(float64(x)), true
		}
		return telemetry.Int(int64(x)), true
	case bool:
		return telemetry.Bool(x), true
	case string:
		return telemetry.String(x), true
	case *ua.LocalizedText:
		if x == nil {
			return telemetry.Value{}, false
		}
		return telemetry.String(x.Text), true
	}
	return telemetry.Value{}, false
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// element returns the signal name of array element i, "signal[i]", interned.
func (it *item) element(i int, in *telemetry.Interner) string {
	var buf [128]byte
	b := append(buf[:0], it.names.signal...)
	b = append(b, '[')
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, ']')
	if in != nil {
		return in.Bytes(b)
	}
	return string(b)
}
