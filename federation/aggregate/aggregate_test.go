package aggregate

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func strategy(t testing.TB, name string, edit func(*Strategy)) *Aggregator {
	t.Helper()
	s := Strategy{Name: name}
	s.SetDefaults()
	if edit != nil {
		edit(&s)
	}
	a, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func randVec(r *rand.Rand, d int, scale float64) []float32 {
	v := make([]float32, d)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return v
}

func TestIdenticalUpdatesGiveThatUpdate(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	global := randVec(r, 257, 1)
	delta := randVec(r, 257, 0.1)
	for _, name := range []string{FedAvg, FedProx, Median, TrimmedMean, Krum, MultiKrum} {
		t.Run(name, func(t *testing.T) {
			a := strategy(t, name, nil)
			var ups []Update
			for i := range 7 {
				ups = append(ups, Update{Participant: fmt.Sprintf("p%d", i), Delta: slices.Clone(delta), Samples: 10 + 13*i})
			}
			res, err := a.Aggregate(global, ups)
			if err != nil {
				t.Fatal(err)
			}
			for i := range delta {
				if res.Step[i] != delta[i] {
					t.Fatalf("step[%d] = %v, want the update's %v", i, res.Step[i], delta[i])
				}
				if want := float32(float64(global[i]) + float64(delta[i])); res.Params[i] != want {
					t.Fatalf("params[%d] = %v, want %v", i, res.Params[i], want)
				}
			}
			if len(res.Rejected) != 0 && name != Krum && name != MultiKrum {
				t.Errorf("rejected %v", res.Rejected)
			}
		})
	}
}

func TestFedAvgWeightsBySamples(t *testing.T) {
	a := strategy(t, FedAvg, nil)
	res, err := a.Aggregate([]float32{1, 1}, []Update{
		{Participant: "a", Delta: []float32{4, 0}, Samples: 1},
		{Participant: "b", Delta: []float32{0, 8}, Samples: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{1 + 1, 1 + 6}; !slices.Equal(res.Params, want) {
		t.Errorf("params %v, want %v (weights 1/4 and 3/4)", res.Params, want)
	}
	// Server learning rate scales the step.
	a = strategy(t, FedAvg, func(s *Strategy) { s.ServerLR = 0.5 })
	res, _ = a.Aggregate([]float32{0}, []Update{{Participant: "a", Delta: []float32{2}, Samples: 5}})
	if res.Params[0] != 1 {
		t.Errorf("server_lr 0.5: params %v, want [1]", res.Params)
	}
}

// byzantineRound builds n updates around a true mean, the first nByz of them attacked.
func byzantineRound(seed uint64, n, nByz, d int, attack string) (honestMean []float32, ups []Update) {
	r := rand.New(rand.NewPCG(seed, 7))
	mu := randVec(r, d, 1)
	acc := make([]float64, d)
	for i := range n {
		v := randVec(r, d, 0.1)
		for k := range v {
			v[k] += mu[k]
		}
		if i >= nByz {
			for k, x := range v {
				acc[k] += float64(x)
			}
		} else {
			switch attack {
			case "scaled":
				Scale(v, 10)
			case "sign_flip":
				Scale(v, -1)
			case "sign_flip_scaled":
				Scale(v, -5)
			}
		}
		// Byzantine participants also claim many samples, to pull FedAvg further.
		samples := 100
		if i < nByz {
			samples = 300
		}
		ups = append(ups, Update{Participant: fmt.Sprintf("p%02d", i), Delta: v, Samples: samples})
	}
	honestMean = make([]float32, d)
	for k := range acc {
		honestMean[k] = float32(acc[k] / float64(n-nByz))
	}
	return honestMean, ups
}

func relDist(a, b []float32) float64 {
	diff := make([]float32, len(a))
	for i := range a {
		diff[i] = a[i] - b[i]
	}
	return Norm(diff) / Norm(b)
}

func TestRobustRulesContainByzantine(t *testing.T) {
	const n, nByz, d = 10, 3, 500
	neg := -0.1
	robust := []struct {
		name string
		edit func(*Strategy)
	}{
		{Median, nil},
		{TrimmedMean, func(s *Strategy) { s.Trim = 0.3 }},
		{Krum, func(s *Strategy) { s.Byzantine = 3 }},
		{MultiKrum, func(s *Strategy) { s.Byzantine = 3 }},
		{FedAvg + "+reject", func(s *Strategy) { s.Reject.NormRatio = 3; s.Reject.MinCosine = &neg }},
	}
	for _, attack := range []string{"scaled", "sign_flip", "sign_flip_scaled"} {
		honest, ups := byzantineRound(3, n, nByz, d, attack)
		zero := make([]float32, d)
		avg, err := strategy(t, FedAvg, nil).Aggregate(zero, ups)
		if err != nil {
			t.Fatal(err)
		}
		// FedAvg is dragged away: this is what the robust rules must prevent.
		if dist := relDist(avg.Params, honest); dist < 0.5 {
			t.Errorf("%s: FedAvg is only %.3f from the honest mean; the attack is too weak to test anything", attack, dist)
		}
		for _, rc := range robust {
			t.Run(attack+"/"+rc.name, func(t *testing.T) {
				name, _, _ := strings.Cut(rc.name, "+")
				res, err := strategy(t, name, rc.edit).Aggregate(zero, ups)
				if err != nil {
					t.Fatal(err)
				}
				if dist := relDist(res.Params, honest); dist > 0.12 {
					t.Errorf("aggregate is %.3f (relative) from the honest mean; want ≤ 0.12 (FedAvg: %.3f)", dist, relDist(avg.Params, honest))
				}
				for _, p := range res.Used {
					if p < fmt.Sprintf("p%02d", nByz) && name != Median && name != TrimmedMean {
						t.Errorf("Byzantine %s was used", p)
					}
				}
			})
		}
	}
}

func TestDeterministicAndOrderIndependent(t *testing.T) {
	_, ups := byzantineRound(5, 9, 2, 300, "scaled")
	global := randVec(rand.New(rand.NewPCG(9, 9)), 300, 1)
	for _, name := range Strategies {
		a1, a2 := strategy(t, name, nil), strategy(t, name, nil)
		shuffled := slices.Clone(ups)
		rand.New(rand.NewPCG(1, 1)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		r1, err1 := a1.Aggregate(global, ups)
		r2, err2 := a2.Aggregate(global, shuffled)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v %v", name, err1, err2)
		}
		if !slices.Equal(r1.Params, r2.Params) || !slices.Equal(r1.Used, r2.Used) || !slices.Equal(r1.Rejected, r2.Rejected) {
			t.Errorf("%s: result depends on the order of the updates", name)
		}
	}
}

func TestRejectionsAreRecorded(t *testing.T) {
	nan := float32(math.NaN())
	ups := []Update{
		{Participant: "ok1", Delta: []float32{1, 1}, Samples: 1},
		{Participant: "ok2", Delta: []float32{1.1, 0.9}, Samples: 1},
		{Participant: "ok3", Delta: []float32{0.9, 1.1}, Samples: 1},
		{Participant: "short", Delta: []float32{1}, Samples: 1},
		{Participant: "nan", Delta: []float32{1, nan}, Samples: 1},
		{Participant: "nosamples", Delta: []float32{1, 1}, Samples: 0},
		{Participant: "dup", Delta: []float32{1, 1}, Samples: 1},
		{Participant: "dup", Delta: []float32{1, 1}, Samples: 1},
		{Participant: "huge", Delta: []float32{50, 50}, Samples: 1},
		{Participant: "flipped", Delta: []float32{-1, -1}, Samples: 1},
	}
	cos := 0.0
	a := strategy(t, FedAvg, func(s *Strategy) { s.Reject.NormRatio = 3; s.Reject.MinCosine = &cos })
	res, err := a.Aggregate([]float32{0, 0}, ups)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for _, r := range res.Rejected {
		reasons[r.Participant] += r.Reason + ";"
	}
	for p, want := range map[string]string{
		"short": "has 1 parameters", "nan": "parameter 1 is NaN", "nosamples": "sample count 0",
		"dup": "2 updates from the same participant", "huge": "× the median norm", "flipped": "cosine -1.0000",
	} {
		if !strings.Contains(reasons[p], want) {
			t.Errorf("%s: reason %q, want it to contain %q", p, reasons[p], want)
		}
	}
	if !slices.Equal(res.Used, []string{"ok1", "ok2", "ok3"}) {
		t.Errorf("used %v", res.Used)
	}
	if len(res.Rejected) != 7 {
		t.Errorf("%d rejections, want 7: %v", len(res.Rejected), res.Rejected)
	}
}

func TestTooFewUpdates(t *testing.T) {
	a := strategy(t, Krum, func(s *Strategy) { s.Byzantine = 2 })
	_, ups := byzantineRound(1, 6, 0, 10, "")
	_, err := a.Aggregate(make([]float32, 10), ups)
	if !errors.Is(err, ErrTooFewUpdates) || !strings.Contains(err.Error(), "at least 7") {
		t.Errorf("krum f=2 with 6 updates: %v", err)
	}
	a = strategy(t, FedAvg, nil)
	_, err = a.Aggregate([]float32{0}, []Update{{Participant: "x", Delta: []float32{1, 2}, Samples: 1}})
	if !errors.Is(err, ErrTooFewUpdates) {
		t.Errorf("no valid update: %v", err)
	}
}

func TestClipNorm(t *testing.T) {
	a := strategy(t, FedAvg, func(s *Strategy) { s.ClipNorm = 5 })
	big := []float32{30, 40}
	res, err := a.Aggregate([]float32{0, 0}, []Update{
		{Participant: "big", Delta: big, Samples: 1},
		{Participant: "small", Delta: []float32{3, 4}, Samples: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Params, []float32{3, 4}) || !slices.Equal(res.Clipped, []string{"big"}) {
		t.Errorf("params %v clipped %v; want [3 4] and [big]", res.Params, res.Clipped)
	}
	if big[0] != 30 {
		t.Error("clipping modified the caller's update")
	}
}

func TestAdaptiveOptimizers(t *testing.T) {
	// One step by hand (Reddi et al. 2021, Algorithm 2): m = (1−β1)Δ, v = β2τ² + (1−β2)Δ²
	// for Adam, v = τ² − (1−β2)Δ²·sign(τ² − Δ²) for Yogi; x += η m/(√v + τ).
	const b1, b2, tau, lr, d = 0.9, 0.99, 1e-3, 0.1, 0.5
	m := (1 - b1) * d
	vAdam := b2*tau*tau + (1-b2)*d*d
	vYogi := tau*tau + (1-b2)*d*d
	for name, v := range map[string]float64{FedAdam: vAdam, FedYogi: vYogi} {
		a := strategy(t, name, func(s *Strategy) { s.ServerLR = lr })
		res, err := a.Aggregate([]float32{1}, []Update{{Participant: "a", Delta: []float32{d}, Samples: 1}})
		if err != nil {
			t.Fatal(err)
		}
		want := 1 + lr*m/(math.Sqrt(v)+tau)
		if math.Abs(float64(res.Params[0])-want) > 1e-6 {
			t.Errorf("%s: %v, want %v", name, res.Params[0], want)
		}
	}
	// Both converge on a federated quadratic where clients step towards their own optimum.
	for _, name := range []string{FedAdam, FedYogi} {
		r := rand.New(rand.NewPCG(4, 4))
		target := randVec(r, 50, 1)
		x := make([]float32, 50)
		a := strategy(t, name, func(s *Strategy) { s.ServerLR = 0.05 })
		start := relDist(x, target)
		for range 300 {
			var ups []Update
			for c := range 5 {
				dl := make([]float32, 50)
				for i := range dl {
					dl[i] = 0.5*(target[i]-x[i]) + float32(r.NormFloat64()*0.01)
				}
				ups = append(ups, Update{Participant: fmt.Sprint(c), Delta: dl, Samples: 1})
			}
			res, err := a.Aggregate(x, ups)
			if err != nil {
				t.Fatal(err)
			}
			x = res.Params
		}
		if end := relDist(x, target); end > 0.05*start {
			t.Errorf("%s: distance to optimum %.4f after 300 rounds (start %.4f)", name, end, start)
		}
	}
}

// TestServerMomentum: FedAvgM's velocity by hand over two rounds (m = step, then
// β·m + step; x += η·m), its state restored into a new aggregator continues identically,
// and it is refused with fedadam (its own momentum) and out of [0, 1).
func TestServerMomentum(t *testing.T) {
	const beta, lr = 0.9, 0.5
	for _, name := range []string{FedAvg, FedProx, TrimmedMean} {
		a := strategy(t, name, func(s *Strategy) { s.ServerLR, s.ServerMomentum = lr, beta })
		x := []float32{1}
		want, m := 1.0, 0.0
		for round, d := range []float32{0.5, -0.2, 0.1} {
			res, err := a.Aggregate(x, []Update{{Participant: "a", Delta: []float32{d}, Samples: 1}})
			if err != nil {
				t.Fatal(err)
			}
			m = beta*m + float64(d)
			want += lr * m
			if math.Abs(float64(res.Params[0])-want) > 1e-6 {
				t.Errorf("%s round %d: %v, want %v", name, round, res.Params[0], want)
			}
			x = res.Params
			if round == 1 { // continue on a restored copy
				b := strategy(t, name, func(s *Strategy) { s.ServerLR, s.ServerMomentum = lr, beta })
				if err := b.Restore(a.State()); err != nil {
					t.Fatal(err)
				}
				a = b
			}
		}
	}
	if err := strategy(t, FedAvg, func(s *Strategy) { s.ServerMomentum = 0.9 }).Restore(OptimizerState{M: []float64{1}, V: []float64{1}}); err == nil {
		t.Error("server momentum accepted second moments")
	}
	for _, bad := range []Strategy{{Name: FedAdam, ServerMomentum: 0.9}, {Name: FedAvg, ServerMomentum: 1}, {Name: FedAvg, ServerMomentum: -0.1}} {
		bad.SetDefaults()
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "server_momentum") {
			t.Errorf("%s with server_momentum %v: %v", bad.Name, bad.ServerMomentum, err)
		}
	}
}

func TestOptimizerStateRestore(t *testing.T) {
	_, ups := byzantineRound(2, 5, 0, 20, "")
	x := make([]float32, 20)
	a := strategy(t, FedYogi, nil)
	for range 3 {
		res, _ := a.Aggregate(x, ups)
		x = res.Params
	}
	b := strategy(t, FedYogi, nil)
	if err := b.Restore(a.State()); err != nil {
		t.Fatal(err)
	}
	ra, _ := a.Aggregate(x, ups)
	rb, _ := b.Aggregate(x, ups)
	if !slices.Equal(ra.Params, rb.Params) {
		t.Error("restored optimizer diverges from the original")
	}
	if err := b.Restore(OptimizerState{M: []float64{1}, V: []float64{-1}}); err == nil {
		t.Error("negative second moment accepted")
	}
	if err := strategy(t, FedAvg, nil).Restore(OptimizerState{M: []float64{1}, V: []float64{1}}); err == nil {
		t.Error("fedavg accepted optimizer state")
	}
}

// A round whose new model would overflow float32 has no result (ErrNotFinite) and leaves
// the server optimizer as it was: the next round gives the same model and state as on an
// aggregator that never saw it. Undo takes back a successful round's step the same way.
func TestNotFiniteModelLeavesTheOptimizer(t *testing.T) {
	const d = 8
	global := make([]float32, d)
	for i := range global {
		global[i] = math.MaxFloat32 * 0.75
	}
	finite := []Update{{Participant: "a", Delta: make([]float32, d), Samples: 1}}
	finite[0].Delta[0] = -1e37
	huge := []Update{{Participant: "a", Delta: slices.Repeat([]float32{math.MaxFloat32 / 2}, d), Samples: 1}}
	for _, tc := range []struct {
		name      string
		edit      func(*Strategy)
		overflows bool // FedAdam's and FedYogi's steps are normalised: about lr at most
	}{
		{FedAvg, nil, true},
		{FedAvg, func(s *Strategy) { s.ServerMomentum = 0.9 }, true},
		{FedAdam, nil, false},
		{FedYogi, nil, false},
	} {
		t.Run(fmt.Sprintf("%s/momentum=%v", tc.name, tc.edit != nil), func(t *testing.T) {
			a, ref := strategy(t, tc.name, tc.edit), strategy(t, tc.name, tc.edit)
			for _, x := range []*Aggregator{a, ref} {
				if _, err := x.Aggregate(global, finite); err != nil {
					t.Fatal(err)
				}
			}
			before := a.State()
			if tc.overflows {
				res, err := a.Aggregate(global, huge)
				if !errors.Is(err, ErrNotFinite) || res.Params != nil || res.Used != nil {
					t.Fatalf("an overflowing round: %v, params %v, used %v; want ErrNotFinite and no model", err, res.Params, res.Used)
				}
				if got := a.State(); !slices.Equal(got.M, before.M) || !slices.Equal(got.V, before.V) {
					t.Fatal("the overflowing round changed the optimizer state")
				}
			}
			// A successful step taken back is as if it never happened, once.
			if _, err := a.Aggregate(global, finite); err != nil {
				t.Fatal(err)
			}
			a.Undo()
			a.Undo()
			if got := a.State(); !slices.Equal(got.M, before.M) || !slices.Equal(got.V, before.V) {
				t.Fatal("Undo did not restore the state before the step")
			}
			ra, err := a.Aggregate(global, finite)
			if err != nil {
				t.Fatal(err)
			}
			rr, _ := ref.Aggregate(global, finite)
			if !slices.Equal(ra.Params, rr.Params) || !slices.Equal(a.State().M, ref.State().M) {
				t.Fatalf("after the refused round and an undone one: params %v, want %v", ra.Params[:2], rr.Params[:2])
			}
		})
	}
}

// The rules are computed on as many goroutines as GOMAXPROCS allows, each taking a range
// of coordinates or updates: the result, rejections and server state after two rounds are
// the same bits on one goroutine as on several, for every rule, with clipping, outlier
// rejection and a malformed update in the round.
func TestResultDoesNotDependOnGOMAXPROCS(t *testing.T) {
	const n, d = 11, 3*minWork + 5 // ranges of uneven length
	_, ups := byzantineRound(3, n, 3, d, "sign_flip_scaled")
	bad := slices.Clone(ups[4].Delta)
	bad[d-2] = float32(math.NaN())
	ups = append(ups, Update{Participant: "nan", Delta: bad, Samples: 1})
	global := randVec(rand.New(rand.NewPCG(9, 9)), d, 1)
	cos := -0.5
	run := func(name string, procs int) (out []Result) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		a := strategy(t, name, func(s *Strategy) {
			s.Byzantine, s.ClipNorm, s.ServerMomentum = 2, 60, 0.5
			if name == FedAdam || name == FedYogi {
				s.ServerMomentum = 0
			}
			s.Reject.NormRatio, s.Reject.MinCosine = 3, &cos
		})
		g := global
		for range 2 {
			res, err := a.Aggregate(g, ups)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			out, g = append(out, res), res.Params
		}
		return out
	}
	for _, name := range []string{FedAvg, FedProx, FedAdam, FedYogi, Median, TrimmedMean, Krum, MultiKrum} {
		one, four := run(name, 1), run(name, 4)
		if len(one[0].Rejected) == 0 || len(one[0].Clipped) == 0 {
			t.Fatalf("%s: the round rejected %v and clipped %v; the test needs both", name, one[0].Rejected, one[0].Clipped)
		}
		for r := range one {
			if !slices.Equal(one[r].Params, four[r].Params) || !slices.Equal(one[r].Step, four[r].Step) ||
				!slices.Equal(one[r].Used, four[r].Used) || !slices.Equal(one[r].Clipped, four[r].Clipped) ||
				!slices.Equal(one[r].Rejected, four[r].Rejected) {
				t.Fatalf("%s round %d: one goroutine and four disagree", name, r+1)
			}
		}
	}
}

func BenchmarkAggregate(b *testing.B) {
	const n, d = 10, 100_000
	_, ups := byzantineRound(1, n, 0, d, "")
	global := make([]float32, d)
	for _, name := range []string{FedAvg, FedAdam, Median, TrimmedMean, Krum, MultiKrum} {
		b.Run(name, func(b *testing.B) {
			a := strategy(b, name, func(s *Strategy) { s.Byzantine = 3 })
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Aggregate(global, ups); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*d)*float64(b.N)/b.Elapsed().Seconds(), "params/s")
		})
	}
}

// TestSumBlocksAddsInOrder: the weighted sums add each update's term in the updates'
// order, one at a time in float64, whatever the number of updates (sumBlocks adds four at
// a time, then the rest) and the length: bit for bit what the plain loop gives. Each
// coordinate has a pair of large terms that cancel exactly, so the small terms added
// between them are rounded to the large one's precision: another order of addition gives
// another sum.
func TestSumBlocksAddsInOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 3, 4, 5, 8, 9, 11} {
		for _, d := range []int{1, 1023, 1025, 5000} {
			ups := make([]Update, n)
			for j := range ups {
				ups[j] = Update{Participant: fmt.Sprint(j), Delta: make([]float32, d), Samples: 7}
				for i := range ups[j].Delta {
					ups[j].Delta[i] = float32(r.NormFloat64())
				}
			}
			if n >= 2 {
				for i := range d {
					a, b := r.IntN(n), r.IntN(n-1)
					if b >= a {
						b++
					}
					big := float32(1+r.Float64()) * (1 << 40)
					ups[a].Delta[i], ups[b].Delta[i] = big, -big
				}
			}
			weight := func(u Update) float64 { return float64(u.Samples) / 3.7 }
			got := make([]float32, d)
			sumBlocks(got, ups, weight, 1.3)
			for i := range got {
				var s float64
				for _, u := range ups {
					s += weight(u) * float64(u.Delta[i])
				}
				if want := float32(s / 1.3); math.Float32bits(got[i]) != math.Float32bits(want) {
					t.Fatalf("%d updates of %d: sum %d is %v, the plain loop's %v", n, d, i, got[i], want)
				}
			}
		}
	}
}

