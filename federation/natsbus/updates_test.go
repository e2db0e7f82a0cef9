package natsbus

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millwright-io/millwright/federation"
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
			publish := func(bus *Bus, round uint64, who, data string) {
				t.Helper()
				if err := bus.PublishUpdate(ctx, "f1", round, who, []byte(data)); err != nil {
					t.Fatal(err)
				}
			}
			publish(b, 1, "b", "b1")
			publish(b, 2, "b", "b2")
			publish(a, 1, "a", "a1 late") // after b's round-2 update: the purge must go member by member
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
			publish(a, 2, "a", "a2")
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

// TestFactoryConsumersExpire: a consumer a factory creates on the streams it may read
// (the model store and the round state), a durable one too, is dropped by the server once
// idle for ConsumerIdle, and one asking to live longer is refused: a factory cannot pile
// up consumers on the hub for good.
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
		c, err := a.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "kept", AckPolicy: jetstream.AckNonePolicy})
		if err != nil {
			t.Fatalf("%s: a durable consumer of a: %v", stream, err)
		}
		if got := c.CachedInfo().Config.InactiveThreshold; got != ConsumerIdle {
			t.Errorf("%s: a's durable consumer is dropped after %v idle; want %v", stream, got, ConsumerIdle)
		}
		if _, err := a.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "forever", AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: 1000 * time.Hour}); err == nil {
			t.Errorf("%s: a created a consumer that stays 1000h idle", stream)
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
