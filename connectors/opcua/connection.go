package opcua

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// item is one monitored (or polled) variable of a connection.
type item struct {
	handle      uint32
	nodeID      *ua.NodeID
	key         string // nodeID.String()
	path        string
	origin      string
	names       names
	arrays      string
	mon         Monitoring
	monitoredID uint32
}

// spec is an item wanted by the configuration, before it has a handle.
type spec struct {
	nodeID *ua.NodeID
	path   string
	origin string
	fixed  names
	arrays string
	mon    Monitoring
}

// connection is one session with its subscription (or poller) and items.
type connection struct {
	src    *Source
	client *opcua.Client
	sub    *opcua.Subscription
	notifs chan *opcua.PublishNotificationData
	polled chan []telemetry.Point
	ctx    context.Context // of the connection's goroutines
	cancel context.CancelFunc
	wg     sync.WaitGroup

	lost     chan struct{}
	lostOnce sync.Once
	lostErr  error

	wd watchdog // of the subscription

	// applyMu serialises changes of the item set (connect and rebrowse).
	applyMu sync.Mutex
	itemsMu sync.RWMutex
	items   map[uint32]*item // by client handle
	byKey   map[string]*item
	failed  map[string]ItemStatus // by node key or origin
	// nodeSpecs are the resolved nodes entries; rebrowse keeps them.
	nodeSpecs []spec

	// Owned by the goroutine that calls Read.
	buf     []telemetry.Point
	pending []telemetry.Point
	cv      conversion
}

func newConnection(s *Source, client *opcua.Client) *connection {
	ctx, cancel := context.WithCancel(context.Background())
	return &connection{
		src:    s,
		client: client,
		notifs: make(chan *opcua.PublishNotificationData, s.cfg.NotificationQueue),
		polled: make(chan []telemetry.Point, 1),
		ctx:    ctx,
		cancel: cancel,
		lost:   make(chan struct{}),
		items:  make(map[uint32]*item),
		byKey:  make(map[string]*item),
		failed: make(map[string]ItemStatus),
		cv:     conversion{maxArray: s.cfg.MaxArrayElements, names: s.names},
	}
}

// fail marks the connection lost; the next Read returns ErrNotConnected.
func (c *connection) fail(err error) {
	c.lostOnce.Do(func() {
		if c.ctx.Err() == nil { // not a Close
			c.src.m.connLost.Inc()
			c.src.log.Debug("connection lost", "err", err)
		}
		c.lostErr = err
		close(c.lost)
	})
}

func (c *connection) lostError() error {
	return fmt.Errorf("%w: %v", connectors.ErrNotConnected, c.lostErr)
}

// params are the parameters the source subscribes with (the connection's subscription,
// and the watchdog's resume).
func (s Subscription) params() *opcua.SubscriptionParameters {
	return &opcua.SubscriptionParameters{Interval: s.PublishingInterval, MaxNotificationsPerPublish: s.MaxNotificationsPerPublish,
		MaxKeepAliveCount: s.MaxKeepAliveCount, LifetimeCount: s.LifetimeCount}
}

// start resolves and browses the items, subscribes or starts polling, and starts the
// keep-alive and rebrowse goroutines.
func (c *connection) start(ctx context.Context) error {
	s := c.src
	specs, err := c.resolveNodes(ctx)
	if err != nil {
		return err
	}
	c.nodeSpecs = specs
	browsed, err := c.discoverAll(ctx)
	if err != nil {
		return err
	}
	if s.cfg.Mode == ModeSubscription {
		c.sub, err = c.client.Subscribe(ctx, s.cfg.Subscription.params(), c.notifs)
		if err != nil {
			return fmt.Errorf("create subscription: %w", err)
		}
		s.log.Debug("subscription created", "id", c.sub.SubscriptionID, "publishing_interval", c.sub.RevisedPublishingInterval,
			"max_keep_alive_count", c.sub.RevisedMaxKeepAliveCount, "lifetime_count", c.sub.RevisedLifetimeCount)
		if err := c.armWatchdog(ctx); err != nil {
			return err
		}
	}
	if err := c.apply(ctx, append(slices.Clip(specs), browsed...)); err != nil {
		return err
	}
	c.wg.Add(1)
	go c.every(s.cfg.KeepAlive, c.keepAlive)
	if s.cfg.Mode == ModeSubscription {
		c.wg.Add(1)
		go c.every(c.wd.tick(), c.watch)
	}
	if s.cfg.Mode == ModePolling {
		c.wg.Add(1)
		go c.poll()
	}
	if s.cfg.RebrowseInterval > 0 && len(s.cfg.Browse) > 0 {
		c.wg.Add(1)
		go c.every(s.cfg.RebrowseInterval, c.rebrowse)
	}
	return nil
}

