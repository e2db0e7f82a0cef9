package ledger_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
)

func TestMain(m *testing.M) { os.Exit(servicetest.RunWithLeakCheck(m)) }

// testKey returns a deterministic key for name.
func testKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:])
}

func testSigner(t testing.TB, name, org string) *ledger.Signer {
	t.Helper()
	s, err := ledger.NewSigner(testKey(name), name, org)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func h(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 123456789, time.UTC)

const snapID = "0b7e4c1a-2f3d-4e5f-8a9b-0c1d2e3f4a5b"

// sampleBodies has one valid body of every record type.
func sampleBodies() []ledger.Body {
	m := ledger.ModelRef{Model: "press-anomaly", Version: "1.2.0"}
	return []ledger.Body{
		ledger.DatasetSnapshot{Windows: []ledger.SignalWindow{
			{Signal: "f1/l1/press3/temp", From: t0, To: t0.Add(time.Hour), Rows: 3600, BadQuality: 2, Uncertain: 5},
			{Signal: "f1/l1/press3/vib", From: t0, To: t0.Add(time.Hour), Rows: 36000},
		}, Rows: 39600, MetadataHash: h("meta")},
		ledger.LocalTraining{ModelRef: m, ArtifactHash: h("artifact"), Parents: []ledger.ModelRef{{Model: "press-anomaly", Version: "1.1.0"}},
			Datasets: []string{snapID}, HyperParams: map[string]any{"lr": 0.001, "epochs": 20.0, "optimizer": "adam", "shuffle": true},
			Metrics: map[string]float64{"loss": 0.0123, "auc": 0.97}, CodeVersion: "git:4f2a9c1"},
		ledger.FederatedRound{Federation: "presses-eu", Round: 7, Participants: []string{"site-a", "site-b"}, Aggregation: "fedavg",
			DP: &ledger.DPBudget{Epsilon: 1.5, Delta: 1e-5}, InputUpdates: []string{h("u1"), h("u2")},
			Output: ledger.ModelRef{Model: "press-anomaly", Version: "2.0.0"}, OutputHash: h("global"), Parents: []ledger.ModelRef{m},
			Metrics: map[string]float64{"false_alarm_rate": 0.02, "detection_rate": 0.97}},
		ledger.Evaluation{ModelRef: m, ArtifactHash: h("artifact"), Datasets: []string{snapID}, Metrics: map[string]float64{"f1": 0.91}, Criteria: "f1 >= 0.9", Passed: true},
		ledger.Approval{ModelRef: m, ArtifactHash: h("artifact"), Decision: "approved", Reason: "meets criteria"},
		ledger.Release{ModelRef: m, ArtifactHash: h("artifact"), Channel: "stable", Notes: "first release"},
		ledger.Deployment{ModelRef: m, ArtifactHash: h("artifact"), Previous: "1.1.0"},
		ledger.Rollback{Model: "press-anomaly", FromVersion: "1.2.0", ToVersion: "1.1.0", Reason: "false alarms"},
		ledger.AlarmDigest{From: t0, To: t0.Add(24 * time.Hour), Count: 42, LogHash: h("alarms")},
	}
}

// signed returns a signed record with body.
func signed(t testing.TB, s *ledger.Signer, body ledger.Body, prev string) ledger.Record {
	t.Helper()
	b, err := ledger.CanonicalMarshal(body)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Sign(ledger.Record{Header: ledger.Header{
		ID: ledger.NewID(), SchemaVersion: ledger.SchemaVersion, Type: body.Type(), Time: t0,
		Site: "site-a", Gateway: "gw-1", FirmwareVersion: "3.4.1", Prev: prev,
	}, Body: b})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}