// TestCombineFollowsTheRule: side values (a metric per update) are combined as the rule
// combines updates: five updates, one an outlier of 100 claiming most of the samples.
func TestCombineFollowsTheRule(t *testing.T) {
	ups := []Update{
		{Participant: "a", Delta: []float32{1, 10}, Samples: 1},
		{Participant: "b", Delta: []float32{2, 20}, Samples: 1},
		{Participant: "c", Delta: []float32{3, 30}, Samples: 1},
		{Participant: "d", Delta: []float32{4, 40}, Samples: 1},
		{Participant: "e", Delta: []float32{100, 1000}, Samples: 96},
	}
	for _, c := range []struct {
		s    Strategy
		want []float32
	}{
		{Strategy{Name: FedAvg}, []float32{(1 + 2 + 3 + 4 + 96*100) / 100.0, (10 + 20 + 30 + 40 + 96*1000) / 100.0}},
		{Strategy{Name: Median}, []float32{3, 30}},
		{Strategy{Name: TrimmedMean, Trim: 0.2}, []float32{3, 30}},    // 2, 3, 4 after one cut from each end
		{Strategy{Name: MultiKrum, Byzantine: 1}, []float32{22, 220}}, // the plain mean of what it was given
	} {
		if got := c.s.Combine(ups); !slices.EqualFunc(got, c.want, func(a, b float32) bool { return math.Abs(float64(a-b)) < 1e-4 }) {
			t.Errorf("%s: %v; want %v", c.s.Name, got, c.want)
		}
	}
	if got := (Strategy{Name: Median}).Combine(nil); got != nil {
		t.Errorf("no updates: %v; want nil", got)
	}
}
