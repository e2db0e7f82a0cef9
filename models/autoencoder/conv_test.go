package autoencoder

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/modeltest"
)

// The analytic gradient of both networks matches central finite differences.
func TestGradient(t *testing.T) {
	for _, cfg := range []Config{
		{Layers: []int{5, 3, 5}, Activation: ActTanh},
		{Layers: []int{5, 3, 5}, Activation: ActReLU},
		{Layers: []int{4, 2}, Kernel: 3, Signals: 2, Activation: ActTanh},
		{Layers: []int{3}, Kernel: 5, Signals: 2, Activation: ActReLU},
	} {
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		x := modeltest.Squash(modeltest.Latent(3, 8, 1))
		if err := d.setShape(8); err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		w := make([]float64, d.arch.Params)
		d.net.init(w, rng, x)
		for i := range w {
			w[i] += 0.1 * rng.NormFloat64() // non-zero biases too
		}
		tr := &trainer{d: d, w: w, grad: make([]float64, len(w)), acts: newActs(d.net), deltas: newActs(d.net)}
		// The gradient of the mean squared error over the rows, as batch computes it.
		L := len(tr.deltas) - 1
		for i := range x.Rows {
			y := d.forward(w, x.Row(i), tr.acts)
			for j, v := range y {
				tr.deltas[L][j] = 2 * (v - x.Row(i)[j]) / float64(x.Cols*x.Rows)
			}
			d.net.backward(w, tr.acts, tr.deltas, tr.grad)
		}
		const h = 1e-6
		for i := range w {
			orig := w[i]
			w[i] = orig + h
			up := tr.loss(x)
			w[i] = orig - h
			down := tr.loss(x)
			w[i] = orig
			num := (up - down) / (2 * h)
			if math.Abs(num-tr.grad[i]) > 1e-6*max(1, math.Abs(num)) {
				t.Errorf("%s %v: d/dw[%d] analytic %v, numeric %v", d.Kind(), cfg.Layers, i, tr.grad[i], num)
				break
			}
		}
	}
}

func TestConvolutional(t *testing.T) {
	// Windows of 10 steps × 4 signals of smooth, correlated series.
	gen := func(n int, seed uint64) models.Matrix {
		r := rand.New(rand.NewPCG(seed, 3))
		m := models.NewMatrix(n, 40)
		for i := range n {
			ph, amp := r.Float64()*6.28, 0.5+r.Float64()
			for st := range 10 {
				v := amp * math.Sin(ph+float64(st)/3)
				row := m.Row(i)[st*4 : st*4+4]
				row[0], row[1], row[2], row[3] = v, -v, 2*v, v*v
				for j := range row {
					row[j] += 0.02 * r.NormFloat64()
				}
			}
		}
		return m
	}
	d := train(t, Config{Kernel: 3, Signals: 4, Seed: 1}, gen(3000, 1))
	arch := d.Architecture()
	// DefaultConvLayers(4) = [8, 2, 8]: 4→8, 8→2, 2→8, 8→4 with kernel 3.
	want := (8*3*4 + 8) + (2*3*8 + 2) + (8*3*2 + 8) + (4*3*8 + 4)
	if d.Kind() != KindConv || arch.Kind != KindConv || arch.Kernel != 3 || arch.Channels != 4 || arch.Params != want || !slices.Equal(arch.Layers, []int{8, 2, 8}) {
		t.Fatalf("architecture %+v; want %d params", arch, want)
	}
	test := gen(100, 2)
	base := modeltest.Scores(t, d, test)
	test.Row(7)[5*4+2] += 1.5 // one signal at one step breaks the pattern
	s := modeltest.Scores(t, d, test)
	if modeltest.Argmax(s) != 7 || s[7] < 5*base[7] {
		t.Errorf("anomalous window scores %v, normal %v; want it the highest", s[7], base[7])
	}
	c := make([]float64, 40)
	_ = d.Contributions(test.Row(7), c)
	// The reconstruction spreads a broken pattern over the correlated signals, but not over
	// time: the top contribution is at the broken step.
	if top := modeltest.Argmax(c); top/4 != 5 {
		t.Errorf("top contribution at column %d (step %d); want step 5", top, top/4)
	}
	var r Detector
	modeltest.RoundTrip(t, d, &r, test)
	if _, err := New(Config{Kernel: 4, Signals: 2}); err == nil {
		t.Error("an even kernel was accepted")
	}
	if _, err := New(Config{Kernel: 3}); err == nil {
		t.Error("a kernel without signals was accepted")
	}
	if _, err := New(Config{Kernel: 3, Signals: 3, Inputs: 10}); err == nil {
		t.Error("inputs not a multiple of signals accepted")
	}
}

// BenchmarkScoreConv scores one window of 10 signals × 10 steps with the default
// convolutional layers (kernel 3).
func BenchmarkScoreConv(b *testing.B) {
	d := train(b, Config{Kernel: 3, Signals: 10, Seed: 1, Epochs: 1}, squashed(500, 100, 1))
	modeltest.BenchScore(b, d, squashed(1, 100, 2))
	b.ReportMetric(float64(d.Architecture().Params), "params")
}
