package mqtt

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

func unsafeStringData(s string) *byte { return unsafe.StringData(s) }

const recv = int64(1_800_000_000_000_000_000) // receive time of every decoded message

// pt is a compact expected point.
type pt struct {
	factory, line, machine, signal string
	ts                             int64
	v                              telemetry.Value
	q                              telemetry.Quality
}

func (p pt) point() telemetry.Point {
	return telemetry.Point{Factory: p.factory, Line: p.line, Machine: p.machine, Signal: p.signal,
		SourceTime: p.ts, ServerTime: recv, Value: p.v, Quality: p.q}
}

func mustDecoder(t testing.TB, tp Topic, opts DecoderOptions) *Decoder {
	t.Helper()
	d, err := NewDecoder(tp, opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var (
	plantTopic  = Topic{Pattern: "plant/{line}/{machine}/telemetry", QoS: 1}
	sensorTopic = Topic{Pattern: "sensors/{machine}/{signal}", QoS: 1, Factory: "north"}
	motorTopic  = Topic{Pattern: "motors/{machine}", QoS: 1, Signal: "motor"}
)

const ms = int64(time.Millisecond)

func TestDecodeShapes(t *testing.T) {
	f, b, s := telemetry.Float, telemetry.Bool, telemetry.String
	good, bad := telemetry.Quality{}, telemetry.Quality{Level: telemetry.Bad}
	tests := []struct {
		name    string
		topic   Topic
		msg     string // topic name
		payload string
		want    []pt
	}{
		{"bare number", sensorTopic, "sensors/m1/temp", `21.5`,
			[]pt{{"north", "", "m1", "temp", 0, f(21.5), good}}},
		{"bare string", sensorTopic, "sensors/m1/state", ` "running" `,
			[]pt{{"north", "", "m1", "state", 0, s("running"), good}}},
		{"bare bool", sensorTopic, "sensors/m1/on", `true`,
			[]pt{{"north", "", "m1", "on", 0, b(true), good}}},
		{"bare null", sensorTopic, "sensors/m1/on", `null`, nil},
		{"bare scalar, fixed signal", motorTopic, "motors/m1", `3`,
			[]pt{{"", "", "m1", "motor", 0, f(3), good}}},
		{"single sample", sensorTopic, "sensors/m1/temp", `{"value": 21.5, "ts": 1700000000123, "quality": "good"}`,
			[]pt{{"north", "", "m1", "temp", 1700000000123 * ms, f(21.5), good}}},
		{"single sample, named", plantTopic, "plant/l1/m1/telemetry", `{"signal": "temp", "value": 21.5, "ts": 1700000000123, "unit": "C"}`,
			[]pt{{"", "l1", "m1", "temp", 1700000000123 * ms, f(21.5), good}}},
		{"single sample, named under topic signal", motorTopic, "motors/m1", `{"signal": "current", "value": 3.2}`,
			[]pt{{"", "", "m1", "motor.current", 0, f(3.2), good}}},
		{"single sample, null value", sensorTopic, "sensors/m1/temp", `{"value": null, "ts": 1700000000123}`, nil},
		{"single sample, null signal uses topic", sensorTopic, "sensors/m1/temp", `{"signal": null, "value": false}`,
			[]pt{{"north", "", "m1", "temp", 0, b(false), good}}},
		{"single sample, bad quality code", sensorTopic, "sensors/m1/temp", `{"value": 1, "quality": 2147483648}`,
			[]pt{{"north", "", "m1", "temp", 0, f(1), telemetry.Quality{Level: telemetry.Bad, Code: 2147483648}}}},
		{"object of signals", plantTopic, "plant/l1/m1/telemetry",
			`{"ts": 1700000000123, "temp": 21.5, "rpm": 1500, "motor": {"current": 3.2, "on": true}, "mode": "auto", "spare": null, "quality": "bad"}`,
			[]pt{
				{"", "l1", "m1", "temp", 1700000000123 * ms, f(21.5), bad},
				{"", "l1", "m1", "rpm", 1700000000123 * ms, f(1500), bad},
				{"", "l1", "m1", "motor.current", 1700000000123 * ms, f(3.2), bad},
				{"", "l1", "m1", "motor.on", 1700000000123 * ms, b(true), bad},
				{"", "l1", "m1", "mode", 1700000000123 * ms, s("auto"), bad},
			}},
		{"object of signals under topic signal", motorTopic, "motors/m1", `{"current": 3.2, "temp": {"winding": 80}}`,
			[]pt{
				{"", "", "m1", "motor.current", 0, f(3.2), good},
				{"", "", "m1", "motor.temp.winding", 0, f(80), good},
			}},
		{"object of only nulls", plantTopic, "plant/l1/m1/telemetry", `{"ts": 1700000000123, "temp": null}`, nil},
		{"nested ts is a signal", plantTopic, "plant/l1/m1/telemetry", `{"a": {"ts": 5}}`,
			[]pt{{"", "l1", "m1", "a.ts", 0, f(5), good}}},
		{"array of samples", plantTopic, "plant/l1/m1/telemetry",
			`[{"ts": 1700000000123, "temp": 21.5}, {"ts": 1700000000223, "temp": 21.7, "quality": "uncertain"}, {"signal": "rpm", "value": 1500}]`,
			[]pt{
				{"", "l1", "m1", "temp", 1700000000123 * ms, f(21.5), good},
				{"", "l1", "m1", "temp", 1700000000223 * ms, f(21.7), telemetry.Quality{Level: telemetry.Uncertain}},
				{"", "l1", "m1", "rpm", 0, f(1500), good},
			}},
		{"escaped keys and strings", plantTopic, "plant/l1/m1/telemetry", `{"t\u00e9mp": "a\"b"}`,
			[]pt{{"", "l1", "m1", "témp", 0, s(`a"b`), good}}},
		{"large and negative numbers", plantTopic, "plant/l1/m1/telemetry", `{"a": -1.5e300, "b": 12345678901234567890}`,
			[]pt{
				{"", "l1", "m1", "a", 0, f(-1.5e300), good},
				{"", "l1", "m1", "b", 0, f(12345678901234567890), good},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := mustDecoder(t, tt.topic, DecoderOptions{})
			prefix := []telemetry.Point{{Machine: "keep", Signal: "me"}}
			got, err := d.Decode(tt.msg, []byte(tt.payload), recv, prefix)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			want := []telemetry.Point{prefix[0]}
			for _, p := range tt.want {
				want = append(want, p.point())
			}
			if !slices.Equal(got, want) {
				t.Errorf("Decode(%s)\n got %+v\nwant %+v", tt.payload, got, want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	tsTopic := func(format string) Topic {
		tp := sensorTopic
		tp.Payload.TimestampFormat = format
		return tp
	}
	const plant = "plant/l1/m1/telemetry"
	tests := []struct {
		name    string
		topic   Topic
		msg     string
		payload string
		class   string
		reason  string
	}{
		{"too large", plantTopic, plant, `{"a": "` + strings.Repeat("x", 100) + `"}`, ClassPayloadTooLarge,
			`payload is 109 bytes, more than max_payload_bytes 100`},
		{"too many points", plantTopic, plant, `{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6}`, ClassPayloadTooLarge,
			`payload decodes to 6 points, more than max_batch_points 5`},
		{"empty", plantTopic, plant, " \n", ClassJSONSyntax, `payload is empty; expected a JSON value`},
		{"syntax", plantTopic, plant, `{"a": 1,}`, ClassJSONSyntax,
			`payload is not valid JSON: cannot parse JSON: cannot parse object: cannot find opening '"" for object key; unparsed tail: "}"`},
		{"trailing garbage", plantTopic, plant, `{"a": 1} x`, ClassJSONSyntax,
			`payload is not valid JSON: unexpected tail: "x"`},
		{"bad number", plantTopic, plant, `{"a": 1-2}`, ClassJSONSyntax, `"a": 1-2 is not a valid JSON number`},
		{"NaN", plantTopic, plant, `{"a": NaN}`, ClassWrongType, `"a": NaN is not a finite number`},
		{"overflow", plantTopic, plant, `{"a": {"b": 1e400}}`, ClassWrongType, `"a.b": 1e400 is not a finite number`},
		{"array in object", plantTopic, plant, `{"ts": 1, "temp": [1, 2]}`, ClassWrongType,
			`"temp" is an array [1,2]; expected a number, string, true, false or null`},
		{"object value", sensorTopic, "sensors/m1/temp", `{"value": {"a": 1}}`, ClassWrongType,
			`"value" is an object {"a":1}; expected a number, string, true, false or null`},
		{"array value", sensorTopic, "sensors/m1/temp", `{"value": [1]}`, ClassWrongType,
			`"value" is an array [1]; expected a number, string, true, false or null`},
		{"scalar in array", plantTopic, plant, `[{"a": 1}, 5]`, ClassWrongType,
			`sample [1] is a number 5; an array must hold sample objects`},
		{"null in array", plantTopic, plant, `[null]`, ClassWrongType,
			`sample [0] is null; an array must hold sample objects`},
		{"array in array sample", plantTopic, plant, `[{"a": 1}, {"b": [true]}]`, ClassWrongType,
			`sample [1]: "b" is an array [true]; expected a number, string, true, false or null`},
		{"signal not a string", plantTopic, plant, `{"signal": 5, "value": 1}`, ClassWrongType,
			`"signal" is a number 5; expected a string naming the signal`},
		{"quality name", plantTopic, plant, `{"quality": "excellent", "a": 1}`, ClassWrongType,
			`"quality": "excellent" is not a quality; expected "good", "uncertain", "bad" or a code from 0 (good) to 4294967295 (bad)`},
		{"quality fraction", plantTopic, plant, `{"quality": 1.5, "a": 1}`, ClassWrongType,
			`"quality": 1.5 is not a quality; expected "good", "uncertain", "bad" or a code from 0 (good) to 4294967295 (bad)`},
		{"quality too large", plantTopic, plant, `{"quality": 4294967296, "a": 1}`, ClassWrongType,
			`"quality": 4294967296 is not a quality; expected "good", "uncertain", "bad" or a code from 0 (good) to 4294967295 (bad)`},
		{"quality bool", plantTopic, plant, `[{"a": 1}, {"quality": true, "a": 1}]`, ClassWrongType,
			`sample [1]: "quality": true is not a quality; expected "good", "uncertain", "bad" or a code from 0 (good) to 4294967295 (bad)`},
		{"missing value", plantTopic, plant, `{"signal": "temp", "ts": 1700000000123}`, ClassMissingField,
			`the sample has "signal" "temp" but no "value" field; expected {"signal": ..., "value": ...}`},
		{"timestamp not a number", plantTopic, plant, `{"ts": "abc", "a": 1}`, ClassBadTimestamp,
			`"ts": "abc" is not a unix_ms timestamp; expected milliseconds since 1970-01-01T00:00:00Z, such as 1700000000123`},
		{"timestamp bool", plantTopic, plant, `{"ts": true, "a": 1}`, ClassBadTimestamp,
			`"ts" is a bool true; expected milliseconds since 1970-01-01T00:00:00Z, such as 1700000000123`},
		{"timestamp object", plantTopic, plant, `{"ts": {}, "a": 1}`, ClassBadTimestamp,
			`"ts" is an object {}; expected milliseconds since 1970-01-01T00:00:00Z, such as 1700000000123`},
		{"timestamp negative", plantTopic, plant, `{"ts": -5, "a": 1}`, ClassBadTimestamp,
			`"ts": -5 is out of range for a unix_ms timestamp; expected a time from 1970 to 2262`},
		{"timestamp zero", plantTopic, plant, `{"ts": 0, "a": 1}`, ClassBadTimestamp,
			`"ts": 0 is out of range for a unix_ms timestamp; expected a time from 1970 to 2262`},
		{"timestamp too late", plantTopic, plant, `{"ts": 9300000000000, "a": 1}`, ClassBadTimestamp,
			`"ts": 9300000000000 is out of range for a unix_ms timestamp; expected a time from 1970 to 2262`},
		{"timestamp in array", plantTopic, plant, `[{"ts": 1, "a": 1}, {"ts": "x", "a": 1}]`, ClassBadTimestamp,
			`sample [1]: "ts": "x" is not a unix_ms timestamp; expected milliseconds since 1970-01-01T00:00:00Z, such as 1700000000123`},
		{"rfc3339 number", tsTopic("rfc3339"), "sensors/m1/temp", `{"value": 1, "ts": 1700000000}`, ClassBadTimestamp,
			`"ts" is a number 1700000000; expected an RFC 3339 time such as "2023-11-14T22:13:20.123Z"`},
		{"rfc3339 wrong layout", tsTopic("rfc3339"), "sensors/m1/temp", `{"value": 1, "ts": "2023-11-14 22:13:20"}`, ClassBadTimestamp,
			`"ts": "2023-11-14 22:13:20" is not an RFC 3339 time such as "2023-11-14T22:13:20.123Z"`},
		{"rfc3339 before 1970", tsTopic("rfc3339"), "sensors/m1/temp", `{"value": 1, "ts": "1969-12-31T23:59:59Z"}`, ClassBadTimestamp,
			`"ts": "1969-12-31T23:59:59Z" is out of range; expected a time from 1970 to 2262`},
		{"layout mismatch", tsTopic("2006-01-02 15:04:05"), "sensors/m1/temp", `{"value": 1, "ts": "14.11.2023"}`, ClassBadTimestamp,
			`"ts": "14.11.2023" is not a time in the layout "2006-01-02 15:04:05", such as "2023-11-14 22:13:20"`},
		{"bare value without signal", plantTopic, plant, `21.5`, ClassNoSignal,
			`payload is the bare value 21.5, but topic pattern "plant/{line}/{machine}/telemetry" neither captures nor sets a signal; send an object such as {"signal": "temp", "value": 21.5} or set signal`},
		{"sample without signal", plantTopic, plant, `{"value": 21.5}`, ClassNoSignal,
			`the sample has no "signal", and topic pattern "plant/{line}/{machine}/telemetry" neither captures nor sets a signal`},
		{"empty signal", plantTopic, plant, `{"signal": "", "value": 1}`, ClassNoSignal,
			`"signal" is empty; expected the signal's name`},
		{"no signal keys", plantTopic, plant, `{"ts": 1700000000123, "quality": "good"}`, ClassNoSignal,
			`the object holds no signal (keys other than "ts" and "quality")`},
		{"empty object", plantTopic, plant, `{}`, ClassNoSignal,
			`the object holds no signal (keys other than "ts" and "quality")`},
		{"empty array", plantTopic, plant, `[]`, ClassNoSignal, `payload is an empty array; expected sample objects`},
		{"empty key", plantTopic, plant, `{"": 1}`, ClassNoSignal, `an empty key; signal names must not be empty`},
		{"empty nested key", plantTopic, plant, `[{"a": {"b": {"": 1}}}]`, ClassNoSignal,
			`sample [0]: an empty key inside "a.b"; signal names must not be empty`},
		{"topic mismatch", plantTopic, "plant/l1/m1/status", `1`, ClassTopicMismatch,
			`topic "plant/l1/m1/status" does not match pattern "plant/{line}/{machine}/telemetry"`},
		{"empty capture", plantTopic, "plant/l1//telemetry", `1`, ClassTopicMismatch,
			`topic "plant/l1//telemetry" leaves {machine} empty (level 3 of pattern "plant/{line}/{machine}/telemetry")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := mustDecoder(t, tt.topic, DecoderOptions{MaxPayloadBytes: 100, MaxPoints: 5})
			dst := make([]telemetry.Point, 1, 8)
			got, err := d.Decode(tt.msg, []byte(tt.payload), recv, dst)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("Decode(%s) = %v, %v; want a *DecodeError", tt.payload, got, err)
			}
			if de.Class != tt.class || de.Reason != tt.reason || err.Error() != tt.reason {
				t.Errorf("Decode(%s) error\n got %s: %s\nwant %s: %s", tt.payload, de.Class, de.Reason, tt.class, tt.reason)
			}
			if len(got) != 1 || got[0] != (telemetry.Point{}) {
				t.Errorf("Decode(%s) returned %d points with the error; want dst unchanged", tt.payload, len(got))
			}
			if extra := dst[1:cap(dst)]; slices.ContainsFunc(extra, func(p telemetry.Point) bool { return p != telemetry.Point{} }) {
				t.Errorf("Decode(%s) left points of the refused message in dst's array", tt.payload)
			}
		})
	}
}

func TestDecodeTimestampFormats(t *testing.T) {
	base := time.Date(2023, 11, 14, 22, 13, 20, 123456789, time.UTC).UnixNano()
	tests := []struct {
		format, ts string
		want       int64
	}{
		{"unix", `1700000000`, 1700000000 * int64(time.Second)},
		{"unix", `1700000000.123456789`, base},
		{"unix", `1700000000.1234567891234`, base}, // digits beyond ns are truncated
		{"unix", `"1700000000.5"`, 1700000000*int64(time.Second) + 5e8},
		{"unix", `1.7e9`, 1700000000 * int64(time.Second)},
		{"unix", `17000000001234E-4`, 1700000000123400000},
		{"unix_ms", `1700000000123`, 1700000000123 * ms},
		{"unix_ms", `1700000000123.456`, 1700000000123456000},
		{"unix_ms", `"1700000000123"`, 1700000000123 * ms},
		{"unix_us", `1700000000123456`, 1700000000123456000},
		{"unix_ns", `1700000000123456789`, base},
		{"unix_ns", `9223372036854775807`, math.MaxInt64},
		{"rfc3339", `"2023-11-14T22:13:20.123456789Z"`, base},
		{"rfc3339", `"2023-11-14T23:13:20.123456789+01:00"`, base},
		{"rfc3339", `"2023-11-14T22:13:20Z"`, 1700000000 * int64(time.Second)},
		{"2006-01-02 15:04:05.000", `"2023-11-14 22:13:20.123"`, 1700000000123 * ms},
		{"02.01.2006 15:04:05 -0700", `"14.11.2023 23:13:20 +0100"`, 1700000000 * int64(time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.format+" "+tt.ts, func(t *testing.T) {
			tp := sensorTopic
			tp.Payload.TimestampFormat = tt.format
			d := mustDecoder(t, tp, DecoderOptions{})
			got, err := d.Decode("sensors/m/s", []byte(`{"value": 1, "ts": `+tt.ts+`}`), recv, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got[0].SourceTime != tt.want {
				t.Errorf("SourceTime = %d (%s), want %d (%s)", got[0].SourceTime, time.Unix(0, got[0].SourceTime).UTC(),
					tt.want, time.Unix(0, tt.want).UTC())
			}
		})
	}
}

func TestDecodeQuality(t *testing.T) {
	tests := []struct {
		q    string
		want telemetry.Quality
	}{
		{`"good"`, telemetry.Quality{Level: telemetry.Good}},
		{`"Good"`, telemetry.Quality{Level: telemetry.Good}},
		{`"UNCERTAIN"`, telemetry.Quality{Level: telemetry.Uncertain}},
		{`"bad"`, telemetry.Quality{Level: telemetry.Bad}},
		{`null`, telemetry.Quality{Level: telemetry.Good}},
		{`0`, telemetry.Quality{Level: telemetry.Good}},
		{`1`, telemetry.Quality{Level: telemetry.Bad, Code: 1}},
		{`192`, telemetry.Quality{Level: telemetry.Bad, Code: 192}},
		{`4294967295`, telemetry.Quality{Level: telemetry.Bad, Code: math.MaxUint32}},
	}
	d := mustDecoder(t, sensorTopic, DecoderOptions{})
	for _, tt := range tests {
		got, err := d.Decode("sensors/m/s", []byte(`{"value": 1, "quality": `+tt.q+`}`), recv, nil)
		if err != nil {
			t.Errorf("quality %s: %v", tt.q, err)
			continue
		}
		if got[0].Quality != tt.want {
			t.Errorf("quality %s = %+v, want %+v", tt.q, got[0].Quality, tt.want)
		}
	}
}

func TestDecodeCustomFields(t *testing.T) {
	tp := Topic{Pattern: "x/{machine}", Payload: Payload{
		TimestampField: "time", TimestampFormat: "unix", ValueField: "v", SignalField: "name",
		QualityField: "status", Separator: "_",
	}}
	d := mustDecoder(t, tp, DecoderOptions{})
	got, err := d.Decode("x/m", []byte(`[{"time": 2, "name": "a", "v": 1, "status": 3}, {"time": 3, "ts": 4, "b": {"c": 5}}]`), recv, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []telemetry.Point{
		pt{"", "", "m", "a", 2e9, telemetry.Float(1), telemetry.Quality{Level: telemetry.Bad, Code: 3}}.point(),
		pt{"", "", "m", "ts", 3e9, telemetry.Float(4), telemetry.Quality{}}.point(),
		pt{"", "", "m", "b_c", 3e9, telemetry.Float(5), telemetry.Quality{}}.point(),
	}
	if !slices.Equal(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestDecodeInternsNames(t *testing.T) {
	names := telemetry.NewInterner(100)
	d := mustDecoder(t, plantTopic, DecoderOptions{Names: names})
	a, err := d.Decode("plant/l1/m1/telemetry", []byte(`{"temp": 1, "motor": {"rpm": 2}}`), recv, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.Decode("plant/l1/m1/telemetry", []byte(`{"temp": 1, "motor": {"rpm": 2}}`), recv, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		for _, pair := range [][2]string{{a[i].Line, b[i].Line}, {a[i].Machine, b[i].Machine}, {a[i].Signal, b[i].Signal}} {
			if unsafeStringData(pair[0]) != unsafeStringData(pair[1]) {
				t.Errorf("point %d: %q is not shared between messages", i, pair[0])
			}
		}
	}
	if names.Len() != 4 { // l1, m1, temp, motor.rpm
		t.Errorf("interner holds %d names, want 4", names.Len())
	}
}

func TestNewDecoderRejectsInvalidTopic(t *testing.T) {
	_, err := NewDecoder(Topic{Pattern: "a/{lin}", QoS: 1}, DecoderOptions{})
	want := `mqtt topic "a/{lin}": pattern: "a/{lin}": capture {lin} is not one of factory, line, machine, signal`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("NewDecoder error = %v, want prefix %q", err, want)
	}
}

func TestScaleDecimal(t *testing.T) {
	tests := []struct {
		in    string
		shift int
		want  int64
		st    scaleStatus
	}{
		{"0", 0, 0, scaleOK},
		{"123", 0, 123, scaleOK},
		{"123", 3, 123000, scaleOK},
		{"1.5", 3, 1500, scaleOK},
		{"1.2345", 3, 1234, scaleOK},
		{"1.2345", 0, 1, scaleOK},
		{"12e2", 0, 1200, scaleOK},
		{"12E+2", 1, 12000, scaleOK},
		{"1234e-2", 0, 12, scaleOK},
		{"1e-30", 9, 0, scaleOK},
		{"0e999999999", 9, 0, scaleOK},
		{"9223372036854775807", 0, math.MaxInt64, scaleOK},
		{"9223372036854775808", 0, 0, scaleRange},
		{"9223372036854775807", 1, 0, scaleRange},
		{"1e19", 0, 0, scaleRange},
		{"-1", 0, 0, scaleRange},
		{"-x", 0, 0, scaleSyntax},
		{"", 0, 0, scaleSyntax},
		{".5", 0, 0, scaleSyntax},
		{"1.", 0, 0, scaleSyntax},
		{"1e", 0, 0, scaleSyntax},
		{"1e+", 0, 0, scaleSyntax},
		{"+1", 0, 0, scaleSyntax},
		{"1x", 0, 0, scaleSyntax},
		{"1-2", 0, 0, scaleSyntax},
	}
	for _, tt := range tests {
		got, st := scaleDecimal([]byte(tt.in), tt.shift)
		if got != tt.want || st != tt.st {
			t.Errorf("scaleDecimal(%q, %d) = %d, %d; want %d, %d", tt.in, tt.shift, got, st, tt.want, tt.st)
		}
	}
}

var knownClasses = []string{ClassPayloadTooLarge, ClassJSONSyntax, ClassWrongType, ClassMissingField,
	ClassBadTimestamp, ClassNoSignal, ClassTopicMismatch}

// FuzzDecode checks the decoder's invariants on arbitrary payloads: it never panics; on
// success every point has a machine, a signal, a valid kind, the receive time and a
// non-negative source time; on failure the error is a *DecodeError of a known class and dst
// is returned unchanged.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`21.5`, `"x"`, `true`, `null`, `{"value": 21.5, "ts": 1700000000123, "quality": "good"}`,
		`{"signal": "temp", "value": 21.5, "ts": 1700000000123}`,
		`{"ts": 1700000000123, "temp": 21.5, "rpm": 1500, "motor": {"current": 3.2}}`,
		`[{"ts": 1700000000123, "temp": 21.5}, {"ts": 1700000000223, "temp": 21.7}]`,
		`{"quality": 5, "a": {"b": {"c": [1]}}}`, `{"ts": "1e3", "": 1}`, `[]`, `{}`, `{"a": NaN}`,
	} {
		f.Add("plant/l1/m1/telemetry", []byte(s))
		f.Add("sensors/m1/temp", []byte(s))
	}
	plant := mustDecoder(f, plantTopic, DecoderOptions{MaxPayloadBytes: 4096, MaxPoints: 1000})
	sensor := mustDecoder(f, sensorTopic, DecoderOptions{MaxPayloadBytes: 4096, MaxPoints: 1000})
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		for _, d := range []*Decoder{plant, sensor} {
			dst := []telemetry.Point{{Machine: "prefix"}}
			got, err := d.Decode(topic, payload, recv, dst)
			if err != nil {
				var de *DecodeError
				if !errors.As(err, &de) || !slices.Contains(knownClasses, de.Class) || de.Reason == "" {
					t.Fatalf("error %#v is not a *DecodeError of a known class", err)
				}
				if len(got) != 1 || got[0].Machine != "prefix" {
					t.Fatalf("on error Decode returned %d points, want dst unchanged", len(got))
				}
				continue
			}
			if len(got) < 1 || got[0].Machine != "prefix" {
				t.Fatal("Decode did not keep dst's points")
			}
			if len(got) > 1001 {
				t.Fatalf("Decode returned %d points, more than MaxPoints", len(got)-1)
			}
			for _, p := range got[1:] {
				if p.Machine == "" || p.Signal == "" {
					t.Fatalf("point without machine or signal: %+v", p)
				}
				if p.Value.Kind < telemetry.KindFloat || p.Value.Kind > telemetry.KindString {
					t.Fatalf("point with invalid value kind: %+v", p)
				}
				if p.Value.Kind == telemetry.KindFloat && (math.IsNaN(p.Value.Float()) || math.IsInf(p.Value.Float(), 0)) {
					t.Fatalf("point with non-finite value: %+v", p)
				}
				if p.ServerTime != recv || p.SourceTime < 0 {
					t.Fatalf("point with bad times: %+v", p)
				}
			}
		}
	})
}

// BenchmarkDecode measures decoding per message; points/s is per core.
func BenchmarkDecode(b *testing.B) {
	benches := []struct {
		name   string
		topic  Topic
		msg    string
		body   string
		points int
	}{
		{"object_4_signals", plantTopic, "plant/line-1/press-7/telemetry",
			`{"ts": 1700000000123, "temp": 21.5, "rpm": 1500, "pressure": 3.25, "motor": {"current": 12.75}}`, 4},
		{"bare_scalar", sensorTopic, "sensors/press-7/temp", `21.5`, 1},
		{"single_sample", sensorTopic, "sensors/press-7/temp", `{"value": 21.5, "ts": 1700000000123, "quality": "good"}`, 1},
		{"array_10_samples", plantTopic, "plant/line-1/press-7/telemetry",
			"[" + strings.TrimSuffix(strings.Repeat(`{"ts": 1700000000123, "temp": 21.5, "rpm": 1500},`, 10), ",") + "]", 20},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			d := mustDecoder(b, bb.topic, DecoderOptions{MaxPayloadBytes: DefaultMaxPayloadBytes})
			payload := []byte(bb.body)
			dst := make([]telemetry.Point, 0, 64)
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				dst, err = d.Decode(bb.msg, payload, recv, dst[:0])
				if err != nil || len(dst) != bb.points {
					b.Fatalf("Decode = %d points, %v", len(dst), err)
				}
			}
			b.ReportMetric(float64(bb.points)*float64(b.N)/b.Elapsed().Seconds(), "points/s")
		})
	}
}

func ExampleDecoder() {
	d, err := NewDecoder(Topic{Pattern: "plant/{line}/{machine}/telemetry"}, DecoderOptions{})
	if err != nil {
		panic(err)
	}
	payload := []byte(`{"ts": 1700000000123, "temp": 21.5, "motor": {"current": 3.2}}`)
	points, err := d.Decode("plant/line-1/press-7/telemetry", payload, time.Now().UnixNano(), nil)
	if err != nil {
		panic(err)
	}
	for _, p := range points {
		fmt.Println(p.Line, p.Machine, p.Signal, p.Value, time.Unix(0, p.SourceTime).UTC().Format(time.RFC3339Nano))
	}
	// Output:
	// line-1 press-7 temp 21.5 2023-11-14T22:13:20.123Z
	// line-1 press-7 motor.current 3.2 2023-11-14T22:13:20.123Z
}
