package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/gateway"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/internal/testpki"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/local"
)

// signOffHub is a running `millwright hub` whose local ledger holds the round record of
// pumps@r1 (artifact), and whose signoff.keys lets Dana approve and Erik release.
type signOffHub struct {
	root, ledgerDir, artifact, url string
	keyFile                        func(name string) string // of dana, erik and mallory
	signer                         *ledger.Signer           // the hub's
}

// startSignOffHub starts it, with tlsYAML as its http section's tls (such as "{cert_file:
// ..., key_file: ...}"; "" for plain HTTP), and waits for its API.
func startSignOffHub(t *testing.T, tlsYAML string) signOffHub {
	t.Helper()
	root := t.TempDir()
	hubDir, hubKey := newHubDir(t, root)
	// The hub's ledger already holds the round that produced pumps@r1.
	artifact := filepath.Join(root, "pumps@r1.bin")
	if err := os.WriteFile(artifact, []byte("pumps r1"), 0o600); err != nil {
		t.Fatal(err)
	}
	hubSigner, err := ledger.NewSigner(hubKey, "hub", hubOrg)
	if err != nil {
		t.Fatal(err)
	}
	ledgerDir := filepath.Join(hubDir, "ledger")
	lg, err := local.Open(ledgerDir, local.WithKeyring(ledger.NewKeyring(hubSigner.Public())))
	if err != nil {
		t.Fatal(err)
	}
	r1 := ledger.ModelRef{Model: "pumps", Version: "r1"}
	audittest.Writer(t, lg, hubSigner)(ledger.FederatedRound{Federation: "pumps", Round: 1, Participants: []string{"factory-a"}, Aggregation: "fedavg",
		InputUpdates: []string{audittest.Hash([]byte("u"))}, Output: r1, OutputHash: audittest.Hash([]byte("pumps r1")), Parents: []ledger.ModelRef{}})
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}

	// The people's keys; the hub takes Dana's and Erik's records.
	keyFile := func(name string) string { return filepath.Join(root, name+".key") }
	for _, n := range []string{"dana", "erik", "mallory", "frank"} {
		if _, err := ledger.LoadOrCreateKey(keyFile(n)); err != nil {
			t.Fatal(err)
		}
	}
	signoffKeys := filepath.Join(root, "signoff-keys.txt")
	if err := os.WriteFile(signoffKeys, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Dana approves, Erik releases on stable: the hub's keyring keeps their duties apart.
	if err := addKeys(signoffKeys, signoffKeys, "oem", signerKey{name: "Dana Weiss", file: keyFile("dana"), records: []ledger.Type{ledger.TypeApproval}, models: []string{"pumps"}},
		signerKey{name: "Erik Lund", file: keyFile("erik"), records: []ledger.Type{ledger.TypeRelease}, channels: []string{"stable"}}); err != nil {
		t.Fatal(err)
	}
	// Frank's key was revoked at the start of the year.
	frank, err := ledger.LoadKey(keyFile("frank"))
	if err != nil {
		t.Fatal(err)
	}
	line := audit.FormatKey(audit.Key{Name: "Frank Ode", Org: "oem", Public: frank.Public().(ed25519.PublicKey), Revoked: frankRevoked})
	if err := appendLine(signoffKeys, line); err != nil {
		t.Fatal(err)
	}

	memberKey := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", servicetest.FreePort(t))
	scheme, tlsLine := "http", ""
	if tlsYAML != "" {
		scheme, tlsLine = "https", ", tls: "+tlsYAML
	}
	hubYAML := fmt.Sprintf(`
state_dir: %s
log: {level: warn}
http: {listen: "%s"%s}
signoff: {keys: %s}
nats:
  embedded:
    listen: 127.0.0.1:%d
federations:
  - name: pumps
    members: [{name: factory-a, key: %x}]
    architecture: {kind: linear, version: 1, inputs: 4, params: 4}
    rounds: 1
`, hubDir, httpAddr, tlsLine, signoffKeys, servicetest.FreePort(t), []byte(memberKey))
	startHubCmd(t, root, hubYAML)
	hubURL := scheme + "://" + httpAddr
	servicetest.WaitFor(t, 30*time.Second, "the hub's API", func() bool {
		conn, err := net.Dial("tcp", httpAddr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	return signOffHub{root: root, ledgerDir: ledgerDir, artifact: artifact, url: hubURL, keyFile: keyFile, signer: hubSigner}
}

// frankRevoked is when Frank's key, which startSignOffHub's signoff.keys lists, was revoked.
var frankRevoked = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// appendLine appends line to the file at path.
func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(f, line)
	return errors.Join(err, f.Close())
}

// TestHubTakesSignOff runs `millwright hub` with a local ledger that holds a round record
// of pumps@r1 and signoff.keys listing Dana and Erik. While the hub runs and holds the
// ledger, Dana approves pumps@r1 and Erik releases it through the hub's HTTP API (--hub);
// Mallory, whose key the hub does not list, is refused; and the auditor, reading the
// ledger while the hub runs, verifies the release.
func TestHubTakesSignOff(t *testing.T) {
	e := startSignOffHub(t, "")
	root, ledgerDir, artifact, keyFile, hubURL := e.root, e.ledgerDir, e.artifact, e.keyFile, e.url
	who := func(name, key string, a ...string) []string {
		return append(append([]string{"models"}, a...), "--key", keyFile(key), "--name", name, "--org", "oem", "--ledger", ledgerDir, "--hub", hubURL)
	}
	// The hub takes a model file back only for a version people signed off.
	r1 := ledger.ModelRef{Model: "pumps", Version: "r1"}
	hub := &hubLedger{base: hubURL, client: http.DefaultClient}
	model, err := os.ReadFile(artifact)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hub.restore(context.Background(), r1, model); err == nil || !strings.Contains(err.Error(), "409 Conflict") ||
		!strings.Contains(err.Error(), "pumps@r1 is neither approved nor released") {
		t.Errorf("the model of a version nobody signed off: %v; want 409", err)
	}
	// Dana approves with the file in hand: the hub, which does not store the model, takes it.
	runCLI(t, who("Dana Weiss", "dana", "approve", "pumps@r1", "--reason", "passed FAT-7", "--file", artifact), 0,
		[]string{"pumps@r1 approved by Dana Weiss (oem)", "through the hub " + hubURL,
			"the hub no longer stored the model of pumps@r1 (keep_models): it stored it again from " + artifact}, nil)
	if restored, err := hub.restore(context.Background(), r1, model); err != nil || restored {
		t.Errorf("the model again: restored %v, %v; want false (stored), nil", restored, err)
	}
	for _, ref := range []ledger.ModelRef{{Model: "pumps", Version: "r9"}, {Model: "presses", Version: "r1"}} {
		if _, err := hub.restore(context.Background(), ref, model); err == nil || !strings.Contains(err.Error(), "404 Not Found") {
			t.Errorf("%s: %v; want 404", ref, err)
		}
	}
	// A record of Frank's revoked key is refused however early it is dated: the hub
	// receives it after the revocation.
	frank, err := ledger.LoadKey(keyFile("frank"))
	if err != nil {
		t.Fatal(err)
	}
	frankSigner, err := ledger.NewSigner(frank, "Frank Ode", "oem")
	if err != nil {
		t.Fatal(err)
	}
	backdated := pumpsR1Approval(t, frankSigner, frankRevoked.Add(-time.Hour), "backdated")
	if err := hub.Anchor(context.Background(), backdated); !errors.Is(err, ledger.ErrRejected) || !strings.Contains(err.Error(), "403 Forbidden") ||
		!strings.Contains(err.Error(), "key revoked: the key of Frank Ode (oem) was revoked at 2026-01-01T00:00:00Z, and the hub takes none of its records after that") {
		t.Errorf("a backdated record of a revoked key: %v; want 403", err)
	}
	// Without --hub the running hub's ledger is not written behind its back.
	runCLI(t, []string{"models", "approve", "pumps@r1", "--reason", "again", "--key", keyFile("dana"), "--name", "Dana Weiss", "--org", "oem", "--ledger", ledgerDir}, 1,
		nil, []string{"record through the running hub (--hub URL)"})
	runCLI(t, who("Mallory", "mallory", "release", "pumps@r1", "--channel", "stable"), 1, nil,
		[]string{"403 Forbidden", "not in the keyring", "(the hub's signoff.keys)"})
	runCLI(t, who("Dana Weiss", "dana", "release", "pumps@r1", "--channel", "stable"), 1, nil, []string{"a release needs a second person (four eyes)"})
	runCLI(t, who("Dana Weiss", "dana", "release", "pumps@r1", "--channel", "stable", "--sole-approver"), 1, nil,
		[]string{"403 Forbidden", "Dana Weiss (oem) may sign approval records, and this is a release record"})
	runCLI(t, who("Erik Lund", "erik", "release", "pumps@r1", "--channel", "beta"), 1, nil,
		[]string{"403 Forbidden", "Erik Lund (oem) may release on stable, and this release is on beta"})
	runCLI(t, who("Erik Lund", "erik", "release", "pumps@r1", "--channel", "stable"), 0,
		[]string{"pumps@r1 released on stable by Erik Lund (oem)"}, nil)

	// The auditor reads the ledger the hub still holds.
	keys := filepath.Join(root, "keys.txt")
	if err := os.WriteFile(keys, []byte(audit.FormatKey(audit.Key{Name: "hub", Org: hubOrg, Public: e.signer.Public()})+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := addKeys(keys, keys, "oem", signerKey{name: "Dana Weiss", file: keyFile("dana")}, signerKey{name: "Erik Lund", file: keyFile("erik")}); err != nil {
		t.Fatal(err)
	}
	runCLI(t, []string{"audit", "verify", artifact, "--ledger", ledgerDir, "--keys", keys, "--four-eyes"}, 0,
		[]string{"VERIFIED", "released by Erik Lund (oem) on stable"}, nil)
}

// TestHubSignOffOverTLS: a hub whose http.tls has a certificate and client_ca_file takes
// records over mutual TLS only: Dana's approval with the hub's CA and her client
// certificate is taken; without a client certificate, or without the hub's CA, the TLS
// handshake fails and nothing is recorded.
func TestHubSignOffOverTLS(t *testing.T) {
	pki := testpki.New(t, "oem")
	e := startSignOffHub(t, fmt.Sprintf("{cert_file: %s, key_file: %s, client_ca_file: %s}", pki.ServerCertFile, pki.ServerKeyFile, pki.CAFile))
	approve := func(tlsFlags ...string) []string {
		return append([]string{"models", "approve", "pumps@r1", "--reason", "passed FAT-7", "--key", e.keyFile("dana"), "--name", "Dana Weiss", "--org", "oem",
			"--ledger", e.ledgerDir, "--hub", e.url, "--wait", "3s"}, tlsFlags...)
	}
	approvals := func() int {
		t.Helper()
		recs, err := ledgerRecords(context.Background(), e.ledgerDir, ledger.TypeApproval)
		if err != nil {
			t.Fatal(err)
		}
		return len(recs)
	}
	// TLS 1.3 reports the missing client certificate after the handshake: the client sees
	// the hub's "certificate required" alert or its closed connection, whichever comes first.
	runCLI(t, approve("--hub-ca", pki.CAFile), 1, nil, []string{"records still queued", "the last attempt failed: hub " + e.url})
	runCLI(t, approve(), 1, nil, []string{"the last attempt failed", "certificate signed by unknown authority"})
	if n := approvals(); n != 0 {
		t.Fatalf("%d approvals recorded without a client certificate or the hub's CA", n)
	}
	// Dana's outbox sends the two approvals still queued, then this one.
	runCLI(t, approve("--hub-ca", pki.CAFile, "--hub-cert", pki.CertFile, "--hub-key", pki.KeyFile), 0,
		[]string{"pumps@r1 approved by Dana Weiss (oem)", "through the hub " + e.url}, nil)
	if n := approvals(); n != 3 {
		t.Errorf("%d approvals recorded over mutual TLS, want 3", n)
	}
	runCLI(t, []string{"models", "approve", "pumps@r1", "--reason", "x", "--key", e.keyFile("dana"), "--name", "Dana Weiss", "--org", "oem",
		"--ledger", e.ledgerDir, "--hub", "http://" + strings.TrimPrefix(e.url, "https://"), "--hub-ca", pki.CAFile}, 1, nil,
		[]string{"--hub-ca, --hub-cert and --hub-key need an https:// URL"})
}

// TestSignOffAPIResentAfterRevocation: a record the hub took before its key was revoked,
// sent again after (its answer was lost), is answered 200 as any record sent twice;
// another record of that key, dated as early, is refused.
func TestSignOffAPIResentAfterRevocation(t *testing.T) {
	ctx := context.Background()
	frank := oemSigner(t, "Frank Ode", 23)
	var c gateway.LedgerConfig
	c.SetDefaults()
	lg, err := gateway.OpenLedger(c, t.TempDir(), "oem", slog.New(slog.DiscardHandler), prometheus.NewRegistry(), frank.Public())
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	revoked := time.Now().UTC().Add(-time.Hour)
	keys, err := audit.ParseKeyring([]byte(audit.FormatKey(audit.Key{Name: "Frank Ode", Org: "oem", Public: frank.Public(), Revoked: revoked}) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	taken := pumpsR1Approval(t, frank, revoked.Add(-time.Hour), "taken before the revocation")
	if err := lg.Anchor(ctx, taken); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api := signOffAPI{lg: lg, keys: keys, log: slog.New(slog.DiscardHandler)}
	mux.HandleFunc("POST "+ledgerRecordsPath, api.post)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	hub := &hubLedger{base: srv.URL, client: srv.Client()}
	if err := hub.Anchor(ctx, taken); err != nil {
		t.Errorf("the record the hub took before the revocation, sent again: %v; want it held", err)
	}
	if err := hub.Anchor(ctx, pumpsR1Approval(t, frank, revoked.Add(-time.Hour), "backdated")); !errors.Is(err, ledger.ErrRejected) || !strings.Contains(err.Error(), "the hub takes none of its records after that") {
		t.Errorf("another record of the revoked key: %v; want 403", err)
	}
}

// pumpsR1Approval returns an approval of pumps@r1 (startSignOffHub's, whose artifact is
// "pumps r1") signed by s and dated at, with reason.
func pumpsR1Approval(t *testing.T, s *ledger.Signer, at time.Time, reason string) ledger.Record {
	t.Helper()
	body, err := ledger.CanonicalMarshal(ledger.Approval{ModelRef: ledger.ModelRef{Model: "pumps", Version: "r1"},
		ArtifactHash: audittest.Hash([]byte("pumps r1")), Decision: "approved", Reason: reason})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Sign(ledger.Record{Header: ledger.Header{ID: ledger.NewID(), SchemaVersion: ledger.SchemaVersion,
		Type: ledger.TypeApproval, Time: at, Site: "oem"}, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}
