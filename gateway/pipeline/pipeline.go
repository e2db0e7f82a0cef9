// Package pipeline moves telemetry from the sources through the write-ahead log to the sinks.
//
// The engine owns what every connector needs and no connector should write again:
// connecting and reconnecting with backoff, acknowledging a source batch only once it is
// durable in the log, retrying sink writes, dead-lettering the points a sink refuses,
// readiness, and the standard metrics. Memory is bounded end to end: a source hands over one
// batch at a time and waits for the log, and each sink reads the log in bounded chunks.
// When the log is full (its overflow policy is "block"), Append blocks, the source stops
// reading, and the pressure reaches the peer (an MQTT broker keeps the messages).
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/backoff"
)

// Log is the write-ahead log as the sources' side of the engine sees it.
type Log interface {
	// Append returns once b is durable (per the log's fsync policy), or with an error.
	Append(ctx context.Context, b telemetry.Batch) error
}

// Cursor is one sink's position in the write-ahead log.
type Cursor interface {
	// Next blocks until at least one batch is unread and returns up to maxPoints points,
	// waiting up to linger for more (not at all when linger is zero or less, as
	// buffer.Reader does); pos is where the returned points end.
	Next(ctx context.Context, maxPoints int, linger time.Duration) (telemetry.Batch, buffer.Position, error)
	// Commit records that everything up to pos is stored by the sink.
	Commit(pos buffer.Position) error
}

// Source is a configured source.
type Source struct {
	Name   string
	Source connectors.Source
}

// Sink is a configured sink with its cursor in the log.
type Sink struct {
	Name   string
	Sink   connectors.Sink
	Cursor Cursor
	// MaxPoints and Linger size the chunks read from the log. When MaxPoints is zero both
	// come from the sink's connectors.Batcher, or default to 5,000 points and 1 s. A Linger
	// of zero (or less) does not wait: a chunk holds what the log has when it is read.
	MaxPoints int
	Linger    time.Duration
}

// MaxRetryAfter bounds the wait a sink's Retry-After asks for. A server's Retry-After is
// honoured even beyond BackoffMax (retrying sooner only earns another refusal), but a
// broken or hostile server must not stall a sink for days: an hour is longer than any
// overload or maintenance window a real server announces.
const MaxRetryAfter = time.Hour

// Options configures an Engine. Zero values take the documented defaults.
type Options struct {
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
	DeadLetters connectors.DeadLetters
	// Factory is filled into points that carry none.
	Factory string
	// BackoffInitial and BackoffMax bound the waits between reconnects and retries
	// (defaults 100 ms and 30 s); a sink's Retry-After may ask for more, see MaxRetryAfter.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// DrainTimeout is how long shutdown waits for a batch already read to become durable
	// before it gives up on it (unacknowledged, so the peer delivers it again). Default 10 s.
	DrainTimeout time.Duration
	// Tap, when set, is handed every batch once it is durable in the log, before its source
	// is acknowledged (the live scorer uses it). It is called from the sources' goroutines,
	// concurrently when there are several sources, and must return at once without
	// blocking: it runs on the ingest path. It must not keep b or its points after it
	// returns (a source may reuse them once acknowledged): copy what it needs.
	Tap func(b telemetry.Batch)
}

// Engine runs the pipeline. Build it with New and run it with Run.
type Engine struct {
	log     Log
	sources []Source
	sinks   []Sink
	opts    Options
	logger  *slog.Logger
	m       *metrics

	mu sync.Mutex
	up map[string]bool // "source/name" or "sink/name" -> connected
}

