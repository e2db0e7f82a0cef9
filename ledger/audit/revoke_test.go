package audit_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/local"
)

// fixtureKeyring is the fixture's keyring, written and parsed, with Alice's key as alice
// changes it.
func fixtureKeyring(t *testing.T, f *audittest.Fixture, alice func(*audit.Key)) *audit.Keyring {
	t.Helper()
	var lines []string
	for _, name := range []string{"gw-a", "gw-b", "hub", "alice"} {
		s := f.Signers[name]
		k := audit.Key{Name: s.Actor().Name, Org: s.Actor().Org, Public: s.Public()}
		if name == "alice" {
			alice(&k)
		}
		lines = append(lines, audit.FormatKey(k))
	}
	keys, err := audit.ParseKeyring([]byte(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// keyringRevoking is the fixture's keyring with Alice's key revoked at at.
func keyringRevoking(t *testing.T, f *audittest.Fixture, at time.Time) *audit.Keyring {
	t.Helper()
	return fixtureKeyring(t, f, func(k *audit.Key) { k.Revoked = at })
}

func TestParseRevokedKey(t *testing.T) {
	f := audittest.New(t)
	at := audittest.T0.Add(4*time.Hour + 30*time.Minute)
	keys := keyringRevoking(t, f, at)
	// Alice approved before the revocation and released after it.
	if err := keys.Check(f.Approval); err != nil {
		t.Errorf("approval before the revocation: %v", err)
	}
	if err := keys.Check(f.Release); !errors.Is(err, audit.ErrRevoked) || !strings.Contains(err.Error(), "revoked at 2026-03-02T10:30:00Z, and the record was made at 2026-03-02T11:00:00Z") {
		t.Errorf("release after the revocation: %v; want ErrRevoked", err)
	}
	// What the ledger's order says: the approval held after a record made past the revocation.
	if err := keys.CheckAfter(f.Approval, at); !errors.Is(err, audit.ErrRevoked) || !strings.Contains(err.Error(), "(backdated)") {
		t.Errorf("approval after a later record: %v; want ErrRevoked, backdated", err)
	}
	if err := keys.CheckAfter(f.Approval, at.Add(-time.Second)); err != nil {
		t.Errorf("approval after an earlier record: %v", err)
	}
	if _, err := audit.ParseKeyring([]byte("Alice Martin oem " + strings.Fields(audit.FormatKey(audit.Key{Public: f.Signers["alice"].Public()}))[0] + " revoked=yesterday\n")); err == nil ||
		!strings.Contains(err.Error(), `line 1: "revoked=yesterday" is not a revocation time, expected revoked=RFC3339`) {
		t.Errorf("a bad revocation time: %v", err)
	}
}

// TestVerifyRevokedKeys: records made with a key after its revocation fail verification;
// one dated before it but appended to the local ledger after later records (backdated
// with the stolen key) fails too, because the chain's order is append order.
func TestVerifyRevokedKeys(t *testing.T) {
	ctx := context.Background()
	f := audittest.New(t)
	verify := func(keys *audit.Keyring, chain bool) audit.Result {
		t.Helper()
		opts := audit.Options{Keys: keys}
		if chain {
			opts.Chain = audit.LocalChain(f.Dir)
		}
		res, err := audit.VerifyArtifact(ctx, f.Open(t), f.Artifact, opts)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := verify(keyringRevoking(t, f, audittest.T0.Add(4*time.Hour+30*time.Minute)), true); res.OK ||
		!strings.Contains(res.Verdict, "key revoked: the key of Alice Martin (oem) was revoked at 2026-03-02T10:30:00Z") {
		t.Errorf("release after the revocation: %s", res.Verdict)
	}
	after := keyringRevoking(t, f, audittest.T0.Add(5*time.Hour+30*time.Minute))
	if res := verify(after, true); !res.OK {
		t.Fatalf("every record before the revocation: %s", res.Verdict)
	}

	// Someone with Alice's key approves the model again, dated before the revocation, once
	// the ledger holds records of the next day (the alarm digests).
	rec := appendBackdated(t, f, audittest.T0.Add(5*time.Hour+15*time.Minute))
	if res := verify(after, true); res.OK || !strings.Contains(res.Verdict, "record "+rec.Header.ID+": key revoked") ||
		!strings.Contains(res.Verdict, "follows one made at 2026-03-03T12:00:00Z (backdated)") {
		t.Errorf("a backdated record of the revoked key: %s", res.Verdict)
	}
	// Without the chain's order only the record's own date counts: the limit on a ledger
	// whose order is not append order (Fabric's, by record time).
	if res := verify(after, false); !res.OK {
		t.Errorf("by the record's own date alone: %s", res.Verdict)
	}
}

// appendBackdated appends to the fixture's ledger an approval of its model signed with
// Alice's key and dated at, after every record the fixture holds, and returns it.
func appendBackdated(t *testing.T, f *audittest.Fixture, at time.Time) ledger.Record {
	t.Helper()
	body, err := ledger.CanonicalMarshal(ledger.Approval{ModelRef: audittest.Model, ArtifactHash: audittest.Hash(audittest.Artifact),
		Decision: "approved", Reason: "backdated"})
	if err != nil {
		t.Fatal(err)
	}
	prev, err := ledger.Hash(f.Release) // Alice's last record
	if err != nil {
		t.Fatal(err)
	}
	rec, err := f.Signers["alice"].Sign(ledger.Record{Header: ledger.Header{ID: ledger.NewID(), SchemaVersion: ledger.SchemaVersion,
		Type: ledger.TypeApproval, Time: at, Site: "hub", Prev: prev}, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	l, err := local.Open(f.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Anchor(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestRevokedKeyCannotSignOffLaterVersions: on a ledger whose order is not append order
// (Fabric's), a record of a revoked key dated before the revocation still fails when it
// signs off a version produced after the revocation: it cannot have been made before the
// version was.
func TestRevokedKeyCannotSignOffLaterVersions(t *testing.T) {
	f := audittest.New(t)
	// The hub produced the model at T0+2h; Alice's key was revoked at T0+1h30m; someone
	// with it approves the model, dated T0+1h.
	rec := appendBackdated(t, f, audittest.T0.Add(time.Hour))
	keys := keyringRevoking(t, f, audittest.T0.Add(time.Hour+30*time.Minute))
	res, err := audit.VerifyArtifact(context.Background(), f.Open(t), f.Artifact, audit.Options{Keys: keys}) // no chain
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || !strings.Contains(res.Verdict, "record "+rec.Header.ID+": key revoked") ||
		!strings.Contains(res.Verdict, "dated 2026-03-02T07:00:00Z, follows one made at 2026-03-02T08:00:00Z (backdated)") {
		t.Errorf("a backdated approval of a version produced after the revocation: %s", res.Verdict)
	}
	for _, c := range res.Checked {
		if c.Record.Header.Type == ledger.TypeFederatedRound && c.Err != nil {
			t.Errorf("the round that produced the version: %v", c.Err)
		}
	}
	// The evidence report marks its signature the same way.
	ev, err := audit.Collect(context.Background(), f.Open(t), audittest.Model, audit.Options{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range ev.Approvals {
		if a.Record.ID == rec.Header.ID {
			found = true
			if !strings.HasPrefix(a.Record.Signature, "INVALID") || !strings.Contains(a.Record.Signature, "(backdated)") {
				t.Errorf("the report's signature of the backdated approval: %s", a.Record.Signature)
			}
		}
	}
	if !found {
		t.Errorf("the report lists no approval %s", rec.Header.ID)
	}
}
