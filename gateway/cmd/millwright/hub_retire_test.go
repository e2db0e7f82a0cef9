package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/natsbus"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/internal/testlog"
)

// embeddedHub starts an embedded NATS server and returns the hub's connection to it.
func embeddedHub(t *testing.T) (*natsbus.Server, *natsbus.Bus) {
	t.Helper()
	sc := natsbus.ServerConfig{Listen: net.JoinHostPort("127.0.0.1", strconv.Itoa(servicetest.FreePort(t))), StoreDir: t.TempDir()}
	sc.SetDefaults()
	srv, err := natsbus.StartServer(sc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	bus, err := natsbus.Dial(context.Background(), srv.HubClient(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close() })
	return srv, bus
}

// TestHubRetiresFederations: at start the hub deletes what a retired federation keeps on
// the NATS server, keeps the federations it runs, and warns of one it neither runs nor
// retires, naming it.
func TestHubRetiresFederations(t *testing.T) {
	ctx := context.Background()
	_, bus := embeddedHub(t)
	for _, fed := range []string{"pumps", "old", "stray"} {
		if err := bus.EnsureFederation(ctx, fed, []string{"g0"}, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := bus.PutRound(ctx, fed, []byte("state of "+fed)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := hubFileConfig{Federations: []federation.FederationConfig{{Name: "pumps"}}, RetiredFederations: []string{"old", "never-ran"}}
	log, logged := testlog.New(slog.LevelInfo)
	if err := retireFederations(ctx, bus, cfg, log); err != nil {
		t.Fatal(err)
	}
	if got, err := bus.Federations(ctx); err != nil || !slices.Equal(got, []string{"pumps", "stray"}) {
		t.Fatalf("federations on the server after the start: %v, %v; want pumps and stray", got, err)
	}
	if b, err := bus.GetRound(ctx, "pumps"); err != nil || string(b) != "state of pumps" {
		t.Fatalf("pumps' round state: %q, %v", b, err)
	}
	out := logged.String()
	if !strings.Contains(out, "retired federation's storage deleted") || !strings.Contains(out, "federation=old") ||
		!strings.Contains(out, "keeps its storage") || !strings.Contains(out, "federation=stray") || strings.Contains(out, "never-ran") {
		t.Fatalf("log:\n%s\nwant old deleted and a warning naming stray", out)
	}
}

// TestHubConfigRetiredFederations: a retired federation cannot also be run, and a
// factory of the embedded server cannot be listed for a federation the hub does not run
// (it could still read that federation's models and store updates).
func TestHubConfigRetiredFederations(t *testing.T) {
	const doc = `
state_dir: /tmp/hub
nats:
  embedded:
    listen: "127.0.0.1:4222"
    factories: [{name: b, password: x, federations: [f, old]}]
retired_federations: [f, "Bad Name"]
federations:
  - name: f
    members: [{name: b, key: d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a}]
    architecture: {kind: autoencoder, params: 10}
`
	_, err := parseHubConfig([]byte(doc))
	paths := problemPaths(err)
	for _, want := range []string{"retired_federations[0]", "retired_federations[1]", "nats.embedded.factories[0].federations[1]"} {
		if !paths[want] {
			t.Errorf("no problem at %s: %v", want, err)
		}
	}
	for _, want := range []string{`"f" is in federations too`, `"old" is not one of the hub's federations`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
}

// TestHubFinishesARetirement: a retirement that stopped partway (everything deleted but
// the receipts, which name the members the hub rejected) is finished at the next start.
func TestHubFinishesARetirement(t *testing.T) {
	ctx := context.Background()
	srv, bus := embeddedHub(t)
	if err := bus.EnsureFederation(ctx, "old", []string{"g0"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := bus.PutReceipts(ctx, "old", map[string][]byte{"g0": []byte("rejected")}); err != nil {
		t.Fatal(err)
	}
	hc := srv.HubClient()
	nc, err := nats.Connect(hc.URL, nats.UserInfo(hc.User, hc.Password.Value()))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"MWUPD-old", "OBJ_mwmodels-old", "OBJ_mwhub-old", "KV_mwround-old"} {
		if err := js.DeleteStream(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := retireFederations(ctx, bus, hubFileConfig{RetiredFederations: []string{"old"}}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(ctx, "KV_mwrcpt-old"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("old's receipts after the start: %v; want them deleted", err)
	}
	if got, err := bus.Federations(ctx); err != nil || len(got) != 0 {
		t.Fatalf("federations on the server after the start: %v, %v; want none", got, err)
	}
}