// resolveNodes turns the nodes entries into specs; an unresolvable browse path is an item
// error, not a connection error.
func (c *connection) resolveNodes(ctx context.Context) ([]spec, error) {
	s := c.src
	var out []spec
	for i, n := range s.cfg.Nodes {
		sp := spec{
			origin: fmt.Sprintf("nodes[%d]", i),
			fixed:  names{n.Factory, n.Line, n.Machine, n.Signal},
			arrays: orDefault(n.Arrays, s.cfg.Arrays),
			mon:    n.Monitoring.inherit(s.cfg.Subscription.Monitoring),
		}
		if n.NodeID != "" {
			sp.nodeID, _ = ua.ParseNodeID(n.NodeID) // valid: checked by Validate
			sp.path = n.NodeID
		} else {
			b, err := resolvePath(ctx, c.client, s.nodePaths[i])
			var pe *pathError
			switch {
			case errors.As(err, &pe):
				c.itemFailed(n.BrowsePath, sp.origin, n.BrowsePath, itemErrPath, err)
				continue
			case err != nil:
				return nil, fmt.Errorf("%s: resolve browse path %q: %w", sp.origin, n.BrowsePath, err)
			}
			sp.nodeID, sp.path = b.nodeID, b.path
		}
		out = append(out, sp)
	}
	return out, nil
}

// discoverAll browses every root.
func (c *connection) discoverAll(ctx context.Context) ([]spec, error) {
	s := c.src
	var out []spec
	for i, b := range s.cfg.Browse {
		origin := fmt.Sprintf("browse[%d]", i)
		found, over, err := discover(ctx, c.client, b, s.include[i], s.exclude[i])
		var be *browseError
		if root, _ := ua.ParseNodeID(b.Root); errors.As(err, &be) && nodeUnknown(be.code) && root != nil && be.node.String() == root.String() {
			// A root the server does not know is an item error; the other roots keep working.
			c.itemFailed(b.Root, origin, b.Root, itemErrNodeUnknown, fmt.Errorf("%s: root: %w", origin, err))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", origin, err)
		}
		c.itemsMu.Lock()
		delete(c.failed, b.Root) // the root is known (again)
		c.itemsMu.Unlock()
		if over > 0 {
			s.m.drops.WithLabelValues(dropBrowseLimit).Add(float64(over))
			s.log.Warn("browse found more items than max_items; the rest are not monitored", "origin", fmt.Sprintf("browse[%d]", i), "max_items", b.MaxItems, "over", over)
		}
		mon := b.Monitoring.inherit(s.cfg.Subscription.Monitoring)
		arrays := orDefault(b.Arrays, s.cfg.Arrays)
		for _, f := range found {
			out = append(out, spec{nodeID: f.nodeID, path: f.path, origin: fmt.Sprintf("browse[%d]", i), arrays: arrays, mon: mon})
		}
	}
	s.m.browses.Inc()
	return out, nil
}

