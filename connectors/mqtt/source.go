package mqtt

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

const (
	// maxDeadLetterPayload is how much of a refused payload a dead letter keeps.
	maxDeadLetterPayload = 1 << 10
	// disconnectQuiesce is how long Close waits for each client's DISCONNECT to go out.
	disconnectQuiesce = 250 * time.Millisecond
	// flushTimeout bounds how long Close waits for the broker to confirm that it has read
	// every acknowledgement sent.
	flushTimeout = 2 * time.Second
	// windowPoll is how often a message handler that waits for room in the in-flight window
	// checks that its connection is still open (paho reports a lost connection only after
	// the handler has returned).
	windowPoll = 100 * time.Millisecond
	// slabPoints is how many points a receiver allocates at a time to decode into.
	slabPoints = 1024
	// minSlabRoom is the free room below which a receiver starts a new slab.
	minSlabRoom = 64
	// internedNames bounds the names (machines, signals, lines) a source interns.
	internedNames = 100_000
)

// Source is the MQTT source. It implements connectors.Source.
type Source struct {
	name    string
	cfg     Config
	log     *slog.Logger
	dls     connectors.DeadLetters
	m       *metrics
	names   *telemetry.Interner
	filters map[string]byte // subscription filter -> QoS
	hooks   *Hooks          // set by NewWithHooks

	mu        sync.Mutex // guards conn, gen and connected
	conn      *connection
	gen       uint64
	connected bool // a Connect has succeeded before
}

var _ connectors.Source = (*Source)(nil)

// New validates cfg and builds the source. It does no network I/O (it reads the TLS files,
// so that a missing certificate is a configuration error); Connect connects.
func New(name string, cfg Config, env connectors.Env) (*Source, error) {
	env = env.WithDefaults()
	cfg.Servers = slices.Clone(cfg.Servers)
	cfg.Topics = slices.Clone(cfg.Topics)
	cfg.SetDefaults()
	if cfg.ClientID == "" {
		cfg.ClientID = "millwright-" + name
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mqtt source %q: %w", name, err)
	}
	if _, err := cfg.TLS.Load(); err != nil {
		return nil, fmt.Errorf("mqtt source %q: %w", name, err)
	}
	m, err := newMetrics(env.Registerer, name)
	if err != nil {
		return nil, fmt.Errorf("mqtt source %q: %w", name, err)
	}
	s := &Source{
		name:    name,
		cfg:     cfg,
		log:     env.Logger,
		dls:     env.DeadLetters,
		m:       m,
		names:   telemetry.NewInterner(internedNames),
		filters: make(map[string]byte, len(cfg.Topics)),
	}
	group := ""
	if cfg.Connections > 1 {
		group = cfg.ShareGroup
	}
	for _, t := range cfg.Topics {
		pat, _ := parsePattern(t.Pattern) // valid: checked by Validate
		s.filters[pat.subscription(group)] = byte(t.QoS)
	}
	// Build the decoders once, so that a problem shows here rather than in Connect.
	if _, err := s.newDecoders(); err != nil {
		return nil, fmt.Errorf("mqtt source %q: %w", name, err)
	}
	return s, nil
}

func (s *Source) newDecoders() ([]*Decoder, error) {
	decs := make([]*Decoder, len(s.cfg.Topics))
	for i, t := range s.cfg.Topics {
		d, err := NewDecoder(t, DecoderOptions{
			MaxPoints: s.cfg.MaxBatchPoints, // max_payload_bytes: receiver.decode checks it
			Names:     s.names,
		})
		if err != nil {
			return nil, err
		}
		decs[i] = d
	}
	return decs, nil
}

