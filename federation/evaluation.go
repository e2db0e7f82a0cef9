package federation

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/ledger"
)

// GlobalMetricPrefix marks a gateway's metric about the global model it trained from,
// judged on its held-out data before its training (global_false_alarm_rate), rather than
// about its own model after the training. Combined over a round's updates as the other
// metrics are, they are the federated evaluation of the round's input model, which the
// hub records as that model's evaluation.
const GlobalMetricPrefix = "global_"

// Bound is an acceptance bound on one metric of the federated evaluation; Min, Max or
// both are set.
type Bound struct {
	Min *float64 `yaml:"min"`
	Max *float64 `yaml:"max"`
}

func (b Bound) String() string {
	var s []string
	if b.Min != nil {
		s = append(s, fmt.Sprintf("≥ %g", *b.Min))
	}
	if b.Max != nil {
		s = append(s, fmt.Sprintf("≤ %g", *b.Max))
	}
	return strings.Join(s, " and ")
}

// validateAcceptance checks the acceptance bounds: metric names, each bound with a
// finite min or max, min ≤ max.
func (c FederationConfig) validateAcceptance(p *config.Problems) {
	for _, name := range slices.Sorted(maps.Keys(c.Acceptance)) {
		b, path := c.Acceptance[name], config.Join("acceptance", name)
		if err := CheckName(name); err != nil || strings.HasPrefix(name, GlobalMetricPrefix) {
			p.Addf(path, "is not a metric name the gateways report (such as false_alarm_rate, without %q)", GlobalMetricPrefix)
		}
		finite := func(v *float64) bool { return v == nil || !(math.IsNaN(*v) || math.IsInf(*v, 0)) }
		switch {
		case b.Min == nil && b.Max == nil:
			p.Addf(path, "has neither min nor max")
		case !finite(b.Min) || !finite(b.Max):
			p.Addf(path, "bounds must be finite numbers")
		case b.Min != nil && b.Max != nil && *b.Min > *b.Max:
			p.Addf(path, "min %g is above max %g", *b.Min, *b.Max)
		}
	}
}

// splitMetrics separates a round's combined metrics into those about the participants'
// models after the round's training and those about the round's input model
// (GlobalMetricPrefix, removed).
func splitMetrics(all map[string]float64) (round, input map[string]float64) {
	for k, v := range all {
		if name, ok := strings.CutPrefix(k, GlobalMetricPrefix); ok {
			if input == nil {
				input = map[string]float64{}
			}
			input[name] = v
			continue
		}
		if round == nil {
			round = map[string]float64{}
		}
		round[k] = v
	}
	return round, input
}

// evalPrivacy says how the metrics of a federated evaluation were noised.
type evalPrivacy struct {
	spent *dp.Report // the privacy spent on noising them (nil: no noise; with DP, they are not recorded)
	std   float64    // the noise's standard deviation on each metric's mean
}

// evaluationRecord is the ledger's record of the federated evaluation of in (hash), the
// model round out trained from (or, in a final evaluation round, only judged), by the
// participants of out, with metrics (their combination; nil: none reported, and nothing
// is recorded), checked against the federation's acceptance bounds. With DP it is recorded
// only when the metrics were noised (priv.spent: the final evaluation); a training round's
// carry no noise and stay at the hub, as the round's own metrics do.
func (f *fedRun) evaluationRecord(in, out ModelHeader, hash string, metrics map[string]float64, priv evalPrivacy) *ledger.Evaluation {
	if f.h.opts.Recorder == nil || metrics == nil || f.cfg.DP.Enabled && priv.spent == nil || in.Round == 0 {
		return nil
	}
	how := "combined by the round's rule, " + f.cfg.Strategy.Name
	switch {
	case priv.spent != nil:
		mean, by := "their mean", ""
		if f.cfg.SecAgg.Enabled {
			mean, by = "their mean, learned under secure aggregation,", " (the hub's)"
			if f.cfg.DP.Noise == dp.NoiseDistributed {
				by = " (the gateways' shares)"
			}
		}
		how = fmt.Sprintf("%s with client-level differential privacy: each value clipped into [0, %g], Gaussian noise%s of standard deviation %.3g on the mean, "+
			"the evaluation's ε %.3g, the federation's %.3g at δ %g", mean, f.cfg.DP.MetricBound, by, priv.std, priv.spent.RoundEpsilon, priv.spent.Epsilon, priv.spent.Delta)
	case f.cfg.SecAgg.Enabled:
		how = "their weighted mean, learned under secure aggregation"
	}
	when := "before training from it"
	if out.Round > f.cfg.Rounds && f.cfg.Rounds > 0 {
		when = "in the federation's final evaluation round, without training"
	}
	// The participants are named by the round's record, or by the final evaluation's round
	// report; the text stays short (≤ 4096 bytes).
	criteria := fmt.Sprintf("federated evaluation in round %d: each of the %d participants judged the model on its own held-out data, "+
		"with a threshold it set on its own calibration data, %s; the metrics are %s. Acceptance: ",
		out.Round, len(out.Participants), when, how)
	passed := true
	if len(f.cfg.Acceptance) == 0 {
		criteria += "no bounds configured (federations[].acceptance)"
	}
	for i, name := range slices.Sorted(maps.Keys(f.cfg.Acceptance)) {
		b := f.cfg.Acceptance[name]
		v, ok := metrics[name]
		met := ok && (b.Min == nil || v >= *b.Min) && (b.Max == nil || v <= *b.Max)
		passed = passed && met
		if i > 0 {
			criteria += "; "
		}
		criteria += fmt.Sprintf("%s %s", name, b)
		switch {
		case !ok:
			criteria += " (not reported: failed)"
		case !met:
			criteria += fmt.Sprintf(" (%g: failed)", v)
		}
	}
	return &ledger.Evaluation{ModelRef: ledger.ModelRef{Model: f.cfg.Name, Version: in.Version()}, ArtifactHash: hash,
		Datasets: []string{}, Metrics: metrics, Criteria: criteria, Passed: passed}
}

// finishEvaluation ends final evaluation round st (PhaseEvaluate), in which the
// participants used judged the model in (st.Global) and reported report.Metrics
// (combined by the round's rule, or their private mean with DP, noised with std): it
// records their global_ metrics as the model's federated evaluation and finishes the
// federation. Nothing is aggregated or released.
func (f *fedRun) finishEvaluation(ctx context.Context, st RoundState, report RoundReport, start time.Time, in ModelHeader, used []string, std float64) (RoundState, error) {
	slices.Sort(used)
	report.Used, report.Model = used, st.Global
	_, input := splitMetrics(report.Metrics)
	priv := evalPrivacy{spent: report.Privacy, std: std}
	if ev := f.evaluationRecord(in, ModelHeader{Round: st.Round, Participants: used}, st.Global, input, priv); ev != nil {
		var id string
		if _, ok := f.h.opts.Recorder.(ledger.IDRecorder); ok {
			id = ledger.NameID(string(ledger.TypeEvaluation), ledger.KeyID(f.h.PublicKey()), f.cfg.Name, strconv.FormatUint(st.Round, 10), st.Global)
		}
		// A hub restarted in this round collects the evaluations again: record asks the
		// ledger first whether the one before it recorded them.
		f.record(ctx, st.Round, "final evaluation", id, *ev, true)
	}
	f.log.Info("final evaluation", "round", st.Round, "model", in.Version(), "evaluations", len(used), "metrics", input)
	st.Phase = PhaseFinished
	return f.finish(ctx, report, start, outcomeEvaluated, st)
}
