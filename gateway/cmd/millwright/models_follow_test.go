package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
	"github.com/millwright-io/millwright/models"
)

// signingHub is an embedded NATS server holding federation "pumps" whose models, version
// keys and round states the test writes itself, with the hub's key and credentials: no
// hub, no gateways, so a test can publish what a real hub would not (a replayed state, a
// version key naming another round's model).
type signingHub struct {
	sc     natsbus.ServerConfig
	srv    *natsbus.Server
	bus    *natsbus.Bus
	key    ed25519.PrivateKey
	common []string // an OEM's flags, --out last
	out    string
}

func startSigningHub(t *testing.T, ctx context.Context) *signingHub {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(servicetest.FreePort(t)))
	sc := natsbus.ServerConfig{Listen: addr, StoreDir: t.TempDir(), Factories: []natsbus.Factory{
		{Name: "g0", Password: config.NewSecret("p0"), Federations: []string{"pumps"}},
		{Name: "oem", Password: config.NewSecret("po"), Federations: []string{"pumps"}},
	}}
	sc.SetDefaults()
	h := &signingHub{sc: sc, key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)), out: t.TempDir()} // startPumps's hub key
	h.start(t, ctx)
	t.Cleanup(h.stop)
	if err := h.bus.EnsureFederation(ctx, "pumps", []string{"g0"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	h.common = []string{"--nats", h.srv.ClientURL(), "--user", "oem", "--password", "env:OEM_PW",
		"--hub-key", hex.EncodeToString(h.key.Public().(ed25519.PublicKey)), "--out", h.out}
	t.Setenv("OEM_PW", "po")
	return h
}

// start starts the server (on its store) and the hub's connection.
func (h *signingHub) start(t *testing.T, ctx context.Context) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	var err error
	if h.srv, err = natsbus.StartServer(h.sc, log); err != nil {
		t.Fatal(err)
	}
	if h.bus, err = natsbus.Dial(ctx, h.srv.HubClient(), log); err != nil {
		t.Fatal(err)
	}
}

// stop closes the hub's connection and stops the server, if running.
func (h *signingHub) stop() {
	if h.bus != nil {
		_ = h.bus.Close()
		h.bus = nil
	}
	if h.srv != nil {
		h.srv.Shutdown()
		h.srv = nil
	}
}

// signed returns a model of round, signed with the hub's key; first tells models of one
// round apart.
func (h *signingHub) signed(t *testing.T, round uint64, first float32) (raw []byte, hash string) {
	t.Helper()
	g := &federation.GlobalModel{Header: federation.ModelHeader{Federation: "pumps", Round: round,
		Architecture: models.Architecture{Kind: "linear", Version: 1, Params: 4}, Created: time.Now().UTC(), Participants: []string{"g0"}},
		Params: []float32{first, 0, 0, 0}}
	raw, err := g.SignedBytes(h.key)
	if err != nil {
		t.Fatal(err)
	}
	return raw, federation.HashHex(raw)
}

// model stores a signed model of round, names it as its version, and returns its hash.
func (h *signingHub) model(t *testing.T, round uint64) string {
	t.Helper()
	return h.store(t, round, float32(round))
}

// store stores a signed model of round with first parameter first, names it as its
// version, and returns its hash.
func (h *signingHub) store(t *testing.T, round uint64, first float32) string {
	t.Helper()
	raw, hash := h.signed(t, round, first)
	ctx := context.Background()
	if err := h.bus.PutModel(ctx, "pumps", hash, raw); err != nil {
		t.Fatal(err)
	}
	if err := h.bus.PutVersion(ctx, "pumps", versionOf(round), hash); err != nil {
		t.Fatal(err)
	}
	return hash
}

// state publishes the state of round, training from the model global of globalRound.
func (h *signingHub) state(t *testing.T, round, globalRound uint64, global string) {
	t.Helper()
	st := federation.RoundState{Version: federation.StateVersion, Federation: "pumps", Round: round, Phase: federation.PhaseOpen,
		Global: global, GlobalRound: globalRound, Targets: []string{"g0"}, Quorum: 1, Deadline: time.Now().Add(time.Hour)}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.bus.PutRound(context.Background(), "pumps", b); err != nil {
		t.Fatal(err)
	}
}

