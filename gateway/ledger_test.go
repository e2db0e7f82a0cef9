package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/internal/testlog"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/fabric/fabrictest"
	"github.com/millwright-io/millwright/ledger/local"
)

// ledgerGateway is a gateway whose source and sink point at a port nothing listens on: ingest
// retries, and the ledger must not care.
func ledgerGateway(t *testing.T, factory, state, ledgerYAML string) *Gateway {
	t.Helper()
	dead := strconv.Itoa(servicetest.FreePort(t))
	cfg, err := Parse([]byte(`
gateway: {factory: ` + factory + `, state_dir: ` + state + `, http: {listen: ""}}
sources: [{name: broker, mqtt: {servers: ["tcp://127.0.0.1:` + dead + `"], topics: [{pattern: "f/{machine}/{signal}"}]}}]
sinks: [{name: influx, influxdb: {url: "http://127.0.0.1:` + dead + `", bucket: millwright}}]
` + ledgerYAML))
	if err != nil {
		t.Fatal(err)
	}
	log, _ := testlog.New(slog.LevelWarn)
	g, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// recordWhileRunning runs g, records a dataset snapshot through its Recorder, calls anchored
// until it reports the record anchored, and stops g.
func recordWhileRunning(t *testing.T, g *Gateway, anchored func(ledger.Record) bool) ledger.Record {
	t.Helper()
	if g.Recorder() != nil {
		t.Fatal("Recorder is set before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
		if g.Recorder() != nil {
			t.Error("Recorder still set after Run returned")
		}
	}()
	var rec ledger.Recorder
	for deadline := time.Now().Add(10 * time.Second); rec == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Recorder not available 10s after Run")
		}
		rec = g.Recorder()
	}
	sum := sha256.Sum256([]byte("snapshot metadata"))
	body := ledger.DatasetSnapshot{Rows: 10, MetadataHash: hex.EncodeToString(sum[:]), Windows: []ledger.SignalWindow{{
		Signal: "l1/pump-1/temperature", From: time.Unix(0, 0).UTC(), To: time.Unix(10, 0).UTC(), Rows: 10,
	}}}
	r, err := rec.Record(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); !anchored(r); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("record %s not anchored 30s after it was recorded", r.Header.ID)
		}
	}
	return r
}

