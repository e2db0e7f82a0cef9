package natsbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// TestMain checks for leaked goroutines. nats.go v1.55's ObjectStore.Put leaves one
// goroutine per put blocked forever (jetStream.resetPendingAcksOnReconnect reads a status
// channel that cleanupReplySub has already set to nil); it is the library's, not ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"))
}

func freeAddr(t testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(servicetest.FreePort(t)))
}

// startServer starts an embedded server with factories a and b in federation f1 and c in
// f2, and returns it with the hub's connection.
func startServer(t *testing.T, leaf bool) (*Server, *Bus) {
	t.Helper()
	cfg := ServerConfig{Listen: freeAddr(t), StoreDir: t.TempDir(), Factories: []Factory{
		{Name: "a", Password: config.NewSecret("pa"), Federations: []string{"f1"}},
		{Name: "b", Password: config.NewSecret("pb"), Federations: []string{"f1"}},
		{Name: "c", Password: config.NewSecret("pc"), Federations: []string{"f2"}},
	}}
	if leaf {
		cfg.LeafListen = freeAddr(t)
	}
	return serve(t, cfg, slog.New(slog.DiscardHandler))
}

// serve starts the embedded server of cfg (defaults set here, valid), creates every
// federation its factories belong to with all of them as members, and returns it with
// the hub's connection.
func serve(t testing.TB, cfg ServerConfig, log *slog.Logger) (*Server, *Bus) {
	t.Helper()
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := StartServer(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	hub := dial(t, srv.HubClient())
	var feds, members []string
	for _, f := range cfg.Factories {
		members = append(members, f.Name)
		for _, fed := range f.Federations {
			if !slices.Contains(feds, fed) {
				feds = append(feds, fed)
			}
		}
	}
	for _, f := range feds {
		if err := hub.EnsureFederation(context.Background(), f, members, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	return srv, hub
}

// dial connects with c, by default with a short timeout: a refused operation fails fast.
func dial(t testing.TB, c ClientConfig) *Bus {
	t.Helper()
	if c.Timeout == 0 {
		c.Timeout = 500 * time.Millisecond
	}
	c.SetDefaults()
	b, err := Dial(context.Background(), c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func factory(srv *Server, name, pw string) ClientConfig {
	return ClientConfig{URL: srv.ClientURL(), User: name, Password: config.NewSecret(pw)}
}

// collect reads the updates of round stored so far.
func collect(t *testing.T, b *Bus, fed string, round uint64, want int) [][]byte {
	t.Helper()
	var got [][]byte
	for _, m := range collectMessages(t, b, fed, round, want) {
		got = append(got, m.Data)
	}
	return got
}

// collectMessages reads the update messages of round stored so far.
func collectMessages(t *testing.T, b *Bus, fed string, round uint64, want int) []federation.UpdateMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var mu sync.Mutex
	var got []federation.UpdateMessage
	go func() {
		for ctx.Err() == nil {
			mu.Lock()
			n := len(got)
			mu.Unlock()
			if n >= want {
				time.Sleep(200 * time.Millisecond) // give extra messages a chance to show
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	if err := b.Updates(ctx, fed, round, func(m federation.UpdateMessage) { mu.Lock(); got = append(got, m); mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return got
}

func TestFactoryPermissions(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	a := dial(t, factory(srv, "a", "pa"))
	c := dial(t, factory(srv, "c", "pc"))

	// The hub publishes a model and a round state; a reads them, c (another federation) cannot.
	h := federation.HashHex([]byte("model-1"))
	if err := hub.PutModel(ctx, "f1", h, []byte("model-1")); err != nil {
		t.Fatal(err)
	}
	if err := hub.PutRound(ctx, "f1", []byte(`{"round":1}`)); err != nil {
		t.Fatal(err)
	}
	if got, err := a.GetModel(ctx, "f1", h); err != nil || string(got) != "model-1" {
		t.Fatalf("a reads its federation's model: %q, %v", got, err)
	}
	if got, err := a.GetRound(ctx, "f1"); err != nil || string(got) != `{"round":1}` {
		t.Fatalf("a reads its federation's round state: %q, %v", got, err)
	}
	if _, err := c.GetModel(ctx, "f1", h); err == nil {
		t.Fatal("c read a model of a federation it does not belong to")
	}
	if _, err := c.GetRound(ctx, "f1"); err == nil {
		t.Fatal("c read the round state of a federation it does not belong to")
	}
	if _, err := a.GetBlob(ctx, "f1", "x"); err == nil || errors.Is(err, federation.ErrNotFound) {
		t.Fatalf("a reached the hub's private bucket: %v", err)
	}
	if err := a.PutRound(ctx, "f1", []byte("forged")); err == nil {
		t.Fatal("a wrote the round state")
	}
	if err := a.PutModel(ctx, "f1", federation.HashHex([]byte("forged")), []byte("forged")); err == nil {
		t.Fatal("a wrote a model")
	}

	// a publishes as itself; as b, or into f2, it is refused and nothing is stored.
	if err := a.PublishUpdate(ctx, "f1", 1, "a", []byte("from a")); err != nil {
		t.Fatalf("a publishes its own update: %v", err)
	}
	if err := a.PublishUpdate(ctx, "f1", 1, "b", []byte("a as b")); err == nil {
		t.Fatal("a published an update as b")
	}
	if err := a.PublishUpdate(ctx, "f2", 1, "a", []byte("a in f2")); err == nil {
		t.Fatal("a published into a federation it does not belong to")
	}
	got := collect(t, hub, "f1", 1, 1)
	if len(got) != 1 || string(got[0]) != "from a" {
		t.Fatalf("round 1 of f1 holds %q; want only a's update", got)
	}
	if got := collect(t, hub, "f2", 1, 0); len(got) != 0 {
		t.Fatalf("round 1 of f2 holds %q; want nothing", got)
	}
	// A wrong password does not connect.
	bad := factory(srv, "a", "wrong")
	bad.SetDefaults()
	if b, err := Dial(ctx, bad, slog.New(slog.DiscardHandler)); err == nil {
		_ = b.Close()
		t.Fatal("connected with a wrong password")
	}
}

func TestStoreSurvivesAndNotFound(t *testing.T) {
	_, hub := startServer(t, false)
	ctx := context.Background()
	if _, err := hub.GetModel(ctx, "f1", "0000"); !errors.Is(err, federation.ErrNotFound) {
		t.Fatalf("missing model: %v, want ErrNotFound", err)
	}
	if _, err := hub.GetRound(ctx, "f1"); !errors.Is(err, federation.ErrNotFound) {
		t.Fatalf("missing round: %v, want ErrNotFound", err)
	}
	same := federation.HashHex([]byte("same"))
	for range 2 { // the second is a no-op
		if err := hub.PutModel(ctx, "f1", same, []byte("same")); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := hub.GetModel(ctx, "f1", same); err != nil || string(got) != "same" {
		t.Fatalf("content addressing: %q, %v", got, err)
	}
	// A name that is not a lower-case hex SHA-256 is refused, naming it, and stores nothing.
	for _, bad := range []string{strings.ToUpper(same), same[:62], "model", same + "00", strings.Repeat("z", 64)} {
		err := hub.PutModel(ctx, "f1", bad, []byte("bad"))
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("hash %q is not a lower-case hex SHA-256", bad)) {
			t.Fatalf("hash %q: %v", bad, err)
		}
		if _, err := hub.GetModel(ctx, "f1", bad); !errors.Is(err, federation.ErrNotFound) {
			t.Fatalf("hash %q: something was stored (%v)", bad, err)
		}
	}
	// Watch sees the current state and then each new one.
	wctx, cancel := context.WithCancel(ctx)
	seen := make(chan string, 8)
	_ = hub.PutRound(ctx, "f1", []byte("s1"))
	var wg sync.WaitGroup
	wg.Go(func() { _ = hub.WatchRound(wctx, "f1", func(b []byte) { seen <- string(b) }) })
	if s := <-seen; s != "s1" {
		t.Fatalf("first watched state %q", s)
	}
	_ = hub.PutRound(ctx, "f1", []byte("s2"))
	if s := <-seen; s != "s2" {
		t.Fatalf("second watched state %q", s)
	}
	cancel()
	wg.Wait()
}

func TestServerConfigValidate(t *testing.T) {
	cfg := ServerConfig{Listen: "nope", CAFile: "ca.pem", Factories: []Factory{
		{Name: "A b"}, {Name: "x", Password: config.NewSecret("p"), Federations: []string{"ok", "Bad!"}},
		{Name: "x", Password: config.NewSecret("p"), Federations: []string{"ok"}},
	}}
	err := cfg.Validate()
	for _, want := range []string{"listen", "ca_file", "factories[0].name", "factories[0].password", "factories[0].federations", "factories[1].federations[1]", "factories[2].name"} {
		found := false
		for _, e := range config.Flatten(err) {
			var fe *config.FieldError
			if errors.As(e, &fe) && fe.Path == want {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem reported at %s in %v", want, err)
		}
	}
}

// TestRepeatedServerErrors: a problem the server reports again (a leaf link retried every
// second, from another connection) is logged once a minute, a new one at once.
func TestRepeatedServerErrors(t *testing.T) {
	r := &repeats{}
	t0 := time.Now()
	for _, c := range []struct {
		msg   string
		after time.Duration
		fresh bool
	}{
		{"127.0.0.1:7422 - lid:5 - TLS leafnode handshake error: x509: unknown authority", 0, true},
		{"127.0.0.1:7422 - lid:6 - TLS leafnode handshake error: x509: unknown authority", time.Second, false},
		{"[::1]:51234 - lid:7 - TLS leafnode handshake error: x509: unknown authority", 2 * time.Second, false},
		{`Error trying to connect as leafnode to remote server "h:7422" (attempt 3): refused`, 3 * time.Second, true},
		{`Error trying to connect as leafnode to remote server "h:7422" (attempt 4): refused`, 4 * time.Second, false},
		{`Error trying to connect as leafnode to remote server "h:7422" (attempt 70): refused`, 4*time.Second + repeatEvery, true},
	} {
		if got := r.fresh(c.msg, t0.Add(c.after)); got != c.fresh {
			t.Errorf("fresh(%q) at +%v = %v, want %v", c.msg, c.after, got, c.fresh)
		}
	}
}

// putModel puts a model of n patterned bytes in f1 and returns it with its hash.
func putModel(t *testing.T, hub *Bus, n int) ([]byte, string) {
	t.Helper()
	model := make([]byte, n)
	for i := range model {
		model[i] = byte(i*31 + i>>13)
	}
	h := federation.HashHex(model)
	if err := hub.PutModel(context.Background(), "f1", h, model); err != nil {
		t.Fatal(err)
	}
	return model, h
}

// TestLargeObjects stores a model and a hub blob of several chunks and reads them back:
// the model from another connection (chunks by direct get) and from the connection that
// put it (kept, returned as a copy), the blob checked against its stored digest.
func TestLargeObjects(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	a := dial(t, factory(srv, "a", "pa"))
	model, h := putModel(t, hub, 3*maxChunk+12345)
	for name, b := range map[string]*Bus{"factory": a, "hub": hub} {
		got, err := b.GetModel(ctx, "f1", h)
		if err != nil || !bytes.Equal(got, model) {
			t.Fatalf("%s reads the model: %d bytes, %v", name, len(got), err)
		}
		got[0] ^= 1 // the caller's copy
	}
	if got, _ := hub.GetModel(ctx, "f1", h); !bytes.Equal(got, model) {
		t.Fatal("a caller's change reached the kept model")
	}
	if err := hub.PutBlob(ctx, "f1", "optimizer", model[:maxChunk+1]); err != nil {
		t.Fatal(err)
	}
	if got, err := hub.GetBlob(ctx, "f1", "optimizer"); err != nil || !bytes.Equal(got, model[:maxChunk+1]) {
		t.Fatalf("blob: %d bytes, %v", len(got), err)
	}
	if got, err := hub.GetBlob(ctx, "f1", "empty"); !errors.Is(err, federation.ErrNotFound) {
		t.Fatalf("missing blob: %d bytes, %v", len(got), err)
	}
}

// TestDeleteModelLeavesNothing: a deleted model reads as not found, neither its chunks nor
// its metadata stay in the bucket's stream (no deletion marker either), the other models
// are untouched, and deleting it again, or a model never stored, is not an error.
func TestDeleteModelLeavesNothing(t *testing.T) {
	_, hub := startServer(t, false)
	ctx := context.Background()
	st, err := hub.js.Stream(ctx, "OBJ_"+modelBucket("f1"))
	if err != nil {
		t.Fatal(err)
	}
	messages := func() uint64 {
		t.Helper()
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	kept, hk := putModel(t, hub, maxChunk/2)
	before := messages()
	_, h := putModel(t, hub, 2*maxChunk+777)
	for range 2 {
		if err := hub.DeleteModel(ctx, "f1", h); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := hub.GetModel(ctx, "f1", h); !errors.Is(err, federation.ErrNotFound) {
		t.Fatalf("deleted model: %d bytes, %v; want not found", len(got), err)
	}
	if n := messages(); n != before {
		t.Fatalf("the bucket holds %d messages after the delete, %d before the model was put", n, before)
	}
	if got, err := hub.GetModel(ctx, "f1", hk); err != nil || !bytes.Equal(got, kept) {
		t.Fatalf("the other model: %d bytes, %v", len(got), err)
	}
	if err := hub.DeleteModel(ctx, "f1", strings.Repeat("ab", 32)); err != nil {
		t.Fatalf("deleting a model never stored: %v", err)
	}
}

// TestObjectsReadByTheObjectStore: what PutModel and PutBlob write is a valid object of the
// JetStream object store (its own reader returns the bytes and checks their digest), a
// model put twice is stored once, and a blob rewritten leaves only its newest chunks.
func TestObjectsReadByTheObjectStore(t *testing.T) {
	_, hub := startServer(t, false)
	ctx := context.Background()
	model, h := putModel(t, hub, 2*maxChunk+777)
	if err := hub.PutModel(ctx, "f1", h, model); err != nil {
		t.Fatal(err)
	}
	models, err := hub.js.ObjectStore(ctx, modelBucket("f1"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := models.GetBytes(ctx, h); err != nil || !bytes.Equal(got, model) {
		t.Fatalf("the object store reads the model: %d bytes, %v", len(got), err)
	}
	st, err := hub.js.Stream(ctx, "OBJ_"+modelBucket("f1"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("$O."+modelBucket("f1")+".C.>"))
	if err != nil || len(info.State.Subjects) != 1 {
		t.Fatalf("a model put twice is stored under %v, want one chunk subject (%v)", info.State.Subjects, err)
	}
	blobs, err := hub.js.ObjectStore(ctx, hubBucket("f1"))
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range [][]byte{model[:maxChunk+5], model[10:20], {}} {
		if err := hub.PutBlob(ctx, "f1", "release", b); err != nil {
			t.Fatal(err)
		}
		if got, err := blobs.GetBytes(ctx, "release"); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("put %d: the object store reads the blob: %d bytes, %v", i, len(got), err)
		}
		if got, err := hub.GetBlob(ctx, "f1", "release"); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("put %d: GetBlob: %d bytes, %v", i, len(got), err)
		}
	}
	bst, err := hub.js.Stream(ctx, "OBJ_"+hubBucket("f1"))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := bst.Info(ctx); err != nil || info.State.Msgs != 1 { // the empty blob's metadata only
		t.Fatalf("after three puts of a blob the bucket holds %d messages, want 1 (%v)", info.State.Msgs, err)
	}
}

// TestDeleteUpdatesOfOneRound: DeleteUpdates removes every member's updates of that round
// and only those; a round with none is not an error.
// TestGetModelWhileDeleted: a model read while it is deleted is either read whole or not
// found, never an error about a missing chunk (the hub deletes expired models while
// gateways and subscribers may still read them).
func TestGetModelWhileDeleted(t *testing.T) {
	_, hub := startServer(t, false)
	ctx := context.Background()
	for range 15 {
		want, h := putModel(t, hub, 3*maxChunk+777)
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := hub.DeleteModel(ctx, "f1", h); err != nil {
				t.Error(err)
			}
		})
		for range 4 {
			wg.Go(func() {
				if got, err := hub.GetModel(ctx, "f1", h); err != nil && !errors.Is(err, federation.ErrNotFound) {
					t.Errorf("read during the delete: %v; want the model or not found", err)
				} else if err == nil && !bytes.Equal(got, want) {
					t.Errorf("read during the delete: %d bytes, not the model", len(got))
				}
			})
		}
		wg.Wait()
	}
}

func TestDeleteUpdatesOfOneRound(t *testing.T) {
	_, hub := startServer(t, false)
	ctx := context.Background()
	for _, round := range []uint64{1, 2} {
		for _, m := range []string{"a", "b"} {
			if err := hub.PublishUpdate(ctx, "f1", round, m, []byte(m)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, round := range []uint64{1, 7} {
		if err := hub.DeleteUpdates(ctx, "f1", round); err != nil {
			t.Fatal(err)
		}
	}
	if got := collect(t, hub, "f1", 1, 0); len(got) != 0 {
		t.Fatalf("round 1 still has %d updates", len(got))
	}
	if got := collect(t, hub, "f1", 2, 2); len(got) != 2 {
		t.Fatalf("round 2 has %d updates, want 2", len(got))
	}
}

// TestUpdatesDeleteTheirConsumer reads the updates of many short rounds, as a hub with
// fast rounds does: each round's consumer is deleted once its reader stops, so the stream
// does not collect one consumer per round until the server's consumer limit stops the hub
// (which happened at round 1001 before).
func TestUpdatesDeleteTheirConsumer(t *testing.T) {
	_, hub := startServer(t, false)
	ctx := context.Background()
	for round := range uint64(50) {
		if err := hub.PublishUpdate(ctx, "f1", round+1, "a", []byte("update")); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		// The reader stops at the round's update, so its consumer exists by then.
		if err := hub.Updates(rctx, "f1", round+1, func(federation.UpdateMessage) { cancel() }); err != nil {
			t.Fatalf("round %d: %v", round+1, err)
		}
	}
	st, err := hub.js.Stream(ctx, updateStream("f1"))
	if err != nil {
		t.Fatal(err)
	}
	servicetest.WaitFor(t, 10*time.Second, "the rounds' consumers deleted", func() bool {
		info, err := st.Info(ctx)
		return err == nil && info.State.Consumers == 0
	})
}

// TestUnreadableFederation: a factory looking up a federation it may not read (another
// one's, or a name that exists nowhere) gets ErrNotPermitted within its own timeout, also
// when its context has no deadline; one it may read but the hub never created is
// ErrNotFound.
func TestUnreadableFederation(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	c := factory(srv, "a", "pa")
	c.Timeout = 300 * time.Millisecond
	a := dial(t, c)
	for _, fed := range []string{"f2", "nowhere"} {
		start := time.Now()
		err := a.WatchRound(ctx, fed, func([]byte) { t.Errorf("a watched the round state of %s", fed) })
		if !errors.Is(err, ErrNotPermitted) || !strings.Contains(err.Error(), "mwround-"+fed) {
			t.Errorf("WatchRound of %s: %v; want ErrNotPermitted naming its bucket", fed, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("WatchRound of %s took %v: not bounded by the bus's timeout", fed, d)
		}
		if _, err := a.GetVersion(ctx, fed, "r1"); !errors.Is(err, ErrNotPermitted) {
			t.Errorf("GetVersion in %s: %v; want ErrNotPermitted", fed, err)
		}
		if _, err := a.GetModel(ctx, fed, federation.HashHex([]byte("m"))); !errors.Is(err, ErrNotPermitted) {
			t.Errorf("GetModel in %s: %v; want ErrNotPermitted", fed, err)
		}
	}
	// f1 is a's, but the hub has deleted it.
	if err := hub.DeleteFederation(ctx, "f1"); err != nil {
		t.Fatal(err)
	}
	if err := a.WatchRound(ctx, "f1", func([]byte) {}); !errors.Is(err, federation.ErrNotFound) {
		t.Errorf("WatchRound of the deleted f1: %v; want ErrNotFound", err)
	}
}
