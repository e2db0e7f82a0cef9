package audit_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
)

// keyringLimiting is the fixture's keyring with Alice's key limited to records.
func keyringLimiting(t *testing.T, f *audittest.Fixture, records ...ledger.Type) *audit.Keyring {
	t.Helper()
	return fixtureKeyring(t, f, func(k *audit.Key) { k.Records = records })
}

func TestParseKeyRecords(t *testing.T) {
	f := audittest.New(t)
	keys := keyringLimiting(t, f, ledger.TypeApproval)
	if err := keys.Check(f.Approval); err != nil {
		t.Errorf("an approval by a key that may approve: %v", err)
	}
	if err := keys.Check(f.Release); !errors.Is(err, audit.ErrNotPermitted) ||
		!strings.Contains(err.Error(), "Alice Martin (oem) may sign approval records, and this is a release record") {
		t.Errorf("a release by a key that may only approve: %v; want ErrNotPermitted", err)
	}
	if err := keyringLimiting(t, f, ledger.TypeApproval, ledger.TypeRelease).Check(f.Release); err != nil {
		t.Errorf("a release by a key that may approve and release: %v", err)
	}

	key := strings.Fields(audit.FormatKey(audit.Key{Public: f.Signers["alice"].Public()}))[0]
	// Both optional fields, in either order.
	for _, opts := range []string{"records=approval,release revoked=2026-03-02T10:30:00Z", "revoked=2026-03-02T10:30:00Z records=approval,release,approval"} {
		k, err := audit.ParseKeyring([]byte("Alice Martin oem " + key + " " + opts + "\n"))
		if err != nil {
			t.Fatalf("%s: %v", opts, err)
		}
		if err := k.Check(f.Release); !errors.Is(err, audit.ErrRevoked) {
			t.Errorf("%s: the release after the revocation: %v; want ErrRevoked", opts, err)
		}
		if err := k.Check(f.Approval); err != nil {
			t.Errorf("%s: the approval before it: %v", opts, err)
		}
	}
	refusesLines(t, map[string]string{
		"Alice Martin oem " + key + " records=approval,sign-off":        `line 1: records=: "sign-off" is not a record type, expected a comma-separated list of dataset_snapshot, local_training,`,
		"Alice Martin oem " + key + " records=":                         `line 1: records=: "" is not a record type`,
		"Alice Martin oem " + key + " records=approval records=release": "line 1: records= appears twice, expected it at most once",
		"oem " + key + " records=approval":                              "line 1: has 2 field(s), expected NAME ORG BASE64-ED25519-PUBLIC-KEY",
	})
}