// apply makes the item set equal to specs (the first spec of a node wins): it adds the new
// ones and removes those no longer wanted, without duplicating any.
func (c *connection) apply(ctx context.Context, specs []spec) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	s := c.src
	want := make(map[string]bool, len(specs))
	var add []*item
	for _, sp := range specs {
		key := sp.nodeID.String()
		if want[key] {
			continue
		}
		want[key] = true
		c.itemsMu.RLock()
		_, have := c.byKey[key]
		c.itemsMu.RUnlock()
		if have {
			continue
		}
		nm, err := s.mapper.resolve(sp.path, sp.fixed)
		if err != nil {
			c.itemFailed(key, sp.origin, sp.path, itemErrMapping, err)
			continue
		}
		nm = names{s.names.String(nm.factory), s.names.String(nm.line), s.names.String(nm.machine), s.names.String(nm.signal)}
		add = append(add, &item{
			handle: s.nextHandle.Add(1), nodeID: sp.nodeID, key: key, path: sp.path, origin: sp.origin,
			names: nm, arrays: sp.arrays, mon: sp.mon,
		})
	}
	var remove []*item
	c.itemsMu.RLock()
	for k, it := range c.byKey {
		if !want[k] {
			remove = append(remove, it)
		}
	}
	c.itemsMu.RUnlock()

	if c.sub != nil {
		if err := c.monitor(ctx, add); err != nil {
			return err
		}
		if err := c.unmonitor(ctx, remove); err != nil {
			return err
		}
	} else {
		c.itemsMu.Lock()
		for _, it := range add {
			c.items[it.handle], c.byKey[it.key] = it, it
		}
		c.itemsMu.Unlock()
	}
	c.forget(remove)
	if len(add) > 0 || len(remove) > 0 {
		s.log.Debug("items changed", "added", len(add), "removed", len(remove))
	}
	c.gauge()
	return nil
}

func (c *connection) gauge() {
	c.itemsMu.RLock()
	ok, bad := len(c.items), len(c.failed)
	c.itemsMu.RUnlock()
	c.src.m.items.WithLabelValues("ok").Set(float64(ok))
	c.src.m.items.WithLabelValues("error").Set(float64(bad))
}

// monitor creates the monitored items; those the server refuses become item errors.
// The items are known by their handles before the request goes out: a server may send an
// item's first value before its CreateMonitoredItems response, and for a value that never
// changes that first notification is the only one.
func (c *connection) monitor(ctx context.Context, add []*item) error {
	for chunk := range slices.Chunk(add, monitorChunk) {
		reqs := make([]*ua.MonitoredItemCreateRequest, len(chunk))
		c.itemsMu.Lock()
		for i, it := range chunk {
			reqs[i] = monitorRequest(it)
			c.items[it.handle], c.byKey[it.key] = it, it
		}
		c.itemsMu.Unlock()
		res, err := c.sub.Monitor(ctx, ua.TimestampsToReturnBoth, reqs...)
		if err == nil && len(res.Results) != len(chunk) {
			err = fmt.Errorf("%d results for %d items", len(res.Results), len(chunk))
		}
		if err != nil {
			c.forget(chunk)
			return fmt.Errorf("create monitored items: %w", err)
		}
		for i, r := range res.Results {
			it := chunk[i]
			if r.StatusCode != ua.StatusOK {
				// itemFailed takes it out of the item set.
				c.itemFailed(it.key, it.origin, it.path, statusClass(r.StatusCode), fmt.Errorf("monitor %s: %w", it.key, r.StatusCode))
				continue
			}
			c.itemsMu.Lock()
			it.monitoredID = r.MonitoredItemID
			delete(c.failed, it.key)
			c.itemsMu.Unlock()
			c.wd.expect.Store(true)
		}
	}
	return nil
}

// forget removes items from the item set.
func (c *connection) forget(items []*item) {
	c.itemsMu.Lock()
	defer c.itemsMu.Unlock()
	for _, it := range items {
		delete(c.items, it.handle)
		delete(c.byKey, it.key)
	}
}

func (c *connection) unmonitor(ctx context.Context, remove []*item) error {
	ids := make([]uint32, 0, len(remove))
	for _, it := range remove {
		if it.monitoredID != 0 {
			ids = append(ids, it.monitoredID)
		}
	}
	for chunk := range slices.Chunk(ids, monitorChunk) {
		if _, err := c.sub.Unmonitor(ctx, chunk...); err != nil {
			return fmt.Errorf("delete monitored items: %w", err)
		}
	}
	return nil
}

func nodeUnknown(code ua.StatusCode) bool {
	return code == ua.StatusBadNodeIDUnknown || code == ua.StatusBadNodeIDInvalid
}

func statusClass(code ua.StatusCode) string {
	switch code {
	case ua.StatusBadNodeIDUnknown, ua.StatusBadNodeIDInvalid:
		return itemErrNodeUnknown
	}
	return itemErrMonitor
}

