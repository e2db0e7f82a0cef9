// Package modeltest supplies the detector packages' tests with seeded data and small helpers.
package modeltest

import (
	"context"
	"encoding/json"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/millwright-io/millwright/models"
)

// Latent returns n rows of p columns driven by two latent factors plus noise of standard
// deviation 0.1, the shape of correlated plant signals: column j is z1·(1 + j mod 3) −
// z2·(j mod 2) + noise. The same seed gives the same rows.
func Latent(n, p int, seed uint64) models.Matrix {
	r := rand.New(rand.NewPCG(seed, 7))
	m := models.NewMatrix(n, p)
	for i := range n {
		z1, z2 := r.NormFloat64(), r.NormFloat64()
		for j := range p {
			m.Data[i*p+j] = z1*float64(1+j%3) - z2*float64(j%2) + 0.1*r.NormFloat64()
		}
	}
	return m
}

// Squash applies tanh to every value of m in place and returns it: Latent made nonlinear.
func Squash(m models.Matrix) models.Matrix {
	for i, v := range m.Data {
		m.Data[i] = math.Tanh(v)
	}
	return m
}

// Fit fits d on x, failing the test on error, and returns d.
func Fit[D models.Detector](t testing.TB, d D, x models.Matrix) D {
	t.Helper()
	if err := d.Fit(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	return d
}

// Scores returns d's scores of x's rows, failing the test on error.
func Scores(t testing.TB, d models.Detector, x models.Matrix) []float64 {
	t.Helper()
	out := make([]float64, x.Rows)
	if err := d.Score(x, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Argmax returns the index of the largest value (the first of equals).
func Argmax(v []float64) int {
	top := 0
	for i := range v {
		if v[i] > v[top] {
			top = i
		}
	}
	return top
}

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// Golden compares got with the numbers in the JSON file at path, each within rel relative
// tolerance (of max(1e-3, |golden|)); with -update it rewrites the file first.
func Golden(t testing.TB, path string, got []float64, rel float64) {
	t.Helper()
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to create it)", err)
	}
	var want []float64
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(want) != len(got) {
		t.Fatalf("%d values, %s has %d", len(got), path, len(want))
	}
	for i := range want {
		if math.Abs(want[i]-got[i]) > rel*max(1e-3, math.Abs(want[i])) {
			t.Errorf("value %d: %v, golden %v (%s)", i, got[i], want[i], path)
		}
	}
}

// BenchScore measures d scoring one row of x per call, reporting µs/window.
func BenchScore(b *testing.B, d models.Detector, x models.Matrix) {
	b.Helper()
	row := x.Slice(0, 1)
	out := make([]float64, 1)
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Score(row, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/float64(b.N), "µs/window")
}

// RoundTrip saves d's state, restores it into fresh and checks that fresh scores x exactly
// like d. It returns the state for further tests.
func RoundTrip(t testing.TB, d, fresh models.Persistent, x models.Matrix) []byte {
	t.Helper()
	b, err := d.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.UnmarshalState(b); err != nil {
		t.Fatal(err)
	}
	want, got := Scores(t, d, x), Scores(t, fresh, x)
	for i := range want {
		if want[i] != got[i] {
			t.Fatalf("restored %s scores row %d %v; the original %v", d.Kind(), i, got[i], want[i])
		}
	}
	if fresh.Kind() != d.Kind() {
		t.Fatalf("restored kind %s; want %s", fresh.Kind(), d.Kind())
	}
	return b
}
