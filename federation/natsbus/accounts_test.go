package natsbus

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// requestWithReply publishes, as bus's user, a JetStream API request it is allowed to make
// (subject, body), asking for the answer on reply: a subject the user may not publish to.
// The server checks the request's subject against the publish permissions, never its reply
// subject, and JetStream answers from inside the account.
func requestWithReply(t *testing.T, bus *Bus, subject, body, reply string) {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data, m.Reply = []byte(body), reply
	if err := bus.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := bus.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := bus.nc.LastError(); err != nil {
		t.Fatalf("the request itself was refused: %v", err)
	}
}

// lastSeq is the stream sequence of the last message on subject in stream (0: none), as
// the stream API's JSON answer gives it (a direct get would answer with the sequence
// header the stored message may itself carry).
func lastSeq(t *testing.T, hub *Bus, stream, subject string) uint64 {
	t.Helper()
	req, _ := json.Marshal(map[string]string{"last_by_subj": subject})
	m, err := hub.nc.Request("$JS.API.STREAM.MSG.GET."+stream, req, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		t.Fatal(err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return 0
	case resp.Message == nil:
		t.Fatalf("stream msg get %s %s: %s", stream, subject, m.Data)
	}
	return resp.Message.Seq
}

// TestFactoryCannotWriteThroughReplySubjects: factory a may publish only its own updates.
// A request it may make (a direct get of its federation's round state) with the reply
// subject set to anything else must not have the server store the answer there: not under
// another member's update subject, another federation's, the round state, a version, a
// receipt, a model's metadata or the hub's private bucket.
func TestFactoryCannotWriteThroughReplySubjects(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	h := federation.HashHex([]byte("model-1"))
	for _, err := range []error{
		hub.PutModel(ctx, "f1", h, []byte("model-1")),
		hub.PutRound(ctx, "f1", []byte(`{"round":1}`)),
		hub.PutVersion(ctx, "f1", "r1", h),
		hub.PutRound(ctx, "f2", []byte(`{"round":7}`)),
		hub.PutReceipts(ctx, "f1", map[string][]byte{"a": []byte("a's receipt"), "b": []byte("b's receipt")}),
		hub.PutBlob(ctx, "f1", "privacy", []byte(`[]`)),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	a := dial(t, factory(srv, "a", "pa"))
	const allowed = "$JS.API.DIRECT.GET.KV_mwround-f1.$KV.mwround-f1.state"
	for _, tc := range []struct{ what, stream, subject string }{
		{"b's update subject", updateStream("f1"), updateSubject("f1", "b")},
		{"an update subject of a federation a is not in", updateStream("f2"), updateSubject("f2", "c")},
		{"the round state", "KV_" + roundBucket("f1"), roundStateSubject("f1")},
		{"a model version", "KV_" + roundBucket("f1"), "$KV." + roundBucket("f1") + "." + versionKey("r1")},
		{"the round state of a federation a is not in", "KV_" + roundBucket("f2"), roundStateSubject("f2")},
		{"b's receipt", "KV_" + receiptBucket("f1"), "$KV." + receiptBucket("f1") + ".b"},
		{"a model's metadata", "OBJ_" + modelBucket("f1"), metaSubject(modelBucket("f1"), h)},
		{"the hub's private bucket", "OBJ_" + hubBucket("f1"), metaSubject(hubBucket("f1"), "privacy")},
	} {
		t.Run(tc.what, func(t *testing.T) {
			before := lastSeq(t, hub, tc.stream, tc.subject)
			requestWithReply(t, a, allowed, "", tc.subject)
			var after uint64
			for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if after = lastSeq(t, hub, tc.stream, tc.subject); after != before {
					break
				}
			}
			if after != before {
				t.Errorf("a had the server store a message on %s in %s (last sequence %d, was %d)", tc.subject, tc.stream, after, before)
			}
		})
	}
}

// TestFactoryCannotPushOutAnotherMembersUpdate: b's update stays in the update stream for
// the hub to read, whatever a does. a has the server answer UpdatesPerMember requests on
// b's update subject: the stream keeps the latest UpdatesPerMember messages of each
// subject, so b's update is discarded unread.
func TestFactoryCannotPushOutAnotherMembersUpdate(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	if err := hub.PutRound(ctx, "f1", []byte(`{"round":1}`)); err != nil {
		t.Fatal(err)
	}
	a, b := dial(t, factory(srv, "a", "pa")), dial(t, factory(srv, "b", "pb"))
	if err := b.PublishUpdate(ctx, "f1", 1, "b", []byte("b's update")); err != nil {
		t.Fatal(err)
	}
	for range UpdatesPerMember {
		requestWithReply(t, a, "$JS.API.DIRECT.GET.KV_mwround-f1.$KV.mwround-f1.state", "", updateSubject("f1", "b"))
	}
	time.Sleep(200 * time.Millisecond)
	if got := collect(t, hub, "f1", 1, 1); len(got) != 1 || string(got[0]) != "b's update" {
		t.Fatalf("round 1 holds %q; want b's update (the stream holds %v)", got, storedUpdates(t, hub, "f1"))
	}
}

// TestFactoryCannotRollBackTheRoundState: only the hub writes the round state (it is not
// signed: gateways trust it because no one else may write it, and a restarted hub resumes
// from it). a has the server answer a direct get of round 1's state, by sequence, on the
// state's own KV subject: the bucket stores round 1 again as the current state, and b,
// watching, is handed round 1 after round 2.
func TestFactoryCannotRollBackTheRoundState(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	for _, s := range []string{`{"round":1}`, `{"round":2}`} {
		if err := hub.PutRound(ctx, "f1", []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	a, b := dial(t, factory(srv, "a", "pa")), dial(t, factory(srv, "b", "pb"))
	var mu sync.Mutex
	var seen []string
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- b.WatchRound(wctx, "f1", func(s []byte) { mu.Lock(); seen = append(seen, string(s)); mu.Unlock() })
	}()
	defer func() { cancel(); <-done }()
	waitSeen := func(n int, within time.Duration) []string {
		for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			mu.Lock()
			got := slices.Clone(seen)
			mu.Unlock()
			if len(got) >= n {
				return got
			}
		}
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
	if got := waitSeen(1, 3*time.Second); !slices.Equal(got, []string{`{"round":2}`}) {
		t.Fatalf("b watching sees %q; want round 2", got)
	}
	// Round 1's state is the bucket's first message.
	requestWithReply(t, a, "$JS.API.DIRECT.GET.KV_mwround-f1", `{"seq":1}`, roundStateSubject("f1"))
	time.Sleep(200 * time.Millisecond)
	if got, err := hub.GetRound(ctx, "f1"); err != nil || string(got) != `{"round":2}` {
		t.Errorf("the round state the hub reads is %q, %v; want round 2", got, err)
	}
	if got := waitSeen(2, roundPoll+2*time.Second); len(got) > 1 {
		t.Errorf("b watching was handed %d states after round 2, beginning %q: round 1 again after round 2", len(got)-1, got[:min(len(got), 4)])
	}
}

// TestFactoryCannotWriteAnotherMembersReceipt: b reads the receipt the hub wrote it, not
// one a had the server store under b's key (a's own receipt, answered on b's KV subject).
func TestFactoryCannotWriteAnotherMembersReceipt(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	if err := hub.PutReceipts(ctx, "f1", map[string][]byte{"a": []byte(`a: rejected`), "b": []byte(`b: used`)}); err != nil {
		t.Fatal(err)
	}
	a, b := dial(t, factory(srv, "a", "pa")), dial(t, factory(srv, "b", "pb"))
	rb := receiptBucket("f1")
	requestWithReply(t, a, "$JS.API.DIRECT.GET.KV_"+rb+".$KV."+rb+".a", "", "$KV."+rb+".b")
	time.Sleep(200 * time.Millisecond)
	if got, err := b.GetReceipt(ctx, "f1", "b"); err != nil || string(got) != `b: used` {
		t.Fatalf("b reads its receipt as %q, %v; want the hub's %q", got, err, `b: used`)
	}
}

// TestPrintedAuthorizationRefusesRepliesIntoStreams: the same on a NATS server of the
// hub's own with the block `millwright hub permissions --domain hub` prints, a's request
// coming through its site's leaf node under the domain, as a gateway's do: the answer
// must not be stored under b's update subject, nor as the round state.
func TestPrintedAuthorizationRefusesRepliesIntoStreams(t *testing.T) {
	servicetest.Require(t, "nats-server")
	ctx := context.Background()
	auth, err := Authorization("hub", []Factory{{Name: "a", Federations: []string{"f1"}}, {Name: "b", Federations: []string{"f1"}}}, "hub")
	if err != nil {
		t.Fatal(err)
	}
	leafListen := freeAddr(t)
	url := ownServer(t, fmt.Sprintf("server_name: own\nmax_payload: 8MB\njetstream {store_dir: %q, domain: hub}\nleafnodes {listen: %q}\n",
		t.TempDir(), leafListen), auth)
	hub := connectOwn(t, url, "hub", "hub-pw")
	if err := hub.EnsureFederation(ctx, "f1", []string{"a", "b"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`{"round":1}`, `{"round":2}`} {
		if err := hub.PutRound(ctx, "f1", []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	a := throughLeaf(t, leafListen)
	if _, err := a.GetRound(ctx, "f1"); err != nil { // the leaf passes a's API requests under the domain
		t.Fatal(err)
	}
	beforeB := lastSeq(t, hub, updateStream("f1"), updateSubject("f1", "b"))
	requestWithReply(t, a, "$JS.hub.API.DIRECT.GET.KV_mwround-f1.$KV.mwround-f1.state", "", updateSubject("f1", "b"))
	requestWithReply(t, a, "$JS.hub.API.DIRECT.GET.KV_mwround-f1", `{"seq":1}`, roundStateSubject("f1"))
	time.Sleep(300 * time.Millisecond)
	if after := lastSeq(t, hub, updateStream("f1"), updateSubject("f1", "b")); after != beforeB {
		t.Errorf("a had the server store a message under b's update subject (sequence %d)", after)
	}
	if got, err := hub.GetRound(ctx, "f1"); err != nil || string(got) != `{"round":2}` {
		t.Errorf("the round state is %q, %v; want round 2", got, err)
	}
}

// TestFactoryLearnsNothingOfOtherFederations: c, in f2 only, reads nothing of f1. The
// account's JetStream info, which every factory may request ($JS.API.INFO, which nothing
// in the code uses), counts every federation's streams and bytes: c sees when a member of
// f1 stores an update, and how large it is.
func TestFactoryLearnsNothingOfOtherFederations(t *testing.T) {
	srv, _ := startServer(t, false)
	ctx := context.Background()
	a, c := dial(t, factory(srv, "a", "pa")), dial(t, factory(srv, "c", "pc"))
	info := func() (streams int, store uint64, ok bool) {
		m, err := c.nc.Request("$JS.API.INFO", nil, time.Second)
		if err != nil {
			return 0, 0, false
		}
		var r struct {
			Streams int    `json:"streams"`
			Store   uint64 `json:"storage"`
		}
		if json.Unmarshal(m.Data, &r) != nil || r.Streams == 0 {
			return 0, 0, false
		}
		return r.Streams, r.Store, true
	}
	streams, before, ok := info()
	if !ok {
		return // refused: nothing learnt
	}
	if err := a.PublishUpdate(ctx, "f1", 1, "a", make([]byte, 100_000)); err != nil {
		t.Fatal(err)
	}
	_, after, _ := info()
	t.Errorf("c, in f2 only, reads the account's JetStream info: %d streams (f1's among them), and its storage grew by %d bytes when a stored its 100000-byte update in f1", streams, after-before)
}

// TestHubFromBeforeAccountsKeepsItsStreams: a hub whose embedded server kept its streams
// in the server's global account (before the accounts) finds its federations in its own
// account when it starts again on the same store: the round state, a model, and a
// factory reads them.
func TestHubFromBeforeAccountsKeepsItsStreams(t *testing.T) {
	store := t.TempDir()
	ctx := context.Background()
	h := federation.HashHex([]byte("model-1"))
	preAccounts(t, store, func(hub *Bus) []error {
		return []error{
			hub.EnsureFederation(ctx, "f1", []string{"a"}, time.Hour),
			hub.PutModel(ctx, "f1", h, []byte("model-1")),
			hub.PutRound(ctx, "f1", []byte(`{"round":3}`)),
		}
	})

	cfg := ServerConfig{Listen: freeAddr(t), StoreDir: store, Factories: []Factory{{Name: "a", Password: config.NewSecret("pa"), Federations: []string{"f1"}}}}
	cfg.SetDefaults()
	srv, err := StartServer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	for who, b := range map[string]*Bus{"the hub": dial(t, srv.HubClient()), "a": dial(t, factory(srv, "a", "pa"))} {
		if got, err := b.GetRound(ctx, "f1"); err != nil || string(got) != `{"round":3}` {
			t.Errorf("%s reads the round state %q, %v; want round 3 from before", who, got, err)
		}
		if got, err := b.GetModel(ctx, "f1", h); err != nil || string(got) != "model-1" {
			t.Errorf("%s reads the model %q, %v", who, got, err)
		}
	}
}

// preAccounts writes, with fill, a hub's store in store as a server from before the
// accounts kept it: in the server's global account.
func preAccounts(t *testing.T, store string, fill func(hub *Bus) []error) {
	t.Helper()
	old, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: store, NoSigs: true, MaxPayload: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	old.Start()
	defer func() { old.Shutdown(); old.WaitForShutdown() }()
	if !old.ReadyForConnections(10 * time.Second) {
		t.Fatal("the old server is not ready")
	}
	hub := dial(t, ClientConfig{URL: old.ClientURL()})
	defer hub.Close()
	for _, err := range fill(hub) {
		if err != nil {
			t.Fatal(err)
		}
	}
}
