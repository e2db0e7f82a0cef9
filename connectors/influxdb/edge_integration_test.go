package influxdb

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

// readBackRows reads every row of "telemetry" with exact numbers (json.Number) and ns times,
// keyed by "<signal>@<time>"; a row maps "tag:<name>" to its tags and each column to its value.
func readBackRows(t *testing.T, base, db string) map[string]map[string]any {
	t.Helper()
	q := `SELECT * FROM "telemetry" WHERE time >= -9223372036854775806 AND time <= 9223372036854775806 GROUP BY *`
	resp, err := http.PostForm(strings.TrimRight(base, "/")+"/query", url.Values{"q": {q}, "db": {db}, "epoch": {"ns"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("query: status %d, %v: %s", resp.StatusCode, err, body)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var r struct {
		Results []struct {
			Series []struct {
				Tags    map[string]string `json:"tags"`
				Columns []string          `json:"columns"`
				Values  [][]any           `json:"values"`
			} `json:"series"`
			Error string `json:"error"`
		} `json:"results"`
	}
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("query answer: %v: %s", err, body)
	}
	if len(r.Results) != 1 || r.Results[0].Error != "" {
		t.Fatalf("query answer: want one result without error: %s", body)
	}
	out := map[string]map[string]any{}
	for _, s := range r.Results[0].Series {
		for _, row := range s.Values {
			m := map[string]any{}
			for k, v := range s.Tags {
				if v != "" {
					m["tag:"+k] = v
				}
			}
			for i, c := range s.Columns {
				if row[i] != nil {
					m[c] = row[i]
				}
			}
			out[s.Tags["signal"]+fmt.Sprintf("@%v", m["time"])] = m
		}
	}
	return out
}

// TestIntegrationEdgeValuesReadBack writes points at the edges of what the encoder accepts
// (extreme times and numbers, escapes, control characters, Unicode) and checks that each
// reads back from InfluxDB 1.8 exactly.
func TestIntegrationEdgeValuesReadBack(t *testing.T) {
	baseURL, db := sharedInflux(t)
	s := integrationSink(t, baseURL, db, func(c *Config) { c.Writers = 1 })
	b := integrationBase
	pts := []telemetry.Point{
		{Machine: "m", Signal: "tmin", SourceTime: minTime, Value: telemetry.Float(1)},
		{Machine: "m", Signal: "tmax", SourceTime: maxTime, Value: telemetry.Float(2)},
		{Machine: "m", Signal: "tneg", SourceTime: -1, Value: telemetry.Float(3)},
		{Machine: "m", Signal: "t1899", SourceTime: -2208988800000000000, Value: telemetry.Float(3)},
		{Machine: "m", Signal: "imax", SourceTime: b + 1, Value: telemetry.Int(math.MaxInt64)},
		{Machine: "m", Signal: "imin", SourceTime: b + 2, Value: telemetry.Int(math.MinInt64)},
		{Machine: "m", Signal: "negzero", SourceTime: b + 3, Value: telemetry.Float(math.Copysign(0, -1))},
		{Machine: "m", Signal: "fmax", SourceTime: b + 4, Value: telemetry.Float(math.MaxFloat64)},
		{Machine: "m", Signal: "fmin", SourceTime: b + 5, Value: telemetry.Float(-math.MaxFloat64)},
		{Machine: "m", Signal: "empty", SourceTime: b + 6, Value: telemetry.String("")},
		{Machine: "m", Signal: "bsend", SourceTime: b + 7, Value: telemetry.String(`ends in \`)},
		{Machine: "m", Signal: "crlf", SourceTime: b + 8, Value: telemetry.String("a\r\nb\n")},
		{Machine: "m", Signal: "nul", SourceTime: b + 9, Value: telemetry.String("a\x00b")},
		{Machine: "m", Signal: "uni", SourceTime: b + 10, Value: telemetry.String("Ofen ü ✓ 🔥")},
		{Machine: "tab\there", Signal: "tagtab", SourceTime: b + 11, Value: telemetry.Float(1)},
		{Machine: " lead", Signal: "taglead", SourceTime: b + 12, Value: telemetry.Float(1)},
		{Machine: "trail ", Signal: "tagtrail", SourceTime: b + 13, Value: telemetry.Float(1)},
		{Machine: `q"uote`, Signal: "tagquote", SourceTime: b + 14, Value: telemetry.Float(1)},
		{Machine: `back\slash`, Signal: "tagbs", SourceTime: b + 15, Value: telemetry.Float(1)},
		{Machine: `=`, Signal: "tageq", SourceTime: b + 16, Value: telemetry.Float(1)},
		{Machine: `#hash`, Signal: "taghash", SourceTime: b + 17, Value: telemetry.Float(1)},
		{Machine: "n\x00ul", Signal: "tagnul", SourceTime: b + 18, Value: telemetry.Float(1)},
		{Machine: "ü✓", Signal: "taguni", SourceTime: b + 19, Value: telemetry.Float(1)},
		{Machine: `dbl\\bs`, Signal: "tagdbs", SourceTime: b + 20, Value: telemetry.Float(1)},
		{Machine: "m", Signal: "strq", SourceTime: b + 21, Value: telemetry.String(`"`)},
		{Machine: "m", Signal: "strbsq", SourceTime: b + 22, Value: telemetry.String(`\"`)},
		{Machine: "m", Signal: "tiny", SourceTime: b + 23, Value: telemetry.Float(math.SmallestNonzeroFloat64)},
		{Machine: "m", Signal: "big", SourceTime: b + 24, Value: telemetry.Float(1e21)},
		{Machine: "m", Signal: "str=,", SourceTime: b + 25, Value: telemetry.String(`a=1,b="2" c`)},
		{Machine: "m", Signal: "bsn", SourceTime: b + 26, Value: telemetry.String(`a\nb`)},
		{Factory: "f", Line: " ", Machine: "m", Signal: "linespace", SourceTime: b + 27, Value: telemetry.Float(1)},
		{Machine: "m", Signal: `sig\` + "x", SourceTime: b + 28, Value: telemetry.Float(1)},
	}
	rej := writeAll(t, s, pts)
	for _, r := range rej {
		t.Errorf("rejected %q/%q: %s %s", r.Point.Machine, r.Point.Signal, r.Class, r.Reason)
	}
	rows := readBackRows(t, baseURL, db)
	for i := range pts {
		p := &pts[i]
		key := p.Signal + fmt.Sprintf("@%d", p.Time())
		row, ok := rows[key]
		if !ok {
			t.Errorf("point %d (%q) not found; rows: %d", i, key, len(rows))
			continue
		}
		want := expectLine("telemetry", p)
		for _, tag := range want.Tags {
			if row["tag:"+tag[0]] != tag[1] {
				t.Errorf("point %d tag %s reads back %q; want %q", i, tag[0], row["tag:"+tag[0]], tag[1])
			}
		}
		for f, v := range want.Fields {
			got := fmt.Sprint(row[f])
			if v, ok := v.(float64); ok { // exact, including the sign of zero
				n, isNum := row[f].(json.Number)
				g, err := n.Float64()
				if !isNum || err != nil || g != v || math.Signbit(g) != math.Signbit(v) {
					t.Errorf("point %d (%s) field %s reads back %s; want %v", i, p.Signal, f, got, v)
				}
				continue
			}
			if w := fmt.Sprint(v); got != w {
				t.Errorf("point %d (%s) field %s reads back %q; want %q", i, p.Signal, f, got, w)
			}
		}
	}
}
