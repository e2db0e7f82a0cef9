package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/ledger"
)

// blobRelease is the hub-private blob holding the last round's release (releasing).
const blobRelease = "release"

// releasing is the hub's commit of a round's outcome. It is written, hub-private, once the
// round's signed model is stored and before the model is recorded in the ledger and named
// by its version, and it holds everything a restarted hub needs to finish that release
// without aggregating again: aggregating again would publish a second model for the round,
// spend privacy twice and, with FedAdam or FedYogi, step the server optimizer twice. It
// stays until the next round's release replaces it, so it also carries the server
// optimizer's state after the last released round (one write per round for both).
type releasing struct {
	Round   uint64     `json:"round"`
	Parent  string     `json:"parent"` // SHA-256 of the global model the round trained from
	Model   string     `json:"model"`  // SHA-256 of the stored model
	Used    []string   `json:"used"`
	Privacy *dp.Report `json:"privacy,omitempty"`
	// Rejected, Bytes and Metrics are the rest of the round's report, for a restarted hub
	// to report the round, and write its receipts, as this one would have.
	Rejected []Rejection        `json:"rejected,omitempty"`
	Bytes    int                `json:"bytes,omitempty"`
	Metrics  map[string]float64 `json:"metrics,omitempty"`
	// Record is the round's ledger record (nil without a recorder), and RecordID its id
	// when the recorder takes one (ledger.IDRecorder): a restarted hub asks whether it was
	// recorded before the stop instead of recording it again.
	Record   *ledger.FederatedRound `json:"record,omitempty"`
	RecordID string                 `json:"record_id,omitempty"`
	// Evaluation is the federated evaluation of the round's input model (nil when the
	// round's participants reported none), recorded after Record, under EvaluationID.
	Evaluation   *ledger.Evaluation        `json:"evaluation,omitempty"`
	EvaluationID string                    `json:"evaluation_id,omitempty"`
	Optimizer    *aggregate.OptimizerState `json:"optimizer,omitempty"`
	// Expired is the oldest round whose model the hub had not deleted yet (fedRun's
	// expireFrom) when it committed the release: a restarted hub continues from there.
	Expired uint64 `json:"expired,omitempty"`
}

// release publishes the model out of round st, aggregated from in, with the updates c
// (used: the participants it averaged) and the round's report so far (its rejections,
// bytes and metrics, which the release keeps for a restarted hub's report): it stores the signed model, commits the release
// (blobRelease, with the optimizer's new state), records the round in the ledger and
// names the model by its version, in that order. It returns the model's hash.
func (f *fedRun) release(ctx context.Context, st RoundState, in ModelHeader, out *GlobalModel, c *collected, privacy *dp.Report, report RoundReport) (string, error) {
	hash, err := f.storeModel(ctx, out)
	if err != nil {
		return "", err
	}
	roundM, inputM := splitMetrics(report.Metrics)
	rel := releasing{Round: st.Round, Parent: st.Global, Model: hash, Used: out.Header.Participants, Privacy: privacy,
		Rejected: report.Rejected, Bytes: report.Bytes, Metrics: report.Metrics,
		Record:     f.roundRecord(in, out.Header, hash, c, privacy, roundM),
		Evaluation: f.evaluationRecord(in, out.Header, st.Global, inputM, evalPrivacy{}), Expired: f.expireFrom}
	if _, ok := f.h.opts.Recorder.(ledger.IDRecorder); ok {
		key := ledger.KeyID(f.h.PublicKey())
		if rel.Record != nil {
			rel.RecordID = ledger.NameID(string(ledger.TypeFederatedRound), key, f.cfg.Name, strconv.FormatUint(st.Round, 10), hash)
		}
		if rel.Evaluation != nil {
			rel.EvaluationID = ledger.NameID(string(ledger.TypeEvaluation), key, f.cfg.Name, strconv.FormatUint(st.Round, 10), st.Global)
		}
	}
	if os := f.agg.State(); os.M != nil {
		rel.Optimizer = &os
	}
	b, err := json.Marshal(rel)
	if err != nil {
		return "", fmt.Errorf("federation %s: release of round %d: %w", f.cfg.Name, st.Round, err)
	}
	if _, err := retry(ctx, f.log, "put release", func() (struct{}, error) { return struct{}{}, f.h.tr.PutBlob(ctx, f.cfg.Name, blobRelease, b) }); err != nil {
		return "", err
	}
	rel.Optimizer = nil // written; the aggregator holds the state
	f.released = &rel
	return hash, f.completeRelease(ctx, rel, false, false)
}

// completeRelease records a committed release in the ledger (unless versioned) and names
// its model by the round's version. The version is written last: a model under its
// version has had its ledger record made. resumed says a restarted hub completes it.
func (f *fedRun) completeRelease(ctx context.Context, rel releasing, versioned, resumed bool) error {
	if !versioned {
		if rel.Record != nil {
			f.record(ctx, rel.Round, "federated round", rel.RecordID, *rel.Record, resumed)
		}
		if rel.Evaluation != nil {
			f.record(ctx, rel.Round, "evaluation of the round's input model", rel.EvaluationID, *rel.Evaluation, resumed)
		}
	}
	_, err := retry(ctx, f.log, "put version", func() (struct{}, error) {
		return struct{}{}, f.h.tr.PutVersion(ctx, f.cfg.Name, ModelHeader{Round: rel.Round}.Version(), rel.Model)
	})
	return err
}