// monitorRequest builds the CreateMonitoredItems request of an item.
func monitorRequest(it *item) *ua.MonitoredItemCreateRequest {
	m := it.mon
	sampling := -1.0 // the publishing interval
	if m.SamplingInterval > 0 {
		sampling = float64(m.SamplingInterval) / float64(time.Millisecond)
	}
	params := &ua.MonitoringParameters{
		ClientHandle:     it.handle,
		SamplingInterval: sampling,
		QueueSize:        m.QueueSize,
		DiscardOldest:    m.DiscardOldest == nil || *m.DiscardOldest,
	}
	if m.Trigger != TriggerStatusValue || m.Deadband != DeadbandNone && m.Deadband != "" {
		params.Filter = ua.NewExtensionObject(dataChangeFilter(m))
	}
	return &ua.MonitoredItemCreateRequest{
		ItemToMonitor:       &ua.ReadValueID{NodeID: it.nodeID, AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}},
		MonitoringMode:      ua.MonitoringModeReporting,
		RequestedParameters: params,
	}
}

func dataChangeFilter(m Monitoring) *ua.DataChangeFilter {
	f := &ua.DataChangeFilter{Trigger: ua.DataChangeTriggerStatusValue, DeadbandType: uint32(ua.DeadbandTypeNone)}
	switch m.Trigger {
	case TriggerStatus:
		f.Trigger = ua.DataChangeTriggerStatus
	case TriggerStatusValueTimestamp:
		f.Trigger = ua.DataChangeTriggerStatusValueTimestamp
	}
	switch m.Deadband {
	case DeadbandAbsolute:
		f.DeadbandType, f.DeadbandValue = uint32(ua.DeadbandTypeAbsolute), m.DeadbandValue
	case DeadbandPercent:
		f.DeadbandType, f.DeadbandValue = uint32(ua.DeadbandTypePercent), m.DeadbandValue
	}
	return f
}

// itemFailed records an item error (and forgets the item if it was there).
func (c *connection) itemFailed(key, origin, path, class string, err error) {
	c.itemsMu.Lock()
	if it, ok := c.byKey[key]; ok {
		delete(c.byKey, key)
		delete(c.items, it.handle)
	}
	c.failed[key] = ItemStatus{Origin: origin, NodeID: key, Path: path, Class: class, Err: err.Error()}
	c.itemsMu.Unlock()
	c.src.noteItemError(key, origin, class, err)
	c.gauge()
}

func (c *connection) statuses() []ItemStatus {
	c.itemsMu.RLock()
	out := make([]ItemStatus, 0, len(c.items)+len(c.failed))
	for _, it := range c.items {
		out = append(out, ItemStatus{Origin: it.origin, NodeID: it.key, Path: it.path, Machine: it.names.machine, Signal: it.names.signal})
	}
	for _, st := range c.failed {
		out = append(out, st)
	}
	c.itemsMu.RUnlock()
	slices.SortFunc(out, func(a, b ItemStatus) int {
		if a.Origin != b.Origin {
			return compareOrigin(a.Origin, b.Origin)
		}
		if a.Path < b.Path {
			return -1
		}
		if a.Path > b.Path {
			return 1
		}
		return 0
	})
	return out
}

func compareOrigin(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	if a < b {
		return -1
	}
	return 1
}

// fill waits for the next notification or poll cycle and converts it into pending points,
// then takes what else has arrived without waiting, up to max_batch_points.
func (c *connection) fill(ctx context.Context) error {
	// Data already received goes out before a lost connection is reported.
	select {
	case n := <-c.notifs:
		c.handle(n)
	case pts := <-c.polled:
		c.pending = append(c.pending, pts...)
	default:
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.lost:
			return c.lostError()
		case n := <-c.notifs:
			c.handle(n)
		case pts := <-c.polled:
			c.pending = append(c.pending, pts...)
		}
	}
	for len(c.pending) < c.src.cfg.MaxBatchPoints {
		select {
		case n := <-c.notifs:
			c.handle(n)
		case pts := <-c.polled:
			c.pending = append(c.pending, pts...)
		default:
			return nil
		}
	}
	return nil
}

// take drops the first n pending points.
func (c *connection) take(n int) {
	c.pending = c.pending[n:]
	if len(c.pending) == 0 {
		c.pending = c.buf[:0]
	}
}

