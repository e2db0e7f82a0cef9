package eval

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/threshold"
)

// groupedSKAB is three SKAB-like folders of synthetic files: a, b and c.
func groupedSKAB() []*Series {
	var files []*Series
	for i, name := range []string{"a/0.csv", "a/1.csv", "b/0.csv", "c/0.csv", "c/1.csv"} {
		f := synthSKAB(uint64(i + 1))
		f.Name = name
		files = append(files, f)
	}
	return files
}

func TestSKABGroup(t *testing.T) {
	for in, want := range map[string]string{"valve1/3.csv": "valve1", "other/x/1.csv": "other", "1.csv": "", "/1.csv": ""} {
		if got := SKABGroup(in); got != want {
			t.Errorf("SKABGroup(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTuneSKAB(t *testing.T) {
	files := groupedSKAB()
	setup := Setup{
		Name: "z", New: func() (models.Detector, error) { return &zDetector{}, nil },
		Threshold: threshold.Config{Method: threshold.MethodQuantile}, CrossFit: true,
	}
	// The factor 1000 puts the threshold above the 10σ shift: nothing is detected, so the
	// tuning must never choose it; factor 1 detects the shift.
	grid := SKABGrid{Windows: []int{1, 5}, Folds: []int{1, 2, 4}, Factors: []float64{1000, 1}, Alarms: []*threshold.AlarmConfig{nil, {K: 2, N: 3}}}
	rows := func(r *SKABResult) int {
		c := r.Confusion
		return c.TP + c.TN + c.FP + c.FN
	}
	t.Run("fixed split", func(t *testing.T) {
		res, err := TuneSKAB(context.Background(), files, setup, grid, "a")
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Folds) != 1 {
			t.Fatalf("%d folds, want 1", len(res.Folds))
		}
		f := res.Folds[0]
		if !slices.Equal(f.Tuned, []string{"a"}) || !slices.Equal(f.HeldOut, []string{"b", "c"}) {
			t.Errorf("tuned on %v, held out %v; want [a] and [b c]", f.Tuned, f.HeldOut)
		}
		if f.Candidates != 2*3*2*2 {
			t.Errorf("%d candidates, want 24", f.Candidates)
		}
		if f.Setup.ThresholdFactor != 1 {
			t.Errorf("chose factor %v, want 1 (1000 detects nothing)", f.Setup.ThresholdFactor)
		}
		if rows(f.TuneResult) != 2*200 || rows(f.HeldRes) != 3*200 || rows(res.HeldOut) != 3*200 || rows(res.All) != 5*200 {
			t.Errorf("rows tuned %d, held out %d/%d, all %d; want 400, 600, 600, 1000", rows(f.TuneResult), rows(f.HeldRes), rows(res.HeldOut), rows(res.All))
		}
		// The held-out numbers are those of the chosen setup run afresh on the held-out files.
		direct, err := RunSKAB(context.Background(), files[2:], f.Setup.SKABConfig(), f.Setup.New)
		if err != nil {
			t.Fatal(err)
		}
		if direct.Confusion != f.HeldRes.Confusion || direct.Changepoints.Normalized()[0] != f.HeldRes.Changepoints.Normalized()[0] {
			t.Errorf("held out %+v, a fresh run of the chosen setup %+v", f.HeldRes.Confusion, direct.Confusion)
		}
		var buf bytes.Buffer
		if err := PrintSKABTune(&buf, res, setup, "dir"); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"tuned on a", "held out b+c", "held-out files together", "chosen on a: window"} {
			if !strings.Contains(buf.String(), want) {
				t.Errorf("table lacks %q:\n%s", want, buf.String())
			}
		}
	})
	t.Run("leave one group out", func(t *testing.T) {
		res, err := TuneSKAB(context.Background(), files, setup, grid, TuneLOGO)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Folds) != 3 {
			t.Fatalf("%d folds, want one per folder", len(res.Folds))
		}
		for i, held := range []string{"a", "b", "c"} {
			if f := res.Folds[i]; !slices.Equal(f.HeldOut, []string{held}) || slices.Contains(f.Tuned, held) {
				t.Errorf("fold %d tuned on %v, held out %v; want %s held out only", i, f.Tuned, f.HeldOut, held)
			}
		}
		if rows(res.HeldOut) != 5*200 {
			t.Errorf("%d held-out rows, want every file's 200 once", rows(res.HeldOut))
		}
		if res.HeldOut.Changepoints.Windows != 5*2 {
			t.Errorf("%d changepoint windows, want 10", res.HeldOut.Changepoints.Windows)
		}
	})
	for _, tt := range []struct{ name, split, want string }{
		{"unknown folder", "valve9", `folder "valve9" is not in the data`},
		{"every folder", "a,b,c", "leaves nothing held out"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := TuneSKAB(context.Background(), files, setup, grid, tt.split)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := TuneSKAB(context.Background(), files[:2], setup, grid, TuneLOGO); err == nil {
		t.Error("leave-one-group-out with one folder was accepted")
	}
	if _, err := TuneSKAB(context.Background(), files, setup, SKABGrid{}, "a"); err == nil {
		t.Error("an empty grid was accepted")
	}
}
