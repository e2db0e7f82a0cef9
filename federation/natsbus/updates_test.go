package natsbus

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// storedUpdates returns how many messages fed's update stream holds, by subject.
func storedUpdates(t *testing.T, hub *Bus, fed string) map[string]uint64 {
	t.Helper()
	st, err := hub.js.Stream(context.Background(), updateStream(fed))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects
}

// TestUpdatesBoundedPerMember: a member that publishes to round after round stores no more
// than UpdatesPerMember messages (its oldest go first), whatever rounds it names, and
// leaves the other members' updates alone. Before, each round was a subject of its own,
// so a member could fill the hub's disk for update_retention.
func TestUpdatesBoundedPerMember(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	a, b := dial(t, factory(srv, "a", "pa")), dial(t, factory(srv, "b", "pb"))
	if err := b.PublishUpdate(ctx, "f1", 3, "b", []byte("b's")); err != nil {
		t.Fatal(err)
	}
	const flood = UpdatesPerMember + 5
	for round := range uint64(flood) {
		if err := a.PublishUpdate(ctx, "f1", round+1, "a", fmt.Appendf(nil, "a's round %d", round+1)); err != nil {
			t.Fatal(err)
		}
	}
	stored := storedUpdates(t, hub, "f1")
	if want := map[string]uint64{updateSubject("f1", "a"): UpdatesPerMember, updateSubject("f1", "b"): 1}; !maps.Equal(stored, want) {
		t.Fatalf("the update stream holds %v; want %v", stored, want)
	}
	if got := collect(t, hub, "f1", 3, 1); len(got) != 1 || string(got[0]) != "b's" {
		t.Fatalf("round 3 holds %q; want only b's update (a's was replaced)", got)
	}
	if got := collect(t, hub, "f1", flood, 1); len(got) != 1 || string(got[0]) != fmt.Sprintf("a's round %d", flood) {
		t.Fatalf("round %d holds %q; want a's latest", flood, got)
	}
}

// TestDeleteUpdatesKeepsLaterRounds: deleting a round whose messages are interleaved with
// a later round's (one member's late update after another's update of the next round)
// purges that round only, member by member, whether the Bus read the round or finds its
// messages by a scan. A message with no round header belongs to no round: the reader
// skips it and the next deletion that covers it removes it.
func TestDeleteUpdatesKeepsLaterRounds(t *testing.T) {
	for _, read := range []bool{true, false} {
		t.Run(fmt.Sprintf("read=%v", read), func(t *testing.T) {
			srv, hub := startServer(t, false)
			ctx := context.Background()
			a, b := dial(t, factory(srv, "a", "pa")), dial(t, factory(srv, "b", "pb"))
			if _, err := a.js.PublishMsg(ctx, &nats.Msg{Subject: updateSubject("f1", "a"), Data: []byte("no round")}); err != nil {
				t.Fatal(err)
			}
			publishAs(t, b, 1, "b", "b1")
			publishAs(t, b, 2, "b", "b2")
			publishAs(t, a, 1, "a", "a1 late") // after b's round-2 update: the purge must go member by member
			if read {
				if got := collect(t, hub, "f1", 1, 2); !slices.Equal(strs(got), []string{"b1", "a1 late"}) {
					t.Fatalf("round 1 holds %q", got)
				}
			}
			if err := hub.DeleteUpdates(ctx, "f1", 1); err != nil {
				t.Fatal(err)
			}
			if got := collect(t, hub, "f1", 1, 0); len(got) != 0 {
				t.Fatalf("round 1 still holds %q", got)
			}
			if got := collect(t, hub, "f1", 2, 1); !slices.Equal(strs(got), []string{"b2"}) {
				t.Fatalf("round 2 holds %q; want b2", got)
			}
			// a's late message lies after b2: b's subject is purged only up to b1's place.
			stored := storedUpdates(t, hub, "f1")
			if want := map[string]uint64{updateSubject("f1", "b"): 1}; !maps.Equal(stored, want) {
				t.Fatalf("the update stream holds %v after deleting round 1; want %v (b2 only)", stored, want)
			}
			// Round 2, read again with a's update, has no later round's message before its
			// last: one purge takes everything up to it.
			publishAs(t, a, 2, "a", "a2")
			if got := collect(t, hub, "f1", 2, 2); !slices.Equal(strs(got), []string{"b2", "a2"}) {
				t.Fatalf("round 2 holds %q; want b2 and a2", got)
			}
			if err := hub.DeleteUpdates(ctx, "f1", 2); err != nil {
				t.Fatal(err)
			}
			if stored := storedUpdates(t, hub, "f1"); len(stored) != 0 {
				t.Fatalf("the update stream holds %v after deleting round 2; want nothing", stored)
			}
		})
	}
}

