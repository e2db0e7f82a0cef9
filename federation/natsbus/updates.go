package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millwright-io/millwright/federation"
)

// Updates are stored in one stream per federation, on one subject per member
// (mw.upd.<fed>.<member>), with the round in a header. The subject names the member only so
// that the stream's per-subject limit bounds what each member can store: with the round in
// the subject a member could publish to as many rounds as it liked and fill the hub's disk
// for update_retention, and a shared byte limit would let it crowd out the others instead.

// roundHeader carries the round an update answers. It is not authenticated: the round
// protocol checks the round bound into the signed update; a member that lies here only
// hides its own update from the round.
const roundHeader = "Mw-Round"

// UpdatesPerMember is how many of a member's messages the update stream keeps; a newer
// one replaces the member's oldest. A round with secure aggregation takes five messages
// from each member (one per phase), so a member has three retried publishes to spare
// before a message of its own current round could be replaced. A member can store at
// most UpdatesPerMember × 8 MiB, whatever it sends. It is as many as the hub reads of a
// member in a round (federation.MemberMessages).
const UpdatesPerMember = federation.MemberMessages

// updateSubject is the subject of member's updates in fed; updateSubjects matches every
// member's.
func updateSubject(fed, member string) string { return "mw.upd." + fed + "." + member }
func updateSubjects(fed string) string        { return "mw.upd." + fed + ".*" }

// msgRound returns the round in h's roundHeader, 0 when there is none or it is not a
// number (a message no round reads).
func msgRound(h nats.Header) uint64 {
	r, err := strconv.ParseUint(h.Get(roundHeader), 10, 64)
	if err != nil {
		return 0
	}
	return r
}

// PublishUpdate implements federation.Transport: data goes to the participant's subject,
// with round in its header.
func (b *Bus) PublishUpdate(ctx context.Context, fed string, round uint64, participant string, data []byte) error {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	m := &nats.Msg{Subject: updateSubject(fed, participant), Header: nats.Header{roundHeader: {strconv.FormatUint(round, 10)}}, Data: data}
	if _, err := b.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("natsbus: publish update %s round %d as %s: %w", fed, round, participant, err)
	}
	return nil
}

// roundSeqs is what a reader of one round's updates saw of the update stream, in stream
// order: enough for DeleteUpdates to purge the round, with the messages of earlier rounds
// it read (late ones, or with no round), without touching a later round's updates.
type roundSeqs struct {
	mu       sync.Mutex
	round    uint64            // the highest sequence of a message of the round; 0: none seen
	last     uint64            // the highest sequence of a message of the round or an earlier one
	later    uint64            // the lowest sequence of a message of a later round; 0: none
	subjects map[string]uint64 // the highest sequence of those of the round or an earlier one, by subject
}

// see records the message at seq on subject, of round r, as read for round.
func (s *roundSeqs) see(round, r uint64, subject string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case r <= round:
		if r == round {
			s.round = max(s.round, seq)
		}
		s.last = max(s.last, seq)
		s.subjects[subject] = max(s.subjects[subject], seq)
	case s.later == 0 || seq < s.later:
		s.later = seq
	}
}

// keptReads bounds the rounds whose reads a Bus remembers per federation: a round the
// hub read but never deleted (it stopped in between) is forgotten once it is this far
// behind the round being read.
const keptReads = 8

// reads returns the record of what was read of fed's round, a new one if there is none.
func (b *Bus) reads(fed string, round uint64) *roundSeqs {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.read[fed] == nil {
		b.read[fed] = map[uint64]*roundSeqs{}
	}
	byRound := b.read[fed]
	if s, ok := byRound[round]; ok {
		return s
	}
	for r := range byRound {
		if r+keptReads < round {
			delete(byRound, r)
		}
	}
	s := &roundSeqs{subjects: map[string]uint64{}}
	byRound[round] = s
	return s
}

// takeReads removes and returns the record of fed's round, nil if there is none.
func (b *Bus) takeReads(fed string, round uint64) *roundSeqs {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.read[fed][round]
	delete(b.read[fed], round)
	return s
}

