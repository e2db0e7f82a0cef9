package sparkplug

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// The field numbers of the Sparkplug B payload that the decoder reads (see
// sparkplugpb/sparkplug_b.proto).
const (
	fieldPayloadTimestamp = 1
	fieldPayloadMetrics   = 2
	fieldPayloadSeq       = 3
	fieldPayloadUUID      = 4
	fieldPayloadBody      = 5

	fieldMetricName         = 1
	fieldMetricAlias        = 2
	fieldMetricTimestamp    = 3
	fieldMetricDatatype     = 4
	fieldMetricIsHistorical = 5
	fieldMetricIsTransient  = 6
	fieldMetricIsNull       = 7
	fieldMetricProperties   = 9

	// The value oneof of Metric.
	fieldMetricInt       = 10
	fieldMetricLong      = 11
	fieldMetricFloat     = 12
	fieldMetricDouble    = 13
	fieldMetricBoolean   = 14
	fieldMetricString    = 15
	fieldMetricBytes     = 16
	fieldMetricDataSet   = 17
	fieldMetricTemplate  = 18
	fieldMetricExtension = 19

	// PropertySet and PropertyValue.
	fieldPropertyKeys      = 1
	fieldPropertyValues    = 2
	fieldPropertyIsNull    = 2
	fieldPropertyIntValue  = 3
	fieldPropertyLongValue = 4
)

// qualityProperty is the key of the property that carries a metric's quality code
// (Sparkplug 3.0 §6.4.18 Quality Codes: 0 BAD, 192 GOOD, 500 STALE).
const qualityProperty = "Quality"

// Presence bits of Payload and Metric fields.
const (
	hasTimestamp uint8 = 1 << iota
	hasSeq
	hasName
	hasAlias
	hasDatatype
	hasQuality
)

// errMalformed is wrapped by every error of the wire decoder.
var errMalformed = errors.New("malformed sparkplug b payload")

// Payload is a Sparkplug B payload read in place: its scalar fields, and its metrics, which
// NextMetric reads one at a time. It keeps references into the bytes it was given and
// allocates nothing.
//
// The decoder reads what the protobuf encoding allows: fields in any order, repeated scalar
// fields (the last one wins), unknown fields and known fields of another wire type (skipped,
// as the generated code keeps them as unknown fields). It does not look inside the message
// values it does not use (data sets, templates, metadata, extensions, and of a metric's
// properties all but the Quality property) beyond their length, so it accepts some payloads
// the generated code refuses because of a malformed nested message; it never refuses a
// payload the generated code accepts.
type Payload struct {
	Timestamp uint64 // Unix milliseconds
	Seq       uint64
	UUID      []byte
	Body      []byte
	has       uint8
	// Metrics is how many metrics the payload holds.
	Metrics int

	raw []byte
	off int
}

// HasTimestamp reports whether the payload has a timestamp.
func (p *Payload) HasTimestamp() bool { return p.has&hasTimestamp != 0 }

// HasSeq reports whether the payload has a sequence number.
func (p *Payload) HasSeq() bool { return p.has&hasSeq != 0 }

// Metric is one metric of a payload read in place. Name, Str and Raw refer to the payload's
// bytes.
type Metric struct {
	Name         []byte
	Alias        uint64
	Timestamp    uint64 // Unix milliseconds
	Datatype     uint32
	IsHistorical bool
	IsTransient  bool
	IsNull       bool
	// Quality is the integer value of the property "Quality", when HasQuality.
	Quality uint64
	// Value is the field number of the value oneof that is set (fieldMetricInt ...
	// fieldMetricExtension), 0 when none is.
	Value protowire.Number
	// Bits holds int_value, long_value, boolean_value (0 or 1) and the IEEE 754 bits of
	// float_value (32 bits) or double_value.
	Bits uint64
	// Bytes holds string_value, bytes_value, or the encoded message of a data set, template or
	// extension value.
	Bytes []byte
	has   uint8
}

