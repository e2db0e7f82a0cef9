package federation_test

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"

	"gonum.org/v1/gonum/stat"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/internal/race"
	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/eval"
	"github.com/millwright-io/millwright/models/threshold"
)

// skabSeeds is how many seeds TestFederatedVersusCentralSKAB repeats the comparison with
// (each trains 3 + 3 + 2 models); the README's numbers use 3.
var skabSeeds = flag.Int("skab-seeds", 3, "seeds of the SKAB federated comparison")

// skabFactory is one factory of a non-IID SKAB split: whole experiments, by folder
// (skabSplit: valve1, valve2, other) or part of one (skabSplit5), so each factory sees its
// own fault types and operating conditions.
type skabFactory struct {
	name  string
	train models.Matrix // its training windows: the first 400 rows of each of its files (all of the anomaly-free run)
}

// skabSplit reads SKAB and splits it across factories by experiment folder. Each file is
// scaled by its own first TrainRows rows (as the protocol does) and its training windows go
// to its folder's factory; the anomaly-free run (scaled by itself, all of it normal) goes to
// the factory "other". It skips the test when the data is absent.
func skabSplit(t *testing.T, window int) ([]*eval.Series, []skabFactory) {
	t.Helper()
	return skabSplitBy(t, window, func(name string) string {
		if g := eval.SKABGroup(name); g != skabFree {
			return g
		}
		return "other"
	})
}

// skabFree is the folder, and the file name's stem, of SKAB's anomaly-free run.
const skabFree = "anomaly-free"

// skabSplit5 splits SKAB across 5 factories, for the rules that need 5 updates a round
// (krum and multi_krum with f = 1). It is skabSplit with its two larger factories split
// in two by whole files, so no file's rows straddle factories and each factory keeps its
// own experiments: valve1's files 0-7 and 8-15 (by file number, 8 experiments each), and
// "other" into its 14 experiments and the anomaly-free run (a factory that has only ever
// seen normal operation). valve2 stays whole. The training windows per factory are
// 3168, 3168, 1584, 5544 and 9401 (skabSplit's: 6336, 1584, 14945).
func skabSplit5(t *testing.T, window int) ([]*eval.Series, []skabFactory) {
	t.Helper()
	return skabSplitBy(t, window, func(name string) string {
		switch g := eval.SKABGroup(name); g {
		case "valve1":
			n, err := strconv.Atoi(strings.TrimSuffix(path.Base(name), ".csv"))
			if err != nil {
				t.Fatalf("SKAB file %s: expected a numbered file in valve1: %v", name, err)
			}
			if n < 8 {
				return "valve1/0-7"
			}
			return "valve1/8-15"
		default:
			return g // valve2, other, anomaly-free
		}
	})
}

