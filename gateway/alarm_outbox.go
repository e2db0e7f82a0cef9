package gateway

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/gateway/pipeline"
	"github.com/millwright-io/millwright/internal/backoff"
	"github.com/millwright-io/millwright/internal/metricreg"
)

// alarmPublisher is what the alarm outbox needs of connectors/mqtt's Publisher.
type alarmPublisher interface {
	Connect(ctx context.Context) error
	Connected() bool
	Publish(ctx context.Context, topic string, payload []byte, done func(error)) error
	Close()
}

// Errors an alarm message's done callback receives when the outbox gives it up.
var (
	errAlarmDropped = errors.New("alarm outbox full: the oldest message was dropped")
	errAlarmStopped = errors.New("the gateway stopped before the alarm could be published")
	errAlarmAck     = errors.New("the broker did not acknowledge the alarm in time")
)

const (
	// alarmAckTimeout bounds the wait for the broker's acknowledgement of one message,
	// after which it is sent again.
	alarmAckTimeout = 30 * time.Second
	// alarmDrainTimeout bounds how long a stopping gateway publishes the queued alarms.
	alarmDrainTimeout = 2 * time.Second
)

// AlarmOutputStatus is the state of the alarms' MQTT output, as GET /api/v1/alarms/mqtt
// shows it.
type AlarmOutputStatus struct {
	Server    string `json:"server"`
	Connected bool   `json:"connected"`
	// Queued is the number of alarm messages waiting to be published (at most the
	// configured queue), Published those the broker acknowledged, Dropped those given up:
	// the oldest when the queue was full, and those still queued when the gateway stopped.
	Queued    int    `json:"queued"`
	Published uint64 `json:"published"`
	Dropped   uint64 `json:"dropped"`
	// LastError is the last connection or publish error, kept after a recovery.
	LastError string `json:"last_error,omitempty"`
}

// alarmMessage is one queued alarm.
type alarmMessage struct {
	seq     uint64 // order of Publish, so Run knows whether the head it sent is still queued
	topic   string
	payload []byte
	done    func(error)
}

// alarmOutbox publishes the scorer's alarm messages to MQTT over a connection it keeps up.
// Publish never blocks the scorer: it queues the message, at most capacity of them, and a
// full queue drops its oldest message (counted; the alarm log keeps every message). Run
// connects with backoff, publishes the queue one message at a time, in order, each once
// the previous one is acknowledged, and after a lost connection connects again and sends
// the unacknowledged message again (at least once: the broker may see it twice).
type alarmOutbox struct {
	pub      alarmPublisher
	log      *slog.Logger
	capacity int
	// backoff between connection attempts and between failed publishes
	backoffInitial, backoffMax time.Duration

	up         prometheus.Gauge
	connectErr prometheus.Counter
	queued     prometheus.Gauge
	published  prometheus.Counter
	dropped    prometheus.Counter

	wake chan struct{} // capacity 1: a message was queued or the connection was lost

	mu     sync.Mutex
	queue  []alarmMessage    // oldest first, at most capacity
	seq    uint64            // of the last message queued
	status AlarmOutputStatus // Status fills in Connected and Queued when asked
}

// newAlarmOutbox builds the publisher of c and the outbox around it (no I/O).
func newAlarmOutbox(c AlarmMQTTConfig, factory string, log *slog.Logger, reg prometheus.Registerer) (*alarmOutbox, error) {
	id := c.ClientID
	if id == "" {
		id = "millwright-alarms-" + factory
	}
	o, err := newOutbox(c.Server, c.Queue, log, reg)
	if err != nil {
		return nil, err
	}
	pub, err := mqtt.NewPublisher(mqtt.PublisherConfig{Server: c.Server, ClientID: id, Username: c.Username,
		Password: c.Password, TLS: c.TLS, QoS: byte(c.QoS), MaxInflight: 100, OnConnectionLost: o.lost})
	if err != nil {
		return nil, err
	}
	o.pub = pub
	return o, nil
}

