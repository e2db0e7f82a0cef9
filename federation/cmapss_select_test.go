package federation_test

import (
	"flag"
	"fmt"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"

	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/models/rul"
)

var (
	cmapssSelect      = flag.Bool("cmapss-select", false, "run TestSelectCMAPSSHyperparameters, the C-MAPSS hyperparameter search on the validation engines (minutes)")
	cmapssSelectSeeds = flag.Int("cmapss-select-seeds", 3, "seeds (from 1) whose mean validation RMSE TestSelectCMAPSSHyperparameters compares")
)

// The grid TestSelectCMAPSSHyperparameters searches: central training's epochs, and for each
// federated strategy every combination of rounds, mini-batches per round, server learning
// rate and client-drift correction.
var (
	cmapssGridEpochs   = []int{12, 24, 36, 48, 72, 96}
	cmapssGridRounds   = []int{48, 96, 144}
	cmapssGridSteps    = []int{25, 50}
	cmapssGridServerLR = []float64{1, 1.5}
	cmapssGridDrift    = []bool{true, false}
)

// cmapssGrid is every federated setting of the grid.
func cmapssGrid() []cmapssSettings {
	var out []cmapssSettings
	for _, rounds := range cmapssGridRounds {
		for _, steps := range cmapssGridSteps {
			for _, lr := range cmapssGridServerLR {
				for _, drift := range cmapssGridDrift {
					out = append(out, cmapssSettings{rounds: rounds, steps: steps, serverLR: lr, drift: drift})
				}
			}
		}
	}
	return out
}

// TestSelectCMAPSSHyperparameters chooses the hyperparameters of
// TestFederatedVersusCentralCMAPSS without looking at the test engines: each candidate is
// trained on the training engines less the validation ones (the same factories as the
// comparison) and scored on the validation cuts (cmapssHoldout), and the candidate with the
// lowest mean validation RMSE over seeds 1 to -cmapss-select-seeds wins, separately for
// central training (epochs), FedAvg and FedProx (rounds × mini-batches, server learning
// rate, drift correction). It prints the grid and the choice. It runs only with
// -cmapss-select (about 10 minutes on two free cores):
//
//	go test -count=1 -run TestSelectCMAPSSHyperparameters -v ./federation/ -args -cmapss-select
func TestSelectCMAPSSHyperparameters(t *testing.T) {
	if !*cmapssSelect {
		t.Skip("the C-MAPSS hyperparameter search takes minutes; run it with -args -cmapss-select")
	}
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
	strategies := []aggregate.Strategy{{Name: aggregate.FedAvg}, {Name: aggregate.FedProx, ProximalMu: cmapssFedProxMu}}
	grid := cmapssGrid()

	// Validation RMSE per candidate and seed, filled by parallel subtests.
	var mu sync.Mutex
	central := make([][]float64, len(cmapssGridEpochs))
	fed := make([][][]float64, len(strategies))
	for i := range fed {
		fed[i] = make([][]float64, len(grid))
	}
	t.Run("grid", func(t *testing.T) {
		for i, epochs := range cmapssGridEpochs {
			for _, seed := range seeds {
				t.Run(fmt.Sprintf("central/%d-epochs/seed-%d", epochs, seed), func(t *testing.T) {
					t.Parallel()
					s := scoreRUL(t, fitRUL(t, rulConfig(epochs, seed), nil, train), val)
					mu.Lock()
					central[i] = append(central[i], s.rmse)
					mu.Unlock()
				})
			}
		}
		for k, strategy := range strategies {
			for i, g := range grid {
				for _, seed := range seeds {
					t.Run(fmt.Sprintf("%s/%d/seed-%d", strategy.Name, i, seed), func(t *testing.T) {
						t.Parallel()
						s := scoreRUL(t, federateRUL(t, facs, pre, rulConfig(cmapssEpochs, seed), g, strategy), val)
						mu.Lock()
						fed[k][i] = append(fed[k][i], s.rmse)
						mu.Unlock()
					})
				}
			}
		}
	})
	if t.Failed() {
		return
	}

	var b strings.Builder
	fmt.Fprintf(&b, "C-MAPSS FD001 hyperparameter selection: validation RMSE (%d cuts of %d held-out training engines), mean of seeds 1-%d; training on the %d remaining engines\n", len(val.engines), len(val.engines)/cmapssValCuts, len(seeds), len(train))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	best := 0
	for i, epochs := range cmapssGridEpochs {
		if mean(central[i]) < mean(central[best]) {
			best = i
		}
		fmt.Fprintf(tw, "central\t%d epochs\t%.2f\t\n", epochs, mean(central[i]))
	}
	chosen := []string{fmt.Sprintf("central: %d epochs (validation RMSE %.2f)", cmapssGridEpochs[best], mean(central[best]))}
	for k, strategy := range strategies {
		best := 0
		for i, g := range grid {
			if mean(fed[k][i]) < mean(fed[k][best]) {
				best = i
			}
			fmt.Fprintf(tw, "%s\t%v\t%.2f\t\n", strategy.Name, g, mean(fed[k][i]))
		}
		chosen = append(chosen, fmt.Sprintf("%s: %v (validation RMSE %.2f)", strategy.Name, grid[best], mean(fed[k][best])))
	}
	_ = tw.Flush()
	fmt.Fprintf(&b, "chosen:\n  %s\n", strings.Join(chosen, "\n  "))
	t.Logf("\n%s", b.String())
}

// mean is the arithmetic mean of xs.
func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x / float64(len(xs))
	}
	return s
}
