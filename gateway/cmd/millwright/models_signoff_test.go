package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/local"
)

// entry is the part of a report's record entry the sign-off test checks.
type entry struct {
	Actor     string `json:"actor"`
	Site      string `json:"site"`
	Signature string `json:"signature"`
}

// TestModelsApproveAndRelease signs off pump-anomaly@1-a (a local training of the audit
// fixture, which has no decision yet) in a local ledger: a release before an approval and
// after a rejection is refused, the records carry the person's key, and the auditor's
// report lists them, their signatures valid once the person's key is in the keyring.
func TestModelsApproveAndRelease(t *testing.T) {
	f := audittest.New(t)
	L, M := f.Dir, "pump-anomaly@1-a"
	key := filepath.Join(t.TempDir(), "carol.key")
	who := []string{"--key", key, "--name", "Carol Diaz", "--ledger", L}
	args := func(a ...string) []string { return append(a, who...) }
	// Erik releases what Carol approved: a second person (four eyes).
	erikKey := filepath.Join(t.TempDir(), "erik.key")
	erik := func(a ...string) []string { return append(a, "--key", erikKey, "--name", "Erik Lund", "--ledger", L) }

	runCLICases(t, []cliCase{
		{name: "help", args: []string{"models", "approve", "-h"}, code: 0, stdout: []string{"usage: millwright models approve", "--reject"}},
		{name: "no person", args: []string{"models", "approve", M, "--reason", "ok", "--ledger", L}, code: 2, stderr: []string{"--key FILE and --name NAME are required"}},
		{name: "no ledger", args: []string{"models", "approve", M, "--reason", "ok", "--key", key, "--name", "Carol Diaz"}, code: 2, stderr: []string{"one of --ledger DIR"}},
		{name: "no version", args: args("models", "approve", "pump-anomaly", "--reason", "ok"), code: 2, stderr: []string{`has no "@version"`}},
		{name: "no ledger there", args: []string{"models", "approve", M, "--reason", "ok", "--key", key, "--name", "Carol Diaz", "--ledger", t.TempDir()}, code: 1,
			stderr: []string{"expected a local ledger directory holding ledger.jsonl"}},
		{name: "unknown version", args: args("models", "approve", "pump-anomaly@9", "--reason", "ok"), code: 1, stderr: []string{"no record in the ledger produced pump-anomaly@9"}},
		{name: "no reason", args: args("models", "approve", M), code: 1, stderr: []string{"reason: required"}},
		{name: "another file", args: args("models", "approve", M, "--reason", "ok", "--file", f.Artifact), code: 1,
			stderr: []string{"the artifact in hand (sha256 " + audittest.Hash(audittest.Artifact) + ") is not pump-anomaly@1-a"}},
		{name: "release before approval", args: args("models", "release", M, "--channel", "stable"), code: 1, stderr: []string{"pump-anomaly@1-a has no approval in the ledger"}},
		{name: "release without channel", args: args("models", "release", M), code: 1, stderr: []string{"--channel is required"}},
		{name: "release on latest", args: args("models", "release", M, "--channel", "latest"), code: 1, stderr: []string{`--channel "latest" is reserved`}},

		{name: "reject", args: args("models", "approve", M, "--reject", "--reason", "false alarms on site-b"), code: 0,
			stdout: []string{"created key " + key, "Carol Diaz oem ", "(ending it with records=approval lets this key sign approval records only, and with models=pump-anomaly sign off pump-anomaly only)", "pump-anomaly@1-a rejected by Carol Diaz (oem): sha256 ", "in the local ledger " + L}},
		{name: "release after rejection", args: args("models", "release", M, "--channel", "stable"), code: 1,
			stderr: []string{"pump-anomaly@1-a was rejected by Carol Diaz (oem)", "false alarms on site-b"}},
		{name: "approve", args: args("models", "approve", M, "--reason", "meets the acceptance criteria"), code: 0,
			stdout: []string{"pump-anomaly@1-a approved by Carol Diaz (oem)"}},
		{name: "release by the approver", args: args("models", "release", M, "--channel", "stable"), code: 1,
			stderr: []string{"pump-anomaly@1-a was approved by Carol Diaz (oem)", "a release needs a second person (four eyes)", "--sole-approver"}},
		{name: "release", args: erik("models", "release", M, "--channel", "stable", "--notes", "site-a only"), code: 0,
			stdout: []string{"pump-anomaly@1-a released on stable by Erik Lund (oem)"}},
		{name: "approve with its evaluation shown", args: args("models", "approve", "pump-anomaly@2", "--reason", "reviewed"), code: 0,
			stdout: []string{"evaluation of pump-anomaly@2 by hub (oem) at ", "f1=0.93, precision=0.95, recall=0.91; criteria passed", "pump-anomaly@2 approved by Carol Diaz (oem)"}},
		{name: "release by the sole approver", args: args("models", "release", "pump-anomaly@2", "--channel", "stable", "--sole-approver"), code: 0,
			stdout: []string{"pump-anomaly@2 released on stable by Carol Diaz (oem)"}},
	})

	// The auditor's report has Carol's decisions and Erik's release, signed by their keys.
	keys := filepath.Join(t.TempDir(), "keys.txt")
	if err := addKeys(keys, f.KeysFile, "oem", signerKey{name: "Carol Diaz", file: key}, signerKey{name: "Erik Lund", file: erikKey}); err != nil {
		t.Fatal(err)
	}
	stdout, _ := runCLI(t, []string{"audit", "report", M, "--format", "json", "--ledger", L, "--keys", keys}, 0, nil, nil)
	var ev struct {
		Approvals []struct {
			Record   entry  `json:"record"`
			Decision string `json:"decision"`
		} `json:"approvals"`
		Releases []struct {
			Record  entry  `json:"record"`
			Channel string `json:"channel"`
			Notes   string `json:"notes"`
		} `json:"releases"`
	}
	if err := json.Unmarshal([]byte(stdout), &ev); err != nil {
		t.Fatalf("report: %v\n%.500s", err, stdout)
	}
	if len(ev.Approvals) != 2 || ev.Approvals[0].Decision != "rejected" || ev.Approvals[1].Decision != "approved" ||
		len(ev.Releases) != 1 || ev.Releases[0].Channel != "stable" || ev.Releases[0].Notes != "site-a only" {
		t.Errorf("report approvals %+v, releases %+v", ev.Approvals, ev.Releases)
	}
	for i, e := range []entry{ev.Approvals[0].Record, ev.Approvals[1].Record, ev.Releases[0].Record} {
		if want := []string{"Carol Diaz (oem)", "Carol Diaz (oem)", "Erik Lund (oem)"}[i]; e.Actor != want || e.Signature != "valid" || e.Site != "oem" {
			t.Errorf("record %+v: want %s at site oem, signature valid", e, want)
		}
	}
	// Four eyes, checked by the auditor: pump-anomaly@2 (the fixture's artifact) was
	// released by its approvers, Alice in the fixture and Carol above, with --sole-approver.
	verify := []string{"audit", "verify", f.Artifact, "--ledger", L, "--keys", keys}
	runCLI(t, verify, 0, []string{"VERIFIED: artifact sha256:", "released by Alice Martin (oem) on stable"}, nil)
	runCLI(t, append(verify, "--four-eyes"), 1, []string{"NOT VERIFIED",
		"released pump-anomaly@2 on stable by Carol Diaz (oem) at ", "with the key that approved it: no second person (four eyes)"}, nil)

	// A ledger another process writes is not written behind its back.
	w, err := local.Open(L)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	runCLI(t, args("models", "approve", M, "--reason", "again"), 1, nil, []string{"another writer of the local ledger", "stop the hub or gateway that writes it"})
}
