package signoff_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/local"
	"github.com/millwright-io/millwright/ledger/signoff"
)

var (
	r3       = ledger.ModelRef{Model: "pumps", Version: "r3"}
	artifact = audittest.Hash([]byte("pumps r3"))
)

func round(output ledger.ModelRef, hash string) ledger.FederatedRound {
	return ledger.FederatedRound{Federation: output.Model, Round: 3, Participants: []string{"site-a", "site-b"}, Aggregation: "fedavg",
		InputUpdates: []string{audittest.Hash([]byte("a")), audittest.Hash([]byte("b"))}, Output: output, OutputHash: hash,
		Parents: []ledger.ModelRef{{Model: output.Model, Version: "r2"}}}
}

func find(t *testing.T, l *local.Ledger) signoff.Version {
	t.Helper()
	v, err := signoff.Find(context.Background(), l, r3)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestApproveThenRelease(t *testing.T) {
	l, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	hub := audittest.Writer(t, l, audittest.Signer(t, "hub", "oem"))
	aliceSigner := audittest.Signer(t, "Alice Martin", "oem")
	alice := audittest.Writer(t, l, aliceSigner)
	bob := audittest.Writer(t, l, audittest.Signer(t, "Bob Stone", "oem"))
	// Carol releases: a second person, not the approver (four eyes).
	carol := ledger.KeyID(audittest.Signer(t, "Carol Diaz", "oem").Public())
	release := func(channel, file string) (ledger.Release, error) {
		return find(t, l).Release(signoff.ReleaseRequest{Channel: channel, File: file, KeyID: carol})
	}

	if _, err := signoff.Find(context.Background(), l, r3); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Find before the round is recorded: %v, want ErrNotFound", err)
	}
	hub(round(r3, artifact))
	hub(round(ledger.ModelRef{Model: "pumps", Version: "r4"}, audittest.Hash([]byte("pumps r4"))))
	v := find(t, l)
	if v.Artifact != artifact || v.Producer.Header.Actor.Name != "hub" || len(v.About) != 1 {
		t.Fatalf("Find = %+v", v)
	}

	// Nothing to release before a decision; the checks of an approval.
	if _, err := release("stable", ""); !errors.Is(err, ledger.ErrNotFound) || !strings.Contains(err.Error(), "has no approval") {
		t.Errorf("release without approval: %v", err)
	}
	if _, err := v.Approval(true, "", ""); err == nil || !strings.Contains(err.Error(), "reason: required") {
		t.Errorf("approval without a reason: %v", err)
	}
	other := audittest.Hash([]byte("another file"))
	if _, err := v.Approval(true, "ok", other); err == nil || !strings.Contains(err.Error(), "is not pumps@r3") {
		t.Errorf("approval of another file: %v", err)
	}

	a, err := v.Approval(true, "meets the acceptance criteria", artifact)
	if err != nil {
		t.Fatal(err)
	}
	if a.Decision != signoff.Approved || a.ArtifactHash != artifact || a.ModelRef != r3 {
		t.Errorf("approval body %+v", a)
	}
	alice(a)
	rel, err := find(t, l).Release(signoff.ReleaseRequest{Channel: "stable", Notes: "first release", KeyID: carol})
	if err != nil {
		t.Fatal(err)
	}
	if rel.Channel != "stable" || rel.ArtifactHash != artifact || rel.Notes != "first release" {
		t.Errorf("release body %+v", rel)
	}
	// The approver releasing it too: refused, unless she says she is the sole approver.
	self := signoff.ReleaseRequest{Channel: "stable", KeyID: ledger.KeyID(aliceSigner.Public())}
	if _, err := find(t, l).Release(self); !errors.Is(err, signoff.ErrSameApprover) || !strings.Contains(err.Error(), "approved by Alice Martin (oem)") {
		t.Errorf("release by the approver: %v; want ErrSameApprover", err)
	}
	self.Sole = true
	if _, err := find(t, l).Release(self); err != nil {
		t.Errorf("release by the sole approver: %v", err)
	}
	if _, err := release("stable", other); err == nil || !strings.Contains(err.Error(), "is not pumps@r3") {
		t.Errorf("release of another file: %v", err)
	}
	if _, err := release("Not a channel!", ""); err == nil || !strings.Contains(err.Error(), "channel") {
		t.Errorf("release on an invalid channel: %v", err)
	}

	// A later rejection stands until someone approves the version again.
	rej, err := find(t, l).Approval(false, "drifts on the new pumps", "")
	if err != nil {
		t.Fatal(err)
	}
	bob(rej)
	if _, err := release("stable", ""); err == nil || !strings.Contains(err.Error(), "was rejected by Bob Stone (oem)") ||
		!strings.Contains(err.Error(), "drifts on the new pumps") {
		t.Errorf("release after a rejection: %v", err)
	}
	alice(a)
	if _, err := release("stable", ""); err != nil {
		t.Errorf("release after approving again: %v", err)
	}

	// An approval naming another artifact (written by some other tool) does not count.
	alice(ledger.Approval{ModelRef: r3, ArtifactHash: other, Decision: signoff.Approved, Reason: "wrong file"})
	if _, err := release("stable", ""); err == nil || !strings.Contains(err.Error(), "approve the version again") {
		t.Errorf("release after an approval of another artifact: %v", err)
	}
}

// TestFindRefusesTwoArtifacts: two producing records naming different artifacts for one
// version make it ambiguous; nobody can sign off on it.
func TestFindRefusesTwoArtifacts(t *testing.T) {
	l, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	hub := audittest.Writer(t, l, audittest.Signer(t, "hub", "oem"))
	hub(round(r3, artifact))
	hub(round(r3, audittest.Hash([]byte("forged"))))
	if _, err := signoff.Find(context.Background(), l, r3); err == nil || !strings.Contains(err.Error(), "two records naming different artifacts") {
		t.Errorf("Find = %v", err)
	}
}