// Updates implements federation.Transport with an ordered consumer from the start of the
// update stream, handing fn the messages whose header names round, each with the member
// its subject names as Sender and its stream sequence as Seq (after the hub's
// deletions the stream holds little else: the current round's updates and at most
// UpdatesPerMember of each member's late or stray ones). When ctx ends it stops the
// consumer and returns once fn is not running, without waiting for the client library to
// tear the subscription down (a scheduling round trip on the hub's path from the last
// update to the aggregation): a message the library still delivers after that is dropped,
// not given to fn. The consumer is then deleted in the background (Close waits for that):
// the server would otherwise keep it until its inactivity threshold, and a stream has a
// bounded number of consumers, which fast rounds reached after 1000 rounds
// (TestUpdatesDeleteTheirConsumer).
func (b *Bus) Updates(ctx context.Context, fed string, round uint64, fn func(federation.UpdateMessage)) error {
	cons, err := b.js.OrderedConsumer(ctx, updateStream(fed), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{updateSubjects(fed)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("natsbus: consume updates %s round %d: %w", fed, round, err)
	}
	seen := b.reads(fed, round)
	var mu sync.Mutex // held while fn runs
	stopped := false
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		r := msgRound(m.Headers())
		meta, err := m.Metadata()
		if err != nil { // not a JetStream message: nothing this consumer delivers
			return
		}
		seen.see(round, r, m.Subject(), meta.Sequence.Stream)
		if r == round {
			fn(federation.UpdateMessage{Sender: strings.TrimPrefix(m.Subject(), updateSubject(fed, "")), Seq: meta.Sequence.Stream, Data: m.Data()})
		}
	})
	if err != nil {
		return fmt.Errorf("natsbus: consume updates %s round %d: %w", fed, round, err)
	}
	<-ctx.Done()
	cc.Stop()
	mu.Lock()
	stopped = true
	mu.Unlock()
	b.cleanup.Go(func() {
		dctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		defer cancel()
		// An ordered consumer that the library recreated (after a gap) has a new name:
		// CachedInfo names the current one; an earlier one expires by itself.
		if err := b.js.DeleteConsumer(dctx, updateStream(fed), cons.CachedInfo().Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			b.log.Debug("update consumer not deleted; the server drops it when inactive", "federation", fed, "round", round, "err", err)
		}
	})
	return nil
}

// DeleteUpdates implements federation.Transport. From what Updates saw of the round (or,
// for a round this Bus did not read, from a scan of the stream's headers), it purges the
// round's messages with those of earlier rounds (late ones, and any without a round): every
// message up to the last of them in one request when no later round's message came before
// it, and otherwise every message before the later round's first one, then each member's
// messages up to that member's last of them: a member's messages are in the order it sent
// them.
func (b *Bus) DeleteUpdates(ctx context.Context, fed string, round uint64) error {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	err := b.deleteUpdates(ctx, fed, round)
	if err != nil {
		return fmt.Errorf("natsbus: delete updates %s round %d: %w", fed, round, err)
	}
	return nil
}

func (b *Bus) deleteUpdates(ctx context.Context, fed string, round uint64) error {
	st, err := b.stream(ctx, updateStream(fed))
	if err != nil {
		return err
	}
	seen := b.takeReads(fed, round)
	if seen == nil {
		if seen, err = b.scanRound(ctx, st, fed, round); err != nil {
			return err
		}
	}
	for _, p := range seen.purges() {
		opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSequence(p.before)}
		if p.subject != "" {
			opts = append(opts, jetstream.WithPurgeSubject(p.subject))
		}
		if err := st.Purge(ctx, opts...); err != nil {
			return err
		}
	}
	return nil
}

// purge is one purge of the update stream: the messages before sequence before, on
// subject ("": every subject).
type purge struct {
	subject string
	before  uint64
}

// purges returns the purges that delete the round's messages with those of earlier rounds
// it saw (late ones, and any without a round), and no later round's: every message up to
// the last of them at once when no later round's message came before it; otherwise
// everything before the later round's first message, then each member's messages up to
// that member's last of them (a member's messages are in the order it sent them). None
// when the round had no message.
func (s *roundSeqs) purges() []purge {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.round == 0 {
		return nil
	}
	if s.later == 0 || s.later > s.last {
		return []purge{{before: s.last + 1}}
	}
	out := []purge{{before: s.later}}
	for subject, seq := range s.subjects {
		if seq >= s.later {
			out = append(out, purge{subject: subject, before: seq + 1})
		}
	}
	return out
}

// scanRound reads the headers of every message in fed's update stream, with a consumer of
// its own that it deletes, and returns what a reader of round would have seen.
func (b *Bus) scanRound(ctx context.Context, st jetstream.Stream, fed string, round uint64) (*roundSeqs, error) {
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject: updateSubjects(fed), DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy,
		HeadersOnly: true, MemoryStorage: true, InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		dctx, cancel := b.bounded(context.Background())
		defer cancel()
		_ = st.DeleteConsumer(dctx, cons.CachedInfo().Name) // or the server drops it when inactive
	}()
	seen := &roundSeqs{subjects: map[string]uint64{}}
	for pending := cons.CachedInfo().NumPending; pending > 0; {
		// Without waiting: a message purged meanwhile is not one to wait for.
		batch, err := cons.FetchNoWait(int(min(pending, 256)))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			seen.see(round, msgRound(m.Headers()), m.Subject(), meta.Sequence.Stream)
			pending, got = meta.NumPending, got+1
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
		if got == 0 {
			break
		}
	}
	return seen, nil
}
