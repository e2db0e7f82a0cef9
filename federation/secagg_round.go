package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/federation/secagg"
)

// Reasons a secure-aggregation message is rejected.
const (
	// RejectSecAgg: a message that does not fit the round (wrong phase, an id that is not
	// the sender's, refused by the protocol state machine).
	RejectSecAgg = "secagg"
	// RejectSecAggInconsistent: a survivor-set signature that does not verify over the
	// set the hub published: the gateway was shown another set (the transport, or a hub
	// in front of this one, tampered with it) or the signature is forged.
	RejectSecAggInconsistent = "secagg_inconsistent"
)

// Reasons a round with secure aggregation is abandoned: the label values of
// millwright_federation_secagg_failures_total.
const (
	SecAggFailParams       = "params"                 // the round does not fit the parameters
	SecAggFailResume       = "resume"                 // a restarted hub cannot rebuild what it had published, or the round was opened without secagg
	SecAggFailKeys         = "too_few_keys"           // fewer than t gateways advertised keys
	SecAggFailShares       = "too_few_shares"         // fewer than t shared keys
	SecAggFailInputs       = "too_few_inputs"         // fewer than t masked inputs
	SecAggFailInconsistent = "inconsistent_survivors" // survivor-set signatures over different sets
	SecAggFailSignatures   = "too_few_signatures"     // fewer than t signed the survivor set
	SecAggFailUnmask       = "unmask"                 // too few unmasking answers, or bad shares
	SecAggFailQuorum       = "quorum"                 // fewer survivors than the round's quorum
)

var secaggFailReasons = []string{SecAggFailParams, SecAggFailResume, SecAggFailKeys, SecAggFailShares,
	SecAggFailInputs, SecAggFailInconsistent, SecAggFailSignatures, SecAggFailUnmask, SecAggFailQuorum}

// secaggPhases are the phases in order; the index of a round state's phase tells a
// restarted hub which phases it had closed.
var secaggPhases = []string{SecAggAdvertise, SecAggShare, SecAggMask, SecAggCheck, SecAggUnmask}