func strs(bs [][]byte) []string {
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = string(b)
	}
	return s
}

// TestFactoryConsumersExpire: a consumer on the streams the factories may read (the model
// store and the round state), a durable one too, is dropped by the server once idle for
// ConsumerIdle, and one asking to live longer is refused. A factory may create none.
func TestFactoryConsumersExpire(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	// A hub restarted on the same store sets the limits again over the buckets' own
	// configuration.
	if err := hub.EnsureFederation(ctx, "f1", []string{"a", "b"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	a := dial(t, factory(srv, "a", "pa"))
	for _, stream := range []string{"OBJ_" + modelBucket("f1"), "KV_" + roundBucket("f1")} {
		actx, cancel := context.WithTimeout(ctx, time.Second) // a refused request has no answer
		_, err := a.js.CreateOrUpdateConsumer(actx, stream, jetstream.ConsumerConfig{Durable: "a", AckPolicy: jetstream.AckNonePolicy})
		cancel()
		if err == nil {
			t.Errorf("%s: a created a consumer", stream)
		}
		c, err := hub.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "kept", AckPolicy: jetstream.AckNonePolicy})
		if err != nil {
			t.Fatalf("%s: a durable consumer: %v", stream, err)
		}
		if got := c.CachedInfo().Config.InactiveThreshold; got != ConsumerIdle {
			t.Errorf("%s: the durable consumer is dropped after %v idle; want %v", stream, got, ConsumerIdle)
		}
		if _, err := hub.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "forever", AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: 1000 * time.Hour}); err == nil {
			t.Errorf("%s: a consumer that stays 1000h idle was created", stream)
		}
	}
	// The readers still work under the limits.
	h := federation.HashHex([]byte("model"))
	if err := hub.PutModel(ctx, "f1", h, []byte("model")); err != nil {
		t.Fatal(err)
	}
	if got, err := a.GetModel(ctx, "f1", h); err != nil || string(got) != "model" {
		t.Fatalf("a reads the model: %q, %v", got, err)
	}
}

// TestEnsureFederationLimitsConsumersItFinds: the consumer limit also holds for consumers
// that exist when EnsureFederation sets it. The buckets' own configuration carries no
// limit, so on a stream from before the limit (or one EnsureFederation has just updated as
// a bucket, its first step at every start) a consumer could be made that never expires or
// asks for 1000 hours (factories could create consumers until now; here the hub's
// connection stands in for them), or one that delivers into the update stream. The hub's
// next EnsureFederation must neither fail on them (the hub would not start) nor leave them.
func TestEnsureFederationLimitsConsumersItFinds(t *testing.T) {
	_, hub := startServer(t, false)
	ctx := context.Background()
	// The buckets as their own configuration leaves them: no consumer limit.
	if _, err := hub.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: roundBucket("f1"), History: 8, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: modelBucket("f1"), Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	streams := []string{"OBJ_" + modelBucket("f1"), "KV_" + roundBucket("f1")}
	for _, stream := range streams {
		for _, c := range []jetstream.ConsumerConfig{
			{Durable: "forever"},
			{Durable: "long", InactiveThreshold: 1000 * time.Hour},
			{Durable: "copy", DeliverSubject: updateSubject("f1", "a"), InactiveThreshold: time.Minute},
		} {
			c.AckPolicy = jetstream.AckNonePolicy
			if _, err := hub.js.CreateOrUpdateConsumer(ctx, stream, c); err != nil {
				t.Fatalf("%s: consumer %s without the limit: %v", stream, c.Durable, err)
			}
		}
	}
	if err := hub.EnsureFederation(ctx, "f1", []string{"a", "b"}, time.Hour); err != nil {
		t.Fatalf("EnsureFederation with consumers on the buckets: %v", err)
	}
	for _, stream := range streams {
		st, err := hub.js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		for info := range st.ListConsumers(ctx).Info() {
			if idle := info.Config.InactiveThreshold; idle <= 0 || idle > ConsumerIdle {
				t.Errorf("%s: consumer %s is dropped after %v idle (0: never); want at most %v", stream, info.Name, idle, ConsumerIdle)
			}
			if d := info.Config.DeliverSubject; d != "" && !strings.HasPrefix(d, "_INBOX") {
				t.Errorf("%s: consumer %s still delivers to %s", stream, info.Name, d)
			}
		}
	}
}