// record records body (what) of a released round in the ledger. With a recorder that
// takes ids, the record's id is the one the release committed (id), and a restarted hub
// first asks whether the hub before it made the record (it stopped between the record and
// the version); if the recorder cannot tell, the body is recorded again under the same id,
// which the ledger refuses as a conflict if the first one reached it.
func (f *fedRun) record(ctx context.Context, round uint64, what, id string, body ledger.Body, resumed bool) {
	var err error
	if ir, ok := f.h.opts.Recorder.(ledger.IDRecorder); ok && id != "" {
		if resumed {
			_, done, cerr := ir.Recorded(ctx, id)
			if done {
				f.log.Info(what+" recorded in the ledger before the restart", "round", round, "record", id)
				return
			}
			if cerr != nil {
				f.log.Warn("cannot tell whether the "+what+" was recorded before the restart; recording it under the same id", "round", round, "record", id, "err", cerr)
			}
		}
		_, err = ir.RecordAs(ctx, id, body)
	} else {
		_, err = f.h.opts.Recorder.Record(ctx, body)
	}
	if err != nil {
		f.m.ledger.Inc()
		f.log.Error(what+" not recorded", "round", round, "err", err)
	}
}

// resumeRelease finishes the release of round st.Round that a previous hub committed and
// did not complete before it stopped. A model already under its version was recorded; one
// that is not may have been (the hub stopped between the record and the version): record
// asks the recorder.
func (f *fedRun) resumeRelease(ctx context.Context, st RoundState, rel releasing) error {
	v, err := retry(ctx, f.log, "get version", func() (string, error) {
		v, err := f.h.tr.GetVersion(ctx, f.cfg.Name, ModelHeader{Round: rel.Round}.Version())
		if errors.Is(err, ErrNotFound) {
			return "", nil
		}
		return v, err
	})
	if err != nil {
		return err
	}
	f.log.Info("round's release committed before a restart, completing it", "round", st.Round, "model", rel.Model, "versioned", v == rel.Model)
	return f.completeRelease(ctx, rel, v == rel.Model, true)
}

// loadRelease reads the last committed release and restores the server optimizer's state
// from it (or, for a federation a hub before releases ran, from the optimizer blob).
func (f *fedRun) loadRelease(ctx context.Context) error {
	b, err := retry(ctx, f.log, "get release", func() ([]byte, error) { return f.h.tr.GetBlob(ctx, f.cfg.Name, blobRelease) })
	switch {
	case err == nil:
		var rel releasing
		if err := json.Unmarshal(b, &rel); err != nil {
			return fmt.Errorf("federation %s: last release: %w", f.cfg.Name, err)
		}
		f.released, f.expireFrom = &rel, rel.Expired
		if rel.Optimizer == nil {
			return nil
		}
		if err := f.agg.Restore(*rel.Optimizer); err != nil {
			return fmt.Errorf("federation %s: optimizer state of round %d: %w", f.cfg.Name, rel.Round, err)
		}
		rel.Optimizer = nil // restored; the aggregator holds the state
		return nil
	case !errors.Is(err, ErrNotFound):
		return err
	}
	b, err = retry(ctx, f.log, "get optimizer", func() ([]byte, error) { return f.h.tr.GetBlob(ctx, f.cfg.Name, blobOptimizer) })
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var os aggregate.OptimizerState
	if err := json.Unmarshal(b, &os); err != nil {
		return fmt.Errorf("federation %s: optimizer state: %w", f.cfg.Name, err)
	}
	if err := f.agg.Restore(os); err != nil {
		return fmt.Errorf("federation %s: optimizer state: %w", f.cfg.Name, err)
	}
	return nil
}

// roundRecord is the ledger's record of a round that published out (hash), aggregated
// from in, with the round's metrics unless it had DP (they carry no noise, so they stay
// at the hub); nil when the hub has no recorder.
func (f *fedRun) roundRecord(in, out ModelHeader, hash string, c *collected, privacy *dp.Report, metrics map[string]float64) *ledger.FederatedRound {
	if f.h.opts.Recorder == nil {
		return nil
	}
	body := &ledger.FederatedRound{
		Federation: f.cfg.Name, Round: int64(out.Round), Participants: out.Participants, Aggregation: f.cfg.Strategy.Name,
		Output:     ledger.ModelRef{Model: f.cfg.Name, Version: out.Version()},
		OutputHash: hash,
	}
	// The initial model (round 0) is the hub's seeded initialisation: no data and no record
	// produced it, so it is not named as a parent the ledger could not resolve.
	if in.Round > 0 {
		body.Parents = []ledger.ModelRef{{Model: f.cfg.Name, Version: in.Version()}}
	}
	if f.cfg.SecAgg.Enabled {
		body.Aggregation += "+secagg"
	}
	for _, p := range out.Participants {
		body.InputUpdates = append(body.InputUpdates, c.updates[p].ID())
	}
	if privacy != nil {
		body.DP = &ledger.DPBudget{Epsilon: privacy.Epsilon, Delta: privacy.Delta}
	} else {
		body.Metrics = metrics
	}
	return body
}
