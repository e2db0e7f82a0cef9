package configtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// sample is a configuration with a default and a rule.
type sample struct {
	Name  string `yaml:"name"`
	Limit int    `yaml:"limit"`
}

func (s *sample) SetDefaults() {
	if s.Limit == 0 {
		s.Limit = 10
	}
}

func (s sample) Validate() error {
	if s.Limit > 100 {
		return errors.New("limit: more than 100")
	}
	return nil
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		yaml    string
		want    sample
		wantErr string
	}{
		{"name: a\n", sample{Name: "a", Limit: 10}, ""},
		{"name: a\nlimit: 5\n", sample{Name: "a", Limit: 5}, ""},
		{"", sample{Limit: 10}, ""},
		{"name: a\nlimt: 5\n", sample{Name: "a", Limit: 10}, "limt"},
		{"limit: 500\n", sample{Limit: 500}, "more than 100"},
	} {
		got, err := Decode[sample](tc.yaml)
		if got != tc.want {
			t.Errorf("%q: decoded %+v, want %+v", tc.yaml, got, tc.want)
		}
		if (err == nil) != (tc.wantErr == "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%q: error %v, want one containing %q", tc.yaml, err, tc.wantErr)
		}
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sample.yaml")
	if err := os.WriteFile(path, []byte("name: b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got sample
	Load(t, path, &got)
	if want := (sample{Name: "b", Limit: 10}); got != want {
		t.Errorf("loaded %+v, want %+v", got, want)
	}
}

// fatalRecorder is a testing.TB whose Fatal and Fatalf record the message and end the
// calling goroutine.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatal(args ...any) { r.msg = fmt.Sprint(args...); runtime.Goexit() }

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestLoadFails(t *testing.T) {
	dir := t.TempDir()
	write := func(name, yaml string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "missing.yaml"), "missing.yaml"},
		{write("unknown.yaml", "nme: x\n"), "unknown.yaml: "},
		{write("invalid.yaml", "limit: 101\n"), "invalid.yaml: limit: more than 100"},
	} {
		r := &fatalRecorder{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			Load(r, tc.path, &sample{})
		}()
		<-done
		if !strings.Contains(r.msg, tc.want) {
			t.Errorf("Load(%s) failed with %q, want %q", filepath.Base(tc.path), r.msg, tc.want)
		}
	}
}