// newOutbox returns an outbox of capacity messages for server, without its publisher.
func newOutbox(server string, capacity int, log *slog.Logger, reg prometheus.Registerer) (*alarmOutbox, error) {
	o := &alarmOutbox{log: log, capacity: max(capacity, 1), backoffInitial: time.Second, backoffMax: time.Minute,
		wake: make(chan struct{}, 1), status: AlarmOutputStatus{Server: server}}
	up, connectErrs, err := pipeline.ConnectionMetrics(reg)
	if err != nil {
		return nil, err
	}
	o.up, o.connectErr = up.WithLabelValues("alarms", "mqtt"), connectErrs.WithLabelValues("alarms", "mqtt")
	o.up.Set(0)
	var errs [3]error
	o.queued, errs[0] = metricreg.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "millwright_alarm_mqtt_queued_messages", Help: "Alarm messages waiting to be published to MQTT (at most models.mqtt.queue)."}))
	o.published, errs[1] = metricreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "millwright_alarm_mqtt_published_total", Help: "Alarm messages the MQTT broker acknowledged."}))
	o.dropped, errs[2] = metricreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "millwright_alarm_mqtt_dropped_total", Help: "Alarm messages not published to MQTT: the oldest when the queue was full, and those queued when the gateway stopped."}))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	return o, nil
}

// Publish queues an alarm message and returns at once (score.Publisher). done is called
// once from another goroutine: nil when the broker acknowledged it, or the error it was
// given up with.
func (o *alarmOutbox) Publish(_ context.Context, topic string, payload []byte, done func(error)) error {
	o.mu.Lock()
	var oldest *alarmMessage
	if len(o.queue) >= o.capacity {
		m := o.queue[0]
		oldest = &m
		o.pop()
		o.status.Dropped++
	}
	o.seq++
	o.queue = append(o.queue, alarmMessage{seq: o.seq, topic: topic, payload: payload, done: done})
	n := len(o.queue)
	o.mu.Unlock()
	o.queued.Set(float64(n))
	if oldest != nil {
		o.dropped.Inc()
		o.log.Warn("alarm queue full while the broker is unreachable; the oldest alarm is dropped", "topic", oldest.topic, "queue", o.capacity)
		settle(oldest.done, errAlarmDropped)
	}
	o.signal()
	return nil
}

// Status returns the output's state now.
func (o *alarmOutbox) Status() AlarmOutputStatus {
	up := o.pub.Connected() // outside o.mu: the publisher has its own lock
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.status
	st.Connected, st.Queued = up, len(o.queue)
	return st
}

// Run publishes the queued messages until ctx ends, connecting and reconnecting with
// backoff, then publishes what is still queued for up to alarmDrainTimeout while the
// connection is up, and drops (counts) the rest.
func (o *alarmOutbox) Run(ctx context.Context) error {
	bo := backoff.Backoff{Initial: o.backoffInitial, Max: o.backoffMax}
	for ctx.Err() == nil {
		if !o.pub.Connected() {
			o.setConnected(false)
			if !o.connect(ctx) {
				break
			}
			o.setConnected(true)
		}
		m, ok := o.head()
		if !ok {
			select {
			case <-o.wake:
			case <-ctx.Done():
			}
			continue
		}
		if err := o.send(ctx, m); err != nil {
			if ctx.Err() != nil {
				break
			}
			o.setError(err)
			if n := bo.Attempts() + 1; backoff.Logged(n) {
				o.log.Warn("cannot publish an alarm, retrying it", "topic", m.topic, "err", err, "attempt", n)
			}
			if !backoff.Sleep(ctx, bo.Next()) {
				break
			}
			continue
		}
		bo.Reset()
		o.sent(m)
	}
	o.drain()
	return nil
}

