package mqtt

import (
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

// The classes of DecodeError. They are bounded, so they can label metrics and dead letters.
const (
	ClassPayloadTooLarge = "payload_too_large"
	ClassJSONSyntax      = "json_syntax"
	ClassWrongType       = "wrong_type"
	ClassMissingField    = "missing_field"
	ClassBadTimestamp    = "bad_timestamp"
	ClassNoSignal        = "no_signal"
	ClassTopicMismatch   = "topic_mismatch"
)

// DecodeError is why a message was refused. The message is refused as a whole.
type DecodeError struct {
	// Class is one of the Class* constants.
	Class string
	// Reason names the field, the value found and what was expected.
	Reason string
}

func (e *DecodeError) Error() string { return e.Reason }

// DecoderOptions bound a Decoder.
type DecoderOptions struct {
	// MaxPayloadBytes refuses larger payloads (payload_too_large); 0 means no limit.
	MaxPayloadBytes int
	// MaxPoints refuses messages that decode to more points (payload_too_large); 0 means no
	// limit.
	MaxPoints int
	// Names interns every factory, line, machine and signal name. Share one across the
	// decoders of a source; nil gives the decoder its own, of 10,000 names.
	Names *telemetry.Interner
}

// A Decoder turns the JSON payloads of one Topic into points (the package documentation
// describes the payload shapes). It reuses its parser and buffers, so decoding numeric
// samples allocates nothing once the names are interned. A Decoder is not safe for
// concurrent use: give each goroutine its own.
type Decoder struct {
	pat        pattern
	fixed      [numFields]string
	fields     Payload
	ts         tsFormat
	maxPayload int
	maxPoints  int
	names      *telemetry.Interner

	parser  fastjson.Parser
	name    []byte // the signal name being built
	scratch []byte

	// State of the message being decoded.
	ident  [numFields]string // factory, line, machine and the topic's signal
	recv   int64
	sample int // index of the sample in an array payload, or -1
	err    *DecodeError
}

// NewDecoder returns a decoder for the messages of t. Empty payload fields take their
// defaults; t must be valid (see Topic.Validate).
func NewDecoder(t Topic, opts DecoderOptions) (*Decoder, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("mqtt topic %q: %w", t.Pattern, err)
	}
	pat, _ := parsePattern(t.Pattern) // valid: checked above
	d := &Decoder{
		pat:        pat,
		fields:     t.Payload,
		maxPayload: opts.MaxPayloadBytes,
		maxPoints:  opts.MaxPoints,
		names:      opts.Names,
		sample:     -1,
	}
	d.fields.SetDefaults()
	d.ts, _ = parseTimestampFormat(d.fields.TimestampFormat) // valid: checked above
	if d.names == nil {
		d.names = telemetry.NewInterner(10000)
	}
	for f, v := range [numFields]string{t.Factory, t.Line, t.Machine, t.Signal} {
		if v != "" {
			d.fixed[f] = d.names.String(v)
		}
	}
	return d, nil
}

// Match reports whether the topic name matches the decoder's pattern.
func (d *Decoder) Match(topic string) bool {
	var caps [numFields]string
	return d.pat.match(topic, &caps)
}

// Decode appends the points of one message, received on topic at recvTime (Unix
// nanoseconds), to dst. Every point gets ServerTime recvTime and, when the payload carries a
// timestamp, that as SourceTime (0 otherwise). Every point has a non-empty Machine and
// Signal. On error, which is a *DecodeError, it returns dst unchanged: a message is decoded
// or refused as a whole.
func (d *Decoder) Decode(topic string, payload []byte, recvTime int64, dst []telemetry.Point) ([]telemetry.Point, error) {
	start := len(dst)
	d.err, d.sample, d.recv = nil, -1, recvTime
	dst = d.decode(topic, payload, dst)
	if d.err == nil && d.maxPoints > 0 && len(dst)-start > d.maxPoints {
		d.fail(ClassPayloadTooLarge, "payload decodes to %d points, more than max_batch_points %d", len(dst)-start, d.maxPoints)
	}
	if d.err != nil {
		clear(dst[start:]) // drop references to the names and strings of a refused message
		return dst[:start], d.err
	}
	return dst, nil
}