// secaggRound runs one round with secure aggregation: five phases over the round state
// (hub → gateways) and the update stream (gateways → hub, every message signed), each
// closed when every expected gateway has answered or at the deadline. The hub learns the
// sum of the survivors' updates, never one update; gateways that drop out after sharing
// their keys are recovered from the others' shares.
//
// Restarts: the round state is the durable record of every close (it is written, in one
// put, with the message that announces the close), and the stream holds every message
// the hub accepted. A restarted hub replays the stream phase by phase: a closed phase
// accepts only the gateways the record names and must rebuild byte for byte what was
// published, or the round is abandoned; the open phase then goes on under a fresh
// deadline. Gateways resend nothing: what they sent is in the stream.
func (f *fedRun) secaggRound(ctx context.Context, st RoundState) (RoundState, error) {
	start := time.Now()
	report := RoundReport{Federation: f.cfg.Name, Round: st.Round, Targets: st.Targets}
	fail := func(reason, why string, args ...any) (RoundState, error) {
		f.m.secaggFailed.WithLabelValues(reason).Inc()
		report.Reason = reason
		f.log.Warn("round abandoned: "+why, append([]any{"round", st.Round, "reason", reason}, args...)...)
		return f.finish(ctx, report, start, outcomeAbandoned, f.open(st.Round+1, st.Global, st.GlobalRound))
	}
	global, err := f.globalModel(ctx, st)
	if err != nil {
		return st, err
	}
	if len(global.Params) != f.cfg.Architecture.Params {
		return fail(SecAggFailParams, "the global model does not have the configured architecture's parameters",
			"params", len(global.Params), "configured", f.cfg.Architecture.Params)
	}
	sa, err := f.secaggState(st, st.Targets)
	if err != nil {
		return fail(SecAggFailParams, "secure aggregation parameters", "err", err)
	}
	ids := secagg.Identities{Context: f.cfg.Name, Keys: map[uint32]ed25519.PublicKey{}}
	targets := map[string]bool{}
	for name, id := range sa.IDs {
		ids.Keys[id] = sa.Keys[name]
		targets[name] = true
	}
	srv, err := secagg.NewServer(sa.Params, ids)
	if err != nil {
		return fail(SecAggFailParams, "secure aggregation parameters", "err", err)
	}
	// open puts the secure-aggregation state in the round state from the first write
	// (with the distributed DP noise the gateways add); a round without it was opened
	// under a configuration without secure aggregation, before a restart, and cannot run
	// as one. Past the first phase, the hub restarted in the middle of the round.
	if st.SecAgg == nil {
		return fail(SecAggFailResume, "round was opened without secure aggregation (the configuration changed)")
	}
	if err := sameSecAggRound(st.SecAgg, sa); err != nil {
		return fail(SecAggFailResume, "interrupted round does not match the configuration", "err", err)
	}
	// The gateways clip and noise as the round state says; the hub noises and charges as
	// its configuration says. After a restart under another DP configuration the two
	// would not agree, and the round would pay for noise it does not carry.
	if clip, noise := f.clipNorm(), f.noiseShare(st.Quorum, sa.Params); st.ClipNorm != clip || st.Noise != noise {
		return fail(SecAggFailResume, "interrupted round was opened under another DP configuration",
			"clip_norm", st.ClipNorm, "noise", st.Noise, "configured_clip_norm", clip, "configured_noise", noise)
	}
	sa = st.SecAgg
	// A restarted hub gives the open phase a fresh deadline once a phase has closed (the
	// gateways wait for the next one) or the round's has passed.
	closed := slices.Index(secaggPhases, sa.Phase)
	if closed > 0 || time.Now().After(st.Deadline) {
		st.Deadline = time.Now().Add(f.cfg.RoundTimeout).UTC()
		f.log.Info("secure aggregation resumed", "round", st.Round, "phase", sa.Phase)
	}
	contributors, err := secaggContributors(sa, closed)
	if err != nil {
		return fail(SecAggFailResume, "interrupted round's record", "err", err)
	}

	fd := f.feed(ctx, st.Round)
	defer fd.close()
	reject := f.rejecter(st.Round, &report.Rejected)
	seen := map[string]bool{} // message ids handled (redeliveries are no-ops)
	accepted := make([]map[string]*Update, len(secaggPhases))

	// phase collects the messages of phase i until want have been accepted or the deadline
	// passes. A phase closed before a restart is replayed: only its recorded contributors
	// count, all of them are expected, and complete says whether they all came.
	phase := func(i, want int, accept func(m secagg.Message, sender uint32) error) (complete bool, err error) {
		allowed := contributors[i]
		if allowed != nil {
			want = len(allowed)
		}
		accepted[i] = map[string]*Update{}
		timer := time.NewTimer(time.Until(st.Deadline))
		defer timer.Stop()
		for len(accepted[i]) < want {
			msg, err := fd.next(ctx, timer.C)
			if err != nil {
				return false, fmt.Errorf("federation %s round %d: %w", f.cfg.Name, st.Round, err)
			}
			if msg == nil {
				return false, nil
			}
			if f.redelivered(seen, msg) {
				continue
			}
			u := f.verify(st, targets, reject, msg)
			if u == nil {
				continue
			}
			if u.Kind != KindSecAgg {
				reject(u.Participant, RejectBadPayload, "a plain update in a round with secure aggregation")
				continue
			}
			round, m, err := secagg.Unmarshal(u.Payload)
			switch {
			case err != nil:
			case round != st.Round:
				err = fmt.Errorf("secagg message of round %d", round)
			case allowed != nil && !allowed[sa.IDs[u.Participant]]:
				err = fmt.Errorf("%T from a gateway the %s phase did not include when it closed before the hub restarted", m, secaggPhases[i])
			case accepted[i][u.Participant] != nil:
				err = fmt.Errorf("second %T in this phase", m)
			default:
				err = accept(m, sa.IDs[u.Participant])
			}
			if err != nil {
				reason := RejectSecAgg
				if errors.Is(err, secagg.ErrInconsistent) {
					reason = RejectSecAggInconsistent
				}
				reject(u.Participant, reason, err.Error())
				continue
			}
			accepted[i][u.Participant] = u
			report.Bytes += len(msg.b)
			f.m.updates.WithLabelValues(resultAccepted).Inc()
			f.m.bytes.Add(float64(len(msg.b)))
		}
		return true, nil
	}
	live := func(i int) bool { return i >= closed } // collected live, not replayed
	// settle ends phase i, whose close produced rec (nil if it failed): a replayed phase
	// must have come complete and rebuilt its record exactly, or the round is abandoned; a
	// live one stores rec and publishes the next phase. stop says the caller returns
	// (next, err).
	settle := func(i int, complete bool, rec []byte, field *[]byte) (stop bool, next RoundState, err error) {
		if !live(i) {
			if !complete || rec == nil || !bytes.Equal(rec, *field) {
				next, err = fail(SecAggFailResume, "the replayed log does not rebuild what the hub published before its restart", "phase", secaggPhases[i])
				return true, next, err
			}
			return false, st, nil
		}
		*field = rec
		sa.Phase = secaggPhases[i+1]
		st.Deadline = time.Now().Add(f.cfg.RoundTimeout).UTC()
		err = f.putState(ctx, st)
		return err != nil, st, err
	}
	marshal := func(m secagg.Message, closeErr error) []byte {
		if closeErr != nil {
			return nil
		}
		return secagg.Marshal(st.Round, m)
	}

	// 1. Keys (the gateways train first).
	complete, err := phase(0, len(st.Targets), accepting(srv.ReceiveAdvertise))
	if err != nil {
		return st, err
	}
	roster, err := srv.Roster()
	if err != nil && live(0) {
		return fail(SecAggFailKeys, "too few gateways advertised keys", "err", err)
	}
	if stop, next, err := settle(0, complete, marshal(roster, err), &sa.Roster); stop {
		return next, err
	}

	// 2. Encrypted shares of every gateway's mask secrets, routed as one bundle per gateway
	// (recorded as the bundles by name; the record compares their canonical encoding).
	complete, err = phase(1, len(roster.Keys), accepting(srv.ReceiveShares))
	if err != nil {
		return st, err
	}
	bundles, err := srv.Bundles()
	if err != nil && live(1) {
		return fail(SecAggFailShares, "too few gateways shared keys", "err", err)
	}
	bb := map[string][]byte{}
	for name, id := range sa.IDs {
		if b, ok := bundles[id]; ok {
			bb[name] = secagg.Marshal(st.Round, b)
		}
	}
	recorded, rebuilt := bundleRecord(sa.Bundles), bundleRecord(bb)
	if err != nil {
		rebuilt = nil
	}
	if live(1) {
		sa.Bundles = bb
	}
	if stop, next, err := settle(1, complete, rebuilt, &recorded); stop {
		return next, err
	}

	// 3. Masked inputs.
	complete, err = phase(2, len(bundles), accepting(srv.ReceiveMasked))
	if err != nil {
		return st, err
	}
	req, err := srv.Request()
	if err != nil && live(2) {
		return fail(SecAggFailInputs, "too few masked inputs", "err", err)
	}
	// The quorum is checked before anyone is asked to unmask: a sum of fewer survivors
	// would carry less of the distributed noise than the round's shares were sized for, and
	// a round abandoned after the hub learned it would pay nothing for it.
	if err == nil && len(req.Survivors) < st.Quorum {
		return fail(SecAggFailQuorum, "quorum not met", "survivors", len(req.Survivors), "quorum", st.Quorum)
	}
	if stop, next, err := settle(2, complete, marshal(req, err), &sa.Request); stop {
		return next, err
	}

	// 4. Consistency check: every survivor signs the survivor set it was shown.
	complete, err = phase(3, len(req.Survivors), accepting(srv.ReceiveSurvivorSig))
	if err != nil {
		return st, err
	}
	sigs, err := srv.Signatures()
	if err != nil && live(3) {
		if errors.Is(err, secagg.ErrInconsistent) {
			return fail(SecAggFailInconsistent, "gateways signed different survivor sets", "err", err)
		}
		return fail(SecAggFailSignatures, "too few gateways signed the survivor set", "err", err)
	}
	if stop, next, err := settle(3, complete, marshal(sigs, err), &sa.Signatures); stop {
		return next, err
	}

	// 5. Shares that remove the masks (the dropouts' pairwise masks included).
	if _, err := phase(4, len(sigs.Sigs), accepting(srv.ReceiveUnmask)); err != nil {
		return st, err
	}
	inputs := accepted[2] // the masked inputs, by participant, for the ledger
	sum, err := srv.Sum()
	if err != nil {
		return fail(SecAggFailUnmask, "unmasking failed", "err", err)
	}
	var used []string
	for name, id := range sa.IDs {
		if slices.Contains(srv.Survivors(), id) {
			used = append(used, name)
		}
	}
	if len(used) < st.Quorum {
		return fail(SecAggFailQuorum, "quorum not met", "survivors", len(used), "quorum", st.Quorum)
	}
	// The new model: global + η · (mean of the survivors' updates), with central noise on
	// the mean when DP is central (distributed noise is already in the sum). Weighted, the
	// mean is Σ w·update / Σ w, the element after the update being Σ w.
	n := float64(len(used))
	weight := float32(n)
	if sa.SampleCap > 0 {
		if weight = sum[maskedParams(st, len(global.Params))]; !(weight > 0) {
			return fail(SecAggFailUnmask, "the survivors' weights sum to no positive number", "sum", weight)
		}
	}
	pairs := sum[len(sum)-2*len(sa.Metrics):]
	if st.Phase == PhaseEvaluate && sa.MetricBound > 0 { // with DP
		metrics, privacy, std, incomplete, err := f.privateMaskedMetrics(ctx, sa, pairs, len(used))
		if err != nil {
			return st, err
		}
		if incomplete != nil {
			f.log.Warn("evaluation metrics left out: their counts are not one per survivor (some survivors lacked them, or a gateway sent a count it could not have)", "round", st.Round, "metrics", incomplete)
		}
		report.Metrics, report.Privacy = metrics, privacy
		st.SecAgg = nil
		return f.finishEvaluation(ctx, st, report, start, global.Header, used, std)
	}
	var implausible []string
	report.Metrics, implausible = sa.metricMeans(pairs, len(used))
	if implausible != nil {
		f.log.Warn("round metrics left out: their masked sums are implausible (a gateway sent values it could not have)", "round", st.Round, "metrics", implausible)
	}
	if st.Phase == PhaseEvaluate {
		st.SecAgg = nil
		return f.finishEvaluation(ctx, st, report, start, global.Header, used, 0)
	}
	step := make([]float32, len(global.Params))
	for i := range step {
		step[i] = sum[i] / weight
	}
	var privacy *dp.Report
	if f.budget != nil {
		sigma := f.cfg.DP.NoiseMultiplier
		if st.Noise > 0 { // distributed: the survivors' shares, sized for fewer of them
			sigma = dp.SharedMultiplier(st.Noise, len(used), st.ClipNorm)
		}
		rep, err := f.spend(ctx, sigma)
		if err != nil {
			return st, err
		}
		privacy = &rep
		if f.cfg.DP.Noise == dp.NoiseCentral {
			f.noise.Add(step, f.cfg.DP.NoiseStd(len(used))/n)
		}
	}
	// The server optimizer (momentum, FedAdam, FedYogi), if any, steps on the noised mean.
	params2, err := f.agg.Step(global.Params, step)
	if err != nil {
		f.log.Warn("round abandoned: aggregation failed", "round", st.Round, "err", err)
		report.Reason, report.Privacy = RejectAggregate, privacy // spent: over-counting is safe
		st.SecAgg = nil
		return f.finish(ctx, report, start, outcomeAbandoned, f.open(st.Round+1, st.Global, st.GlobalRound))
	}
	sort.Strings(used)
	out := GlobalModel{Header: ModelHeader{Federation: f.cfg.Name, Round: st.Round, Architecture: global.Header.Architecture,
		Parent: st.Global, Created: time.Now().UTC(), Participants: used}, Params: params2}
	hash, err := f.release(ctx, st, global.Header, &out, &collected{updates: inputs}, privacy, report)
	if err != nil {
		return st, err
	}
	report.Model, report.Used, report.Privacy = hash, used, privacy
	st.SecAgg = nil
	return f.finish(ctx, report, start, outcomeAggregated, f.open(st.Round+1, hash, st.Round))
}

