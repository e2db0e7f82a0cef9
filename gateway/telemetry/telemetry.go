// Package telemetry defines the samples that move through the gateway: points with typed values, quality and timestamps, grouped in batches.
//
// It imports nothing else of Millwright's; every connector, the pipeline and every sink speak these types.
package telemetry

import (
	"math"
	"strconv"
)

// Kind is the type of a Value.
type Kind uint8

// The value kinds. The zero Kind is invalid, so an unset Value is detectable.
const (
	KindFloat Kind = iota + 1
	KindInt
	KindBool
	KindString
)

// String returns the kind's lower-case name.
func (k Kind) String() string {
	switch k {
	case KindFloat:
		return "float"
	case KindInt:
		return "int"
	case KindBool:
		return "bool"
	case KindString:
		return "string"
	}
	return "invalid"
}

// Value is a typed sample value. It is a plain struct rather than an interface so that
// carrying a numeric value allocates nothing.
type Value struct {
	Kind Kind
	// Num holds a float (KindFloat) or, for KindInt and KindBool, the bits of an int64
	// (a bool is 0 or 1); use the accessors.
	num uint64
	// Str holds a KindString value.
	Str string
}

// Float returns a float value.
func Float(f float64) Value { return Value{Kind: KindFloat, num: math.Float64bits(f)} }

// Int returns an integer value.
func Int(i int64) Value { return Value{Kind: KindInt, num: uint64(i)} }

// Bool returns a boolean value.
func Bool(b bool) Value {
	v := Value{Kind: KindBool}
	if b {
		v.num = 1
	}
	return v
}

// String returns a string value.
func String(s string) Value { return Value{Kind: KindString, Str: s} }

// Float returns the value as a float64: floats as they are, ints converted, bools as 0 or 1,
// and NaN for strings and invalid values.
func (v Value) Float() float64 {
	switch v.Kind {
	case KindFloat:
		return math.Float64frombits(v.num)
	case KindInt:
		return float64(int64(v.num))
	case KindBool:
		return float64(v.num)
	}
	return math.NaN()
}

// Int returns an integer or bool value as int64 (floats truncated, strings 0).
func (v Value) Int() int64 {
	if v.Kind == KindFloat {
		return int64(math.Float64frombits(v.num))
	}
	if v.Kind == KindString {
		return 0
	}
	return int64(v.num)
}

// Bool reports whether a bool value is true (or a numeric value is non-zero).
func (v Value) Bool() bool {
	if v.Kind == KindFloat {
		return math.Float64frombits(v.num) != 0
	}
	return v.num != 0
}

// Bits returns the raw 64 bits behind a numeric value, for codecs.
func (v Value) Bits() uint64 { return v.num }

// FromBits rebuilds a numeric value of kind k from Bits; it is the codecs' inverse of Bits.
func FromBits(k Kind, bits uint64) Value { return Value{Kind: k, num: bits} }

// String formats the value for logs and dead letters.
func (v Value) String() string {
	switch v.Kind {
	case KindFloat:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case KindInt:
		return strconv.FormatInt(v.Int(), 10)
	case KindBool:
		return strconv.FormatBool(v.Bool())
	case KindString:
		return strconv.Quote(v.Str)
	}
	return "<invalid>"
}

// Level is the coarse quality of a sample, as OPC-UA defines it.
type Level uint8

// Quality levels. Good is the zero value.
const (
	Good Level = iota
	Uncertain
	Bad
)

// String returns "good", "uncertain" or "bad".
func (l Level) String() string {
	switch l {
	case Good:
		return "good"
	case Uncertain:
		return "uncertain"
	case Bad:
		return "bad"
	}
	return "invalid"
}

// ParseLevel parses the names String returns.
func ParseLevel(s string) (Level, bool) {
	switch s {
	case "good", "Good", "GOOD":
		return Good, true
	case "uncertain", "Uncertain", "UNCERTAIN":
		return Uncertain, true
	case "bad", "Bad", "BAD":
		return Bad, true
	}
	return 0, false
}

// Quality is a sample's quality: the level plus the raw status code of the protocol that
// delivered it (an OPC-UA StatusCode, for example; 0 when the protocol has none).
type Quality struct {
	Level Level
	Code  uint32
}

// Point is one sample of one signal of one machine.
type Point struct {
	Factory string
	Line    string
	Machine string
	Signal  string
	// SourceTime is when the device took the sample, in Unix nanoseconds; 0 when unknown.
	SourceTime int64
	// ServerTime is when a server (the OPC-UA server, or the gateway on receipt) stamped it,
	// in Unix nanoseconds; 0 when unknown.
	ServerTime int64
	Value      Value
	Quality    Quality
}

// Time returns the point's timestamp: the source time when known, else the server time.
func (p *Point) Time() int64 {
	if p.SourceTime != 0 {
		return p.SourceTime
	}
	return p.ServerTime
}

// SeriesHash returns a 64-bit FNV-1a hash of the point's identity (factory, line, machine,
// signal). Points of one series always hash alike, so sinks can shard by it and keep each
// series in order.
func (p *Point) SeriesHash() uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for _, s := range [...]string{p.Factory, p.Line, p.Machine, p.Signal} {
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= prime
		}
		h ^= 0xff // separator, so ("ab","c") and ("a","bc") differ
		h *= prime
	}
	return h
}

// Batch is the unit the pipeline moves: points from one read of one source.
type Batch struct {
	Points []Point
}

// Len returns the number of points.
func (b Batch) Len() int { return len(b.Points) }
