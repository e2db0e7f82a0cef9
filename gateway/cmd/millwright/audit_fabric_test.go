package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

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
