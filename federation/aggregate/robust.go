package aggregate

import (
	"fmt"
	"math"
	"slices"
	"sort"
)

// coordinateMedian writes the median of every coordinate of vs into out.
func coordinateMedian(out []float32, vs [][]float32) {
	forChunks(len(out), len(vs), func(lo, hi int) {
		col := make([]float32, len(vs))
		for i := lo; i < hi; i++ {
			for j, v := range vs {
				col[j] = v[i]
			}
			insertionSort(col)
			n := len(col)
			if n%2 == 1 {
				out[i] = col[n/2]
			} else {
				out[i] = float32((float64(col[n/2-1]) + float64(col[n/2])) / 2)
			}
		}
	})
}

// trimmedMean writes the mean of every coordinate of vs, after dropping ⌊β·n⌋ of the
// largest and of the smallest values, into out.
func trimmedMean(out []float32, vs [][]float32, beta float64) {
	n := len(vs)
	k := int(math.Floor(beta * float64(n)))
	if 2*k >= n {
		k = (n - 1) / 2
	}
	forChunks(len(out), n, func(lo, hi int) {
		col := make([]float32, n)
		for i := lo; i < hi; i++ {
			for j, v := range vs {
				col[j] = v[i]
			}
			insertionSort(col)
			var s float64
			for _, x := range col[k : n-k] {
				s += float64(x)
			}
			out[i] = float32(s / float64(n-2*k))
		}
	})
}

// insertionSort sorts a short slice (one value per participant) without allocating.
func insertionSort(a []float32) {
	for i := 1; i < len(a); i++ {
		x := a[i]
		j := i - 1
		for ; j >= 0 && a[j] > x; j-- {
			a[j+1] = a[j]
		}
		a[j+1] = x
	}
}

// medianOf returns the median of a, sorting it.
func medianOf(a []float64) float64 {
	slices.Sort(a)
	n := len(a)
	if n%2 == 1 {
		return a[n/2]
	}
	return (a[n/2-1] + a[n/2]) / 2
}

// krumSelect scores every update by the sum of squared distances to its n−f−2 nearest
// neighbours and returns the m best (lowest score, ties by participant), and a rejection
// for each of the others. ups must be sorted by participant and hold at least 2f+3 updates.
func krumSelect(ups []Update, f, m int) (chosen []Update, rejected []Rejection) {
	n := len(ups)
	d := make([]float64, n*n)
	forChunks(n, n*len(ups[0].Delta), func(lo, hi int) { // row i computes the pairs (i, j > i)
		for i := lo; i < hi; i++ {
			for j := i + 1; j < n; j++ {
				var s float64
				a, b := ups[i].Delta, ups[j].Delta
				for k := range a {
					x := float64(a[k]) - float64(b[k])
					s += x * x
				}
				d[i*n+j], d[j*n+i] = s, s
			}
		}
	})
	scores := make([]float64, n)
	row := make([]float64, 0, n-1)
	for i := range n {
		row = row[:0]
		for j := range n {
			if j != i {
				row = append(row, d[i*n+j])
			}
		}
		slices.Sort(row)
		for _, x := range row[:n-f-2] {
			scores[i] += x
		}
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return scores[order[a]] < scores[order[b]] })
	cut := scores[order[m-1]]
	for rank, i := range order {
		if rank < m {
			chosen = append(chosen, ups[i])
			continue
		}
		rejected = append(rejected, Rejection{ups[i].Participant,
			fmt.Sprintf("krum score %.4g is not among the %d best (cut-off %.4g, f=%d)", scores[i], m, cut, f)})
	}
	return chosen, rejected
}