// HasName, HasAlias, HasTimestamp, HasDatatype and HasQuality report which optional fields
// are present.
func (m *Metric) HasName() bool      { return m.has&hasName != 0 }
func (m *Metric) HasAlias() bool     { return m.has&hasAlias != 0 }
func (m *Metric) HasTimestamp() bool { return m.has&hasTimestamp != 0 }
func (m *Metric) HasDatatype() bool  { return m.has&hasDatatype != 0 }
func (m *Metric) HasQuality() bool   { return m.has&hasQuality != 0 }

// Unmarshal reads the payload's scalar fields and counts its metrics; NextMetric then reads
// the metrics. It checks the framing of the whole payload, so NextMetric fails only on a
// malformed metric.
func (p *Payload) Unmarshal(b []byte) error {
	*p = Payload{raw: b}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return wireError("payload", 0, n)
		}
		b = b[n:]
		switch {
		case num == fieldPayloadTimestamp && typ == protowire.VarintType:
			p.Timestamp, n = protowire.ConsumeVarint(b)
			p.has |= hasTimestamp
		case num == fieldPayloadSeq && typ == protowire.VarintType:
			p.Seq, n = protowire.ConsumeVarint(b)
			p.has |= hasSeq
		case num == fieldPayloadMetrics && typ == protowire.BytesType:
			_, n = protowire.ConsumeBytes(b)
			p.Metrics++
		case num == fieldPayloadUUID && typ == protowire.BytesType:
			p.UUID, n = protowire.ConsumeBytes(b)
		case num == fieldPayloadBody && typ == protowire.BytesType:
			p.Body, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return wireError("payload", num, n)
		}
		b = b[n:]
	}
	return nil
}

// NextMetric reads the next metric into m. It returns false when there is none left.
func (p *Payload) NextMetric(m *Metric) (bool, error) {
	for p.off < len(p.raw) {
		b := p.raw[p.off:]
		num, typ, n := protowire.ConsumeTag(b) // framing checked by Unmarshal
		b = b[n:]
		p.off += n
		if num != fieldPayloadMetrics || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			p.off += n
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		p.off += n
		return true, m.unmarshal(v)
	}
	return false, nil
}

// Reset makes NextMetric start again from the first metric.
func (p *Payload) Reset() { p.off = 0 }

func (m *Metric) unmarshal(b []byte) error {
	*m = Metric{}
	metric, props := b, false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return wireError("metric", 0, n)
		}
		b = b[n:]
		var v uint64
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
			if n < 0 {
				return wireError("metric", num, n)
			}
			switch num {
			case fieldMetricAlias:
				m.Alias, m.has = v, m.has|hasAlias
			case fieldMetricTimestamp:
				m.Timestamp, m.has = v, m.has|hasTimestamp
			case fieldMetricDatatype:
				m.Datatype, m.has = uint32(v), m.has|hasDatatype
			case fieldMetricIsHistorical:
				m.IsHistorical = v != 0
			case fieldMetricIsTransient:
				m.IsTransient = v != 0
			case fieldMetricIsNull:
				m.IsNull = v != 0
			case fieldMetricInt:
				m.Value, m.Bits, m.Bytes = num, uint64(uint32(v)), nil
			case fieldMetricLong:
				m.Value, m.Bits, m.Bytes = num, v, nil
			case fieldMetricBoolean:
				m.Value, m.Bytes = num, nil
				m.Bits = 0
				if v != 0 {
					m.Bits = 1
				}
			}
		case protowire.Fixed32Type:
			var f uint32
			f, n = protowire.ConsumeFixed32(b)
			if num == fieldMetricFloat && n >= 0 {
				m.Value, m.Bits, m.Bytes = num, uint64(f), nil
			}
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
			if num == fieldMetricDouble && n >= 0 {
				m.Value, m.Bits, m.Bytes = num, v, nil
			}
		case protowire.BytesType:
			var s []byte
			s, n = protowire.ConsumeBytes(b)
			if n < 0 {
				break
			}
			switch num {
			case fieldMetricName:
				m.Name, m.has = s, m.has|hasName
			case fieldMetricProperties:
				props = true
			case fieldMetricString, fieldMetricBytes, fieldMetricDataSet, fieldMetricTemplate, fieldMetricExtension:
				m.Value, m.Bits, m.Bytes = num, 0, s
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return wireError("metric", num, n)
		}
		b = b[n:]
	}
	if props {
		q, ok, err := propertyQuality(metric)
		if err != nil {
			return err
		}
		if ok {
			m.Quality, m.has = q, m.has|hasQuality
		}
	}
	return nil
}