func (d *Decoder) decode(topic string, payload []byte, dst []telemetry.Point) []telemetry.Point {
	if d.maxPayload > 0 && len(payload) > d.maxPayload {
		d.fail(ClassPayloadTooLarge, "payload is %d bytes, more than max_payload_bytes %d", len(payload), d.maxPayload)
		return dst
	}
	if !d.identify(topic) {
		return dst
	}
	if isBlank(payload) {
		d.fail(ClassJSONSyntax, "payload is empty; expected a JSON value")
		return dst
	}
	v, err := d.parser.ParseBytes(payload)
	if err != nil {
		d.fail(ClassJSONSyntax, "payload is not valid JSON: %v", err)
		return dst
	}
	switch v.Type() {
	case fastjson.TypeObject:
		o, _ := v.Object()
		return d.decodeSample(dst, o)
	case fastjson.TypeArray:
		samples, _ := v.Array()
		if len(samples) == 0 {
			d.fail(ClassNoSignal, "payload is an empty array; expected sample objects")
			return dst
		}
		for i, s := range samples {
			d.sample = i
			if s.Type() != fastjson.TypeObject {
				d.fail(ClassWrongType, "sample [%d] is %s; an array must hold sample objects", i, d.describe(s))
				return dst
			}
			o, _ := s.Object()
			dst = d.decodeSample(dst, o)
			if d.err != nil {
				return dst
			}
		}
		return dst
	case fastjson.TypeNull:
		return dst // a null sample: nothing to store
	}
	// A bare scalar: the topic names the signal, the receive time is the time.
	signal := d.ident[fieldSignal]
	if signal == "" {
		d.fail(ClassNoSignal, "payload is the bare value %s, but topic pattern %q neither captures nor sets a signal; send an object such as {%q: \"temp\", %q: 21.5} or set signal", d.text(v), d.pat.text, d.fields.SignalField, d.fields.ValueField)
		return dst
	}
	val, ok := d.value(v, nil, "payload")
	if !ok {
		return dst
	}
	return append(dst, d.point(signal, 0, telemetry.Quality{}, val))
}

// decodeSample decodes one sample object: a single sample (it has the value field) or an
// object of signals.
func (d *Decoder) decodeSample(dst []telemetry.Point, o *fastjson.Object) []telemetry.Point {
	f := &d.fields
	valueV := o.Get(f.ValueField)
	signalV := o.Get(f.SignalField)
	if valueV == nil && signalV != nil {
		d.fail(ClassMissingField, "%sthe sample has %q %s but no %q field; expected {%q: ..., %q: ...}", d.loc(), f.SignalField, d.text(signalV), f.ValueField, f.SignalField, f.ValueField)
		return dst
	}
	ts := d.timestamp(o.Get(f.TimestampField))
	if d.err != nil {
		return dst
	}
	q := d.quality(o.Get(f.QualityField))
	if d.err != nil {
		return dst
	}
	base := d.ident[fieldSignal]
	if valueV != nil {
		signal := base
		if signalV != nil && signalV.Type() != fastjson.TypeNull {
			sb, err := signalV.StringBytes()
			switch {
			case err != nil:
				d.fail(ClassWrongType, "%s%q is %s; expected a string naming the signal", d.loc(), f.SignalField, d.describe(signalV))
				return dst
			case len(sb) == 0:
				d.fail(ClassNoSignal, "%s%q is empty; expected the signal's name", d.loc(), f.SignalField)
				return dst
			}
			d.name = d.name[:0]
			if base != "" {
				d.name = append(append(d.name, base...), f.Separator...)
			}
			d.name = append(d.name, sb...)
			signal = d.names.Bytes(d.name)
		}
		if signal == "" {
			d.fail(ClassNoSignal, "%sthe sample has no %q, and topic pattern %q neither captures nor sets a signal", d.loc(), f.SignalField, d.pat.text)
			return dst
		}
		val, ok := d.value(valueV, nil, f.ValueField)
		if !ok {
			return dst
		}
		return append(dst, d.point(signal, ts, q, val))
	}
	// An object of signals.
	d.name = d.name[:0]
	if base != "" {
		d.name = append(append(d.name, base...), f.Separator...)
	}
	keys := 0
	dst = d.flatten(dst, o, true, ts, q, &keys)
	if d.err == nil && keys == 0 {
		d.fail(ClassNoSignal, "%sthe object holds no signal (keys other than %q and %q)", d.loc(), f.TimestampField, f.QualityField)
	}
	return dst
}

