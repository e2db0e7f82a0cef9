package eval

import (
	"fmt"
	"math"
	"time"
)

// Confusion counts point-wise outcomes of binary anomaly predictions.
type Confusion struct {
	TP, TN, FP, FN int
}

// Add counts one series of labels against its predictions; the slices must be equally long.
func (c *Confusion) Add(truth, pred []bool) error {
	if len(truth) != len(pred) {
		return fmt.Errorf("confusion: %d labels but %d predictions; expected equal lengths", len(truth), len(pred))
	}
	for i, t := range truth {
		switch p := pred[i]; {
		case t && p:
			c.TP++
		case t:
			c.FN++
		case p:
			c.FP++
		default:
			c.TN++
		}
	}
	return nil
}

// F1 is SKAB's point-wise F1, TP / (TP + (FP+FN)/2); 0 when there is nothing to count.
func (c Confusion) F1() float64 {
	d := float64(c.TP) + float64(c.FP+c.FN)/2
	if d == 0 {
		return 0
	}
	return float64(c.TP) / d
}

// FAR is the false alarm rate in percent, FP / (FP+TN) · 100.
func (c Confusion) FAR() float64 { return percent(c.FP, c.FP+c.TN) }

// MAR is the missed alarm rate in percent, FN / (FN+TP) · 100.
func (c Confusion) MAR() float64 { return percent(c.FN, c.FN+c.TP) }

func percent(n, d int) float64 {
	if d == 0 {
		return 0
	}
	return 100 * float64(n) / float64(d)
}

// CPProfile weighs changepoint detections in SKAB's NAB-style score: a detection at the very
// start of a window earns TP, one at its end earns FP; a detection outside every window adds
// FP and a window without a detection adds FN (FP and FN are negative).
type CPProfile struct {
	Name       string
	TP, FP, FN float64
}

// SKABProfiles are the standard, low-FP and low-FN profiles of SKAB's changepoint score.
var SKABProfiles = []CPProfile{
	{Name: "standard", TP: 1, FP: -0.11, FN: -1},
	{Name: "low_fp", TP: 1, FP: -0.22, FN: -1},
	{Name: "low_fn", TP: 1, FP: -0.11, FN: -2},
}

// skabScaleSteps is the resolution of SKAB's "improved" tanh reward curve.
const skabScaleSteps = 1000

// skabReward is the reward of a detection at fraction frac ∈ [0, 1] of its window: the tanh
// curve from p.TP at the window start to p.FP at its end, sampled as SKAB samples it
// (1000 points, the index truncated).
func skabReward(frac float64, p CPProfile) float64 {
	k := int(frac * skabScaleSteps)
	k = min(max(k, 0), skabScaleSteps-1)
	x := -math.Pi/2 + float64(k)*math.Pi/float64(skabScaleSteps-1)
	half := (p.TP - p.FP) / 2
	return half*(-math.Tanh(x)/math.Tanh(math.Pi/2)) + half + p.FP
}

// Window is a closed time interval [Start, End].
type Window struct {
	Start, End time.Time
}

// RightWindows builds SKAB's scoring windows: [cp, cp+width] for each changepoint time (in
// order), a window that overlaps its predecessor starting where the predecessor ends ("cut
// right window").
func RightWindows(cps []time.Time, width time.Duration) []Window {
	w := make([]Window, len(cps))
	for i, t := range cps {
		w[i] = Window{Start: t, End: t.Add(width)}
	}
	for i := 0; i+1 < len(w); i++ {
		if !w[i].End.Before(w[i+1].Start) {
			w[i+1].Start = w[i].End
		}
	}
	return w
}

// PredictedChangepoints turns point-wise predictions into changepoint predictions as SKAB does:
// |pred[i] − pred[i−1]|, with the first point equal to pred[0].
func PredictedChangepoints(pred []bool) []bool {
	cp := make([]bool, len(pred))
	for i, p := range pred {
		if i == 0 {
			cp[i] = p
			continue
		}
		cp[i] = p != pred[i-1]
	}
	return cp
}

