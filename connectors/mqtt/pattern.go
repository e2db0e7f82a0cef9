package mqtt

import (
	"errors"
	"fmt"
	"strings"
)

// field is one part of a point's identity that a topic level can name.
type field uint8

const (
	fieldFactory field = iota
	fieldLine
	fieldMachine
	fieldSignal
	numFields
)

var fieldNames = [numFields]string{"factory", "line", "machine", "signal"}

type levelKind uint8

const (
	levelLiteral levelKind = iota
	levelPlus              // "+"
	levelHash              // "#", always last
	levelCapture           // "{machine}", subscribed as "+"
)

type level struct {
	kind  levelKind
	text  string // the literal, for levelLiteral
	field field  // for levelCapture
}

// pattern is a parsed topic pattern: an MQTT filter whose whole levels may be captures.
type pattern struct {
	text   string
	levels []level
	// filter is the MQTT filter to subscribe to: captures replaced by "+".
	filter string
	// captureLevel is the index of the level that captures each field, or -1.
	captureLevel [numFields]int
}

func (p *pattern) captures(f field) bool { return p.captureLevel[f] >= 0 }

// parsePattern parses and checks a topic pattern. Its errors read well after "pattern: ".
func parsePattern(s string) (pattern, error) {
	p := pattern{text: s, captureLevel: [numFields]int{-1, -1, -1, -1}}
	switch {
	case s == "":
		return p, errors.New(`is empty; expected an MQTT topic filter such as "plant/{line}/{machine}/telemetry"`)
	case len(s) > maxPatternBytes:
		return p, fmt.Errorf("is %d bytes long, more than the %d MQTT allows", len(s), maxPatternBytes)
	case strings.ContainsRune(s, 0):
		return p, fmt.Errorf("%q contains a NUL character", s)
	case strings.HasPrefix(s, "$share/"):
		return p, fmt.Errorf("%q: write the plain filter; shared subscriptions are set up by connections and share_group", s)
	}
	var filter strings.Builder
	rest := s
	for i := 0; ; i++ {
		seg, tail, more := strings.Cut(rest, "/")
		var l level
		switch {
		case seg == "#":
			if more {
				return p, fmt.Errorf(`%q: "#" is allowed only as the whole last level`, s)
			}
			l.kind = levelHash
		case seg == "+":
			l.kind = levelPlus
		case strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}"):
			name := seg[1 : len(seg)-1]
			f, ok := fieldByName(name)
			if !ok {
				return p, fmt.Errorf("%q: capture {%s} is not one of factory, line, machine, signal", s, name)
			}
			if p.captureLevel[f] >= 0 {
				return p, fmt.Errorf("%q: capture {%s} appears twice", s, name)
			}
			p.captureLevel[f] = i
			l = level{kind: levelCapture, field: f}
		case strings.ContainsAny(seg, "{}"):
			return p, fmt.Errorf("%q: level %d %q: a capture must be a whole level, like {machine}", s, i+1, seg)
		case strings.ContainsAny(seg, "+#"):
			return p, fmt.Errorf("%q: level %d %q: wildcards \"+\" and \"#\" must be a whole level", s, i+1, seg)
		default:
			l = level{kind: levelLiteral, text: seg}
		}
		p.levels = append(p.levels, l)
		if i > 0 {
			filter.WriteByte('/')
		}
		if l.kind == levelCapture {
			filter.WriteByte('+')
		} else {
			filter.WriteString(seg)
		}
		if !more {
			break
		}
		rest = tail
	}
	p.filter = filter.String()
	return p, nil
}

func fieldByName(name string) (field, bool) {
	for f, n := range fieldNames {
		if n == name {
			return field(f), true
		}
	}
	return 0, false
}

// subscription returns the filter to subscribe to, inside the shared subscription group
// when group is not empty.
func (p *pattern) subscription(group string) string {
	if group == "" {
		return p.filter
	}
	return "$share/" + group + "/" + p.filter
}

// match reports whether topic (a topic name, without wildcards) matches the pattern, and
// stores each captured level in caps. It allocates nothing. As MQTT requires, a topic that
// starts with "$" matches no pattern that starts with a wildcard.
func (p *pattern) match(topic string, caps *[numFields]string) bool {
	if len(p.levels) == 0 {
		return false
	}
	if strings.HasPrefix(topic, "$") && p.levels[0].kind != levelLiteral {
		return false
	}
	rest, done := topic, false
	for _, l := range p.levels {
		if l.kind == levelHash {
			return true // "a/#" matches "a", "a/b" and "a/b/c"
		}
		if done {
			return false
		}
		seg, tail, more := strings.Cut(rest, "/")
		switch l.kind {
		case levelLiteral:
			if seg != l.text {
				return false
			}
		case levelCapture:
			caps[l.field] = seg
		}
		rest, done = tail, !more
	}
	return done
}