// secaggState is the first state of a round with secure aggregation among targets (sorted,
// so client ids are stable for the round): the parameters, the client ids and identity
// keys, the advertise phase. open puts it in the round state from the start, so a gateway
// never sees the round without it (it would train and send a plain update the hub refuses).
func (f *fedRun) secaggState(st RoundState, targets []string) (*SecAggState, error) {
	sa := &SecAggState{IDs: map[string]uint32{}, Phase: SecAggAdvertise, Keys: map[string]ed25519.PublicKey{}}
	if f.cfg.SecAgg.SampleCap > 0 && !f.cfg.DP.Enabled { // DP needs equal weights
		sa.SampleCap = f.cfg.SecAgg.SampleCap
	}
	// With DP the metrics are masked in the final evaluation round only, clipped and noised
	// (their sums in a training round would carry no noise).
	if !f.cfg.DP.Enabled || st.Phase == PhaseEvaluate {
		sa.Metrics = slices.Clone(f.cfg.SecAgg.Metrics)
	}
	if f.cfg.DP.Enabled && len(sa.Metrics) > 0 {
		sa.MetricBound = f.cfg.DP.MetricBound
	}
	params, err := f.cfg.SecAgg.Params(st.Round, len(targets), sa.inputLen(maskedParams(st, f.cfg.Architecture.Params)))
	if err != nil {
		return nil, err
	}
	sa.Params = params
	if sa.MetricBound > 0 && f.cfg.DP.Noise == dp.NoiseDistributed {
		sa.MetricNoise = f.cfg.DP.MetricStd(len(sa.Metrics), fewestSurvivors(st.Quorum, params))
	}
	for i, t := range targets {
		sa.IDs[t], sa.Keys[t] = uint32(i+1), f.members[t]
	}
	return sa, nil
}

