package federation

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/federation/secagg"
)

// RejectSecAgg: a secure-aggregation message that does not fit the round (wrong phase,
// an id that is not the sender's, refused by the protocol state machine).
const RejectSecAgg = "secagg"

// secaggRound runs one round with secure aggregation: four phases over the round state
// (hub → gateways) and the update stream (gateways → hub, every message signed), each
// closed when every expected gateway has answered or at the deadline. The hub learns the
// sum of the survivors' updates, never one update; gateways that drop out after sharing
// their keys are recovered from the others' shares.
func (f *fedRun) secaggRound(ctx context.Context, st RoundState) (RoundState, error) {
	start := time.Now()
	report := RoundReport{Federation: f.cfg.Name, Round: st.Round}
	abandon := func(why string, args ...any) (RoundState, error) {
		f.log.Warn("round abandoned: "+why, append([]any{"round", st.Round}, args...)...)
		st.SecAgg = nil
		return f.finish(ctx, report, start, outcomeAbandoned, f.open(st.Round+1, st.Global, st.GlobalRound))
	}
	if st.SecAgg != nil && st.SecAgg.Phase != SecAggAdvertise {
		// The masking state of an interrupted round lived in the previous hub's memory.
		return abandon("hub restarted during secure aggregation")
	}
	global, err := f.globalModel(ctx, st)
	if err != nil {
		return st, err
	}
	params, err := f.cfg.SecAgg.Params(st.Round, len(st.Targets), len(global.Params))
	if err != nil {
		return abandon("secure aggregation parameters", "err", err)
	}
	srv, err := secagg.NewServer(params)
	if err != nil {
		return abandon("secure aggregation parameters", "err", err)
	}
	sa := &SecAggState{Params: params, IDs: map[string]uint32{}, Phase: SecAggAdvertise}
	targets := map[string]bool{}
	for i, t := range st.Targets { // Targets are sorted: ids are stable for the round
		sa.IDs[t] = uint32(i + 1)
		targets[t] = true
	}
	if f.cfg.DP.Enabled && f.cfg.DP.Noise == dp.NoiseDistributed {
		st.Noise = f.cfg.DP.NoiseStd(len(st.Targets))
	}
	st.SecAgg = sa
	if err := f.putState(ctx, st); err != nil {
		return st, err
	}

	fd := f.feed(ctx, st.Round)
	defer fd.close()
	reject := f.rejecter(st.Round, &report.Rejected)
	seen := map[string]bool{}      // message ids handled (redeliveries are no-ops)
	inputs := map[string]*Update{} // masked inputs, by participant

	// phase collects messages until want have been accepted or the deadline passes.
	phase := func(want int, accept func(u *Update, m secagg.Message) error) (int, error) {
		got := 0
		timer := time.NewTimer(time.Until(st.Deadline))
		defer timer.Stop()
		for got < want {
			b, err := fd.next(ctx, timer.C)
			if err != nil {
				return got, fmt.Errorf("federation %s round %d: %w", f.cfg.Name, st.Round, err)
			}
			if b == nil {
				return got, nil
			}
			u := f.verify(st, targets, reject, b)
			if u == nil {
				continue
			}
			if seen[u.ID()] {
				f.h.m.updates.WithLabelValues(resultRedelivered).Inc()
				continue
			}
			seen[u.ID()] = true
			if u.Kind != KindSecAgg {
				reject(u.Participant, RejectBadPayload, "a plain update in a round with secure aggregation")
				continue
			}
			round, m, err := secagg.Unmarshal(u.Payload)
			if err == nil && round != st.Round {
				err = fmt.Errorf("secagg message of round %d", round)
			}
			if err == nil {
				err = accept(u, m)
			}
			if err != nil {
				reject(u.Participant, RejectSecAgg, err.Error())
				continue
			}
			got++
			report.Bytes += len(b)
			f.h.m.updates.WithLabelValues(resultAccepted).Inc()
			f.h.m.bytes.Add(float64(len(b)))
		}
		return got, nil
	}
	from := func(u *Update, id uint32) error {
		if sa.IDs[u.Participant] != id {
			return fmt.Errorf("message from client %d signed by %s (client %d)", id, u.Participant, sa.IDs[u.Participant])
		}
		return nil
	}
	next := func(phaseName string) error {
		sa.Phase = phaseName
		st.Deadline = time.Now().Add(f.cfg.RoundTimeout).UTC()
		return f.putState(ctx, st)
	}

	// 1. Keys (the gateways train first).
	if _, err := phase(len(st.Targets), func(u *Update, m secagg.Message) error {
		a, ok := m.(*secagg.AdvertiseKeys)
		if !ok {
			return errors.New("expected AdvertiseKeys")
		}
		if err := from(u, a.From); err != nil {
			return err
		}
		return srv.ReceiveAdvertise(a)
	}); err != nil {
		return st, err
	}
	roster, err := srv.Roster()
	if err != nil {
		return abandon("too few gateways advertised keys", "err", err)
	}
	sa.Roster = secagg.Marshal(st.Round, roster)
	if err := next(SecAggShare); err != nil {
		return st, err
	}
	// 2. Encrypted shares of every gateway's mask secrets.
	if _, err := phase(len(roster.Keys), func(u *Update, m secagg.Message) error {
		s, ok := m.(*secagg.ShareKeys)
		if !ok {
			return errors.New("expected ShareKeys")
		}
		if err := from(u, s.From); err != nil {
			return err
		}
		return srv.ReceiveShares(s)
	}); err != nil {
		return st, err
	}
	bundles, err := srv.Bundles()
	if err != nil {
		return abandon("too few gateways shared keys", "err", err)
	}
	sa.Bundles = map[string][]byte{}
	for name, id := range sa.IDs {
		if b, ok := bundles[id]; ok {
			sa.Bundles[name] = secagg.Marshal(st.Round, b)
		}
	}
	if err := next(SecAggMask); err != nil {
		return st, err
	}
	// 3. Masked inputs.
	if _, err := phase(len(bundles), func(u *Update, m secagg.Message) error {
		mi, ok := m.(*secagg.MaskedInput)
		if !ok {
			return errors.New("expected MaskedInput")
		}
		if err := from(u, mi.From); err != nil {
			return err
		}
		if err := srv.ReceiveMasked(mi); err != nil {
			return err
		}
		inputs[u.Participant] = u
		return nil
	}); err != nil {
		return st, err
	}
	req, err := srv.Request()
	if err != nil {
		return abandon("too few masked inputs", "err", err)
	}
	sa.Request = secagg.Marshal(st.Round, req)
	if err := next(SecAggUnmask); err != nil {
		return st, err
	}
	// 4. Shares that remove the masks (the dropouts' pairwise masks included).
	if _, err := phase(len(req.Survivors), func(u *Update, m secagg.Message) error {
		r, ok := m.(*secagg.UnmaskResponse)
		if !ok {
			return errors.New("expected UnmaskResponse")
		}
		if err := from(u, r.From); err != nil {
			return err
		}
		return srv.ReceiveUnmask(r)
	}); err != nil {
		return st, err
	}
	sum, err := srv.Sum()
	if err != nil {
		return abandon("unmasking failed", "err", err)
	}
	var used []string
	for name, id := range sa.IDs {
		for _, s := range srv.Survivors() {
			if s == id {
				used = append(used, name)
			}
		}
	}
	if len(used) < st.Quorum {
		return abandon("quorum not met", "survivors", len(used), "quorum", st.Quorum)
	}
	// The new model: global + η · (mean of the survivors' updates), with central noise on
	// the mean when DP is central (distributed noise is already in the sum).
	n := float64(len(used))
	var privacy *dp.Report
	var noise []float32
	if f.budget != nil {
		rep, err := f.spend(ctx)
		if err != nil {
			return st, err
		}
		privacy = &rep
		if f.cfg.DP.Noise == dp.NoiseCentral {
			noise = make([]float32, len(sum))
			f.noise.Add(noise, f.cfg.DP.NoiseStd(len(used))/n)
		}
	}
	params2 := make([]float32, len(global.Params))
	for i := range params2 {
		step := sum[i] / float32(n)
		if noise != nil {
			step += noise[i]
		}
		params2[i] = global.Params[i] + float32(f.cfg.Strategy.ServerLR)*step
	}
	sort.Strings(used)
	out := GlobalModel{Header: ModelHeader{Federation: f.cfg.Name, Round: st.Round, Architecture: global.Header.Architecture,
		Parent: st.Global, Created: time.Now().UTC(), Participants: used}, Params: params2}
	hash, err := f.publish(ctx, &out)
	if err != nil {
		return st, err
	}
	report.Model, report.Used, report.Privacy = hash, used, privacy
	c := &collected{updates: inputs}
	f.record(ctx, st, global.Header, out.Header, hash, c, used, privacy)
	st.SecAgg = nil
	return f.finish(ctx, report, start, outcomeAggregated, f.open(st.Round+1, hash, st.Round))
}
