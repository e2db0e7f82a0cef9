package federation

import (
	"context"
	"errors"
	"hash/maphash"
	"runtime"
	"sync"
	"time"

	"github.com/millwright-io/millwright/federation/compress"
)

// feed is the stream of one round's update messages, read by one goroutine it owns and
// decoded, signature checked, by up to GOMAXPROCS workers while the round loop handles
// the messages before them: the checks are pure, and a round's last few updates often
// arrive together, so the round's end waits for them in parallel instead of one by one.
// Messages come out in the order they were received. At most GOMAXPROCS messages are
// read ahead of the round loop (decoding or decoded); JetStream holds the rest.
type feed struct {
	ch      chan *message
	ahead   chan struct{} // one token per message read and not yet taken by next
	done    chan error
	cancel  context.CancelFunc
	workers sync.WaitGroup
	// senders is what admit knows of each sender's messages in the round, seed the seed of
	// their checksums. Only the reader (one Updates call at a time) uses them.
	senders map[string]*sender
	seed    maphash.Seed
}

// sender is what the feed knows of one sender's messages in a round.
type sender struct {
	last uint64              // the highest Seq delivered: a message at or below it was delivered before
	read map[uint64]bool     // the Seqs of the messages read (at most MemberMessages)
	sums map[uint64]struct{} // the checksums of the messages read
	over bool                // logged for going past MemberMessages
}

// MemberMessages is how many distinct messages of one member the hub reads in a round. A
// member sends one update a round, five with secure aggregation (one per phase); a publish
// it retried because the acknowledgement was lost is stored again, as a copy, which does
// not count. Past that a member could only make the hub hash and decode message after
// message, delay the others' behind them and fill the log with rejections. The hub leaves
// the rest of that member's messages in the round unread, counted
// (millwright_federation_updates_total{result="unread"}, once per message) and logged once.
const MemberMessages = 8

// admission is what the feed does with a delivered message.
type admission int

const (
	admitRead      admission = iota // decode and handle it (handle knows a redelivery of one read before)
	admitRepeat                     // leave it: delivered before, or a copy of one read (counted redelivered)
	admitOverLimit                  // leave it: past the sender's MemberMessages (counted unread)
)

// admit says what the feed does with m. A message at or below the highest Seq of its
// sender seen in the round was delivered before (a consumer delivers in stream order, and
// one started again starts over): read again if it was read, else left. A new message
// with the bytes of one read (a checksum with the feed's random seed) is a copy, left.
// Otherwise it is read if its sender has had fewer than MemberMessages read. Memory is
// bounded by the members: per sender one Seq, and MemberMessages Seqs and checksums.
func (fd *feed) admit(m UpdateMessage) admission {
	s := fd.senders[m.Sender]
	if s == nil {
		s = &sender{read: map[uint64]bool{}, sums: map[uint64]struct{}{}}
		fd.senders[m.Sender] = s
	}
	if m.Seq <= s.last {
		if s.read[m.Seq] {
			return admitRead
		}
		return admitRepeat
	}
	s.last = m.Seq
	sum := maphash.Bytes(fd.seed, m.Data)
	if _, copied := s.sums[sum]; copied {
		return admitRepeat
	}
	if len(s.read) >= MemberMessages {
		return admitOverLimit
	}
	s.read[m.Seq], s.sums[sum] = true, struct{}{}
	return admitRead
}

// message is one received update message and what decoding it found. ready is closed
// once u, err, delta, kind and derr are set.
type message struct {
	b      []byte
	sender string  // the member the transport took it from (UpdateMessage.Sender)
	u      *Update // the decoded update, its signature checked; nil when err is set
	err    error   // DecodeUpdate's error
	delta  []float32
	kind   string // the payload's codec, decoded (only for a KindDelta update)
	derr   error  // compress.Decode's error
	ready  chan struct{}
}

// id returns m's identity: its update's id, computed with its signature's hash, or, for a
// message that did not decode, the SHA-256 of its bytes.
func (m *message) id() string {
	if m.u != nil {
		return m.u.ID()
	}
	return HashHex(m.b)
}

