package rul

import (
	"math"
	"slices"
)

// Settings and Sensors are the operating-setting and sensor counts of a C-MAPSS-style cycle.
const (
	Settings = 3
	Sensors  = 21
)

// Engine is one unit's history: one row per cycle, settings first, then sensors.
type Engine struct {
	Unit   int
	Cycles [][Settings + Sensors]float64
}

// featuresPerSensor is the number of features extracted per kept sensor (see extract).
const featuresPerSensor = 6

// baselineCycles is how many of an engine's first cycles form its baseline (its initial
// wear and manufacturing offset).
const baselineCycles = 20

// normalizer maps a raw cycle to per-operating-condition z-scores of the kept sensors.
type normalizer struct {
	Centroids [][Settings]float64 `json:"centroids"` // operating conditions (k-means on settings)
	Keep      []int               `json:"keep"`      // kept sensor indices (0-based)
	Mean      [][]float64         `json:"mean"`      // [condition][kept sensor]
	Std       [][]float64         `json:"std"`       // [condition][kept sensor]
}

// condition returns the index of the nearest operating condition.
func (n *normalizer) condition(row *[Settings + Sensors]float64) int {
	best, bd := 0, math.Inf(1)
	for c, ct := range n.Centroids {
		var d float64
		for k := range Settings {
			x := row[k] - ct[k]
			d += x * x
		}
		if d < bd {
			best, bd = c, d
		}
	}
	return best
}

// fitNormalizer clusters the settings (in their own units) into k operating conditions and computes each kept
// sensor's mean and standard deviation per condition. A sensor is kept when it varies within
// at least one condition (relative std above 1e-4); C-MAPSS has several constant ones.
func fitNormalizer(engines []Engine, k int) *normalizer {
	rows := cycleRows(engines)
	centroids := kmeans(rows, k)
	cnt, sum, sq := sensorSums(rows, centroids)
	return normalizerFromSums(centroids, cnt, sum, sq)
}

// sensorSums returns, per operating condition (nearest centroid), the number of rows and the
// sums and sums of squares of each sensor.
func sensorSums(rows []*[Settings + Sensors]float64, centroids [][Settings]float64) (cnt []float64, sum, sq [][Sensors]float64) {
	k := len(centroids)
	n := &normalizer{Centroids: centroids}
	sum = make([][Sensors]float64, k)
	sq = make([][Sensors]float64, k)
	cnt = make([]float64, k)
	for _, r := range rows {
		c := n.condition(r)
		cnt[c]++
		for s := range Sensors {
			x := r[Settings+s]
			sum[c][s] += x
			sq[c][s] += x * x
		}
	}
	return cnt, sum, sq
}

// normalizerFromSums builds the normalizer from per-condition counts, sums and sums of
// squares of the sensors (see sensorSums).
func normalizerFromSums(centroids [][Settings]float64, cnt []float64, sum, sq [][Sensors]float64) *normalizer {
	k := len(centroids)
	n := &normalizer{Centroids: centroids}
	mean := slices.Clone(sum)
	std := make([][Sensors]float64, k)
	for c := range k {
		for s := range Sensors {
			if cnt[c] == 0 {
				continue
			}
			m := mean[c][s] / cnt[c]
			mean[c][s] = m
			std[c][s] = math.Sqrt(math.Max(sq[c][s]/cnt[c]-m*m, 0))
		}
	}
	for s := range Sensors {
		for c := range k {
			if cnt[c] > 0 && std[c][s] > 1e-4*(math.Abs(mean[c][s])+1e-9) {
				n.Keep = append(n.Keep, s)
				break
			}
		}
	}
	n.Mean = make([][]float64, k)
	n.Std = make([][]float64, k)
	for c := range k {
		for _, s := range n.Keep {
			n.Mean[c] = append(n.Mean[c], mean[c][s])
			n.Std[c] = append(n.Std[c], math.Max(std[c][s], 1e-6))
		}
	}
	return n
}

