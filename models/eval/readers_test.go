package eval

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadSKABDir(t *testing.T) {
	files, err := ReadSKABDir("testdata/skab")
	if err != nil {
		t.Fatal(err)
	}
	// anomaly-free/anomaly-free.csv has no labels and is skipped.
	if len(files) != 1 || files[0].Name != "valve1/0.csv" {
		t.Fatalf("files %v, want only valve1/0.csv", names(files))
	}
	f := files[0]
	if f.X.Rows != 480 || f.X.Cols != 8 || len(f.Times) != 480 || len(f.Anomaly) != 480 || len(f.Changepoint) != 480 {
		t.Fatalf("shape %d×%d, %d times, %d/%d labels; want 480×8 and 480 of each", f.X.Rows, f.X.Cols, len(f.Times), len(f.Anomaly), len(f.Changepoint))
	}
	if f.Signals[0] != "Accelerometer1RMS" || f.Signals[7] != "Volume Flow RateRMS" {
		t.Errorf("signals %q", f.Signals)
	}
	if want := time.Date(2020, 3, 9, 10, 14, 33, 0, time.UTC); !f.Times[0].Equal(want) || !f.Times[1].Equal(want.Add(time.Second)) {
		t.Errorf("times start %v, %v; want %v and a second later", f.Times[0], f.Times[1], want)
	}
	var anomalies, cps []int
	for i := range f.Anomaly {
		if f.Anomaly[i] {
			anomalies = append(anomalies, i)
		}
		if f.Changepoint[i] {
			cps = append(cps, i)
		}
	}
	if len(anomalies) != 30 || anomalies[0] != 430 || anomalies[29] != 459 {
		t.Errorf("anomalous rows %v, want 430..459", anomalies)
	}
	if len(cps) != 2 || cps[0] != 430 || cps[1] != 460 {
		t.Errorf("changepoints at %v, want 430 and 460", cps)
	}
	if _, err := ReadSKABDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no labelled") {
		t.Errorf("empty dir: %v", err)
	}
}

func names(files []*Series) []string {
	var n []string
	for _, f := range files {
		n = append(n, f.Name)
	}
	return n
}