// A record given to the running gateway's Recorder is signed with the identity key created
// in the state directory and anchored in the local ledger, without any peer being reachable.
func TestGatewayAnchorsRecordsInLocalLedger(t *testing.T) {
	state := t.TempDir()
	g := ledgerGateway(t, "plant-7", state, "")
	file := filepath.Join(state, "ledger", local.FileName)
	r := recordWhileRunning(t, g, func(r ledger.Record) bool {
		b, _ := os.ReadFile(file)
		return strings.Contains(string(b), r.Header.ID)
	})
	if r.Header.Site != "plant-7" || r.Header.Actor.Org != "plant-7" || r.Header.Actor.Name != "gateway" {
		t.Fatalf("header = %+v, want site and org plant-7, name gateway", r.Header)
	}
	fi, err := os.Stat(filepath.Join(state, "identity.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity key: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
	key, err := ledger.LoadKey(filepath.Join(state, "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	keys := ledger.NewKeyring(key.Public().(ed25519.PublicKey))
	l, err := local.Open(filepath.Join(state, "ledger"), local.WithKeyring(keys))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got, err := l.Get(context.Background(), r.Header.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Verify(got); err != nil {
		t.Fatalf("anchored record does not verify with the gateway's key: %v", err)
	}
}

// With backend fabric, the gateway's records reach the channel through the outbox: the
// client registers the gateway's key on first use and the chaincode accepts the record of
// the gateway's own organisation.
func TestGatewayAnchorsRecordsOnFabric(t *testing.T) {
	fc := fabrictest.Config(t, "factory-a")
	reader := fabrictest.Client(t, "factory-a")
	g := ledgerGateway(t, servicetest.UniqueName("site"), t.TempDir(), fmt.Sprintf(`
ledger:
  backend: fabric
  fabric: {endpoint: %q, server_name: %q, tls_ca: %q, msp_id: %q, cert: %q, key: %q, channel: %q, chaincode: %q}
`, fc.Endpoint, fc.ServerName, fc.TLSCA, fc.MSPID, fc.Cert, fc.Key, fc.Channel, fc.Chaincode))
	r := recordWhileRunning(t, g, func(r ledger.Record) bool {
		_, err := reader.Get(context.Background(), r.Header.ID)
		return err == nil
	})
	if r.Header.Actor.Org != "factory-a" {
		t.Fatalf("actor org = %q, want the msp_id factory-a", r.Header.Actor.Org)
	}
	got, err := reader.Get(context.Background(), r.Header.ID)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ledger.Hash(r)
	if h, _ := ledger.Hash(got); h != want {
		t.Fatalf("record on the channel hashes to %s, want %s", h, want)
	}
}

func TestLedgerConfigProblems(t *testing.T) {
	base := `
gateway: {factory: plant-7, state_dir: /tmp/x}
sources: [{name: broker, mqtt: {servers: ["tcp://127.0.0.1:1883"], topics: [{pattern: "f/{machine}/{signal}"}]}}]
sinks: [{name: influx, influxdb: {url: "http://127.0.0.1:8086", bucket: millwright}}]
`
	for _, tt := range []struct {
		ledger string
		want   []string
	}{
		{`ledger: {backend: fabrik, name: ""}`, []string{`ledger.backend: "fabrik" is not a ledger backend; expected local, fabric or none`, "ledger.name: must be set"}},
		{`ledger: {backend: fabric}`, []string{"ledger.fabric: missing; backend fabric needs the peer"}},
		{`ledger: {backend: fabric, org: factory-b, fabric: {endpoint: "127.0.0.1:1", tls_ca: ca.pem, msp_id: factory-a, cert: c.pem, key: k.pem, channel: c, chaincode: lineage}}`,
			[]string{`ledger.org: "factory-b" differs from fabric.msp_id "factory-a"`}},
		{`ledger: {backend: local, fabric: {msp_id: factory-a}}`, []string{"ledger.fabric: is set but backend is local"}},
	} {
		_, err := Parse([]byte(base + tt.ledger))
		if err == nil {
			t.Errorf("%s: accepted", tt.ledger)
			continue
		}
		for _, want := range tt.want {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q\nlacks %q", tt.ledger, err, want)
			}
		}
	}
}

// TestLedgerSignedOff: the hub's ledger names the models of a federation that people
// released or whose latest decision approved them, and only those of that federation.
func TestLedgerSignedOff(t *testing.T) {
	state := t.TempDir()
	var c LedgerConfig
	c.SetDefaults()
	lg, err := OpenLedger(c, state, "oem", slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	ctx := context.Background()
	h := func(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }
	pumps := func(v string) ledger.ModelRef { return ledger.ModelRef{Model: "pumps", Version: v} }
	decide := func(v, decision string) ledger.Approval {
		return ledger.Approval{ModelRef: pumps(v), ArtifactHash: h(v), Decision: decision, Reason: "FAT-7"}
	}
	for _, body := range []ledger.Body{
		ledger.Release{ModelRef: pumps("r1"), ArtifactHash: h("r1"), Channel: "stable"},
		ledger.Release{ModelRef: pumps("r3"), ArtifactHash: h("r3"), Channel: "beta"},
		ledger.Release{ModelRef: ledger.ModelRef{Model: "fans", Version: "r1"}, ArtifactHash: h("fans r1"), Channel: "stable"},
		decide("r5", "approved"),                           // a release candidate
		decide("r6", "approved"), decide("r6", "rejected"), // approved, then rejected
		decide("r7", "rejected"), decide("r7", "approved"), // rejected, then approved
		decide("r8", "rejected"),
	} {
		if _, err := lg.Outbox.Record(ctx, body); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // decisions in order of their times
	}
	if err := lg.Outbox.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := lg.SignedOff(ctx, "pumps")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{h("r1"): true, h("r3"): true, h("r5"): true, h("r7"): true}
	if !maps.Equal(got, want) {
		t.Errorf("signed off %v; want pumps r1 and r3 (released), r5 and r7 (approved last)", got)
	}
}