// New checks the wiring and registers the standard metrics. It does no I/O.
func New(log Log, sources []Source, sinks []Sink, opts Options) (*Engine, error) {
	env := connectors.Env{Logger: opts.Logger, Registerer: opts.Registerer, DeadLetters: opts.DeadLetters}.WithDefaults()
	opts.Logger, opts.Registerer, opts.DeadLetters = env.Logger, env.Registerer, env.DeadLetters
	if opts.BackoffInitial <= 0 {
		opts.BackoffInitial = 100 * time.Millisecond
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 30 * time.Second
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 10 * time.Second
	}
	if log == nil {
		return nil, errors.New("pipeline: no write-ahead log")
	}
	seen := map[string]bool{}
	for _, s := range sources {
		if s.Source == nil || s.Name == "" || seen["source/"+s.Name] {
			return nil, fmt.Errorf("pipeline: source %q is unnamed, nil or named twice", s.Name)
		}
		seen["source/"+s.Name] = true
	}
	for i, s := range sinks {
		if s.Sink == nil || s.Cursor == nil || s.Name == "" || seen["sink/"+s.Name] {
			return nil, fmt.Errorf("pipeline: sink %q is unnamed, nil, without cursor or named twice", s.Name)
		}
		seen["sink/"+s.Name] = true
		if s.MaxPoints == 0 {
			sinks[i].MaxPoints, sinks[i].Linger = 5000, time.Second
			if b, ok := s.Sink.(connectors.Batcher); ok {
				sinks[i].MaxPoints, sinks[i].Linger = b.BatchPolicy()
			}
		}
		if sinks[i].MaxPoints <= 0 {
			sinks[i].MaxPoints = 5000
		}
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("pipeline: register metrics: %w", err)
	}
	e := &Engine{log: log, sources: sources, sinks: sinks, opts: opts, logger: opts.Logger, m: m, up: map[string]bool{}}
	for k := range seen {
		e.up[k] = false
		kind, name, _ := strings.Cut(k, "/")
		m.connectionUp.WithLabelValues(kind, name).Set(0)
	}
	return e, nil
}

// Run runs every source and sink until ctx is done, then drains: batches already read are
// stored (or left unacknowledged) before it returns. It returns nil after a clean shutdown.
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, s := range e.sources {
		wg.Go(func() { e.runSource(ctx, s) })
	}
	for _, s := range e.sinks {
		wg.Go(func() { e.runSink(ctx, s) })
	}
	wg.Wait()
	return nil
}

// Ready returns nil when every source and sink is connected, else an error naming those
// that are not.
func (e *Engine) Ready() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var down []string
	for k, up := range e.up {
		if !up {
			down = append(down, k)
		}
	}
	if len(down) == 0 {
		return nil
	}
	slices.Sort(down)
	return fmt.Errorf("not connected: %s", strings.Join(down, ", "))
}

func (e *Engine) setUp(kind, name string, up bool) {
	e.mu.Lock()
	e.up[kind+"/"+name] = up
	e.mu.Unlock()
	v := 0.0
	if up {
		v = 1
	}
	e.m.connectionUp.WithLabelValues(kind, name).Set(v)
}

// connect calls connect until it succeeds or ctx is done, with backoff, and reports whether
// it connected. Failures are logged quietly (backoff.Retry).
func (e *Engine) connect(ctx context.Context, kind, name string, connect func(context.Context) error) bool {
	bo := backoff.Backoff{Initial: e.opts.BackoffInitial, Max: e.opts.BackoffMax}
	log := e.logger.With("component", kind, "name", name)
	if !backoff.Retry(ctx, &bo, log, "cannot connect, retrying", connect,
		func(error) { e.m.connectErrors.WithLabelValues(kind, name).Inc() }) {
		return false
	}
	if bo.Attempts() > 0 {
		log.Info("connected after retries", "attempts", bo.Attempts()+1)
	}
	e.setUp(kind, name, true)
	return true
}