// flatten appends a point for every scalar in o, named by the keys on the way to it, after
// the prefix already in d.name. keys counts the signal keys seen.
func (d *Decoder) flatten(dst []telemetry.Point, o *fastjson.Object, top bool, ts int64, q telemetry.Quality, keys *int) []telemetry.Point {
	prefix := len(d.name)
	o.Visit(func(key []byte, v *fastjson.Value) {
		if d.err != nil {
			return
		}
		if top && (string(key) == d.fields.TimestampField || string(key) == d.fields.QualityField) {
			return
		}
		*keys++
		if len(key) == 0 {
			if outer := d.name[:max(prefix-len(d.fields.Separator), 0)]; len(outer) > 0 {
				d.fail(ClassNoSignal, "%san empty key inside %q; signal names must not be empty", d.loc(), outer)
			} else {
				d.fail(ClassNoSignal, "%san empty key; signal names must not be empty", d.loc())
			}
			return
		}
		d.name = append(d.name[:prefix], key...)
		if v.Type() == fastjson.TypeObject {
			inner, _ := v.Object()
			d.name = append(d.name, d.fields.Separator...)
			dst = d.flatten(dst, inner, false, ts, q, keys)
			return
		}
		val, ok := d.value(v, d.name, "")
		if !ok {
			return
		}
		dst = append(dst, d.point(d.names.Bytes(d.name), ts, q, val))
	})
	d.name = d.name[:prefix]
	return dst
}

func (d *Decoder) point(signal string, ts int64, q telemetry.Quality, v telemetry.Value) telemetry.Point {
	return telemetry.Point{
		Factory:    d.ident[fieldFactory],
		Line:       d.ident[fieldLine],
		Machine:    d.ident[fieldMachine],
		Signal:     signal,
		SourceTime: ts,
		ServerTime: d.recv,
		Value:      v,
		Quality:    q,
	}
}

// identify matches the topic and sets d.ident from its captures and the fixed values.
func (d *Decoder) identify(topic string) bool {
	var caps [numFields]string
	if !d.pat.match(topic, &caps) {
		d.fail(ClassTopicMismatch, "topic %q does not match pattern %q", topic, d.pat.text)
		return false
	}
	for f := range numFields {
		lv := d.pat.captureLevel[f]
		if lv < 0 {
			d.ident[f] = d.fixed[f]
			continue
		}
		if caps[f] == "" {
			d.fail(ClassTopicMismatch, "topic %q leaves {%s} empty (level %d of pattern %q)", topic, fieldNames[f], lv+1, d.pat.text)
			return false
		}
		d.ident[f] = d.names.String(caps[f])
	}
	return true
}

// value converts a sample value. It reports false for null (skipped) and on error. The value
// is named by name, or by key when name is nil, in error messages.
func (d *Decoder) value(v *fastjson.Value, name []byte, key string) (telemetry.Value, bool) {
	switch v.Type() {
	case fastjson.TypeNumber:
		f, err := v.Float64()
		if err != nil {
			d.fail(ClassJSONSyntax, "%s%q: %s is not a valid JSON number", d.loc(), d.what(name, key), d.text(v))
			return telemetry.Value{}, false
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			d.fail(ClassWrongType, "%s%q: %s is not a finite number", d.loc(), d.what(name, key), d.text(v))
			return telemetry.Value{}, false
		}
		return telemetry.Float(f), true
	case fastjson.TypeString:
		sb, _ := v.StringBytes()
		return telemetry.String(string(sb)), true
	case fastjson.TypeTrue:
		return telemetry.Bool(true), true
	case fastjson.TypeFalse:
		return telemetry.Bool(false), true
	case fastjson.TypeNull:
		return telemetry.Value{}, false
	}
	d.fail(ClassWrongType, "%s%q is %s; expected a number, string, true, false or null", d.loc(), d.what(name, key), d.describe(v))
	return telemetry.Value{}, false
}

