package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway"
	"github.com/millwright-io/millwright/internal/fedtest"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/internal/testlog"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/local"
)

// newHubDir makes a hub's state directory under root, with the hub's key made up front so
// that configurations can name it.
func newHubDir(t *testing.T, root string) (string, ed25519.PrivateKey) {
	t.Helper()
	dir := filepath.Join(root, "hub")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := ledger.LoadOrCreateKey(filepath.Join(dir, "hub.key"))
	if err != nil {
		t.Fatal(err)
	}
	return dir, key
}

// hubCmd is `millwright hub` running in the test, with its output.
type hubCmd struct {
	out, err *testlog.Buffer
	cancel   context.CancelFunc
	done     chan int
	once     sync.Once
}

// startHubCmd writes yaml to root/hub.yaml and runs `millwright hub --config` on it until
// stop, or the test's end.
func startHubCmd(t *testing.T, root, yaml string) *hubCmd {
	t.Helper()
	path := filepath.Join(root, "hub.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &hubCmd{out: &testlog.Buffer{}, err: &testlog.Buffer{}, cancel: cancel, done: make(chan int, 1)}
	go func() { h.done <- cmdHub(ctx, []string{"--config", path}, h.out, h.err) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

// stop stops the hub and fails the test if it exited with an error; only the first call
// does anything.
func (h *hubCmd) stop(t *testing.T) {
	h.once.Do(func() {
		h.cancel()
		if code := <-h.done; code != 0 {
			t.Errorf("hub exited %d: %s", code, h.err.String())
		}
	})
}

// TestFederatedRoundEndToEnd runs `millwright hub` (embedded NATS, local ledger, HTTP API)
// from a YAML file and two gateways built with gateway.New from YAML, each with its own
// state directory and its own pump history in InfluxDB, one connected directly and one
// through its own leaf node, with secure aggregation and each other's keys pinned (peers). One
// federated round completes:
// both gateways' updates are used, a global model is published, the hub's ledger holds
// the FederatedRound and each gateway's ledger a LocalTraining continued from the round's
// global model, and the round shows on GET /api/v1/federations.
func TestFederatedRoundEndToEnd(t *testing.T) {
	servicetest.Require(t, "Mosquitto and InfluxDB")
	root := t.TempDir()
	names := []string{"factory-a", "factory-b"}

	// Histories and the model layout that fits them; the hub's key and each gateway's
	// identity key (the ledger's), made up front so that the configurations can name them.
	db, arch := fedtest.StorePumps(t, names...)
	hubDir, hubKey := newHubDir(t, root)
	keys := fedtest.IdentityKeys(t, root, names...)
	natsPort, leafPort, httpAddr := servicetest.FreePort(t), servicetest.FreePort(t), fmt.Sprintf("127.0.0.1:%d", servicetest.FreePort(t))
	hubYAML := fmt.Sprintf(`
state_dir: %s
log: {level: warn}
http: {listen: "%s"}
nats:
  embedded:
    listen: 127.0.0.1:%d
    leaf_listen: 127.0.0.1:%d
    factories:
      - {name: factory-a, password: pw-a, federations: [pumps]}
      - {name: factory-b, password: pw-b, federations: [pumps]}
federations:
  - name: pumps
    members:
      - {name: factory-a, key: %s}
      - {name: factory-b, key: %s}
    architecture: %s
    rounds: 1
    quorum: 2
    round_timeout: 5m
    strategy: {name: fedprox, proximal_mu: 0.01}
    secagg: {enabled: true, sample_cap: 5000, metrics: [false_alarm_rate, detection_rate]}
`, hubDir, httpAddr, natsPort, leafPort, hex.EncodeToString(keys["factory-a"]), hex.EncodeToString(keys["factory-b"]), fedtest.ArchitectureYAML(arch))
	hub := startHubCmd(t, root, hubYAML)
	hubOut, hubErr := hub.out, hub.err
	ctx := context.Background()

	// The gateways.
	gwCtx, stopGateways := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopGateways(); wg.Wait() }()
	for i, n := range names {
		// factory-a connects to the hub directly, factory-b through its own leaf node.
		gc := fedtest.Gateway{Factory: n, StateDir: filepath.Join(root, n), Topic: servicetest.UniqueName("fed"), DB: db,
			Password: "pw-" + n[len(n)-1:], HubKey: hubKey.Public().(ed25519.PublicKey),
			Peers: map[string]ed25519.PublicKey{names[1-i]: keys[names[1-i]]}, Architecture: arch}
		if i == 0 {
			gc.NATSURL = fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
		} else {
			gc.LeafListen, gc.LeafHubURL = fmt.Sprintf("127.0.0.1:%d", servicetest.FreePort(t)), fmt.Sprintf("nats-leaf://127.0.0.1:%d", leafPort)
		}
		cfg, err := gateway.Parse([]byte(gc.YAML()))
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		g, err := gateway.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.Run(gwCtx); err != nil {
				t.Errorf("gateway %s: %v", n, err)
			}
		}()
	}

	// The round closes with both updates and a published model.
	var round struct {
		Name      string `json:"name"`
		LastRound *struct {
			Round   uint64   `json:"Round"`
			Outcome string   `json:"Outcome"`
			Model   string   `json:"Model"`
			Used    []string `json:"Used"`
		} `json:"last_round"`
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		var list []json.RawMessage
		resp, err := http.Get("http://" + httpAddr + "/api/v1/federations")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&list)
			_ = resp.Body.Close()
		}
		if err == nil && len(list) == 1 {
			if err := json.Unmarshal(list[0], &round); err != nil {
				t.Fatal(err)
			}
			if round.LastRound != nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no round closed in time (last error %v); hub stderr:\n%s", err, hubErr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	lr := round.LastRound
	if lr.Outcome != "aggregated" || len(lr.Model) != 64 || len(lr.Used) != 2 {
		t.Fatalf("round %+v; want aggregated from both gateways with a model", *lr)
	}

	// An OEM pulls the model and checks its lineage: in the hub's ledger (read while the
	// hub writes it) the round record names the model; a gateway's ledger has no such
	// record, so the model is refused and not written.
	keysFile := filepath.Join(root, "hub-keys.txt")
	line := audit.FormatKey(audit.Key{Name: "hub", Org: hubOrg, Public: hubKey.Public().(ed25519.PublicKey)})
	if err := os.WriteFile(keysFile, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pull := func(ledgerDir, out string) (int, string) {
		var stdout, stderr testlog.Buffer
		code := cmdModelsPull(ctx, []string{"--nats", fmt.Sprintf("nats://127.0.0.1:%d", natsPort), "--user", "factory-a",
			"--password", "env:MILLWRIGHT_E2E_PW", "--hub-key", hex.EncodeToString(hubKey.Public().(ed25519.PublicKey)),
			"--out", out, "--ledger", ledgerDir, "--keys", keysFile, "--lineage-wait", "10s", "pumps@latest"}, &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	t.Setenv("MILLWRIGHT_E2E_PW", "pw-a")
	okOut := filepath.Join(root, "oem-ok")
	if code, out := pull(filepath.Join(hubDir, "ledger"), okOut); code != 0 || !strings.Contains(out, lr.Model) ||
		!strings.Contains(out, ", round metrics detection_rate=") {
		t.Errorf("pull with the hub's ledger: exit %d: %s; want the model and its round's metrics from the ledger", code, out)
	}
	badOut := filepath.Join(root, "oem-bad")
	if code, out := pull(filepath.Join(root, "factory-a", "ledger"), badOut); code != 1 || !strings.Contains(out, "lineage of pumps@") {
		t.Errorf("pull checked against a ledger without the round: exit %d: %s; want 1 and a lineage error", code, out)
	}
	if files, _ := filepath.Glob(filepath.Join(badOut, "*.mwg")); len(files) != 0 {
		t.Errorf("a model without lineage was written: %v", files)
	}

	// Stop everything, then read the ledgers.
	stopGateways()
	wg.Wait()
	hub.stop(t)
	records := func(dir string, typ ledger.Type) []ledger.Record {
		l, err := local.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		recs, err := l.Query(ctx, ledger.Query{Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	fr := records(filepath.Join(hubDir, "ledger"), ledger.TypeFederatedRound)
	if len(fr) != 1 {
		t.Fatalf("%d FederatedRound records in the hub's ledger; want 1", len(fr))
	}
	b, _ := json.Marshal(fr[0].Body)
	if !bytes.Contains(b, []byte(lr.Model)) {
		t.Errorf("FederatedRound %s does not name the published model %s", b, lr.Model)
	}
	// The round's metrics, unmasked as a sum only, are in its record, and an auditor's
	// lineage shows them.
	var lineage, lerr testlog.Buffer
	if code := cmdAudit(ctx, []string{"lineage", "pumps@r1", "--ledger", filepath.Join(hubDir, "ledger")}, &lineage, &lerr); code != 0 ||
		!strings.Contains(lineage.String(), "federated_round: pumps round 1") || !strings.Contains(lineage.String(), ", metrics detection_rate=") ||
		!strings.Contains(lineage.String(), ", false_alarm_rate=") {
		t.Errorf("audit lineage pumps@r1: exit %d: %s%s; want the round with its two metrics", code, lineage.String(), lerr.String())
	}
	var ol, olErr testlog.Buffer
	if code := cmdAudit(ctx, []string{"export", "pumps@r1", "--format", "openlineage", "--ledger", filepath.Join(hubDir, "ledger")}, &ol, &olErr); code != 0 ||
		!strings.Contains(ol.String(), `"metrics":{"detection_rate":`) {
		t.Errorf("audit export pumps@r1 --format openlineage: exit %d: %s%s; want the round's metrics in its facet", code, ol.String(), olErr.String())
	}
	for _, n := range names {
		lt := records(filepath.Join(root, n, "ledger"), ledger.TypeLocalTraining)
		if len(lt) == 0 {
			t.Fatalf("%s: no LocalTraining record", n)
		}
		b, _ := json.Marshal(lt[len(lt)-1].Body)
		if !bytes.Contains(b, []byte(`pumps@r1`)) {
			t.Errorf("%s: LocalTraining %s is not the continuation of pumps@r1", n, b)
		}
	}
	if !bytes.Contains([]byte(hubOut.String()), []byte(hex.EncodeToString(hubKey.Public().(ed25519.PublicKey)))) {
		t.Errorf("the hub did not print its key: %s", hubOut.String())
	}
}
