package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/natsbus"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/models"
)

type plusOne struct{}

func (plusOne) Train(_ context.Context, _ federation.Task, g []float32) (federation.TrainResult, error) {
	for i := range g {
		g[i]++
	}
	return federation.TrainResult{Params: g, Samples: 1}, nil
}

// TestModelsSubscribeAndPull runs a hub and two gateways in process, and an OEM that may
// read the federation's models (but send no updates) following it from the command line.
func TestModelsSubscribeAndPull(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(servicetest.FreePort(t)))
	sc := natsbus.ServerConfig{Listen: addr, StoreDir: t.TempDir(), Factories: []natsbus.Factory{
		{Name: "g0", Password: config.NewSecret("p0"), Federations: []string{"pumps"}},
		{Name: "g1", Password: config.NewSecret("p1"), Federations: []string{"pumps"}},
		{Name: "oem", Password: config.NewSecret("po"), Federations: []string{"pumps"}},
	}}
	sc.SetDefaults()
	srv, err := natsbus.StartServer(sc, log)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hubBus, err := natsbus.Dial(ctx, srv.HubClient(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hubBus.Close() }()
	if err := hubBus.EnsureFederation(ctx, "pumps", []string{"g0", "g1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	hubKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	fc := federation.FederationConfig{Name: "pumps", Rounds: 2, RoundTimeout: time.Minute,
		Architecture: models.Architecture{Kind: "linear", Version: 1, Params: 10}}
	var keys []ed25519.PrivateKey
	for i := range 2 {
		k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i + 1)}, 32))
		keys = append(keys, k)
		fc.Members = append(fc.Members, federation.Member{Name: fmt.Sprintf("g%d", i), Key: federation.PublicKey{PublicKey: k.Public().(ed25519.PublicKey)}})
	}
	hc := federation.HubConfig{Federations: []federation.FederationConfig{fc}}
	hc.SetDefaults()
	hub, err := federation.NewHub(hc, hubBus, hubKey, federation.HubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	common := []string{"--nats", srv.ClientURL(), "--user", "oem", "--password", "env:OEM_PW", "--hub-key", hex.EncodeToString(hubKey.Public().(ed25519.PublicKey)), "--out", out}
	t.Setenv("OEM_PW", "po")
	var sub bytes.Buffer
	subDone := make(chan int, 1)
	go func() {
		subDone <- cmdModelsSubscribe(ctx, append([]string{"--federation", "pumps"}, common...), &sub, os.Stderr)
	}()
	hubDone := make(chan error, 1)
	go func() { hubDone <- hub.Run(ctx) }()
	var gws []chan error
	for i := range 2 {
		b, err := natsbus.Dial(ctx, natsbus.ClientConfig{URL: srv.ClientURL(), User: fmt.Sprintf("g%d", i), Password: config.NewSecret(fmt.Sprintf("p%d", i)), Timeout: 5 * time.Second}, log)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = b.Close() }()
		p, err := federation.NewParticipant(federation.ParticipantConfig{Federation: "pumps", Name: fmt.Sprintf("g%d", i), HubKey: hubKey.Public().(ed25519.PublicKey)}, b, keys[i], plusOne{}, log, nil)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		gws = append(gws, done)
		go func() { done <- p.Run(ctx) }()
	}
	latest := filepath.Join(out, "pumps.latest")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(latest); err == nil && strings.HasPrefix(string(b), "r2 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the subscriber did not write r2; it printed %q", sub.String())
		}
	}
	cancel()
	if code := <-subDone; code != 0 {
		t.Fatalf("subscribe exited %d", code)
	}
	<-hubDone
	for _, d := range gws {
		<-d
	}
	// pull writes r1; its file is the signed model, whose hash is in the ledger's terms.
	pullOut := t.TempDir()
	var pulled bytes.Buffer
	args := append(append([]string{}, common[:len(common)-1]...), pullOut, "pumps@r1")
	if code := cmdModelsPull(context.Background(), args, &pulled, os.Stderr); code != 0 {
		t.Fatalf("pull exited %d", code)
	}
	data, err := os.ReadFile(filepath.Join(pullOut, "pumps@r1.mwg"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := federation.DecodeModel(data, hubKey.Public().(ed25519.PublicKey))
	if err != nil || g.Header.Round != 1 || !strings.Contains(pulled.String(), federation.HashHex(data)) {
		t.Fatalf("pulled %v %v, printed %q", g, err, pulled.String())
	}
	if g.Params[0] < 0.8 || g.Params[0] > 1.2 { // the initial ±0.1 plus one
		t.Fatalf("r1 parameter %v; want about 1", g.Params[0])
	}
	// A model the hub deleted (keep_models) is named as such.
	h0, err := hubBus.GetVersion(context.Background(), "pumps", "r0")
	if err == nil {
		err = hubBus.DeleteModel(context.Background(), "pumps", h0)
	}
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	args[len(args)-1] = "pumps@r0"
	if code := cmdModelsPull(context.Background(), args, &pulled, &stderr); code == 0 || !strings.Contains(stderr.String(), "pumps@r0 (sha256 "+h0+") is no longer stored") {
		t.Fatalf("pull of a deleted model exited %d: %q", code, stderr.String())
	}
	// A wrong hub key is refused.
	args[len(args)-1] = "pumps@r1"
	args[len(args)-4] = hex.EncodeToString(keys[0].Public().(ed25519.PublicKey))
	if code := cmdModelsPull(context.Background(), args, &pulled, &bytes.Buffer{}); code == 0 {
		t.Fatal("pull accepted a model under a key that is not the hub's")
	}
}
