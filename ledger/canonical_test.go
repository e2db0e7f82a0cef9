package ledger_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/ledger"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestCanonicalGolden checks hand-written documents against their canonical form, written
// by hand in testdata/canonical (refresh with -update only after checking the diff).
func TestCanonicalGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/canonical/*.json")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ledger.Canonicalize(src)
			if err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(in, ".json") + ".canon"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("canonical form:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestFormatNumber(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0", "0"}, {"-0", "0"}, {"-0.0e5", "0"}, {"1", "1"}, {"1.00", "1"}, {"-1.5", "-1.5"},
		{"1e21", "1e+21"}, {"999999999999999900000", "999999999999999900000"}, {"1e-6", "0.000001"},
		{"1e-7", "1e-7"}, {"1.7976931348623157e308", "1.7976931348623157e+308"}, {"5e-324", "5e-324"},
		{"9007199254740993", "9007199254740992"}, {"0.1", "0.1"}, {"1e+09", "1000000000"},
		{"2.5e-10", "2.5e-10"}, {"123e-20", "1.23e-18"},
	}
	for _, tt := range tests {
		got, err := ledger.FormatNumber(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("FormatNumber(%s) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	if _, err := ledger.FormatNumber("1e400"); err == nil {
		t.Error("1e400 accepted")
	}
}

func TestCanonicalizeErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"a":1,"a":2}`, `canonical json: duplicate object member "a"`},
		{"\"\xff\"", `canonical json: invalid UTF-8`},
		{`{} []`, `canonical json: data after the top-level value`},
		{`1e999`, `canonical json: number 1e999 is out of the range of a double`},
		{``, `canonical json: unexpected end of input`},
		{strings.Repeat("[", 65) + strings.Repeat("]", 65), `canonical json: nested deeper than 64 levels`},
	}
	for _, tt := range tests {
		_, err := ledger.Canonicalize([]byte(tt.in))
		if err == nil || err.Error() != tt.want {
			t.Errorf("Canonicalize(%.20q) error = %v, want %s", tt.in, err, tt.want)
		}
	}
	for _, in := range []string{`{"a"}`, `[1,]`, `{"a":01}`, `nul`, "\"\x01\"", `"\ud800"`, `"\udc00\ud800"`, `"\u12"`, `"\x"`, `1.`, `-`, `.5`, `1e`, `{,}`, `[1 2]`, `{"a":1,}`} {
		if _, err := ledger.Canonicalize([]byte(in)); err == nil {
			t.Errorf("Canonicalize(%q) accepted", in)
		}
	}
}

func FuzzCanonicalize(f *testing.F) {
	for _, in := range []string{`{"b":[1,2.5,-0,1e21],"a":"\u00e9\n"}`, `[]`, `"x"`, `{"€":1,"😀":2,"ﬁ":3}`, `123456789012345678`} {
		f.Add([]byte(in))
	}
	files, _ := filepath.Glob("testdata/canonical/*.json")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ledger.Canonicalize(b)
		if err != nil {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("accepted input that is not JSON: %q", b)
		}
		if !json.Valid(c) {
			t.Fatalf("canonical form is not JSON: %q", c)
		}
		// The canonical form means the same as the input.
		var v1, v2 any
		if err := json.Unmarshal(b, &v1); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(c, &v2); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(v1, v2) {
			t.Fatalf("meaning changed:\n%q\n%q", b, c)
		}
		again, err := ledger.Canonicalize(c)
		if err != nil {
			t.Fatalf("canonical form does not canonicalize: %v\n%q", err, c)
		}
		if !bytes.Equal(again, c) {
			t.Fatalf("not idempotent:\n%q\n%q", c, again)
		}
	})
}
