// Package audittest builds a realistic local ledger for the tests of the audit package and of the audit command.
package audittest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/local"
)

// Hostile is a string with markup that reports must render inert.
const Hostile = `<script>alert("x")</script>`

// T0 is when the fixture's story starts.
var T0 = time.Date(2026, 3, 2, 6, 0, 0, 0, time.UTC)

// Model is the released model version of the fixture.
var Model = ledger.ModelRef{Model: "pump-anomaly", Version: "2"}

// Artifact is the content of Model's artifact file.
var Artifact = []byte("pump-anomaly@2 weights: federated average of 1-a and 1-b\n")

// Fixture is a ledger telling one model's story: sites a and b each snapshot their data
// and train locally (1-a, 1-b), the hub aggregates both in a federated round with DP into
// 2, which is evaluated, approved, released and deployed at site a, whose alarm log is
// then digested; site b digests an alarm log too (it does not run 2).
type Fixture struct {
	Dir      string // the ledger directory
	Signers  map[string]*ledger.Signer
	Keys     *audit.Keyring // every signer
	KeysFile string         // Keys as a keyring file
	Artifact string         // path of a file holding Artifact

	SnapA, SnapB, TrainA, TrainB, Round, Eval, Approval, Release, Deploy, DigestA, DigestB ledger.Record
	All                                                                                    []ledger.Record
}

