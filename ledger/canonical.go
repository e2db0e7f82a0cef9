package ledger

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Canonical JSON (RFC 8785, JSON Canonicalization Scheme) is what records are hashed and
// signed over:
//
//   - object members sorted by their names compared as UTF-16 code units; duplicate names
//     are an error;
//   - no insignificant whitespace;
//   - strings as UTF-8, escaping only '"', '\' and the control characters below U+0020
//     (\b \t \n \f \r by name, the others as \u00xx); invalid UTF-8 is an error;
//   - numbers as IEEE-754 doubles written the way ECMAScript's Number.prototype.toString
//     writes them (1, 0.5, 1e+21, 1e-7; -0 becomes 0); NaN and infinities cannot occur in
//     JSON. Integers are therefore exact only up to 2⁵³, which is why the record schema
//     rejects integer fields beyond ±(2⁵³−1) instead of letting them round.
//
// Floating-point fields (metrics, DP budget) are allowed: their canonical form is defined by
// the ECMAScript rule above, so a verifier in another language reproduces the same bytes.

// MaxSafeInteger is the largest integer a canonical JSON number holds exactly (2⁵³−1).
const MaxSafeInteger = 1<<53 - 1

// maxDepth bounds the nesting of documents that are canonicalized, so hostile input cannot
// exhaust the stack.
const maxDepth = 64

// Canonicalize returns the canonical form of the JSON document in b, or an error naming
// what makes b unacceptable (syntax, duplicate member, invalid UTF-8 or lone surrogate,
// trailing data) and where.
func Canonicalize(b []byte) ([]byte, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("canonical json: invalid UTF-8")
	}
	p := parser{b: b}
	out, err := p.value(make([]byte, 0, len(b)), 0)
	if err == nil {
		p.space()
		if p.i < len(p.b) {
			err = errors.New("data after the top-level value")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("canonical json: %w", err)
	}
	return out, nil
}

// CanonicalMarshal returns the canonical JSON of v as encoding/json marshals it.
func CanonicalMarshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return Canonicalize(b)
}

// parser is a strict RFC 8259 parser that writes the canonical form as it goes.
type parser struct {
	b       []byte
	i       int
	scratch []byte // decoded member names
}

func (p *parser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *parser) value(out []byte, depth int) ([]byte, error) {
	p.space()
	if p.i >= len(p.b) {
		return nil, errors.New("unexpected end of input")
	}
	switch c := p.b[p.i]; {
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return nil, fmt.Errorf("nested deeper than %d levels", maxDepth)
		}
		p.i++
		if c == '{' {
			return p.object(out, depth+1)
		}
		return p.array(out, depth+1)
	case c == '"':
		s, err := p.str(p.scratch[:0])
		if err != nil {
			return nil, err
		}
		p.scratch = s[:0]
		return appendString(out, s), nil
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number(out)
	}
	for _, lit := range []string{"true", "false", "null"} {
		if bytes.HasPrefix(p.b[p.i:], []byte(lit)) {
			p.i += len(lit)
			return append(out, lit...), nil
		}
	}
	return nil, p.errorf("unexpected %q", p.b[p.i])
}

type member struct {
	key        string
	start, end int // of the value in the object's buffer
}

func (p *parser) object(out []byte, depth int) ([]byte, error) {
	var members []member
	var buf []byte
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return append(out, '{', '}'), nil
	}
	for {
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, p.errorf("expected a member name")
		}
		k, err := p.str(p.scratch[:0])
		if err != nil {
			return nil, err
		}
		key := string(k)
		p.scratch = k[:0]
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, p.errorf("expected ':' after member name %q", key)
		}
		p.i++
		start := len(buf)
		if buf, err = p.value(buf, depth); err != nil {
			return nil, err
		}
		members = append(members, member{key: key, start: start, end: len(buf)})
		p.space()
		if p.i >= len(p.b) {
			return nil, errors.New("unexpected end of input")
		}
		if p.b[p.i] == '}' {
			p.i++
			break
		}
		if p.b[p.i] != ',' {
			return nil, p.errorf("expected ',' or '}'")
		}
		p.i++
	}
	slices.SortFunc(members, func(a, b member) int { return compareUTF16(a.key, b.key) })
	out = append(out, '{')
	for i, m := range members {
		if i > 0 {
			if m.key == members[i-1].key {
				return nil, fmt.Errorf("duplicate object member %q", m.key)
			}
			out = append(out, ',')
		}
		out = appendString(out, m.key)
		out = append(out, ':')
		out = append(out, buf[m.start:m.end]...)
	}
	return append(out, '}'), nil
}