// ChangepointScore accumulates SKAB's changepoint score over files: the raw score per profile
// and its null (no detection) and perfect counterparts, which it normalizes only at the end,
// over the whole corpus, as SKAB does.
type ChangepointScore struct {
	Profiles []CPProfile
	raw      []float64
	Windows  int // scoring windows (true changepoints)
	Missed   int // windows without a detection
	FPs      int // detections outside every window
}

// NewChangepointScore returns an empty accumulator for the profiles (SKABProfiles if none).
func NewChangepointScore(profiles ...CPProfile) *ChangepointScore {
	if len(profiles) == 0 {
		profiles = SKABProfiles
	}
	return &ChangepointScore{Profiles: profiles, raw: make([]float64, len(profiles))}
}

// Add scores one file: times are the rows' timestamps (ascending), cp the predicted
// changepoints per row, windows the file's scoring windows (ascending). Only the first
// detection inside a window counts; a detection on a boundary shared by two windows counts
// for both, as in SKAB.
func (s *ChangepointScore) Add(times []time.Time, cp []bool, windows []Window) error {
	if len(times) != len(cp) {
		return fmt.Errorf("changepoint score: %d timestamps but %d predictions; expected equal lengths", len(times), len(cp))
	}
	var det []time.Time
	for i, c := range cp {
		if c {
			det = append(det, times[i])
		}
	}
	inside := func(t time.Time, w Window) bool { return !t.Before(w.Start) && !t.After(w.End) }
	fps := 0
	for _, t := range det {
		in := false
		for _, w := range windows {
			if inside(t, w) {
				in = true
				break
			}
		}
		if !in {
			fps++
		}
	}
	s.FPs += fps
	s.Windows += len(windows)
	for pi, p := range s.Profiles {
		s.raw[pi] += p.FP * float64(fps)
	}
	for _, w := range windows {
		first := -1
		for j, t := range det {
			if inside(t, w) {
				first = j
				break
			}
		}
		if first < 0 {
			s.Missed++
			for pi, p := range s.Profiles {
				s.raw[pi] += p.FN
			}
			continue
		}
		frac := 0.0
		if span := w.End.Sub(w.Start); span > 0 {
			frac = float64(det[first].Sub(w.Start)) / float64(span)
		}
		for pi, p := range s.Profiles {
			s.raw[pi] += skabReward(frac, p)
		}
	}
	return nil
}

// Normalized returns each profile's score scaled to 0 for the null detector and 100 for the
// perfect one: 100·(S − S_null)/(S_perfect − S_null). It is 0 when there are no windows.
func (s *ChangepointScore) Normalized() []float64 {
	out := make([]float64, len(s.Profiles))
	for i, p := range s.Profiles {
		null, perfect := float64(s.Windows)*p.FN, float64(s.Windows)*p.TP
		if perfect == null {
			continue
		}
		out[i] = 100 * (s.raw[i] - null) / (perfect - null)
	}
	return out
}

// RULCap is the cap on remaining useful life in the C-MAPSS protocol (piece-wise linear target).
const RULCap = 125

// RMSE is the root mean squared error of pred against truth.
func RMSE(truth, pred []float64) (float64, error) {
	if len(truth) != len(pred) || len(truth) == 0 {
		return 0, fmt.Errorf("rmse: %d truths and %d predictions; expected equal, non-zero lengths", len(truth), len(pred))
	}
	var s float64
	for i, t := range truth {
		d := pred[i] - t
		s += d * d
	}
	return math.Sqrt(s / float64(len(truth))), nil
}

// PHM08Score is the asymmetric PHM08 challenge score, summed over engines: with d = pred −
// truth, a late prediction (d ≥ 0) costs exp(d/10) − 1 and an early one exp(−d/13) − 1.
func PHM08Score(truth, pred []float64) (float64, error) {
	if len(truth) != len(pred) || len(truth) == 0 {
		return 0, fmt.Errorf("phm08 score: %d truths and %d predictions; expected equal, non-zero lengths", len(truth), len(pred))
	}
	var s float64
	for i, t := range truth {
		d := pred[i] - t
		if d < 0 {
			s += math.Exp(-d/13) - 1
		} else {
			s += math.Exp(d/10) - 1
		}
	}
	return s, nil
}
