package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/local"
)

// ChainStatus describes a verified chain.
type ChainStatus struct {
	Backend string `json:"backend"`
	Entries int64  `json:"entries"`
	Head    string `json:"head"` // hash of the last entry: compare it with a copy kept elsewhere
	Torn    int64  `json:"torn,omitempty"`
}

// ChainVerifier checks the integrity of a backend's store as a whole, beyond the records'
// signatures. The local ledger has one (LocalChain); a backend whose integrity its
// network guarantees needs none.
type ChainVerifier interface {
	// VerifyChain checks the whole store; an error says where it is broken.
	VerifyChain(ctx context.Context) (ChainStatus, error)
}

// LocalChain verifies the hash chain of the local ledger in a directory with
// local.VerifyFile. It reads the file only. Signatures are checked by the audit itself,
// with its Keyring, so that an unknown signer is reported per record rather than as a
// broken chain.
type LocalChain string

// VerifyChain implements ChainVerifier. An error wraps a *local.VerifyError naming the
// entry and its byte offset.
func (d LocalChain) VerifyChain(ctx context.Context) (ChainStatus, error) {
	if err := ctx.Err(); err != nil {
		return ChainStatus{}, err
	}
	rep, err := local.VerifyFile(filepath.Join(string(d), local.FileName), nil)
	st := ChainStatus{Backend: "local", Entries: rep.Entries, Head: rep.Head, Torn: rep.Torn}
	if err != nil {
		return st, fmt.Errorf("local ledger %s: %w", string(d), err)
	}
	return st, nil
}

// Options are what an audit checks records against.
type Options struct {
	// Keys are the trusted keys. Nil: signatures are not checked, and VerifyArtifact
	// cannot verify anything.
	Keys *Keyring
	// Chain checks the backend's store as a whole; nil when the backend has none. A
	// backend with a chain answers queries in the chain's order, the order records were
	// appended in, and VerifyArtifact relies on it to expose backdated records of revoked
	// keys (Keyring.CheckAfter).
	Chain ChainVerifier
	// Now, when set, stamps reports with the time they were generated.
	Now func() time.Time
	// Digest computes the identity of an artifact file that the records name; nil is
	// HashFile (the SHA-256 of the file's bytes). A format whose identity is the hash of
	// a part of the file (a model file's body inside its envelope) passes a Digest that
	// checks the file and returns that hash.
	Digest func(path string) (string, error)
	// FourEyes makes a release signed by the key of the approval it rests on (the approver
	// releasing the version too, `models release --sole-approver`) a problem: the
	// artifact is then not verified.
	FourEyes bool
	// Model, when set, is the version the artifact must be: the records naming its hash
	// as another version (another federation's, another round's) are then a problem, not
	// its lineage.
	Model *ledger.ModelRef
}

// RecordCheck is the outcome of checking one record's signature.
type RecordCheck struct {
	Record ledger.Record
	Err    error // nil: the signature is valid and the actor matches the keyring
}

// Result is the outcome of VerifyArtifact.
type Result struct {
	Path   string
	SHA256 string
	// Models are the versions whose records name the artifact's hash.
	Models []ledger.ModelRef
	// Named are the records naming the hash (training, round output, evaluation, approval,
	// release, deployment), in ledger order.
	Named []ledger.Record
	// Checked are every record of the evidence (Named, the lineage of Models, every record
	// about Models), in ledger order, with their signature check.
	Checked []RecordCheck
	Chain   *ChainStatus // nil when no chain was checked
	// Problems say why the artifact is not verified; empty when OK.
	Problems []string
	OK       bool
	Verdict  string
}

