package eval

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/millwright-io/millwright/models"
)

// NABFile is one NAB data file with its labelled anomaly windows.
type NABFile struct {
	Series
	Windows []Window
}

// nabTimeLayouts are the timestamp layouts NAB's data and label files use.
var nabTimeLayouts = []string{"2006-01-02 15:04:05.000000", "2006-01-02 15:04:05", "2006-01-02T15:04:05Z07:00"}

func parseNABTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, l := range nabTimeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("timestamp %q; expected YYYY-MM-DD hh:mm:ss[.ffffff]", s)
}

// ReadNABCSV parses one NAB data file: ',' separated, a header "timestamp,value" (further
// numeric columns are read as extra signals), one row per timestamp, ascending.
func ReadNABCSV(r io.Reader, name string) (*Series, error) {
	s := &Series{Name: name}
	var data []float64
	head := func(h []string) error {
		if len(h) < 2 || h[0] != "timestamp" {
			return fmt.Errorf("header %q; expected timestamp,value", strings.Join(h, ","))
		}
		s.Signals = h[1:]
		return nil
	}
	row := func(f []string) error {
		t, err := parseNABTime(f[0])
		if err != nil {
			return err
		}
		if n := len(s.Times); n > 0 && !t.After(s.Times[n-1]) {
			return fmt.Errorf("timestamp %s not after the previous row's; expected strictly ascending rows", f[0])
		}
		s.Times = append(s.Times, t)
		for k, v := range f[1:] {
			x, err := parseFinite(v)
			if err != nil {
				return fmt.Errorf("%s: %w", s.Signals[k], err)
			}
			data = append(data, x)
		}
		return nil
	}
	if err := readDelimited(r, ",", head, row); err != nil {
		return nil, fmt.Errorf("nab %s%w", name, err)
	}
	s.X = models.Matrix{Rows: len(s.Times), Cols: len(s.Signals), Data: data}
	return s, nil
}

// ParseNABWindows decodes NAB's labels/combined_windows.json: file name (relative to data/)
// → list of [start, end] timestamp pairs.
func ParseNABWindows(b []byte) (map[string][]Window, error) {
	var raw map[string][][]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("nab windows: %w; expected {\"dir/file.csv\": [[start, end], ...]}", err)
	}
	out := make(map[string][]Window, len(raw))
	for name, ws := range raw {
		out[name] = make([]Window, 0, len(ws))
		for i, w := range ws {
			if len(w) != 2 {
				return nil, fmt.Errorf("nab windows: %s[%d] has %d timestamps; expected [start, end]", name, i, len(w))
			}
			a, err := parseNABTime(w[0])
			if err != nil {
				return nil, fmt.Errorf("nab windows: %s[%d]: %w", name, i, err)
			}
			b, err := parseNABTime(w[1])
			if err != nil {
				return nil, fmt.Errorf("nab windows: %s[%d]: %w", name, i, err)
			}
			if b.Before(a) {
				return nil, fmt.Errorf("nab windows: %s[%d] ends at %s before it starts at %s", name, i, w[1], w[0])
			}
			out[name] = append(out[name], Window{Start: a, End: b})
		}
		slices.SortFunc(out[name], func(x, y Window) int { return x.Start.Compare(y.Start) })
	}
	return out, nil
}

// maxLabelFile bounds the NAB label file the reader accepts.
const maxLabelFile = 16 << 20

// ReadNABDir reads a directory laid out like the NAB repository: data/**/*.csv and
// labels/combined_windows.json. Every data file must have an entry in the labels (possibly
// empty); label entries without a data file are an error too, so a partial copy is noticed.
func ReadNABDir(dir string) ([]*NABFile, error) {
	lf, err := os.Open(filepath.Join(dir, "labels", "combined_windows.json"))
	if err != nil {
		return nil, fmt.Errorf("nab: %w; expected DIR/labels/combined_windows.json", err)
	}
	b, err := io.ReadAll(io.LimitReader(lf, maxLabelFile+1))
	lf.Close()
	if err != nil {
		return nil, fmt.Errorf("nab: reading labels: %w", err)
	}
	if len(b) > maxLabelFile {
		return nil, fmt.Errorf("nab: labels file larger than %d bytes", maxLabelFile)
	}
	windows, err := ParseNABWindows(b)
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(dir, "data")
	paths, err := csvFiles(dataDir)
	if err != nil {
		return nil, fmt.Errorf("nab: %w; expected DIR/data/**/*.csv", err)
	}
	seen := make(map[string]bool)
	var out []*NABFile
	for _, p := range paths {
		rel, _ := filepath.Rel(dataDir, p)
		rel = filepath.ToSlash(rel)
		ws, ok := windows[rel]
		if !ok {
			return nil, fmt.Errorf("nab: data file %s has no entry in labels/combined_windows.json", rel)
		}
		seen[rel] = true
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("nab: %w", err)
		}
		s, err := ReadNABCSV(f, rel)
		f.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, &NABFile{Series: *s, Windows: ws})
	}
	for name := range windows {
		if !seen[name] {
			return nil, fmt.Errorf("nab: labels name %s but %s does not exist", name, filepath.Join(dataDir, filepath.FromSlash(name)))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("nab: no *.csv files under %s", dataDir)
	}
	return out, nil
}
