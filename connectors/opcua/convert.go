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
	if it.arrays == ArraysSkip {
		cv.drop(dropArraySkipped, 1)
		return dst
	}
	if rv.Len() == 0 {
		cv.drop(dropNoValue, 1) // an empty array: a sample without a value
		return dst
	}
	// A multi-dimensional array (ArrayDimensions, Part 6, 5.2.2.16) arrives as nested
	// slices: its elements are flattened in order and named signal[i][j]...
	var idx [maxArrayRank]int
	budget := cv.maxArray
	return cv.appendElements(dst, it, &p, rv, idx[:0], &budget)
}

// maxArrayRank bounds the dimensions of an array the conversion walks; a deeper one is
// counted as unsupported.
const maxArrayRank = 8

// appendElements appends the points of the elements of array rv, whose indices so far are
// idx, while budget allows; the elements past the budget are counted as truncated.
func (cv *conversion) appendElements(dst []telemetry.Point, it *item, p *telemetry.Point, rv reflect.Value, idx []int, budget *int) []telemetry.Point {
	for i := range rv.Len() {
		e := rv.Index(i)
		if e.Kind() == reflect.Slice && e.Type() != reflect.TypeFor[[]byte]() {
			if len(idx)+1 >= maxArrayRank {
				cv.drop(dropUnsupported, leaves(e))
				continue
			}
			dst = cv.appendElements(dst, it, p, e, append(idx, i), budget)
			continue
		}
		if *budget <= 0 {
			cv.drop(dropArrayTruncated, 1)
			continue
		}
		v, ok := scalar(e.Interface())
		if !ok {
			cv.drop(dropUnsupported, 1)
			continue
		}
		*budget--
		q := *p
		q.Signal = it.element(append(idx, i), cv.names)
		q.Value = v
		dst = append(dst, q)
	}
	return dst
}

// leaves counts the elements of a (nested) array.
func leaves(rv reflect.Value) int {
	if rv.Kind() != reflect.Slice || rv.Type() == reflect.TypeFor[[]byte]() {
		return 1
	}
	n := 0
	for i := range rv.Len() {
		n += leaves(rv.Index(i))
	}
	return n
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

// element returns the signal name of the array element at idx, "signal[i]" (or
// "signal[i][j]" in a multi-dimensional array), interned.
func (it *item) element(idx []int, in *telemetry.Interner) string {
	var buf [128]byte
	b := append(buf[:0], it.names.signal...)
	for _, i := range idx {
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, ']')
	}
	if in != nil {
		return in.Bytes(b)
	}
	return string(b)
}
