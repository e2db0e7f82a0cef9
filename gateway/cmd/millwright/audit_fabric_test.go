package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/fabric"
	"github.com/millwright-io/millwright/ledger/fabric/fabrictest"
)

// TestAuditFabric runs `millwright audit lineage|verify|report --fabric .fabric/env`
// against the test network, the auditor organisation reading what the factories and the
// OEM anchored.
func TestAuditFabric(t *testing.T) {
	fabrictest.Require(t)
	envFile := os.Getenv("MILLWRIGHT_FABRIC_DIR") + "/env"
	f := audittest.New(t)
	ctx := context.Background()
	clients := map[string]*fabric.Client{}
	for _, s := range f.Signers {
		if clients[s.Actor().Org] == nil {
			clients[s.Actor().Org] = fabrictest.Client(t, s.Actor().Org)
		}
		if err := clients[s.Actor().Org].RegisterKey(ctx, s.Actor().Name, s.Public()); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range f.All {
		if err := clients[r.Header.Actor.Org].Anchor(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := cmdAudit(ctx, args, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"lineage", "pump-anomaly@2", "--fabric", envFile}, 0, "pump-anomaly@1-b"},
		{[]string{"verify", f.Artifact, "--fabric", envFile, "--org", "factory-a", "--keys", f.KeysFile}, 0, "VERIFIED"},
		{[]string{"report", "pump-anomaly@2", "--format", "json", "--fabric", envFile, "--keys", f.KeysFile}, 0, `"pump-anomaly"`},
		// Each record with when the chaincode appended it (today, not the day it bears).
		{[]string{"report", "pump-anomaly@2", "--format", "json", "--fabric", envFile, "--keys", f.KeysFile}, 0, `"append_tolerance": "5m0s"`},
		{[]string{"lineage", "no-such@1", "--fabric", envFile}, 1, "not found"},
		{[]string{"lineage", "pump-anomaly@2", "--fabric", envFile, "--org", "nobody"}, 1, "MILLWRIGHT_FABRIC_NOBODY_"},
		{[]string{"lineage", "pump-anomaly@2", "--fabric", envFile, "--ledger", t.TempDir()}, 2, "one of --ledger"},
	} {
		code, out := run(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("audit %s: exit %d, want %d with %q:\n%s", strings.Join(tc.args, " "), code, tc.code, tc.want, out)
		}
		if tc.args[0] == "report" && code == 0 && !json.Valid([]byte(out)) {
			t.Errorf("report is not JSON:\n%.300s", out)
		}
	}
}

// TestModelsSignoffFabric: an OEM engineer approves a version on Fabric with a key of her
// own, which the command registers for the OEM organisation on first use; she cannot
// release it herself, a second engineer does (four eyes); the auditor organisation then
// reads the release in `audit verify --four-eyes`.
func TestModelsSignoffFabric(t *testing.T) {
	fabrictest.Require(t)
	envFile := os.Getenv("MILLWRIGHT_FABRIC_DIR") + "/env"
	f := audittest.New(t)
	ctx := context.Background()
	// A round record of the hub's for a version nobody has signed off yet, under a model
	// name of its own, so that earlier runs on the same network do not count.
	model := "pumps-" + ledger.NewID()[:8]
	artifact := t.TempDir() + "/" + model + ".bin"
	if err := os.WriteFile(artifact, []byte(model), 0o600); err != nil {
		t.Fatal(err)
	}
	hub := f.Signers["hub"]
	round := ledger.FederatedRound{Federation: model, Round: 1, Participants: []string{"site-a"}, Aggregation: "fedavg",
		InputUpdates: []string{audittest.Hash([]byte("update"))}, Output: ledger.ModelRef{Model: model, Version: "r1"},
		OutputHash: audittest.Hash([]byte(model)), Parents: []ledger.ModelRef{}}
	ob, err := ledger.Open(ledger.Config{Dir: t.TempDir(), Site: "oem"}, hub, fabrictest.Client(t, "oem", hub))
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	if _, err := ob.Record(ctx, round); err != nil {
		t.Fatal(err)
	}
	if err := ob.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	key := t.TempDir() + "/dana.key"
	M := model + "@r1"
	who := []string{"--key", key, "--name", "Dana Weiss", "--fabric", envFile, "--org", "oem"}
	runCLI(t, append([]string{"models", "release", M, "--channel", "stable"}, who...), 1, nil, []string{"has no approval in the ledger"})
	runCLI(t, append([]string{"models", "approve", M, "--reason", "passed the factory acceptance test", "--file", artifact}, who...), 0,
		[]string{"created key", M + " approved by Dana Weiss (oem)", "in the Fabric channel"}, nil)
	runCLI(t, append([]string{"models", "release", M, "--channel", "stable"}, who...), 1, nil, []string{"a release needs a second person (four eyes)"})
	// Erik, a second person, releases what Dana approved.
	erikKey := t.TempDir() + "/erik.key"
	runCLI(t, []string{"models", "release", M, "--channel", "stable", "--key", erikKey, "--name", "Erik Lund", "--fabric", envFile, "--org", "oem"}, 0,
		[]string{M + " released on stable by Erik Lund (oem)"}, nil)

	keys := t.TempDir() + "/keys.txt"
	if err := addKeys(keys, f.KeysFile, "oem", signerKey{name: "Dana Weiss", file: key}, signerKey{name: "Erik Lund", file: erikKey}); err != nil {
		t.Fatal(err)
	}
	runCLI(t, []string{"audit", "verify", artifact, "--fabric", envFile, "--keys", keys, "--four-eyes"}, 0,
		[]string{"VERIFIED", "released by Erik Lund (oem) on stable"}, nil)
}

// TestAuditFabricRevokedKey: on Fabric a record of a revoked key dated before the
// revocation is refused when the chaincode appended it after the revocation, whatever
// version it signs off: one the hub produced after the revocation (it cannot have been
// made before the version was), and one produced long before (only the append time shows
// it). The revocation is half an hour ago, longer than the peers' clock tolerance.
func TestAuditFabricRevokedKey(t *testing.T) {
	fabrictest.Require(t)
	envFile := os.Getenv("MILLWRIGHT_FABRIC_DIR") + "/env"
	f := audittest.New(t)
	ctx := context.Background()
	model := "pumps-" + ledger.NewID()[:8] // of its own: earlier runs on the network do not count
	artifact := t.TempDir() + "/" + model + ".bin"
	if err := os.WriteFile(artifact, []byte(model), 0o600); err != nil {
		t.Fatal(err)
	}
	hub, frank := f.Signers["hub"], oemSigner(t, "Frank Ode", 23)
	client := fabrictest.Client(t, "oem", hub, frank)
	produced := time.Now().UTC().Truncate(time.Second)
	revoked := produced.Add(-30 * time.Minute)
	r0, r1 := ledger.ModelRef{Model: model, Version: "r0"}, ledger.ModelRef{Model: model, Version: "r1"}
	oldArtifact := t.TempDir() + "/" + model + "-r0.bin"
	if err := os.WriteFile(oldArtifact, []byte(model+"-r0"), 0o600); err != nil {
		t.Fatal(err)
	}
	sign := func(s *ledger.Signer, at time.Time, body ledger.Body) ledger.Record {
		t.Helper()
		b, err := ledger.CanonicalMarshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := s.Sign(ledger.Record{Header: ledger.Header{ID: ledger.NewID(), SchemaVersion: ledger.SchemaVersion, Type: body.Type(), Time: at, Site: "oem"}, Body: b})
		if err != nil {
			t.Fatal(err)
		}
		if err := client.Anchor(ctx, rec); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	// r0, which the hub produced three hours ago, Frank approved while his key was his.
	sign(hub, produced.Add(-3*time.Hour), ledger.FederatedRound{Federation: model, Round: 1, Participants: []string{"site-a"}, Aggregation: "fedavg",
		InputUpdates: []string{audittest.Hash([]byte("update"))}, Output: r0, OutputHash: audittest.Hash([]byte(model + "-r0")), Parents: []ledger.ModelRef{}})
	sign(hub, produced, ledger.FederatedRound{Federation: model, Round: 2, Participants: []string{"site-a"}, Aggregation: "fedavg",
		InputUpdates: []string{audittest.Hash([]byte("update"))}, Output: r1, OutputHash: audittest.Hash([]byte(model)), Parents: []ledger.ModelRef{r0}})
	backdated := sign(frank, revoked.Add(-30*time.Minute), ledger.Approval{ModelRef: r1, ArtifactHash: audittest.Hash([]byte(model)),
		Decision: "approved", Reason: "backdated with a stolen key"})
	backdatedOld := sign(frank, revoked.Add(-time.Hour), ledger.Approval{ModelRef: r0, ArtifactHash: audittest.Hash([]byte(model + "-r0")),
		Decision: "approved", Reason: "backdated with a stolen key"})

	keys := t.TempDir() + "/keys.txt"
	lines := audit.FormatKey(audit.Key{Name: hub.Actor().Name, Org: hub.Actor().Org, Public: hub.Public()}) + "\n" +
		audit.FormatKey(audit.Key{Name: "Frank Ode", Org: "oem", Public: frank.Public(), Revoked: revoked}) + "\n"
	if err := os.WriteFile(keys, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	runCLI(t, []string{"audit", "verify", artifact, "--fabric", envFile, "--keys", keys}, 1,
		[]string{"NOT VERIFIED", "record " + backdated.Header.ID + ": key revoked", "(backdated)"}, nil)
	runCLI(t, []string{"audit", "verify", oldArtifact, "--fabric", envFile, "--keys", keys}, 1,
		[]string{"NOT VERIFIED", "1 failed their check", "record " + backdatedOld.Header.ID + ": key revoked", "was appended to the ledger after", "(backdated)"}, nil)
	// With the revocation an hour from now, the same records are what they say.
	lines = audit.FormatKey(audit.Key{Name: hub.Actor().Name, Org: hub.Actor().Org, Public: hub.Public()}) + "\n" +
		audit.FormatKey(audit.Key{Name: "Frank Ode", Org: "oem", Public: frank.Public(), Revoked: produced.Add(time.Hour)}) + "\n"
	if err := os.WriteFile(keys, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	runCLI(t, []string{"audit", "verify", oldArtifact, "--fabric", envFile, "--keys", keys}, 0, []string{"VERIFIED"}, nil)
}