func (p *parser) array(out []byte, depth int) ([]byte, error) {
	out = append(out, '[')
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return append(out, ']'), nil
	}
	for {
		var err error
		if out, err = p.value(out, depth); err != nil {
			return nil, err
		}
		p.space()
		if p.i >= len(p.b) {
			return nil, errors.New("unexpected end of input")
		}
		if p.b[p.i] == ']' {
			p.i++
			return append(out, ']'), nil
		}
		if p.b[p.i] != ',' {
			return nil, p.errorf("expected ',' or ']'")
		}
		out = append(out, ',')
		p.i++
	}
}

// str decodes the string starting at p.i (a '"') into dst.
func (p *parser) str(dst []byte) ([]byte, error) {
	p.i++
	for {
		if p.i >= len(p.b) {
			return nil, errors.New("unexpected end of input in a string")
		}
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return dst, nil
		case c < 0x20:
			return nil, p.errorf("control character %#02x in a string", c)
		case c != '\\':
			dst = append(dst, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.b) {
			return nil, errors.New("unexpected end of input in a string")
		}
		e := p.b[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			dst = append(dst, e)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return nil, p.errorf("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if r < 0xdc00 && p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					p.i += 2
					if r2, ok = p.hex4(); !ok {
						return nil, p.errorf("bad \\u escape")
					}
				}
				if r = utf16.DecodeRune(r, r2); r == utf8.RuneError {
					return nil, p.errorf("lone surrogate in a string")
				}
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return nil, p.errorf("bad escape \\%c", e)
		}
	}
}

func (p *parser) hex4() (rune, bool) {
	if p.i+4 > len(p.b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(p.b[p.i:p.i+4]), 16, 16)
	if err != nil || p.b[p.i] == '+' || p.b[p.i] == '-' {
		return 0, false
	}
	p.i += 4
	return rune(v), true
}

func (p *parser) digits() int {
	n := 0
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

// number scans a number by the JSON grammar and writes its canonical form.
func (p *parser) number(out []byte) ([]byte, error) {
	start := p.i
	if p.b[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if p.digits() == 0 {
		return nil, p.errorf("bad number")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return nil, p.errorf("bad number")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return nil, p.errorf("bad number")
		}
	}
	s, err := FormatNumber(string(p.b[start:p.i]))
	if err != nil {
		return nil, err
	}
	return append(out, s...), nil
}

// compareUTF16 orders strings by their UTF-16 code units, as RFC 8785 sorts member names.
func compareUTF16(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			ua, ub := ra, rb
			if ua >= 0x10000 {
				ua, _ = utf16.EncodeRune(ua)
			}
			if ub >= 0x10000 {
				ub, _ = utf16.EncodeRune(ub)
			}
			if ua != ub {
				return int(ua) - int(ub)
			}
			return int(ra) - int(rb)
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

const hexDigits = "0123456789abcdef"

func appendString[S string | []byte](out []byte, s S) []byte {
	out = append(out, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			out = append(out, '\\', c)
		case c >= 0x20:
			out = append(out, c)
		case c == '\b':
			out = append(out, '\\', 'b')
		case c == '\t':
			out = append(out, '\\', 't')
		case c == '\n':
			out = append(out, '\\', 'n')
		case c == '\f':
			out = append(out, '\\', 'f')
		case c == '\r':
			out = append(out, '\\', 'r')
		default:
			out = append(out, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
	}
	return append(out, '"')
}

// FormatNumber returns the canonical form of the JSON number literal s: the value as an
// IEEE-754 double, written as ECMAScript writes numbers (RFC 8785 section 3.2.2.3).
func FormatNumber(s string) (string, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return "", fmt.Errorf("number %s is out of the range of a double", s)
	}
	return formatFloat(f)
}

func formatFloat(f float64) (string, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "", fmt.Errorf("number %v has no JSON form", f)
	}
	if f == 0 {
		return "0", nil
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	format := byte('e')
	if f < 1e21 && f >= 1e-6 {
		format = 'f'
	}
	s := strconv.FormatFloat(f, format, -1, 64)
	if i := strings.IndexByte(s, 'e'); i > 0 && s[i+2] == '0' { // Go writes e+09, ECMAScript e+9
		s = s[:i+2] + s[i+3:]
	}
	return sign + s, nil
}