// handle converts one publish notification into pending points.
func (c *connection) handle(n *opcua.PublishNotificationData) {
	s := c.src
	if n == nil {
		return
	}
	if n.Error != nil {
		c.fail(fmt.Errorf("subscription: %w", n.Error))
		return
	}
	c.wd.seen(time.Now())
	switch v := n.Value.(type) {
	case *ua.DataChangeNotification:
		s.m.notifications.Inc()
		if c.pending == nil {
			c.pending = c.buf[:0]
		}
		c.pending = c.convert(c.pending, v, time.Now().UnixNano())
		if cap(c.pending) > cap(c.buf) {
			c.buf = c.pending[:0]
		}
	case *ua.StatusChangeNotification:
		c.fail(fmt.Errorf("subscription status changed: %w", v.Status))
	case *ua.EventNotificationList:
		// Events are not subscribed to; nothing to do.
	}
}

// convert appends the points of a data change notification to dst.
func (c *connection) convert(dst []telemetry.Point, n *ua.DataChangeNotification, now int64) []telemetry.Point {
	s := c.src
	cv := &c.cv
	cv.now = now
	clear(cv.drops)
	cv.overflow = 0
	unknown, values := 0, 0
	var gone []*item
	c.itemsMu.RLock()
	for _, mi := range n.MonitoredItems {
		if mi == nil {
			continue
		}
		if mi.ClientHandle == heartbeatHandle {
			c.wd.heartbeats.Add(1)
			continue
		}
		values++
		it := c.items[mi.ClientHandle]
		if it == nil {
			unknown++ // removed by a rebrowse after the server sampled it
			continue
		}
		if mi.Value != nil && nodeUnknown(mi.Value.Status) {
			// Some servers accept the monitored item and report the error as its value.
			gone = append(gone, it)
			continue
		}
		dst = cv.appendValue(dst, it, mi.Value)
	}
	c.itemsMu.RUnlock()
	for _, it := range gone {
		c.itemFailed(it.key, it.origin, it.path, itemErrNodeUnknown, fmt.Errorf("monitor %s: %w", it.key, ua.StatusBadNodeIDUnknown))
	}
	s.m.values.Add(float64(values))
	c.count(unknown)
	return dst
}

func (c *connection) count(unknown int) {
	if unknown > 0 {
		c.src.m.drops.WithLabelValues(dropUnknownItem).Add(float64(unknown))
	}
	c.countConv(&c.cv)
}

// every calls tick every d until the connection ends or tick returns false. The caller
// has added the goroutine to c.wg.
func (c *connection) every(d time.Duration, tick func() bool) {
	defer c.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.lost:
			return
		case <-t.C:
		}
		if !tick() {
			return
		}
	}
}

// keepAlive reads the server's state; a failure ends the connection.
func (c *connection) keepAlive() bool {
	s := c.src
	if st := c.client.State(); st != opcua.Connected {
		c.fail(fmt.Errorf("client state %v", st))
		return false
	}
	rctx, cancel := context.WithTimeout(c.ctx, s.cfg.RequestTimeout)
	res, err := c.client.Read(rctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: keepAliveNode, AttributeID: ua.AttributeIDValue}}})
	cancel()
	if c.ctx.Err() != nil {
		return false
	}
	if err == nil && (len(res.Results) != 1 || res.Results[0].Status != ua.StatusOK) {
		err = errors.New("no server state in the answer")
	}
	if err != nil {
		c.fail(fmt.Errorf("keep-alive read: %w", err))
		return false
	}
	return true
}

// rebrowse runs discovery and applies the result; a failure keeps the current items.
func (c *connection) rebrowse() bool {
	s := c.src
	ctx, cancel := context.WithTimeout(c.ctx, s.cfg.ConnectTimeout)
	defer cancel()
	specs, err := c.discoverAll(ctx)
	if err == nil {
		err = c.apply(ctx, append(slices.Clip(c.nodeSpecs), specs...))
	}
	if err != nil && c.ctx.Err() == nil {
		s.log.Warn("rebrowse failed; keeping the current items", "err", err)
	}
	return true
}

