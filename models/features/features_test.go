package features

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/models"
)

var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func pt(machine, signal string, at time.Duration, v float64, q telemetry.Level) telemetry.Point {
	return telemetry.Point{Machine: machine, Signal: signal, SourceTime: t0.Add(at).UnixNano(), Value: telemetry.Float(v), Quality: telemetry.Quality{Level: q}}
}

func TestAlign(t *testing.T) {
	var pts []telemetry.Point
	for s := range 10 {
		at := time.Duration(s) * time.Second
		pts = append(pts, pt("m1", "a", at+10*time.Millisecond, float64(s), telemetry.Good))
		if s < 3 || s >= 8 { // b pauses for 5 s: 2 carried, then missing
			pts = append(pts, pt("m1", "b", at, 100+float64(s), telemetry.Good))
		}
	}
	pts = append(pts,
		pt("m1", "a", 4*time.Second+500*time.Millisecond, -1, telemetry.Bad),       // excluded
		pt("m1", "a", 5*time.Second+500*time.Millisecond, 55, telemetry.Uncertain), // kept
		pt("m2", "a", time.Second, 7, telemetry.Good),                              // other machine
		pt("m1", "c", time.Second, 7, telemetry.Good),                              // other signal
		telemetry.Point{Machine: "m1", Signal: "a", SourceTime: t0.Add(6500 * time.Millisecond).UnixNano(), Value: telemetry.String("x")},
	)
	slices.Reverse(pts) // any order
	g, err := Align(Config{FillLimit: 2}, "m1", []string{"a", "b"}, pts, t0, t0.Add(9*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if g.Values.Rows != 10 {
		t.Fatalf("%d rows; want 10 (0 s to 9 s)", g.Values.Rows)
	}
	nan := math.NaN()
	// Row k holds the newest sample of [k s, k+1 s): a's of 10 ms past k s, or the
	// uncertain 55 at 5.5 s.
	wantA := []float64{0, 1, 2, 3, 4, 55, 6, 7, 8, 9}
	wantB := []float64{100, 101, 102, 102, 102, nan, nan, nan, 108, 109}
	for k := range 10 {
		a, b := g.Values.Row(k)[0], g.Values.Row(k)[1]
		if !same(a, wantA[k]) || !same(b, wantB[k]) {
			t.Errorf("row %d: a=%v b=%v; want %v %v", k, a, b, wantA[k], wantB[k])
		}
		if want := !math.IsNaN(wantA[k]) && !math.IsNaN(wantB[k]); g.Complete[k] != want {
			t.Errorf("row %d complete %v", k, g.Complete[k])
		}
	}
	st := g.Stats
	if st.IncompleteRows != 3 || st.Rows != 10 || st.Ignored != 2 {
		t.Errorf("stats %+v; want 3 incomplete of 10 rows, 2 ignored", st)
	}
	a, b := st.Signals[0], st.Signals[1]
	if a.Samples != 13 || a.BadQuality != 1 || a.Invalid != 1 || a.Missing != 0 || a.Filled != 0 {
		t.Errorf("signal a stats %+v; want 13 samples, 1 bad, 1 invalid, none missing or filled", a)
	}
	if b.Filled != 2 || b.Missing != 3 || b.First != t0.UnixNano() || b.Last != t0.Add(9*time.Second).UnixNano() {
		t.Errorf("signal b stats %+v; want 2 filled, 3 missing, window 0 s to 9 s", b)
	}
	excl, err := Align(Config{FillLimit: 2, ExcludeUncertain: true}, "m1", []string{"a", "b"}, pts, t0, t0.Add(9*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if v := excl.Values.Row(5)[0]; v != 5 || excl.Stats.Signals[0].BadQuality != 2 {
		t.Errorf("exclude_uncertain: row 5 a=%v, bad %d; want 5 and 2", v, excl.Stats.Signals[0].BadQuality)
	}
}

func same(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }

func TestWindows(t *testing.T) {
	vals := models.NewMatrix(8, 2)
	for i := range vals.Data {
		vals.Data[i] = float64(i)
	}
	complete := []bool{true, true, true, true, false, true, true, true}
	w, starts, err := Windows(vals, complete, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(starts, []int{0, 1, 5}) {
		t.Fatalf("window starts %v; want 0, 1, 5 (none across the incomplete row 4)", starts)
	}
	if !slices.Equal(w.Row(1), []float64{2, 3, 4, 5, 6, 7}) {
		t.Errorf("window 1 is %v; want rows 1-3 flattened time-major", w.Row(1))
	}
	_, starts, _ = Windows(vals, complete, 2, 2)
	if !slices.Equal(starts, []int{0, 2, 6}) {
		t.Errorf("stride 2: starts %v; want 0, 2, 6 (multiples of the stride)", starts)
	}
	shares := make([]float64, 2)
	SignalShares([]float64{1, 10, 2, 20, 3, 30}, shares)
	if !slices.Equal(shares, []float64{6, 60}) {
		t.Errorf("signal shares %v", shares)
	}
}

// A stream of live points gives exactly the windows of training on the same history.
func TestStreamMatchesBatch(t *testing.T) {
	signals := []string{"x", "y", "z"}
	var pts []telemetry.Point
	for s := range 300 {
		for j, name := range signals {
			if name == "z" && s%50 == 7 {
				continue // a gap now and then: filled
			}
			if name == "y" && s >= 120 && s < 130 {
				continue // a long gap: incomplete rows
			}
			v := math.Sin(float64(s)/10+float64(j)) * float64(j+1)
			pts = append(pts, pt("m", name, time.Duration(s)*time.Second+time.Duration(j)*time.Millisecond, v, telemetry.Good))
		}
	}
	cfg := Config{WindowSize: 5, WindowStride: 2, TrainStride: 2}
	g, err := Align(cfg, "m", signals, pts, t0, t0.Add(299*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := Prepare(cfg, g)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStream(cfg, "m", tr.Scaler)
	if err != nil {
		t.Fatal(err)
	}
	var got []float64
	n := 0
	for i := range pts {
		s.Add(&pts[i])
		// Emit each second's row once the next second's first sample arrives.
		if i+1 < len(pts) && pts[i+1].Time()/1e9 != pts[i].Time()/1e9 {
			s.Advance(t0.UnixNano(), pts[i].Time(), func(_ int64, w []float64) { got = append(got, w...); n++ })
		}
	}
	s.Advance(t0.UnixNano(), t0.Add(299*time.Second).UnixNano(), func(_ int64, w []float64) { got = append(got, w...); n++ })
	if n != tr.Windows.Rows || !slices.Equal(got, tr.Windows.Data) {
		t.Fatalf("stream gave %d windows, batch %d; equal values: %v", n, tr.Windows.Rows, slices.Equal(got, tr.Windows.Data))
	}
	if n < 100 {
		t.Fatalf("only %d windows", n)
	}
}

func TestScaler(t *testing.T) {
	vals := models.NewMatrix(101, 3)
	for i := range 101 {
		vals.Row(i)[0] = float64(i)             // median 50, IQR 50
		vals.Row(i)[1] = 7                      // constant
		vals.Row(i)[2] = float64(i%2) * 1000000 // IQR 1e6
	}
	vals.Row(3)[0] = math.NaN()
	s, err := FitScaler([]string{"a", "b", "c"}, vals)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Constant[1] || s.Scale[1] != 1 || s.Median[1] != 7 || s.Constant[0] {
		t.Errorf("scaler %+v: b is constant with scale 1, a is not", s)
	}
	if math.Abs(s.Median[0]-50.5) > 1e-9 || math.Abs(s.Scale[0]-50/iqrToSigma) > 1 {
		t.Errorf("a: median %v scale %v", s.Median[0], s.Scale[0])
	}
	row := []float64{50.5, 8, math.NaN()}
	s.Transform(row)
	if row[0] != 0 || row[1] != 1 || !math.IsNaN(row[2]) {
		t.Errorf("transformed %v", row)
	}
	if err := s.Validate(); err != nil {
		t.Error(err)
	}
	s.Scale[2] = 0
	if err := s.Validate(); err == nil {
		t.Error("a zero scale validated")
	}
	// Scale invariance: multiplying a signal by a constant gives the same scaled values.
	big := models.NewMatrix(101, 3)
	for i, v := range vals.Data {
		big.Data[i] = v * 1000
	}
	s1, _ := FitScaler([]string{"a", "b", "c"}, vals)
	s2, _ := FitScaler([]string{"a", "b", "c"}, big)
	r1, r2 := slices.Clone(vals.Row(10)), slices.Clone(big.Row(10))
	s1.Transform(r1)
	s2.Transform(r2)
	for j := range r1 {
		if j != 1 && math.Abs(r1[j]-r2[j]) > 1e-9 {
			t.Errorf("column %d: %v at scale 1, %v at scale 1000", j, r1[j], r2[j])
		}
	}
}

func TestMissingSignalDropped(t *testing.T) {
	var pts []telemetry.Point
	for s := range 100 {
		pts = append(pts, pt("m", "a", time.Duration(s)*time.Second, float64(s%7), telemetry.Good))
		if s < 20 {
			pts = append(pts, pt("m", "sparse", time.Duration(s)*time.Second, 1, telemetry.Good))
		}
	}
	g, err := Align(Config{}, "m", []string{"a", "gone", "sparse"}, pts, t0, t0.Add(99*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if g.Stats.IncompleteRows != 100 {
		t.Fatalf("%d incomplete rows; want all 100 (a signal never reports)", g.Stats.IncompleteRows)
	}
	tr, err := Prepare(Config{WindowSize: 4}, g)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tr.Dropped, []string{"gone", "sparse"}) || !slices.Equal(tr.Scaler.Signals, []string{"a"}) {
		t.Errorf("dropped %v, kept %v; want gone and sparse dropped", tr.Dropped, tr.Scaler.Signals)
	}
	if tr.Windows.Rows != 97 || tr.Windows.Cols != 4 {
		t.Errorf("%d×%d windows; want 97×4", tr.Windows.Rows, tr.Windows.Cols)
	}
	if _, err := Prepare(Config{}, &Grid{Signals: []string{"x"}, Values: models.NewMatrix(0, 1), Stats: Stats{Signals: []SignalStats{{Signal: "x"}}}}); err == nil {
		t.Error("no data prepared without error")
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{Step: time.Nanosecond, FillLimit: -1, WindowSize: -1, WindowStride: -2, TrainStride: -1, MinCoverage: 2}
	err := c.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 6 {
		t.Errorf("%d problems, want 6: %v", n, err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Error(err)
	}
}

// A live aligner holds, per signal, the samples of fill_limit+2 steps ahead of its rows (the
// rows wait for a signal lagging up to fill_limit steps): none of them is dropped, so
// the rows are those training aligns from the same samples.
func TestAlignerHoldsFillLimitPlusTwoPendingSamples(t *testing.T) {
	const fill = 100
	a, err := NewAligner(Config{FillLimit: fill}, "m", []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	add := func(s int) {
		p := pt("m", "a", time.Duration(s)*time.Second, float64(s), telemetry.Good)
		a.Add(&p)
	}
	for s := range fill + 2 {
		add(s)
	}
	if n := a.Stats().Signals[0].Overflow; n != 0 {
		t.Fatalf("%d of %d pending samples dropped with fill_limit %d; want none", n, fill+2, fill)
	}
	add(fill + 2)
	if n := a.Stats().Signals[0].Overflow; n != 1 {
		t.Errorf("one sample beyond fill_limit+2 pending: %d dropped, want 1", n)
	}
	var rows []float64
	a.Emit(t0.UnixNano(), t0.Add((fill+2)*time.Second).UnixNano(), func(_ int64, r []float64, _ bool) { rows = append(rows, r[0]) })
	if len(rows) != fill+3 || !math.IsNaN(rows[0]) || rows[1] != 1 || rows[fill+2] != fill+2 {
		t.Errorf("%d rows %v...; want %d, the first missing (its sample was dropped), then every sample in its row", len(rows), rows[:min(4, len(rows))], fill+3)
	}
}

// A fill limit beyond the cap is refused with the fields, the values and what to change.
func TestConfigRefusesFillLimitAboveTheCap(t *testing.T) {
	ok := Config{FillLimit: MaxFillLimit}
	ok.SetDefaults()
	if err := ok.Validate(); err != nil {
		t.Errorf("fill_limit %d (the cap) refused: %v", MaxFillLimit, err)
	}
	c := Config{FillLimit: MaxFillLimit + 1, Step: 2 * time.Second}
	c.SetDefaults()
	err := c.Validate()
	if err == nil {
		t.Fatalf("fill_limit %d accepted; want it refused above %d", c.FillLimit, MaxFillLimit)
	}
	for _, want := range []string{"fill_limit 16385", "step 2s", "expected 0 to 16384", "9h6m8s at this step", "longer step"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// BenchmarkStream measures the live path per grid row of 10 signals with windows of 10.
func BenchmarkStream(b *testing.B) {
	signals := []string{"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"}
	sc := &Scaler{Signals: signals, Median: make([]float64, 10), Scale: slices.Repeat([]float64{1}, 10), Constant: make([]bool, 10)}
	s, err := NewStream(Config{}, "m", sc)
	if err != nil {
		b.Fatal(err)
	}
	pts := make([]telemetry.Point, 10)
	for j := range pts {
		pts[j] = pt("m", signals[j], 0, float64(j), telemetry.Good)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		at := t0.Add(time.Duration(i) * time.Second).UnixNano()
		for j := range pts {
			pts[j].SourceTime = at
			s.Add(&pts[j])
		}
		s.Advance(t0.UnixNano(), at, func(int64, []float64) {})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/float64(b.N), "µs/row")
}

// Samples that arrive ahead of Emit, out of order or too far ahead are placed by their step,
// counted, and never shift a row.
func TestAlignerAheadAndOutOfOrder(t *testing.T) {
	a, err := NewAligner(Config{FillLimit: 1}, "m", []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	add := func(sec float64, v float64) {
		p := pt("m", "a", time.Duration(sec*float64(time.Second)), v, telemetry.Good)
		a.Add(&p)
	}
	add(2, 2)
	add(0, 0)
	add(1.5, 15)
	add(1.2, 12) // older than 1.5 in the same step: late
	add(3, 3)
	var rows []float64
	emit := func(until float64) {
		a.Emit(t0.UnixNano(), t0.Add(time.Duration(until*float64(time.Second))).UnixNano(), func(_ int64, r []float64, _ bool) { rows = append(rows, r[0]) })
	}
	emit(3)
	if !slices.Equal(rows, []float64{0, 15, 2, 3}) {
		t.Errorf("rows %v; want 0 15 2 3", rows)
	}
	add(2.5, 25) // its row is out: too late for row 2, and older than the held 3
	emit(5)
	if !same(rows[4], 3) || !math.IsNaN(rows[5]) {
		t.Errorf("rows %v; want 3 carried one step, then missing", rows)
	}
	// More than minPending steps ahead (the bound of a small fill limit): the oldest pending are dropped and counted.
	for s := range minPending + 3 {
		add(float64(10+s), float64(10+s))
	}
	st := a.Stats().Signals[0]
	if st.Late != 2 || st.Overflow != 3 {
		t.Errorf("stats %+v; want 2 late, 3 overflow", st)
	}
	rows = rows[:0]
	emit(14)
	// Rows 6-9 have no samples and the samples of 10-12 were dropped; 13 and 14 are there.
	if len(rows) != 9 || !math.IsNaN(rows[6]) || rows[7] != 13 || rows[8] != 14 {
		t.Errorf("rows 6-14: %v; want 7 missing, then 13 and 14", rows)
	}
}

// BenchmarkPrepareDay aligns, scales and windows one day of 1 Hz samples of 10 signals
// (864,000 points): the feature part of training.
func BenchmarkPrepareDay(b *testing.B) {
	signals := []string{"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"}
	pts := make([]telemetry.Point, 0, 86400*10)
	for s := range 86400 {
		for j, name := range signals {
			pts = append(pts, pt("m", name, time.Duration(s)*time.Second, math.Sin(float64(s+j)/100), telemetry.Good))
		}
	}
	b.ReportAllocs()
	var tr *Training
	for b.Loop() {
		g, err := Align(Config{}, "m", signals, pts, t0, t0.Add(86399*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		if tr, err = Prepare(Config{}, g); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/day")
	b.ReportMetric(float64(tr.Windows.Rows), "windows")
}