// timestamp returns the Unix nanoseconds of a timestamp field, or 0 when it is absent or null.
func (d *Decoder) timestamp(v *fastjson.Value) int64 {
	if v == nil || v.Type() == fastjson.TypeNull {
		return 0
	}
	key := d.fields.TimestampField
	var text []byte
	switch t := v.Type(); {
	case t == fastjson.TypeString:
		text, _ = v.StringBytes()
	case t == fastjson.TypeNumber && d.ts.kind == tsUnix:
		d.scratch = v.MarshalTo(d.scratch[:0])
		text = d.scratch
	default:
		d.fail(ClassBadTimestamp, "%s%q is %s; expected %s", d.loc(), key, d.describe(v), d.ts.expect)
		return 0
	}
	var ns int64
	switch d.ts.kind {
	case tsUnix:
		n, st := scaleDecimal(text, d.ts.digits)
		switch st {
		case scaleSyntax:
			d.fail(ClassBadTimestamp, "%s%q: %s is not a %s timestamp; expected %s", d.loc(), key, d.text(v), d.ts.name, d.ts.expect)
			return 0
		case scaleRange:
			d.fail(ClassBadTimestamp, "%s%q: %s is out of range for a %s timestamp; expected a time from 1970 to 2262", d.loc(), key, d.text(v), d.ts.name)
			return 0
		}
		ns = n
	case tsLayout:
		t, err := time.Parse(d.ts.layout, string(text))
		if err != nil {
			d.fail(ClassBadTimestamp, "%s%q: %s is not %s", d.loc(), key, d.text(v), d.ts.expect)
			return 0
		}
		if t.Before(time.Unix(0, 1)) || t.After(maxTime) {
			d.fail(ClassBadTimestamp, "%s%q: %s is out of range; expected a time from 1970 to 2262", d.loc(), key, d.text(v))
			return 0
		}
		ns = t.UnixNano()
	}
	if ns <= 0 {
		d.fail(ClassBadTimestamp, "%s%q: %s is out of range for a %s timestamp; expected a time from 1970 to 2262", d.loc(), key, d.text(v), d.ts.name)
		return 0
	}
	return ns
}

// quality parses a quality field: a level name or a raw code (0 good, anything else bad).
func (d *Decoder) quality(v *fastjson.Value) telemetry.Quality {
	if v == nil {
		return telemetry.Quality{}
	}
	switch v.Type() {
	case fastjson.TypeNull:
		return telemetry.Quality{}
	case fastjson.TypeString:
		sb, _ := v.StringBytes()
		if lvl, ok := parseLevel(sb); ok {
			return telemetry.Quality{Level: lvl}
		}
	case fastjson.TypeNumber:
		if code, err := v.Uint64(); err == nil && code <= math.MaxUint32 {
			if code == 0 {
				return telemetry.Quality{Level: telemetry.Good}
			}
			return telemetry.Quality{Level: telemetry.Bad, Code: uint32(code)}
		}
	}
	d.fail(ClassWrongType, "%s%q: %s is not a quality; expected \"good\", \"uncertain\", \"bad\" or a code from 0 (good) to 4294967295 (bad)", d.loc(), d.fields.QualityField, d.text(v))
	return telemetry.Quality{}
}

// parseLevel is telemetry.ParseLevel for bytes, without allocating.
func parseLevel(b []byte) (telemetry.Level, bool) {
	switch string(b) {
	case "good", "Good", "GOOD":
		return telemetry.Good, true
	case "uncertain", "Uncertain", "UNCERTAIN":
		return telemetry.Uncertain, true
	case "bad", "Bad", "BAD":
		return telemetry.Bad, true
	}
	return 0, false
}

func (d *Decoder) fail(class, format string, args ...any) {
	if d.err == nil {
		d.err = &DecodeError{Class: class, Reason: fmt.Sprintf(format, args...)}
	}
}

// loc prefixes error messages about a sample of an array with its index.
func (d *Decoder) loc() string {
	if d.sample < 0 {
		return ""
	}
	return fmt.Sprintf("sample [%d]: ", d.sample)
}

func (d *Decoder) what(name []byte, key string) string {
	if name != nil {
		return string(name)
	}
	return key
}

// maxQuoted bounds the JSON quoted in error messages.
const maxQuoted = 64

// text returns v as JSON, shortened for error messages.
func (d *Decoder) text(v *fastjson.Value) string {
	b := v.MarshalTo(nil)
	if len(b) <= maxQuoted {
		return string(b)
	}
	n := maxQuoted
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n]) + "..."
}

// describe returns v's type and JSON for error messages: `an array [1,2]`.
func (d *Decoder) describe(v *fastjson.Value) string {
	var kind string
	switch v.Type() {
	case fastjson.TypeObject:
		kind = "an object"
	case fastjson.TypeArray:
		kind = "an array"
	case fastjson.TypeString:
		kind = "a string"
	case fastjson.TypeNumber:
		kind = "a number"
	case fastjson.TypeTrue, fastjson.TypeFalse:
		kind = "a bool"
	default:
		return "null"
	}
	return kind + " " + d.text(v)
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}
