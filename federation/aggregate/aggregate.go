// Package aggregate turns one round's model updates into the next global model.
//
// Threat model: the hub trusts nothing about an update except that the round protocol has
// authenticated its sender. Every update is checked (length, finite values, a positive
// sample count, one update per participant) and may be clipped to a norm, rejected as an
// outlier against the robust center, or out-voted by a robust rule (median, trimmed mean,
// Krum), which bound the influence of up to f Byzantine participants. Nothing here is
// private: the rules need every update in the clear (see package secagg and dp for what
// hides them). Reported sample counts are trusted by FedAvg weighting; a liar inflating
// its count gains weight, so robust rules ignore counts. Every rejection is returned as a
// record with the participant and the reason, never dropped silently.
package aggregate

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/millwright-io/millwright/internal/f32le"
)

// Update is one participant's contribution to a round: the difference between its locally
// trained parameters and the round's global parameters (a delta, in the global model's
// flat layout), with the number of samples it trained on.
type Update struct {
	Participant string
	Delta       []float32
	Samples     int
	// Finite says the caller has already checked that Delta holds no NaN or infinity (the
	// hub's decoder refuses them), so Aggregate does not read it all again to check.
	Finite bool
}

// Rejection records an update left out of the aggregate and why.
type Rejection struct {
	Participant string
	Reason      string
}

func (r Rejection) String() string { return r.Participant + ": " + r.Reason }

// Result is the outcome of one aggregation.
type Result struct {
	// Params is the new global model.
	Params []float32
	// Step is the combined update before the server optimizer (what was averaged).
	Step []float32
	// Used lists the participants whose updates went into Step, sorted.
	Used []string
	// Clipped lists the participants whose updates were scaled down to ClipNorm, sorted.
	Clipped []string
	// Rejected lists every update left out, with the reason, sorted by participant.
	Rejected []Rejection
}

// ErrTooFewUpdates is returned (wrapped) when a round has fewer usable updates than the
// strategy needs.
var ErrTooFewUpdates = errors.New("too few usable updates")

// ErrNotFinite is returned (wrapped) when the new global model would hold an infinity or a
// NaN: finite updates whose combination overflows float32 (large deltas weighted by an
// inflated sample count, or a server optimizer's state grown without bound). No model
// could be published from it (every decoder refuses it), so the round has no result and
// the optimizer state is left as it was.
var ErrNotFinite = errors.New("new global model not finite")

// Aggregator applies a Strategy round after round, keeping the server optimizer's state.
// It is not safe for concurrent use.
type Aggregator struct {
	s   Strategy
	opt optimizer // nil for rules without server state
}

// New returns an aggregator for s, which must be valid.
func New(s Strategy) (*Aggregator, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("aggregate: strategy: %w", err)
	}
	a := &Aggregator{s: s}
	switch {
	case s.Name == FedAdam || s.Name == FedYogi:
		a.opt = &adaptive{yogi: s.Name == FedYogi, cfg: s.Adam}
	case s.ServerMomentum > 0:
		a.opt = &momentum{beta: s.ServerMomentum}
	}
	return a, nil
}

// Strategy returns the aggregator's configuration.
func (a *Aggregator) Strategy() Strategy { return a.s }

// Aggregate combines updates relative to global and returns the new global model. It
// does not modify global or the updates. The result depends only on the set of updates,
// not on their order. Updates that are malformed, duplicated, or rejected as outliers
// are reported in Result.Rejected; if fewer than the strategy needs remain, it returns an
// error wrapping ErrTooFewUpdates, and if the new model would not be finite one wrapping
// ErrNotFinite, and either way leaves the optimizer state unchanged.
func (a *Aggregator) Aggregate(global []float32, updates []Update) (Result, error) {
	return a.AggregateNoised(global, updates, nil)
}

