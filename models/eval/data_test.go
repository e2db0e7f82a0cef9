package eval

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/millwright-io/millwright/internal/race"
	"github.com/millwright-io/millwright/models/rul"
)

// sharedData returns the benchmark data directory: $MILLWRIGHT_DATA, or ../shared/data next to
// the repository. It skips the test when the folder (or sub, inside it) is absent: a user's
// checkout has no benchmark data.
func sharedData(t *testing.T, sub string) string {
	t.Helper()
	p, err := BenchmarkData(sub)
	if err != nil {
		t.Skipf("%v (the published protocols need it)", err)
	}
	return p
}

// TestSKABPublishedProtocol runs the full SKAB protocol with the default detector setup on the
// real data and checks the corpus shape and that the numbers stay in the band the README reports.
func TestSKABPublishedProtocol(t *testing.T) {
	dir := sharedData(t, filepath.Join("skab", "data"))
	files, err := ReadSKABDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 34 {
		t.Fatalf("%d labelled files, want SKAB's 34", len(files))
	}
	setup, err := LookupSetup("pca")
	if err != nil {
		t.Fatal(err)
	}
	res, err := RunSKAB(context.Background(), files, setup.SKABConfig(), setup.New)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := PrintSKAB(&buf, res, setup, dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", buf.String())
	c := res.Confusion
	if total := c.TP + c.TN + c.FP + c.FN; total != 37401-34*400 {
		t.Errorf("%d test rows, want 37401 − 34·400 = 23801", total)
	}
	if res.Changepoints.Windows != 127 {
		t.Errorf("%d changepoints in the test parts, want 127", res.Changepoints.Windows)
	}
	if c.F1() < 0.78 || c.FAR() > 15 {
		t.Errorf("F1 %.3f FAR %.2f %%; the default setup measured 0.795 and 13.45 %%", c.F1(), c.FAR())
	}
	if s := res.Changepoints.Normalized()[0]; s < 20 {
		t.Errorf("changepoint score (standard) %.2f; the default setup measured 25.5", s)
	}
}

// TestSKABLeaveOneGroupOut is the honest check of the default detector: its window, threshold
// cross-fitting, factor and alarm are chosen on two of SKAB's three experiment folders and
// measured on the third, for each folder in turn (`millwright models eval --dataset skab
// --tune-on logo`). Under -race a smaller grid keeps the run short.
func TestSKABLeaveOneGroupOut(t *testing.T) {
	dir := sharedData(t, filepath.Join("skab", "data"))
	files, err := ReadSKABDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	setup, err := LookupSetup("pca")
	if err != nil {
		t.Fatal(err)
	}
	grid := DefaultSKABGrid()
	minF1, minCP := 0.77, 27.0
	if race.Enabled {
		grid.Windows, grid.Folds, grid.Factors = []int{10, 15}, []int{2}, []float64{0.9, 1}
		minF1, minCP = 0.75, 25
	}
	res, err := TuneSKAB(context.Background(), files, setup, grid, TuneLOGO)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := PrintSKABTune(&buf, res, setup, dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", buf.String())
	if len(res.Folds) != 3 {
		t.Fatalf("%d folds, want valve1, valve2 and other held out in turn", len(res.Folds))
	}
	c := res.HeldOut.Confusion
	if total := c.TP + c.TN + c.FP + c.FN; total != 23801 {
		t.Errorf("%d held-out test rows, want every file's once (23801)", total)
	}
	// Measured with the full grid: F1 0.780, FAR 13.92 %, changepoint score 28.6.
	if c.F1() < minF1 || c.FAR() > 15 {
		t.Errorf("held-out F1 %.3f FAR %.2f %%; want F1 ≥ %v with FAR ≤ 15 %%", c.F1(), c.FAR(), minF1)
	}
	if s := res.HeldOut.Changepoints.Normalized()[0]; s < minCP {
		t.Errorf("held-out changepoint score (standard) %.2f; want at least %v", s, minCP)
	}
}

// TestCMAPSSPublishedProtocol runs the C-MAPSS protocol on FD001 and FD003 with a cut-down
// regressor (half the epochs; with -race one member and 5 epochs on FD001 only) to keep the run
// short; the README's numbers come from the command's default regressor.
func TestCMAPSSPublishedProtocol(t *testing.T) {
	dir := sharedData(t, "cmapss")
	cfg := rul.Config{Seed: 1, Epochs: 20}
	maxRMSE := 13.0
	subsets := []string{"FD001", "FD003"}
	if race.Enabled {
		// -race slows training about tenfold: check the plumbing on FD001 with a sane bound.
		cfg.Members, cfg.Epochs, maxRMSE, subsets = 1, 5, 20, subsets[:1]
	}
	for _, subset := range subsets {
		t.Run(subset, func(t *testing.T) {
			d, err := ReadCMAPSSDir(dir, subset)
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Train) != 100 || len(d.Test) != 100 {
				t.Fatalf("%d train, %d test engines; want 100 and 100", len(d.Train), len(d.Test))
			}
			for _, c := range []rul.Config{cfg, {Model: rul.ModelRidge}} {
				res, err := RunCMAPSS(context.Background(), d, c)
				if err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				if err := PrintCMAPSS(&buf, res, dir); err != nil {
					t.Fatal(err)
				}
				t.Logf("\n%s", buf.String())
				limit := maxRMSE
				if res.Model == rul.ModelRidge {
					limit = 18
				}
				if res.RMSE > limit || res.RMSE < 5 {
					t.Errorf("%s RMSE %.2f; want 5 to %v", res.Model, res.RMSE, limit)
				}
				for i, p := range res.Predictions {
					if p < 0 || p > RULCap {
						t.Fatalf("prediction %d = %v outside [0, %d]", i, p, RULCap)
					}
				}
			}
		})
	}
}