// connect connects with backoff until it succeeds or ctx ends, and reports whether it
// connected.
func (o *alarmOutbox) connect(ctx context.Context) bool {
	bo := backoff.Backoff{Initial: o.backoffInitial, Max: o.backoffMax}
	try := func(ctx context.Context) error {
		err := o.pub.Connect(ctx)
		if err != nil && o.pub.Connected() { // a Connect cut short by ctx may still have connected
			return nil
		}
		return err
	}
	if !backoff.Retry(ctx, &bo, o.log, "cannot connect the alarm output, retrying; alarms are queued meanwhile", try,
		func(err error) { o.connectErr.Inc(); o.setError(err) }) {
		return false
	}
	o.log.Info("alarm output connected", "server", o.status.Server, "attempts", bo.Attempts()+1, "queued", o.Status().Queued)
	return true
}

// send publishes m and waits for the broker's acknowledgement (or the publisher's error,
// such as a lost connection), at most alarmAckTimeout.
func (o *alarmOutbox) send(ctx context.Context, m alarmMessage) error {
	res := make(chan error, 1) // the callback never blocks, even after a timeout
	if err := o.pub.Publish(ctx, m.topic, m.payload, func(err error) { res <- err }); err != nil {
		return err
	}
	t := time.NewTimer(alarmAckTimeout)
	defer t.Stop()
	select {
	case err := <-res:
		return err
	case <-t.C:
		return errAlarmAck
	case <-ctx.Done():
		return ctx.Err()
	}
}

// drain publishes what is queued while the connection is up, for at most
// alarmDrainTimeout, and gives up the rest.
func (o *alarmOutbox) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), alarmDrainTimeout)
	defer cancel()
	for o.pub.Connected() {
		m, ok := o.head()
		if !ok {
			break
		}
		if err := o.send(ctx, m); err != nil {
			break
		}
		o.sent(m)
	}
	o.mu.Lock()
	left := o.queue
	o.queue = nil
	o.status.Dropped += uint64(len(left))
	o.mu.Unlock()
	o.queued.Set(0)
	if len(left) > 0 {
		o.dropped.Add(float64(len(left)))
		o.log.Warn("alarms not published to MQTT before the gateway stopped; they are in the alarm log", "alarms", len(left))
	}
	for _, m := range left {
		settle(m.done, errAlarmStopped)
	}
}

// close disconnects the publisher, once Run has returned.
func (o *alarmOutbox) close() { o.pub.Close() }

// lost is the publisher's connection-lost callback: it wakes Run to reconnect.
func (o *alarmOutbox) lost(err error) {
	o.setConnected(false)
	o.setError(err)
	o.log.Warn("alarm output connection lost; reconnecting, alarms are queued meanwhile", "err", err)
	o.signal()
}

func (o *alarmOutbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// head returns the oldest queued message.
func (o *alarmOutbox) head() (alarmMessage, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.queue) == 0 {
		return alarmMessage{}, false
	}
	return o.queue[0], true
}

// pop removes the head of the queue, with o.mu held. The slice moves on rather than
// copying the rest down (a queue of 1<<20 drained after an outage would copy it n
// times); the next append that outgrows it reallocates and frees the consumed prefix.
func (o *alarmOutbox) pop() {
	o.queue[0] = alarmMessage{} // the payload and callback can be collected
	o.queue = o.queue[1:]
}

// sent removes m, which the broker acknowledged, from the head of the queue and settles
// it. Only Run removes the head, but Publish may have dropped m meanwhile (the queue was
// full), and settled it already.
func (o *alarmOutbox) sent(m alarmMessage) {
	o.mu.Lock()
	o.status.Published++
	still := len(o.queue) > 0 && o.queue[0].seq == m.seq
	if still {
		o.pop()
	}
	n := len(o.queue)
	o.mu.Unlock()
	o.queued.Set(float64(n))
	o.published.Inc()
	if still {
		settle(m.done, nil)
	}
}

// setConnected sets connection_up{kind="alarms"}.
func (o *alarmOutbox) setConnected(up bool) {
	v := 0.0
	if up {
		v = 1
	}
	o.up.Set(v)
}

func (o *alarmOutbox) setError(err error) {
	o.mu.Lock()
	o.status.LastError = err.Error()
	o.mu.Unlock()
}

func settle(done func(error), err error) {
	if done != nil {
		done(err)
	}
}