// subscribe runs `models subscribe --federation pumps` with the OEM's flags and extra;
// stop ends it (unless it has ended by itself) and returns its exit code.
func (h *signingHub) subscribe(t *testing.T, ctx context.Context, extra ...string) (stdout, stderr *syncBuffer, stop func() int) {
	t.Helper()
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	args := append(append([]string{"--federation", "pumps"}, h.common...), extra...)
	go func() { done <- cmdModelsSubscribe(sctx, args, stdout, stderr) }()
	code, stopped := 0, false
	stop = func() int {
		if !stopped {
			cancel()
			code, stopped = <-done, true
		}
		return code
	}
	t.Cleanup(func() { stop() })
	return stdout, stderr, stop
}

// pull runs `models pull` with the OEM's flags, --out out, extra and the argument.
func (h *signingHub) pull(t *testing.T, out, arg string, extra ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e syncBuffer // the NATS client logs to stderr from its own goroutine
	args := append(append(slices.Clone(h.common[:len(h.common)-1]), out), extra...)
	code = cmdModelsPull(context.Background(), append(args, arg), &o, &e)
	return code, o.String(), e.String()
}

// latest returns OUT/pumps.latest ("" when there is none).
func (h *signingHub) latest() string {
	b, _ := os.ReadFile(filepath.Join(h.out, "pumps.latest"))
	return string(b)
}

// waitLatest waits until OUT/pumps.latest names version.
func (h *signingHub) waitLatest(t *testing.T, version string) {
	t.Helper()
	servicetest.WaitFor(t, 10*time.Second, "pumps.latest at "+version, func() bool { return strings.HasPrefix(h.latest(), version+" ") })
}

// roundLedger returns a new local ledger, its directory and a keyring file trusting the
// hub's signer, and a function recording the round record of round's model hash.
func roundLedger(t *testing.T) (dir, keys string, record func(round uint64, hash string)) {
	t.Helper()
	dir = t.TempDir()
	lg, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lg.Close() })
	signer := oemSigner(t, "hub", 7)
	keys = filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(keys, []byte(audit.FormatKey(audit.Key{Name: "hub", Org: "oem", Public: signer.Public()})+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write := audittest.Writer(t, lg, signer)
	return dir, keys, func(round uint64, hash string) {
		write(ledger.FederatedRound{Federation: "pumps", Round: int64(round), Participants: []string{"g0"}, Aggregation: "fedavg",
			InputUpdates: []string{strings.Repeat("ab", 32)}, Output: ledger.ModelRef{Model: "pumps", Version: versionOf(round)}, OutputHash: hash})
	}
}

// TestModelsSubscribeRefusesAnOlderModel: after writing r2, a round state naming the
// older, validly signed r1 (a replayed state: a hub restored from an old backup, or
// anyone who can write the round bucket) is refused, whether it claims r1's round or a
// newer one, with the lineage check or without (r1 has its round record): pumps.latest
// stays at r2, and stderr names the versions.
func TestModelsSubscribeRefusesAnOlderModel(t *testing.T) {
	for _, lineage := range []bool{false, true} {
		t.Run("lineage "+strconv.FormatBool(lineage), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h := startSigningHub(t, ctx)
			h1, h2 := h.model(t, 1), h.model(t, 2)
			var extra []string
			if lineage {
				dir, keys, record := roundLedger(t)
				record(1, h1)
				record(2, h2)
				extra = []string{"--ledger", dir, "--keys", keys, "--lineage-wait", "1s"}
			}
			h.state(t, 3, 2, h2)
			_, stderr, stop := h.subscribe(t, ctx, extra...)
			h.waitLatest(t, "r2")
			h.state(t, 5, 4, h1) // says it trains from r4, names r1's model
			servicetest.WaitFor(t, 10*time.Second, "the refusal of r1 named as r4", func() bool {
				return strings.Contains(stderr.String(), "the round state of round 5 names sha256 "+h1+" as pumps@r4: the model sha256 "+h1+" is pumps@r1, not pumps@r4; not written")
			})
			h.state(t, 6, 1, h1) // names r1 as what it is
			servicetest.WaitFor(t, 10*time.Second, "the refusal of r1", func() bool {
				return strings.Contains(stderr.String(), "the round state of round 6 names pumps@r1 (sha256 "+h1+"), not newer than pumps@r2 (sha256 "+h2+"), written already")
			})
			if code := stop(); code != 0 || !strings.HasPrefix(h.latest(), "r2 "+h2) {
				t.Errorf("exit %d, pumps.latest %q; want 0 and r2\nstderr:\n%s", code, h.latest(), stderr.String())
			}
		})
	}
}

