package eval

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/millwright-io/millwright/models/rul"
)

// cmapssColumns is the column count of a C-MAPSS row: unit, cycle, 3 settings, 21 sensors.
const cmapssColumns = 26

// ReadCMAPSS parses a C-MAPSS train or test file (whitespace separated, 26 columns per row,
// rows grouped by unit in ascending cycle order) into one engine per unit.
func ReadCMAPSS(r io.Reader, name string) ([]rul.Engine, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxLineBytes)
	var out []rul.Engine
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != cmapssColumns {
			return nil, fmt.Errorf("cmapss %s:%d: %d columns; expected %d (unit, cycle, 3 settings, 21 sensors)", name, line, len(f), cmapssColumns)
		}
		unit, err1 := strconv.Atoi(f[0])
		cycle, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil || unit <= 0 || cycle <= 0 {
			return nil, fmt.Errorf("cmapss %s:%d: unit %q cycle %q; expected positive integers", name, line, f[0], f[1])
		}
		var row [rul.Settings + rul.Sensors]float64
		for k := range row {
			v, err := parseFinite(f[2+k])
			if err != nil {
				return nil, fmt.Errorf("cmapss %s:%d: column %d: %w", name, line, 3+k, err)
			}
			row[k] = v
		}
		n := len(out)
		if n == 0 || out[n-1].Unit != unit {
			for _, e := range out {
				if e.Unit == unit {
					return nil, fmt.Errorf("cmapss %s:%d: unit %d appears again after other units; expected rows grouped by unit", name, line, unit)
				}
			}
			out = append(out, rul.Engine{Unit: unit})
			n++
		}
		e := &out[n-1]
		if cycle != len(e.Cycles)+1 {
			return nil, fmt.Errorf("cmapss %s:%d: unit %d cycle %d; expected cycle %d", name, line, unit, cycle, len(e.Cycles)+1)
		}
		e.Cycles = append(e.Cycles, row)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cmapss %s: %w", name, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("cmapss %s: no rows", name)
	}
	return out, nil
}

// ReadRUL parses a C-MAPSS RUL file: one true remaining life (cycles) per line, per test unit.
func ReadRUL(r io.Reader, name string) ([]float64, error) {
	sc := bufio.NewScanner(r)
	var out []float64
	line := 0
	for sc.Scan() {
		line++
		t := strings.TrimSpace(sc.Text())
		if t == "" {
			continue
		}
		v, err := parseFinite(t)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("cmapss %s:%d: RUL %q; expected a non-negative number", name, line, t)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cmapss %s: %w", name, err)
	}
	return out, nil
}

// CMAPSS is one subset of the C-MAPSS data: run-to-failure training engines, truncated test
// engines and the test engines' true RUL at their last cycle.
type CMAPSS struct {
	Subset string
	Train  []rul.Engine
	Test   []rul.Engine
	RUL    []float64
}

// ReadCMAPSSDir reads train_SUBSET.txt, test_SUBSET.txt and RUL_SUBSET.txt from dir.
func ReadCMAPSSDir(dir, subset string) (*CMAPSS, error) {
	read := func(prefix string) (*os.File, string, error) {
		name := prefix + "_" + subset + ".txt"
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return nil, name, fmt.Errorf("cmapss: %w; expected %s in %s", err, name, dir)
		}
		return f, name, nil
	}
	d := &CMAPSS{Subset: subset}
	for _, part := range []struct {
		prefix string
		dst    *[]rul.Engine
	}{{"train", &d.Train}, {"test", &d.Test}} {
		f, name, err := read(part.prefix)
		if err != nil {
			return nil, err
		}
		*part.dst, err = ReadCMAPSS(f, name)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	f, name, err := read("RUL")
	if err != nil {
		return nil, err
	}
	d.RUL, err = ReadRUL(f, name)
	f.Close()
	if err != nil {
		return nil, err
	}
	if len(d.RUL) != len(d.Test) {
		return nil, fmt.Errorf("cmapss: %s has %d values but test_%s.txt has %d units; expected one RUL per test unit", name, len(d.RUL), subset, len(d.Test))
	}
	return d, nil
}