// poll reads every item each polling interval and hands the points to Read.
func (c *connection) poll() {
	defer c.wg.Done()
	s := c.src
	interval := s.cfg.Polling.Interval
	t := time.NewTicker(interval)
	defer t.Stop()
	cv := conversion{maxArray: s.cfg.MaxArrayElements, names: s.names}
	for {
		start := time.Now()
		// The points of the requests that succeeded go out even when a later one failed.
		pts, err := c.pollOnce(&cv)
		if !c.handOver(pts) {
			return
		}
		if err != nil {
			if c.ctx.Err() == nil {
				c.fail(fmt.Errorf("poll: %w", err))
			}
			return
		}
		if skipped := int(time.Since(start)/interval) - 1; skipped > 0 {
			s.m.drops.WithLabelValues(dropPollSkipped).Add(float64(skipped))
		}
		select {
		case <-c.ctx.Done():
			return
		case <-c.lost:
			return
		case <-t.C:
		}
	}
}

// handOver gives the points of a poll cycle to Read. Read takes them even after the
// connection was lost (data received goes out first), so it waits until Close; the points
// it then still holds are counted lost. It reports whether the connection goes on.
func (c *connection) handOver(pts []telemetry.Point) bool {
	if len(pts) == 0 {
		return c.ctx.Err() == nil
	}
	select {
	case c.polled <- pts:
		return true
	case <-c.ctx.Done():
		c.src.m.lost.Add(float64(len(pts)))
		return false
	}
}

// pollOnce reads every item once, max_nodes_per_read at a time. When a request fails it
// returns the points of those before it with the error.
func (c *connection) pollOnce(cv *conversion) (pts []telemetry.Point, err error) {
	s := c.src
	c.itemsMu.RLock()
	items := make([]*item, 0, len(c.items))
	for _, it := range c.items {
		items = append(items, it)
	}
	c.itemsMu.RUnlock()
	slices.SortFunc(items, func(a, b *item) int { return int(a.handle) - int(b.handle) })
	clear(cv.drops)
	cv.overflow = 0
	defer c.countConv(cv)
	for chunk := range slices.Chunk(items, s.cfg.Polling.MaxNodesPerRead) {
		req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth, NodesToRead: make([]*ua.ReadValueID, len(chunk))}
		for i, it := range chunk {
			req.NodesToRead[i] = &ua.ReadValueID{NodeID: it.nodeID, AttributeID: ua.AttributeIDValue}
		}
		ctx, cancel := context.WithTimeout(c.ctx, s.cfg.RequestTimeout)
		res, err := c.client.Read(ctx, req)
		cancel()
		if err != nil {
			return pts, err
		}
		if len(res.Results) != len(chunk) {
			return pts, fmt.Errorf("read: %d results for %d nodes", len(res.Results), len(chunk))
		}
		cv.now = time.Now().UnixNano()
		for i, dv := range res.Results {
			it := chunk[i]
			if dv != nil && nodeUnknown(dv.Status) {
				c.itemFailed(it.key, it.origin, it.path, itemErrNodeUnknown, fmt.Errorf("read %s: %w", it.key, dv.Status))
				continue
			}
			pts = cv.appendValue(pts, it, dv)
		}
		s.m.values.Add(float64(len(chunk)))
	}
	s.m.notifications.Inc()
	return pts, nil
}

func (c *connection) countConv(cv *conversion) {
	s := c.src
	if cv.overflow > 0 {
		s.m.overflows.Add(float64(cv.overflow))
	}
	for r, k := range cv.drops {
		if k > 0 {
			s.m.drops.WithLabelValues(r).Add(float64(k))
		}
	}
}

// discard empties the queues of notifications and poll cycles that Read has not taken,
// after shutdown, and returns how many points they held.
func (c *connection) discard() int {
	n := 0
	var scratch []telemetry.Point
	for {
		select {
		case nd := <-c.notifs:
			if nd == nil || nd.Error != nil {
				continue
			}
			if v, ok := nd.Value.(*ua.DataChangeNotification); ok {
				scratch = c.convert(scratch[:0], v, time.Now().UnixNano())
				n += len(scratch)
			}
		case pts := <-c.polled:
			n += len(pts)
		default:
			return n
		}
	}
}

// shutdown stops the goroutines, deletes the subscription and closes the session.
func (c *connection) shutdown(ctx context.Context) {
	c.cancel()
	c.fail(errors.New("closed"))
	if c.sub != nil {
		cctx, cancel := context.WithTimeout(ctx, c.src.cfg.RequestTimeout)
		_ = c.sub.Cancel(cctx)
		cancel()
	}
	_ = c.client.Close(ctx)
	c.wg.Wait()
}