// TestModelsNeverReplaceAWrittenVersion: a hub whose store was reset starts again at
// round 1 with another model signed as r1. A subscriber that wrote r1 and r2 refuses the
// new r1 as older; one started on a directory that holds the first r1 (and no
// pumps.latest), and pull into it, refuse to replace the file, naming both hashes.
func TestModelsNeverReplaceAWrittenVersion(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := startSigningHub(t, ctx)
	first := h.model(t, 1)
	h.state(t, 2, 1, first)
	_, stderr, stop := h.subscribe(t, ctx)
	h.waitLatest(t, "r1")
	file := filepath.Join(h.out, "pumps@r1.mwg")
	written, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	h.state(t, 3, 2, h.model(t, 2))
	h.waitLatest(t, "r2")
	second := h.store(t, 1, 100) // the reset hub's r1
	h.state(t, 2, 1, second)
	servicetest.WaitFor(t, 10*time.Second, "the reset hub's r1 refused", func() bool {
		return strings.Contains(stderr.String(), "names pumps@r1 (sha256 "+second+"), not newer than pumps@r2")
	})
	stop()
	// A fresh start on the directory, without pumps.latest: r1 is not replaced.
	if err := os.Remove(filepath.Join(h.out, "pumps.latest")); err != nil {
		t.Fatal(err)
	}
	_, stderr, stop = h.subscribe(t, ctx)
	want := file + " holds another model (sha256 " + first + ") than the hub's pumps@r1 (sha256 " + second + "); it is not replaced"
	servicetest.WaitFor(t, 10*time.Second, "the refusal to replace pumps@r1.mwg", func() bool { return strings.Contains(stderr.String(), want) })
	stop()
	code, _, pullErr := h.pull(t, h.out, "pumps@r1")
	if code != 1 || !strings.Contains(pullErr, want) {
		t.Errorf("pull into a directory holding another r1: exit %d, %q; want 1 and %q", code, pullErr, want)
	}
	if now, _ := os.ReadFile(file); !bytes.Equal(now, written) {
		t.Errorf("pumps@r1.mwg was replaced by another model under the same version")
	}
}

// TestModelsPullRefusesAnotherVersion: `pull pumps@r2` refuses a model that is not r2,
// though validly signed, when the version key names it.
func TestModelsPullRefusesAnotherVersion(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := startSigningHub(t, ctx)
	h1 := h.model(t, 1)
	h.model(t, 2)
	if err := h.bus.PutVersion(ctx, "pumps", "r2", h1); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := h.pull(t, h.out, "pumps@r2")
	want := "the model sha256 " + h1 + " is pumps@r1, not pumps@r2; not written"
	if code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("pull pumps@r2 of r1's model: exit %d, stdout %q, stderr %q; want 1 and %q", code, stdout, stderr, want)
	}
	if entries, _ := os.ReadDir(h.out); len(entries) != 0 {
		t.Errorf("pull wrote %v", entries)
	}
}

// TestModelsSubscribeRetriesAFailedModel: a model whose round record reaches the ledger
// later than the lineage check waits (Fabric was down; the hub's outbox delivers it now)
// is tried again until it passes, also after the federation's last round state, and
// written.
func TestModelsSubscribeRetriesAFailedModel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := startSigningHub(t, ctx)
	dir, keys, record := roundLedger(t)
	h2 := h.model(t, 2)
	h.state(t, 2, 2, h2) // the federation's last state: finished after r2
	_, stderr, stop := h.subscribe(t, ctx, "--ledger", dir, "--keys", keys, "--lineage-wait", "100ms")
	servicetest.WaitFor(t, 10*time.Second, "r2's lineage check to fail", func() bool {
		return strings.Contains(stderr.String(), "lineage of pumps@r2") && strings.Contains(stderr.String(), "(trying again in 1s)")
	})
	record(2, h2)
	h.waitLatest(t, "r2")
	if code := stop(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(h.out, "pumps@r2.mwg")); err != nil {
		t.Error(err)
	}
}