// Connect connects every client, subscribes to the topics and starts receiving. Dialing
// stops when ctx is done; the MQTT handshake that follows is bounded by connect_timeout.
// Calling Connect on a connected source is an error.
func (s *Source) Connect(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		return fmt.Errorf("mqtt source %q: Connect called while connected; call Close first", s.name)
	}
	tlsCfg, err := s.cfg.TLS.Load() // again, to pick up renewed certificates
	if err != nil {
		return fmt.Errorf("mqtt source %q: %w", s.name, err)
	}
	if tlsCfg != nil && tlsCfg.InsecureSkipVerify {
		s.log.Warn("tls certificate verification is off (insecure_skip_verify)")
	}
	s.gen++
	c := newConnection(s, s.gen)
	for _, id := range s.cfg.clientIDs() {
		if err := c.connectClient(ctx, id, tlsCfg); err != nil {
			c.shutdown(ctx)
			return fmt.Errorf("mqtt source %q: %w", s.name, err)
		}
	}
	if err := s.hooks.onConnect(ctx, c); err != nil {
		c.shutdown(ctx)
		return fmt.Errorf("mqtt source %q: %w", s.name, err)
	}
	s.conn = c
	s.connected = true
	return nil
}

// Read returns the points of the messages received since the last Read: it waits for the
// first message, then takes whatever else has arrived, up to max_batch_points points.
// Messages that yield no point (refused ones, nulls) are acknowledged without being
// returned. The AckFunc acknowledges the batch's messages to the broker, after those of every
// earlier batch; called with an error it acknowledges nothing more on this connection and
// makes the next Read return connectors.ErrNotConnected, so that the pipeline reconnects and
// the broker delivers the unacknowledged messages again.
func (s *Source) Read(ctx context.Context) (telemetry.Batch, connectors.AckFunc, error) {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return telemetry.Batch{}, nil, fmt.Errorf("mqtt source %q: %w", s.name, connectors.ErrNotConnected)
	}
	for {
		first, err := c.next(ctx)
		if err != nil {
			return telemetry.Batch{}, nil, fmt.Errorf("mqtt source %q: %w", s.name, err)
		}
		b, points := c.collect(first, s.cfg.MaxBatchPoints)
		if len(points) == 0 {
			c.settle(b, nil)
			continue
		}
		return telemetry.Batch{Points: points}, func(_ context.Context, err error) { c.settle(b, err) }, nil
	}
}

// Close disconnects every client. Messages not yet acknowledged are delivered again by the
// broker after the next Connect (QoS 1 and 2, with a persistent session); acknowledgements
// of batches read before Close are not sent any more.
func (s *Source) Close(ctx context.Context) error {
	s.mu.Lock()
	c := s.conn
	s.conn = nil
	s.mu.Unlock()
	if c != nil {
		c.shutdown(ctx)
	}
	return nil
}

// entry is one received message on its way to Read.
type entry struct {
	msg    paho.Message
	points []telemetry.Point
}

// batchState is a batch (or a group of point-less messages) read and not yet acknowledged.
type batchState struct {
	msgs    []paho.Message
	settled bool
}

// connection is one generation of connected clients. Acknowledgements are sent only on the
// connection that received the messages: a batch read from an earlier connection is settled
// without acknowledging anything (the broker delivers its messages again), because a packet
// id of the old connection could name another message on the new one.
type connection struct {
	src       *Source
	gen       uint64
	clients   []paho.Client
	clientIDs []string      // of clients
	entries   chan entry    // received messages, in receive order per client
	slots     chan struct{} // the in-flight window: one token per unsettled message
	full      chan struct{} // signalled when a handler finds the window full
	done      chan struct{} // closed by shutdown: handlers return, Read fails
	lost      chan struct{} // closed by fail
	ctx       context.Context
	cancel    context.CancelFunc

	// Owned by the goroutine that calls Connect and then Read.
	subs    []pendingSub // subscriptions whose SUBACK Connect did not wait for
	pending *entry       // taken from entries, for the next batch

	mu      sync.Mutex
	held    int  // messages in the window
	closed  bool // shutdown started: nothing more is acknowledged or counted
	failed  bool // a batch failed or the connection was lost: nothing more is acknowledged
	acked   bool // some message was acknowledged
	lostErr error
	queue   []*batchState // read and not yet released, in read order
}

type pendingSub struct {
	clientID string
	tok      paho.Token
}

