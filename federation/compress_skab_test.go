package federation_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/federation/compress"
	"github.com/millwright-io/millwright/internal/race"
	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/autoencoder"
)

// codecRun is one SKAB federation's outcome with one codec offered: the final model's score,
// the update bytes the hub accepted in each round (all participants together) and how many
// rounds the aggregation rule used each factory's update in.
type codecRun struct {
	score skabScore
	bytes []int
	used  map[string]int
}

func (r codecRun) bytesPerRound() float64 {
	s := 0
	for _, b := range r.bytes {
		s += b
	}
	return float64(s) / float64(len(r.bytes))
}

// skabInt8Strategies selects the aggregation strategies TestInt8CompressionKeepsSKABF1
// compares int8 with codec none under (empty: every rule of int8Splits, under -race or
// -short int8Reduced).
var skabInt8Strategies = flag.String("skab-int8-strategies", "",
	"comma-separated aggregation strategies TestInt8CompressionKeepsSKABF1 runs, of fedavg, median, trimmed_mean, krum and multi_krum (default all; under -race or -short fedavg,median,krum)")

// int8Splits are the rules TestInt8CompressionKeepsSKABF1 measures, by the SKAB split
// they run on: the 3 factories of skabSplit where the rule runs with 3 updates, and the 5
// of skabSplit5 for the rules that need more, or that only trim with more (trimmed_mean).
var int8Splits = []struct {
	factories int
	rules     []string
}{
	{3, []string{aggregate.FedAvg, aggregate.Median, aggregate.TrimmedMean}},
	{5, []string{aggregate.Krum, aggregate.MultiKrum, aggregate.TrimmedMean}},
}

// int8Reduced are the rules it measures by default under -race or -short: two on the
// 3-factory split and krum on the 5-factory one.
var int8Reduced = []string{aggregate.FedAvg, aggregate.Median, aggregate.Krum}

// TestInt8CompressionKeepsSKABF1 measures issue 5's compression goal on real data: int8
// updates at ≤ 0.3× the bytes of float32 with ≤ 0.01 F1 loss, under FedAvg and under every
// robust rule. For each strategy it runs the federation of TestFederatedVersusCentralSKAB
// (same model, seeds, rounds and protocol) twice per seed, with the hub offering only codec
// none and only codec int8, and compares the final models' F1 and median normal-row
// reconstruction error, and the update bytes per round (see compareInt8). The F1 bound is
// on the mean over the seeds run; a seed that misses it is logged. Under this protocol F1
// separates models weakly (see TestFederatedVersusCentralSKAB), so the error change is
// reported too. int8's stochastic rounding is seeded from crypto/rand by each participant,
// so the int8 numbers vary from run to run; codec none's do not.
//
// fedavg, median and trimmed_mean run on TestFederatedVersusCentralSKAB's split, 3 factories
// by experiment folder, where they reduce as follows. median is the middle value of every
// coordinate. trimmed_mean cuts ⌊trim·3⌋ values from each end: at the default trim 0.2
// that is none, so it is the unweighted mean (FedAvg weights by sample count); at trim ≥ 1/3
// it cuts one and is exactly the median, so only the default is measured there.
//
// trimmed_mean runs on the 5 factories of skabSplit5 too, where the default trim 0.2 cuts
// one value from each end of every coordinate and averages the middle three. krum and
// multi_krum need n ≥ 2f+3 updates and f is at least 1 (byzantine 0 reads as unset
// and defaults to 1), so they run on the 5 factories of skabSplit5, at the default f = 1:
// krum uses the one update with the smallest sum of squared distances to its 2 nearest
// others, multi_krum averages the n − f = 4 best by that score. The test fails if a rule
// needs more updates than its split has.
func TestInt8CompressionKeepsSKABF1(t *testing.T) {
	const window = 5
	reduced := testing.Short() || race.Enabled
	var known []string
	for _, sp := range int8Splits {
		for _, r := range sp.rules {
			if !slices.Contains(known, r) {
				known = append(known, r)
			}
		}
	}
	names := *skabInt8Strategies
	if names == "" {
		names = strings.Join(known, ",")
		if reduced {
			names = strings.Join(int8Reduced, ",")
		}
	}
	var run []string
	for name := range strings.SplitSeq(names, ",") {
		if name = strings.TrimSpace(name); !slices.Contains(known, name) {
			t.Fatalf("-skab-int8-strategies=%q: %q is not measured here; expected a comma-separated list of %q", names, name, known)
		}
		run = append(run, name)
	}

	b := int8Budget{window: window, epochs: 30, localEpochs: 2, rounds: 15}
	for s := range max(1, *skabSeeds) {
		b.seeds = append(b.seeds, uint64(s+1))
	}
	if reduced { // the SKAB comparison's reduced budget
		b.seeds, b.epochs, b.rounds = b.seeds[:1], 16, 8
	}
	files, facs3 := skabSplit(t, window)
	_, facs5 := skabSplit5(t, window)
	b.score = skabScorer(t, files, window)
	splits := map[int][]skabFactory{3: facs3, 5: facs5}
	for _, sp := range int8Splits {
		facs := splits[sp.factories]
		if len(facs) != sp.factories {
			t.Fatalf("the %d-factory SKAB split has %d factories", sp.factories, len(facs))
		}
		var rows []string
		for _, f := range facs {
			rows = append(rows, fmt.Sprintf("%s %d", f.name, f.train.Rows))
		}
		t.Logf("%d-factory split (%s), training windows: %s", sp.factories, strings.Join(sp.rules, ", "), strings.Join(rows, ", "))
	}

	// The round's bytes are whole signed update messages; the fixed envelope (names, nonce,
	// signature, sample count) weighs more against int8's smaller payload.
	ae, err := autoencoder.New(skabAE(window, b.epochs, b.seeds[0]))
	if err != nil {
		t.Fatal(err)
	}
	b.params = ae.Architecture().Params
	payload := func(c compress.Codec) int {
		t.Helper()
		c.SetDefaults()
		p, err := compress.Encode(c, make([]float32, b.params), rand.New(rand.NewPCG(1, 2)))
		if err != nil {
			t.Fatal(err)
		}
		return len(p)
	}
	b.payloadNone, b.payloadInt8 = payload(compress.Codec{Kind: compress.None}), payload(compress.Codec{Kind: compress.Int8})

	for _, sp := range int8Splits {
		facs := splits[sp.factories]
		for _, name := range sp.rules {
			if !slices.Contains(run, name) {
				continue
			}
			t.Run(fmt.Sprintf("%s_%d_factories", name, sp.factories), func(t *testing.T) { b.compareInt8(t, facs, aggregate.Strategy{Name: name}) })
		}
	}
}

