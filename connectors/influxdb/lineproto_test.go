package influxdb

// A test oracle: a reader of line protocol that follows the scanner of InfluxDB 1.8 and 2.x
// (models.ParsePointsWithPrecision) byte for byte where line splitting, escaping and field
// types are decided, including its quirks (a byte after a backslash is escaped in a name;
// scanLine skips escaped pairs and tracks quotes only in the field section). Importing
// InfluxDB's own models package would need a go.mod change.

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// parsedLine is a line as InfluxDB reads it.
type parsedLine struct {
	Raw         string
	Measurement string
	Tags        [][2]string    // in line order
	Fields      map[string]any // float64, int64, bool or string
	FieldOrder  []string
	Time        int64
}

// lineError is a line InfluxDB could not parse, with its reason.
type lineError struct {
	Line   string
	Reason string
}

// parseLP splits body into lines as InfluxDB does and parses every line.
func parseLP(body []byte) ([]parsedLine, []lineError) {
	var (
		out    []parsedLine
		failed []lineError
	)
	for pos := 0; pos < len(body); {
		var block []byte
		pos, block = lpScanLine(body, pos)
		pos++
		if len(block) == 0 {
			continue
		}
		start := lpSkipWhitespace(block, 0)
		if start >= len(block) || block[start] == '#' {
			continue
		}
		if block[len(block)-1] == '\n' {
			block = block[:len(block)-1]
		}
		pl, err := lpParsePoint(block[start:])
		if err != nil {
			failed = append(failed, lineError{Line: string(block[start:]), Reason: err.Error()})
			continue
		}
		out = append(out, pl)
	}
	return out, failed
}

func lpSkipWhitespace(buf []byte, i int) int {
	for i < len(buf) && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == 0) {
		i++
	}
	return i
}

// lpScanLine is models.scanLine.
func lpScanLine(buf []byte, i int) (int, []byte) {
	start := i
	quoted, fields := false, false
	equals, commas := 0, 0
	for i < len(buf) {
		if buf[i] == '\\' && i+2 < len(buf) {
			i += 2
			continue
		}
		if buf[i] == ' ' {
			fields = true
		}
		if fields {
			if !quoted && buf[i] == '=' {
				i++
				equals++
				continue
			} else if !quoted && buf[i] == ',' {
				i++
				commas++
				continue
			} else if buf[i] == '"' && equals > commas {
				i++
				quoted = !quoted
				continue
			}
		}
		if buf[i] == '\n' && !quoted {
			break
		}
		i++
	}
	return i, buf[start:i]
}