func newConnection(s *Source, gen uint64) *connection {
	ctx, cancel := context.WithCancel(context.Background())
	return &connection{
		src:     s,
		gen:     gen,
		entries: make(chan entry, s.cfg.MaxInflight),
		slots:   make(chan struct{}, s.cfg.MaxInflight),
		full:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		lost:    make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
	}
}

// clientOptions returns the options of one client. ctx is the Connect call's, for dialing.
func (c *connection) clientOptions(ctx context.Context, id string, tlsCfg *tls.Config, r *receiver, timeout time.Duration) *paho.ClientOptions {
	cfg := &c.src.cfg
	o := paho.NewClientOptions()
	for _, srv := range cfg.Servers {
		o.AddBroker(srv)
	}
	o.SetCustomOpenConnectionFn(openConnection(ctx, timeout))
	o.SetClientID(id)
	o.SetProtocolVersion(4) // MQTT 3.1.1, without paho's fallback to 3.1
	if cfg.Username != "" {
		o.SetUsername(cfg.Username)
		o.SetPassword(cfg.Password.Value())
	}
	if tlsCfg != nil {
		o.SetTLSConfig(tlsCfg)
	}
	o.SetCleanSession(cfg.CleanSession)
	o.SetKeepAlive(cfg.KeepAlive)
	o.SetPingTimeout(min(cfg.KeepAlive, 10*time.Second))
	o.SetConnectTimeout(timeout)
	o.SetWriteTimeout(cfg.ConnectTimeout)
	// The pipeline reconnects, with backoff, after Read reports ErrNotConnected.
	o.SetAutoReconnect(false)
	o.SetConnectRetry(false)
	o.SetResumeSubs(false)
	// One handler call at a time, in receive order, acknowledged by the source itself.
	o.SetOrderMatters(true)
	o.SetAutoAckDisabled(true)
	o.SetStore(discardStore{})
	o.SetDefaultPublishHandler(r.onMessage)
	c.src.hooks.setWill(o)
	o.SetConnectionLostHandler(func(_ paho.Client, err error) {
		c.src.m.lost.Inc()
		c.src.log.Debug("connection lost", "client_id", id, "generation", c.gen, "err", err)
		c.fail(&connError{msg: fmt.Sprintf("connection of client %q lost", id), cause: err})
	})
	return o
}

// connectClient connects one client and subscribes it to every topic.
func (c *connection) connectClient(ctx context.Context, id string, tlsCfg *tls.Config) error {
	cfg := &c.src.cfg
	timeout := cfg.ConnectTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(min(timeout, time.Until(dl)), time.Millisecond)
	}
	decs, err := c.src.newDecoders()
	if err != nil {
		return err
	}
	r := &receiver{c: c, decs: decs}
	cl := paho.NewClient(c.clientOptions(ctx, id, tlsCfg, r, timeout))
	c.clients = append(c.clients, cl)
	c.clientIDs = append(c.clientIDs, id)

	tok := cl.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		<-tok.Done() // dialing stops with ctx; the MQTT handshake is bounded by the timeout
		return ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("connect to %s as client id %q: %w%s", strings.Join(cfg.Servers, ", "), id, err, refusalHint(err, cfg.Username))
	}
	c.src.m.connects.Inc()
	sessionPresent := false
	if ct, ok := tok.(*paho.ConnectToken); ok {
		sessionPresent = ct.SessionPresent()
	}
	log := c.src.log.With("client_id", id, "generation", c.gen)
	switch {
	case !cfg.CleanSession && !sessionPresent && c.src.connected: // Connect holds c.src.mu
		log.Warn("broker holds no session for this client id: messages published while the source was away were not kept", "session_present", false)
	default:
		log.Info("connected", "session_present", sessionPresent)
	}

	// With a persistent session the broker may send queued messages before the SUBACK. If
	// they fill the in-flight window before Read runs, the SUBACK waits behind them, so Connect
	// stops waiting then and Read checks the SUBACK later.
	sub := cl.SubscribeMultiple(c.src.filters, nil)
	timer := time.NewTimer(cfg.ConnectTimeout)
	defer timer.Stop()
	select {
	case <-sub.Done():
		return c.checkSubscription(id, sub)
	case <-c.full:
		log.Debug("in-flight window full before the SUBACK; Read checks it later")
		c.subs = append(c.subs, pendingSub{clientID: id, tok: sub})
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("subscribe as client id %q: no SUBACK from the broker within %s", id, cfg.ConnectTimeout)
	}
}