// AggregateNoised is Aggregate with noise added to the combined step (Result.Step) before
// the server optimizer uses it; noise gets the step and the number of updates combined in
// it, and may be nil. With differential privacy the optimizer then sees noised steps only:
// its state (momentum, Adam's moments), which carries every step into later models, is
// post-processing of what the privacy budget pays for, as the noised model is.
func (a *Aggregator) AggregateNoised(global []float32, updates []Update, noise func(step []float32, n int)) (Result, error) {
	var res Result
	ups := a.check(len(global), updates, &res)
	ups = a.clip(ups, &res)
	ups = a.reject(ups, &res)
	if min := max(a.s.MinUpdates(), a.s.Reject.MinUpdates); len(ups) < min {
		sortRejections(res.Rejected)
		return res, fmt.Errorf("aggregate: %s needs at least %d updates, %d of %d usable: %w",
			a.s.Name, min, len(ups), len(updates), ErrTooFewUpdates)
	}
	step := make([]float32, len(global))
	switch a.s.Name {
	case FedAvg, FedProx, FedAdam, FedYogi:
		weightedMean(step, ups)
		res.Used = participants(ups)
	case Median:
		coordinateMedian(step, deltas(ups))
		res.Used = participants(ups)
	case TrimmedMean:
		trimmedMean(step, deltas(ups), a.s.Trim)
		res.Used = participants(ups)
	case Krum, MultiKrum:
		m := 1
		if a.s.Name == MultiKrum {
			m = a.s.Select
			if m == 0 {
				m = len(ups) - a.s.Byzantine
			}
			m = min(m, len(ups))
		}
		chosen, rejected := krumSelect(ups, a.s.Byzantine, m)
		res.Rejected = append(res.Rejected, rejected...)
		mean(step, chosen)
		res.Used = participants(chosen)
	}
	if noise != nil {
		noise(step, len(res.Used))
	}
	res.Step = step
	var err error
	if res.Params, err = a.Step(global, step); err != nil {
		sortRejections(res.Rejected)
		return Result{Rejected: res.Rejected}, fmt.Errorf("aggregate: %s of %d updates: %w", a.s.Name, len(ups), err)
	}
	slices.Sort(res.Used)
	slices.Sort(res.Clipped)
	sortRejections(res.Rejected)
	return res, nil
}

// Step returns the new global model from global and a round's combined step (a mean of
// updates, combined here or elsewhere: under secure aggregation, by unmasking their sum),
// stepping the server optimizer if the strategy has one. If the model would not be finite
// it returns an error wrapping ErrNotFinite and leaves the optimizer state unchanged.
func (a *Aggregator) Step(global, step []float32) ([]float32, error) {
	params := make([]float32, len(global))
	if a.opt != nil {
		a.opt.apply(params, global, step, a.s.ServerLR)
	} else {
		forChunks(len(global), 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				params[i] = float32(float64(global[i]) + a.s.ServerLR*float64(step[i]))
			}
		})
	}
	if i := f32le.NonFinite(params); i >= 0 {
		a.Undo()
		return nil, fmt.Errorf("parameter %d would be %v: %w", i, params[i], ErrNotFinite)
	}
	return params, nil
}

// check drops malformed and duplicate updates and sorts the rest by participant, so that
// the result does not depend on arrival order.
func (a *Aggregator) check(n int, updates []Update, res *Result) []Update {
	count := map[string]int{}
	for _, u := range updates {
		count[u.Participant]++
	}
	bad := make([]int, len(updates)) // the first non-finite parameter of each, or -1
	forChunks(len(updates), n, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			bad[j] = -1
			if !updates[j].Finite {
				bad[j] = f32le.NonFinite(updates[j].Delta)
			}
		}
	})
	var ok []Update
	for j, u := range updates {
		reject := func(format string, args ...any) {
			res.Rejected = append(res.Rejected, Rejection{u.Participant, fmt.Sprintf(format, args...)})
		}
		switch {
		case u.Participant == "":
			reject("no participant id")
		case count[u.Participant] > 1:
			reject("%d updates from the same participant in one round", count[u.Participant])
		case len(u.Delta) != n:
			reject("update has %d parameters; the global model has %d", len(u.Delta), n)
		case u.Samples <= 0:
			reject("sample count %d; expected a positive number", u.Samples)
		case bad[j] >= 0:
			reject("parameter %d is %v; expected a finite number", bad[j], u.Delta[bad[j]])
		default:
			ok = append(ok, u)
		}
	}
	slices.SortFunc(ok, func(x, y Update) int { return cmp.Compare(x.Participant, y.Participant) })
	return ok
}

// clip scales updates longer than ClipNorm down to it (copying them, never in place).
func (a *Aggregator) clip(ups []Update, res *Result) []Update {
	if a.s.ClipNorm == 0 {
		return ups
	}
	for i, n := range norms(ups) {
		if n > a.s.ClipNorm {
			d := slices.Clone(ups[i].Delta)
			Scale(d, a.s.ClipNorm/n)
			ups[i].Delta = d
			res.Clipped = append(res.Clipped, ups[i].Participant)
		}
	}
	return ups
}

// reject leaves out updates whose norm or direction is far from the robust center.
func (a *Aggregator) reject(ups []Update, res *Result) []Update {
	r := a.s.Reject
	if (r.NormRatio == 0 && r.MinCosine == nil) || len(ups) < 3 {
		return ups
	}
	norms := norms(ups)
	medNorm := medianOf(slices.Clone(norms))
	var center []float32
	var centerNorm float64
	if r.MinCosine != nil {
		center = make([]float32, len(ups[0].Delta))
		coordinateMedian(center, deltas(ups))
		centerNorm = Norm(center)
	}
	var keep []Update
	for i, u := range ups {
		if r.NormRatio > 0 && norms[i] > r.NormRatio*medNorm {
			res.Rejected = append(res.Rejected, Rejection{u.Participant,
				fmt.Sprintf("norm %.4g is more than %.4g × the median norm %.4g", norms[i], r.NormRatio, medNorm)})
			continue
		}
		if r.MinCosine != nil && norms[i] > 0 && centerNorm > 0 {
			if c := dot(u.Delta, center) / (norms[i] * centerNorm); c < *r.MinCosine {
				res.Rejected = append(res.Rejected, Rejection{u.Participant,
					fmt.Sprintf("cosine %.4f with the robust center is below %.4f", c, *r.MinCosine)})
				continue
			}
		}
		keep = append(keep, u)
	}
	return keep
}

