package influxdb

import (
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

// Limits of InfluxDB's line protocol (models package of InfluxDB 1.8 and 2.x).
const (
	// minTime and maxTime bound the timestamps InfluxDB accepts (models.MinNanoTime and
	// models.MaxNanoTime).
	minTime = math.MinInt64 + 2
	maxTime = math.MaxInt64 - 1
	// maxKeyLength bounds measurement, tags, a 4-byte separator and a field key together.
	maxKeyLength = 65535
	// fieldKeySeparatorLen is the length of the separator InfluxDB puts between a series key
	// and a field key when it checks maxKeyLength.
	fieldKeySeparatorLen = 4
)

// Rejection classes the encoder and the sink report (connectors.Rejection.Class).
const (
	ClassNotFinite    = "not_finite"
	ClassNoTimestamp  = "no_timestamp"
	ClassTimeRange    = "time_out_of_range"
	ClassMissingTag   = "missing_tag"
	ClassInvalidName  = "invalid_name"
	ClassKeyTooLong   = "key_too_long"
	ClassInvalidValue = "invalid_value"
	ClassTypeConflict = "type_conflict"
	ClassUnparsable   = "unparsable"
	ClassRetention    = "beyond_retention"
	ClassTooLarge     = "too_large"
	ClassRefused      = "refused"
)

// PointError is why the encoder refused a point: InfluxDB could never store it as it is.
type PointError struct {
	// Class is a short, bounded reason class (one of the Class constants).
	Class string
	// Reason is the human-readable reason.
	Reason string
}

func (e *PointError) Error() string { return e.Reason }

// Refusals without details are allocated once, so refusing them costs nothing.
var (
	errNoTime     = &PointError{ClassNoTimestamp, "the point has neither a source nor a server timestamp"}
	errNoMachine  = &PointError{ClassMissingTag, "the point has no machine"}
	errNoSignal   = &PointError{ClassMissingTag, "the point has no signal"}
	errNaN        = &PointError{ClassNotFinite, "the value is NaN, which InfluxDB cannot store"}
	errInf        = &PointError{ClassNotFinite, "the value is infinite, which InfluxDB cannot store"}
	errTimeRange  = &PointError{ClassTimeRange, fmt.Sprintf("the timestamp is outside the range InfluxDB stores (%d to %d ns)", int64(minTime), int64(maxTime))}
	errKeyTooLong = &PointError{ClassKeyTooLong, fmt.Sprintf("measurement and tags are longer than the %d bytes InfluxDB allows for a series key", maxKeyLength)}
)

// Field keys of the layout (see the package documentation).
const (
	fieldFloat      = "value"
	fieldInt        = "value_int"
	fieldBool       = "value_bool"
	fieldString     = "value_str"
	fieldQuality    = "quality"
	fieldStatus     = "status"
	fieldServerTime = "server_time"
)

// Encoder appends points as InfluxDB line protocol in the layout the package documents.
// It holds no mutable state and is safe for concurrent use.
type Encoder struct {
	measurement []byte // escaped
}

// NewEncoder returns an encoder that writes points to measurement. It fails when the
// measurement cannot be written in line protocol (see ValidateMeasurement).
func NewEncoder(measurement string) (*Encoder, error) {
	if err := ValidateMeasurement(measurement); err != nil {
		return nil, err
	}
	return &Encoder{measurement: appendEscaped(nil, measurement, false)}, nil
}

// ValidateMeasurement reports whether measurement can be written in line protocol: it must
// be non-empty valid UTF-8 without line breaks, must not start with '#' (the line would be a
// comment), a tab or NUL (skipped as white space), must not end in a backslash nor hold one
// right before a comma, equals sign or space.
func ValidateMeasurement(measurement string) error {
	if measurement == "" {
		return fmt.Errorf("the measurement is empty")
	}
	if measurement[0] == '#' {
		return fmt.Errorf("measurement %q starts with '#', which makes every line a comment that InfluxDB ignores", measurement)
	}
	if measurement[0] == '\t' || measurement[0] == 0 {
		return fmt.Errorf("measurement %q starts with a tab or NUL, which InfluxDB skips", measurement)
	}
	if err := checkName("measurement", measurement); err != nil {
		return err
	}
	return nil
}

// Append appends p's line, ending in '\n', to dst and returns the extended slice. When p can
// never be stored in InfluxDB it returns dst unchanged and a *PointError. Encoding a point
// allocates nothing once dst has room.
func (e *Encoder) Append(dst []byte, p *telemetry.Point) ([]byte, error) {
	if p.Machine == "" {
		return dst, errNoMachine
	}
	if p.Signal == "" {
		return dst, errNoSignal
	}
	ts := p.Time()
	if ts == 0 {
		return dst, errNoTime
	}
	if ts < minTime || ts > maxTime {
		return dst, errTimeRange
	}
	var valueKey string
	switch p.Value.Kind {
	case telemetry.KindFloat:
		f := p.Value.Float()
		if math.IsNaN(f) {
			return dst, errNaN
		}
		if math.IsInf(f, 0) {
			return dst, errInf
		}
		valueKey = fieldFloat
	case telemetry.KindInt:
		valueKey = fieldInt
	case telemetry.KindBool:
		valueKey = fieldBool
	case telemetry.KindString:
		valueKey = fieldString
	default:
		return dst, &PointError{ClassInvalidValue, fmt.Sprintf("the value has no valid kind (kind %d)", p.Value.Kind)}
	}
	var quality string
	switch p.Quality.Level {
	case telemetry.Good:
		quality = `"good"`
	case telemetry.Uncertain:
		quality = `"uncertain"`
	case telemetry.Bad:
		quality = `"bad"`
	default:
		return dst, &PointError{ClassInvalidValue, fmt.Sprintf("the quality level %d is not good, uncertain or bad", p.Quality.Level)}
	}
	if err := checkTags(p); err != nil {
		return dst, err
	}

	start := len(dst)
	dst = append(dst, e.measurement...)
	if p.Factory != "" {
		dst = append(dst, ",factory="...)
		dst = appendEscaped(dst, p.Factory, true)
	}
	if p.Line != "" {
		dst = append(dst, ",line="...)
		dst = appendEscaped(dst, p.Line, true)
	}
	dst = append(dst, ",machine="...)
	dst = appendEscaped(dst, p.Machine, true)
	dst = append(dst, ",signal="...)
	dst = appendEscaped(dst, p.Signal, true)

	// InfluxDB checks every series key plus field key against maxKeyLength.
	longest := max(len(valueKey), len(fieldQuality))
	if p.SourceTime != 0 && p.ServerTime != 0 {
		longest = len(fieldServerTime)
	}
	if len(dst)-start+fieldKeySeparatorLen+longest > maxKeyLength {
		return dst[:start], errKeyTooLong
	}

	dst = append(dst, ' ')
	dst = append(dst, valueKey...)
	dst = append(dst, '=')
	switch p.Value.Kind {
	case telemetry.KindFloat:
		dst = strconv.AppendFloat(dst, p.Value.Float(), 'g', -1, 64)
	case telemetry.KindInt:
		dst = strconv.AppendInt(dst, p.Value.Int(), 10)
		dst = append(dst, 'i')
	case telemetry.KindBool:
		dst = strconv.AppendBool(dst, p.Value.Bool())
	case telemetry.KindString:
		dst = append(dst, '"')
		dst = appendStringField(dst, p.Value.Str)
		dst = append(dst, '"')
	}
	dst = append(dst, ","+fieldQuality+"="...)
	dst = append(dst, quality...)
	if p.Quality.Code != 0 {
		dst = append(dst, ","+fieldStatus+"="...)
		dst = strconv.AppendUint(dst, uint64(p.Quality.Code), 10)
		dst = append(dst, 'i')
	}
	if p.SourceTime != 0 && p.ServerTime != 0 {
		dst = append(dst, ","+fieldServerTime+"="...)
		dst = strconv.AppendInt(dst, p.ServerTime, 10)
		dst = append(dst, 'i')
	}
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, '\n')
	return dst, nil
}