// refusalHint says what to check when the broker refused the client's credentials, which
// paho reports in two words ("not Authorized", from CONNACK return code 5, or code 4's "bad
// user name or password").
func refusalHint(err error, username string) string {
	if !errors.Is(err, packets.ErrorRefusedNotAuthorised) && !errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
		return ""
	}
	if username == "" {
		return "; the broker refused a client without a username: set username and password"
	}
	return fmt.Sprintf("; the broker refused username %q with the configured password: check username and password", username)
}

// checkSubscription checks a completed subscription: every filter must be granted.
func (c *connection) checkSubscription(id string, tok paho.Token) error {
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe as client id %q: %w", id, err)
	}
	st, ok := tok.(*paho.SubscribeToken)
	if !ok {
		return nil
	}
	granted := st.Result()
	var errs []error
	for _, filter := range slices.Sorted(maps.Keys(c.src.filters)) {
		want := c.src.filters[filter]
		got, ok := granted[filter]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("subscribe as client id %q: the broker did not answer for filter %q", id, filter))
		case got == 0x80:
			errs = append(errs, fmt.Errorf("subscribe as client id %q: the broker refused filter %q (SUBACK failure 0x80; check its ACL)", id, filter))
		case got < want:
			c.src.log.Warn("broker granted a lower qos than requested", "client_id", id, "filter", filter, "requested_qos", want, "granted_qos", got)
		}
	}
	return errors.Join(errs...)
}

// next returns the next entry for Read, waiting for one.
func (c *connection) next(ctx context.Context) (entry, error) {
	if err := c.checkPendingSubs(); err != nil {
		c.fail(&connError{msg: "subscription failed", cause: err})
	}
	select {
	case <-c.lost:
		return entry{}, c.lostError()
	default:
	}
	if e := c.pending; e != nil {
		c.pending = nil
		return *e, nil
	}
	var subDone <-chan struct{}
	if len(c.subs) > 0 {
		subDone = c.subs[0].tok.Done()
	}
	for {
		select {
		case e := <-c.entries:
			return e, nil
		case <-c.lost:
			return entry{}, c.lostError()
		case <-c.done:
			return entry{}, &connError{msg: "source closed"}
		case <-ctx.Done():
			return entry{}, ctx.Err()
		case <-subDone:
			subDone = nil
			if err := c.checkPendingSubs(); err != nil {
				c.fail(&connError{msg: "subscription failed", cause: err})
			}
		}
	}
}

