package federation

import (
	"context"
	"errors"
)

// The hub's retention: once a round has closed (fedRun.finish), the models older than the
// KeepModels latest rounds' and the round's updates are deleted, so that neither the
// object store nor the update stream grows with every round.

// maxExpiredPerRound bounds the rounds deleteExpired deals with after one round: a backlog
// (a federation that ran before it had keep_models, or whose keep_models was lowered)
// drains over the following rounds instead of holding up the next one.
const maxExpiredPerRound = 64

// deleteExpired deletes the models of the rounds up to round − KeepModels that it has not
// deleted yet, once round has closed and the next round's state names global; their
// versions keep naming their hashes. It continues from the oldest round it has not dealt
// with (expireFrom, which the release blob carries across a restart), deals with at most
// maxExpiredPerRound rounds, and stops at the first model it cannot delete yet, to try it
// again after the next round: global itself, when rounds were abandoned for that long, or
// a transport error (logged and counted). A model people released or approved
// (HubOptions.SignedOff) is kept; when the hub cannot tell which, it deletes nothing this
// time.
func (f *fedRun) deleteExpired(ctx context.Context, round uint64, global string) {
	keep := f.cfg.KeepModels
	if keep == 0 || round < keep { // 0: not set (Validate refuses it)
		return
	}
	last := round - keep
	var signedOff map[string]bool // read once, at the first model to delete
	for n := 0; f.expireFrom <= last && n < maxExpiredPerRound; f.expireFrom, n = f.expireFrom+1, n+1 {
		version := ModelHeader{Round: f.expireFrom}.Version()
		hash, err := f.h.tr.GetVersion(ctx, f.cfg.Name, version)
		if errors.Is(err, ErrNotFound) { // no model was released that round
			continue
		}
		if err == nil && hash == global {
			return
		}
		if err == nil && signedOff == nil && f.h.opts.SignedOff != nil {
			if signedOff, err = f.h.opts.SignedOff(ctx, f.cfg.Name); err == nil && signedOff == nil {
				signedOff = map[string]bool{}
			}
		}
		if err == nil && signedOff[hash] {
			f.log.Info("model past keep_models kept: people approved or released it", "version", version, "model", hash)
			continue
		}
		if err == nil {
			err = f.h.tr.DeleteModel(ctx, f.cfg.Name, hash)
		}
		if err != nil {
			if ctx.Err() == nil {
				f.m.deleteErrors.WithLabelValues("model").Inc()
				f.log.Warn("model past keep_models not deleted; trying again after the next round", "version", version, "keep_models", keep, "err", err)
			}
			return
		}
	}
}

// deleteUpdates removes the closed round's updates from the transport: nothing reads them
// again, and a federation of large models would otherwise keep every round's for
// update_retention. It tries once; a failure is logged and counted, and the next round's
// deletion takes those updates with its own (the transport deletes what a round's reader
// saw of earlier rounds too).
func (f *fedRun) deleteUpdates(ctx context.Context, round uint64) {
	if err := f.h.tr.DeleteUpdates(ctx, f.cfg.Name, round); err != nil && ctx.Err() == nil {
		f.m.deleteErrors.WithLabelValues("updates").Inc()
		f.log.Warn("closed round's updates not deleted; the next round's deletion takes them", "round", round, "err", err)
	}
}
