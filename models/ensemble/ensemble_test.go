package ensemble_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/ensemble"
	"github.com/millwright-io/millwright/models/modeltest"
	"github.com/millwright-io/millwright/models/pca"
)

// blind is a detector that sees nothing: its score is noise.
type blind struct{ r *rand.Rand }

func (blind) Kind() string                             { return "blind" }
func (blind) Fit(context.Context, models.Matrix) error { return nil }
func (b blind) Score(x models.Matrix, out []float64) error {
	for i := range out {
		out[i] = b.r.Float64()
	}
	return nil
}

func TestSelectsTheDetectorThatSees(t *testing.T) {
	p, _ := pca.New(pca.Config{ExplainedVariance: 0.99})
	e, err := ensemble.New(ensemble.Config{Seed: 1}, blind{rand.New(rand.NewPCG(1, 1))}, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Fit(context.Background(), modeltest.Latent(3000, 8, 1)); err != nil {
		t.Fatal(err)
	}
	rep := e.Report()
	if rep.Chosen != pca.Kind || e.Chosen() != p {
		t.Fatalf("chose %s; want pca: %+v", rep.Chosen, rep)
	}
	if len(rep.Candidates) != 3 || rep.Candidates[0].Detection > 0.1 || rep.Candidates[1].Detection < 0.9 {
		t.Errorf("candidates %+v; want the blind one near 0 detection and pca near 1", rep.Candidates)
	}
	// The ensemble's score is the chosen member's, normalised: a perturbed row stands out.
	y := modeltest.Latent(50, 8, 2)
	y.Row(10)[3] += 3
	s := make([]float64, 50)
	if err := e.Score(y, s); err != nil {
		t.Fatal(err)
	}
	if top := slices.Index(s, slices.Max(s)); top != 10 {
		t.Errorf("top score at row %d; want 10", top)
	}
	c := make([]float64, 8)
	if err := e.Contributions(y.Row(10), c); err != nil {
		t.Fatal(err)
	}
	if top := slices.Index(c, slices.Max(c)); top != 3 {
		t.Errorf("top contribution %d; want 3: %v", top, c)
	}
}

func TestStateRoundTrip(t *testing.T) {
	e, err := ensemble.NewDefault(ensemble.Config{}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range e.Members() {
		if a, ok := m.(*autoencoder.Detector); ok {
			*a = *must(autoencoder.New(autoencoder.Config{Seed: 3, Epochs: 3}))
		}
	}
	if err := e.Fit(context.Background(), modeltest.Latent(1000, 6, 1)); err != nil {
		t.Fatal(err)
	}
	b, err := e.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ensemble.Restore(ensemble.Kind, b)
	if err != nil {
		t.Fatal(err)
	}
	y := modeltest.Latent(30, 6, 2)
	a, c := make([]float64, 30), make([]float64, 30)
	_ = e.Score(y, a)
	_ = r.Score(y, c)
	if !slices.Equal(a, c) {
		t.Errorf("restored ensemble scores %v; original %v", c, a)
	}
	if _, err := ensemble.Restore("nope", b); err == nil {
		t.Error("unknown kind restored")
	}
	var empty ensemble.Ensemble
	if err := empty.Score(y, a); !errors.Is(err, models.ErrNotFitted) {
		t.Errorf("score before fit: %v", err)
	}
	if _, err := ensemble.New(ensemble.Config{}); err == nil {
		t.Error("an ensemble without members was created")
	}
	p1, _ := pca.New(pca.Config{})
	p2, _ := pca.New(pca.Config{})
	if _, err := ensemble.New(ensemble.Config{}, p1, p2); err == nil {
		t.Error("two members of one kind accepted")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// BenchmarkFitDay fits the default ensemble (PCA and autoencoder) on one day of 1 Hz
// windows of 10 signals × 10 steps, and scores one window with it.
func BenchmarkFitDay(b *testing.B) {
	x := modeltest.Latent(86400, 100, 1)
	var e *ensemble.Ensemble
	for b.Loop() {
		e = must(ensemble.NewDefault(ensemble.Config{Signals: 10}, 1))
		if err := e.Fit(context.Background(), x); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/fit")
	y := modeltest.Latent(1, 100, 2)
	out := make([]float64, 1)
	n := 20000
	start := time.Now()
	for range n {
		_ = e.Score(y, out)
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(n), "µs/window")
	b.Logf("chosen: %s", e.Report().Chosen)
}