// int8Budget is how TestInt8CompressionKeepsSKABF1 trains and scores every comparison.
type int8Budget struct {
	window, epochs, localEpochs, rounds int
	seeds                               []uint64
	score                               func(models.Detector) skabScore
	// params is the autoencoder's parameter count; payloadNone and payloadInt8 are the
	// encoded bytes of that many parameters under each codec.
	params, payloadNone, payloadInt8 int
}

// compareInt8 runs the federation of facs under strategy with the hub offering only codec
// none and only codec int8, once each per seed, and checks issue 5's bounds: int8's update
// bytes per round ≤ 0.3× codec none's on every seed, and its F1 loss ≤ 0.01 on average over
// the seeds (a seed above it is logged).
//
// Bytes per round compare like with like only if every round collected an update from every
// factory: the round's bytes are those of the updates the hub accepted, before the rule
// chose among them. So every round must aggregate, and every factory's update must be
// either used by the rule or set aside by its selection, with the rule using as many as it
// should: all of them for fedavg, median and trimmed_mean, 1 for krum, n − f for
// multi_krum. How often the rule used each factory is logged for the selecting rules.
func (b int8Budget) compareInt8(t *testing.T, facs []skabFactory, strategy aggregate.Strategy) {
	const (
		maxRatio    = 0.3
		maxMeanLoss = 0.01 // over the seeds run
	)
	s := strategy
	s.SetDefaults()
	if s.MinUpdates() > len(facs) {
		t.Fatalf("%s (byzantine %d) needs %d updates a round and its SKAB split has %d factories; expected it to run", s.Name, s.Byzantine, s.MinUpdates(), len(facs))
	}
	uses := len(facs)
	switch s.Name {
	case aggregate.Krum:
		uses = 1
	case aggregate.MultiKrum:
		uses = len(facs) - s.Byzantine
	}
	factory := map[string]string{} // participant name -> factory
	for i, f := range facs {
		factory[gwName(i)] = f.name
	}
	federate := func(seed uint64, codec compress.Codec) codecRun {
		t.Helper()
		final, _, reports := federateWith(t, facs, skabAE(b.window, b.epochs, seed), b.localEpochs, b.rounds, strategy,
			func(fc *federation.FederationConfig) { fc.Codecs = []compress.Codec{codec} })
		r := codecRun{score: b.score(final), used: map[string]int{}}
		for _, rep := range reports {
			collected := map[string]bool{}
			for _, p := range rep.Used {
				collected[p] = true
				r.used[factory[p]]++
			}
			setAside := 0
			for _, rj := range rep.Rejected {
				if rj.Reason == federation.RejectAggregate {
					collected[rj.Participant] = true
					setAside++
				}
			}
			if rep.Outcome != "aggregated" || len(collected) != len(facs) || len(rep.Used)+setAside != len(facs) || len(rep.Used) != uses {
				t.Fatalf("seed %d, codec %s, round %d: %s (%s) with %d updates used and %d set aside by the rule, of %d factories; expected every round aggregated from all, %d of them used",
					seed, codec.Kind, rep.Round, rep.Outcome, rep.Reason, len(rep.Used), setAside, len(facs), uses)
			}
			r.bytes = append(r.bytes, rep.Bytes)
		}
		return r
	}
	var none, int8s []codecRun
	for _, seed := range b.seeds {
		none = append(none, federate(seed, compress.Codec{Kind: compress.None}))
		int8s = append(int8s, federate(seed, compress.Codec{Kind: compress.Int8}))
	}
	t.Logf("\n%s", codecTable(strategy.Name, len(facs), b.seeds, none, int8s, b.rounds, b.localEpochs))
	t.Logf("%d parameters; per update: none %.0f bytes (payload %d), int8 %.0f bytes (payload %d); payload ratio %.3f",
		b.params, none[0].bytesPerRound()/float64(len(facs)), b.payloadNone, int8s[0].bytesPerRound()/float64(len(facs)), b.payloadInt8,
		float64(b.payloadInt8)/float64(b.payloadNone))
	if uses < len(facs) {
		t.Logf("%s used %d of %d updates a round; rounds each factory's update was used, over %d seeds × %d rounds: %s",
			strategy.Name, uses, len(facs), len(b.seeds), b.rounds, usedCounts(facs, none, int8s))
	}

	loss, errDiff := 0.0, 0.0
	for i, seed := range b.seeds {
		n, q := none[i], int8s[i]
		if ratio := q.bytesPerRound() / n.bytesPerRound(); !(ratio <= maxRatio) {
			t.Errorf("seed %d: int8 sends %.0f bytes per round, %.3f× codec none's %.0f; expected ≤ %g×", seed, q.bytesPerRound(), ratio, n.bytesPerRound(), maxRatio)
		}
		l := n.score.c.F1() - q.score.c.F1()
		if !(l <= maxMeanLoss) {
			t.Logf("seed %d: int8 F1 %.3f is %.3f below codec none's %.3f, more than %g on this seed", seed, q.score.c.F1(), l, n.score.c.F1(), maxMeanLoss)
		}
		loss += l / float64(len(b.seeds))
		errDiff += (q.score.err - n.score.err) / float64(len(b.seeds))
	}
	if !(loss <= maxMeanLoss) {
		t.Errorf("%s: int8 loses %.4f F1 against codec none on average over %d seeds; expected ≤ %g", strategy.Name, loss, len(b.seeds), maxMeanLoss)
	}
	t.Logf("%s, mean over %d seeds: F1 loss (none − int8) %.4f, median normal-row error change (int8 − none) %+.4f", strategy.Name, len(b.seeds), loss, errDiff)
}