func TestReadSKABErrors(t *testing.T) {
	const head = "datetime;a;b;anomaly;changepoint\n"
	tests := []struct{ name, in, want string }{
		{"empty", "", "empty file"},
		{"bad header", "time;a\n", "expected datetime"},
		{"labels only", "datetime;anomaly;changepoint\n", "no signal columns"},
		{"short row", head + "2020-01-01 00:00:00;1;2;0\n", "4 fields; expected 5"},
		{"bad time", head + "2020-01-01T00:00:00;1;2;0;0\n", "datetime"},
		{"bad value", head + "2020-01-01 00:00:00;x;2;0;0\n", `a: value "x"`},
		{"infinite value", head + "2020-01-01 00:00:00;1;Inf;0;0\n", "finite"},
		{"bad label", head + "2020-01-01 00:00:00;1;2;0.5;0\n", "anomaly label"},
		{"back in time", head + "2020-01-01 00:00:01;1;2;0;0\n2020-01-01 00:00:00;1;2;0;0\n", "back in time"},
		{"no rows", head, "no data rows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadSKAB(strings.NewReader(tt.in), "x.csv")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestReadNABDir(t *testing.T) {
	files, err := ReadNABDir("testdata/nab")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].Name != "realKnownCause/tiny.csv" {
		t.Fatalf("files %+v", files)
	}
	f := files[0]
	if f.X.Rows != 200 || f.X.Cols != 1 || len(f.Windows) != 1 {
		t.Fatalf("%d×%d rows, %d windows; want 200×1 and 1", f.X.Rows, f.X.Cols, len(f.Windows))
	}
	if !f.Windows[0].Start.Equal(f.Times[150]) || !f.Windows[0].End.Equal(f.Times[160]) {
		t.Errorf("window %v, want rows 150..160 (%v..%v)", f.Windows[0], f.Times[150], f.Times[160])
	}

	// A data file without labels, and labels without a data file, are both errors.
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "data", "x", "a.csv"), "timestamp,value\n2014-04-01 00:00:00,1\n")
	mustWrite(t, filepath.Join(dir, "labels", "combined_windows.json"), `{"x/b.csv": []}`)
	if _, err := ReadNABDir(dir); err == nil || !strings.Contains(err.Error(), "x/a.csv has no entry") {
		t.Errorf("unlabelled data file: %v", err)
	}
	mustWrite(t, filepath.Join(dir, "labels", "combined_windows.json"), `{"x/a.csv": [], "x/b.csv": []}`)
	if _, err := ReadNABDir(dir); err == nil || !strings.Contains(err.Error(), "labels name x/b.csv") {
		t.Errorf("label without data: %v", err)
	}
	if _, err := ReadNABDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "combined_windows.json") {
		t.Errorf("missing labels: %v", err)
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestParseNABWindows(t *testing.T) {
	w, err := ParseNABWindows([]byte(`{"a/x.csv": [["2014-04-10 07:15:00.000000", "2014-04-11 16:45:00.000000"], ["2014-04-01 00:00:00", "2014-04-02 00:00:00"]], "b.csv": []}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(w["a/x.csv"]) != 2 || len(w["b.csv"]) != 0 {
		t.Fatalf("windows %v", w)
	}
	// Sorted by start.
	if got := w["a/x.csv"][0].Start; !got.Equal(time.Date(2014, 4, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("first window starts %v", got)
	}
	for _, bad := range []struct{ in, want string }{
		{`[]`, "expected {"},
		{`{"a": [["2014-04-01 00:00:00"]]}`, "expected [start, end]"},
		{`{"a": [["yesterday", "2014-04-01 00:00:00"]]}`, "timestamp"},
		{`{"a": [["2014-04-02 00:00:00", "2014-04-01 00:00:00"]]}`, "before it starts"},
	} {
		if _, err := ParseNABWindows([]byte(bad.in)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: error %v, want %q", bad.in, err, bad.want)
		}
	}
}

func TestReadNABCSVErrors(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"header", "time,value\n", "expected timestamp,value"},
		{"repeated time", "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:00:00,2\n", "strictly ascending"},
		{"value", "timestamp,value\n2014-04-01 00:00:00,NaN\n", "finite"},
		{"fields", "timestamp,value\n2014-04-01 00:00:00\n", "1 fields; expected 2"},
	} {
		if _, err := ReadNABCSV(strings.NewReader(tt.in), "x.csv"); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestReadCMAPSSDir(t *testing.T) {
	d, err := ReadCMAPSSDir("testdata/cmapss", "FD999")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Train) != 6 || len(d.Test) != 3 || len(d.RUL) != 3 {
		t.Fatalf("%d train, %d test engines, %d RUL; want 6, 3, 3", len(d.Train), len(d.Test), len(d.RUL))
	}
	if d.Train[0].Unit != 1 || len(d.Train[0].Cycles) != 150 || len(d.Train[5].Cycles) != 200 {
		t.Errorf("train engine lengths %d, %d; want 150, 200", len(d.Train[0].Cycles), len(d.Train[5].Cycles))
	}
	if d.RUL[0] != 55 || d.RUL[2] != 15 {
		t.Errorf("RUL %v", d.RUL)
	}
	if got := d.Test[0].Cycles[0][2]; got != 100 { // setting 3
		t.Errorf("test engine 1 cycle 1 setting 3 = %v, want 100", got)
	}
	if _, err := ReadCMAPSSDir("testdata/cmapss", "FD001"); err == nil || !strings.Contains(err.Error(), "train_FD001.txt") {
		t.Errorf("missing subset: %v", err)
	}
}

func TestReadCMAPSSErrors(t *testing.T) {
	row := func(unit, cycle string) string {
		return unit + " " + cycle + strings.Repeat(" 1.5", 24) + "\n"
	}
	for _, tt := range []struct{ name, in, want string }{
		{"empty", "", "no rows"},
		{"columns", "1 1 2 3\n", "4 columns; expected 26"},
		{"unit", row("x", "1"), "positive integers"},
		{"cycle gap", row("1", "1") + row("1", "3"), "expected cycle 2"},
		{"regrouped", row("1", "1") + row("2", "1") + row("1", "2"), "appears again"},
		{"value", strings.Replace(row("1", "1"), "1.5", "abc", 1), `value "abc"`},
	} {
		if _, err := ReadCMAPSS(strings.NewReader(tt.in), "x.txt"); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
	if _, err := ReadRUL(strings.NewReader("12\n-3\n"), "RUL.txt"); err == nil || !strings.Contains(err.Error(), "non-negative") {
		t.Errorf("negative RUL: %v", err)
	}
}

// FuzzReaders feeds arbitrary bytes to every benchmark-file decoder: none may panic, and what
// they accept must be well formed.
func FuzzReaders(f *testing.F) {
	for _, p := range []string{"testdata/skab/valve1/0.csv", "testdata/nab/data/realKnownCause/tiny.csv", "testdata/nab/labels/combined_windows.json", "testdata/cmapss/RUL_FD999.txt"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) > 2000 {
			b = b[:2000]
		}
		f.Add(b)
	}
	f.Add([]byte("1 1" + strings.Repeat(" 0.5", 24) + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := ReadSKAB(strings.NewReader(string(b)), "f"); err == nil {
			if s.X.Check(1) != nil || len(s.Times) != s.X.Rows || (s.Anomaly != nil && len(s.Anomaly) != s.X.Rows) {
				t.Fatalf("ReadSKAB accepted a malformed series: %d×%d, %d times", s.X.Rows, s.X.Cols, len(s.Times))
			}
		}
		if s, err := ReadNABCSV(strings.NewReader(string(b)), "f"); err == nil {
			if s.X.Check(1) != nil || len(s.Times) != s.X.Rows {
				t.Fatalf("ReadNABCSV accepted a malformed series")
			}
		}
		if w, err := ParseNABWindows(b); err == nil {
			for _, ws := range w {
				for _, x := range ws {
					if x.End.Before(x.Start) {
						t.Fatalf("ParseNABWindows accepted a reversed window")
					}
				}
			}
		}
		if es, err := ReadCMAPSS(strings.NewReader(string(b)), "f"); err == nil {
			for _, e := range es {
				if len(e.Cycles) == 0 {
					t.Fatalf("ReadCMAPSS returned an engine without cycles")
				}
			}
		}
		_, _ = ReadRUL(strings.NewReader(string(b)), "f")
	})
}