// skabSplitBy reads SKAB and gives each file's training windows to the factory named by
// factory(file name), the name relative to the data folder ("valve1/3.csv",
// "anomaly-free/anomaly-free.csv"). Each labelled file is scaled by its own first TrainRows
// rows (as the protocol does) and contributes the windows within them; the anomaly-free run
// is scaled by itself and contributes all its windows. It returns the labelled files and the
// factories sorted by name, and skips the test when the data is absent.
func skabSplitBy(t *testing.T, window int, factory func(name string) string) ([]*eval.Series, []skabFactory) {
	t.Helper()
	dir, err := eval.BenchmarkData(filepath.Join("skab", "data"))
	if err != nil {
		t.Skipf("%v", err)
	}
	files, err := eval.ReadSKABDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var cfg eval.SKABConfig
	cfg.SetDefaults()
	byName := map[string]*models.Matrix{}
	add := func(file string, w models.Matrix) {
		name := factory(file)
		m := byName[name]
		if m == nil {
			m = &models.Matrix{Cols: w.Cols}
			byName[name] = m
		}
		m.Rows += w.Rows
		m.Data = append(m.Data, w.Data...)
	}
	for _, f := range files {
		w, err := eval.SKABFileWindows(f, cfg.TrainRows, window)
		if err != nil {
			t.Fatal(err)
		}
		add(f.Name, w.Slice(0, cfg.TrainRows-window+1))
	}
	free, err := readSKABFile(filepath.Join(dir, skabFree, skabFree+".csv"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := eval.SKABFileWindows(free, free.X.Rows, window)
	if err != nil {
		t.Fatal(err)
	}
	add(skabFree+"/"+skabFree+".csv", w)
	var out []skabFactory
	for name, m := range byName {
		out = append(out, skabFactory{name: name, train: *m})
	}
	slices.SortFunc(out, func(a, b skabFactory) int { return strings.Compare(a.name, b.name) })
	return files, out
}

func readSKABFile(path string) (*eval.Series, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return eval.ReadSKAB(f, filepath.Base(path))
}

// skabAE is the fixed architecture every party trains: a dense autoencoder over windows of
// the 8 signals, with the autoencoder's default early stopping (the last 10% of the rows it
// is given are its validation split; every fit keeps its best epoch, which for a warm start
// may be the starting model itself). It trains on the huber loss (δ = 1): SKAB's flow-rate
// signal is near-constant in the first rows of many valve1 files, so the per-file scaling
// blows its spikes up to hundreds or thousands, and with the squared error those few values
// dominate the gradient: central training keeps its first epoch, and by round 4 the
// valve1 and valve2 participants return the global model unchanged.
func skabAE(window, epochs int, seed uint64) autoencoder.Config {
	c := autoencoder.DefaultConfig()
	c.Inputs, c.Layers, c.Epochs, c.Seed, c.Loss = 8*window, []int{16, 4, 16}, epochs, seed, autoencoder.LossHuber
	return c
}

// skabMu is the FedProx μ of the round (the participant's autoencoder weighs μ/2).
const skabMu = 0.01

// skabEval is the protocol every model is measured with: per file, the threshold is the
// 0.995 quantile (+0.2 of its distance from the median) of the model's scores on the file's
// own training windows, debounced by the eval command's alarm (5 of 10 windows raise it, 20
// below clear it); point-wise F1/FAR/MAR over the test rows of all 34 files.
func skabEval(window int) eval.SKABConfig {
	return eval.SKABConfig{Window: window,
		Threshold: threshold.Config{Method: threshold.MethodQuantile, Quantile: 0.995, Margin: 0.2},
		Alarm:     &threshold.AlarmConfig{K: 5, N: 10, ClearRatio: 1, ClearCount: 20}}
}

// fitAE trains a fresh autoencoder on x.
func fitAE(t *testing.T, cfg autoencoder.Config, x models.Matrix) *autoencoder.Detector {
	t.Helper()
	d, err := autoencoder.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Fit(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	return d
}

// aeWarmTrainer continues the global autoencoder on the factory's own windows for a few
// epochs, with the round's FedProx μ mapped as the gateway's trainer maps it (the round's μ
// weighs μ/2·‖w − global‖², the autoencoder's ProxMu weighs ‖w − global‖² itself). It keeps
// the first global model it receives (the hub's initial one) in initial.
type aeWarmTrainer struct {
	data    models.Matrix
	cfg     autoencoder.Config
	initial []float32
}

func (a *aeWarmTrainer) Train(ctx context.Context, task federation.Task, global []float32) (federation.TrainResult, error) {
	if a.initial == nil {
		a.initial = slices.Clone(global)
	}
	c := a.cfg
	c.Seed += task.Round
	c.ProxMu = task.ProximalMu / 2
	d, err := autoencoder.New(c)
	if err != nil {
		return federation.TrainResult{}, err
	}
	if err := d.SetParams(global); err != nil {
		return federation.TrainResult{}, err
	}
	if err := d.Fit(ctx, a.data); err != nil {
		return federation.TrainResult{}, err
	}
	return federation.TrainResult{Params: d.Params(), Samples: a.data.Rows}, nil
}

// federate runs rounds of the federation (a hub and one participant per factory over an
// embedded NATS server) with the strategy and returns the final global autoencoder and the
// untrained initial one the hub started from.
func federate(t *testing.T, facs []skabFactory, model autoencoder.Config, localEpochs, rounds int, strategy aggregate.Strategy) (final, initial *autoencoder.Detector) {
	t.Helper()
	final, initial, _ = federateWith(t, facs, model, localEpochs, rounds, strategy, nil)
	return final, initial
}

// federateWith is federate with the federation's configuration adjusted by configure (see
// runFederationWith); it also returns the hub's round reports.
func federateWith(t *testing.T, facs []skabFactory, model autoencoder.Config, localEpochs, rounds int, strategy aggregate.Strategy,
	configure func(*federation.FederationConfig)) (final, initial *autoencoder.Detector, reports []federation.RoundReport) {
	t.Helper()
	var trainers []federation.Trainer
	for i, f := range facs {
		local := model
		local.Epochs, local.Seed = localEpochs, model.Seed*1000+uint64(100*i)
		trainers = append(trainers, &aeWarmTrainer{data: f.train, cfg: local})
	}
	load := func(params []float32) *autoencoder.Detector {
		d, err := autoencoder.New(model)
		if err != nil {
			t.Fatal(err)
		}
		if params != nil {
			if err := d.SetParams(params); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	params, reports := runFederationWith(t, load(nil).Architecture(), strategy, model.Seed, 0.3, rounds, trainers, configure)
	return load(params), load(trainers[0].(*aeWarmTrainer).initial), reports
}

// skabScore is one model's outcome: its confusion under the protocol and its median
// reconstruction error on the normal test windows.
type skabScore struct {
	c   eval.Confusion
	err float64
}

// skabRun is one seed's score of each way of training, and of the untrained model the hub
// starts the federation from (the floor that training should beat).
type skabRun struct {
	central, fedavg, fedprox, untrained skabScore
	local                               []skabScore
}

// normalTestWindows are the windows of every file's test part that end at a row labelled
// normal, each file scaled by its own training rows.
func normalTestWindows(t *testing.T, files []*eval.Series, window int) models.Matrix {
	t.Helper()
	var cfg eval.SKABConfig
	cfg.SetDefaults()
	out := models.Matrix{Cols: 8 * window}
	for _, f := range files {
		w, err := eval.SKABFileWindows(f, cfg.TrainRows, window)
		if err != nil {
			t.Fatal(err)
		}
		for i := range w.Rows {
			if end := i + window - 1; end >= cfg.TrainRows && !f.Anomaly[end] {
				out.Rows++
				out.Data = append(out.Data, w.Row(i)...)
			}
		}
	}
	return out
}

// skabScorer returns the function that scores a model with the protocol (skabEval) on every
// file, and its median reconstruction error on the normal test windows.
func skabScorer(t *testing.T, files []*eval.Series, window int) func(models.Detector) skabScore {
	t.Helper()
	protocol := skabEval(window)
	normal := normalTestWindows(t, files, window)
	return func(d models.Detector) skabScore {
		t.Helper()
		r, err := eval.RunSKABShared(context.Background(), files, protocol, d)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float64, normal.Rows)
		if err := d.Score(normal, out); err != nil {
			t.Fatal(err)
		}
		slices.Sort(out)
		return skabScore{c: r.Confusion, err: stat.Quantile(0.5, stat.Empirical, out, nil)}
	}
}

func meanF1(ss []skabScore) float64 {
	s := 0.0
	for _, x := range ss {
		s += x.c.F1()
	}
	return s / float64(len(ss))
}

func meanErr(ss []skabScore) float64 {
	s := 0.0
	for _, x := range ss {
		s += x.err
	}
	return s / float64(len(ss))
}

// TestFederatedVersusCentralSKAB is issue 5's comparison on real data: SKAB's experiments are
// split non-IID across three factories by experiment folder, and one autoencoder architecture
// is trained centrally on every factory's training rows, by each factory alone, and federated
// (FedAvg and FedProx through a real hub and participants over an embedded NATS server, with
// the same epochs of local work as central training). Every model is evaluated on all 34
// files with per-file scaling and per-file thresholds from the file's own training rows
// (eval.RunSKABShared: shared weights, local calibration, as a gateway deploys a federated
// model). The untrained initial model of the federation is scored the same way as a floor.
// It skips without the benchmark data ($MILLWRIGHT_DATA or ../shared/data).
func TestFederatedVersusCentralSKAB(t *testing.T) {
	const window = 5
	files, facs := skabSplit(t, window)
	var seeds []uint64
	for s := range max(1, *skabSeeds) {
		seeds = append(seeds, uint64(s+1))
	}
	epochs, localEpochs, rounds := 30, 2, 15
	if testing.Short() || race.Enabled { // about 20 s at the full budget without -race, minutes with it
		seeds, epochs, rounds = seeds[:1], 16, 8
	}
	for _, f := range facs {
		t.Logf("factory %s: %d training windows", f.name, f.train.Rows)
	}
	score := skabScorer(t, files, window)
	var all models.Matrix
	for _, f := range facs {
		all.Cols = f.train.Cols
		all.Rows += f.train.Rows
		all.Data = append(all.Data, f.train.Data...)
	}
	var runs []skabRun
	for _, seed := range seeds {
		var r skabRun
		r.central = score(fitAE(t, skabAE(window, epochs, seed), all))
		for _, f := range facs {
			r.local = append(r.local, score(fitAE(t, skabAE(window, epochs, seed), f.train)))
		}
		avg, initial := federate(t, facs, skabAE(window, epochs, seed), localEpochs, rounds, aggregate.Strategy{Name: aggregate.FedAvg})
		r.fedavg, r.untrained = score(avg), score(initial)
		prox, _ := federate(t, facs, skabAE(window, epochs, seed), localEpochs, rounds, aggregate.Strategy{Name: aggregate.FedProx, ProximalMu: skabMu})
		r.fedprox = score(prox)
		runs = append(runs, r)
	}
	t.Logf("\n%s", skabTable(runs, facs, rounds, localEpochs, epochs))

	// The relations asserted, at the full and at the reduced budget. On every seed: both
	// federated models are not more than 0.02 F1 below the central one (both are above it),
	// and FedAvg reconstructs the normal test rows better than the average local-only model
	// (FedProx, held near each round's start, does not on every seed: only logged). On the
	// mean over seeds: both federated models score a higher F1 than the average local-only
	// model (issue 5). A single seed can miss that last one, and is logged: under this
	// protocol F1 rewards little learning (the untrained network's error, about a window's
	// distance from its file's training median, already scores 0.78-0.79), so a local model
	// that stopped early, with the highest normal-row error of its factory, can score above
	// the federated one (seed 5 of 10: the "other" factory's model, error 2.23 against
	// 1.11-1.83 on the other seeds). The untrained row is the floor, logged.
	var fedF1 = map[string][]float64{}
	var localF1 []float64
	for i, r := range runs {
		local, localErr := meanF1(r.local), meanErr(r.local)
		localF1 = append(localF1, local)
		for _, fed := range []struct {
			name        string
			s           skabScore
			assertError bool
		}{{"fedavg", r.fedavg, true}, {"fedprox", r.fedprox, false}} {
			f1 := fed.s.c.F1()
			fedF1[fed.name] = append(fedF1[fed.name], f1)
			if math.IsNaN(f1) || r.central.c.F1()-f1 > 0.02 {
				t.Errorf("seed %d: %s F1 %.3f is more than 0.02 below central %.3f", seeds[i], fed.name, f1, r.central.c.F1())
			}
			if !(f1 > local) {
				var errs []string
				for j, l := range r.local {
					errs = append(errs, fmt.Sprintf("%s F1 %.3f error %.3f", facs[j].name, l.c.F1(), l.err))
				}
				t.Logf("seed %d: %s F1 %.3f is not above the local-only mean %.3f (%s)", seeds[i], fed.name, f1, local, strings.Join(errs, ", "))
			}
			switch {
			case fed.s.err < localErr:
			case fed.assertError:
				t.Errorf("seed %d: %s median normal-row error %.3f is not below the local-only mean %.3f", seeds[i], fed.name, fed.s.err, localErr)
			default:
				t.Logf("seed %d: %s median normal-row error %.3f is not below the local-only mean %.3f", seeds[i], fed.name, fed.s.err, localErr)
			}
		}
		t.Logf("seed %d: untrained initial model F1 %.3f, median normal-row error %.3f", seeds[i], r.untrained.c.F1(), r.untrained.err)
	}
	for _, name := range []string{"fedavg", "fedprox"} {
		if f1, local := stat.Mean(fedF1[name], nil), stat.Mean(localF1, nil); !(f1 > local) {
			t.Errorf("%s: mean F1 over %d seeds %.3f is not above the local-only mean %.3f", name, len(seeds), f1, local)
		}
	}
}

// skabTable prints F1/FAR/MAR per way of training, per seed and as the mean over seeds ±
// half the range.
func skabTable(runs []skabRun, facs []skabFactory, rounds, localEpochs, epochs int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SKAB, 3 factories by experiment folder, autoencoder %d epochs (central, local) vs %d rounds × %d local epochs (federated)\n", epochs, rounds, localEpochs)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "model\tF1 per seed\tF1 mean ± spread\tFAR, % (mean)\tMAR, % (mean)\tmedian normal-row error\t")
	row := func(name string, pick func(skabRun) []skabScore) {
		var f1s []float64
		far, mar, e, n := 0.0, 0.0, 0.0, 0
		for _, r := range runs {
			ss := pick(r)
			f1s = append(f1s, meanF1(ss))
			for _, s := range ss {
				far, mar, e, n = far+s.c.FAR(), mar+s.c.MAR(), e+s.err, n+1
			}
		}
		var per []string
		for _, v := range f1s {
			per = append(per, fmt.Sprintf("%.3f", v))
		}
		lo, hi := slices.Min(f1s), slices.Max(f1s)
		fmt.Fprintf(tw, "%s\t%s\t%.3f ± %.3f\t%.1f\t%.1f\t%.4f\t\n", name, strings.Join(per, " "), stat.Mean(f1s, nil), (hi-lo)/2, far/float64(n), mar/float64(n), e/float64(n))
	}
	one := func(f func(skabRun) skabScore) func(skabRun) []skabScore {
		return func(r skabRun) []skabScore { return []skabScore{f(r)} }
	}
	row("central (all factories' rows)", one(func(r skabRun) skabScore { return r.central }))
	row("federated, FedAvg", one(func(r skabRun) skabScore { return r.fedavg }))
	row(fmt.Sprintf("federated, FedProx μ=%g", skabMu), one(func(r skabRun) skabScore { return r.fedprox }))
	row("local-only, mean of 3", func(r skabRun) []skabScore { return r.local })
	for i, f := range facs {
		row("  local-only "+f.name, func(r skabRun) []skabScore { return r.local[i : i+1] })
	}
	row("untrained (the hub's initial model)", one(func(r skabRun) skabScore { return r.untrained }))
	_ = tw.Flush()
	return b.String()
}
