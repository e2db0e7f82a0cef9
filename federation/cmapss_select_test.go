package federation_test

import (
	"cmp"
	"flag"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/models/rul"
)

var (
	cmapssSelect      = flag.Bool("cmapss-select", false, "run TestSelectCMAPSSHyperparameters, the C-MAPSS hyperparameter search on the validation engines (tens of minutes)")
	cmapssSelectSeeds = flag.Int("cmapss-select-seeds", 3, "seeds (from 1) whose mean validation RMSE TestSelectCMAPSSHyperparameters compares in its second stage")
	cmapssSelectKeep  = flag.Int("cmapss-select-keep", 4, "finalists per federated strategy: the best of the first stage (seed 1), run again on the other seeds")
)

// The grid TestSelectCMAPSSHyperparameters searches: central training's epochs, and for each
// federated strategy every combination of rounds, mini-batches per round, server learning
// rate, client-drift correction and, for FedProx, μ. FedAdam's server learning rate is the
// step of its per-coordinate normalized update, so it has its own range. A round costs far
// more than its mini-batches (every participant extracts its features again), so the grid's
// cost is its rounds; to keep it within about 40 minutes on two shared cores, only FedAvg
// searches drift correction off too (it won for FedAvg and FedProx in an earlier, narrower
// search on the same validation cuts).
var (
	cmapssGridEpochs   = []int{12, 24, 36, 48, 72, 96}
	cmapssGridRounds   = []int{96, 144, 192, 288}
	cmapssGridSteps    = []int{50, 100}
	cmapssGridServerLR = []float64{1, 1.5, 2}
	cmapssGridAdamLR   = []float64{0.003, 0.01, 0.02}
	cmapssGridDrift    = []bool{true, false}
	cmapssGridMu       = []float64{0.001, 0.01, 0.1}
)

// cmapssGrid is every federated setting of the grid for strategy.
func cmapssGrid(strategy string) []cmapssSettings {
	lrs, mus, drifts := cmapssGridServerLR, []float64{0}, []bool{true}
	switch strategy {
	case aggregate.FedAvg:
		drifts = cmapssGridDrift
	case aggregate.FedAdam:
		lrs = cmapssGridAdamLR
	case aggregate.FedProx:
		mus = cmapssGridMu
	}
	var out []cmapssSettings
	for _, mu := range mus {
		for _, rounds := range cmapssGridRounds {
			for _, steps := range cmapssGridSteps {
				for _, lr := range lrs {
					for _, drift := range drifts {
						out = append(out, cmapssSettings{strategy: strategy, rounds: rounds, steps: steps, serverLR: lr, drift: drift, mu: mu})
					}
				}
			}
		}
	}
	return out
}

// cmapssCandidate is one candidate of the search: central training for epochs, or a
// federated strategy's settings, with its validation RMSE per seed (NaN until run).
type cmapssCandidate struct {
	group  string // "central" or the federated strategy
	epochs int
	fed    cmapssSettings
	rmse   []float64
}

func (c *cmapssCandidate) String() string {
	if c.group == "central" {
		return fmt.Sprintf("%d epochs", c.epochs)
	}
	return c.fed.String()
}

// mean is the mean validation RMSE over the seeds run so far.
func (c *cmapssCandidate) mean() float64 {
	var run []float64
	for _, r := range c.rmse {
		if !math.IsNaN(r) {
			run = append(run, r)
		}
	}
	return mean(run)
}

// edges names the settings of c that sit at an end of the grid's range, where the optimum
// may lie outside it (drift, a yes/no, is never an edge).
func (c *cmapssCandidate) edges() []string {
	var out []string
	at := func(name string, v float64, grid []float64) {
		if len(grid) > 1 && (v == slices.Min(grid) || v == slices.Max(grid)) {
			out = append(out, fmt.Sprintf("%s %g", name, v))
		}
	}
	floats := func(xs []int) []float64 {
		var out []float64
		for _, x := range xs {
			out = append(out, float64(x))
		}
		return out
	}
	if c.group == "central" {
		at("epochs", float64(c.epochs), floats(cmapssGridEpochs))
		return out
	}
	at("rounds", float64(c.fed.rounds), floats(cmapssGridRounds))
	at("steps", float64(c.fed.steps), floats(cmapssGridSteps))
	switch c.group {
	case aggregate.FedAdam:
		at("server_lr", c.fed.serverLR, cmapssGridAdamLR)
	default:
		at("server_lr", c.fed.serverLR, cmapssGridServerLR)
	}
	if c.group == aggregate.FedProx {
		at("μ", c.fed.mu, cmapssGridMu)
	}
	return out
}