// fewestSurvivors is the fewest gateways whose masked sum a round with params and quorum
// may release: the quorum or the shares unmasking needs (the threshold), whichever is
// more, and at most the round's clients. The gateways' shares of distributed DP noise are
// sized for it, so that no released sum carries less than the whole noise.
func fewestSurvivors(quorum int, p secagg.Params) int {
	return min(p.Clients, max(quorum, p.Threshold, 1))
}

// clipNorm is the norm a round state tells the gateways to clip their updates to under
// the configuration: DP's, or 0 without it.
func (f *fedRun) clipNorm() float64 {
	if !f.cfg.DP.Enabled {
		return 0
	}
	return f.cfg.DP.ClipNorm
}

// noiseShare is the standard deviation of the share of the noise a round state tells each
// gateway to add under the configuration, with distributed DP and secure aggregation of
// parameters sa; 0 otherwise.
func (f *fedRun) noiseShare(quorum int, sa secagg.Params) float64 {
	if !f.cfg.DP.Enabled || f.cfg.DP.Noise != dp.NoiseDistributed || !f.cfg.SecAgg.Enabled {
		return 0
	}
	return f.cfg.DP.NoiseStd(fewestSurvivors(quorum, sa))
}

// maskedParams is how many model parameters a gateway masks in round st: none in a final
// evaluation round (PhaseEvaluate), which sums only the weights and the metrics.
func maskedParams(st RoundState, params int) int {
	if st.Phase == PhaseEvaluate {
		return 0
	}
	return params
}