// Hash returns the hex SHA-256 of b.
func Hash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Signer returns a signer with a key derived from name.
func Signer(t testing.TB, name, org string) *ledger.Signer {
	t.Helper()
	seed := sha256.Sum256([]byte("audittest " + name))
	s, err := ledger.NewSigner(ed25519.NewKeyFromSeed(seed[:]), name, org)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// id returns a deterministic version 4 UUID for the n-th record.
func id(n int) string {
	h := Hash([]byte(fmt.Sprint("record ", n)))
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-8" + h[17:20] + "-" + h[20:32]
}

// New writes the fixture's ledger into a new directory under t.TempDir and closes it.
func New(t testing.TB) *Fixture {
	t.Helper()
	f := &Fixture{Dir: filepath.Join(t.TempDir(), "ledger"), Signers: map[string]*ledger.Signer{
		"gw-a":  Signer(t, "gw-a", "factory-a"),
		"gw-b":  Signer(t, "gw-b", "factory-b"),
		"hub":   Signer(t, "hub", "oem"),
		"alice": Signer(t, "Alice Martin", "oem"),
	}}
	var lines []string
	for _, name := range []string{"gw-a", "gw-b", "hub", "alice"} {
		s := f.Signers[name]
		lines = append(lines, audit.FormatKey(audit.Key{Name: s.Actor().Name, Org: s.Actor().Org, Public: s.Public()}))
	}
	keyring := "# trusted ledger keys: NAME ORG BASE64-ED25519-PUBLIC-KEY\n" + strings.Join(lines, "\n") + "\n"
	var err error
	if f.Keys, err = audit.ParseKeyring([]byte(keyring)); err != nil {
		t.Fatal(err)
	}
	f.KeysFile = filepath.Join(t.TempDir(), "keys.txt")
	f.Artifact = filepath.Join(t.TempDir(), "pump-anomaly-2.bin")
	if err := os.WriteFile(f.KeysFile, []byte(keyring), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Artifact, Artifact, 0o600); err != nil {
		t.Fatal(err)
	}

	prev := map[string]string{}
	n := 0
	rec := func(signer, site, gateway string, at time.Duration, body ledger.Body) ledger.Record {
		t.Helper()
		n++
		b, err := ledger.CanonicalMarshal(body)
		if err != nil {
			t.Fatal(err)
		}
		s := f.Signers[signer]
		r, err := s.Sign(ledger.Record{Header: ledger.Header{ID: id(n),
			SchemaVersion: ledger.SchemaVersion, Type: body.Type(), Time: T0.Add(at), Site: site, Gateway: gateway,
			FirmwareVersion: map[bool]string{true: "3.4.1"}[gateway != ""], Prev: prev[signer]}, Body: b})
		if err != nil {
			t.Fatal(err)
		}
		if prev[signer], err = ledger.Hash(r); err != nil {
			t.Fatal(err)
		}
		f.All = append(f.All, r)
		return r
	}
	day := 24 * time.Hour
	from := T0.Add(-7 * day)
	f.SnapA = rec("gw-a", "site-a", "gw-a", 0, ledger.DatasetSnapshot{Windows: []ledger.SignalWindow{
		{Signal: "plant-a/line-1/pump-3/vibration", From: from, To: T0, Rows: 604800, BadQuality: 12, Uncertain: 40},
		{Signal: "plant-a/line-1/pump-3/" + Hostile, From: from, To: T0, Rows: 10080, BadQuality: 3, Uncertain: 0},
	}, Rows: 614880, MetadataHash: Hash([]byte("snapshot a metadata"))})
	f.SnapB = rec("gw-b", "site-b", "gw-b", time.Minute, ledger.DatasetSnapshot{Windows: []ledger.SignalWindow{
		{Signal: "plant-b/line-2/pump-1/vibration", From: from.Add(day), To: T0, Rows: 518400, BadQuality: 0, Uncertain: 7},
	}, Rows: 518400, MetadataHash: Hash([]byte("snapshot b metadata"))})
	f.TrainA = rec("gw-a", "site-a", "gw-a", time.Hour, ledger.LocalTraining{
		ModelRef: ledger.ModelRef{Model: Model.Model, Version: "1-a"}, ArtifactHash: Hash([]byte("1-a")),
		Datasets: []string{f.SnapA.Header.ID}, HyperParams: map[string]any{"epochs": 20.0, "lr": 0.001, "optimizer": "adam"},
		Metrics: map[string]float64{"loss": 0.042}, CodeVersion: "git:4f2a9c1"})
	f.TrainB = rec("gw-b", "site-b", "gw-b", time.Hour+time.Minute, ledger.LocalTraining{
		ModelRef: ledger.ModelRef{Model: Model.Model, Version: "1-b"}, ArtifactHash: Hash([]byte("1-b")),
		Datasets: []string{f.SnapB.Header.ID}, HyperParams: map[string]any{"epochs": 20.0, "lr": 0.001, "optimizer": "adam"},
		Metrics: map[string]float64{"loss": 0.051}, CodeVersion: "git:4f2a9c1"})
	f.Round = rec("hub", "hub", "", 2*time.Hour, ledger.FederatedRound{Federation: "pumps-eu", Round: 1,
		Participants: []string{"site-a", "site-b"}, Aggregation: "fedavg", DP: &ledger.DPBudget{Epsilon: 1.5, Delta: 1e-5},
		InputUpdates: []string{Hash([]byte("update a")), Hash([]byte("update b"))}, Output: Model, OutputHash: Hash(Artifact),
		Parents: []ledger.ModelRef{{Model: Model.Model, Version: "1-a"}, {Model: Model.Model, Version: "1-b"}}})
	f.Eval = rec("hub", "hub", "", 3*time.Hour, ledger.Evaluation{ModelRef: Model, ArtifactHash: Hash(Artifact),
		Datasets: []string{f.SnapA.Header.ID, f.SnapB.Header.ID}, Metrics: map[string]float64{"f1": 0.93, "precision": 0.95, "recall": 0.91},
		Criteria: "f1 >= 0.9 on the held-out windows", Passed: true})
	f.Approval = rec("alice", "hub", "", 4*time.Hour, ledger.Approval{ModelRef: Model, ArtifactHash: Hash(Artifact), Decision: "approved",
		Reason: "meets the acceptance criteria\nIntended purpose: early warning of bearing wear in centrifugal pumps " + Hostile})
	f.Release = rec("alice", "hub", "", 5*time.Hour, ledger.Release{ModelRef: Model, ArtifactHash: Hash(Artifact), Channel: "stable",
		Notes: "first federated release"})
	f.Deploy = rec("gw-a", "site-a", "gw-a", 6*time.Hour, ledger.Deployment{ModelRef: Model, ArtifactHash: Hash(Artifact), Previous: "1-a"})
	f.DigestA = rec("gw-a", "site-a", "gw-a", 30*time.Hour, ledger.AlarmDigest{From: T0.Add(6 * time.Hour), To: T0.Add(30 * time.Hour),
		Count: 4, LogHash: Hash([]byte("alarm log a"))})
	f.DigestB = rec("gw-b", "site-b", "gw-b", 30*time.Hour, ledger.AlarmDigest{From: T0.Add(6 * time.Hour), To: T0.Add(30 * time.Hour),
		Count: 9, LogHash: Hash([]byte("alarm log b"))})

	l, err := local.Open(f.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, r := range f.All {
		if err := l.Anchor(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// Open opens the fixture's ledger for reading, as an auditor does; it is closed when the
// test ends.
func (f *Fixture) Open(t testing.TB) *local.Ledger {
	t.Helper()
	l, err := local.Open(f.Dir, local.ReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// Entry returns the sequence number of rec in the ledger.
func (f *Fixture) Entry(rec ledger.Record) int {
	for i, r := range f.All {
		if r.Header.ID == rec.Header.ID {
			return i
		}
	}
	return -1
}

// FlipByte flips one bit of a byte inside the record of entry i of the ledger file, the
// way a disk error or a hand edit would.
func (f *Fixture) FlipByte(t testing.TB, i int) {
	t.Helper()
	path := filepath.Join(f.Dir, local.FileName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := 0
	for range i {
		off += strings.IndexByte(string(b[off:]), '\n') + 1
	}
	// Inside the record's site name, well clear of the JSON syntax.
	j := strings.Index(string(b[off:]), `"site":"`)
	if j < 0 {
		t.Fatalf("entry %d has no site", i)
	}
	b[off+j+len(`"site":"`)] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Writer returns a function that records bodies signed by s into backend (a local ledger,
// say) through an outbox of s's own, as a hub or a person's sign-off command does, and
// returns once the backend has taken them. The outbox is closed when the test ends.
func Writer(t testing.TB, backend ledger.Backend, s *ledger.Signer) func(bodies ...ledger.Body) {
	t.Helper()
	o, err := ledger.Open(ledger.Config{Dir: t.TempDir(), Site: s.Actor().Org, RetryInitial: time.Millisecond}, s, backend)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close() })
	return func(bodies ...ledger.Body) {
		t.Helper()
		for _, b := range bodies {
			if _, err := o.Record(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
		if err := o.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
