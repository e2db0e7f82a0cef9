package influxdb

import (
	"bytes"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const t0 = int64(1_700_000_000_123_456_789)

func pt(machine, signal string, v telemetry.Value) telemetry.Point {
	return telemetry.Point{Factory: "f1", Line: "l1", Machine: machine, Signal: signal, SourceTime: t0, Value: v}
}

func mustEncoder(t testing.TB, measurement string) *Encoder {
	t.Helper()
	enc, err := NewEncoder(measurement)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

func TestEncodeLines(t *testing.T) {
	withTimes := pt("m1", "s", telemetry.Float(1.5))
	withTimes.ServerTime = t0 + 5
	serverOnly := pt("m1", "s", telemetry.Float(1.5))
	serverOnly.SourceTime, serverOnly.ServerTime = 0, t0+7
	withCode := pt("m1", "s", telemetry.Int(-3))
	withCode.Quality = telemetry.Quality{Level: telemetry.Bad, Code: 0x80340000}
	uncertain := pt("m1", "s", telemetry.Bool(false))
	uncertain.Quality.Level = telemetry.Uncertain
	noFactory := pt("m1", "s", telemetry.Float(2))
	noFactory.Factory, noFactory.Line = "", ""
	escaped := telemetry.Point{Factory: "plant one", Line: "a,b", Machine: "x=y", Signal: `temp "C"\raw`, SourceTime: t0, Value: telemetry.String("say \"hi\"\\\nnext line, a=b")}

	tests := []struct {
		name        string
		measurement string
		p           telemetry.Point
		want        string
	}{
		{"float", "telemetry", pt("m1", "temp", telemetry.Float(21.5)), `telemetry,factory=f1,line=l1,machine=m1,signal=temp value=21.5,quality="good" 1700000000123456789`},
		{"float integral", "telemetry", pt("m1", "temp", telemetry.Float(5)), `telemetry,factory=f1,line=l1,machine=m1,signal=temp value=5,quality="good" 1700000000123456789`},
		{"float exponent", "telemetry", pt("m1", "temp", telemetry.Float(1e6)), `telemetry,factory=f1,line=l1,machine=m1,signal=temp value=1e+06,quality="good" 1700000000123456789`},
		{"float tiny negative", "telemetry", pt("m1", "temp", telemetry.Float(-1.25e-300)), `telemetry,factory=f1,line=l1,machine=m1,signal=temp value=-1.25e-300,quality="good" 1700000000123456789`},
		{"float max", "telemetry", pt("m1", "temp", telemetry.Float(math.MaxFloat64)), `telemetry,factory=f1,line=l1,machine=m1,signal=temp value=1.7976931348623157e+308,quality="good" 1700000000123456789`},
		{"int", "telemetry", pt("m1", "count", telemetry.Int(math.MinInt64)), `telemetry,factory=f1,line=l1,machine=m1,signal=count value_int=-9223372036854775808i,quality="good" 1700000000123456789`},
		{"bool", "telemetry", pt("m1", "on", telemetry.Bool(true)), `telemetry,factory=f1,line=l1,machine=m1,signal=on value_bool=true,quality="good" 1700000000123456789`},
		{"string", "telemetry", pt("m1", "mode", telemetry.String("auto")), `telemetry,factory=f1,line=l1,machine=m1,signal=mode value_str="auto",quality="good" 1700000000123456789`},
		{"empty string", "telemetry", pt("m1", "mode", telemetry.String("")), `telemetry,factory=f1,line=l1,machine=m1,signal=mode value_str="",quality="good" 1700000000123456789`},
		{"uncertain", "telemetry", uncertain, `telemetry,factory=f1,line=l1,machine=m1,signal=s value_bool=false,quality="uncertain" 1700000000123456789`},
		{"status code", "telemetry", withCode, `telemetry,factory=f1,line=l1,machine=m1,signal=s value_int=-3i,quality="bad",status=2150891520i 1700000000123456789`},
		{"server time", "telemetry", withTimes, `telemetry,factory=f1,line=l1,machine=m1,signal=s value=1.5,quality="good",server_time=1700000000123456794i 1700000000123456789`},
		{"server time only", "telemetry", serverOnly, `telemetry,factory=f1,line=l1,machine=m1,signal=s value=1.5,quality="good" 1700000000123456796`},
		{"empty tags omitted", "telemetry", noFactory, `telemetry,machine=m1,signal=s value=2,quality="good" 1700000000123456789`},
		{"escaping", "my meas,x", escaped, `my\ meas\,x,factory=plant\ one,line=a\,b,machine=x\=y,signal=temp\ "C"\raw value_str="say \"hi\"\\` + "\n" + `next line, a=b",quality="good" 1700000000123456789`},
		{"negative time", "telemetry", telemetry.Point{Machine: "m", Signal: "s", SourceTime: -5, Value: telemetry.Int(1)}, `telemetry,machine=m,signal=s value_int=1i,quality="good" -5`},
		{"unicode", "telemetry", telemetry.Point{Machine: "Presse-Ü", Signal: "温度", SourceTime: 1, Value: telemetry.String("ä")}, `telemetry,machine=Presse-Ü,signal=温度 value_str="ä",quality="good" 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := mustEncoder(t, tt.measurement)
			got, err := enc.Append([]byte("prefix\n"), &tt.p)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if want := "prefix\n" + tt.want + "\n"; string(got) != want {
				t.Errorf("line\n got %q\nwant %q", got, want)
			}
			checkRoundTrip(t, tt.measurement, []telemetry.Point{tt.p}, got[len("prefix\n"):])
		})
	}
}

// checkRoundTrip parses body with the InfluxDB-faithful oracle and compares every line with
// the point it came from.
func checkRoundTrip(t *testing.T, measurement string, pts []telemetry.Point, body []byte) {
	t.Helper()
	lines, failed := parseLP(body)
	if len(failed) > 0 {
		t.Fatalf("InfluxDB would not parse %q: %s", failed[0].Line, failed[0].Reason)
	}
	if len(lines) != len(pts) {
		t.Fatalf("InfluxDB would read %d lines, want %d, from %q", len(lines), len(pts), body)
	}
	for i := range pts {
		want := expectLine(measurement, &pts[i])
		got := lines[i]
		got.Raw, got.FieldOrder = "", nil
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("point %d reads back as\n %+v\nwant\n %+v\nfrom %q", i, got, want, body)
		}
	}
}

// expectLine is what InfluxDB must read for p, following the documented layout.
func expectLine(measurement string, p *telemetry.Point) parsedLine {
	pl := parsedLine{Measurement: measurement, Fields: map[string]any{}}
	for _, tag := range [][2]string{{"factory", p.Factory}, {"line", p.Line}, {"machine", p.Machine}, {"signal", p.Signal}} {
		if tag[1] != "" {
			pl.Tags = append(pl.Tags, tag)
		}
	}
	switch p.Value.Kind {
	case telemetry.KindFloat:
		pl.Fields["value"] = p.Value.Float()
	case telemetry.KindInt:
		pl.Fields["value_int"] = p.Value.Int()
	case telemetry.KindBool:
		pl.Fields["value_bool"] = p.Value.Bool()
	case telemetry.KindString:
		pl.Fields["value_str"] = p.Value.Str
	}
	pl.Fields["quality"] = p.Quality.Level.String()
	if p.Quality.Code != 0 {
		pl.Fields["status"] = int64(p.Quality.Code)
	}
	if p.SourceTime != 0 && p.ServerTime != 0 {
		pl.Fields["server_time"] = p.ServerTime
	}
	pl.Time = p.Time()
	return pl
}

func TestEncodeRejects(t *testing.T) {
	long := strings.Repeat("x", maxKeyLength)
	tests := []struct {
		name  string
		p     telemetry.Point
		class string
		text  string
	}{
		{"NaN", pt("m", "s", telemetry.Float(math.NaN())), ClassNotFinite, "NaN"},
		{"+Inf", pt("m", "s", telemetry.Float(math.Inf(1))), ClassNotFinite, "infinite"},
		{"-Inf", pt("m", "s", telemetry.Float(math.Inf(-1))), ClassNotFinite, "infinite"},
		{"no timestamp", telemetry.Point{Machine: "m", Signal: "s", Value: telemetry.Int(1)}, ClassNoTimestamp, "timestamp"},
		{"time below range", telemetry.Point{Machine: "m", Signal: "s", SourceTime: math.MinInt64, Value: telemetry.Int(1)}, ClassTimeRange, "range"},
		{"time above range", telemetry.Point{Machine: "m", Signal: "s", SourceTime: math.MaxInt64, Value: telemetry.Int(1)}, ClassTimeRange, "range"},
		{"no machine", pt("", "s", telemetry.Int(1)), ClassMissingTag, "machine"},
		{"no signal", pt("m", "", telemetry.Int(1)), ClassMissingTag, "signal"},
		{"invalid UTF-8 machine", pt("m\xff", "s", telemetry.Int(1)), ClassInvalidName, "machine \"m\\xff\" is not valid UTF-8"},
		{"invalid UTF-8 factory", telemetry.Point{Factory: "\xc3(", Machine: "m", Signal: "s", SourceTime: 1, Value: telemetry.Int(1)}, ClassInvalidName, "factory"},
		{"newline in signal", pt("m", "a\nb", telemetry.Int(1)), ClassInvalidName, "line break"},
		{"CR in line", telemetry.Point{Line: "a\r", Machine: "m", Signal: "s", SourceTime: 1, Value: telemetry.Int(1)}, ClassInvalidName, "line break"},
		{"trailing backslash", pt(`m\`, "s", telemetry.Int(1)), ClassInvalidName, "ends in a backslash"},
		{"backslash before comma", pt(`a\,b`, "s", telemetry.Int(1)), ClassInvalidName, "backslash before ','"},
		{"backslash before space", pt("m", `a\ b`, telemetry.Int(1)), ClassInvalidName, "backslash before ' '"},
		{"backslash before equals", pt("m", `a\=b`, telemetry.Int(1)), ClassInvalidName, "backslash before '='"},
		{"key too long", pt(long, "s", telemetry.Int(1)), ClassKeyTooLong, "65535"},
		{"no kind", pt("m", "s", telemetry.Value{}), ClassInvalidValue, "kind"},
		{"bad quality level", telemetry.Point{Machine: "m", Signal: "s", SourceTime: 1, Value: telemetry.Int(1), Quality: telemetry.Quality{Level: 7}}, ClassInvalidValue, "quality level 7"},
	}
	enc := mustEncoder(t, "telemetry")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := enc.Append(dst, &tt.p)
			var pe *PointError
			if !errors.As(err, &pe) {
				t.Fatalf("Append = %q, %v; want a *PointError", got, err)
			}
			if pe.Class != tt.class || !strings.Contains(pe.Reason, tt.text) {
				t.Errorf("rejection = %s %q; want class %s and a reason containing %q", pe.Class, pe.Reason, tt.class, tt.text)
			}
			if string(got) != "keep" {
				t.Errorf("dst = %q after a rejection; want it unchanged", got)
			}
		})
	}
}

func TestEncodeKeyLengthBoundary(t *testing.T) {
	enc := mustEncoder(t, "m")
	// "m,machine=" + machine + ",signal=s" plus 4 and "quality" (the longest field key of an
	// int point) must be at most 65535.
	fixed := len("m,machine=") + len(",signal=s") + fieldKeySeparatorLen + len("value_int")
	p := telemetry.Point{Machine: strings.Repeat("x", maxKeyLength-fixed), Signal: "s", SourceTime: 1, Value: telemetry.Int(1)}
	if _, err := enc.Append(nil, &p); err != nil {
		t.Fatalf("a key of exactly the limit was refused: %v", err)
	}
	p.Machine += "x"
	if _, err := enc.Append(nil, &p); err == nil {
		t.Fatal("a key one byte over the limit was accepted")
	}
}

func TestValidateMeasurement(t *testing.T) {
	for _, m := range []string{"telemetry", "my meas", " lead", "a,b", "a=b", `a\b`, `a"b`, "a\tb", "Ü"} {
		if err := ValidateMeasurement(m); err != nil {
			t.Errorf("ValidateMeasurement(%q) = %v; want nil", m, err)
		}
	}
	for _, m := range []string{"", "#comment", "\tx", "\x00x", "a\nb", `a\`, `a\ b`, "\xff"} {
		if err := ValidateMeasurement(m); err == nil {
			t.Errorf("ValidateMeasurement(%q) = nil; want an error", m)
		}
	}
}

func TestEncodeAllocatesNothing(t *testing.T) {
	enc := mustEncoder(t, "telemetry")
	pts := []telemetry.Point{
		pt("press-01", "temperature", telemetry.Float(21.5)),
		pt("press-01", "count", telemetry.Int(42)),
		pt("press 01", "mode,x", telemetry.String(`say "hi"`)),
		{Factory: "f", Machine: "m", Signal: "s", SourceTime: t0, ServerTime: t0 + 1, Value: telemetry.Bool(true), Quality: telemetry.Quality{Level: telemetry.Bad, Code: 5}},
	}
	buf := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		b := buf[:0]
		for i := range pts {
			b, _ = enc.Append(b, &pts[i])
		}
	})
	if allocs != 0 {
		t.Errorf("Append allocates %.1f times per run; want 0", allocs)
	}
}

// goldenPoints covers every kind, quality, optional field and escape in one file that the
// README's layout section can be checked against.
func goldenPoints() []telemetry.Point {
	return []telemetry.Point{
		{Factory: "berlin", Line: "line-1", Machine: "press-01", Signal: "temperature", SourceTime: t0, Value: telemetry.Float(71.25)},
		{Factory: "berlin", Line: "line-1", Machine: "press-01", Signal: "strokes", SourceTime: t0, ServerTime: t0 + 1_500_000, Value: telemetry.Int(120_345)},
		{Factory: "berlin", Line: "line-1", Machine: "press-01", Signal: "running", SourceTime: t0, Value: telemetry.Bool(true), Quality: telemetry.Quality{Level: telemetry.Uncertain, Code: 0x40000000}},
		{Factory: "berlin", Line: "line-1", Machine: "press-01", Signal: "mode", ServerTime: t0, Value: telemetry.String("auto"), Quality: telemetry.Quality{Level: telemetry.Bad, Code: 0x80000000}},
		{Machine: "oven 2", Signal: "zone,a=1", SourceTime: t0, Value: telemetry.String("door \"open\"\\check\nsecond line")},
		{Machine: "oven 2", Signal: "power", SourceTime: t0, Value: telemetry.Float(1e6)},
	}
}

func TestGoldenLines(t *testing.T) {
	enc := mustEncoder(t, "telemetry")
	var got []byte
	pts := goldenPoints()
	for i := range pts {
		var err error
		if got, err = enc.Append(got, &pts[i]); err != nil {
			t.Fatal(err)
		}
	}
	checkRoundTrip(t, "telemetry", pts, got)
	path := filepath.Join("testdata", "lines.golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("lines differ from %s (run go test -update after checking the change)\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// FuzzEncode checks that every line the encoder writes reads back, through the scanner
// InfluxDB uses, as exactly the point it came from, also when several lines share a body,
// and that it refuses only points the documented rules refuse.
func FuzzEncode(f *testing.F) {
	f.Add("f", "l", "m", "s", "str", 1.5, int64(7), uint8(0), uint32(0), int64(1), int64(0))
	f.Add("a b", "c,d", "e=f", `g\h`, "x\"y\\z\n", -0.0, int64(-1), uint8(3), uint32(5), int64(-9), int64(3))
	f.Add(`\`, `a\,`, "\"", "=", "\",\"=,", 1e300, int64(0), uint8(2), uint32(1), int64(1), int64(1))
	f.Add("", "", "m", "s", `\"\\`, 5e-324, int64(1), uint8(3), uint32(0), int64(0), int64(5))
	f.Add("\"a=", ",b ", "m \"", "s=\"", "v", 2.0, int64(2), uint8(3), uint32(0), int64(100), int64(0))
	f.Fuzz(func(t *testing.T, factory, line, machine, signal, str string, fv float64, iv int64, kind uint8, code uint32, src, srv int64) {
		var v telemetry.Value
		switch kind % 4 {
		case 0:
			v = telemetry.Float(fv)
		case 1:
			v = telemetry.Int(iv)
		case 2:
			v = telemetry.Bool(iv%2 == 0)
		case 3:
			v = telemetry.String(str)
		}
		p := telemetry.Point{Factory: factory, Line: line, Machine: machine, Signal: signal, SourceTime: src, ServerTime: srv,
			Value: v, Quality: telemetry.Quality{Level: telemetry.Level(code % 3), Code: code}}
		enc := mustEncoder(t, "t m,x")
		out, err := enc.Append(nil, &p)
		if err != nil {
			if !shouldReject(&p) {
				t.Fatalf("refused %+v: %v", p, err)
			}
			return
		}
		if shouldReject(&p) {
			t.Fatalf("accepted %+v as %q; it breaks a documented rule", p, out)
		}
		// Two copies in one body: the first line must not swallow or split the second.
		q := p
		q.Signal += "2"
		if out, err = enc.Append(out, &q); err != nil {
			t.Fatalf("second point refused: %v", err)
		}
		checkRoundTrip(t, "t m,x", []telemetry.Point{p, q}, out)
	})
}

// shouldReject restates the documented refusal rules independently of the encoder.
func shouldReject(p *telemetry.Point) bool {
	if p.Machine == "" || p.Signal == "" || p.Time() == 0 || p.Time() < minTime || p.Time() > maxTime {
		return true
	}
	if p.Value.Kind == telemetry.KindFloat && (math.IsNaN(p.Value.Float()) || math.IsInf(p.Value.Float(), 0)) {
		return true
	}
	for _, s := range []string{p.Factory, p.Line, p.Machine, p.Signal} {
		if !utf8.ValidString(s) || strings.ContainsAny(s, "\r\n") || strings.HasSuffix(s, `\`) ||
			strings.Contains(s, `\,`) || strings.Contains(s, `\=`) || strings.Contains(s, `\ `) {
			return true
		}
	}
	return false
}