// accepting adapts a Server's Receive method to a phase: the message must be of its type
// and come from the client id of the gateway that signed it.
func accepting[M interface {
	secagg.Message
	Sender() uint32
}](recv func(M) error) func(secagg.Message, uint32) error {
	return func(m secagg.Message, signer uint32) error {
		x, ok := m.(M)
		if !ok {
			var want M
			return fmt.Errorf("expected %T, got %T", want, m)
		}
		if x.Sender() != signer {
			return fmt.Errorf("%T from client %d signed by client %d", m, x.Sender(), signer)
		}
		return recv(x)
	}
}

// bundleRecord is the canonical encoding of the bundles by name, for comparing a replayed
// close with the recorded one.
func bundleRecord(b map[string][]byte) []byte {
	var out []byte
	for _, name := range slices.Sorted(maps.Keys(b)) {
		out = binary.BigEndian.AppendUint32(append(binary.BigEndian.AppendUint32(out, uint32(len(name))), name...), uint32(len(b[name])))
		out = append(out, b[name]...)
	}
	return out
}

// sameSecAggRound checks that an interrupted round's record was made for the round the
// configuration describes now: same parameters, client ids and identity keys.
func sameSecAggRound(rec, now *SecAggState) error {
	switch {
	case rec.Params != now.Params || rec.SampleCap != now.SampleCap || !slices.Equal(rec.Metrics, now.Metrics) ||
		rec.MetricBound != now.MetricBound || rec.MetricNoise != now.MetricNoise:
		return fmt.Errorf("parameters %+v (sample cap %d, metrics %q, bound %g, noise %g) recorded, %+v (%d, %q, %g, %g) configured",
			rec.Params, rec.SampleCap, rec.Metrics, rec.MetricBound, rec.MetricNoise, now.Params, now.SampleCap, now.Metrics, now.MetricBound, now.MetricNoise)
	case !maps.Equal(rec.IDs, now.IDs):
		return errors.New("client ids differ")
	case !maps.EqualFunc(rec.Keys, now.Keys, func(a, b ed25519.PublicKey) bool { return a.Equal(b) }):
		return errors.New("member identity keys differ")
	case !slices.Contains(secaggPhases, rec.Phase):
		return fmt.Errorf("phase %q is unknown", rec.Phase)
	}
	return nil
}

