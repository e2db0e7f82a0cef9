package dp

import (
	"math"
	"testing"
)

// TestSampledGaussianMatchesPublishedValues compares with the values the TF-Privacy MNIST
// tutorial publishes (tensorflow/privacy, tutorials/README.md: 60,000 examples, batch 256,
// δ = 1e-5, ⌈epochs·N/batch⌉ steps, RDP accountant with the classic conversion): its table
// gives σ=1.12 for 60 epochs ε=2.92, σ=0.6 for 30 epochs 9.74, σ=1.2 for 10 epochs 1.20;
// its expected output ε=1.00 after 1 epoch and 1.04 after 2 (σ=1.12); and
// compute_dp_sgd_privacy.py with σ=1.1 for 60 epochs ε=3.01. TF-Privacy also uses
// fractional orders, so integer orders may come out a little higher, never lower.
func TestSampledGaussianMatchesPublishedValues(t *testing.T) {
	const n, batch, delta = 60000, 256, 1e-5
	q := float64(batch) / n
	for _, tc := range []struct {
		sigma  float64
		epochs int
		want   float64
	}{{1.12, 1, 1.00}, {1.12, 2, 1.04}, {1.12, 60, 2.92}, {1.1, 60, 3.01}, {0.6, 30, 9.74}, {1.2, 10, 1.20}} {
		steps := (tc.epochs*n + batch - 1) / batch
		a, err := NewAccountant(Step{Q: q, Sigma: tc.sigma, Count: steps})
		if err != nil {
			t.Fatal(err)
		}
		got, order := epsilonClassic(a.rdp, delta)
		tight, _ := a.Epsilon(delta)
		t.Logf("σ=%v epochs=%d: ε=%.3f at α=%d (published %.2f); tighter conversion ε=%.3f", tc.sigma, tc.epochs, got, order, tc.want, tight)
		if got < tc.want-0.005 || got > tc.want+0.04 {
			t.Errorf("σ=%v epochs=%d: ε=%.3f, published %.2f", tc.sigma, tc.epochs, got, tc.want)
		}
		if tight > got {
			t.Errorf("tighter conversion %.3f is above the classic %.3f", tight, got)
		}
	}
}

func TestSampledGaussianClosedForms(t *testing.T) {
	for _, alpha := range []int{2, 3, 10, 64} {
		// q = 1: the Gaussian mechanism, α/(2σ²); check the general sum against it by
		// evaluating it at q just below 1.
		want := float64(alpha) / (2 * 1.5 * 1.5)
		if got := SampledGaussianRDP(1-1e-12, 1.5, alpha); math.Abs(got-want) > 1e-6*want {
			t.Errorf("α=%d q→1: %v, want %v", alpha, got, want)
		}
	}
	// α = 2 has the closed form log(1 + q²(e^{1/σ²} − 1)).
	q, s := 0.01, 0.8
	if got, want := SampledGaussianRDP(q, s, 2), math.Log1p(q*q*math.Expm1(1/(s*s))); math.Abs(got-want) > 1e-12 {
		t.Errorf("α=2: %v, want %v", got, want)
	}
}