// TestDeleteUpdatesTakesTheClosedRoundsBefore: a round's deletion also removes the updates
// of earlier rounds it read, which arrived after their own round's deletion, also when it
// goes member by member. Here a's message names a later round (the header is a's to
// write) before a's update of round 2, and b's late update of round 1, which b sent after
// round 1's deletion and nothing since, must go with round 2's updates, as the docs say.
func TestDeleteUpdatesTakesTheClosedRoundsBefore(t *testing.T) {
	for _, read := range []bool{true, false} {
		t.Run(fmt.Sprintf("read=%v", read), func(t *testing.T) {
			srv, hub := startServer(t, false)
			ctx := context.Background()
			a, b := dial(t, factory(srv, "a", "pa")), dial(t, factory(srv, "b", "pb"))
			publishAs(t, a, 99, "a", "a99")
			publishAs(t, b, 1, "b", "b1 late")
			publishAs(t, a, 2, "a", "a2")
			if read {
				if got := collect(t, hub, "f1", 2, 1); !slices.Equal(strs(got), []string{"a2"}) {
					t.Fatalf("round 2 holds %q", got)
				}
			}
			if err := hub.DeleteUpdates(ctx, "f1", 2); err != nil {
				t.Fatal(err)
			}
			if got := collect(t, hub, "f1", 1, 0); len(got) != 0 {
				t.Errorf("round 1 still holds %q after round 2's deletion", got)
			}
			if got := collect(t, hub, "f1", 2, 0); len(got) != 0 {
				t.Errorf("round 2 still holds %q after its deletion", got)
			}
		})
	}
}

// TestFactoryCannotDeliverIntoTheUpdateStream: a factory cannot make the server copy what
// it may read into the update stream. A push consumer delivers to any subject its creator
// names, which the server does not check against the creator's permissions; one that
// delivers to an update subject has the update stream's interest, so it is never idle and
// never dropped, and the stream stores every model chunk and round state it delivers
// (under their own subjects, outside any member's limit).
func TestFactoryCannotDeliverIntoTheUpdateStream(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	h := federation.HashHex([]byte("model"))
	if err := hub.PutModel(ctx, "f1", h, []byte("model")); err != nil {
		t.Fatal(err)
	}
	if err := hub.PutRound(ctx, "f1", []byte(`{"round":1}`)); err != nil {
		t.Fatal(err)
	}
	a := dial(t, factory(srv, "a", "pa"))
	for _, stream := range []string{"OBJ_" + modelBucket("f1"), "KV_" + roundBucket("f1")} {
		actx, cancel := context.WithTimeout(ctx, time.Second) // a refused request has no answer
		_, err := a.js.CreateOrUpdateConsumer(actx, stream, jetstream.ConsumerConfig{Name: "copy", DeliverSubject: updateSubject("f1", "a"),
			AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Second})
		cancel()
		if err == nil {
			t.Errorf("%s: a created a push consumer that delivers to its update subject", stream)
		}
	}
	if t.Failed() {
		// What the consumers do: the update stream stores copies (it would take up to 10 s).
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			stored := storedUpdates(t, hub, "f1")
			if len(stored) > 0 {
				t.Fatalf("the update stream stores %v", stored)
			}
		}
	}
}