// checkPendingSubs checks the subscriptions whose SUBACK has come in since Connect.
func (c *connection) checkPendingSubs() error {
	var errs []error
	for len(c.subs) > 0 {
		ps := c.subs[0]
		select {
		case <-ps.tok.Done():
		default:
			return errors.Join(errs...)
		}
		c.subs = c.subs[1:]
		if err := c.checkSubscription(ps.clientID, ps.tok); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// collect builds a batch from first and whatever other entries are waiting, up to max points.
func (c *connection) collect(first entry, maxPoints int) (*batchState, []telemetry.Point) {
	msgs := []paho.Message{first.msg}
	var points []telemetry.Point
	if n := len(first.points); n > 0 {
		points = make([]telemetry.Point, 0, min(maxPoints, max(n*(1+len(c.entries)), n)))
		points = append(points, first.points...)
	}
loop:
	for len(points) < maxPoints {
		select {
		case e := <-c.entries:
			if len(points)+len(e.points) > maxPoints {
				c.pending = &e
				break loop
			}
			msgs = append(msgs, e.msg)
			if points == nil && len(e.points) > 0 {
				points = make([]telemetry.Point, 0, min(maxPoints, len(e.points)*(1+len(c.entries))))
			}
			points = append(points, e.points...)
		default:
			break loop
		}
	}
	b := &batchState{msgs: msgs}
	c.mu.Lock()
	c.queue = append(c.queue, b)
	c.mu.Unlock()
	return b, points
}

// settle records the outcome of a batch and acknowledges, in read order, every batch whose
// predecessors are all settled. A failed batch stops all acknowledgement on the connection.
func (c *connection) settle(b *batchState, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b.settled {
		return // AckFunc called twice: the first call counts
	}
	b.settled = true
	if err != nil && !c.failed && !c.closed {
		c.failLocked(&connError{msg: "a batch was not stored; reconnecting so that the broker delivers its messages again", cause: err})
	}
	for len(c.queue) > 0 && c.queue[0].settled {
		h := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		if !c.failed && !c.closed {
			for _, m := range h.msgs {
				m.Ack() // PUBACK, or PUBREC for QoS 2; nothing for QoS 0
			}
			c.acked = c.acked || len(h.msgs) > 0
		}
		c.releaseLocked(len(h.msgs))
	}
}

// acquire takes a place in the in-flight window for one message, waiting while the window is
// full. It returns false when the connection is closing or lost: the message is then left
// unacknowledged, for the broker to deliver again.
func (c *connection) acquire(cl paho.Client) bool {
	select {
	case c.slots <- struct{}{}:
	default:
		select {
		case c.full <- struct{}{}:
		default:
		}
		if !c.waitSlot(cl) {
			return false
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.held++
	c.src.m.inflight.Inc()
	return true
}

func (c *connection) waitSlot(cl paho.Client) bool {
	t := time.NewTicker(windowPoll)
	defer t.Stop()
	for {
		select {
		case c.slots <- struct{}{}:
			return true
		case <-c.done:
			return false
		case <-t.C:
			if !cl.IsConnectionOpen() {
				// paho calls the connection-lost handler only after this handler returns.
				return false
			}
		}
	}
}

// releaseLocked gives n places of the window back. c.mu must be held.
func (c *connection) releaseLocked(n int) {
	if c.closed {
		return
	}
	c.held -= n
	c.src.m.inflight.Sub(float64(n))
	for range n {
		<-c.slots
	}
}

// fail marks the connection unusable: the next Read returns err.
func (c *connection) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failLocked(err)
}

func (c *connection) failLocked(err error) {
	if c.lostErr != nil {
		return
	}
	c.failed = true
	c.lostErr = err
	close(c.lost)
}

func (c *connection) lostError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lostErr
}

// shutdown disconnects every client. Handlers waiting for the window return first, so that
// paho can stop.
func (c *connection) shutdown(ctx context.Context) {
	c.mu.Lock()
	c.closed = true
	c.src.m.inflight.Sub(float64(c.held))
	c.held = 0
	flush := c.acked // after a loss flush finds the connection closed and returns
	c.mu.Unlock()
	close(c.done)
	c.cancel()

	var wg sync.WaitGroup
	for i, cl := range c.clients {
		wg.Go(func() {
			if flush {
				c.flush(ctx, cl, c.clientIDs[i])
			}
			quiesce := disconnectQuiesce
			if dl, ok := ctx.Deadline(); ok {
				quiesce = max(min(quiesce, time.Until(dl)), time.Millisecond)
			}
			cl.Disconnect(uint(quiesce / time.Millisecond))
		})
	}
	wg.Wait()
	c.src.log.Debug("disconnected", "generation", c.gen)
}

// flush waits until the broker has read every acknowledgement sent on the client's
// connection. Without it, a reconnect can reach the broker before the last acknowledgements
// of the old connection: the broker then drops the old connection, unread, and delivers
// those messages again.
//
// The broker answers every UNSUBSCRIBE, in order, even for a filter nobody subscribed to, so
// the UNSUBACK of a filter none of the topics uses is the confirmation.
func (c *connection) flush(ctx context.Context, cl paho.Client, clientID string) {
	if !cl.IsConnectionOpen() {
		return
	}
	filter := "millwright/flush/" + clientID
	for {
		if _, subscribed := c.src.filters[filter]; !subscribed {
			break
		}
		filter += "/_"
	}
	timer := time.NewTimer(flushTimeout)
	defer timer.Stop()
	tok := cl.Unsubscribe(filter)
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			c.src.log.Debug("flush before disconnect failed", "err", err)
		}
	case <-timer.C:
		c.src.log.Debug("flush before disconnect timed out", "timeout", flushTimeout)
	case <-ctx.Done():
	}
}

