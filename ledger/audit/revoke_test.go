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
	if err := keys.CheckAfter(f.Approval, audit.After{Time: at}); !errors.Is(err, audit.ErrRevoked) || !strings.Contains(err.Error(), "follows one made at 2026-03-02T10:30:00Z (backdated)") {
		t.Errorf("approval after a later record: %v; want ErrRevoked, backdated", err)
	}
	if err := keys.CheckAfter(f.Approval, audit.After{Time: at, Appended: true}); !errors.Is(err, audit.ErrRevoked) ||
		!strings.Contains(err.Error(), "was appended to the ledger after 2026-03-02T10:30:00Z (backdated)") {
		t.Errorf("approval appended after the revocation: %v; want ErrRevoked, backdated", err)
	}
	if err := keys.CheckAfter(f.Approval, audit.After{Time: at.Add(-time.Second)}); err != nil {
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

// appendTimes is a ledger that vouches for when records were appended (ledger.AppendTimes),
// as Fabric's chaincode does.
type appendTimes struct {
	ledger.Querier
	at    map[string]time.Time // with a tolerance of a minute
	err   error
	asked int // ids asked for
}

func (a *appendTimes) Appended(_ context.Context, ids []string) (map[string]ledger.Appended, error) {
	a.asked += len(ids)
	out := map[string]ledger.Appended{}
	for _, id := range ids {
		if t, ok := a.at[id]; ok {
			out[id] = ledger.Appended{At: t, Tolerance: time.Minute}
		}
	}
	return out, a.err
}

// TestAppendTimesExposeBackdatedRecords: on a ledger that keeps append times (Fabric), a
// record of a revoked key dated before the revocation fails when the ledger appended it
// after, even when it signs off a version produced long before (which restOn cannot
// catch); appended before the revocation, it passes.
func TestAppendTimesExposeBackdatedRecords(t *testing.T) {
	ctx := context.Background()
	f := audittest.New(t)
	revoked := audittest.T0.Add(5*time.Hour + 30*time.Minute) // after every record of the fixture
	keys := keyringRevoking(t, f, revoked)
	rec := appendBackdated(t, f, revoked.Add(-15*time.Minute))
	verify := func(q ledger.Querier) audit.Result {
		t.Helper()
		res, err := audit.VerifyArtifact(ctx, q, f.Artifact, audit.Options{Keys: keys}) // no chain
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := verify(f.Open(t)); !res.OK {
		t.Fatalf("without append times only the record's own date counts: %s", res.Verdict)
	}
	// The ledger appended every record of the fixture when it was made, and the
	// backdated one half an hour after the revocation.
	all, err := f.Open(t).Query(ctx, ledger.Query{})
	if err != nil {
		t.Fatal(err)
	}
	times := map[string]time.Time{}
	for _, r := range all {
		times[r.Header.ID] = r.Header.Time
	}
	times[rec.Header.ID] = revoked.Add(31 * time.Minute) // a minute's tolerance: certainly after 12:00
	q := &appendTimes{Querier: f.Open(t), at: times}
	res := verify(q)
	if res.OK || !strings.Contains(res.Verdict, "record "+rec.Header.ID+": key revoked") ||
		!strings.Contains(res.Verdict, "dated 2026-03-02T11:15:00Z, was appended to the ledger after 2026-03-02T12:00:00Z (backdated)") {
		t.Errorf("a backdated approval appended after the revocation: %s", res.Verdict)
	}
	if q.asked != len(res.Checked) {
		t.Errorf("asked for the append times of %d records, checked %d", q.asked, len(res.Checked))
	}
	for _, c := range res.Checked {
		if c.Err != nil && c.Record.Header.ID != rec.Header.ID {
			t.Errorf("record %s (%s), appended when it was made: %v", c.Record.Header.ID, c.Record.Header.Type, c.Err)
		}
	}
	ev, err := audit.Collect(ctx, q, audittest.Model, audit.Options{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range ev.Approvals {
		if a.Record.ID == rec.Header.ID && (!strings.Contains(a.Record.Signature, "was appended to the ledger after") ||
			!a.Record.AppendedAt.Equal(revoked.Add(31*time.Minute)) || a.Record.AppendTolerance != "1m0s") {
			t.Errorf("the report's entry of the backdated approval: %+v", a.Record)
		}
	}
	// The report shows when each record was appended beside the time it bears.
	for _, format := range []string{"md", "html"} {
		out, err := audit.RenderReport(ev, format)
		if err != nil {
			t.Fatal(err)
		}
		if want := "2026-03-02T11:15:00Z (appended 2026-03-02T12:01:00Z ± 1m0s)"; !strings.Contains(string(out), want) {
			t.Errorf("the %s report lacks %q:\n%s", format, want, out)
		}
	}

	// Appended before the revocation, the same record is what it says.
	times[rec.Header.ID] = revoked.Add(-10 * time.Minute)
	if res := verify(q); !res.OK {
		t.Errorf("appended before the revocation: %s", res.Verdict)
	}
	// A ledger that cannot answer fails the audit rather than passing it unchecked.
	q.err = errors.New("peer unavailable")
	if _, err := audit.VerifyArtifact(ctx, q, f.Artifact, audit.Options{Keys: keys}); err == nil || !strings.Contains(err.Error(), "append times: peer unavailable") {
		t.Errorf("append times unavailable: %v", err)
	}
}
