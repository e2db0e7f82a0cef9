package threshold

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func gaussian(n int, seed uint64) []float64 {
	r := rand.New(rand.NewPCG(seed, 1))
	s := make([]float64, n)
	for i := range s {
		s[i] = r.NormFloat64()
	}
	return s
}

func exceed(s []float64, t float64) float64 {
	n := 0
	for _, v := range s {
		if v > t {
			n++
		}
	}
	return float64(n) / float64(len(s))
}

func TestQuantile(t *testing.T) {
	s := make([]float64, 1001)
	for i := range s {
		s[i] = float64(i)
	}
	th, err := Fit(Config{Method: MethodQuantile, Quantile: 0.99, Margin: 0.5}, s)
	if err != nil {
		t.Fatal(err)
	}
	// Q(0.99) = 990, median 500: 990 + 0.5·490.
	if th.Method != MethodQuantile || th.Q != 990 || th.Value != 1235 || th.Median != 500 {
		t.Errorf("%+v; want q 990, value 1235", th)
	}
}

// POT extrapolates to the target risk: on fresh data from the same distribution the
// exceedance rate is near the risk, far below what the initial quantile gives.
func TestPOTCalibrated(t *testing.T) {
	for _, tc := range []struct {
		name string
		gen  func(n int, seed uint64) []float64
	}{
		{"gaussian", gaussian},
		{"exponential", func(n int, seed uint64) []float64 {
			r := rand.New(rand.NewPCG(seed, 2))
			s := make([]float64, n)
			for i := range s {
				s[i] = r.ExpFloat64()
			}
			return s
		}},
		{"squared gaussian (like Q)", func(n int, seed uint64) []float64 {
			s := gaussian(n, seed)
			for i := range s {
				s[i] *= s[i]
			}
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			th, err := Fit(Config{Risk: 1e-3}, tc.gen(20000, 1))
			if err != nil {
				t.Fatal(err)
			}
			if th.Method != MethodPOT || th.Peaks < 100 {
				t.Fatalf("%+v; want a POT fit on hundreds of peaks", th)
			}
			if rate := exceed(tc.gen(400000, 2), th.Value); rate < 0.0003 || rate > 0.003 {
				t.Errorf("threshold %v (ξ=%.3f σ=%.3f) is exceeded by %.4f%% of fresh data; want about 0.1%%", th.Value, th.Shape, th.ScaleG, 100*rate)
			}
		})
	}
}

func TestDegenerateScores(t *testing.T) {
	same := make([]float64, 500)
	for i := range same {
		same[i] = 0.25
	}
	for _, m := range []string{MethodPOT, MethodQuantile} {
		th, err := Fit(Config{Method: m}, same)
		if err != nil {
			t.Fatal(err)
		}
		if !(th.Value > 0.25) || math.IsInf(th.Value, 0) {
			t.Errorf("%s on constant scores: threshold %v; want just above 0.25", m, th.Value)
		}
	}
	if _, err := Fit(Config{}, []float64{1}); err == nil {
		t.Error("one score accepted")
	}
	if _, err := Fit(Config{}, []float64{1, math.NaN(), 2}); err == nil {
		t.Error("NaN score accepted")
	}
	// Few scores: POT falls back to the quantile method.
	th, err := Fit(Config{}, gaussian(50, 3))
	if err != nil || th.Method != MethodQuantile {
		t.Errorf("50 scores: %+v %v; want the quantile fallback", th, err)
	}
	err = Config{Method: "x", Quantile: 2, Margin: -1, Risk: 1, InitialQuantile: 0.1}.Validate()
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 5 {
		t.Errorf("%d problems, want 5: %v", n, err)
	}
}

func TestAlarm(t *testing.T) {
	const T = 1.0
	tests := []struct {
		name   string
		cfg    AlarmConfig
		scores []float64
		want   string // per score: . unchanged, R raised, C cleared
	}{
		{"one spike does not raise", AlarmConfig{K: 3, N: 5}, []float64{0, 5, 0, 0, 0, 0, 5, 0}, "........"},
		{"k of n raises", AlarmConfig{K: 3, N: 5}, []float64{2, 0, 2, 0, 2, 2}, "....R."},
		{"hysteresis holds between the levels", AlarmConfig{K: 2, N: 2, ClearRatio: 0.5, ClearCount: 2}, []float64{2, 2, 0.9, 0.9, 0.9, 0.4, 0.6, 0.4, 0.4, 0.9}, ".R......C."},
		{"raise again after clear", AlarmConfig{K: 1, N: 1, ClearCount: 1}, []float64{2, 0.1, 2}, "RCR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAlarm(tc.cfg, T)
			if err != nil {
				t.Fatal(err)
			}
			if got := transitions(a, tc.scores); got != tc.want {
				t.Errorf("transitions %s; want %s", got, tc.want)
			}
		})
	}
	if _, err := NewAlarm(AlarmConfig{K: 6, N: 5}, 1); err == nil {
		t.Error("k > n accepted")
	}
}

