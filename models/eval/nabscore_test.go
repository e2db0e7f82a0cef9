package eval

import (
	"math"
	"testing"
	"time"
)

func TestNABProbation(t *testing.T) {
	for _, tt := range []struct{ n, want int }{{20, 3}, {100, 15}, {4032, 604}, {5000, 750}, {22695, 750}, {0, 0}} {
		if got := NABProbation(tt.n); got != tt.want {
			t.Errorf("NABProbation(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
}

func TestNABSigmoid(t *testing.T) {
	for _, tt := range []struct{ pos, want float64 }{
		{-1, 0.9866142981514305}, // 2σ(5) − 1, NAB's maxTP
		{-0.5, 0.8482836399575129},
		{0, 0},
		{1, -0.9866142981514305},
		{3, -1},
		{10, -1},
	} {
		if got := nabSigmoid(tt.pos); !near(got, tt.want, 1e-12) {
			t.Errorf("nabSigmoid(%v) = %v, want %v", tt.pos, got, tt.want)
		}
	}
}

// nabCase is 20 one-minute rows (3 probationary) with one window over rows 10–14.
func nabCase(det ...int) ([]time.Time, []bool, []Window) {
	times := make([]time.Time, 20)
	for i := range times {
		times[i] = t0.Add(time.Duration(i) * time.Minute)
	}
	d := make([]bool, len(times))
	for _, i := range det {
		d[i] = true
	}
	return times, d, []Window{{Start: times[10], End: times[14]}}
}

func TestNABScore(t *testing.T) {
	std, lowFP, lowFN := NABProfiles[0], NABProfiles[1], NABProfiles[2]
	// Hand computation, window rows 10..14 (width 5):
	//  row 12 in the window: pos = −(14−12+1)/5 = −0.6, 2σ(3)−1 = tanh(1.5), divided by
	//    maxTP = tanh(2.5): 0.9174286804284078.
	//  row 5 before any window: −fpWeight.
	//  row 17 after it: pos = |14−17|/(5−1) = 0.75, tanh(−1.875)·fpWeight = −0.10494497861979436
	//    (standard) or −0.20988995723958873 (low FP).
	//  row 1 is probationary (floor(0.15·20) = 3 rows) and is not scored.
	tp12 := math.Tanh(1.5) / math.Tanh(2.5)
	tests := []struct {
		name       string
		det        []int
		p          NABProfile
		raw, null  float64
		tp, fp, fn int
		normalized float64
	}{
		{name: "null", det: nil, p: std, raw: -1, null: -1, fn: 1, normalized: 0},
		{name: "null low FN", det: nil, p: lowFN, raw: -2, null: -2, fn: 1, normalized: 0},
		{name: "perfect", det: []int{10}, p: std, raw: 1, null: -1, tp: 1, normalized: 100},
		{name: "earliest counts", det: []int{10, 11, 14}, p: std, raw: 1, null: -1, tp: 1, normalized: 100},
		{name: "probation ignored", det: []int{1, 10}, p: std, raw: 1, null: -1, tp: 1, normalized: 100},
		{
			name: "mixed standard", det: []int{1, 5, 12, 17}, p: std,
			raw: -0.11 + 0.9174286804284078 - 0.10494497861979436, null: -1, tp: 1, fp: 2,
			normalized: 85.12418509043067,
		},
		{
			name: "mixed low FP", det: []int{5, 12, 17}, p: lowFP,
			raw: -0.22 + tp12 - 0.20988995723958873, null: -1, tp: 1, fp: 2,
			normalized: 100 * (0.4875387231888191 + 1) / 2,
		},
		{
			// Missing the window costs 2 with reward_low_FN_rate: raw −2 − 0.11, null −2,
			// perfect 1: 100·(−0.11)/3.
			name: "miss low FN", det: []int{5}, p: lowFN, raw: -2.11, null: -2, fp: 1, fn: 1,
			normalized: -11.0 / 3,
		},
		{
			// Far after the window (pos ≥ 3: rows ≥ 14+12) a false positive costs the full weight;
			// here row 19 is pos 1.25: tanh(−3.125)·0.11.
			name: "late false positive", det: []int{10, 19}, p: std,
			raw: 1 + math.Tanh(-3.125)*0.11, null: -1, tp: 1, fp: 1,
			normalized: 100 * (2 + math.Tanh(-3.125)*0.11) / 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			times, det, windows := nabCase(tt.det...)
			s, err := NABScore(times, det, windows, tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if !near(s.Raw, tt.raw, 1e-12) || !near(s.Null, tt.null, 1e-12) {
				t.Errorf("raw %v null %v, want %v %v", s.Raw, s.Null, tt.raw, tt.null)
			}
			if s.TP != tt.tp || s.FP != tt.fp || s.FN != tt.fn || s.Windows != 1 {
				t.Errorf("TP %d FP %d FN %d windows %d, want %d %d %d 1", s.TP, s.FP, s.FN, s.Windows, tt.tp, tt.fp, tt.fn)
			}
			if got := NABNormalize(s.Raw, s.Null, s.Windows, tt.p); !near(got, tt.normalized, 1e-9) {
				t.Errorf("normalized %v, want %v", got, tt.normalized)
			}
		})
	}
}

func TestNABScoreWindowInProbation(t *testing.T) {
	// A window wholly inside the probationary rows is neither scored nor in the null score,
	// but it still counts towards the perfect score, as in NAB.
	times, det, _ := nabCase()
	windows := []Window{{Start: times[0], End: times[2]}, {Start: times[10], End: times[14]}}
	det[10] = true
	s, err := NABScore(times, det, windows, NABProfiles[0])
	if err != nil {
		t.Fatal(err)
	}
	if s.Raw != 1 || s.Null != -1 || s.Windows != 2 || s.TP != 1 || s.FN != 0 {
		t.Errorf("score %+v; want raw 1, null −1, 2 windows, 1 TP, 0 FN", s)
	}
	if _, err := NABScore(times, det[:3], windows, NABProfiles[0]); err == nil {
		t.Error("NABScore accepted detections of a different length")
	}
}

func BenchmarkNABScore(b *testing.B) {
	const n = 5000
	times := make([]time.Time, n)
	det := make([]bool, n)
	for i := range times {
		times[i] = t0.Add(time.Duration(i) * 5 * time.Minute)
		det[i] = i%97 == 0
	}
	windows := []Window{{times[1000], times[1400]}, {times[3000], times[3400]}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NABScore(times, det, windows, NABProfiles[0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
