package features

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/models"
)

// BenchmarkAlignerSlowSignal measures one burst of a machine with four signals sampled every
// step and one every fill_limit+1 steps (the most the live scorer's watermark waits for),
// emitted as models/score does: after each sample, up to the newest time every signal not
// lagging by more than fill_limit steps has passed. The fast signals hold up to
// fill_limit+2 pending samples each meanwhile. An op is 2×(fill_limit+1) steps; ns/row is
// the time per emitted row.
func BenchmarkAlignerSlowSignal(b *testing.B) {
	for _, fill := range []int{1000, 16000} {
		b.Run(fmt.Sprintf("fill_limit=%d", fill), func(b *testing.B) {
			signals := []string{"f1", "f2", "f3", "slow", "f4"}
			step := time.Second
			steps := 2 * (fill + 1)
			var pts []telemetry.Point
			for i := range steps {
				at := t0.Add(time.Duration(i) * step)
				for _, s := range signals {
					if s != "slow" || i%(fill+1) == 0 {
						pts = append(pts, pt("m1", s, at.Sub(t0), float64(i), telemetry.Good))
					}
				}
			}
			lag := int64(fill) * int64(step)
			latest := make([]int64, len(signals))
			rows := 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				a, err := NewAligner(Config{Step: step, FillLimit: fill}, "m1", signals)
				if err != nil {
					b.Fatal(err)
				}
				clear(latest)
				for k := range pts {
					p := &pts[k]
					a.Add(p)
					i := slices.Index(signals, p.Signal)
					latest[i] = max(latest[i], p.Time())
					newest := slices.Max(latest)
					until := newest
					for _, l := range latest {
						if l < until && newest-l <= lag {
							until = l
						}
					}
					a.Emit(pts[0].Time(), until-1, func(int64, []float64, bool) { rows++ })
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(rows), "ns/row")
		})
	}
}

// BenchmarkAlignerOverflow measures a signal that runs further ahead of Emit than the
// aligner holds: every sample after the first fill_limit+2 drops the oldest (Overflow).
// An op is 4×(fill_limit+2) samples.
func BenchmarkAlignerOverflow(b *testing.B) {
	for _, fill := range []int{1000, 16000} {
		b.Run(fmt.Sprintf("fill_limit=%d", fill), func(b *testing.B) {
			n := 4 * pendingLimit(fill)
			pts := make([]telemetry.Point, n)
			for i := range pts {
				pts[i] = pt("m1", "a", time.Duration(i)*time.Second, float64(i), telemetry.Good)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				a, err := NewAligner(Config{FillLimit: fill}, "m1", []string{"a"})
				if err != nil {
					b.Fatal(err)
				}
				for k := range pts {
					a.Add(&pts[k])
				}
				if got, want := a.Stats().Signals[0].Overflow, n-pendingLimit(fill); got != want {
					b.Fatalf("overflow %d, want %d", got, want)
				}
			}
		})
	}
}

// TestRingMatchesSlice: the pending ring holds what a plain slice would after any mix of
// inserts (at any position, wrapping around the buffer, growing it) and drops.
func TestRingMatchesSlice(t *testing.T) {
	const limit = 100
	r := rand.New(rand.NewPCG(1, 2))
	var q ring
	q.buf = make([]sample, minPending)
	var want []sample
	for i := range 20000 {
		if len(want) < limit && r.IntN(3) > 0 {
			k := r.IntN(len(want) + 1)
			smp := sample{v: float64(i), at: int64(i)}
			q.insert(k, smp, limit)
			want = slices.Insert(want, k, smp)
		} else {
			k := r.IntN(len(want) + 1)
			q.drop(k)
			want = want[k:]
		}
		if q.n != len(want) || len(q.buf) > limit {
			t.Fatalf("step %d: %d held in a buffer of %d, want %d held", i, q.n, len(q.buf), len(want))
		}
		for j := range want {
			if *q.at(j) != want[j] {
				t.Fatalf("step %d: sample %d is %v, want %v", i, j, *q.at(j), want[j])
			}
		}
	}
}

// TestContinuityCoverageIsCoverage: the coverage Continuity counts in its one pass is
// Coverage's, also for a grid without rows.
func TestContinuityCoverageIsCoverage(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, rows := range []int{0, 1, 7, 1000} {
		g := &Grid{Signals: []string{"a", "b", "c"}, Values: models.NewMatrix(rows, 3)}
		for i := range g.Values.Data {
			if r.IntN(3) == 0 {
				g.Values.Data[i] = math.NaN()
			}
		}
		cov := g.Coverage()
		for j, c := range g.Continuity() {
			if c.Coverage != cov[j] {
				t.Errorf("%d rows, signal %s: Continuity's coverage %v, Coverage %v", rows, c.Signal, c.Coverage, cov[j])
			}
		}
	}
}