// TestKeyChannels: a key limited to channels may release on those only; its other records
// are not affected, and the option parses in any order with the others.
func TestKeyChannels(t *testing.T) {
	f := audittest.New(t)
	limit := func(channels ...string) *audit.Keyring {
		return fixtureKeyring(t, f, func(k *audit.Key) { k.Channels = channels })
	}
	if err := limit("beta").Check(f.Release); !errors.Is(err, audit.ErrNotPermitted) ||
		!strings.Contains(err.Error(), "Alice Martin (oem) may release on beta, and this release is on stable") {
		t.Errorf("a stable release by a key limited to beta: %v; want ErrNotPermitted", err)
	}
	if err := limit("beta", "stable").Check(f.Release); err != nil {
		t.Errorf("a stable release by a key that may release on beta and stable: %v", err)
	}
	if err := limit("beta").Check(f.Approval); err != nil {
		t.Errorf("an approval by a key limited to beta releases: %v", err)
	}
	key := strings.Fields(audit.FormatKey(audit.Key{Public: f.Signers["alice"].Public()}))[0]
	k, err := audit.ParseKeyring([]byte("Alice Martin oem " + key + " channels=stable records=approval,release revoked=2026-03-03T00:00:00Z\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Check(f.Release); err != nil {
		t.Errorf("all three options: %v", err)
	}
	refusesLines(t, map[string]string{
		"Alice Martin oem " + key + " channels=stable,":      `line 1: channels=: "" is not a channel name`,
		"Alice Martin oem " + key + " channels=-beta":        `line 1: channels=: "-beta" is not a channel name`,
		"Alice Martin oem " + key + " channels=a channels=b": "line 1: channels= appears twice",
	})
}

// TestKeyModels: a key limited to some models may approve and release those (by name or
// by a prefix ending in *) and no other; its records about other things are not affected.
func TestKeyModels(t *testing.T) {
	f := audittest.New(t)
	limit := func(models ...string) *audit.Keyring {
		return fixtureKeyring(t, f, func(k *audit.Key) { k.Models = models })
	}
	for _, rec := range []ledger.Record{f.Approval, f.Release} {
		if err := limit("press-anomaly", "anomaly.*").Check(rec); !errors.Is(err, audit.ErrNotPermitted) ||
			!strings.Contains(err.Error(), "Alice Martin (oem) may sign off press-anomaly and anomaly.*, and this "+string(rec.Header.Type)+" is of pump-anomaly@2") {
			t.Errorf("a %s of pump-anomaly by a key limited to other models: %v; want ErrNotPermitted", rec.Header.Type, err)
		}
		for _, models := range [][]string{{"pump-anomaly"}, {"press-anomaly", "pump-*"}, {"pump-anomaly*"}} {
			if err := limit(models...).Check(rec); err != nil {
				t.Errorf("a %s of pump-anomaly by a key that may sign off %v: %v", rec.Header.Type, models, err)
			}
		}
	}
	if err := limit("press-anomaly").Check(f.Eval); err != nil {
		t.Errorf("an evaluation by a key limited to sign-offs of press-anomaly: %v", err)
	}
	key := strings.Fields(audit.FormatKey(audit.Key{Public: f.Signers["alice"].Public()}))[0]
	line := "Alice Martin oem " + key + " models=pump-*,press-anomaly channels=stable records=approval,release"
	k, err := audit.ParseKeyring([]byte(line + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Check(f.Release); err != nil {
		t.Errorf("%q: %v", line, err)
	}
	refusesLines(t, map[string]string{
		"Alice Martin oem " + key + " models=pump-anomaly,": `line 1: models=: "" is not a model name`,
		"Alice Martin oem " + key + " models=*":             `line 1: models=: "*" is not a model name`,
		"Alice Martin oem " + key + " models=pump*anomaly":  `line 1: models=: "pump*anomaly" is not a model name`,
		"Alice Martin oem " + key + " models=a models=b":    "line 1: models= appears twice",
	})
}

// TestVerifyKeepsDutiesApart: a release signed by a key that may only approve is not
// verified, so an auditor's keyring enforces who may release on records written by anyone.
func TestVerifyKeepsDutiesApart(t *testing.T) {
	f := audittest.New(t)
	verify := func(keys *audit.Keyring) audit.Result {
		t.Helper()
		res, err := audit.VerifyArtifact(context.Background(), f.Open(t), f.Artifact, audit.Options{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := verify(keyringLimiting(t, f, ledger.TypeApproval)); res.OK || !strings.Contains(res.Verdict, "record type not permitted for the key") {
		t.Errorf("a release by a key that may only approve: %s", res.Verdict)
	}
	if res := verify(keyringLimiting(t, f, ledger.TypeApproval, ledger.TypeRelease)); !res.OK {
		t.Errorf("a key that may approve and release: %s", res.Verdict)
	}
}

// refusesLines checks that each keyring line of lines is refused with an error that
// contains the line's value.
func refusesLines(t *testing.T, lines map[string]string) {
	t.Helper()
	for line, want := range lines {
		if _, err := audit.ParseKeyring([]byte(line + "\n")); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want %q", line, err, want)
		}
	}
}