// Norm returns the L2 norm of v, accumulated in float64.
func Norm(v []float32) float64 { return math.Sqrt(dot(v, v)) }

// Scale multiplies v by s in place.
func Scale(v []float32, s float64) {
	for i := range v {
		v[i] = float32(float64(v[i]) * s)
	}
}

// norms returns the norm of every update, computed concurrently.
func norms(ups []Update) []float64 {
	out := make([]float64, len(ups))
	if len(ups) > 0 {
		forChunks(len(ups), len(ups[0].Delta), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				out[i] = Norm(ups[i].Delta)
			}
		})
	}
	return out
}

func dot(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// Combine combines one vector of side values per update a round used, in Delta (such as
// each update's local metrics), the way Aggregate combined those updates, so that what a
// robust rule discounts in the updates it discounts here too: the coordinate-wise median
// under median, the trimmed mean under trimmed_mean, the plain mean under krum and
// multi_krum (ups are then the updates they chose), and the sample-weighted mean under
// the others. The vectors must have the same length; nil when ups is empty.
func (s Strategy) Combine(ups []Update) []float32 {
	if len(ups) == 0 {
		return nil
	}
	out := make([]float32, len(ups[0].Delta))
	switch s.Name {
	case Median:
		coordinateMedian(out, deltas(ups))
	case TrimmedMean:
		trimmedMean(out, deltas(ups), s.Trim)
	case Krum, MultiKrum:
		mean(out, ups)
	default:
		weightedMean(out, ups)
	}
	return out
}

func weightedMean(out []float32, ups []Update) {
	var total float64
	for _, u := range ups {
		total += float64(u.Samples)
	}
	sumBlocks(out, ups, func(u Update) float64 { return float64(u.Samples) / total }, 1)
}

// mean averages with equal weights (robust rules ignore the reported
// sample counts, which a Byzantine participant could inflate).
func mean(out []float32, ups []Update) {
	sumBlocks(out, ups, func(Update) float64 { return 1 }, float64(len(ups)))
}

// block is how many coordinates sumBlocks accumulates at a time: its float64 sums stay in
// the L1 cache while every update's slice of them is added.
const block = 1024

// sumBlocks sets out[i] to Σ weight(u)·u.Delta[i] / div over ups, in that order, accumulated
// in float64, block coordinates at a time on up to GOMAXPROCS goroutines.
func sumBlocks(out []float32, ups []Update, weight func(Update) float64, div float64) {
	w := make([]float64, len(ups))
	for j, u := range ups {
		w[j] = weight(u)
	}
	forChunks(len(out), len(ups), func(lo, hi int) {
		var acc [block]float64
		for b := lo; b < hi; b += block {
			end := min(b+block, hi)
			a := acc[:end-b]
			clear(a)
			// Four updates per pass over the sums, each added in turn as one at a time would
			// be (the same order, so the same result): a quarter of the loads and stores
			// of the sums.
			j := 0
			for ; j+4 <= len(ups); j += 4 {
				x0, x1 := ups[j].Delta[b:end], ups[j+1].Delta[b:end]
				x2, x3 := ups[j+2].Delta[b:end], ups[j+3].Delta[b:end]
				w0, w1, w2, w3 := w[j], w[j+1], w[j+2], w[j+3]
				x0, x1, x2, x3 = x0[:len(a)], x1[:len(a)], x2[:len(a)], x3[:len(a)]
				for i := range a {
					s := a[i]
					s += w0 * float64(x0[i])
					s += w1 * float64(x1[i])
					s += w2 * float64(x2[i])
					s += w3 * float64(x3[i])
					a[i] = s
				}
			}
			for ; j < len(ups); j++ {
				for i, x := range ups[j].Delta[b:end] {
					a[i] += w[j] * float64(x)
				}
			}
			for i, x := range a {
				out[b+i] = float32(x / div)
			}
		}
	})
}

func deltas(ups []Update) [][]float32 {
	out := make([][]float32, len(ups))
	for i, u := range ups {
		out[i] = u.Delta
	}
	return out
}

func participants(ups []Update) []string {
	out := make([]string, len(ups))
	for i, u := range ups {
		out[i] = u.Participant
	}
	return out
}

func sortRejections(r []Rejection) {
	slices.SortStableFunc(r, func(x, y Rejection) int { return cmp.Compare(x.Participant, y.Participant) })
}