// decode decodes m.b and, for a plain update, its payload of at most maxParams values,
// into a buffer of bufs.
func (m *message) decode(maxParams int, bufs *buffers) {
	defer close(m.ready)
	if m.u, m.err = DecodeUpdate(m.b); m.err == nil && m.u.Kind == KindDelta {
		m.delta, m.kind, m.derr = compress.DecodeTo(bufs.get(), m.u.Payload, maxParams)
	}
}

// buffers keeps the decoded updates of a finished round for the next round's to be
// decoded into: once a round is aggregated its updates' values are garbage, and a
// model-sized buffer is cheaper to reuse than to allocate, zeroed, and collect. It keeps
// at most max. Safe for concurrent use.
type buffers struct {
	mu   sync.Mutex
	free [][]float32
	max  int
}

// get returns a kept buffer, nil if there is none.
func (b *buffers) get() []float32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.free) == 0 {
		return nil
	}
	v := b.free[len(b.free)-1]
	b.free = b.free[:len(b.free)-1]
	return v
}

// put keeps bufs, which nothing uses any more, up to max buffers (nil ones are no buffer).
func (b *buffers) put(bufs ...[]float32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, v := range bufs {
		if v != nil && len(b.free) < b.max {
			b.free = append(b.free, v)
		}
	}
}

// feed starts reading round's messages from the transport. The hand-off is bounded: the
// consumer blocks (JetStream holds the rest) while GOMAXPROCS messages wait for the
// round loop; nothing is left unread but repeats and a member's messages past
// MemberMessages (admit). close stops the reader and waits for it and the workers.
func (f *fedRun) feed(ctx context.Context, round uint64) *feed {
	cctx, cancel := context.WithCancel(ctx)
	n := runtime.GOMAXPROCS(0)
	fd := &feed{ch: make(chan *message, n), ahead: make(chan struct{}, n), done: make(chan error, 1), cancel: cancel,
		senders: map[string]*sender{}, seed: maphash.MakeSeed()}
	maxParams := f.cfg.Architecture.Params
	read := func(um UpdateMessage) {
		switch fd.admit(um) {
		case admitRepeat:
			f.m.updates.WithLabelValues(resultRedelivered).Inc()
			return
		case admitOverLimit:
			f.m.updates.WithLabelValues(resultUnread).Inc()
			if s := fd.senders[um.Sender]; !s.over {
				s.over = true
				f.log.Warn("member sent more messages than a round takes; the rest of them are not read", "participant", um.Sender, "round", round, "limit", MemberMessages)
			}
			return
		}
		b := um.Data
		select {
		case fd.ahead <- struct{}{}:
		case <-cctx.Done():
			return
		}
		m := &message{b: b, sender: um.Sender, ready: make(chan struct{})}
		fd.workers.Go(func() { m.decode(maxParams, &f.bufs) })
		fd.ch <- m // never blocks: ch has room for every token of ahead
	}
	go func() {
		// A consumer the transport could not start is started again, like every transport
		// call; it reads the round from its start, and handle knows the messages it has seen.
		_, err := retry(cctx, f.log, "consume updates", func() (struct{}, error) {
			return struct{}{}, f.h.tr.Updates(cctx, f.cfg.Name, round, read)
		})
		fd.done <- err
	}()
	return fd
}

func (fd *feed) close() { fd.cancel(); <-fd.done; fd.workers.Wait() }

// next returns the next message, decoded, or nil when deadline passes first.
func (fd *feed) next(ctx context.Context, deadline <-chan time.Time) (*message, error) {
	var m *message
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case err := <-fd.done:
		fd.done <- err // for close
		if err == nil {
			err = errors.New("update consumer stopped")
		}
		return nil, err
	case <-deadline:
		return nil, nil
	case m = <-fd.ch:
		<-fd.ahead
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-m.ready:
		return m, nil
	}
}