// HashFile returns the lower-case hex SHA-256 of the file at path.
func HashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hash artifact: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash artifact %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// VerifyArtifact checks that the file at path is a model version the ledger attests: it
// hashes the file (opts.Digest), finds the records naming that hash, checks the signature of every
// record of the evidence (those, the lineage of the version and every record about it)
// with opts.Keys, checks that no record gives the version another artifact, and runs
// opts.Chain. The returned error is for failures to read the file or query the ledger; a
// failed verification is a Result with OK false and its Problems.
//
// It scans every record of the ledger for the hash (ledger.Query cannot select by hash).
func VerifyArtifact(ctx context.Context, q ledger.Querier, path string, opts Options) (Result, error) {
	digest := opts.Digest
	if digest == nil {
		digest = HashFile
	}
	sum, err := digest(path)
	if err != nil {
		return Result{}, err
	}
	res := Result{Path: path, SHA256: sum}
	all, err := q.Query(ctx, ledger.Query{})
	if err != nil {
		return Result{}, fmt.Errorf("verify artifact: query the ledger: %w", err)
	}
	order := make(map[string]int, len(all))
	// before is, for each record, what the ledger shows it came after (After): with a
	// chain (the local ledger), the records the ledger holds before it, as ledger order is
	// append order; on any ledger, the records that produced the version it is about
	// (restOn); on a ledger that keeps append times (Fabric), that time (appendedOn). A
	// backdated record of a revoked key can fake none of them (Keyring.CheckAfter).
	before := make(map[string]After, len(all))
	var latest time.Time
	for i, rec := range all {
		order[rec.Header.ID] = i
		if opts.Chain != nil {
			before[rec.Header.ID] = After{Time: latest}
			if rec.Header.Time.After(latest) {
				latest = rec.Header.Time
			}
		}
		body, err := rec.DecodeBody()
		if err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("record %s: %v", rec.Header.ID, err))
			continue
		}
		if m, h, ok := ledger.ArtifactOf(body); ok && h == sum {
			res.Named = append(res.Named, rec)
			if !slices.Contains(res.Models, m) {
				res.Models = append(res.Models, m)
			}
		}
	}
	if opts.Chain != nil {
		st, err := opts.Chain.VerifyChain(ctx)
		res.Chain = &st
		if err != nil {
			res.Problems = append(res.Problems, "chain broken: "+err.Error())
		}
	}
	if len(res.Named) == 0 {
		res.Problems = append([]string{"no record names this artifact"}, res.Problems...)
		res.Verdict = fmt.Sprintf("NOT VERIFIED: artifact %s (sha256:%s): %s", path, sum, strings.Join(res.Problems, "; "))
		return res, nil
	}
	if len(res.Models) > 1 {
		res.Problems = append(res.Problems, fmt.Sprintf("the artifact is named as %d model versions: %s", len(res.Models), joinRefs(res.Models)))
	}
	if m := opts.Model; m != nil && !slices.Equal(res.Models, []ledger.ModelRef{*m}) {
		res.Problems = append(res.Problems, fmt.Sprintf("the artifact is recorded as %s, not as %s", joinRefs(res.Models), m))
	}
	evidence := map[string]ledger.Record{}
	for _, rec := range res.Named {
		evidence[rec.Header.ID] = rec
	}
	for _, m := range res.Models {
		tree, err := Lineage(ctx, q, m)
		switch {
		case errors.Is(err, ledger.ErrNotFound):
			res.Problems = append(res.Problems, fmt.Sprintf("no record produced %s", m))
		case err != nil:
			return Result{}, fmt.Errorf("verify artifact: %w", err)
		default:
			for _, rec := range tree.Records() {
				evidence[rec.Header.ID] = rec
			}
			if len(tree.Lineage.Missing) > 0 {
				res.Problems = append(res.Problems, fmt.Sprintf("the lineage of %s names records the ledger does not hold: %s", m, strings.Join(tree.Lineage.Missing, ", ")))
			}
		}
		about, err := q.Query(ctx, ledger.Query{Model: m})
		if err != nil {
			return Result{}, fmt.Errorf("verify artifact: query records about %s: %w", m, err)
		}
		restOn(before, m, about)
		for _, rec := range about {
			evidence[rec.Header.ID] = rec
			body, err := rec.DecodeBody()
			if err != nil {
				continue // reported above
			}
			if am, h, ok := ledger.ArtifactOf(body); ok && am == m && h != sum {
				res.Problems = append(res.Problems, fmt.Sprintf("record %s (%s by %s) gives %s the artifact sha256:%s, not this one",
					rec.Header.ID, rec.Header.Type, rec.Header.Actor.Name, m, short(h)))
			}
		}
		res.Problems = append(res.Problems, unapprovedReleases(m, about, opts.FourEyes)...)
	}
	recs := make([]ledger.Record, 0, len(evidence))
	for _, rec := range evidence {
		recs = append(recs, rec)
	}
	slices.SortFunc(recs, func(a, b ledger.Record) int { return order[a.Header.ID] - order[b.Header.ID] })
	if _, err := appendedOn(ctx, q, before, recs); err != nil {
		return Result{}, fmt.Errorf("verify artifact: %w", err)
	}
	bad := 0
	for _, rec := range recs {
		var err error
		if opts.Keys == nil {
			err = errors.New("signature not checked: no keyring")
		} else {
			err = opts.Keys.CheckAfter(rec, before[rec.Header.ID])
		}
		res.Checked = append(res.Checked, RecordCheck{Record: rec, Err: err})
		if err != nil {
			bad++
			res.Problems = append(res.Problems, fmt.Sprintf("%s record %s: %v", rec.Header.Type, rec.Header.ID, err))
		}
	}
	res.OK = len(res.Problems) == 0
	what := fmt.Sprintf("artifact sha256:%s is model %s", short(sum), joinRefs(res.Models))
	if rel := releases(res.Named); rel != "" {
		what += ", released by " + rel
	} else {
		what += ", not released"
	}
	if res.OK {
		chain := "no chain to check"
		if res.Chain != nil {
			chain = fmt.Sprintf("chain intact (%d entries, head %s)", res.Chain.Entries, short(res.Chain.Head))
		}
		res.Verdict = fmt.Sprintf("VERIFIED: %s; %d records, all signatures valid, %s", what, len(recs), chain)
	} else {
		res.Verdict = fmt.Sprintf("NOT VERIFIED: %s; %d records, %d failed their check; %s", what, len(recs), bad, strings.Join(res.Problems, "; "))
	}
	return res, nil
}

