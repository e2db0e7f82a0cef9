package natsbus

import (
	"context"
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
	bin := os.Getenv("MILLWRIGHT_NATS_SERVER")
	if bin == "" {
		t.Fatal("MILLWRIGHT_NATS_SERVER is not set: run deploy/services.sh up and source .services/env (make test does)")
	}
	auth, err := Authorization("hub", []Factory{{Name: "a", Federations: []string{"f1"}}, {Name: "b", Federations: []string{"f1"}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	host, port, _ := strings.Cut(addr, ":")
	conf := filepath.Join(dir, "nats.conf")
	body := fmt.Sprintf("host: %s\nport: %s\nserver_name: own\njetstream {store_dir: %q}\n%s", host, port, filepath.Join(dir, "js"), auth)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Env = append(os.Environ(), PasswordVariable("hub")+"=hub-pw", PasswordVariable("a")+"=a-pw", PasswordVariable("b")+"=b-pw")
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
	url := "nats://" + addr
	connect := func(user, pw string) *Bus {
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
		t.Fatal("a did not see the round state")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
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