// connError is why a connection cannot be read any more; it matches
// connectors.ErrNotConnected.
type connError struct {
	msg   string
	cause error
}

func (e *connError) Error() string {
	if e.cause == nil {
		return e.msg
	}
	return e.msg + ": " + e.cause.Error()
}

func (e *connError) Unwrap() []error {
	if e.cause == nil {
		return []error{connectors.ErrNotConnected}
	}
	return []error{connectors.ErrNotConnected, e.cause}
}

// receiver handles the messages of one client. paho calls it from one goroutine at a time
// (order matters), so it owns its decoders and its slab of points.
type receiver struct {
	c    *connection
	decs []*Decoder
	slab []telemetry.Point
	used int
}

func (r *receiver) onMessage(cl paho.Client, m paho.Message) {
	c := r.c
	if !c.acquire(cl) {
		return
	}
	payload := m.Payload()
	c.src.m.messages.Inc()
	c.src.m.payloadBytes.Add(float64(len(payload)))
	e := entry{msg: m}
	pts, err := r.decode(m.Topic(), payload, time.Now().UnixNano())
	if err != nil {
		c.deadLetter(m.Topic(), payload, err)
	} else {
		e.points = pts
	}
	select {
	case c.entries <- e: // never blocks: the window is no larger than the channel
	case <-c.done:
		c.mu.Lock()
		c.releaseLocked(1)
		c.mu.Unlock()
	}
}

// decode decodes a message with the hooks' handler, or else the decoder of the first topic
// whose pattern matches, into the receiver's slab. A payload larger than max_payload_bytes
// is refused here, after the topic is matched, whichever decodes it.
func (r *receiver) decode(topic string, payload []byte, now int64) ([]telemetry.Point, error) {
	h := r.c.src.hooks.handler()
	if h == nil {
		dec := r.decs[0]
		if len(r.decs) > 1 {
			dec = nil
			for _, d := range r.decs {
				if d.Match(topic) {
					dec = d
					break
				}
			}
			if dec == nil {
				pats := make([]string, len(r.decs))
				for i, d := range r.decs {
					pats[i] = d.pat.text
				}
				return nil, &DecodeError{Class: ClassTopicMismatch,
					Reason: fmt.Sprintf("topic %q matches none of the patterns %q", topic, pats)}
			}
		}
		h = dec
	}
	if limit := int(r.c.src.cfg.MaxPayloadBytes); limit > 0 && len(payload) > limit {
		return nil, &DecodeError{Class: ClassPayloadTooLarge,
			Reason: fmt.Sprintf("payload is %d bytes, more than max_payload_bytes %d", len(payload), limit)}
	}
	if len(r.slab)-r.used < minSlabRoom {
		r.slab, r.used = make([]telemetry.Point, slabPoints), 0
	}
	free := r.slab[r.used:r.used:len(r.slab)]
	pts, err := h.Decode(topic, payload, now, free)
	if err != nil || len(pts) == 0 {
		return nil, err
	}
	if cap(pts) == cap(free) { // decoded in place: the slab is used up to here
		r.used += len(pts)
	}
	return pts[:len(pts):len(pts)], nil
}

func (c *connection) deadLetter(topic string, payload []byte, err error) {
	class, reason := "other", err.Error()
	var de *DecodeError
	if errors.As(err, &de) {
		class = de.Class
	}
	if len(payload) > maxDeadLetterPayload {
		payload = payload[:maxDeadLetterPayload]
	}
	c.src.dls.Put(c.ctx, connectors.DeadLetter{
		Time:      time.Now(),
		Component: "source",
		Name:      c.src.name,
		Class:     class,
		Reason:    reason,
		Origin:    topic,
		Payload:   bytes.Clone(payload),
	}) // the dead-letter store counts and logs it
}
