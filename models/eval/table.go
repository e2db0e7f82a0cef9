package eval

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// publishedOutlier is a row of SKAB's published outlier-detection leaderboard (test parts only).
type publishedOutlier struct {
	name          string
	f1, far, mar  float64
	std, fp, fn   float64 // changepoint scores: standard, low FP, low FN
	missed, cpFPs int
}

// skabPublished is SKAB's "proposed" leaderboard (README of waico/SKAB, test parts only), the
// rows this command's table is compared with. Changepoint columns are NaN-free: every listed
// algorithm has both.
var skabPublished = []publishedOutlier{
	{"Conv-AE", 0.78, 13.55, 28.02, 23.61, 21.54, 27.55, 82, 23},
	{"MSET", 0.78, 39.73, 14.13, 13.84, 10.22, 17.37, 96, 66},
	{"T-squared+Q (PCA)", 0.76, 26.62, 24.92, 25.35, 14.51, 31.33, 72, 232},
	{"LSTM-AE", 0.74, 29.96, 25.92, 23.51, 20.11, 25.91, 88, 69},
	{"T-squared", 0.66, 19.21, 42.6, 19.54, 10.2, 24.31, 70, 106},
	{"MSCRED", 0.36, 49.94, 69.88, 32.42, 16.53, 40.28, 55, 342},
	{"Isolation forest", 0.29, 2.56, 82.89, 26.16, 19.5, 30.82, 76, 135},
}

// PrintSKAB writes the SKAB result as the published leaderboard's two tables, the run's row
// first, then the published rows for comparison.
func PrintSKAB(w io.Writer, r *SKABResult, setup Setup, dir string) error {
	rows := 0
	for _, f := range r.Files {
		rows += len(f.Pred)
	}
	fmt.Fprintf(w, "SKAB %s: %d files, %d test rows (first 400 rows of each file train), detector %s\n  %s\n\n",
		dir, len(r.Files), rows, setup.Name, setup.Description)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "outlier detection\tF1\tFAR, %\tMAR, %\t")
	c := r.Confusion
	fmt.Fprintf(tw, "millwright %s\t%.3f\t%.2f\t%.2f\t\n", setup.Name, c.F1(), c.FAR(), c.MAR())
	for _, p := range skabPublished {
		fmt.Fprintf(tw, "published %s\t%.2f\t%.2f\t%.2f\t\n", p.name, p.f1, p.far, p.mar)
	}
	fmt.Fprintf(tw, "\t\t\t\t\n")
	fmt.Fprintf(tw, "changepoint detection (60 s right windows)\tstandard\tlow FP\tlow FN\tmissed CPs\tFPs\t\n")
	n := r.Changepoints.Normalized()
	fmt.Fprintf(tw, "millwright %s\t%.2f\t%.2f\t%.2f\t%d/%d\t%d\t\n", setup.Name, n[0], n[1], n[2], r.Changepoints.Missed, r.Changepoints.Windows, r.Changepoints.FPs)
	for _, p := range skabPublished {
		fmt.Fprintf(tw, "published %s\t%.2f\t%.2f\t%.2f\t%d/127\t%d\t\n", p.name, p.std, p.fp, p.fn, p.missed, p.cpFPs)
	}
	fmt.Fprintf(tw, "confusion (all test rows)\tTP %d\tTN %d\tFP %d\tFN %d\t\n", c.TP, c.TN, c.FP, c.FN)
	return tw.Flush()
}

// PrintNAB writes the NAB result: one row per profile.
func PrintNAB(w io.Writer, r *NABResult, setup Setup, dir string) error {
	fmt.Fprintf(w, "NAB %s: %d files, %d anomaly windows, detector %s\n  %s\n  thresholds are the detector's own (no corpus-wide threshold optimisation); detections are alarm onsets\n\n",
		dir, r.Files, r.Windows, setup.Name, setup.Description)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "profile\tscore\traw\tnull\tTP windows\tFN windows\tFP detections\t")
	for _, p := range r.Profiles {
		fmt.Fprintf(tw, "%s\t%.2f\t%.3f\t%.3f\t%d\t%d\t%d\t\n", p.Profile.Name, p.Normalized, p.Raw, p.Null, p.TP, p.FN, p.FP)
	}
	return tw.Flush()
}

// PrintCMAPSS writes the C-MAPSS result with the published reference numbers.
func PrintCMAPSS(w io.Writer, r *CMAPSSResult, dir string) error {
	fmt.Fprintf(w, "C-MAPSS %s %s: %d training engines, %d test engines, RUL capped at %d, one prediction per test engine at its last cycle\n\n",
		r.Subset, dir, r.TrainUnits, r.TestUnits, RULCap)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "model\tRMSE\tPHM08 score\tparameters\ttraining time\t")
	fmt.Fprintf(tw, "millwright rul %s\t%.2f\t%.1f\t%d\t%s\t\n", r.Model, r.RMSE, r.Score, r.Params, r.TrainTime.Round(1e7))
	switch r.Subset {
	case "FD001":
		fmt.Fprintln(tw, "published state of the art\t11.0-11.4\t175-250\t\t\t")
		fmt.Fprintln(tw, "published plain LSTM\t~16\t\t\t\t")
	case "FD003":
		fmt.Fprintln(tw, "published state of the art\t10.9-11.4\t\t\t\t")
	}
	return tw.Flush()
}