// TestModelsSubscribeOutNotWritable: an --out that cannot be written ends subscribe and
// pull at once, naming it (exit 1); one that stops being writable while subscribe runs
// ends it at the next model.
func TestModelsSubscribeOutNotWritable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := startSigningHub(t, ctx)
	file := filepath.Join(t.TempDir(), "models")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	want := "--out " + file + ": models cannot be written there: mkdir " + file + ": not a directory"
	var stderr syncBuffer
	code := cmdModelsSubscribe(ctx, append(append([]string{"--federation", "pumps"}, h.common[:len(h.common)-1]...), file), &syncBuffer{}, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), want) {
		t.Errorf("subscribe --out FILE: exit %d, %q; want 1 and %q", code, stderr.String(), want)
	}
	if code, _, pullErr := h.pull(t, file, "pumps@latest"); code != 1 || !strings.Contains(pullErr, want) {
		t.Errorf("pull --out FILE: exit %d, %q; want 1 and %q", code, pullErr, want)
	}
	// The directory becomes a file while subscribe runs.
	_, subErr, stop := h.subscribe(t, ctx)
	h.state(t, 2, 1, h.model(t, 1))
	h.waitLatest(t, "r1")
	if err := os.RemoveAll(h.out); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.out, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.state(t, 3, 2, h.model(t, 2))
	servicetest.WaitFor(t, 10*time.Second, "subscribe to end", func() bool { return strings.Contains(subErr.String(), "not a directory") })
	if code := stop(); code != 1 {
		t.Errorf("subscribe whose --out became a file: exit %d; want 1\nstderr:\n%s", code, subErr.String())
	}
}

// TestModelsUnknownFederation: a federation the OEM's user may not read (here, a typo:
// permissions are given per federation name) ends subscribe and pull within the bus's
// timeout, saying that the federation was not found or that the user may not read it.
func TestModelsUnknownFederation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := startSigningHub(t, ctx)
	want := `federation "pumsp" was not found on the hub, or user "oem" may not read it`
	t.Run("subscribe", func(t *testing.T) {
		t.Parallel()
		var stderr syncBuffer
		code := cmdModelsSubscribe(t.Context(), append(slices.Clone(h.common), "--federation", "pumsp"), &syncBuffer{}, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), want) {
			t.Errorf("exit %d, %q; want 1 and %q", code, stderr.String(), want)
		}
	})
	t.Run("pull", func(t *testing.T) {
		t.Parallel()
		if code, _, stderr := h.pull(t, t.TempDir(), "pumsp@latest"); code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("exit %d, %q; want 1 and %q", code, stderr, want)
		}
	})
}

// TestModelsClientFlagErrors: flags that cannot work are refused before connecting (the
// NATS URL is a closed port), each named as on the command line with its value and what
// was expected, all at once, exit 2.
func TestModelsClientFlagErrors(t *testing.T) {
	t.Setenv("OEM_PW", "po")
	key := strings.Repeat("ab", 32)
	sub := func(args ...string) []string {
		return append([]string{"models", "subscribe", "--federation", "pumps", "--nats", "nats://127.0.0.1:1"}, args...)
	}
	runCLICases(t, []cliCase{
		{name: "no hub key", args: sub(), code: 2, stderr: []string{"--hub-key is required: the hub's ed25519 public key, 64 hex digits", "usage: millwright models subscribe"}},
		{name: "bad hub key", args: sub("--hub-key", "abc"), code: 2, stderr: []string{`--hub-key: "abc" is not an ed25519 public key; expected 64 hex digits`}},
		{name: "bad user", args: sub("--hub-key", key, "--user", "Bad!"), code: 2, stderr: []string{`--user: "Bad!" is not a valid name`}},
		{name: "password without user", args: sub("--hub-key", key, "--password", "env:OEM_PW"), code: 2, stderr: []string{"--password is given without --user"}},
		{name: "unset password variable", args: sub("--hub-key", key, "--user", "oem", "--password", "env:NOT_SET_ANYWHERE"), code: 2,
			stderr: []string{`--password: environment variable NOT_SET_ANYWHERE named by "env:NOT_SET_ANYWHERE" is not set`}},
		{name: "negative poll", args: sub("--hub-key", key, "--channel", "stable", "--ledger", ".", "--keys", "k.txt", "--poll", "-5s"), code: 2,
			stderr: []string{"--poll -5s is not positive; expected how often --channel reads the ledger"}},
		{name: "channel latest", args: sub("--hub-key", key, "--channel", "latest", "--ledger", ".", "--keys", "k.txt"), code: 2,
			stderr: []string{`--channel "latest" is reserved: OUT/FED.latest names the newest round's model; expected another name, such as stable`}},
		{name: "keys without a ledger", args: sub("--hub-key", key, "--keys", "k.txt"), code: 2, stderr: []string{`--keys "k.txt" is for the lineage check; expected --ledger DIR or --fabric FILE with it`}},
		{name: "ledger without keys", args: sub("--hub-key", key, "--ledger", "."), code: 2, stderr: []string{"--keys FILE is required with --ledger or --fabric"}},
		{name: "two ledgers", args: sub("--hub-key", key, "--ledger", ".", "--fabric", "f.yaml", "--keys", "k.txt"), code: 2, stderr: []string{`--ledger "." and --fabric "f.yaml": expected one ledger`}},
		{name: "four eyes without a ledger", args: sub("--hub-key", key, "--four-eyes"), code: 2, stderr: []string{"--four-eyes is for the lineage check"}},
		{name: "negative lineage wait", args: sub("--hub-key", key, "--ledger", ".", "--keys", "k.txt", "--lineage-wait", "-1s"), code: 2, stderr: []string{"--lineage-wait -1s is negative"}},
		{name: "every problem at once", args: sub("--user", "Bad!", "--poll", "0s"), code: 2, stderr: []string{"--poll 0s is not positive", "--hub-key is required", `--user: "Bad!"`}},
		{name: "pull", args: []string{"models", "pull", "--nats", "nats://127.0.0.1:1", "--keys", "k.txt", "pumps@3"}, code: 2,
			stderr: []string{`"pumps@3" is not FEDERATION@VERSION`, "--hub-key is required", `--keys "k.txt" is for the lineage check`, "usage: millwright models pull"}},
	})
}