// TestSelectCMAPSSHyperparameters chooses the hyperparameters of
// TestFederatedVersusCentralCMAPSS without looking at the test engines: each candidate is
// trained on the training engines less the validation ones (the same factories as the
// comparison) and scored on the validation cuts (cmapssHoldout). It searches in two stages,
// both on validation: every candidate runs on seed 1; then every central candidate and the
// -cmapss-select-keep best of each federated strategy run on seeds 2 to -cmapss-select-seeds,
// and the candidate with the lowest mean validation RMSE over the seeds wins, separately for
// central training (epochs), FedAvg, FedProx (with μ) and FedAdam (rounds × mini-batches,
// server learning rate, drift correction). It prints every candidate's
// scores, the choice, the choices at an edge of the grid and its run time. It runs only with
// -cmapss-select (about 40 minutes at low priority on two shared cores):
//
//	go test -count=1 -timeout 90m -run TestSelectCMAPSSHyperparameters -v ./federation/ -args -cmapss-select
func TestSelectCMAPSSHyperparameters(t *testing.T) {
	if !*cmapssSelect {
		t.Skip("the C-MAPSS hyperparameter search takes tens of minutes; run it with -args -cmapss-select")
	}
	start := time.Now()
	_, val, facs := cmapssSplit(t)
	var seeds []uint64
	for s := range max(1, *cmapssSelectSeeds) {
		seeds = append(seeds, uint64(s+1))
	}
	var train []rul.Engine
	for _, f := range facs {
		train = append(train, f.engines...)
	}
	pre := cmapssShared(t, facs)
	groups := []string{"central", aggregate.FedAvg, aggregate.FedProx, aggregate.FedAdam}
	var cands []*cmapssCandidate
	candidate := func(c *cmapssCandidate) {
		c.rmse = make([]float64, len(seeds))
		for i := range c.rmse {
			c.rmse[i] = math.NaN()
		}
		cands = append(cands, c)
	}
	for _, epochs := range cmapssGridEpochs {
		candidate(&cmapssCandidate{group: "central", epochs: epochs})
	}
	for _, g := range groups[1:] {
		for _, s := range cmapssGrid(g) {
			candidate(&cmapssCandidate{group: g, fed: s})
		}
	}
	// run scores the candidates on seeds[from:to] in parallel subtests; each subtest writes
	// its own element of rmse.
	run := func(name string, cs []*cmapssCandidate, from, to int) time.Duration {
		begin := time.Now()
		t.Run(name, func(t *testing.T) {
			for i, c := range cs {
				for k := from; k < to; k++ {
					t.Run(fmt.Sprintf("%s/%d/seed-%d", c.group, i, seeds[k]), func(t *testing.T) {
						t.Parallel()
						if c.group == "central" {
							c.rmse[k] = scoreRUL(t, fitRUL(t, rulConfig(c.epochs, seeds[k]), nil, train), val).rmse
							return
						}
						c.rmse[k] = scoreRUL(t, federateRUL(t, facs, pre, rulConfig(cmapssEpochs, seeds[k]), c.fed), val).rmse
					})
				}
			}
		})
		return time.Since(begin)
	}

	// Stage 1: every candidate on seed 1.
	stage1 := run("stage-1", cands, 0, 1)
	if t.Failed() {
		return
	}
	// Stage 2: the finalists on the other seeds.
	var finalists []*cmapssCandidate
	for _, g := range groups {
		group := cmapssGroup(cands, g)
		slices.SortStableFunc(group, func(a, b *cmapssCandidate) int { return cmp.Compare(a.rmse[0], b.rmse[0]) })
		if g != "central" {
			group = group[:min(len(group), max(1, *cmapssSelectKeep))]
		}
		finalists = append(finalists, group...)
	}
	stage2 := run("stage-2", finalists, 1, len(seeds))
	if t.Failed() {
		return
	}

	var b strings.Builder
	fmt.Fprintf(&b, "C-MAPSS FD001 hyperparameter selection: validation RMSE (%d cuts of %d held-out training engines); training on the %d remaining engines\n", len(val.engines), len(val.engines)/cmapssValCuts, len(train))
	fmt.Fprintf(&b, "stage 1: %d candidates on seed 1 (%v); stage 2: %d finalists (every central one, the best %d of each federated strategy) on seeds 2-%d (%v); in all %v\n",
		len(cands), stage1.Round(time.Second), len(finalists), *cmapssSelectKeep, len(seeds), stage2.Round(time.Second), time.Since(start).Round(time.Second))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "model\tsettings\tseed 1\tmean of seeds 1-%d\t\n", len(seeds))
	var chosen []string
	for _, g := range groups {
		group := cmapssGroup(cands, g)
		slices.SortStableFunc(group, func(a, b *cmapssCandidate) int { return cmp.Compare(a.rmse[0], b.rmse[0]) })
		var best *cmapssCandidate
		for _, c := range group {
			all := "-"
			if !slices.ContainsFunc(c.rmse, math.IsNaN) {
				all = fmt.Sprintf("%.2f", c.mean())
				if best == nil || c.mean() < best.mean() {
					best = c
				}
			}
			fmt.Fprintf(tw, "%s\t%v\t%.2f\t%s\t\n", g, c, c.rmse[0], all)
		}
		line := fmt.Sprintf("%s: %v (validation RMSE %.2f)", g, best, best.mean())
		if e := best.edges(); len(e) > 0 {
			line += "; at the edge of the grid: " + strings.Join(e, ", ")
		}
		chosen = append(chosen, line)
	}
	_ = tw.Flush()
	fmt.Fprintf(&b, "chosen:\n  %s\n", strings.Join(chosen, "\n  "))
	t.Logf("\n%s", b.String())
}

// cmapssGroup is the candidates of group g, in their order.
func cmapssGroup(cands []*cmapssCandidate, g string) []*cmapssCandidate {
	var out []*cmapssCandidate
	for _, c := range cands {
		if c.group == g {
			out = append(out, c)
		}
	}
	return out
}

// mean is the arithmetic mean of xs.
func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x / float64(len(xs))
	}
	return s
}