// kmeans clusters rows' settings into k centroids: farthest-point initialisation from the
// first row, then Lloyd iterations; deterministic. Distances are in the settings' own units:
// C-MAPSS's conditions differ by whole units of altitude and throttle while within a condition
// the settings only jitter, so scaling each setting to unit variance would let that jitter
// outweigh the conditions.
func kmeans(rows []*[Settings + Sensors]float64, k int) [][Settings]float64 {
	dist := func(r *[Settings + Sensors]float64, c [Settings]float64) float64 {
		var d float64
		for s := range Settings {
			x := r[s] - c[s]
			d += x * x
		}
		return d
	}
	var cs [][Settings]float64
	var first [Settings]float64
	copy(first[:], rows[0][:Settings])
	cs = append(cs, first)
	for len(cs) < k {
		far, fd := 0, -1.0
		for i, r := range rows {
			d := math.Inf(1)
			for _, c := range cs {
				d = math.Min(d, dist(r, c))
			}
			if d > fd {
				far, fd = i, d
			}
		}
		var c [Settings]float64
		copy(c[:], rows[far][:Settings])
		cs = append(cs, c)
	}
	for range 20 {
		sum := make([][Settings]float64, k)
		cnt := make([]float64, k)
		for _, r := range rows {
			best, bd := 0, math.Inf(1)
			for ci, c := range cs {
				if d := dist(r, c); d < bd {
					best, bd = ci, d
				}
			}
			cnt[best]++
			for s := range Settings {
				sum[best][s] += r[s]
			}
		}
		for ci := range cs {
			if cnt[ci] > 0 {
				for s := range Settings {
					cs[ci][s] = sum[ci][s] / cnt[ci]
				}
			}
		}
	}
	return cs
}

// normalize returns the engine's kept sensors as per-condition z-scores, one row per cycle.
func (n *normalizer) normalize(e *Engine) [][]float64 {
	out := make([][]float64, len(e.Cycles))
	for t := range e.Cycles {
		row := &e.Cycles[t]
		c := n.condition(row)
		z := make([]float64, len(n.Keep))
		for j, s := range n.Keep {
			z[j] = (row[Settings+s] - n.Mean[c][j]) / n.Std[c][j]
		}
		out[t] = z
	}
	return out
}

// numFeatures is the width of a feature row for kept sensors.
func numFeatures(kept int) int { return kept*featuresPerSensor + 1 }

// extract writes the features of cycle t (0-based) of a normalized history into out: per kept
// sensor the means of the last 5, 15 and window cycles, the least-squares slopes over the last
// 15 and window cycles, and the last-5 mean minus the engine's baseline (mean of its first
// cycles); then the cycle count / 100. Windows shorter than asked use the cycles there are.
func extract(z [][]float64, t, window int, out []float64) {
	kept := len(z[0])
	base := min(baselineCycles, t+1)
	for j := range kept {
		var b float64
		for i := range base {
			b += z[i][j]
		}
		b /= float64(base)
		m5 := meanBack(z, t, 5, j)
		o := out[j*featuresPerSensor : (j+1)*featuresPerSensor]
		o[0] = m5
		o[1] = meanBack(z, t, 15, j)
		o[2] = meanBack(z, t, window, j)
		o[3] = slopeBack(z, t, 15, j) * 10
		o[4] = slopeBack(z, t, window, j) * 10
		o[5] = m5 - b
	}
	out[kept*featuresPerSensor] = float64(t+1) / 100
}

func meanBack(z [][]float64, t, n, j int) float64 {
	n = min(n, t+1)
	var s float64
	for i := t - n + 1; i <= t; i++ {
		s += z[i][j]
	}
	return s / float64(n)
}

func slopeBack(z [][]float64, t, n, j int) float64 {
	n = min(n, t+1)
	if n < 2 {
		return 0
	}
	mx := float64(n-1) / 2
	var my float64
	for i := t - n + 1; i <= t; i++ {
		my += z[i][j]
	}
	my /= float64(n)
	var sxy, sxx float64
	for k := range n {
		x := float64(k) - mx
		sxy += x * (z[t-n+1+k][j] - my)
		sxx += x * x
	}
	return sxy / sxx
}