// restOn raises before, for every record among about (the records about m) that does
// not produce m, to the latest time of the records that produced m: an evaluation,
// approval, release or deployment of a version cannot be made before the version was.
// The producing records are signed by other keys (the hub's, a gateway's), so on a ledger
// whose order is not append order (Fabric's), a record of a revoked key that signs off a
// version produced after the revocation is caught, however early it says it was made.
func restOn(before map[string]After, m ledger.ModelRef, about []ledger.Record) {
	var made time.Time
	producers := map[string]bool{}
	for _, rec := range about {
		if p, ok := decoded(rec).(ledger.Producer); ok {
			if v, _, _ := p.Produces(); v == m {
				producers[rec.Header.ID] = true
				if rec.Header.Time.After(made) {
					made = rec.Header.Time
				}
			}
		}
	}
	for _, rec := range about {
		if id := rec.Header.ID; !producers[id] {
			a := before[id]
			a.raise(made, false)
			before[id] = a
		}
	}
}

// appendedOn raises before, for each of recs whose append time q vouches for
// (ledger.AppendTimes), to the time the record was certainly appended after, and returns
// those append times. A ledger without append times changes nothing.
func appendedOn(ctx context.Context, q ledger.Querier, before map[string]After, recs []ledger.Record) (map[string]ledger.Appended, error) {
	at, ok := q.(ledger.AppendTimes)
	if !ok || len(recs) == 0 {
		return nil, nil
	}
	ids := make([]string, len(recs))
	for i, rec := range recs {
		ids[i] = rec.Header.ID
	}
	times, err := at.Appended(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("append times: %w", err)
	}
	for id, t := range times {
		a := before[id]
		a.raise(t.After(), true)
		before[id] = a
	}
	return times, nil
}

// unapprovedReleases says which releases among about (the records about m, in ledger
// order) had no standing approval when they were made: no decision about m before them, or
// a latest decision that rejected it; with fourEyes, also those signed by the key of the
// approval they rest on.
func unapprovedReleases(m ledger.ModelRef, about []ledger.Record, fourEyes bool) []string {
	var problems []string
	var last *ledger.Approval
	var lastRec ledger.Record
	for _, rec := range about {
		switch b := decoded(rec).(type) {
		case ledger.Approval:
			last, lastRec = &b, rec
		case ledger.Release:
			who := fmt.Sprintf("%s on %s by %s (%s) at %s", m, b.Channel, rec.Header.Actor.Name, rec.Header.Actor.Org, rec.Header.Time.Format(time.RFC3339))
			switch {
			case last == nil:
				problems = append(problems, "released "+who+" without an approval before it")
			case last.Decision != "approved":
				problems = append(problems, fmt.Sprintf("released %s while the latest decision was %s by %s (%s)", who, last.Decision,
					lastRec.Header.Actor.Name, lastRec.Header.Actor.Org))
			case fourEyes && lastRec.Header.Actor.KeyID == rec.Header.Actor.KeyID:
				problems = append(problems, "released "+who+" with the key that approved it: no second person (four eyes)")
			}
		}
	}
	return problems
}

// decoded is rec's body, nil when it does not decode (reported elsewhere).
func decoded(rec ledger.Record) ledger.Body {
	b, _ := rec.DecodeBody()
	return b
}

// releases describes the release records among recs.
func releases(recs []ledger.Record) string {
	var out []string
	for _, rec := range recs {
		if body, err := rec.DecodeBody(); err == nil {
			if r, ok := body.(ledger.Release); ok {
				out = append(out, fmt.Sprintf("%s (%s) on %s at %s", rec.Header.Actor.Name, rec.Header.Actor.Org, r.Channel, rec.Header.Time.Format(time.RFC3339)))
			}
		}
	}
	return strings.Join(out, " and ")
}

func joinRefs(ms []ledger.ModelRef) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.String()
	}
	return strings.Join(s, ", ")
}
