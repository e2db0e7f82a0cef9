package signoff_test

import (
	"context"
	"errors"
	"path/filepath"
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

// writer records through an outbox of its own into a shared local ledger, as the hub and
// a person's sign-off command do.
type writer struct {
	t  *testing.T
	ob *ledger.Outbox
}

func newWriter(t *testing.T, l *local.Ledger, name, org string) writer {
	t.Helper()
	ob, err := ledger.Open(ledger.Config{Dir: filepath.Join(t.TempDir(), "outbox"), Site: org}, audittest.Signer(t, name, org), l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close() })
	return writer{t, ob}
}

func (w writer) record(body ledger.Body) {
	w.t.Helper()
	if _, err := w.ob.Record(context.Background(), body); err != nil {
		w.t.Fatal(err)
	}
	if err := w.ob.Drain(context.Background()); err != nil {
		w.t.Fatal(err)
	}
}

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
	hub, alice, bob := newWriter(t, l, "hub", "oem"), newWriter(t, l, "Alice Martin", "oem"), newWriter(t, l, "Bob Stone", "oem")

	if _, err := signoff.Find(context.Background(), l, r3); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Find before the round is recorded: %v, want ErrNotFound", err)
	}
	hub.record(round(r3, artifact))
	hub.record(round(ledger.ModelRef{Model: "pumps", Version: "r4"}, audittest.Hash([]byte("pumps r4"))))
	v := find(t, l)
	if v.Artifact != artifact || v.Producer.Header.Actor.Name != "hub" || len(v.About) != 1 {
		t.Fatalf("Find = %+v", v)
	}

	// Nothing to release before a decision; the checks of an approval.
	if _, err := v.Release("stable", "", ""); !errors.Is(err, ledger.ErrNotFound) || !strings.Contains(err.Error(), "has no approval") {
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
	alice.record(a)
	rel, err := find(t, l).Release("stable", "first release", "")
	if err != nil {
		t.Fatal(err)
	}
	if rel.Channel != "stable" || rel.ArtifactHash != artifact {
		t.Errorf("release body %+v", rel)
	}
	if _, err := find(t, l).Release("stable", "", other); err == nil || !strings.Contains(err.Error(), "is not pumps@r3") {
		t.Errorf("release of another file: %v", err)
	}
	if _, err := find(t, l).Release("Not a channel!", "", ""); err == nil || !strings.Contains(err.Error(), "channel") {
		t.Errorf("release on an invalid channel: %v", err)
	}

	// A later rejection stands until someone approves the version again.
	rej, err := find(t, l).Approval(false, "drifts on the new pumps", "")
	if err != nil {
		t.Fatal(err)
	}
	bob.record(rej)
	if _, err := find(t, l).Release("stable", "", ""); err == nil || !strings.Contains(err.Error(), "was rejected by Bob Stone (oem)") ||
		!strings.Contains(err.Error(), "drifts on the new pumps") {
		t.Errorf("release after a rejection: %v", err)
	}
	alice.record(a)
	if _, err := find(t, l).Release("stable", "", ""); err != nil {
		t.Errorf("release after approving again: %v", err)
	}

	// An approval naming another artifact (written by some other tool) does not count.
	alice.record(ledger.Approval{ModelRef: r3, ArtifactHash: other, Decision: signoff.Approved, Reason: "wrong file"})
	if _, err := find(t, l).Release("stable", "", ""); err == nil || !strings.Contains(err.Error(), "approve the version again") {
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
	hub := newWriter(t, l, "hub", "oem")
	hub.record(round(r3, artifact))
	hub.record(round(r3, audittest.Hash([]byte("forged"))))
	if _, err := signoff.Find(context.Background(), l, r3); err == nil || !strings.Contains(err.Error(), "two records naming different artifacts") {
		t.Errorf("Find = %v", err)
	}
}
