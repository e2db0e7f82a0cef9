package audit_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/local"
)

// TestVerifyFlagsUnapprovedReleases: a release made with no approval before it, or while the
// latest decision was a rejection (written by a tool that does not check, as `models
// release` does), makes the artifact NOT VERIFIED, naming the release; a release after an
// approval that stands does not. With four eyes required, a release by the approver does
// too, and one by a second person does not.
func TestVerifyFlagsUnapprovedReleases(t *testing.T) {
	ctx := context.Background()
	r1 := ledger.ModelRef{Model: "pumps", Version: "r1"}
	file := filepath.Join(t.TempDir(), "pumps@r1.mwg")
	if err := os.WriteFile(file, []byte("pumps r1"), 0o600); err != nil {
		t.Fatal(err)
	}
	hash := audittest.Hash([]byte("pumps r1"))
	round := ledger.FederatedRound{Federation: "pumps", Round: 1, Participants: []string{"site-a"}, Aggregation: "fedavg",
		InputUpdates: []string{audittest.Hash([]byte("u"))}, Output: r1, OutputHash: hash, Parents: []ledger.ModelRef{}}
	approval := func(decision string) ledger.Approval {
		return ledger.Approval{ModelRef: r1, ArtifactHash: hash, Decision: decision, Reason: "acceptance test"}
	}
	release := ledger.Release{ModelRef: r1, ArtifactHash: hash, Channel: "stable"}
	for _, c := range []struct {
		name     string
		bodies   []ledger.Body // by Dana, after the hub's round
		erik     bool          // then Erik Lund, a second person, releases
		fourEyes bool          // audit.Options.FourEyes
		want     string        // a problem of the verdict; "" for VERIFIED
	}{
		{"approved, then released", []ledger.Body{approval("approved"), release}, false, false, ""},
		{"approved and released by one person, four eyes required", []ledger.Body{approval("approved"), release}, false, true,
			"with the key that approved it: no second person (four eyes)"},
		{"approved, then released by a second person, four eyes required", []ledger.Body{approval("approved")}, true, true, ""},
		{"released without an approval", []ledger.Body{release}, false, false, "released pumps@r1 on stable by Dana Weiss (oem) at "},
		{"released after a rejection", []ledger.Body{approval("approved"), approval("rejected"), release}, false, false,
			"while the latest decision was rejected by Dana Weiss (oem)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, err := local.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			hub, dana := audittest.Signer(t, "hub", "oem"), audittest.Signer(t, "Dana Weiss", "oem")
			audittest.Writer(t, l, hub)(round)
			erik := audittest.Signer(t, "Erik Lund", "oem")
			audittest.Writer(t, l, dana)(c.bodies...)
			releasedBy := "Dana Weiss"
			if c.erik {
				audittest.Writer(t, l, erik)(release)
				releasedBy = "Erik Lund"
			}
			var lines []string
			for _, s := range []*ledger.Signer{hub, dana, erik} {
				lines = append(lines, audit.FormatKey(audit.Key{Name: s.Actor().Name, Org: s.Actor().Org, Public: s.Public()}))
			}
			keys, err := audit.ParseKeyring([]byte(strings.Join(lines, "\n")))
			if err != nil {
				t.Fatal(err)
			}
			res, err := audit.VerifyArtifact(ctx, l, file, audit.Options{Keys: keys, FourEyes: c.fourEyes})
			if err != nil {
				t.Fatal(err)
			}
			if c.want == "" {
				if !res.OK || !strings.Contains(res.Verdict, "released by "+releasedBy+" (oem) on stable") {
					t.Errorf("verdict %q; want VERIFIED and released", res.Verdict)
				}
				return
			}
			if res.OK || !strings.Contains(res.Verdict, c.want) {
				t.Errorf("verdict %q; want NOT VERIFIED saying %q", res.Verdict, c.want)
			}
		})
	}
}
