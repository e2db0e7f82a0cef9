package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/natsbus"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/local"
	"github.com/millwright-io/millwright/ledger/signoff"
	"github.com/millwright-io/millwright/models"
)

type plusOne struct{}

func (plusOne) Train(_ context.Context, _ federation.Task, g []float32) (federation.TrainResult, error) {
	for i := range g {
		g[i]++
	}
	return federation.TrainResult{Params: g, Samples: 1}, nil
}

// pumps is a federation "pumps" run in process for the OEM commands' tests: an embedded
// NATS server, a hub (its ledger records to rec, if any) running two rounds, and two
// gateways; common are the flags of an OEM that may read the federation's models (but
// send no updates), writing to out.
type pumps struct {
	srv     *natsbus.Server
	hubBus  *natsbus.Bus
	hubKey  ed25519.PrivateKey
	members []ed25519.PrivateKey
	common  []string
	out     string
	done    []chan error // the hub's and the gateways' Run
}

func startPumps(t *testing.T, ctx context.Context, rec ledger.Recorder) *pumps {
	t.Helper()
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
	t.Cleanup(srv.Shutdown)
	p := &pumps{srv: srv, hubKey: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)), out: t.TempDir()}
	if p.hubBus, err = natsbus.Dial(ctx, srv.HubClient(), log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.hubBus.Close() })
	if err := p.hubBus.EnsureFederation(ctx, "pumps", []string{"g0", "g1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	fc := federation.FederationConfig{Name: "pumps", Rounds: 2, RoundTimeout: time.Minute,
		Architecture: models.Architecture{Kind: "linear", Version: 1, Params: 10}}
	for i := range 2 {
		k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i + 1)}, 32))
		p.members = append(p.members, k)
		fc.Members = append(fc.Members, federation.Member{Name: fmt.Sprintf("g%d", i), Key: federation.PublicKey{PublicKey: k.Public().(ed25519.PublicKey)}})
	}
	hc := federation.HubConfig{Federations: []federation.FederationConfig{fc}}
	hc.SetDefaults()
	hub, err := federation.NewHub(hc, p.hubBus, p.hubKey, federation.HubOptions{Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	p.common = []string{"--nats", srv.ClientURL(), "--user", "oem", "--password", "env:OEM_PW", "--hub-key", hex.EncodeToString(p.hubKey.Public().(ed25519.PublicKey)), "--out", p.out}
	t.Setenv("OEM_PW", "po")
	run := func(f func() error) {
		done := make(chan error, 1)
		p.done = append(p.done, done)
		go func() { done <- f() }()
	}
	run(func() error { return hub.Run(ctx) })
	for i := range 2 {
		b, err := natsbus.Dial(ctx, natsbus.ClientConfig{URL: srv.ClientURL(), User: fmt.Sprintf("g%d", i), Password: config.NewSecret(fmt.Sprintf("p%d", i)), Timeout: 5 * time.Second}, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		pt, err := federation.NewParticipant(federation.ParticipantConfig{Federation: "pumps", Name: fmt.Sprintf("g%d", i), HubKey: p.hubKey.Public().(ed25519.PublicKey)}, b, p.members[i], plusOne{}, log, nil)
		if err != nil {
			t.Fatal(err)
		}
		run(func() error { return pt.Run(ctx) })
	}
	return p
}

// wait waits for the hub and the gateways to return (their context has ended).
func (p *pumps) wait() {
	for _, d := range p.done {
		<-d
	}
}

// TestModelsSubscribeAndPull runs a hub and two gateways in process, and an OEM that may
// read the federation's models (but send no updates) following it from the command line.
func TestModelsSubscribeAndPull(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sub bytes.Buffer
	subDone := make(chan int, 1)
	p := startPumps(t, ctx, nil)
	common, out, hubKey, hubBus, keys := p.common, p.out, p.hubKey, p.hubBus, p.members
	go func() {
		subDone <- cmdModelsSubscribe(ctx, append([]string{"--federation", "pumps"}, common...), &sub, os.Stderr)
	}()
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
	p.wait()
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

// startRecordedPumps starts the federation of startPumps with its hub recording, through
// an outbox of its own, into a new local ledger, which it returns with its directory once
// it holds both rounds.
func startRecordedPumps(t *testing.T, ctx context.Context) (*pumps, *local.Ledger, string) {
	t.Helper()
	dir := t.TempDir()
	lg, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lg.Close() })
	hubOut, err := ledger.Open(ledger.Config{Dir: t.TempDir(), Site: "oem"}, oemSigner(t, "hub", 7), lg) // startPumps's hub key
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	go func() { defer close(ran); _ = hubOut.Run(ctx) }()
	t.Cleanup(func() { <-ran; _ = hubOut.Close() }) // once the caller's cancel has stopped its Run
	p := startPumps(t, ctx, hubOut)
	servicetest.WaitFor(t, 30*time.Second, "both rounds in the ledger", func() bool {
		recs, _ := lg.Query(ctx, ledger.Query{Type: ledger.TypeFederatedRound})
		return len(recs) == 2 && hubOut.Stats().Pending == 0
	})
	return p, lg, dir
}

// oemSigner returns a signer of the organisation oem named name, with a key from seed.
func oemSigner(t *testing.T, name string, seed byte) *ledger.Signer {
	t.Helper()
	s, err := ledger.NewSigner(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, 32)), name, "oem")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestModelsSubscribeChannel: an OEM following the channel stable gets exactly the versions
