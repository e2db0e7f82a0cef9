package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

// scalars has one field of every scalar kind the decoder supports.
type scalars struct {
	S      string        `yaml:"s"`
	B      bool          `yaml:"b"`
	I      int           `yaml:"i"`
	I8     int8          `yaml:"i8"`
	I16    int16         `yaml:"i16"`
	I32    int32         `yaml:"i32"`
	I64    int64         `yaml:"i64"`
	U      uint          `yaml:"u"`
	U8     uint8         `yaml:"u8"`
	U16    uint16        `yaml:"u16"`
	U32    uint32        `yaml:"u32"`
	U64    uint64        `yaml:"u64"`
	F32    float32       `yaml:"f32"`
	F64    float64       `yaml:"f64"`
	D      time.Duration `yaml:"d"`
	Size   ByteSize      `yaml:"size"`
	Secret Secret        `yaml:"secret"`
	PI     *int          `yaml:"pi"`
	Any    any           `yaml:"any"`
	Level  slog.Level    `yaml:"level"` // an encoding.TextUnmarshaler
}

// endpoint is a list element with defaults.
type endpoint struct {
	Host    string        `yaml:"host"`
	Port    int           `yaml:"port"`
	Timeout time.Duration `yaml:"timeout"`
	TLS     TLS           `yaml:"tls"`
}

func (e *endpoint) SetDefaults() {
	e.Port = 1883
	e.Timeout = 10 * time.Second
}

// limits is a map value and a pointer target with defaults.
type limits struct {
	MaxBytes ByteSize `yaml:"max_bytes"`
	Burst    int      `yaml:"burst"`
}

func (l *limits) SetDefaults() {
	l.MaxBytes = 1 << 20
	l.Burst = 10
}

type deep struct {
	Flag  bool       `yaml:"flag"`
	Items []endpoint `yaml:"items"`
}

type inner struct {
	Deep deep `yaml:"deep"`
}

// root is a representative component configuration: nested structs, lists and maps of
// structs with defaults, an optional block, and the shared field types.
type root struct {
	Name      string            `yaml:"name"`
	Endpoints []endpoint        `yaml:"endpoints"`
	Limits    map[string]limits `yaml:"limits"`
	Extra     *limits           `yaml:"extra"`
	Inner     inner             `yaml:"inner"`
	Tags      []string          `yaml:"tags"`
	Labels    map[string]string `yaml:"labels"`
	Password  Secret            `yaml:"password"`
	Retain    time.Duration     `yaml:"retain"`
	Matrix    [][]endpoint      `yaml:"matrix"`
	Ignored   string            `yaml:"-"`
	NoTag     string
	hidden    string
}

func (r *root) SetDefaults() {
	r.Name = "default"
	r.Retain = time.Hour
	r.Tags = []string{"default"}
}

func newRoot() *root {
	r := &root{}
	r.SetDefaults()
	return r
}

func defaultEndpoint() endpoint {
	var e endpoint
	e.SetDefaults()
	return e
}

func defaultLimits() limits {
	var l limits
	l.SetDefaults()
	return l
}

