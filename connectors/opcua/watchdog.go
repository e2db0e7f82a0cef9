package opcua

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

// The publish watchdog. A subscription delivers nothing when the client stops sending
// publish requests or the server stops answering them, and neither is an error anywhere:
// gopcua's publish loop can stay paused for good (a resume lost to a pause, or any error
// of a publish request when the client does not reconnect by itself), and a server can
// drop a subscription while the session lives on, so the keep-alive reads still succeed.
// The source would then read nothing, silently, for as long as the gateway runs.
//
// So the source also monitors the server's clock (Server/ServerStatus/CurrentTime), which
// a server samples like any other value and which changes at every sample: a subscription
// that works delivers it at least every third of subscription.stall_timeout. A subscription
// silent for stall_timeout, with no notification waiting for the consumer, ends the
// connection (counted in millwright_opcua_subscription_stalls_total), and the pipeline
// reconnects. At the start the watchdog waits less: every server sends each monitored
// item's first value at its next publishing cycle, so a subscription that delivers nothing
// within three publishing intervals or a request timeout, whichever is longer, is stalled.
//
// gopcua's publish loop can stall right at the start: the client queues a pause when it is
// created, and Subscribe signals a resume; a loop that starts late finds both and may take
// the resume first, then pause for good (4 starts in 210 of a client that subscribes right
// after connecting to the simulator; 1 in 900 through the source, which browses first). So
// a subscription that has delivered nothing after three publishing intervals (at least a
// second) is first resumed: the source creates and deletes a second subscription, whose
// creation signals a resume that the paused loop takes (counted in
// millwright_opcua_publish_resumes_total). Only if that does not help either does the
// first-values deadline end the connection.
//
// Silence alone is not enough once the clock has arrived only once: a server that does not
// sample its clock reports it once, and values that never change are never reported again.
// So a subscription silent for stall_timeout before the clock has shown that the server
// samples it is asked after: the source sends SetPublishingMode (enabled, as it is) for
// the subscription, which a server answers BadSubscriptionIdInvalid once it has dropped
// it. Any other answer keeps the connection, and a server that does not support the
// service (gopcua's own) is not asked again; the keep-alive read covers a lost session.

// heartbeatHandle is the client handle of the heartbeat item; items' handles start at 1.
const heartbeatHandle = 0

// heartbeatNode is the server's clock.
var heartbeatNode = ua.NewNumericNodeID(0, id.Server_ServerStatus_CurrentTime)

// watchdog is a connection's publish watchdog state.
type watchdog struct {
	interval   time.Duration // the publishing interval: the longer of the asked and the revised one
	timeout    time.Duration
	first      time.Duration // for the first notification: a server sends first values at once
	resume     time.Duration // silence at the start after which the publish loop is resumed (0: never)
	resumed    atomic.Bool   // the publish loop was resumed (once at most)
	expect     atomic.Bool   // an item (or the heartbeat) is monitored: first values are due
	last       atomic.Int64  // unix nanoseconds of the last notification handled, or of the start
	handled    atomic.Int64  // notifications handled
	heartbeats atomic.Int64  // heartbeat values received
	unasked    bool          // the server does not support SetPublishingMode (the watch goroutine's)
}

// seen notes a notification handled now.
func (w *watchdog) seen(now time.Time) {
	w.last.Store(now.UnixNano())
	w.handled.Add(1)
}

// A watchdog's verdict on a subscription.
type verdict int

const (
	live    verdict = iota
	stalled         // silent for too long
	unsure          // silent for timeout, and the heartbeat has not shown the server samples it
	late            // no first values after resume: the publish loop may be paused
)

// check judges a subscription, given how many notifications wait for the consumer
// (queued): stalled when not one notification arrived for first since the start (when
// first values are due), or when it is silent for timeout although the server samples the
// heartbeat; unsure when it is silent for timeout and the heartbeat has arrived once at
// most; late when not one notification arrived for resume since the start, the first time.
// It also returns how long the subscription has been silent.
func (w *watchdog) check(now time.Time, queued int) (verdict, time.Duration) {
	silence := now.Sub(time.Unix(0, w.last.Load()))
	switch {
	case queued > 0:
		return live, silence // notifications wait for the consumer
	case w.handled.Load() == 0:
		switch {
		case !w.expect.Load():
			return live, silence
		case silence >= w.first:
			return stalled, silence
		case w.resume > 0 && !w.resumed.Load() && silence >= w.resume:
			return late, silence
		}
		return live, silence
	case silence < w.timeout:
		return live, silence
	case w.heartbeats.Load() >= 2:
		return stalled, silence
	default:
		return unsure, silence
	}
}

// tick is how often the watchdog looks.
func (w *watchdog) tick() time.Duration {
	t := min(w.first, w.timeout)
	if w.resume > 0 {
		t = min(t, w.resume)
	}
	return t / 3
}

// armWatchdog starts the watchdog's clock for a new subscription and adds the heartbeat
// item to it; watch then looks every tick.
func (c *connection) armWatchdog(ctx context.Context) error {
	s := c.src
	// The server publishes at the revised interval, which may be longer than the one asked
	// for (Part 4, 5.13.2): the deadlines count in it.
	c.wd.interval = max(s.cfg.Subscription.PublishingInterval, c.sub.RevisedPublishingInterval)
	c.wd.timeout = s.cfg.Subscription.StallTimeout
	if least := 3 * c.wd.interval; c.wd.timeout < least {
		s.log.Info("the server publishes less often than a third of stall_timeout; the stall timeout is longer", "publishing_interval", c.wd.interval, "stall_timeout", least)
		c.wd.timeout = least
	}
	c.wd.last.Store(time.Now().UnixNano())
	if err := c.monitorHeartbeat(ctx); err != nil {
		return err
	}
	c.wd.first = min(c.wd.timeout, max(3*c.wd.interval, s.cfg.RequestTimeout))
	if r := max(3*c.wd.interval, time.Second); r < c.wd.first {
		c.wd.resume = r
	}
	return nil
}