func lpParsePoint(buf []byte) (parsedLine, error) {
	pl := parsedLine{Raw: string(buf), Fields: map[string]any{}}
	// Key: measurement and tags, names escaped by "the previous byte is a backslash".
	i := 0
	if len(buf) == 0 || buf[0] == ',' {
		return pl, errors.New("missing measurement")
	}
	state := ""
	for {
		i++
		if i >= len(buf) {
			return pl, errors.New("missing fields")
		}
		if buf[i-1] == '\\' {
			continue
		}
		if buf[i] == ',' {
			state = "tags"
			break
		}
		if buf[i] == ' ' {
			state = "fields"
			break
		}
	}
	pl.Measurement = lpUnescape(buf[:i], ", ")
	if state == "tags" {
		i++
		for state == "tags" {
			ks := i
			if i >= len(buf) || buf[i] == ' ' || buf[i] == ',' || buf[i] == '=' {
				return pl, errors.New("missing tag key")
			}
			for {
				i++
				if i >= len(buf) || ((buf[i] == ' ' || buf[i] == ',') && buf[i-1] != '\\') {
					return pl, errors.New("missing tag value")
				}
				if buf[i] == '=' && buf[i-1] != '\\' {
					break
				}
			}
			key := buf[ks:i]
			i++
			vs := i
			if i >= len(buf) || buf[i] == ',' || buf[i] == ' ' {
				return pl, errors.New("missing tag value")
			}
			for {
				i++
				if i >= len(buf) {
					return pl, errors.New("missing fields")
				}
				if buf[i] == '=' && buf[i-1] != '\\' {
					return pl, errors.New("invalid tag format")
				}
				if buf[i] == ',' && buf[i-1] != '\\' {
					break
				}
				if buf[i] == ' ' && buf[i-1] != '\\' {
					state = "fields"
					break
				}
			}
			pl.Tags = append(pl.Tags, [2]string{lpUnescape(key, ", ="), lpUnescape(buf[vs:i], ", =")})
			if state == "tags" {
				i++
			}
		}
	}
	for k := 1; k < len(pl.Tags); k++ {
		if pl.Tags[k-1][0] >= pl.Tags[k][0] {
			return pl, fmt.Errorf("tags not sorted or duplicated: %q before %q", pl.Tags[k-1][0], pl.Tags[k][0])
		}
	}
	// Fields.
	i = lpSkipWhitespace(buf, i)
	fs := i
	quoted := false
	equals, commas := 0, 0
	for i < len(buf) {
		if buf[i] == '\\' && i+1 < len(buf) {
			i += 2
			continue
		}
		if buf[i] == '"' && equals > commas {
			quoted = !quoted
			i++
			continue
		}
		if buf[i] == '=' && !quoted {
			equals++
			if i+1 >= len(buf) || buf[i+1] == ',' || buf[i+1] == ' ' {
				return pl, errors.New("missing field value")
			}
		}
		if buf[i] == ',' && !quoted {
			commas++
		}
		if buf[i] == ' ' && !quoted {
			break
		}
		i++
	}
	if quoted {
		return pl, errors.New("unbalanced quotes")
	}
	if equals == 0 || commas != equals-1 {
		return pl, errors.New("invalid field format")
	}
	fields := buf[fs:i]
	for len(fields) > 0 {
		// key up to an '=' whose previous byte is not a backslash
		k := 0
		for k < len(fields) && (fields[k] != '=' || (k > 0 && fields[k-1] == '\\')) {
			k++
		}
		if k > len(fields)-2 {
			return pl, fmt.Errorf("invalid value: field-key=%s", fields[:k])
		}
		key := lpUnescape(fields[:k], ", =")
		fields = fields[k+1:]
		// value: models.scanFieldValue
		v, q := 0, false
		for v < len(fields) {
			if fields[v] == '\\' && v+1 < len(fields) && (fields[v+1] == '"' || fields[v+1] == '\\') {
				v += 2
				continue
			}
			if fields[v] == '"' {
				v++
				q = !q
				continue
			}
			if fields[v] == ',' && !q {
				break
			}
			v++
		}
		val, err := lpFieldValue(fields[:v])
		if err != nil {
			return pl, fmt.Errorf("field %q: %v", key, err)
		}
		if _, dup := pl.Fields[key]; dup {
			return pl, fmt.Errorf("duplicate field %q", key)
		}
		pl.Fields[key] = val
		pl.FieldOrder = append(pl.FieldOrder, key)
		fields = fields[v:]
		if len(fields) > 0 {
			fields = fields[1:]
		}
	}
	// Time.
	i = lpSkipWhitespace(buf, i)
	ts := i
	for i < len(buf) && buf[i] != ' ' && buf[i] != '\n' {
		i++
	}
	if ts == i {
		return pl, errors.New("missing timestamp (the sink always writes one)")
	}
	t, err := strconv.ParseInt(string(buf[ts:i]), 10, 64)
	if err != nil {
		return pl, fmt.Errorf("bad timestamp %q", buf[ts:i])
	}
	if t < minTime || t > maxTime {
		return pl, errors.New("time outside range")
	}
	for ; i < len(buf); i++ {
		if buf[i] != ' ' {
			return pl, errors.New("point is invalid: data after the timestamp")
		}
	}
	pl.Time = t
	return pl, nil
}

// lpFieldValue reads a field value as models' field iterator types it.
func lpFieldValue(v []byte) (any, error) {
	if len(v) == 0 {
		return nil, errors.New("empty value")
	}
	switch c := v[0]; {
	case c == '"':
		if len(v) < 2 || v[len(v)-1] != '"' {
			return nil, errors.New("bad string")
		}
		return lpUnescapeString(string(v[1 : len(v)-1])), nil
	case strings.IndexByte("0123456789-.", c) >= 0:
		if v[len(v)-1] == 'i' {
			n, err := strconv.ParseInt(string(v[:len(v)-1]), 10, 64)
			return n, err
		}
		if bytes.ContainsAny(v, "nNiI") {
			return nil, fmt.Errorf("invalid number %q", v)
		}
		f, err := strconv.ParseFloat(string(v), 64)
		return f, err
	}
	switch string(v) {
	case "t", "T", "true", "True", "TRUE":
		return true, nil
	case "f", "F", "false", "False", "FALSE":
		return false, nil
	}
	return nil, fmt.Errorf("invalid boolean %q", v)
}

// lpUnescape removes the backslash before each of chars, as bytes.Replace does in models.
func lpUnescape(b []byte, chars string) string {
	s := string(b)
	for _, c := range []byte(chars) {
		s = strings.ReplaceAll(s, `\`+string(c), string(c))
	}
	return s
}

// lpUnescapeString is models.unescapeStringField.
func lpUnescapeString(in string) string {
	if strings.IndexByte(in, '\\') == -1 {
		return in
	}
	var out []byte
	for i := 0; i < len(in); {
		if in[i] == '\\' && i+1 < len(in) && (in[i+1] == '\\' || in[i+1] == '"') {
			out = append(out, in[i+1])
			i += 2
			continue
		}
		out = append(out, in[i])
		i++
	}
	return string(out)
}