// TestWatchRoundInOrder: a factory watching the round state gets each state once, in
// order, and ends on the newest: every one of them when the hub writes them one at a time
// (from the notices), and when they come in a burst while it is slow (its notices
// overflow) the ones the bucket still keeps, read again from it, without a gap among the
// newest eight (the bucket's history).
func TestWatchRoundInOrder(t *testing.T) {
	srv, hub := startServer(t, false)
	ctx := context.Background()
	const states = 40
	for _, slow := range []bool{false, true} {
		t.Run(fmt.Sprintf("slow=%v", slow), func(t *testing.T) {
			a := dial(t, factory(srv, "a", "pa"))
			if err := hub.PutRound(ctx, "f1", []byte("0")); err != nil {
				t.Fatal(err)
			}
			wctx, stop := context.WithCancel(ctx)
			var mu sync.Mutex
			var got []int
			done := make(chan error, 1)
			first := make(chan struct{})
			go func() {
				done <- a.WatchRound(wctx, "f1", func(b []byte) {
					n, _ := strconv.Atoi(string(b))
					mu.Lock()
					got = append(got, n)
					if len(got) == 1 {
						close(first)
					}
					mu.Unlock()
					if slow {
						time.Sleep(20 * time.Millisecond)
					}
				})
			}()
			<-first
			for i := 1; i <= states; i++ {
				if err := hub.PutRound(ctx, "f1", []byte(strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
				if !slow { // as a hub writes them: a round's state, then the next
					servicetest.WaitFor(t, 5*time.Second, fmt.Sprintf("state %d", i), func() bool {
						mu.Lock()
						defer mu.Unlock()
						return got[len(got)-1] == i
					})
				}
			}
			servicetest.WaitFor(t, 20*time.Second, "the newest state", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) > 0 && got[len(got)-1] == states
			})
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
				t.Fatalf("states seen %v: not each once, in order", got)
			}
			if !slow && len(got) != states+1 {
				t.Fatalf("the watcher saw %d of the %d states written one at a time: %v", len(got), states+1, got)
			}
			if tail := got[max(0, len(got)-8):]; tail[len(tail)-1]-tail[0] != len(tail)-1 {
				t.Fatalf("a gap among the newest states: %v", got)
			}
		})
	}
}

// publishAs publishes data as who's update of round in f1, through bus.
func publishAs(t *testing.T, bus *Bus, round uint64, who, data string) {
	t.Helper()
	if err := bus.PublishUpdate(context.Background(), "f1", round, who, []byte(data)); err != nil {
		t.Fatal(err)
	}
}

// TestUpdatesNameTheirSender: Updates hands each message over with the member whose
// subject it came on (the only one its credentials let publish there) and its stream
// sequence, the same when the round is read again.
func TestUpdatesNameTheirSender(t *testing.T) {
	srv, hub := startServer(t, false)
	a, b := dial(t, factory(srv, "a", "pa")), dial(t, factory(srv, "b", "pb"))
	publishAs(t, a, 1, "a", "a1")
	publishAs(t, b, 1, "b", "b1")
	publishAs(t, a, 1, "a", "a1 again")
	first := collectMessages(t, hub, "f1", 1, 3)
	var got []string
	for _, m := range first {
		got = append(got, fmt.Sprintf("%s:%s", m.Sender, m.Data))
	}
	if want := []string{"a:a1", "b:b1", "a:a1 again"}; !slices.Equal(got, want) {
		t.Fatalf("round 1 read as %q; want %q", got, want)
	}
	if first[0].Seq == first[1].Seq || first[1].Seq == first[2].Seq || first[0].Seq == first[2].Seq {
		t.Fatalf("sequences %d, %d, %d; want three", first[0].Seq, first[1].Seq, first[2].Seq)
	}
	again := collectMessages(t, hub, "f1", 1, 3)
	if !slices.EqualFunc(first, again, func(x, y federation.UpdateMessage) bool { return x.Sender == y.Sender && x.Seq == y.Seq }) {
		t.Fatalf("read again: %+v; first %+v", again, first)
	}
}