func (e *Engine) runSource(ctx context.Context, s Source) {
	log := e.logger.With("component", "source", "name", s.Name)
	bo := backoff.Backoff{Initial: e.opts.BackoffInitial, Max: e.opts.BackoffMax}
	for ctx.Err() == nil {
		if !e.connect(ctx, "source", s.Name, s.Source.Connect) {
			break
		}
		err := e.readLoop(ctx, s)
		e.disconnect(ctx, log, "source", s.Name, s.Source.Close, "close after read error")
		if ctx.Err() != nil {
			return
		}
		e.m.readErrors.WithLabelValues(s.Name).Inc()
		log.Warn("source read failed, reconnecting", "err", err)
		if !backoff.Sleep(ctx, bo.Next()) {
			return
		}
	}
	closeCtx, cancel := e.drainContext(ctx)
	defer cancel()
	_ = s.Source.Close(closeCtx)
}

// disconnect shows kind/name down and closes it, for at most DrainTimeout even once ctx
// has ended. A failed Close is logged at debug level with msg: the connection is gone
// either way.
func (e *Engine) disconnect(ctx context.Context, log *slog.Logger, kind, name string, close func(context.Context) error, msg string) {
	e.setUp(kind, name, false)
	closeCtx, cancel := e.drainContext(ctx)
	defer cancel()
	if err := close(closeCtx); err != nil {
		log.Debug(msg, "err", err)
	}
}

// drainContext returns a context for finishing work during shutdown: it outlives ctx's
// cancellation, bounded by DrainTimeout.
func (e *Engine) drainContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), e.opts.DrainTimeout)
}

// readLoop reads and stores batches until a read fails or ctx is done.
func (e *Engine) readLoop(ctx context.Context, s Source) error {
	for {
		b, ack, err := s.Source.Read(ctx)
		if err != nil {
			return err
		}
		e.prepare(b)
		// A batch already read is stored even during shutdown, so its acknowledgement reaches
		// the peer; past DrainTimeout it is left unacknowledged and delivered again later.
		storeCtx, cancel := ctx, context.CancelFunc(func() {})
		if ctx.Err() != nil {
			storeCtx, cancel = e.drainContext(ctx)
		}
		start := time.Now()
		err = e.store(storeCtx, s.Name, b)
		cancel()
		e.m.appendSeconds.Observe(time.Since(start).Seconds())
		if err != nil {
			e.m.appendErrors.WithLabelValues(s.Name).Inc()
			ack(context.WithoutCancel(ctx), err)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("store batch of %d points: %w", b.Len(), err)
		}
		if e.opts.Tap != nil {
			e.opts.Tap(b)
		}
		ack(context.WithoutCancel(ctx), nil)
		e.m.pointsIn.WithLabelValues(s.Name).Add(float64(b.Len()))
		e.m.batchesIn.WithLabelValues(s.Name).Inc()
	}
}

// store appends b to the log. A batch too large for one record of the log is split in
// halves, recursively, so no configuration of batch and segment sizes can make a batch
// that is never stored (and so redelivered forever); a single point that still does not fit
// is dead-lettered.
func (e *Engine) store(ctx context.Context, source string, b telemetry.Batch) error {
	err := e.log.Append(ctx, b)
	if !errors.Is(err, buffer.ErrBatchTooLarge) {
		return err
	}
	if n := b.Len(); n > 1 {
		if err := e.store(ctx, source, telemetry.Batch{Points: b.Points[:n/2]}); err != nil {
			return err
		}
		return e.store(ctx, source, telemetry.Batch{Points: b.Points[n/2:]})
	}
	e.opts.DeadLetters.Put(ctx, connectors.DeadLetter{
		Component: "source", Name: source, Class: "too_large", Reason: err.Error(), Point: &b.Points[0],
	})
	return nil
}

// prepare fills in what a point must carry before it is stored: the gateway's factory and,
// for a point with no timestamp at all, the time of ingest.
func (e *Engine) prepare(b telemetry.Batch) {
	var now int64
	for i := range b.Points {
		p := &b.Points[i]
		if p.Factory == "" {
			p.Factory = e.opts.Factory
		}
		if p.SourceTime == 0 && p.ServerTime == 0 {
			if now == 0 {
				now = time.Now().UnixNano()
			}
			p.ServerTime = now
		}
	}
}

