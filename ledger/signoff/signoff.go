// Package signoff prepares the records of people's decisions about a model version, its approval (or rejection) and its release on a channel, checked against what the ledger already attests.
//
// A decision names the version's artifact by its SHA-256, taken from the record that
// produced the version (a local training or a federated round), so an approval cannot name
// a version the ledger does not know or an artifact other than the one it attests. When the
// person has the artifact in hand, its hash must be that one too. A release needs the
// latest decision on the version to be an approval of the same artifact: a version
// rejected after it was approved cannot be released until someone approves it again. And
// it needs a second person (four eyes): the key that releases is not the key of the
// approval, unless the person says they are the sole approver (ReleaseRequest.Sole),
// which the records show and `audit verify` with Options.FourEyes refuses.
//
// The package builds and checks bodies; signing them and anchoring them is the ledger
// outbox's work (ledger.Outbox, with the person's own key).
package signoff

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/millwright-io/millwright/ledger"
)

// Decisions of an approval record.
const (
	Approved = "approved"
	Rejected = "rejected"
)

// Version is what the ledger attests of a model version.
type Version struct {
	Ref ledger.ModelRef
	// Artifact is the SHA-256 of the version's artifact, as its producing record names it.
	Artifact string
	// Producer is the record that produced the version (local_training or
	// federated_round).
	Producer ledger.Record
	// About are every record about the version, the producer included, in ledger order.
	About []ledger.Record
}

// Find returns what q attests of m. An error wraps ledger.ErrNotFound when no record
// produced m.
func Find(ctx context.Context, q ledger.Querier, m ledger.ModelRef) (Version, error) {
	recs, err := q.Query(ctx, ledger.Query{Model: m})
	if err != nil {
		return Version{}, fmt.Errorf("records of %s: %w", m, err)
	}
	v := Version{Ref: m, About: recs}
	for _, rec := range recs {
		body, err := rec.DecodeBody()
		if err != nil {
			return Version{}, fmt.Errorf("record %s about %s: %w", rec.Header.ID, m, err)
		}
		if _, ok := body.(ledger.Producer); !ok {
			continue
		}
		_, hash, _ := ledger.ArtifactOf(body)
		if v.Artifact != "" && hash != v.Artifact {
			return Version{}, fmt.Errorf("%s is produced by two records naming different artifacts: %s (%s) and %s (%s)",
				m, v.Producer.Header.ID, v.Artifact, rec.Header.ID, hash)
		}
		v.Artifact, v.Producer = hash, rec
	}
	if v.Artifact == "" {
		return Version{}, fmt.Errorf("no record in the ledger produced %s (a local training or a federated round): %w", m, ledger.ErrNotFound)
	}
	return v, nil
}

// checkFile checks that file, the SHA-256 of the artifact the person has in hand ("" if
// none), is v's.
func (v Version) checkFile(file string) error {
	if file != "" && file != v.Artifact {
		return fmt.Errorf("the artifact in hand (sha256 %s) is not %s, whose artifact the ledger attests as sha256 %s", file, v.Ref, v.Artifact)
	}
	return nil
}

// Approval returns the body of a decision about v: approved when approve is set,
// rejected otherwise, with the person's reason. file is the SHA-256 of the artifact the
// person examined, or "". The body is validated.
func (v Version) Approval(approve bool, reason, file string) (ledger.Approval, error) {
	if err := v.checkFile(file); err != nil {
		return ledger.Approval{}, err
	}
	if reason == "" {
		return ledger.Approval{}, errors.New("reason: required: say what the decision rests on (acceptance criteria, evaluation, intended purpose)")
	}
	b := ledger.Approval{ModelRef: v.Ref, ArtifactHash: v.Artifact, Decision: Rejected, Reason: reason}
	if approve {
		b.Decision = Approved
	}
	return b, b.Validate()
}

// ReleaseRequest is what a person asks to release.
type ReleaseRequest struct {
	Channel string
	Notes   string // "" for none
	// File is the SHA-256 of the artifact the person has in hand, or "".
	File string
	// KeyID is the releasing person's key id (ledger.KeyID).
	KeyID string
	// Sole lets the person whose approval stands release the version too; without it a
	// release needs a second person.
	Sole bool
}

// ErrSameApprover is returned (wrapped) by Release when the person releasing a version is
// the one whose approval it rests on, and the request is not Sole.
var ErrSameApprover = errors.New("a release needs a second person (four eyes): it is signed by the key of the approval it rests on")

// Release returns the body of v's release as r asks. The latest decision about v must
// approve its artifact, and be another person's unless r.Sole.
func (v Version) Release(r ReleaseRequest) (ledger.Release, error) {
	channel, notes, file := r.Channel, r.Notes, r.File
	if err := v.checkFile(file); err != nil {
		return ledger.Release{}, err
	}
	last, err := v.Decision()
	if err != nil {
		return ledger.Release{}, err
	}
	b, _ := mustDecode(last).(ledger.Approval)
	who := fmt.Sprintf("%s (%s) at %s", last.Header.Actor.Name, last.Header.Actor.Org, last.Header.Time.Format(time.RFC3339))
	switch {
	case b.ArtifactHash != v.Artifact:
		return ledger.Release{}, fmt.Errorf("the latest decision about %s, by %s, names artifact sha256 %s, not the attested %s: approve the version again", v.Ref, who, b.ArtifactHash, v.Artifact)
	case b.Decision != Approved:
		return ledger.Release{}, fmt.Errorf("%s was %s by %s (%q): approve it before releasing it", v.Ref, b.Decision, who, b.Reason)
	case last.Header.Actor.KeyID == r.KeyID && !r.Sole:
		return ledger.Release{}, fmt.Errorf("%s was approved by %s: %w", v.Ref, who, ErrSameApprover)
	}
	rel := ledger.Release{ModelRef: v.Ref, ArtifactHash: v.Artifact, Channel: channel, Notes: notes}
	return rel, rel.Validate()
}

// Decision returns the latest approval record about v (approving or rejecting it); an
// error wrapping ledger.ErrNotFound when there is none.
func (v Version) Decision() (ledger.Record, error) {
	for i := len(v.About) - 1; i >= 0; i-- {
		if _, ok := mustDecode(v.About[i]).(ledger.Approval); ok {
			return v.About[i], nil
		}
	}
	return ledger.Record{}, fmt.Errorf("%s has no approval in the ledger: approve it before releasing it: %w", v.Ref, ledger.ErrNotFound)
}

// SignedOff says whether people signed v off: its latest approval approves its artifact,
// or a release names it (SignedOff of v.About).
func (v Version) SignedOff() bool { return SignedOff(v.About)[v.Artifact] }

// SignedOff returns the SHA-256 of every artifact that recs (records in ledger order,
// approvals and releases among them) sign off: one a release names, or whose latest
// approval approved it (a release candidate, which can still be released).
func SignedOff(recs []ledger.Record) map[string]bool {
	out, approved := map[string]bool{}, map[string]bool{}
	for _, rec := range recs {
		switch b := mustDecode(rec).(type) {
		case ledger.Release:
			out[b.ArtifactHash] = true
		case ledger.Approval:
			approved[b.ArtifactHash] = b.Decision == Approved
		}
	}
	for hash, ok := range approved {
		if ok {
			out[hash] = true
		}
	}
	return out
}

// mustDecode decodes the body of a record Find has decoded before (nil if it cannot).
func mustDecode(rec ledger.Record) ledger.Body {
	b, _ := rec.DecodeBody()
	return b
}