// TestModelsSubscribeBackfills: subscribe writes every version in order, not only the
// newest: on a first start, those before the current one, reporting those the hub no
// longer stores; when the round state skips versions, those in between (but for an
// abandoned round's, which never existed); on a restart, those after pumps.latest.
func TestModelsSubscribeBackfills(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := startSigningHub(t, ctx)
	h1 := h.model(t, 1)
	h.model(t, 2)
	h3 := h.model(t, 3)
	if err := h.bus.DeleteModel(ctx, "pumps", h1); err != nil { // keep_models
		t.Fatal(err)
	}
	h.state(t, 4, 3, h3)
	stdout, stderr, stop := h.subscribe(t, ctx)
	h.waitLatest(t, "r3")
	h.model(t, 4)                   // r5's round is abandoned: no version r5
	h.state(t, 7, 6, h.model(t, 6)) // r4 came and went unseen
	h.waitLatest(t, "r6")
	stop()
	h.model(t, 7)
	h.state(t, 9, 8, h.model(t, 8))
	more, _, stop := h.subscribe(t, ctx)
	h.waitLatest(t, "r8")
	stop()
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()+more.String()), "\n") {
		got = append(got, strings.Fields(line)[0])
	}
	if want := []string{"pumps@r2", "pumps@r3", "pumps@r4", "pumps@r6", "pumps@r7", "pumps@r8"}; !slices.Equal(got, want) {
		t.Errorf("subscribe wrote %q; want %q\nstderr:\n%s", got, want, stderr.String())
	}
	if want := "millwright models subscribe: pumps@r1: no longer stored on the hub (keep_models); skipped, the ledger"; !strings.Contains(stderr.String(), want) ||
		strings.Contains(stderr.String(), "r5") {
		t.Errorf("stderr %q; want %q, and nothing of the abandoned r5", stderr.String(), want)
	}
	for round := range uint64(9) {
		_, err := os.Stat(filepath.Join(h.out, "pumps@"+versionOf(round)+".mwg"))
		if exists := err == nil; exists != (round >= 2 && round != 5) {
			t.Errorf("pumps@%s.mwg exists: %v", versionOf(round), exists)
		}
	}
}

// TestModelsSubscribeSurvivesAHubRestart: the hub's NATS server stops and starts again on
// the same store; the subscriber, still running, writes the next model.
func TestModelsSubscribeSurvivesAHubRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := startSigningHub(t, ctx)
	h.state(t, 2, 1, h.model(t, 1))
	_, stderr, stop := h.subscribe(t, ctx)
	h.waitLatest(t, "r1")
	h.stop()
	time.Sleep(time.Second)
	h.start(t, ctx)
	h.state(t, 3, 2, h.model(t, 2))
	servicetest.WaitFor(t, 30*time.Second, "pumps.latest at r2", func() bool { return strings.HasPrefix(h.latest(), "r2 ") })
	if code := stop(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, stderr.String())
	}
}
