package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/internal/testlog"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/local"
)

// A record given to the running gateway's Recorder is signed with the identity key created
// in the state directory and anchored in the local ledger, without any peer being reachable.
func TestGatewayAnchorsRecordsInLocalLedger(t *testing.T) {
	state := t.TempDir()
	dead := servicetest.FreePort(t) // nothing listens: ingest retries, the ledger does not care
	cfg, err := Parse([]byte(`
gateway: {factory: plant-7, state_dir: ` + state + `, http: {listen: ""}}
sources: [{name: broker, mqtt: {servers: ["tcp://127.0.0.1:` + strconv.Itoa(dead) + `"], topics: [{pattern: "f/{machine}/{signal}"}]}}]
sinks: [{name: influx, influxdb: {url: "http://127.0.0.1:` + strconv.Itoa(dead) + `", bucket: millwright}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	log, _ := testlog.New(slog.LevelWarn)
	g, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if g.Recorder() != nil {
		t.Fatal("Recorder is set before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	var rec ledger.Recorder
	for deadline := time.Now().Add(10 * time.Second); rec == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Recorder not available 10s after Run")
		}
		rec = g.Recorder()
	}
	sum := sha256.Sum256([]byte("snapshot metadata"))
	body := ledger.DatasetSnapshot{Rows: 10, MetadataHash: hex.EncodeToString(sum[:]), Windows: []ledger.SignalWindow{{
		Signal: "plant-7/l1/pump-1/temperature", From: time.Unix(0, 0).UTC(), To: time.Unix(10, 0).UTC(), Rows: 10,
	}}}
	r, err := rec.Record(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	if r.Header.Site != "plant-7" || r.Header.Actor.Org != "plant-7" || r.Header.Actor.Name != "gateway" {
		t.Fatalf("header = %+v, want site and org plant-7, name gateway", r.Header)
	}
	// Wait until anchored, then stop and read the ledger file back.
	waitAnchored(t, filepath.Join(state, "ledger", local.FileName), r.Header.ID)
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if g.Recorder() != nil {
		t.Fatal("Recorder still set after Run returned")
	}
	fi, err := os.Stat(filepath.Join(state, "identity.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity key: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
	key, err := ledger.LoadKey(filepath.Join(state, "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := local.Open(filepath.Join(state, "ledger"), local.WithKeyring(ledger.NewKeyring(key.Public().(ed25519.PublicKey))))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got, err := l.Get(context.Background(), r.Header.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := ledger.NewKeyring(key.Public().(ed25519.PublicKey)).Verify(got); err != nil {
		t.Fatalf("anchored record does not verify with the gateway's key: %v", err)
	}
}

func TestLedgerConfigProblems(t *testing.T) {
	_, err := Parse([]byte(`
gateway: {factory: plant-7, state_dir: /tmp/x}
sources: [{name: broker, mqtt: {servers: ["tcp://127.0.0.1:1883"], topics: [{pattern: "f/{machine}/{signal}"}]}}]
sinks: [{name: influx, influxdb: {url: "http://127.0.0.1:8086", bucket: millwright}}]
ledger: {backend: fabrik, name: ""}
`))
	if err == nil {
		t.Fatal("bad ledger block accepted")
	}
	for _, want := range []string{`ledger.backend: "fabrik" is not a ledger backend; expected local or none`, "ledger.name: must be set"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\nlacks %q", err, want)
		}
	}
}

func waitAnchored(t *testing.T, path, id string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), id) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("record %s not in %s after 10s", id, path)
		}
	}
}
