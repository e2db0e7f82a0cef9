package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/millwright-io/millwright/internal/testpki"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"0", 0, true},
		{"1", 1, true},
		{"1048576", 1 << 20, true},
		{"1B", 1, true},
		{"512KiB", 512 << 10, true},
		{"64MiB", 64 << 20, true},
		{"1GiB", 1 << 30, true},
		{"2TiB", 2 << 40, true},
		{"10KB", 10_000, true},
		{"10MB", 10_000_000, true},
		{"2GB", 2_000_000_000, true},
		{"3TB", 3_000_000_000_000, true},
		{" 64 MiB ", 64 << 20, true},
		{"\t1\tKiB\n", 1 << 10, true},
		{"0GiB", 0, true},
		{"4611686018427387904", 1 << 62, true}, // the largest size accepted
		{"4194304TiB", 1 << 62, true},
		{"4611686018427387905", 0, false},
		{"4194305TiB", 0, false},
		{"9223372036854775807", 0, false},
		{"9223372036854775808", 0, false},
		{"99999999999999999999GiB", 0, false},
		{"-1", 0, false},
		{"-1KiB", 0, false},
		{"", 0, false},
		{"   ", 0, false},
		{"KiB", 0, false},
		{"1.5MiB", 0, false},
		{"1e3", 0, false},
		{"0x10", 0, false},
		{"1 000", 0, false},
		{"1kib", 0, false},
		{"1kB", 0, false},
		{"1KiBB", 0, false},
		{"1 PiB", 0, false},
		{"lots", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if !tt.ok {
			if err == nil {
				t.Errorf("ParseByteSize(%q) = %d, want an error", tt.in, got)
			} else if !strings.Contains(err.Error(), fmt.Sprintf("%q is not a size; expected a non-negative whole number", tt.in)) {
				t.Errorf("ParseByteSize(%q) error %q does not name the input and the expectation", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestByteSizeDecodeScalarKeepsValueOnError(t *testing.T) {
	b := ByteSize(7)
	if err := b.DecodeScalar("nope"); err == nil || b != 7 {
		t.Errorf("DecodeScalar(nope) = %v, value %d; want an error and 7 kept", err, b)
	}
	if err := b.DecodeScalar("2KiB"); err != nil || b != 2048 {
		t.Errorf("DecodeScalar(2KiB) = %v, value %d", err, b)
	}
}

func TestByteSizeString(t *testing.T) {
	tests := []struct {
		in   ByteSize
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{1023, "1023B"},
		{1024, "1KiB"},
		{1536, "1536B"},
		{512 << 10, "512KiB"},
		{64 << 20, "64MiB"},
		{1536 << 20, "1536MiB"},
		{1 << 30, "1GiB"},
		{3 << 40, "3TiB"},
		{1 << 50, "1024TiB"},
		{10_000_000, "10000000B"},
		{1 << 62, "4194304TiB"},
		{-2048, "-2KiB"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
		if tt.in < 0 {
			continue
		}
		if back, err := ParseByteSize(tt.in.String()); err != nil || back != tt.in {
			t.Errorf("ParseByteSize(%q) = %d, %v; want the round trip to %d", tt.in.String(), back, err, int64(tt.in))
		}
	}
}

func TestSecretDecode(t *testing.T) {
	t.Setenv("MILLWRIGHT_CONFIG_TEST_SECRET", "hunter2")
	t.Setenv("MILLWRIGHT_CONFIG_TEST_EMPTY", "")
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	crlf := filepath.Join(dir, "crlf")
	if err := os.WriteFile(crlf, []byte("two\nlines\r\n\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		in       string
		value    string
		printed  string
		errFrags []string
	}{
		{in: "env:MILLWRIGHT_CONFIG_TEST_SECRET", value: "hunter2", printed: "[redacted env:MILLWRIGHT_CONFIG_TEST_SECRET]"},
		{in: "env:MILLWRIGHT_CONFIG_TEST_EMPTY", value: "", printed: "[redacted env:MILLWRIGHT_CONFIG_TEST_EMPTY]"},
		{in: "file:" + file, value: "hunter2", printed: "[redacted file:" + file + "]"},
		{in: "file:" + crlf, value: "two\nlines", printed: "[redacted file:" + crlf + "]"},
		{in: "hunter2", value: "hunter2", printed: "[redacted]"},
		{in: "", value: "", printed: "[redacted]"},
		{in: "ENV:X", value: "ENV:X", printed: "[redacted]"}, // references are lower case; this is a literal
		{in: "env:MILLWRIGHT_CONFIG_TEST_UNSET", errFrags: []string{"environment variable MILLWRIGHT_CONFIG_TEST_UNSET", `"env:MILLWRIGHT_CONFIG_TEST_UNSET"`, "is not set"}},
		{in: "env:", errFrags: []string{`"env:"`, "is not set"}},
		{in: "file:" + missing, errFrags: []string{`cannot read the secret file named by "file:` + missing + `"`, "no such file"}},
		{in: "file:" + dir, errFrags: []string{`"file:` + dir + `"`}},
		{in: "file:", errFrags: []string{`"file:"`}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var s Secret
			err := s.DecodeScalar(tt.in)
			if tt.errFrags != nil {
				if err == nil {
					t.Fatalf("no error; secret %v", s)
				}
				for _, f := range tt.errFrags {
					if !strings.Contains(err.Error(), f) {
						t.Errorf("error %q does not contain %q", err, f)
					}
				}
				if s.IsSet() {
					t.Errorf("secret set despite the error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Value() != tt.value || !s.IsSet() || s.String() != tt.printed {
				t.Errorf("Value %q IsSet %v String %q; want %q true %q", s.Value(), s.IsSet(), s.String(), tt.value, tt.printed)
			}
		})
	}
}

func TestSecretZeroAndNew(t *testing.T) {
	var zero Secret
	if zero.IsSet() || zero.Value() != "" || zero.String() != "" {
		t.Errorf("zero secret: IsSet %v Value %q String %q", zero.IsSet(), zero.Value(), zero.String())
	}
	s := NewSecret("hunter2")
	if !s.IsSet() || s.Value() != "hunter2" || s.String() != "[redacted]" {
		t.Errorf("NewSecret: IsSet %v Value %q String %q", s.IsSet(), s.Value(), s.String())
	}
}

// A Secret must not show its value however it is printed, alone or inside a struct.
func TestSecretRedaction(t *testing.T) {
	const value = "hunter2"
	t.Setenv("MILLWRIGHT_CONFIG_TEST_SECRET", value)
	var fromEnv Secret
	if err := fromEnv.DecodeScalar("env:MILLWRIGHT_CONFIG_TEST_SECRET"); err != nil {
		t.Fatal(err)
	}
	type holder struct {
		User     string
		Password Secret `json:"password" yaml:"password"`
		Ptr      *Secret
	}
	lit := NewSecret(value)
	for _, s := range []Secret{lit, fromEnv} {
		h := holder{User: "gateway", Password: s, Ptr: &s}
		var outputs []string
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%t", "%f", "%10v", "%-30s", "%08.3f"} {
			outputs = append(outputs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h), fmt.Sprintf(verb, []Secret{s}))
		}
		outputs = append(outputs, fmt.Sprint(s), fmt.Sprintln(h), s.String(), s.GoString(), fmt.Sprintf("%v", map[string]Secret{"k": s}))

		for _, newHandler := range []func(*bytes.Buffer) slog.Handler{
			func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
			func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		} {
			var buf bytes.Buffer
			log := slog.New(newHandler(&buf))
			log.Info("secret", "password", s, "holder", h, "ptr", &h, slog.Group("g", "password", s))
			log.With("password", s).Info("with")
			outputs = append(outputs, buf.String())
		}

		j, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		jh, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		y, err := yaml.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		outputs = append(outputs, string(j), string(jh), string(y))
		if want := fmt.Sprintf("%q", s.String()); string(j) != want {
			t.Errorf("json.Marshal = %s, want %s", j, want)
		}

		hexValue, hexMarker := fmt.Sprintf("%x", value), fmt.Sprintf("%x", "redacted")
		for _, out := range outputs {
			lower := strings.ToLower(out)
			if strings.Contains(out, value) || strings.Contains(lower, hexValue) {
				t.Errorf("the secret leaks: %s", out)
			}
			if !strings.Contains(out, "[redacted") && !strings.Contains(lower, hexMarker) {
				t.Errorf("the output shows no redaction marker: %s", out)
			}
		}
	}
	// The reference (not the value) is shown, so an operator can tell which secret it is.
	if got := fmt.Sprintf("%v", fromEnv); got != "[redacted env:MILLWRIGHT_CONFIG_TEST_SECRET]" {
		t.Errorf("%%v = %q", got)
	}
	if got := fmt.Sprintf("%q|%-12v|%12s", lit, lit, lit); got != `"[redacted]"|[redacted]  |  [redacted]` {
		t.Errorf("width and quoting are not honoured: %q", got)
	}
}

func TestTLSActive(t *testing.T) {
	tests := []struct {
		tls  TLS
		want bool
	}{
		{TLS{}, false},
		{TLS{Enabled: true}, true},
		{TLS{CAFile: "ca.pem"}, true},
		{TLS{CertFile: "c.pem"}, true},
		{TLS{KeyFile: "k.pem"}, true},
		{TLS{ServerName: "broker"}, true},
		{TLS{InsecureSkipVerify: true}, true},
	}
	for _, tt := range tests {
		if got := tt.tls.Active(); got != tt.want {
			t.Errorf("%+v.Active() = %v, want %v", tt.tls, got, tt.want)
		}
	}
}

func TestTLSValidate(t *testing.T) {
	tests := []struct {
		tls     TLS
		wantErr bool
	}{
		{TLS{}, false},
		{TLS{Enabled: true, CAFile: "ca.pem"}, false},
		{TLS{CertFile: "c.pem", KeyFile: "k.pem"}, false},
		{TLS{CertFile: "c.pem"}, true},
		{TLS{KeyFile: "k.pem"}, true},
	}
	for _, tt := range tests {
		err := tt.tls.Validate()
		if !tt.wantErr {
			if err != nil {
				t.Errorf("%+v.Validate() = %v", tt.tls, err)
			}
			continue
		}
		fe := onlyFieldError(t, err)
		if fe.Path != "cert_file" || !strings.Contains(fe.Msg, "cert_file and key_file must be given together") ||
			!strings.Contains(fe.Msg, fmt.Sprintf("cert_file %q, key_file %q", tt.tls.CertFile, tt.tls.KeyFile)) {
			t.Errorf("%+v.Validate() = %#v", tt.tls, fe)
		}
	}
}

func TestTLSLoad(t *testing.T) {
	dir := t.TempDir()
	pki := testpki.New(t, "millwright-test-ca")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("this is not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	t.Run("off", func(t *testing.T) {
		c, err := TLS{}.Load()
		if c != nil || err != nil {
			t.Errorf("Load() = %v, %v; want nil, nil", c, err)
		}
	})
	t.Run("enabled with the system roots", func(t *testing.T) {
		c, err := TLS{Enabled: true}.Load()
		if err != nil {
			t.Fatal(err)
		}
		if c.RootCAs != nil || len(c.Certificates) != 0 || c.InsecureSkipVerify || c.MinVersion != tls.VersionTLS12 {
			t.Errorf("config %+v", c)
		}
	})
	t.Run("options carried", func(t *testing.T) {
		c, err := TLS{InsecureSkipVerify: true, ServerName: "broker.local"}.Load()
		if err != nil {
			t.Fatal(err)
		}
		if !c.InsecureSkipVerify || c.ServerName != "broker.local" {
			t.Errorf("InsecureSkipVerify %v ServerName %q", c.InsecureSkipVerify, c.ServerName)
		}
	})
	t.Run("CA and client certificate", func(t *testing.T) {
		c, err := TLS{CAFile: pki.CAFile, CertFile: pki.CertFile, KeyFile: pki.KeyFile, ServerName: "broker.local"}.Load()
		if err != nil {
			t.Fatal(err)
		}
		if c.RootCAs == nil {
			t.Fatal("no root CAs")
		}
		// The pool holds the test CA: the leaf it signed verifies against it.
		if _, err := pki.Client.Verify(x509.VerifyOptions{Roots: c.RootCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("the test leaf does not verify against the loaded CA pool: %v", err)
		}
		if len(c.Certificates) != 1 || c.Certificates[0].Leaf == nil || c.Certificates[0].Leaf.Subject.CommonName != pki.Client.Subject.CommonName {
			t.Errorf("client certificates %+v", c.Certificates)
		}
		if c.ServerName != "broker.local" || c.InsecureSkipVerify {
			t.Errorf("ServerName %q InsecureSkipVerify %v", c.ServerName, c.InsecureSkipVerify)
		}
	})

	errTests := []struct {
		name     string
		tls      TLS
		frags    []string
		notExist bool // the error wraps fs.ErrNotExist
	}{
		{"missing CA file", TLS{CAFile: missing}, []string{"tls ca_file", missing}, true},
		{"CA file without PEM", TLS{CAFile: notPEM}, []string{"tls ca_file " + notPEM, "no PEM certificate found"}, false},
		{"missing certificate file", TLS{CertFile: missing, KeyFile: pki.KeyFile}, []string{"tls cert_file/key_file", missing}, true},
		{"certificate file without PEM", TLS{CertFile: notPEM, KeyFile: pki.KeyFile}, []string{"tls cert_file/key_file"}, false},
		{"key that does not match", TLS{CertFile: pki.CertFile, KeyFile: pki.CAKeyFile}, []string{"tls cert_file/key_file", "does not match"}, false},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.tls.Load()
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			for _, f := range tt.frags {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("error %q does not contain %q", err, f)
				}
			}
			if got := errors.Is(err, fs.ErrNotExist); got != tt.notExist {
				t.Errorf("errors.Is(%v, fs.ErrNotExist) = %v", err, got)
			}
		})
	}
}

func TestFieldErrorString(t *testing.T) {
	tests := []struct {
		e    FieldError
		want string
	}{
		{FieldError{Path: "a.b[1]", Line: 7, Msg: "bad"}, "a.b[1]: line 7: bad"},
		{FieldError{Path: "a", Msg: "bad"}, "a: bad"},
		{FieldError{Msg: "bad"}, "(top level): bad"},
		{FieldError{Line: 2, Msg: "bad"}, "(top level): line 2: bad"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%#v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestJoinAndIndex(t *testing.T) {
	tests := []struct{ prefix, rest, want string }{
		{"", "", ""},
		{"", "a", "a"},
		{"a", "", "a"},
		{"a", "b", "a.b"},
		{"a.b", "c.d", "a.b.c.d"},
		{"a", "[0]", "a[0]"},
		{"a", "[0].b", "a[0].b"},
		{"a[0]", "b", "a[0].b"},
		{"a[0]", "[1]", "a[0][1]"},
		{"", "[3]", "[3]"},
	}
	for _, tt := range tests {
		if got := Join(tt.prefix, tt.rest); got != tt.want {
			t.Errorf("Join(%q, %q) = %q, want %q", tt.prefix, tt.rest, got, tt.want)
		}
	}
	for _, tt := range []struct {
		path string
		i    int
		want string
	}{{"topics", 0, "topics[0]"}, {"sources[1].mqtt.topics", 12, "sources[1].mqtt.topics[12]"}, {"", 2, "[2]"}} {
		if got := Index(tt.path, tt.i); got != tt.want {
			t.Errorf("Index(%q, %d) = %q, want %q", tt.path, tt.i, got, tt.want)
		}
	}
}

func TestFlatten(t *testing.T) {
	a, b, c := errors.New("a"), errors.New("b"), errors.New("c")
	tests := []struct {
		name string
		err  error
		want []error
	}{
		{"nil", nil, nil},
		{"one", a, []error{a}},
		{"joined", errors.Join(a, b), []error{a, b}},
		{"nested", errors.Join(a, errors.Join(b, errors.Join(c))), []error{a, b, c}},
		{"several %w", fmt.Errorf("%w and %w", a, b), []error{a, b}},
	}
	for _, tt := range tests {
		got := Flatten(tt.err)
		if len(got) != len(tt.want) {
			t.Errorf("%s: Flatten = %v, want %v", tt.name, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%s: leaf %d = %v, want %v", tt.name, i, got[i], tt.want[i])
			}
		}
	}
	// A single %w wrapper is a leaf: it says more than what it wraps.
	w := fmt.Errorf("context: %w", a)
	if got := Flatten(w); len(got) != 1 || got[0] != w {
		t.Errorf("Flatten(single wrap) = %v", got)
	}
}

func TestPrefix(t *testing.T) {
	if Prefix("x", nil) != nil {
		t.Fatal("Prefix of nil is not nil")
	}
	orig := &FieldError{Path: "qos", Line: 4, Msg: "bad qos"}
	tests := []struct {
		name   string
		prefix string
		err    error
		want   []FieldError
	}{
		{"one FieldError", "topics[0]", orig, []FieldError{{Path: "topics[0].qos", Line: 4, Msg: "bad qos"}}},
		{"empty prefix", "", orig, []FieldError{{Path: "qos", Line: 4, Msg: "bad qos"}}},
		{"FieldError at the top", "mqtt", &FieldError{Msg: "no servers"}, []FieldError{{Path: "mqtt", Msg: "no servers"}}},
		{"FieldError path starting with an index", "topics", &FieldError{Path: "[2].qos", Msg: "m"}, []FieldError{{Path: "topics[2].qos", Msg: "m"}}},
		{
			"joined errors, nested, with a plain error among them",
			"sources[1]",
			errors.Join(
				&FieldError{Path: "name", Msg: "must be set"},
				errors.Join(&FieldError{Path: "mqtt.topics[0].qos", Line: 9, Msg: "3 is not a QoS"}, errors.New("plain problem")),
			),
			[]FieldError{
				{Path: "sources[1].name", Msg: "must be set"},
				{Path: "sources[1].mqtt.topics[0].qos", Line: 9, Msg: "3 is not a QoS"},
				{Path: "sources[1]", Msg: "plain problem"},
			},
		},
		{"a non-FieldError", "buffer", errors.New("disk full"), []FieldError{{Path: "buffer", Msg: "disk full"}}},
		{"a wrapped FieldError keeps its path", "sinks[0]", fmt.Errorf("influxdb: %w", &FieldError{Path: "url", Msg: "m"}), []FieldError{{Path: "sinks[0].url", Msg: "m"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Flatten(Prefix(tt.prefix, tt.err))
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors, want %d: %v", len(got), len(tt.want), got)
			}
			for i, e := range got {
				fe, ok := e.(*FieldError)
				if !ok || *fe != tt.want[i] {
					t.Errorf("error %d = %#v, want %#v", i, e, tt.want[i])
				}
			}
		})
	}
	if orig.Path != "qos" {
		t.Errorf("Prefix changed the original error's path to %q", orig.Path)
	}
	// Prefixing twice composes.
	twice := Flatten(Prefix("sources[0]", Prefix("mqtt", orig)))
	if len(twice) != 1 || twice[0].(*FieldError).Path != "sources[0].mqtt.qos" {
		t.Errorf("Prefix twice = %v", twice)
	}
}

func TestProblems(t *testing.T) {
	var p Problems
	if p.Err() != nil {
		t.Fatalf("the zero Problems has an error: %v", p.Err())
	}
	p.Nest("ignored", nil)
	if p.Err() != nil {
		t.Fatalf("Nest(nil) recorded a problem: %v", p.Err())
	}
	p.Addf("factory", "%q is not a valid name", "bad name!")
	p.Nest("buffer", errors.Join(&FieldError{Path: "max_bytes", Line: 3, Msg: "too small"}, &FieldError{Path: "fsync", Msg: "unknown"}))
	p.Nest("sinks[0]", errors.New("plain"))
	var inner Problems
	inner.Addf("qos", "3 is not a QoS")
	p.Nest(Index("topics", 1), inner.Err())
	p.Addf("", "top-level problem")

	want := []FieldError{
		{Path: "factory", Msg: `"bad name!" is not a valid name`},
		{Path: "buffer.max_bytes", Line: 3, Msg: "too small"},
		{Path: "buffer.fsync", Msg: "unknown"},
		{Path: "sinks[0]", Msg: "plain"},
		{Path: "topics[1].qos", Msg: "3 is not a QoS"},
		{Path: "", Msg: "top-level problem"},
	}
	got := Flatten(p.Err())
	if len(got) != len(want) {
		t.Fatalf("got %d problems, want %d: %v", len(got), len(want), p.Err())
	}
	for i, e := range got {
		if fe, ok := e.(*FieldError); !ok || *fe != want[i] {
			t.Errorf("problem %d = %#v, want %#v", i, e, want[i])
		}
	}
	wantText := strings.Join([]string{
		`factory: "bad name!" is not a valid name`,
		"buffer.max_bytes: line 3: too small",
		"buffer.fsync: unknown",
		"sinks[0]: plain",
		"topics[1].qos: 3 is not a QoS",
		"(top level): top-level problem",
	}, "\n")
	if s := p.Err().Error(); s != wantText {
		t.Errorf("Error() =\n%s\nwant\n%s", s, wantText)
	}
}

// TestMerge: the decoder's problems come first; a validation problem at a path the decoder
// already reported is left out, every other one kept.
func TestMerge(t *testing.T) {
	decode := errors.Join(&FieldError{Path: "nats.password", Line: 3, Msg: "environment variable X is not set"})
	validate := errors.Join(&FieldError{Path: "nats.password", Msg: "is required"}, &FieldError{Path: "name", Msg: "is required"},
		errors.New("plain problem"))
	want := "nats.password: line 3: environment variable X is not set\nname: is required\nplain problem"
	if got := Merge(decode, validate); got == nil || got.Error() != want {
		t.Errorf("Merge = %v\nwant %s", got, want)
	}
	if Merge(nil, nil) != nil {
		t.Error("Merge of no problems is not nil")
	}
	if got := Merge(nil, validate); got != validate && got.Error() != validate.Error() {
		t.Errorf("Merge without decoding problems = %v", got)
	}
}
