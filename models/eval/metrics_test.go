package eval

import (
	"math"
	"testing"
	"time"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestConfusion(t *testing.T) {
	tests := []struct {
		name         string
		truth, pred  []bool
		want         Confusion
		f1, far, mar float64
	}{
		{
			name:  "mixed",
			truth: []bool{true, true, true, false, false, false, false, true},
			pred:  []bool{true, true, false, true, false, false, false, false},
			want:  Confusion{TP: 2, TN: 3, FP: 1, FN: 2},
			// F1 = 2 / (2 + 3/2); FAR = 1/4; MAR = 2/4
			f1: 2 / 3.5, far: 25, mar: 50,
		},
		{name: "perfect", truth: []bool{true, false}, pred: []bool{true, false}, want: Confusion{TP: 1, TN: 1}, f1: 1, far: 0, mar: 0},
		{name: "null detector", truth: []bool{true, false, false}, pred: []bool{false, false, false}, want: Confusion{TN: 2, FN: 1}, f1: 0, far: 0, mar: 100},
		{name: "empty", want: Confusion{}, f1: 0, far: 0, mar: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Confusion
			if err := c.Add(tt.truth, tt.pred); err != nil {
				t.Fatal(err)
			}
			if c != tt.want {
				t.Fatalf("confusion %+v, want %+v", c, tt.want)
			}
			if !near(c.F1(), tt.f1, 1e-12) || !near(c.FAR(), tt.far, 1e-12) || !near(c.MAR(), tt.mar, 1e-12) {
				t.Errorf("F1 %v FAR %v MAR %v, want %v %v %v", c.F1(), c.FAR(), c.MAR(), tt.f1, tt.far, tt.mar)
			}
		})
	}
	var c Confusion
	if err := c.Add([]bool{true}, nil); err == nil {
		t.Error("Add accepted labels and predictions of different lengths")
	}
}

func TestSKABReward(t *testing.T) {
	std := SKABProfiles[0]
	tests := []struct {
		frac, want, tol float64
	}{
		{0, 1, 1e-12},          // window start earns A_tp
		{-0.5, 1, 1e-12},       // clamped
		{1, -0.11, 1e-12},      // window end earns A_fp (index clamped to 999)
		{0.9995, -0.11, 1e-12}, // int(999.5) = 999
		// frac 0.5: index 500, x = π(500/999 − 1/2) ≈ 0.0015724, y ≈ 0.555·(1 − 0.0015724/tanh(π/2)) − 0.11
		{0.5, 0.44405, 1e-4},
	}
	for _, tt := range tests {
		if got := skabReward(tt.frac, std); !near(got, tt.want, tt.tol) {
			t.Errorf("skabReward(%v) = %v, want %v", tt.frac, got, tt.want)
		}
	}
	// The curve falls monotonically from A_tp to A_fp.
	prev := math.Inf(1)
	for k := 0; k <= 100; k++ {
		v := skabReward(float64(k)/100, std)
		if v > prev {
			t.Fatalf("reward rises at %d%%: %v after %v", k, v, prev)
		}
		prev = v
	}
}

var t0 = time.Date(2020, 3, 9, 10, 0, 0, 0, time.UTC)

func secs(s ...int) []time.Time {
	out := make([]time.Time, len(s))
	for i, v := range s {
		out[i] = t0.Add(time.Duration(v) * time.Second)
	}
	return out
}

func TestRightWindows(t *testing.T) {
	tests := []struct {
		name string
		cps  []int
		want [][2]int
	}{
		{name: "apart", cps: []int{50, 150}, want: [][2]int{{50, 110}, {150, 210}}},
		// The second window starts where the first ends (SKAB's "cut right window").
		{name: "overlapping", cps: []int{0, 30}, want: [][2]int{{0, 60}, {60, 90}}},
		{name: "touching", cps: []int{0, 60}, want: [][2]int{{0, 60}, {60, 120}}},
		{name: "chain", cps: []int{0, 10, 20}, want: [][2]int{{0, 60}, {60, 70}, {70, 80}}},
		{name: "none", cps: nil, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RightWindows(secs(tt.cps...), time.Minute)
			if len(got) != len(tt.want) {
				t.Fatalf("%d windows, want %d", len(got), len(tt.want))
			}
			for i, w := range tt.want {
				if !got[i].Start.Equal(secs(w[0])[0]) || !got[i].End.Equal(secs(w[1])[0]) {
					t.Errorf("window %d = [%v, %v], want [%ds, %ds]", i, got[i].Start.Sub(t0), got[i].End.Sub(t0), w[0], w[1])
				}
			}
		})
	}
}

func TestPredictedChangepoints(t *testing.T) {
	got := PredictedChangepoints([]bool{true, true, false, false, true, false})
	want := []bool{true, false, true, false, true, true}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("changepoints %v, want %v", got, want)
		}
	}
}