// secaggContributors returns, for each phase closed before a restart (the first closed
// of secaggPhases), the client ids whose messages the recorded close was made from.
func secaggContributors(sa *SecAggState, closed int) ([]map[uint32]bool, error) {
	out := make([]map[uint32]bool, len(secaggPhases))
	set := func(ids ...uint32) map[uint32]bool {
		m := map[uint32]bool{}
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	decode := func(b []byte, what string) (secagg.Message, error) {
		round, m, err := secagg.Unmarshal(b)
		if err == nil && round != sa.Params.Round {
			err = fmt.Errorf("of round %d", round)
		}
		if err != nil {
			return nil, fmt.Errorf("recorded %s: %w", what, err)
		}
		return m, nil
	}
	for i := range closed {
		switch secaggPhases[i] {
		case SecAggAdvertise:
			m, err := decode(sa.Roster, "roster")
			r, ok := m.(*secagg.Roster)
			if err != nil || !ok {
				return nil, errors.Join(err, errors.New("recorded roster is not a roster"))
			}
			out[i] = set()
			for _, k := range r.Keys {
				out[i][k.From] = true
			}
		case SecAggShare:
			out[i] = set()
			for name := range sa.Bundles {
				id, ok := sa.IDs[name]
				if !ok {
					return nil, fmt.Errorf("recorded bundle for %s, not a participant", name)
				}
				out[i][id] = true
			}
		case SecAggMask:
			m, err := decode(sa.Request, "request")
			r, ok := m.(*secagg.UnmaskRequest)
			if err != nil || !ok {
				return nil, errors.Join(err, errors.New("recorded request is not an unmasking request"))
			}
			out[i] = set(r.Survivors...)
		case SecAggCheck:
			m, err := decode(sa.Signatures, "signatures")
			r, ok := m.(*secagg.SurvivorSigs)
			if err != nil || !ok {
				return nil, errors.Join(err, errors.New("recorded signatures are not survivor-set signatures"))
			}
			out[i] = set()
			for _, s := range r.Sigs {
				out[i][s.From] = true
			}
		}
	}
	return out, nil
}