func TestDecodeScalars(t *testing.T) {
	t.Setenv("MILLWRIGHT_CONFIG_TEST_SECRET", "hunter2")
	seven := 7
	tests := []struct {
		doc     string
		want    scalars
		wantErr string // a fragment of the one error expected
	}{
		{doc: "s: hello", want: scalars{S: "hello"}},
		{doc: "s: 123", want: scalars{S: "123"}},
		{doc: `s: "true"`, want: scalars{S: "true"}},
		{doc: "s: ''", want: scalars{}},
		{doc: "s: [a]", wantErr: "expected a string, found a list"},
		{doc: "s: {a: b}", wantErr: "expected a string, found a mapping (key: value)"},

		{doc: "b: true", want: scalars{B: true}},
		{doc: "b: false", want: scalars{}},
		{doc: "b: yes", wantErr: `"yes" is not a boolean; expected true or false`},
		{doc: "b: 1", wantErr: `"1" is not a boolean`},
		{doc: "b: on", wantErr: `"on" is not a boolean`},

		{doc: "i: 42", want: scalars{I: 42}},
		{doc: "i: -7", want: scalars{I: -7}},
		{doc: "i: 0x1F", want: scalars{I: 31}},
		{doc: "i: 1_000_000", want: scalars{I: 1000000}},
		{doc: "i: 1.5", wantErr: `"1.5" is not an integer that fits in 64 bits`},
		{doc: "i: abc", wantErr: `"abc" is not an integer`},
		{doc: "i8: 127", want: scalars{I8: 127}},
		{doc: "i8: -128", want: scalars{I8: -128}},
		{doc: "i8: 128", wantErr: `"128" is not an integer that fits in 8 bits`},
		{doc: "i16: -32769", wantErr: `"-32769" is not an integer that fits in 16 bits`},
		{doc: "i32: 2147483647", want: scalars{I32: 2147483647}},
		{doc: "i32: 2147483648", wantErr: "fits in 32 bits"},
		{doc: "i64: 9223372036854775807", want: scalars{I64: 9223372036854775807}},
		{doc: "i64: 9223372036854775808", wantErr: "fits in 64 bits"},

		{doc: "u: 5", want: scalars{U: 5}},
		{doc: "u: -1", wantErr: `"-1" is not a non-negative integer`},
		{doc: "u8: 255", want: scalars{U8: 255}},
		{doc: "u8: 256", wantErr: `"256" is not a non-negative integer that fits in 8 bits`},
		{doc: "u16: 65536", wantErr: "fits in 16 bits"},
		{doc: "u32: 4294967296", wantErr: "fits in 32 bits"},
		{doc: "u64: 18446744073709551615", want: scalars{U64: 18446744073709551615}},
		{doc: "u64: 18446744073709551616", wantErr: "fits in 64 bits"},

		{doc: "f64: 1.5", want: scalars{F64: 1.5}},
		{doc: "f64: -2e3", want: scalars{F64: -2000}},
		{doc: "f64: 3", want: scalars{F64: 3}},
		{doc: "f32: 0.25", want: scalars{F32: 0.25}},
		{doc: "f32: 1e39", wantErr: `"1e39" is not a finite number`},
		{doc: "f64: .nan", wantErr: `".nan" is not a finite number`},
		{doc: "f64: NaN", wantErr: `"NaN" is not a finite number`},
		{doc: "f64: .inf", wantErr: `".inf" is not a finite number`},
		{doc: "f64: -.inf", wantErr: `"-.inf" is not a finite number`},
		{doc: "f64: Inf", wantErr: `"Inf" is not a finite number`},
		{doc: "f64: 1e400", wantErr: `"1e400" is not a finite number`},
		{doc: "f64: many", wantErr: `"many" is not a finite number`},

		{doc: "d: 250ms", want: scalars{D: 250 * time.Millisecond}},
		{doc: "d: 1h30m", want: scalars{D: 90 * time.Minute}},
		{doc: "d: -5s", want: scalars{D: -5 * time.Second}},
		{doc: "d: 0", want: scalars{}},
		{doc: "d: 10", wantErr: `"10" is not a duration; expected a number with a unit, such as 250ms, 10s or 5m`},
		{doc: "d: soon", wantErr: `"soon" is not a duration`},
		{doc: "d: [1s]", wantErr: "expected a duration such as 250ms, 10s or 5m, found a list"},

		{doc: "size: 64MiB", want: scalars{Size: 64 << 20}},
		{doc: "size: 1024", want: scalars{Size: 1024}},
		{doc: "size: lots", wantErr: `"lots" is not a size`},
		{doc: "size: {a: 1}", wantErr: "expected a single value, found a mapping"},

		{doc: "secret: hunter2", want: scalars{Secret: NewSecret("hunter2")}},
		{doc: "secret: env:MILLWRIGHT_CONFIG_TEST_SECRET", want: scalars{Secret: Secret{ref: "env:MILLWRIGHT_CONFIG_TEST_SECRET", value: "hunter2"}}},
		{doc: "secret: env:MILLWRIGHT_CONFIG_TEST_UNSET", wantErr: `environment variable MILLWRIGHT_CONFIG_TEST_UNSET named by "env:MILLWRIGHT_CONFIG_TEST_UNSET" is not set`},
		{doc: "secret: [a]", wantErr: "expected a single value, found a list"},

		{doc: "pi: 7", want: scalars{PI: &seven}},
		{doc: "pi: ~", want: scalars{}},
		{doc: "pi: x", wantErr: `"x" is not an integer`},

		{doc: "any: {a: [1, two]}", want: scalars{Any: map[string]any{"a": []any{1, "two"}}}},
		{doc: "any: ~", want: scalars{}},
		{doc: "any: !!int many", wantErr: "cannot decode"},

		{doc: "level: warn", want: scalars{Level: slog.LevelWarn}},
		{doc: "level: loud", wantErr: `level string "loud": unknown name`},
		{doc: "level: [warn]", wantErr: "expected a single value, found a list"},
	}
	for _, tt := range tests {
		t.Run(tt.doc, func(t *testing.T) {
			var got scalars
			err := Decode([]byte(tt.doc), &got)
			if tt.wantErr != "" {
				fe := onlyFieldError(t, err)
				if fe.Path != strings.SplitN(tt.doc, ":", 2)[0] || fe.Line != 1 || !strings.Contains(fe.Msg, tt.wantErr) {
					t.Fatalf("error %#v; want path %q, line 1 and a message containing %q", fe, strings.SplitN(tt.doc, ":", 2)[0], tt.wantErr)
				}
				if got.PI != nil && *got.PI == 0 {
					got.PI = nil // a pointer is created before its value is decoded
				}
				if !reflect.DeepEqual(got, scalars{}) {
					t.Errorf("the field was set despite the error: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeStructures(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want func(r *root) // edits the defaults into the expected result
	}{
		{
			name: "empty document keeps the defaults",
			doc:  "",
			want: func(r *root) {},
		},
		{name: "only a newline", doc: "\n", want: func(r *root) {}},
		{name: "only a comment", doc: "# nothing here\n", want: func(r *root) {}},
		{name: "an empty document marker", doc: "---\n", want: func(r *root) {}},
		{name: "a null document", doc: "~\n", want: func(r *root) {}},
		{name: "an empty mapping", doc: "{}\n", want: func(r *root) {}},
		{
			name: "explicit null and an empty value keep the defaults",
			doc:  "name: ~\nretain:\ntags: null\nextra: null\n",
			want: func(r *root) {},
		},
		{
			name: "nested structs",
			doc:  "inner:\n  deep:\n    flag: true\n",
			want: func(r *root) { r.Inner.Deep.Flag = true },
		},
		{
			name: "a list of structs gets the defaults per element, overridden by the YAML",
			doc: `endpoints:
  - host: a
  - host: b
    port: 8883
    timeout: 1s
    tls: {enabled: true}
  - {}
  - ~
`,
			want: func(r *root) {
				b := defaultEndpoint()
				b.Host, b.Port, b.Timeout, b.TLS.Enabled = "b", 8883, time.Second, true
				a := defaultEndpoint()
				a.Host = "a"
				r.Endpoints = []endpoint{a, b, defaultEndpoint(), defaultEndpoint()}
			},
		},
		{
			name: "a list replaces the default list",
			doc:  "tags: [x, y]\n",
			want: func(r *root) { r.Tags = []string{"x", "y"} },
		},
		{
			name: "an empty list replaces the default list",
			doc:  "tags: []\n",
			want: func(r *root) { r.Tags = []string{} },
		},
		{
			name: "a list of lists of structs",
			doc:  "matrix: [[{host: a}], [], [{port: 1}, {}]]\n",
			want: func(r *root) {
				a, p := defaultEndpoint(), defaultEndpoint()
				a.Host, p.Port = "a", 1
				r.Matrix = [][]endpoint{{a}, {}, {p, defaultEndpoint()}}
			},
		},
		{
			name: "a map of structs gets the defaults per value",
			doc:  "limits:\n  a: {burst: 1}\n  b: {}\n  c:\n  d: {max_bytes: 1KiB}\n",
			want: func(r *root) {
				a, d := defaultLimits(), defaultLimits()
				a.Burst = 1
				d.MaxBytes = 1024
				r.Limits = map[string]limits{"a": a, "b": defaultLimits(), "c": defaultLimits(), "d": d}
			},
		},
		{
			name: "a map of strings",
			doc:  "labels: {site: berlin, '1': one}\n",
			want: func(r *root) { r.Labels = map[string]string{"site": "berlin", "1": "one"} },
		},
		{
			name: "a pointer to a struct is created with its defaults when present",
			doc:  "extra: {burst: 3}\n",
			want: func(r *root) {
				l := defaultLimits()
				l.Burst = 3
				r.Extra = &l
			},
		},
		{
			name: "an empty block still creates the pointer",
			doc:  "extra: {}\n",
			want: func(r *root) {
				l := defaultLimits()
				r.Extra = &l
			},
		},
		{
			name: "a key without a yaml tag is the lower-case field name",
			doc:  "notag: x\n",
			want: func(r *root) { r.NoTag = "x" },
		},
		{
			name: "anchors and aliases repeat a value",
			doc:  "endpoints: [&e {host: a, port: 1}, *e]\nlabels: {&k name: x}\n*k : y\n",
			want: func(r *root) {
				e := defaultEndpoint()
				e.Host, e.Port = "a", 1
				r.Endpoints = []endpoint{e, e}
				r.Labels = map[string]string{"name": "x"}
				r.Name = "y"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := newRoot()
			if err := Decode([]byte(tt.doc), got); err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			want := newRoot()
			tt.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

// A map that already holds entries (defaults set by the caller) keeps those the document
// does not name.
func TestDecodeMapMergesIntoExisting(t *testing.T) {
	r := newRoot()
	r.Labels = map[string]string{"keep": "1", "over": "old"}
	if err := Decode([]byte("labels: {over: new, add: 2}"), r); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"keep": "1", "over": "new", "add": "2"}
	if !reflect.DeepEqual(r.Labels, want) {
		t.Errorf("labels %v, want %v", r.Labels, want)
	}
}

// wantProblem is one FieldError expected from a document.
type wantProblem struct {
	path  string
	line  int
	frags []string // fragments of the message
}

func TestDecodeErrors(t *testing.T) {
	const knownKeys = "known keys here: name, endpoints, limits, extra, inner, tags, labels, password, retain, matrix, notag"
	tests := []struct {
		name string
		doc  string
		want []wantProblem
	}{
		{
			name: "unknown key with a suggestion and the known keys",
			doc:  "nmae: x\n",
			want: []wantProblem{{"nmae", 1, []string{`unknown key (did you mean "name"?); ` + knownKeys}}},
		},
		{
			name: "unknown key without a close match",
			doc:  "name: a\ncompletely_different: 1\n",
			want: []wantProblem{{"completely_different", 2, []string{"unknown key; " + knownKeys}}},
		},
		{
			name: "a key the struct hides is unknown",
			doc:  "ignored: x\nhidden: y\n",
			want: []wantProblem{
				{"ignored", 1, []string{"unknown key"}},
				{"hidden", 2, []string{"unknown key"}},
			},
		},
		{
			name: "unknown key in a nested struct names that struct's keys",
			doc:  "inner:\n  deep:\n    flgs: true\n",
			want: []wantProblem{{"inner.deep.flgs", 3, []string{`(did you mean "flag"?); known keys here: flag, items`}}},
		},
		{
			name: "duplicate key",
			doc:  "name: a\nname: b\n",
			want: []wantProblem{{"name", 2, []string{"key given twice"}}},
		},
		{
			name: "duplicate key in a map",
			doc:  "labels:\n  a: x\n  a: y\n",
			want: []wantProblem{{"labels.a", 3, []string{"key given twice"}}},
		},
		{
			name: "a list where a mapping is expected",
			doc:  "inner: [a]\n",
			want: []wantProblem{{"inner", 1, []string{"expected a mapping (key: value), found a list"}}},
		},
		{
			name: "a list where a map is expected",
			doc:  "limits: [a]\n",
			want: []wantProblem{{"limits", 1, []string{"expected a mapping (key: value), found a list"}}},
		},
		{
			name: "a scalar where a pointer to a struct is expected",
			doc:  "extra: 5\n",
			want: []wantProblem{{"extra", 1, []string{`expected a mapping (key: value), found the value "5"`}}},
		},
		{
			name: "a mapping where a list is expected",
			doc:  "endpoints: {host: a}\n",
			want: []wantProblem{{"endpoints", 1, []string{"expected a list, found a mapping (key: value)"}}},
		},
		{
			name: "a scalar where a list is expected",
			doc:  "tags: a\n",
			want: []wantProblem{{"tags", 1, []string{`expected a list, found the value "a"`}}},
		},
		{
			name: "the top level is not a mapping",
			doc:  "- a\n- b\n",
			want: []wantProblem{{"", 1, []string{"expected a mapping (key: value), found a list"}}},
		},
		{
			name: "a path through lists and structs",
			doc: `inner:
  deep:
    items:
      - host: a
      - host: b
      - host: c
        tls:
          enabled: maybe
`,
			want: []wantProblem{{"inner.deep.items[2].tls.enabled", 8, []string{`"maybe" is not a boolean`}}},
		},
		{
			name: "a path through a list of lists",
			doc:  "matrix:\n  - []\n  - [{}, {port: x}]\n",
			want: []wantProblem{{"matrix[1][1].port", 3, []string{`"x" is not an integer`}}},
		},
		{
			name: "a path through a map",
			doc:  "limits:\n  a:\n    max_bytes: big\n",
			want: []wantProblem{{"limits.a.max_bytes", 3, []string{`"big" is not a size`}}},
		},
		{
			name: "a missing secret names its reference",
			doc:  "password: env:MILLWRIGHT_CONFIG_TEST_UNSET\n",
			want: []wantProblem{{"password", 1, []string{"environment variable MILLWRIGHT_CONFIG_TEST_UNSET", `"env:MILLWRIGHT_CONFIG_TEST_UNSET"`, "not set"}}},
		},
		{
			name: "every problem in one document is reported",
			doc: `nmae: x
name: [a]
endpoints:
  - host: a
    port: 70000x
  - hots: b
  - port: 99999999999999999999
    timeout: 10
limits:
  a: {burst: yes}
  a: {}
extra: 5
retain: forever
tags: {a: b}
inner:
  deep:
    flag: 1
`,
			want: []wantProblem{
				{"nmae", 1, []string{`did you mean "name"?`}},
				{"name", 2, []string{"expected a string, found a list"}},
				{"endpoints[0].port", 5, []string{`"70000x" is not an integer`}},
				{"endpoints[1].hots", 6, []string{`did you mean "host"?`, "known keys here: host, port, timeout, tls"}},
				{"endpoints[2].port", 7, []string{`"99999999999999999999" is not an integer that fits in 64 bits`}},
				{"endpoints[2].timeout", 8, []string{`"10" is not a duration`}},
				{"limits.a.burst", 10, []string{`"yes" is not an integer`}},
				{"limits.a", 11, []string{"key given twice"}},
				{"extra", 12, []string{"expected a mapping"}},
				{"retain", 13, []string{`"forever" is not a duration`}},
				{"tags", 14, []string{"expected a list, found a mapping"}},
				{"inner.deep.flag", 17, []string{`"1" is not a boolean`}},
			},
		},
		{
			name: "multiple documents",
			doc:  "name: a\n---\nname: b\n",
			want: []wantProblem{{"", 2, []string{"more than one YAML document; a configuration file holds exactly one"}}},
		},
		{
			name: "a second document that does not parse",
			doc:  "name: a\n--- [\n",
			want: []wantProblem{{"", 0, []string{"more than one YAML document"}}},
		},
		{
			name: "invalid YAML",
			doc:  "name: [unclosed\n",
			want: []wantProblem{{"", 0, []string{"not valid YAML: line"}}},
		},
		{
			name: "invalid YAML: bad indentation",
			doc:  "name: a\n  tags: b\n",
			want: []wantProblem{{"", 0, []string{"not valid YAML:", "mapping values are not allowed"}}},
		},
		{
			name: "invalid YAML: an unknown anchor",
			doc:  "name: *nowhere\n",
			want: []wantProblem{{"", 0, []string{"not valid YAML:", "unknown anchor 'nowhere'"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Decode([]byte(tt.doc), newRoot())
			checkProblems(t, err, tt.want)
		})
	}
}

func TestDecodeOversizedDocument(t *testing.T) {
	doc := append([]byte("name: "), bytes.Repeat([]byte("x"), MaxInputBytes)...)
	r := newRoot()
	err := Decode(doc, r)
	checkProblems(t, err, []wantProblem{{"", 0, []string{"more than the 4194304 allowed"}}})
	if r.Name != "default" {
		t.Errorf("name %q after a rejected document", r.Name)
	}
	// A document of exactly the limit is accepted.
	doc = doc[:MaxInputBytes]
	if err := Decode(doc, newRoot()); err != nil {
		t.Errorf("a document of %d bytes: %v", len(doc), err)
	}
}

// A short document of nested aliases ("billion laughs") must be refused rather than
// expanded: the decoder walks the node tree itself, so yaml.v3's own alias limit does not
// apply.
func TestDecodeAliasExpansionIsBounded(t *testing.T) {
	const n = 1000 // 1000 aliases of a list of 1000: a million values from 10 kB
	doc := "matrix: [&row [" + strings.Repeat("{host: a},", n) + "]" + strings.Repeat(", *row", n) + "]\n"
	err := Decode([]byte(doc), newRoot())
	checkProblems(t, err, []wantProblem{{"matrix[", 1, []string{"aliases repeat more than 65536 values"}}})

	// Unknown keys repeated through aliases count too, so they cannot flood the error list.
	doc = "inner: {deep: {items: [&e {" + strings.Repeat("x: 1, ", n) + "}" + strings.Repeat(", *e", n) + "]}}\n"
	err = Decode([]byte(doc), newRoot())
	if errs := Flatten(err); len(errs) > maxAliasedValues+2*n {
		t.Errorf("%d errors from a document of %d bytes", len(errs), len(doc))
	}
	if !strings.Contains(err.Error(), "aliases repeat more than") {
		t.Errorf("error does not report the alias expansion: %.300v", err)
	}

	// Keys of maps repeated through aliases count too.
	var maps struct {
		L []map[string]int `yaml:"l"`
	}
	var keys strings.Builder
	for i := range n {
		fmt.Fprintf(&keys, "k%d: %d, ", i, i)
	}
	doc = "l: [&m {" + keys.String() + "}" + strings.Repeat(", *m", n) + "]\n"
	err = Decode([]byte(doc), &maps)
	checkProblems(t, err, []wantProblem{{"l[", 1, []string{"aliases repeat more than"}}})

	// Moderate repetition stays allowed.
	doc = "endpoints: [&e {host: a, tls: {enabled: true}}" + strings.Repeat(", *e", 100) + "]\n"
	r := newRoot()
	if err := Decode([]byte(doc), r); err != nil {
		t.Fatal(err)
	}
	if len(r.Endpoints) != 101 || r.Endpoints[100].Host != "a" || !r.Endpoints[100].TLS.Enabled {
		t.Errorf("aliased endpoints decoded as %+v", r.Endpoints[100])
	}
}

// Programmer errors panic: a target that is not a pointer, or a type the decoder cannot fill.
func TestDecodePanics(t *testing.T) {
	type withChan struct {
		C chan int `yaml:"c"`
	}
	type withIntKeys struct {
		M map[int]string `yaml:"m"`
	}
	tests := []struct {
		v    any
		doc  string
		want string
	}{
		{root{}, "name: a", "v must be a non-nil pointer"},
		{(*root)(nil), "name: a", "v must be a non-nil pointer"},
		{nil, "name: a", "v must be a non-nil pointer"},
		{&withChan{}, "c: 1", "cannot decode into chan int at c"},
		{&withIntKeys{}, "m: {1: a}", "map keys must be strings"},
	}
	for _, tt := range tests {
		func() {
			defer func() {
				r := recover()
				if r == nil || !strings.Contains(fmt.Sprint(r), tt.want) {
					t.Errorf("Decode(%q) into %T: panic %v, want one containing %q", tt.doc, tt.v, r, tt.want)
				}
			}()
			_ = Decode([]byte(tt.doc), tt.v)
		}()
	}
	// A field of such a type is fine while the document leaves it out.
	if err := Decode([]byte("{}"), &withChan{}); err != nil {
		t.Error(err)
	}
}

func TestEditDistanceAndClosest(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"name", "name", 0},
		{"nmae", "name", 2}, {"topcs", "topics", 1}, {"kitten", "sitting", 3},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
	names := []string{"servers", "topics", "qos"}
	for in, want := range map[string]string{"tpoics": "topics", "server": "servers", "qso": "qos", "payload": "", "q": "qos", "xyzzy": ""} {
		if got := closest(in, names); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
}

// onlyFieldError returns the one *FieldError err holds, failing the test otherwise.
func onlyFieldError(t *testing.T, err error) *FieldError {
	t.Helper()
	errs := Flatten(err)
	if len(errs) != 1 {
		t.Fatalf("got %d errors, want 1: %v", len(errs), err)
	}
	var fe *FieldError
	if !errors.As(errs[0], &fe) {
		t.Fatalf("error %T %v is not a *FieldError", errs[0], errs[0])
	}
	return fe
}

// checkProblems checks that err holds exactly the problems in want, in order. A want path
// ending in "[" matches any path with that prefix.
func checkProblems(t *testing.T, err error, want []wantProblem) {
	t.Helper()
	errs := Flatten(err)
	if len(errs) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%.2000v", len(errs), len(want), err)
	}
	for i, e := range errs {
		fe, ok := e.(*FieldError)
		if !ok {
			t.Errorf("problem %d is a %T, not a *FieldError: %v", i, e, e)
			continue
		}
		w := want[i]
		pathOK := fe.Path == w.path || strings.HasSuffix(w.path, "[") && strings.HasPrefix(fe.Path, w.path)
		if !pathOK || fe.Line != w.line {
			t.Errorf("problem %d at %q line %d, want %q line %d (%s)", i, fe.Path, fe.Line, w.path, w.line, fe.Msg)
		}
		for _, f := range w.frags {
			if !strings.Contains(fe.Msg, f) {
				t.Errorf("problem %d: %q does not contain %q", i, fe.Msg, f)
			}
		}
	}
}