// monitorHeartbeat adds the heartbeat item to the subscription. A server that refuses it
// leaves the watchdog the start only.
func (c *connection) monitorHeartbeat(ctx context.Context) error {
	s := c.src
	res, err := c.sub.Monitor(ctx, ua.TimestampsToReturnNeither, &ua.MonitoredItemCreateRequest{
		ItemToMonitor:  &ua.ReadValueID{NodeID: heartbeatNode, AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}},
		MonitoringMode: ua.MonitoringModeReporting,
		RequestedParameters: &ua.MonitoringParameters{
			ClientHandle:     heartbeatHandle,
			SamplingInterval: float64(c.wd.timeout/3) / float64(time.Millisecond),
			QueueSize:        1,
			DiscardOldest:    true,
			Filter:           ua.NewExtensionObject(nil),
		},
	})
	if err != nil {
		return fmt.Errorf("monitor the server's clock (the stall watchdog's heartbeat): %w", err)
	}
	if len(res.Results) != 1 || res.Results[0].StatusCode != ua.StatusOK {
		code := ua.StatusBad
		if len(res.Results) == 1 {
			code = res.Results[0].StatusCode
		}
		s.log.Warn("the server does not let the source monitor its clock; a stalled subscription is detected at its start only", "node", heartbeatNode.String(), "status", code)
		return nil
	}
	c.wd.expect.Store(true)
	// A server may sample its clock less often than asked (node-opcua: once a second).
	revised := time.Duration(res.Results[0].RevisedSamplingInterval * float64(time.Millisecond))
	if least := 3*revised + c.wd.interval; c.wd.timeout < least {
		s.log.Info("the server samples its clock less often than a third of stall_timeout; the stall timeout is longer", "sampling", revised, "stall_timeout", least)
		c.wd.timeout = least
	}
	return nil
}

// watch ends the connection when its subscription has stalled.
func (c *connection) watch() bool {
	now := time.Now()
	v, silence := c.wd.check(now, len(c.notifs))
	var why string // what the server said, when asked
	switch {
	case v == stalled:
	case v == late:
		c.wd.resumed.Store(true)
		c.src.m.resumes.Inc()
		c.src.log.Info("no values since the subscription started; resuming the client's publish loop", "silent", silence.Round(time.Millisecond))
		if err := c.resumePublishing(); err != nil {
			c.src.log.Debug("could not resume the publish loop", "err", err)
		}
		return true
	case v == unsure && !c.wd.unasked:
		switch dropped, err := c.dropped(c.sub.SubscriptionID); {
		case err != nil:
			c.src.log.Debug("could not ask the server whether it still has the subscription", "err", err)
			return true
		case !dropped:
			c.wd.last.Store(now.UnixNano()) // the server has it: count the silence from now
			return true
		}
		why = ", and the server no longer has the subscription"
	default:
		return true
	}
	c.src.m.stalls.Inc()
	c.src.log.Warn("subscription stalled: no publish response; reconnecting", "silent", silence.Round(time.Millisecond), "dropped", why != "", "stall_timeout", c.wd.timeout)
	c.fail(fmt.Errorf("subscription stalled: no publish response for %s%s (subscription.stall_timeout %s, %s for the first values)",
		silence.Round(time.Millisecond), why, c.wd.timeout, c.wd.first))
	return false
}

// resumePublishing restarts gopcua's publish loop if it is paused: it creates a second
// subscription, whose creation signals the loop to resume, and deletes it at once. A loop
// that runs ignores the signal. The subscription has the connection's parameters, its
// lifetime too, so one the deletion misses does not hold a server slot for long.
func (c *connection) resumePublishing() error {
	ctx, cancel := context.WithTimeout(c.ctx, c.src.cfg.RequestTimeout)
	defer cancel()
	sub, err := c.client.Subscribe(ctx, c.src.cfg.Subscription.params(), make(chan *opcua.PublishNotificationData, 1))
	if err != nil {
		return fmt.Errorf("create a subscription: %w", err)
	}
	if err := sub.Cancel(ctx); err != nil {
		return fmt.Errorf("delete subscription %d: %w", sub.SubscriptionID, err)
	}
	return nil
}

// dropped asks the server whether it has dropped subscription id: it sets the
// subscription's publishing mode to enabled, as it is, which the server answers
// BadSubscriptionIdInvalid for a subscription it does not have. A server without the
// service is not asked again (c.wd.unasked).
func (c *connection) dropped(id uint32) (bool, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.src.cfg.RequestTimeout)
	defer cancel()
	var res *ua.SetPublishingModeResponse
	err := c.client.Send(ctx, &ua.SetPublishingModeRequest{PublishingEnabled: true, SubscriptionIDs: []uint32{id}}, func(r ua.Response) error {
		var ok bool
		if res, ok = r.(*ua.SetPublishingModeResponse); !ok {
			return fmt.Errorf("SetPublishingMode answered with %T", r)
		}
		return nil
	})
	if errors.Is(err, ua.StatusBadServiceUnsupported) {
		c.wd.unasked = true
		c.src.log.Info("the server does not support SetPublishingMode; a subscription it drops is detected by its clock only", "err", err)
		return false, err
	}
	if err != nil {
		return false, fmt.Errorf("SetPublishingMode: %w", err)
	}
	if len(res.Results) != 1 {
		return false, fmt.Errorf("SetPublishingMode: %d results for 1 subscription", len(res.Results))
	}
	return res.Results[0] == ua.StatusBadSubscriptionIDInvalid, nil
}
