package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/ledger/audit/audittest"
)

func TestAudit(t *testing.T) {
	f := audittest.New(t)
	tampered := audittest.New(t)
	tampered.FlipByte(t, tampered.Entry(tampered.Round))
	modified := filepath.Join(t.TempDir(), "modified.bin")
	if err := os.WriteFile(modified, []byte("not the model"), 0o600); err != nil {
		t.Fatal(err)
	}
	partialKeys := filepath.Join(t.TempDir(), "partial.txt")
	whole, _ := os.ReadFile(f.KeysFile)
	var kept []string
	for _, line := range strings.Split(string(whole), "\n") {
		if !strings.HasPrefix(line, "hub ") {
			kept = append(kept, line)
		}
	}
	if err := os.WriteFile(partialKeys, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	badKeys := filepath.Join(t.TempDir(), "bad.txt")
	if err := os.WriteFile(badKeys, []byte("gw-a factory-a notakey\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reportOut := filepath.Join(t.TempDir(), "report.html")
	L, K, M := f.Dir, f.KeysFile, audittest.Model.String()

	tests := []cliCase{
		{name: "no command", args: []string{"audit"}, code: 2, stderr: []string{"usage: millwright audit COMMAND"}},
		{name: "help", args: []string{"audit", "help"}, code: 0, stdout: []string{"--fabric FILE", "--org ORG"}},
		{name: "unknown command", args: []string{"audit", "prove", M}, code: 2, stderr: []string{`unknown command "prove", expected lineage, verify, report or export`}},
		{name: "missing argument", args: []string{"audit", "lineage", "--ledger", L}, code: 2, stderr: []string{`0 arguments [], expected one MODEL@VERSION`}},
		{name: "two arguments", args: []string{"audit", "lineage", M, M, "--ledger", L}, code: 2, stderr: []string{`2 arguments`}},
		{name: "no version", args: []string{"audit", "lineage", "pump", "--ledger", L}, code: 2, stderr: []string{`MODEL@VERSION: "pump" has no "@version"`}},
		{name: "no ledger flag", args: []string{"audit", "lineage", M}, code: 2, stderr: []string{"one of --ledger DIR", "or --fabric FILE"}},
		{name: "unknown flag", args: []string{"audit", "lineage", M, "--ledger", L, "--fast"}, code: 2, stderr: []string{"flag provided but not defined: -fast"}},
		{name: "report without format", args: []string{"audit", "report", M, "--ledger", L}, code: 2, stderr: []string{"--format is required, expected one of md, html, json"}},
		{name: "report bad format", args: []string{"audit", "report", M, "--ledger", L, "--format", "pdf"}, code: 2, stderr: []string{`--format "pdf" is not supported, expected one of md, html, json`}},
		{name: "export bad format", args: []string{"audit", "export", M, "--ledger", L, "--format", "md"}, code: 2, stderr: []string{`expected one of prov, openlineage`}},
		{name: "format on lineage", args: []string{"audit", "lineage", M, "--ledger", L, "--format", "md"}, code: 2, stderr: []string{"--format and --out are for report and export"}},
		{name: "verify without keys", args: []string{"audit", "verify", f.Artifact, "--ledger", L}, code: 2, stderr: []string{"--keys FILE is required"}},
		{name: "no ledger there", args: []string{"audit", "lineage", M, "--ledger", t.TempDir()}, code: 1, stderr: []string{"expected a local ledger directory holding ledger.jsonl"}},
		{name: "bad keyring", args: []string{"audit", "verify", f.Artifact, "--ledger", L, "--keys", badKeys}, code: 1, stderr: []string{`line 1: "notakey" is not an ed25519 public key`}},

		{name: "lineage", args: []string{"audit", "lineage", M, "--ledger", L}, code: 0,
			stdout: []string{"pump-anomaly@2  federated_round", "  pump-anomaly@1-a  local_training", "dataset_snapshot: 2 signal(s), 614880 rows", "5 record(s)"}},
		{name: "lineage flags first", args: []string{"audit", "lineage", "--ledger", L, M}, code: 0, stdout: []string{"pump-anomaly@1-b"}},
		{name: "lineage unknown version", args: []string{"audit", "lineage", "pump-anomaly@9", "--ledger", L}, code: 1, stderr: []string{"lineage of pump-anomaly@9", "not found"}},

		{name: "verify released artifact", args: []string{"audit", "verify", f.Artifact, "--ledger", L, "--keys", K}, code: 0,
			stdout: []string{"VERIFIED: artifact sha256:", "is model pump-anomaly@2, released by Alice Martin (oem) on stable", "9 records, all signatures valid, chain intact (11 entries", "ok   release"}},
		{name: "verify modified artifact", args: []string{"audit", "verify", modified, "--ledger", L, "--keys", K}, code: 1,
			stdout: []string{"NOT VERIFIED", "no record names this artifact"}},
		{name: "verify unknown signer", args: []string{"audit", "verify", f.Artifact, "--ledger", L, "--keys", partialKeys}, code: 1,
			stdout: []string{"NOT VERIFIED", "FAIL federated_round", "unknown actor: key", "claimed by hub (oem) is not in the keyring"}},
		{name: "verify tampered ledger", args: []string{"audit", "verify", tampered.Artifact, "--ledger", tampered.Dir, "--keys", tampered.KeysFile}, code: 1,
			stdout: []string{"NOT VERIFIED: the ledger fails verification", "ledger entry 4 at offset", "(the entry was altered)"}},
		{name: "verify missing file", args: []string{"audit", "verify", "/nonexistent/model.bin", "--ledger", L, "--keys", K}, code: 1, stderr: []string{"no such file"}},

		{name: "report md", args: []string{"audit", "report", M, "--format", "md", "--ledger", L, "--keys", K}, code: 0,
			stdout: []string{"# Evidence pack: pump-anomaly@2", "Art. 10(2)", "### Site site-b", "Signatures: 10 valid, 0 failed", "Generated: "}},
		{name: "report json", args: []string{"audit", "report", M, "--format", "json", "--ledger", L}, code: 0,
			stdout: []string{`"artifact_sha256": "` + audittest.Hash(audittest.Artifact), `"signatures_checked": false`}},
		{name: "report html to file", args: []string{"audit", "report", M, "--format", "html", "--out", reportOut, "--ledger", L, "--keys", K}, code: 0,
			stderr: []string{"wrote " + reportOut}},
		{name: "export prov", args: []string{"audit", "export", M, "--format", "prov", "--ledger", L}, code: 0,
			stdout: []string{`"wasDerivedFrom"`, `"model:pump-anomaly%402"`}},
		{name: "export openlineage", args: []string{"audit", "export", M, "--format", "openlineage", "--ledger", L}, code: 0,
			stdout: []string{`"eventType":"COMPLETE"`, `"name":"federation/pumps-eu"`}},
	}
	runCLICases(t, tests)
	html, err := os.ReadFile(reportOut)
	if err != nil || !bytes.Contains(html, []byte("<h2 id=\"data\">Data governance per site</h2>")) || bytes.Contains(html, []byte("<script")) {
		t.Errorf("report file: %v\n%s", err, html)
	}
}