// usedCounts lists, per factory, the rounds the rule used its update in, summed over the
// seeds, with codec none and with int8.
func usedCounts(facs []skabFactory, none, int8s []codecRun) string {
	sum := func(runs []codecRun, name string) int {
		n := 0
		for _, r := range runs {
			n += r.used[name]
		}
		return n
	}
	var parts []string
	for _, f := range facs {
		parts = append(parts, fmt.Sprintf("%s %d | %d", f.name, sum(none, f.name), sum(int8s, f.name)))
	}
	return strings.Join(parts, ", ") + " (none | int8)"
}

// codecTable prints, per seed and as the mean over the seeds, each codec's F1, median
// normal-row error and update bytes per round, and int8's differences from codec none.
func codecTable(strategy string, factories int, seeds []uint64, none, int8s []codecRun, rounds, localEpochs int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SKAB %s, %d factories, %d rounds × %d local epochs, hub offering one codec\n", strategy, factories, rounds, localEpochs)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "seed\tF1 none\tF1 int8\tF1 loss (none − int8)\terror none\terror int8\terror change\tbytes/round none\tbytes/round int8\tratio\t")
	for i, seed := range seeds {
		n, q := none[i], int8s[i]
		fmt.Fprintf(tw, "%d\t%.3f\t%.3f\t%+.4f\t%.4f\t%.4f\t%+.4f\t%.0f\t%.0f\t%.3f\t\n", seed, n.score.c.F1(), q.score.c.F1(), n.score.c.F1()-q.score.c.F1(),
			n.score.err, q.score.err, q.score.err-n.score.err, n.bytesPerRound(), q.bytesPerRound(), q.bytesPerRound()/n.bytesPerRound())
	}
	if len(seeds) > 1 {
		var sn, sq []skabScore
		bn, bq := 0.0, 0.0
		for i := range seeds {
			sn, sq = append(sn, none[i].score), append(sq, int8s[i].score)
			bn, bq = bn+none[i].bytesPerRound()/float64(len(seeds)), bq+int8s[i].bytesPerRound()/float64(len(seeds))
		}
		fmt.Fprintf(tw, "mean\t%.4f\t%.4f\t%+.4f\t%.4f\t%.4f\t%+.4f\t%.0f\t%.0f\t%.3f\t\n", meanF1(sn), meanF1(sq), meanF1(sn)-meanF1(sq),
			meanErr(sn), meanErr(sq), meanErr(sq)-meanErr(sn), bn, bq, bq/bn)
	}
	_ = tw.Flush()
	return b.String()
}
