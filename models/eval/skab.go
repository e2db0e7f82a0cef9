package eval

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/millwright-io/millwright/models"
)

// SKABTimeLayout is the layout of SKAB's datetime column.
const SKABTimeLayout = "2006-01-02 15:04:05"

// Series is one labelled multivariate time series: a benchmark file.
type Series struct {
	Name        string      // path relative to the dataset directory
	Signals     []string    // column names of X
	Times       []time.Time // one per row, ascending
	X           models.Matrix
	Anomaly     []bool // per-row outlier label (nil if the file has none)
	Changepoint []bool // per-row changepoint label (nil if the file has none)
}

// maxLineBytes bounds one CSV line the readers accept.
const maxLineBytes = 1 << 20

// ReadSKAB parses one SKAB file: ';'-separated, a header whose first column is datetime, the
// signals, and optionally the anomaly and changepoint label columns (0/1, written as floats).
func ReadSKAB(r io.Reader, name string) (*Series, error) {
	s := &Series{Name: name}
	var header []string
	anomalyCol, cpCol := -1, -1
	var sigCols []int
	var data []float64
	head := func(h []string) error {
		header = h
		if len(h) < 2 || h[0] != "datetime" {
			return fmt.Errorf("header %q; expected datetime;SIGNAL;...", strings.Join(h, ";"))
		}
		for i, c := range h[1:] {
			switch c {
			case "anomaly":
				anomalyCol = i + 1
			case "changepoint":
				cpCol = i + 1
			default:
				s.Signals = append(s.Signals, c)
				sigCols = append(sigCols, i+1)
			}
		}
		if len(sigCols) == 0 {
			return fmt.Errorf("header %q has no signal columns", strings.Join(h, ";"))
		}
		return nil
	}
	row := func(f []string) error {
		t, err := time.Parse(SKABTimeLayout, f[0])
		if err != nil {
			return fmt.Errorf("datetime %q; expected %s", f[0], SKABTimeLayout)
		}
		if n := len(s.Times); n > 0 && t.Before(s.Times[n-1]) {
			return fmt.Errorf("datetime %s goes back in time; expected ascending rows", f[0])
		}
		s.Times = append(s.Times, t)
		for k, c := range sigCols {
			v, err := parseFinite(f[c])
			if err != nil {
				return fmt.Errorf("%s: %w", s.Signals[k], err)
			}
			data = append(data, v)
		}
		for _, lc := range []struct {
			col int
			dst *[]bool
		}{{anomalyCol, &s.Anomaly}, {cpCol, &s.Changepoint}} {
			if lc.col < 0 {
				continue
			}
			v, err := parseFinite(f[lc.col])
			if err != nil || (v != 0 && v != 1) {
				return fmt.Errorf("%s label %q; expected 0 or 1", header[lc.col], f[lc.col])
			}
			*lc.dst = append(*lc.dst, v == 1)
		}
		return nil
	}
	if err := readDelimited(r, ";", head, row); err != nil {
		return nil, fmt.Errorf("skab %s%w", name, err)
	}
	s.X = models.Matrix{Rows: len(s.Times), Cols: len(sigCols), Data: data}
	return s, nil
}

// readDelimited reads a text table separated by sep: head gets the header's fields, row every
// non-blank data line's (exactly as many as the header has). Errors start with ":LINE: " or
// ": " so that the caller can prefix the file's name. A table without data rows is an error.
func readDelimited(r io.Reader, sep string, head func([]string) error, row func([]string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxLineBytes)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return fmt.Errorf(": %w", err)
		}
		return fmt.Errorf(": empty file; expected a header line")
	}
	header := strings.Split(strings.TrimSpace(strings.TrimPrefix(sc.Text(), "\ufeff")), sep)
	if err := head(header); err != nil {
		return fmt.Errorf(": %w", err)
	}
	line, rows := 1, 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		f := strings.Split(text, sep)
		if len(f) != len(header) {
			return fmt.Errorf(":%d: %d fields; expected %d", line, len(f), len(header))
		}
		if err := row(f); err != nil {
			return fmt.Errorf(":%d: %w", line, err)
		}
		rows++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf(": %w", err)
	}
	if rows == 0 {
		return fmt.Errorf(": no data rows")
	}
	return nil
}

func parseFinite(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, fmt.Errorf("value %q; expected a number", s)
	}
	if v != v || v > 1e308 || v < -1e308 {
		return 0, fmt.Errorf("value %q; expected a finite number", s)
	}
	return v, nil
}

// ReadSKABDir reads every *.csv file under dir (recursively, in lexical order) that carries
// both label columns; files without labels (SKAB's anomaly-free run) are skipped, as the
// published protocol does not use them.
func ReadSKABDir(dir string) ([]*Series, error) {
	paths, err := csvFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("skab: reading %s: %w", dir, err)
	}
	var out []*Series
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("skab: %w", err)
		}
		rel, _ := filepath.Rel(dir, p)
		s, err := ReadSKAB(f, filepath.ToSlash(rel))
		f.Close()
		if err != nil {
			return nil, err
		}
		if s.Anomaly == nil || s.Changepoint == nil {
			continue
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("skab: no labelled *.csv files under %s; expected SKAB files with anomaly and changepoint columns", dir)
	}
	return out, nil
}

// csvFiles lists the *.csv files under dir, recursively, in lexical order.
func csvFiles(dir string) ([]string, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".csv") {
			paths = append(paths, p)
		}
		return nil
	})
	slices.Sort(paths)
	return paths, err
}