// checkTags checks the four names; it allocates only when it refuses one.
func checkTags(p *telemetry.Point) error {
	if err := checkName("factory", p.Factory); err != nil {
		return err
	}
	if err := checkName("line", p.Line); err != nil {
		return err
	}
	if err := checkName("machine", p.Machine); err != nil {
		return err
	}
	return checkName("signal", p.Signal)
}

// checkName reports whether s can be written as a measurement or tag value such that
// InfluxDB reads back exactly s. InfluxDB's scanner treats any byte after a backslash as
// escaped, so a backslash cannot end a name or precede a character that needs escaping.
func checkName(what, s string) error {
	ascii := true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= utf8.RuneSelf:
			ascii = false // multi-byte sequences hold no ASCII bytes; checked below
		case c == '\n' || c == '\r':
			return &PointError{ClassInvalidName, fmt.Sprintf("%s %q holds a line break, which line protocol cannot carry in a name", what, s)}
		case c == '\\':
			if i+1 == len(s) {
				return &PointError{ClassInvalidName, fmt.Sprintf("%s %q ends in a backslash, which line protocol cannot represent", what, s)}
			}
			if n := s[i+1]; n == ',' || n == '=' || n == ' ' {
				return &PointError{ClassInvalidName, fmt.Sprintf("%s %q has a backslash before %q, which line protocol cannot represent", what, s, n)}
			}
		}
	}
	if !ascii && !utf8.ValidString(s) {
		return &PointError{ClassInvalidName, fmt.Sprintf("%s %q is not valid UTF-8", what, s)}
	}
	return nil
}

// appendEscaped appends a measurement (tag false: commas and spaces escaped) or a tag value
// (tag true: commas, equals signs and spaces escaped).
func appendEscaped(dst []byte, s string, tag bool) []byte {
	last := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ',' || c == ' ' || (tag && c == '=') {
			dst = append(dst, s[last:i]...)
			dst = append(dst, '\\', c)
			last = i + 1
		}
	}
	return append(dst, s[last:]...)
}

// appendStringField appends s with double quotes and backslashes escaped.
func appendStringField(dst []byte, s string) []byte {
	last := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			dst = append(dst, s[last:i]...)
			dst = append(dst, '\\', c)
			last = i + 1
		}
	}
	return append(dst, s[last:]...)
}