func (e *Engine) runSink(ctx context.Context, s Sink) {
	defer func() {
		closeCtx, cancel := e.drainContext(ctx)
		defer cancel()
		_ = s.Sink.Close(closeCtx)
		e.setUp("sink", s.Name, false)
	}()
	if !e.connect(ctx, "sink", s.Name, s.Sink.Connect) {
		return
	}
	for {
		b, pos, err := s.Cursor.Next(ctx, s.MaxPoints, s.Linger)
		if err != nil {
			if ctx.Err() == nil {
				e.logger.Error("cannot read the write-ahead log; sink stops", "component", "sink", "name", s.Name, "err", err)
			}
			return
		}
		if !e.deliver(ctx, s, b) {
			return
		}
		if err := s.Cursor.Commit(pos); err != nil {
			// The points are stored; a lost commit only means they are written again after a
			// restart, which sinks tolerate.
			e.logger.Warn("cannot commit the sink's position in the write-ahead log", "component", "sink", "name", s.Name, "err", err)
		}
	}
}

// deliver writes b to the sink, retrying with backoff until it is stored (rejected points
// dead-lettered) or ctx is done, and reports whether it was stored. After a Write that
// returned connectors.ErrNotConnected it closes the sink and connects it again (see
// connect) before the next attempt; b is written again in full either way, so nothing is
// lost and the sink sees no later batch before it.
func (e *Engine) deliver(ctx context.Context, s Sink, b telemetry.Batch) bool {
	log := e.logger.With("component", "sink", "name", s.Name)
	bo := backoff.Backoff{Initial: e.opts.BackoffInitial, Max: e.opts.BackoffMax}
	var failedSince time.Time
	for {
		start := time.Now()
		err := s.Sink.Write(ctx, b)
		var rej *connectors.RejectedError
		if err == nil || errors.As(err, &rej) {
			e.m.writeSeconds.WithLabelValues(s.Name).Observe(time.Since(start).Seconds())
			stored := b.Len()
			if rej != nil {
				stored -= len(rej.Rejected)
				e.m.rejected.WithLabelValues(s.Name).Add(float64(len(rej.Rejected)))
				for i := range rej.Rejected {
					r := &rej.Rejected[i]
					e.opts.DeadLetters.Put(ctx, connectors.DeadLetter{
						Component: "sink", Name: s.Name, Class: r.Class, Reason: r.Reason, Point: &r.Point,
					})
				}
			}
			e.m.pointsOut.WithLabelValues(s.Name).Add(float64(stored))
			e.m.batchesOut.WithLabelValues(s.Name).Inc()
			if !failedSince.IsZero() {
				log.Info("sink writes resumed", "down_for", time.Since(failedSince).Round(time.Millisecond), "attempts", bo.Attempts()+1)
				e.setUp("sink", s.Name, true)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		e.m.writeErrors.WithLabelValues(s.Name).Inc()
		if failedSince.IsZero() {
			failedSince = time.Now()
		}
		lost := errors.Is(err, connectors.ErrNotConnected)
		if lost {
			e.disconnect(ctx, log, "sink", s.Name, s.Sink.Close, "close after lost connection")
		}
		wait := bo.Next()
		var ra interface{ RetryAfter() time.Duration }
		if errors.As(err, &ra) && ra.RetryAfter() > wait {
			wait = min(ra.RetryAfter(), MaxRetryAfter)
		}
		if n := bo.Attempts(); backoff.Logged(n) {
			msg := "sink write failed; the points stay in the write-ahead log and are retried"
			if lost {
				msg = "sink write failed, reconnecting; the points stay in the write-ahead log and are retried"
			}
			log.Warn(msg, "err", err, "points", b.Len(), "attempt", n, "retry_in", wait.Round(time.Millisecond))
		}
		if !backoff.Sleep(ctx, wait) {
			return false
		}
		if lost && !e.connect(ctx, "sink", s.Name, s.Sink.Connect) {
			return false
		}
	}
}
