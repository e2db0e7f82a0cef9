package config

import (
	"reflect"
	"testing"
)

// FuzzDecode decodes arbitrary bytes into representative configuration structs: Decode
// must never panic, and every problem it reports must be a *FieldError with a message.
func FuzzDecode(f *testing.F) {
	f.Setenv("MILLWRIGHT_CONFIG_FUZZ_SECRET", "hunter2")
	for _, seed := range []string{
		"",
		"name: plant\nretain: 2h\npassword: env:MILLWRIGHT_CONFIG_FUZZ_SECRET\n",
		`endpoints:
  - host: a
    port: 8883
    timeout: 1s
    tls: {enabled: true, ca_file: ca.pem}
  - {}
limits:
  a: {max_bytes: 64MiB, burst: 3}
  b:
extra: {burst: 1}
inner: {deep: {flag: true, items: [{host: x}]}}
tags: [a, b]
labels: {k: v}
matrix: [[{host: m}], []]
`,
		"endpoints: [&e {host: a}, *e, *e]\nmatrix: [&r [*e], *r]\n",
		"nmae: x\nname: [a]\nendpoints: [{port: 70000x}, {hots: b}]\nlimits: {a: {burst: yes}, a: {}}\nextra: 5\n",
		"password: env:MILLWRIGHT_CONFIG_FUZZ_UNSET\nretain: forever\n",
		"name: a\n---\nname: b\n",
		"name: [unclosed\n",
		"- a\n- b\n",
		"s: x\nb: true\ni: -1\ni8: 300\nu: 0x10\nu64: 1_000\nf32: 1e39\nf64: .nan\nd: 5m\nsize: 1GiB\nsecret: literal\npi: 3\nany: {a: [1, {b: c}]}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []func() any{
			func() any { return newRoot() },
			func() any { return &scalars{} },
		} {
			got := v()
			err := Decode(data, got)
			for _, e := range Flatten(err) {
				fe, ok := e.(*FieldError)
				if !ok {
					t.Fatalf("a problem is a %T, not a *FieldError: %v", e, e)
				}
				if fe.Msg == "" {
					t.Fatalf("a problem without a message at %q", fe.Path)
				}
			}
			// Decoding is deterministic.
			again := v()
			err2 := Decode(data, again)
			if errString(err) != errString(err2) {
				t.Fatalf("two decodes disagree:\n%v\n%v", err, err2)
			}
			if r, ok := got.(*root); ok && !reflect.DeepEqual(r, again) {
				t.Fatalf("two decodes disagree:\n%+v\n%+v", r, again)
			}
		}
	})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
