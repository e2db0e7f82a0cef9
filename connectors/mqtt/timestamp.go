package mqtt

import (
	"fmt"
	"math"
	"time"
)

type tsKind uint8

const (
	tsUnix   tsKind = iota // a decimal number of some unit since the epoch
	tsLayout               // a string in a Go time layout
)

// tsFormat is a parsed Payload.TimestampFormat.
type tsFormat struct {
	name   string
	kind   tsKind
	digits int    // for tsUnix: decimal digits from the unit to nanoseconds (9 for seconds)
	layout string // for tsLayout
	expect string // what a timestamp should look like, for error messages
}

var unixFormats = map[string]tsFormat{
	"unix":    {digits: 9, expect: "seconds since 1970-01-01T00:00:00Z, such as 1700000000.123"},
	"unix_ms": {digits: 6, expect: "milliseconds since 1970-01-01T00:00:00Z, such as 1700000000123"},
	"unix_us": {digits: 3, expect: "microseconds since 1970-01-01T00:00:00Z, such as 1700000000123456"},
	"unix_ns": {digits: 0, expect: "nanoseconds since 1970-01-01T00:00:00Z, such as 1700000000123456789"},
}

// layoutProbe is formatted with a candidate layout to check that it holds time elements.
var layoutProbe = time.Date(2023, 11, 14, 22, 13, 20, 123456789, time.UTC)

// maxTime is the latest time a point can carry (Unix nanoseconds in an int64).
var maxTime = time.Unix(0, math.MaxInt64)

func parseTimestampFormat(s string) (tsFormat, error) {
	if f, ok := unixFormats[s]; ok {
		f.name, f.kind = s, tsUnix
		return f, nil
	}
	if s == "rfc3339" {
		return tsFormat{name: s, kind: tsLayout, layout: time.RFC3339Nano,
			expect: `an RFC 3339 time such as "2023-11-14T22:13:20.123Z"`}, nil
	}
	out := layoutProbe.Format(s)
	if out == s {
		return tsFormat{}, fmt.Errorf("%q is not unix, unix_ms, unix_us, unix_ns, rfc3339 or a Go time layout (such as \"2006-01-02 15:04:05.000\")", s)
	}
	if _, err := time.Parse(s, out); err != nil {
		return tsFormat{}, fmt.Errorf("%q is not a usable Go time layout: a time it formats does not parse back: %v", s, err)
	}
	return tsFormat{name: s, kind: tsLayout, layout: s,
		expect: fmt.Sprintf("a time in the layout %q, such as %q", s, out)}, nil
}

type scaleStatus uint8

const (
	scaleOK     scaleStatus = iota
	scaleSyntax             // not a decimal number
	scaleRange              // negative, or too large for int64 nanoseconds
)

// scaleDecimal returns the decimal number in s (digits, an optional fraction and an optional
// exponent, as JSON writes numbers) times 10^shift, with any fraction left over truncated.
// It is exact (no floating point) and allocates nothing.
func scaleDecimal(s []byte, shift int) (int64, scaleStatus) {
	if len(s) > 0 && s[0] == '-' {
		if _, st := scaleDecimal(s[1:], shift); st == scaleSyntax {
			return 0, scaleSyntax
		}
		return 0, scaleRange
	}
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	nInt := i
	if nInt == 0 {
		return 0, scaleSyntax
	}
	fracStart, nFrac := i, 0
	if i < len(s) && s[i] == '.' {
		i++
		fracStart = i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		nFrac = i - fracStart
		if nFrac == 0 {
			return 0, scaleSyntax
		}
	}
	exp := 0
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		neg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			neg = s[i] == '-'
			i++
		}
		start := i
		for i < len(s) && isDigit(s[i]) {
			if exp < 1000 {
				exp = exp*10 + int(s[i]-'0')
			}
			i++
		}
		if i == start {
			return 0, scaleSyntax
		}
		if neg {
			exp = -exp
		}
	}
	if i != len(s) {
		return 0, scaleSyntax
	}
	// The integer part of the result is the first nInt+shift+exp digits of int+frac digits,
	// padded with zeros.
	keep := nInt + shift + exp
	total := nInt + nFrac
	var n int64
	for k := 0; k < keep; k++ {
		var d int64
		switch {
		case k < nInt:
			d = int64(s[k] - '0')
		case k < total:
			d = int64(s[fracStart+k-nInt] - '0')
		}
		if n > (math.MaxInt64-d)/10 {
			return 0, scaleRange
		}
		n = n*10 + d
	}
	return n, scaleOK
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
