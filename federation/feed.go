package federation

import (
	"context"
	"errors"
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
	// taken holds, by sender, the messages read (their Seq); over, the senders logged for
	// going past MemberMessages. Only the reader (one Updates call at a time) uses them.
	taken map[string]map[uint64]bool
	over  map[string]bool
}

// MemberMessages is how many distinct messages of one member the hub reads in a round. A
// member sends one update a round, five with secure aggregation (one per phase), and a
// few more if it retried a publish; past that a member could only make the hub hash and
// decode message after message, delay the others' behind them and fill the log with
// rejections. The hub leaves the rest of that member's messages in the round unread,
// counted (millwright_federation_updates_total{result="unread"}) and logged once.
const MemberMessages = 8

// admit reports whether the hub reads m: a message it read before (redelivered), or one
// of the first MemberMessages of its sender in the round.
func (fd *feed) admit(m UpdateMessage) bool {
	seqs := fd.taken[m.Sender]
	if seqs[m.Seq] {
		return true
	}
	if len(seqs) >= MemberMessages {
		return false
	}
	if seqs == nil {
		seqs = map[uint64]bool{}
		fd.taken[m.Sender] = seqs
	}
	seqs[m.Seq] = true
	return true
}

// message is one received update message and what decoding it found. ready is closed
// once u, err, delta, kind and derr are set.
type message struct {
	b     []byte
	u     *Update // the decoded update, its signature checked; nil when err is set
	err   error   // DecodeUpdate's error
	delta []float32
	kind  string // the payload's codec, decoded (only for a KindDelta update)
	derr  error  // compress.Decode's error
	ready chan struct{}
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
// round loop; nothing is dropped but a member's messages past MemberMessages (admit). close stops the reader and waits for it and the workers.
func (f *fedRun) feed(ctx context.Context, round uint64) *feed {
	cctx, cancel := context.WithCancel(ctx)
	n := runtime.GOMAXPROCS(0)
	fd := &feed{ch: make(chan *message, n), ahead: make(chan struct{}, n), done: make(chan error, 1), cancel: cancel,
		taken: map[string]map[uint64]bool{}, over: map[string]bool{}}
	maxParams := f.cfg.Architecture.Params
	read := func(um UpdateMessage) {
		if !fd.admit(um) {
			f.m.updates.WithLabelValues(resultUnread).Inc()
			if !fd.over[um.Sender] {
				fd.over[um.Sender] = true
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
		m := &message{b: b, ready: make(chan struct{})}
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