// people released on it, in turn, each checked against the ledger; a release by a key the
// OEM does not trust moves nothing.
func TestModelsSubscribeChannel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, lg, dir := startRecordedPumps(t, ctx)
	// Into the same ledger: a trusted engineer's records and an untrusted one's.
	danaSigner := oemSigner(t, "Dana Weiss", 21)
	dana, mallory := audittest.Writer(t, lg, danaSigner), audittest.Writer(t, lg, oemSigner(t, "Mallory", 22))
	danaKey := audit.FormatKey(audit.Key{Name: "Dana Weiss", Org: "oem", Public: danaSigner.Public()})
	keys := filepath.Join(t.TempDir(), "keys.txt")
	hubLine := audit.FormatKey(audit.Key{Name: "hub", Org: "oem", Public: p.hubKey.Public().(ed25519.PublicKey)})
	if err := os.WriteFile(keys, []byte(hubLine+"\n"+danaKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr syncBuffer
	subDone := make(chan int, 1)
	go func() {
		subDone <- cmdModelsSubscribe(ctx, append([]string{"--federation", "pumps", "--channel", "stable", "--poll", "20ms",
			"--ledger", dir, "--keys", keys, "--lineage-wait", "300ms"}, p.common...), &stdout, &stderr)
	}()
	find := func(version string) signoff.Version {
		t.Helper()
		v, err := signoff.Find(ctx, lg, ledger.ModelRef{Model: "pumps", Version: version})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	signOff := func(record func(...ledger.Body), version string) {
		t.Helper()
		a, err := find(version).Approval(true, "meets the acceptance criteria", "")
		if err != nil {
			t.Fatal(err)
		}
		record(a)
		// One person approves and releases here (four eyes are TestModelsApproveAndRelease's).
		r, err := find(version).Release(signoff.ReleaseRequest{Channel: "stable", Sole: true})
		if err != nil {
			t.Fatal(err)
		}
		record(r)
	}
	stable := filepath.Join(p.out, "pumps.stable")
	follows := func(version string) {
		t.Helper()
		servicetest.WaitFor(t, 10*time.Second, "pumps.stable at "+version, func() bool {
			b, err := os.ReadFile(stable)
			return err == nil && strings.HasPrefix(string(b), version+" ")
		})
	}
	signOff(dana, "r1")
	follows("r1")
	if _, err := os.Stat(filepath.Join(p.out, "pumps@r2.mwg")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("r2, not released, was written: %v", err)
	}
	signOff(dana, "r2")
	follows("r2")
	// Mallory's release of r1 is the latest on stable, but her key is not trusted.
	signOff(mallory, "r1")
	servicetest.WaitFor(t, 10*time.Second, "the untrusted release refused", func() bool {
		return strings.Contains(stderr.String(), "pumps on stable:") && strings.Contains(stderr.String(), "NOT VERIFIED")
	})
	if b, _ := os.ReadFile(stable); !strings.HasPrefix(string(b), "r2 ") {
		t.Errorf("pumps.stable %q after the untrusted release; want r2", b)
	}
	// A fleet that requires four eyes refuses r2: Dana approved and released it alone.
	var pullErr bytes.Buffer
	pull := append(slices.Clone(p.common), "--out", t.TempDir(), "--ledger", dir, "--keys", keys, "--lineage-wait", "300ms", "--four-eyes", "pumps@r2")
	if code := cmdModelsPull(ctx, pull, &bytes.Buffer{}, &pullErr); code == 0 || !strings.Contains(pullErr.String(), "no second person (four eyes)") {
		t.Errorf("pull --four-eyes of a model its approver released: exit %d, %q; want refused", code, pullErr.String())
	}
	cancel()
	if code := <-subDone; code != 0 {
		t.Fatalf("subscribe exited %d", code)
	}
	p.wait()
	for _, want := range []string{"pumps@r1 released on stable by Dana Weiss (oem)", "pumps@r2 released on stable by Dana Weiss (oem)"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("subscribe printed %q; want %q", stdout.String(), want)
		}
	}
}

// syncBuffer is a bytes.Buffer that a command writes to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRestoredModelCanBePulled: retention deleted a round's model before people approved
// it, so `models pull` cannot fetch it; the engineer who pulled it earlier hands the file
// back through the hub's API after approving, and the version can be pulled again, the
// same bytes, through the federation's real object store.
func TestRestoredModelCanBePulled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, lg, dir := startRecordedPumps(t, ctx)
	pull := func(stderr io.Writer) int {
		args := append(append([]string{}, p.common[:len(p.common)-1]...), t.TempDir(), "pumps@r1")
		return cmdModelsPull(ctx, args, io.Discard, stderr)
	}
	// The engineer pulls r1 to evaluate it; then retention deletes its model.
	engineer := t.TempDir()
	args := append(append([]string{}, p.common[:len(p.common)-1]...), engineer, "pumps@r1")
	if code := cmdModelsPull(ctx, args, io.Discard, os.Stderr); code != 0 {
		t.Fatalf("pull exited %d", code)
	}
	file, err := os.ReadFile(filepath.Join(engineer, "pumps@r1.mwg"))
	if err != nil {
		t.Fatal(err)
	}
	r1 := ledger.ModelRef{Model: "pumps", Version: "r1"}
	hash, err := p.hubBus.GetVersion(ctx, "pumps", "r1")
	if err == nil {
		err = p.hubBus.DeleteModel(ctx, "pumps", hash)
	}
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := pull(&stderr); code == 0 || !strings.Contains(stderr.String(), "is no longer stored") {
		t.Fatalf("pull of the deleted model exited %d: %q", code, stderr.String())
	}

	api := newRestoreAPI(lg, p.hubBus, p.hubKey.Public().(ed25519.PublicKey),
		[]federation.FederationConfig{{Name: "pumps", Architecture: models.Architecture{Params: 10}}}, slog.New(slog.DiscardHandler))
	mux := http.NewServeMux()
	var read atomic.Int64 // bytes of files the hub read
	var waits atomic.Bool // the last request waited for the hub's go-ahead before sending the file
	mux.HandleFunc("PUT "+modelPath, func(w http.ResponseWriter, r *http.Request) {
		r.Body = counted{r.Body, &read}
		waits.Store(r.Header.Get("Expect") == "100-continue")
		api.put(w, r)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	hub := &hubLedger{base: srv.URL, client: srv.Client()}
	if _, err := hub.restore(ctx, r1, file); err == nil || !strings.Contains(err.Error(), "409 Conflict") {
		t.Fatalf("the model of a version nobody signed off: %v; want 409", err)
	}
	v, err := signoff.Find(ctx, lg, r1)
	if err != nil {
		t.Fatal(err)
	}
	a, err := v.Approval(true, "meets the acceptance criteria", "")
	if err != nil {
		t.Fatal(err)
	}
	audittest.Writer(t, lg, oemSigner(t, "Dana Weiss", 21))(a)
	if _, err := hub.restore(ctx, r1, []byte("another file")); err == nil || !strings.Contains(err.Error(), "422 Unprocessable Entity") ||
		!strings.Contains(err.Error(), "is not pumps@r1, whose model the hub's round record gives as sha256 "+hash) {
		t.Errorf("another file: %v; want 422", err)
	}
	if _, err := hub.restore(ctx, r1, make([]byte, 100<<10)); err == nil || !strings.Contains(err.Error(), "413 Request Entity Too Large") {
		t.Errorf("a file larger than the federation's models: %v; want 413", err)
	}
	// Erik releases r1 on stable: an OEM following the channel cannot fetch it yet.
	if v, err = signoff.Find(ctx, lg, r1); err != nil {
		t.Fatal(err)
	}
	rel, err := v.Release(signoff.ReleaseRequest{Channel: "stable", KeyID: "not Dana's"})
	if err != nil {
		t.Fatal(err)
	}
	audittest.Writer(t, lg, oemSigner(t, "Erik Lund", 24))(rel)
	keys := filepath.Join(t.TempDir(), "keys.txt")
	var lines string
	for _, s := range []*ledger.Signer{oemSigner(t, "hub", 7), oemSigner(t, "Dana Weiss", 21), oemSigner(t, "Erik Lund", 24)} {
		lines += audit.FormatKey(audit.Key{Name: s.Actor().Name, Org: "oem", Public: s.Public()}) + "\n"
	}
	if err := os.WriteFile(keys, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	var subOut, subErr syncBuffer
	subCtx, stopSub := context.WithCancel(ctx)
	subDone := make(chan int, 1)
	go func() {
		subDone <- cmdModelsSubscribe(subCtx, append([]string{"--federation", "pumps", "--channel", "stable", "--poll", "20ms",
			"--ledger", dir, "--keys", keys, "--lineage-wait", "300ms"}, p.common...), &subOut, &subErr)
	}()
	defer func() { stopSub(); <-subDone }()
	servicetest.WaitFor(t, 10*time.Second, "the subscriber's report of the missing model", func() bool {
		return strings.Contains(subErr.String(), "pumps@r1: the hub no longer stores its model (keep_models); whoever holds the file can hand it back (millwright models restore pumps@r1")
	})

	path := filepath.Join(engineer, "pumps@r1.mwg")
	runCLI(t, []string{"models", "restore", "pumps@r1", "--file", path, "--hub", srv.URL}, 0, []string{"pumps@r1: the hub stored its model again from " + path}, nil)
	servicetest.WaitFor(t, 10*time.Second, "the subscriber to write the restored r1", func() bool {
		b, err := os.ReadFile(filepath.Join(p.out, "pumps.stable"))
		return err == nil && strings.HasPrefix(string(b), "r1 "+hash)
	})
	read.Store(0)
	runCLI(t, []string{"models", "restore", "pumps@r1", "--file", path, "--hub", srv.URL}, 0, []string{"pumps@r1: the hub still stores its model"}, nil)
	if n := read.Load(); n != 0 || !waits.Load() {
		t.Errorf("the hub read %d bytes of a file it did not need; the client waited for its go-ahead: %v", n, waits.Load())
	}
	runCLI(t, []string{"models", "restore", "pumps@r1", "--file", path}, 2, nil, []string{"--hub URL is required"})
	stderr.Reset()
	if code := pull(&stderr); code != 0 {
		t.Fatalf("pull of the restored model exited %d: %q", code, stderr.String())
	}
}

// counted is a request body that adds the bytes read from it to n.
type counted struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c counted) Read(p []byte) (int, error) {
	k, err := c.ReadCloser.Read(p)
	c.n.Add(int64(k))
	return k, err
}