// The ensemble scores in robust units, so a trained threshold may be negative; its clear
// level must still lie below it, or a steady score between the two raises and clears the
// alarm over and over.
func TestAlarmWithNegativeThresholdClearsBelowIt(t *testing.T) {
	const T = -1.0
	a, err := NewAlarm(AlarmConfig{K: 3, N: 5, ClearRatio: 0.8, ClearCount: 5}, T)
	if err != nil {
		t.Fatal(err)
	}
	// 20 scores above T, 10 between the clear level (-1.2) and T, 5 below the clear level.
	scores := append(append(slices.Repeat([]float64{-0.9}, 20), slices.Repeat([]float64{-1.1}, 10)...), slices.Repeat([]float64{-1.3}, 5)...)
	got := transitions(a, scores)
	want := "..R" + strings.Repeat(".", 17) + strings.Repeat(".", 10) + "....C"
	if got != want {
		t.Errorf("threshold %v, clear ratio 0.8: transitions\n%s, want\n%s", T, got, want)
	}
}

// The clear level is exactly ClearRatio·T for a threshold T ≥ 0, as it always was, and
// T − (1−ClearRatio)·|T| below a negative one.
func TestAlarmClearLevelIsAtOrBelowTheThreshold(t *testing.T) {
	for _, tc := range []struct{ t, ratio, want float64 }{
		{1.557, 0.8, 0.8 * 1.557}, {2.376, 0.3, 0.3 * 2.376}, {0, 0.8, 0}, {5, 1, 5},
		{-1, 0.8, -1.2}, {-2, 1, -2}, {-0.5, 0.5, -0.75},
	} {
		got := clearLevel(tc.t, tc.ratio)
		if tc.t >= 0 && got != tc.want || math.Abs(got-tc.want) > 1e-12 || got > tc.t {
			t.Errorf("clear level of threshold %v at ratio %v = %v, want %v", tc.t, tc.ratio, got, tc.want)
		}
	}
}

// TestAlarmRestoreMatchesScoresAbove: Restore leaves a new alarm as scores of +Inf do until
// it is raised (at most 64 of them), for every K, N and threshold, including thresholds no
// score exceeds.
func TestAlarmRestoreMatchesScoresAbove(t *testing.T) {
	for _, th := range []float64{2, 0, -3, math.Inf(-1), math.Inf(1), math.NaN()} {
		for _, cfg := range []AlarmConfig{{}, {K: 1, N: 1}, {K: 4, N: 9, ClearRatio: 1}, {K: 64, N: 64}, {K: 63, N: 64, ClearCount: 2}} {
			want, err := NewAlarm(cfg, th)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 64 && !want.Active(); i++ {
				want.Update(math.Inf(1))
			}
			got, _ := NewAlarm(cfg, th)
			raised := got.Restore()
			if raised != want.Active() || got.active != want.active || got.window != want.window || got.quiet != want.quiet {
				t.Errorf("threshold %v, %+v: Restore gives %v, window %b, quiet %d; scores of +Inf give %v, window %b, quiet %d",
					th, cfg, raised, got.window, got.quiet, want.active, want.window, want.quiet)
			}
			if again := got.Restore(); again != raised || got.window != want.window {
				t.Errorf("threshold %v, %+v: a second Restore gives %v, window %b", th, cfg, again, got.window)
			}
		}
	}
}

// transitions feeds scores to a and returns what each did: R raised, C cleared, . neither.
func transitions(a *Alarm, scores []float64) string {
	got := ""
	for _, s := range scores {
		switch a.Update(s) {
		case Raised:
			got += "R"
		case Cleared:
			got += "C"
		default:
			got += "."
		}
	}
	return got
}