// propertyQuality returns the integer value of the property "Quality" of an encoded metric
// whose framing is checked: the value at the index of the first key "Quality" (keys and
// values are parallel lists; protobuf merges the property sets of a metric that has more
// than one). It reads the keys and that one value, in two passes, skips every other field,
// and allocates nothing.
func propertyQuality(metric []byte) (uint64, bool, error) {
	idx, keys := -1, 0
	err := eachProperty(metric, func(num protowire.Number, b []byte) bool {
		if num == fieldPropertyKeys {
			if string(b) == qualityProperty {
				idx = keys
				return true
			}
			keys++
		}
		return false
	})
	if err != nil || idx < 0 {
		return 0, false, err
	}
	var value []byte
	values := 0
	if err := eachProperty(metric, func(num protowire.Number, b []byte) bool {
		if num == fieldPropertyValues {
			if values == idx {
				value = b
				return true
			}
			values++
		}
		return false
	}); err != nil || value == nil {
		return 0, false, err // or fewer values than keys
	}
	return propertyInt(value)
}

// eachProperty calls f with each length-delimited field of the property sets of an encoded
// metric whose framing is checked, until f returns true.
func eachProperty(metric []byte, f func(num protowire.Number, b []byte) bool) error {
	for len(metric) > 0 {
		num, typ, n := protowire.ConsumeTag(metric)
		metric = metric[n:]
		if num != fieldMetricProperties || typ != protowire.BytesType {
			metric = metric[protowire.ConsumeFieldValue(num, typ, metric):]
			continue
		}
		set, n := protowire.ConsumeBytes(metric)
		metric = metric[n:]
		for len(set) > 0 {
			num, typ, n := protowire.ConsumeTag(set)
			if n < 0 {
				return wireError("property set", 0, n)
			}
			set = set[n:]
			if typ == protowire.BytesType {
				var b []byte
				if b, n = protowire.ConsumeBytes(set); n >= 0 && f(num, b) {
					return nil
				}
			} else {
				n = protowire.ConsumeFieldValue(num, typ, set)
			}
			if n < 0 {
				return wireError("property set", num, n)
			}
			set = set[n:]
		}
	}
	return nil
}

// propertyInt returns the int_value or long_value of an encoded PropertyValue; false when it
// is null or its value is of another type.
func propertyInt(b []byte) (uint64, bool, error) {
	var v uint64
	ok, null := false, false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false, wireError("property value", 0, n)
		}
		b = b[n:]
		var x uint64
		switch {
		case typ == protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return 0, false, wireError("property value", num, n)
		}
		b = b[n:]
		switch {
		case num == fieldPropertyIsNull && typ == protowire.VarintType:
			null = x != 0
		case num == fieldPropertyIntValue && typ == protowire.VarintType:
			v, ok = uint64(uint32(x)), true
		case num == fieldPropertyLongValue && typ == protowire.VarintType:
			v, ok = x, true
		case isPropertyValue(num, typ):
			ok = false // the last member of the value oneof wins
		}
	}
	return v, ok && !null, nil
}

// isPropertyValue reports whether a field is a member of PropertyValue's value oneof other
// than int_value and long_value, with its own wire type (the generated code keeps a field of
// another wire type as unknown).
func isPropertyValue(num protowire.Number, typ protowire.Type) bool {
	switch num {
	case 5:
		return typ == protowire.Fixed32Type // float_value
	case 6:
		return typ == protowire.Fixed64Type // double_value
	case 7:
		return typ == protowire.VarintType // boolean_value
	case 8, 9, 10, 11:
		return typ == protowire.BytesType // string, property set(s), extension
	}
	return false
}

func wireError(msg string, num protowire.Number, n int) error {
	if num == 0 {
		return fmt.Errorf("%w: %s: bad field tag: %v", errMalformed, msg, protowire.ParseError(n))
	}
	return fmt.Errorf("%w: %s field %d: %v", errMalformed, msg, num, protowire.ParseError(n))
}
