package natsbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// TestAuthorizationOnAServerOfItsOwn: the block Authorization writes, loaded by a real
// nats-server (the one deploy/services.sh installs), gives a hub that connects to it
// (nats.connect) what it needs, and each factory what the embedded server gives it and
// nothing more: its federation's model and round state, its own updates, not another
// factory's, the hub's bucket or a consumer.
func TestAuthorizationOnAServerOfItsOwn(t *testing.T) {
	servicetest.Require(t, "nats-server")
	auth, err := Authorization("hub", []Factory{{Name: "a", Federations: []string{"f1"}}, {Name: "b", Federations: []string{"f1"}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	url := ownServer(t, fmt.Sprintf("server_name: own\njetstream {store_dir: %q}\n", t.TempDir()), auth)
	connect := func(user, pw string) *Bus { return connectOwn(t, url, user, pw) }
	ctx := context.Background()
	hub := connect("hub", "hub-pw")
	if err := hub.EnsureFederation(ctx, "f1", []string{"a", "b"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	h := federation.HashHex([]byte("model"))
	if err := hub.PutModel(ctx, "f1", h, []byte("model")); err != nil {
		t.Fatal(err)
	}
	if err := hub.PutBlob(ctx, "f1", "secret", []byte("hub only")); err != nil {
		t.Fatal(err)
	}
	a := connect("a", "a-pw")
	watchesState(t, hub, a, "a did not see the round state")
	if got, err := a.GetModel(ctx, "f1", h); err != nil || string(got) != "model" {
		t.Fatalf("a reads its federation's model: %q, %v", got, err)
	}
	if err := a.PublishUpdate(ctx, "f1", 1, "a", []byte("from a")); err != nil {
		t.Fatalf("a publishes its own update: %v", err)
	}
	if err := a.PublishUpdate(ctx, "f1", 1, "b", []byte("a as b")); err == nil {
		t.Fatal("a published an update as b")
	}
	if _, err := a.GetBlob(ctx, "f1", "secret"); err == nil {
		t.Fatal("a read the hub's bucket")
	}
	if err := a.PutRound(ctx, "f1", []byte("forged")); err == nil {
		t.Fatal("a wrote the round state")
	}
	if _, err := a.js.CreateOrUpdateConsumer(ctx, "OBJ_"+modelBucket("f1"), jetstream.ConsumerConfig{Durable: "x", AckPolicy: jetstream.AckNonePolicy}); err == nil {
		t.Fatal("a created a consumer")
	}
	if got := collect(t, hub, "f1", 1, 1); len(got) != 1 || string(got[0]) != "from a" {
		t.Fatalf("round 1 holds %q; want only a's update", got)
	}
}

// TestAuthorizationThroughALeafNode: a gateway that reaches a hub's NATS server of its own
// through its site's leaf node, as gateways reach the embedded server (the leaf, with a
// JetStream domain of its own, linked with the factory's credentials; the hub's JetStream
// reached by the server's domain, "hub"), takes part with the block Authorization writes
// for that domain, the server configured as docs/federation.md says: a watches the round
// state, reads the model (three chunks) and its own receipt, and publishes its update,
// larger than nats-server's default max_payload, which the hub reads; it cannot publish as
// b, nor read b's receipt or the hub's bucket. A block written without the domain is not
// enough: the hub passes the leaf none of its JetStream API under the domain, and a finds
// no responders.
func TestAuthorizationThroughALeafNode(t *testing.T) {
	servicetest.Require(t, "nats-server")
	ctx := context.Background()
	// site starts a server whose users are Authorization's for domain, creates f1 with the
	// hub's connection, links a's leaf node and returns the hub's connection and a's
	// through the leaf.
	site := func(t *testing.T, domain string) (hub, a *Bus) {
		t.Helper()
		auth, err := Authorization("hub", []Factory{{Name: "a", Federations: []string{"f1"}}, {Name: "b", Federations: []string{"f1"}}}, domain)
		if err != nil {
			t.Fatal(err)
		}
		leafListen := freeAddr(t)
		url := ownServer(t, fmt.Sprintf("server_name: own\nmax_payload: 8MB\njetstream {store_dir: %q, domain: hub}\nleafnodes {listen: %q}\n",
			t.TempDir(), leafListen), auth)
		hub = connectOwn(t, url, "hub", "hub-pw")
		if err := hub.EnsureFederation(ctx, "f1", []string{"a", "b"}, time.Hour); err != nil {
			t.Fatal(err)
		}
		return hub, throughLeaf(t, leafListen)
	}

	hub, a := site(t, "hub")
	model := bytes.Repeat([]byte("global model "), 200_000) // 2.6 MB: three chunks
	h := federation.HashHex(model)
	if err := hub.PutModel(ctx, "f1", h, model); err != nil {
		t.Fatal(err)
	}
	if err := hub.PutBlob(ctx, "f1", "secret", []byte("hub only")); err != nil {
		t.Fatal(err)
	}
	if err := hub.PutReceipts(ctx, "f1", map[string][]byte{"a": []byte("a@1"), "b": []byte("b@1")}); err != nil {
		t.Fatal(err)
	}
	watchesState(t, hub, a, "a did not see the round state through its leaf node")
	if got, err := a.GetModel(ctx, "f1", h); err != nil || !bytes.Equal(got, model) {
		t.Fatalf("a reads its federation's model through its leaf node: %d bytes, %v", len(got), err)
	}
	if got, err := a.GetReceipt(ctx, "f1", "a"); err != nil || string(got) != "a@1" {
		t.Fatalf("a reads its receipt through its leaf node: %q, %v", got, err)
	}
	update := bytes.Repeat([]byte("update from a "), 200_000) // 2.8 MB: above the 1 MB a nats-server takes by default
	if err := a.PublishUpdate(ctx, "f1", 1, "a", update); err != nil {
		t.Fatalf("a publishes its own update through its leaf node: %v", err)
	}
	if err := a.PublishUpdate(ctx, "f1", 1, "b", []byte("a as b")); err == nil {
		t.Fatal("a published an update as b")
	}
	if got, err := a.GetReceipt(ctx, "f1", "b"); err == nil || errors.Is(err, federation.ErrNotFound) {
		t.Fatalf("a read b's receipt: %q, %v; want a permission error", got, err)
	}
	if _, err := a.GetBlob(ctx, "f1", "secret"); err == nil {
		t.Fatal("a read the hub's bucket")
	}
	if got := collect(t, hub, "f1", 1, 1); len(got) != 1 || !bytes.Equal(got[0], update) {
		t.Fatalf("round 1 holds %d updates; want only a's", len(got))
	}

	t.Run("without the domain", func(t *testing.T) {
		hub, a := site(t, "")
		if err := hub.PutRound(ctx, "f1", []byte("state 1")); err != nil {
			t.Fatal(err)
		}
		// The link is up and the hub's interest in a's updates came over it (a publish
		// needs no JetStream API), but the API under the domain did not.
		if err := a.PublishUpdate(ctx, "f1", 1, "a", []byte("from a")); err != nil {
			t.Fatalf("a publishes its own update through its leaf node: %v", err)
		}
		if got, err := a.GetRound(ctx, "f1"); err == nil {
			t.Fatalf("a read the round state %q through its leaf node with a block written without the domain", got)
		}
	})
}

// ownServer runs the nats-server deploy/services.sh installs (MILLWRIGHT_NATS_SERVER) until
// the test ends, as a hub's NATS server of its own, and returns its client URL. Its
// configuration file is a client listener on a free port, conf, and the users of auth
// (Authorization's block) from a file of their own, included as docs/federation.md says;
// the passwords of hub, a and b are their names with "-pw". The server's output is
// logged if the test fails.
func ownServer(t *testing.T, conf string, auth []byte) string {
	t.Helper()
	bin := os.Getenv("MILLWRIGHT_NATS_SERVER")
	if bin == "" {
		t.Fatal("MILLWRIGHT_NATS_SERVER is not set: run deploy/services.sh up and source .services/env (make test does)")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	if err := os.WriteFile(filepath.Join(dir, "millwright-users.conf"), auth, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, fmt.Appendf(nil, "listen: %q\n%sinclude millwright-users.conf\n", addr, conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", path)
	cmd.Env = os.Environ()
	for _, user := range []string{"hub", "a", "b"} {
		cmd.Env = append(cmd.Env, PasswordVariable(user)+"="+user+"-pw")
	}
	logPath := filepath.Join(dir, "nats.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		_ = logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("nats-server's output:\n%s", b)
		}
	})
	return "nats://" + addr
}

// throughLeaf starts factory a's leaf node linked to the hub's leaf port leafListen (user
// a, password a-pw), as a gateway starts its own (gateway/federation.go), and returns a
// connection to it under the hub's JetStream domain, as the gateway's.
func throughLeaf(t *testing.T, leafListen string) *Bus {
	t.Helper()
	leaf, err := StartLeaf(LeafConfig{Listen: freeAddr(t), ServerName: "millwright-leaf-a", Domain: "leaf-a", StoreDir: t.TempDir(),
		HubURL: "nats-leaf://" + leafListen, User: "a", Password: "a-pw"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(leaf.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := leaf.WaitLinked(ctx); err != nil {
		t.Fatal(err)
	}
	return dial(t, ClientConfig{URL: leaf.ClientURL(), User: "a", Password: config.NewSecret("local"), Domain: "hub", Timeout: 2 * time.Second})
}

// connectOwn connects to the server at url as user, waiting until the server is up.
func connectOwn(t *testing.T, url, user, pw string) *Bus {
	t.Helper()
	c := ClientConfig{URL: url, User: user, Password: config.NewSecret(pw), Timeout: time.Second}
	c.SetDefaults()
	var b *Bus
	servicetest.WaitFor(t, 20*time.Second, "nats-server up", func() bool {
		var err error
		b, err = Dial(context.Background(), c, slog.New(slog.DiscardHandler))
		return err == nil
	})
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestAuthorizationRefusesNames: names that are not member names, a factory without
// federations, a user named twice, and two users with one password variable are refused.
func TestAuthorizationRefusesNames(t *testing.T) {
	for _, c := range []struct {
		hub  string
		fs   []Factory
		want string
	}{
		{"hub", []Factory{{Name: "A b", Federations: []string{"f"}}}, `user "A b"`},
		{"hub", []Factory{{Name: "a", Federations: []string{"f x"}}}, `federation "f x"`},
		{"hub", []Factory{{Name: "a"}}, `factory "a": no federations`},
		{"hub", []Factory{{Name: "hub", Federations: []string{"f"}}}, `user "hub" is named twice`},
		{"hub", []Factory{{Name: "a-b", Federations: []string{"f"}}, {Name: "a_b", Federations: []string{"f"}}}, "same variable MILLWRIGHT_NATS_PASSWORD_A_B"},
	} {
		if _, err := Authorization(c.hub, c.fs, ""); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v; want an error saying %s", c.fs, err, c.want)
		}
	}
}

// watchesState checks that a, watching f1's round state, sees the state hub puts, and
// fails with failure if it does not within 20 s.
func watchesState(t *testing.T, hub, a *Bus, failure string) {
	t.Helper()
	ctx := context.Background()
	states := make(chan string, 4)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.WatchRound(wctx, "f1", func(b []byte) { states <- string(b) }) }()
	if err := hub.PutRound(ctx, "f1", []byte("state 1")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-states:
		if s != "state 1" {
			t.Fatalf("a watched %q", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal(failure)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
