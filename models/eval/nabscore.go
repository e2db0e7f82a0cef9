package eval

import (
	"fmt"
	"math"
	"time"
)

// NABProfile is one of NAB's application profiles: positive weights of a true positive, a false
// positive and a missed window.
type NABProfile struct {
	Name                         string
	TPWeight, FPWeight, FNWeight float64
}

// NABProfiles are NAB's standard, reward_low_FP_rate and reward_low_FN_rate profiles.
var NABProfiles = []NABProfile{
	{Name: "standard", TPWeight: 1, FPWeight: 0.11, FNWeight: 1},
	{Name: "reward_low_FP_rate", TPWeight: 1, FPWeight: 0.22, FNWeight: 1},
	{Name: "reward_low_FN_rate", TPWeight: 1, FPWeight: 0.11, FNWeight: 2},
}

// NABProbationPercent is the share of each file (at most 15 % of 5000 rows) that NAB leaves
// unscored so that detectors can learn.
const NABProbationPercent = 0.15

// NABProbation returns the number of leading rows NAB does not score in a file of n rows.
func NABProbation(n int) int {
	return int(math.Min(math.Floor(NABProbationPercent*float64(n)), NABProbationPercent*5000))
}

// nabSigmoid is NAB's scaled sigmoid of a relative position: about 0.987 at the left edge of a
// window (−1), 0 at its right edge, falling towards −1 for positions after it, and −1 from 3 on.
func nabSigmoid(pos float64) float64 {
	if pos >= 3 {
		return -1
	}
	return 2/(1+math.Exp(5*pos)) - 1
}

// NABFileScore is the outcome of scoring one file under one profile.
type NABFileScore struct {
	Raw     float64 // the detector's score
	Null    float64 // the score of a detector that never fires (−FNWeight per scorable window)
	Windows int     // windows listed for the file (perfect = Windows·TPWeight)
	TP      int     // windows with at least one detection
	FP      int     // scored detections outside every window
	FN      int     // scorable windows without a detection
}

// NABScore scores one file's detections as NAB does. times are the rows' timestamps
// (ascending), det the binary detections, windows the labelled anomaly windows (ascending).
// A window covers the rows whose time lies in [Start, End]. The first probation rows are not
// scored. Inside a window the earliest detection earns TPWeight·σ(pos)/σ(−1), where pos runs from
// −1 at the left edge towards 0 at the right edge; a detection outside every window costs
// FPWeight·σ(pos) with pos the distance past the previous window in units of its width (−FPWeight
// before the first window); a scorable window without a detection costs FNWeight.
func NABScore(times []time.Time, det []bool, windows []Window, p NABProfile) (NABFileScore, error) {
	if len(times) != len(det) {
		return NABFileScore{}, fmt.Errorf("nab score: %d timestamps but %d detections; expected equal lengths", len(times), len(det))
	}
	// Map each window to its row range [l, r]; windows without rows are kept but unscorable.
	type span struct{ l, r int }
	spans := make([]span, len(windows))
	for wi, w := range windows {
		l, r := -1, -1
		for i, t := range times {
			if !t.Before(w.Start) && !t.After(w.End) {
				if l < 0 {
					l = i
				}
				r = i
			}
		}
		spans[wi] = span{l, r}
	}
	probation := NABProbation(len(times))
	maxTP := nabSigmoid(-1)
	out := NABFileScore{Windows: len(windows)}
	best := make([]float64, len(windows))
	scorable := make([]bool, len(windows))
	hit := make([]bool, len(windows))
	for wi, s := range spans {
		if s.l >= 0 && s.r >= probation {
			scorable[wi] = true
			best[wi] = -p.FNWeight
		}
	}
	cur, prev := -1, -1 // index of the window we are in / the last one we left
	for i := range times {
		for wi, s := range spans {
			if s.l == i {
				cur = wi
			}
		}
		if i >= probation && det[i] {
			if cur >= 0 {
				s := spans[cur]
				width := float64(s.r - s.l + 1)
				pos := -float64(s.r-i+1) / width
				v := nabSigmoid(pos) * p.TPWeight / maxTP
				if !hit[cur] || v > best[cur] {
					best[cur] = v
				}
				hit[cur] = true
			} else {
				pos := 3.0
				if prev >= 0 {
					ps := spans[prev]
					if w := ps.r - ps.l; w > 0 {
						pos = math.Abs(float64(ps.r-i)) / float64(w)
					}
				}
				out.Raw += nabSigmoid(pos) * p.FPWeight
				out.FP++
			}
		}
		if cur >= 0 && spans[cur].r == i {
			prev, cur = cur, -1
		}
	}
	for wi := range windows {
		if !scorable[wi] {
			continue
		}
		out.Null -= p.FNWeight
		out.Raw += best[wi]
		if hit[wi] {
			out.TP++
		} else {
			out.FN++
		}
	}
	return out, nil
}

// NABNormalize scales a corpus' summed raw score to NAB's 0 (null detector) … 100 (perfect
// detector) scale: 100·(raw − null)/(windows·TPWeight − null).
func NABNormalize(raw, null float64, windows int, p NABProfile) float64 {
	perfect := float64(windows) * p.TPWeight
	if perfect == null {
		return 0
	}
	return 100 * (raw - null) / (perfect - null)
}
