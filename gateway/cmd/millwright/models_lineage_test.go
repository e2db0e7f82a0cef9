package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/local"
)

// TestPullLineageIsOfTheVersionPulled: with --ledger and --keys, pull writes a model only
// once the ledger attests it as the version pulled. Here the ledger holds no record of
// pumps@r1 at all: a second trusted signer (the hub of another federation, fans, whose
// key the OEM's keyring also lists) recorded the hash of pumps@r1 as its own fans@r1.
// That is no lineage of pumps@r1: pull refuses it and writes nothing.
func TestPullLineageIsOfTheVersionPulled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := startPumps(t, ctx, nil)
	servicetest.WaitFor(t, 30*time.Second, "pumps@r1 published", func() bool {
		_, err := p.hubBus.GetVersion(ctx, "pumps", "r1")
		return err == nil
	})
	hash, err := p.hubBus.GetVersion(ctx, "pumps", "r1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	lg, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lg.Close() })
	fansHub := oemSigner(t, "fans-hub", 9)
	audittest.Writer(t, lg, fansHub)(ledger.FederatedRound{Federation: "fans", Round: 1, Participants: []string{"site"}, Aggregation: "fedavg",
		InputUpdates: []string{strings.Repeat("ab", 32)}, Output: ledger.ModelRef{Model: "fans", Version: "r1"}, OutputHash: hash})
	keys := filepath.Join(t.TempDir(), "keys.txt")
	lines := audit.FormatKey(audit.Key{Name: "hub", Org: "oem", Public: p.hubKey.Public().(ed25519.PublicKey)}) + "\n" +
		audit.FormatKey(audit.Key{Name: "fans-hub", Org: "oem", Public: fansHub.Public()}) + "\n"
	if err := os.WriteFile(keys, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	if recs, _ := lg.Query(ctx, ledger.Query{Model: ledger.ModelRef{Model: "pumps"}}); len(recs) != 0 {
		t.Fatalf("the ledger holds %d records about pumps; want none", len(recs))
	}
	var stdout, stderr bytes.Buffer
	out := t.TempDir()
	args := append(append([]string{}, p.common[:len(p.common)-1]...), out, "--ledger", dir, "--keys", keys, "--lineage-wait", "300ms", "pumps@r1")
	code := cmdModelsPull(ctx, args, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "is recorded as fans@r1, not as pumps@r1") {
		t.Errorf("pull of pumps@r1, which no ledger record names, exited %d, printed %q and %q; want it refused as recorded as fans@r1", code, stdout.String(), stderr.String())
	}
	if _, err := os.Stat(filepath.Join(out, "pumps@r1.mwg")); err == nil {
		t.Errorf("pumps@r1.mwg was written though the only record naming its hash is fans@r1's")
	}
}

// releaseLedger is a ledger whose query returns the records it holds in its own order
// (the rest of auditLedger is not called).
type releaseLedger struct {
	auditLedger
	recs []ledger.Record
}

func (l releaseLedger) Query(context.Context, ledger.Query) ([]ledger.Record, error) {
	return l.recs, nil
}
func (releaseLedger) Close() error { return nil }

// TestChannelFollowsTheLatestRelease: the release a channel follower takes is the latest
// made on its channel, whatever order the ledger returns them in: Fabric's query by model
// walks its index of versions in string order (r10 before r9) and sorts by time only
// within a page, so the last record returned can be an old version's release.
func TestChannelFollowsTheLatestRelease(t *testing.T) {
	sg := audittest.Signer(t, "dana", "oem")
	release := func(version, channel string, minute int) ledger.Record {
		body, err := ledger.CanonicalMarshal(ledger.Release{ModelRef: ledger.ModelRef{Model: "pumps", Version: version},
			ArtifactHash: audittest.Hash([]byte(version)), Channel: channel})
		if err != nil {
			t.Fatal(err)
		}
		rec, err := sg.Sign(ledger.Record{Header: ledger.Header{ID: ledger.NewID(), SchemaVersion: ledger.SchemaVersion, Type: ledger.TypeRelease,
			Time: audittest.T0.Add(time.Duration(minute) * time.Minute), Site: "oem"}, Body: body})
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	var recs []ledger.Record
	for _, v := range []int{1, 10, 11, 2, 3, 9} { // index order: string order of the versions
		recs = append(recs, release(fmt.Sprintf("r%d", v), "stable", v))
	}
	recs = append(recs, release("r12", "beta", 12))
	c := &lineageCheck{l: releaseLedger{recs: recs}}
	_, rel, ok, err := c.release(context.Background(), "pumps", "stable")
	if err != nil || !ok || rel.Version != "r11" {
		t.Errorf("the latest release on stable: %s (found %v, err %v); want r11, released last", rel.Version, ok, err)
	}
	if _, _, ok, _ := c.release(context.Background(), "pumps", "nightly"); ok {
		t.Error("a release found on a channel nothing was released on")
	}
}
