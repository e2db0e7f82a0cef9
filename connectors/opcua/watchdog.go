package opcua

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

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
// within three publishing intervals or a request timeout, whichever is longer, is stalled
// (gopcua's publish loop can stall right at the start). A server that never reports its
// clock again after the first value (it does not sample) leaves only the start covered.

// heartbeatHandle is the client handle of the heartbeat item; items' handles start at 1.
const heartbeatHandle = 0

// heartbeatNode is the server's clock.
var heartbeatNode = ua.NewNumericNodeID(0, id.Server_ServerStatus_CurrentTime)

// watchdog is a connection's publish watchdog state.
type watchdog struct {
	timeout    time.Duration
	first      time.Duration // for the first notification: a server sends first values at once
	expect     atomic.Bool   // an item (or the heartbeat) is monitored: first values are due
	last       atomic.Int64  // unix nanoseconds of the last notification handled, or of the start
	handled    atomic.Int64  // notifications handled
	heartbeats atomic.Int64  // heartbeat values received
}

// seen notes a notification handled now.
func (w *watchdog) seen(now time.Time) {
	w.last.Store(now.UnixNano())
	w.handled.Add(1)
}

// stalled says whether a subscription is stalled, with no queued notification waiting:
// not one notification for first since the start (when first values are due), or silent
// for timeout although the server samples the heartbeat.
func (w *watchdog) stalled(now time.Time, queued int) (bool, time.Duration) {
	silence := now.Sub(time.Unix(0, w.last.Load()))
	switch {
	case queued > 0:
		return false, silence // notifications wait for the consumer
	case w.handled.Load() == 0:
		return w.expect.Load() && silence >= w.first, silence
	case silence < w.timeout:
		return false, silence
	default:
		return w.heartbeats.Load() >= 2, silence
	}
}

// tick is how often the watchdog looks.
func (w *watchdog) tick() time.Duration { return min(w.first, w.timeout) / 3 }

// armWatchdog starts the watchdog's clock for a new subscription and adds the heartbeat
// item to it; watch then looks every tick.
func (c *connection) armWatchdog(ctx context.Context) error {
	s := c.src
	c.wd.timeout = s.cfg.Subscription.StallTimeout
	c.wd.last.Store(time.Now().UnixNano())
	if err := c.monitorHeartbeat(ctx); err != nil {
		return err
	}
	c.wd.first = min(c.wd.timeout, max(3*s.cfg.Subscription.PublishingInterval, s.cfg.RequestTimeout))
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
	if least := 3*revised + s.cfg.Subscription.PublishingInterval; c.wd.timeout < least {
		s.log.Info("the server samples its clock less often than a third of stall_timeout; the stall timeout is longer", "sampling", revised, "stall_timeout", least)
		c.wd.timeout = least
	}
	return nil
}

// watch ends the connection when its subscription has stalled.
func (c *connection) watch() bool {
	stalled, silence := c.wd.stalled(time.Now(), len(c.notifs))
	if !stalled {
		return true
	}
	c.src.m.stalls.Inc()
	c.src.log.Warn("subscription stalled: no publish response; reconnecting", "silent", silence.Round(time.Millisecond), "stall_timeout", c.wd.timeout)
	c.fail(fmt.Errorf("subscription stalled: no publish response for %s (subscription.stall_timeout %s, %s for the first values)",
		silence.Round(time.Millisecond), c.wd.timeout, c.wd.first))
	return false
}