func TestChangepointScore(t *testing.T) {
	rows := make([]int, 200)
	for i := range rows {
		rows[i] = i
	}
	times := secs(rows...)
	at := func(idx ...int) []bool {
		cp := make([]bool, len(times))
		for _, i := range idx {
			cp[i] = true
		}
		return cp
	}
	tests := []struct {
		name        string
		cps         []int // true changepoints (seconds)
		det         []int // predicted changepoints (row = second)
		want        [3]float64
		missed, fps int
	}{
		{
			// Window [50,110] hit at its start (+A_tp), a detection at 30 outside (+A_fp), window
			// [150,210] missed (+A_fn). Standard: (1−0.11−1+2)/(2+2)·100 = 47.25; low FP:
			// (1−0.22−1+2)/4·100 = 44.5; low FN: (1−0.11−2+4)/(2+4)·100 = 48.1667.
			name: "hit, false positive, miss", cps: []int{50, 150}, det: []int{30, 50},
			want: [3]float64{47.25, 44.5, 289.0 / 6}, missed: 1, fps: 1,
		},
		{
			// Only the first detection in a window counts, later ones are neither TP nor FP.
			name: "perfect", cps: []int{50, 150}, det: []int{50, 60, 150},
			want: [3]float64{100, 100, 100},
		},
		{name: "null", cps: []int{50, 150}, det: nil, want: [3]float64{0, 0, 0}, missed: 2},
		{
			// A detection at the window's end earns A_fp: (−0.11 − 1 + 2)/4 = 22.25 standard,
			// (−0.22 −1 +2)/4 = 19.5 low FP, (−0.11 −2 +4)/6 = 31.5 low FN.
			name: "late", cps: []int{50, 150}, det: []int{110},
			want: [3]float64{22.25, 19.5, 31.5}, missed: 1,
		},
		{
			// Overlapping windows [0,60] and [60,90]: a detection at 60 is on both, earning A_fp
			// (end of the first) and A_tp (start of the second): (0.89 + 2)/4 = 72.25;
			// (0.78 + 2)/4 = 69.5; (0.89 + 4)/6 = 81.5.
			name: "shared boundary", cps: []int{0, 30}, det: []int{60},
			want: [3]float64{72.25, 69.5, 81.5},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewChangepointScore()
			var cpTimes []time.Time
			for _, c := range tt.cps {
				cpTimes = append(cpTimes, times[c])
			}
			if err := s.Add(times, at(tt.det...), RightWindows(cpTimes, time.Minute)); err != nil {
				t.Fatal(err)
			}
			got := s.Normalized()
			for i := range got {
				if !near(got[i], tt.want[i], 1e-9) {
					t.Errorf("%s score %v, want %v", s.Profiles[i].Name, got[i], tt.want[i])
				}
			}
			if s.Missed != tt.missed || s.FPs != tt.fps || s.Windows != len(tt.cps) {
				t.Errorf("missed %d FPs %d windows %d, want %d %d %d", s.Missed, s.FPs, s.Windows, tt.missed, tt.fps, len(tt.cps))
			}
		})
	}
}

func TestChangepointScoreAggregatesFiles(t *testing.T) {
	// SKAB sums raw, null and perfect over files before normalizing: a perfect file and a null
	// file give 50, not the mean of per-file ratios with different window counts.
	s := NewChangepointScore()
	times := secs(0, 1, 2, 3)
	one := RightWindows(secs(1), time.Minute)
	if err := s.Add(times, []bool{false, true, false, false}, one); err != nil {
		t.Fatal(err)
	}
	three := RightWindows(secs(0, 100, 200), time.Minute)
	if err := s.Add(times, []bool{false, false, false, false}, three); err != nil {
		t.Fatal(err)
	}
	// standard: raw = 1 − 3 = −2, null = −4, perfect = 4 → 100·2/8 = 25.
	if got := s.Normalized()[0]; !near(got, 25, 1e-9) {
		t.Errorf("aggregated standard score %v, want 25", got)
	}
	if err := s.Add(times, []bool{true}, one); err == nil {
		t.Error("Add accepted predictions of a different length")
	}
}

func TestRULMetrics(t *testing.T) {
	tests := []struct {
		name        string
		truth, pred []float64
		rmse, score float64
	}{
		{name: "exact", truth: []float64{10, 20}, pred: []float64{10, 20}, rmse: 0, score: 0},
		// d = +10 (late): e^1 − 1; d = −13 (early): e^1 − 1. RMSE = sqrt((100+169)/2).
		{name: "late and early", truth: []float64{50, 50}, pred: []float64{60, 37}, rmse: math.Sqrt(134.5), score: 2 * (math.E - 1)},
		// Late costs more than early for the same error: e^2 − 1 vs e^(20/13) − 1.
		{name: "late 20", truth: []float64{0}, pred: []float64{20}, rmse: 20, score: math.Exp(2) - 1},
		{name: "early 20", truth: []float64{20}, pred: []float64{0}, rmse: 20, score: math.Exp(20.0/13) - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := RMSE(tt.truth, tt.pred)
			if err != nil || !near(r, tt.rmse, 1e-12) {
				t.Errorf("RMSE = %v, %v; want %v", r, err, tt.rmse)
			}
			s, err := PHM08Score(tt.truth, tt.pred)
			if err != nil || !near(s, tt.score, 1e-12) {
				t.Errorf("PHM08 = %v, %v; want %v", s, err, tt.score)
			}
		})
	}
	if _, err := RMSE(nil, nil); err == nil {
		t.Error("RMSE of nothing did not fail")
	}
	if _, err := PHM08Score([]float64{1}, []float64{1, 2}); err == nil {
		t.Error("PHM08Score of different lengths did not fail")
	}
}
