package sparkplug

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// Sparkplug B topic namespace and names.
const (
	namespace      = "spBv1.0"
	stateGroup     = "STATE"
	bdSeqMetric    = "bdSeq"
	rebirthMetric  = "Node Control/Rebirth"
	internedNames  = 100_000
	rebirthBacklog = 256
)

// Dead-letter classes of the host.
const (
	classTopic    = "sparkplug_topic"
	classProtobuf = "sparkplug_protobuf"
)

// rebirthRequest asks an edge node to publish its births again.
type rebirthRequest struct {
	group, edgeNode string
}

// nodeKey identifies an edge node. Its strings may be substrings of a topic while looking
// up; stored keys are interned.
type nodeKey struct {
	group, edgeNode string
}

// metricDef is a metric defined by a birth.
type metricDef struct {
	datatype  uint32
	excluded  bool
	transient bool // the birth says is_transient: not stored, as excluded
	names     pointNames
	last      telemetry.Value // the last current (not historical) value
	hasLast   bool
}

// scope is the metric table of an edge node or one of its devices.
type scope struct {
	born bool
	// full is set when max_metrics_per_node kept metrics of the birth out of the table: an
	// unknown alias is then taken for one of them, which a rebirth would keep out again.
	full    bool
	byAlias map[uint64]*metricDef
	byName  map[string]*metricDef
}

func (s *scope) reset() {
	s.full = false
	s.byAlias = make(map[uint64]*metricDef)
	s.byName = make(map[string]*metricDef)
}

// edgeNode is what the host knows of one edge node.
type edgeNode struct {
	key         nodeKey
	node        scope
	devices     map[string]*scope
	bdSeq       uint64
	hasBdSeq    bool
	seq         uint8 // of the last message
	defined     int   // metric definitions of the node and its devices
	lastRebirth time.Time
	rebirthSent bool
	// lastData is the latest source time of the current values of the node and its devices
	// (Unix ns): the least time of the points that mark them stale.
	lastData int64
	// unborn is the node's element in host.unborn while its node scope is not born.
	unborn *list.Element
}

// lostNode holds the metric tables of an edge node that was born when the host's connection
// to the broker ended, until Read has returned their stale points.
type lostNode struct {
	scopes []*scope // the node's and its born devices'
	at     int64    // source time of the stale points, Unix ns
}

// host is the Sparkplug B host application's state machine: it turns the messages of the
// spBv1.0 namespace into points and asks edge nodes for rebirths. It implements
// mqtt.Handler. The MQTT source calls it from one goroutine at a time; mu orders the calls
// of successive connections.
type host struct {
	mu     sync.Mutex
	cfg    Config
	mapper *mapper
	names  *telemetry.Interner
	m      *metrics
	nodes  map[nodeKey]*edgeNode
	// unborn lists the nodes that are not born (never, or dead), the longest unborn or
	// least recently asked for a rebirth first: the first is the one a new node replaces
	// when max_nodes are tracked.
	unborn *list.List
	// lost are the tables of the nodes born when the connection ended, whose stale points
	// Read returns before anything of the new connection; at most max_nodes, the oldest
	// dropped and counted.
	lost []lostNode
	// anyLost is len(lost) > 0, set with mu held, so that Read skips takeStale without
	// taking mu (which the message handler holds) or reading the clock.
	anyLost  atomic.Bool
	rebirths chan rebirthRequest // to the publisher; bounded, overflow counted
	// offline is signalled when the broker delivers an offline STATE of this host (a will
	// of an earlier connection, or another client's): the host publishes its online STATE
	// again.
	offline chan struct{}
	now     func() time.Time
	msgs    map[string]prometheus.Counter // by message type, resolved once
	payload Payload
	metric  Metric
	sb      strings.Builder
}

var _ mqtt.Handler = (*host)(nil)

func newHost(cfg Config, m *metrics) (*host, error) {
	mp, err := newMapper(cfg.Map)
	if err != nil {
		return nil, err
	}
	msgs := make(map[string]prometheus.Counter)
	for _, t := range []string{NBirth, NData, NDeath, DBirth, DData, DDeath, NCmd, DCmd, stateGroup, "other"} {
		msgs[t] = m.messages.WithLabelValues(strings.ToLower(t))
	}
	return &host{
		msgs:     msgs,
		cfg:      cfg,
		mapper:   mp,
		names:    telemetry.NewInterner(internedNames),
		m:        m,
		nodes:    make(map[nodeKey]*edgeNode),
		unborn:   list.New(),
		rebirths: make(chan rebirthRequest, rebirthBacklog),
		offline:  make(chan struct{}, 1),
		now:      time.Now,
	}, nil
}

// topic is a parsed Sparkplug topic; its strings are substrings of the topic name.
type topic struct {
	group, msgType, edgeNode, device string
}

// parseTopic splits spBv1.0/<group>/<type>/<edge node>[/<device>]. STATE topics
// (spBv1.0/STATE/<host>) give msgType "STATE".
func parseTopic(name string) (topic, bool) {
	rest, ok := strings.CutPrefix(name, namespace+"/")
	if !ok {
		return topic{}, false
	}
	var t topic
	var parts [4]string
	n := 0
	for n < 4 {
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			parts[n] = rest
			n++
			rest = ""
			break
		}
		parts[n], rest = rest[:i], rest[i+1:]
		n++
	}
	if rest != "" {
		return topic{}, false // more than five levels
	}
	if n == 2 && parts[0] == stateGroup && parts[1] != "" {
		return topic{msgType: stateGroup, edgeNode: parts[1]}, true // the host id
	}
	if n < 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" || (n == 4 && parts[3] == "") {
		return topic{}, false
	}
	t.group, t.msgType, t.edgeNode = parts[0], parts[1], parts[2]
	if n == 4 {
		t.device = parts[3]
	}
	isDevice := t.msgType[0] == 'D'
	if isDevice != (t.device != "") {
		return topic{}, false
	}
	return t, true
}

// Decode implements mqtt.Handler.
func (h *host) Decode(name string, payload []byte, now int64, dst []telemetry.Point) ([]telemetry.Point, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := parseTopic(name)
	if !ok {
		h.msgs["other"].Inc()
		return nil, &mqtt.DecodeError{Class: classTopic, Reason: fmt.Sprintf("topic %q is not spBv1.0/<group>/<type>/<edge node>[/<device>]", name)}
	}
	c := h.msgs[t.msgType]
	if c == nil {
		h.msgs["other"].Inc()
		return nil, &mqtt.DecodeError{Class: classTopic, Reason: fmt.Sprintf("topic %q: message type %q is not a Sparkplug B type", name, t.msgType)}
	}
	c.Inc()
	switch t.msgType {
	case stateGroup:
		if t.edgeNode == h.cfg.HostID && isOffline(payload) {
			select {
			case h.offline <- struct{}{}:
			default: // one is pending
			}
		}
		return nil, nil
	case NCmd, DCmd:
		return nil, nil // commands to the edge nodes
	}
	p := &h.payload
	if err := p.Unmarshal(payload); err != nil {
		return nil, &mqtt.DecodeError{Class: classProtobuf, Reason: fmt.Sprintf("topic %q: %v", name, err)}
	}
	var out []telemetry.Point
	var err error
	switch t.msgType {
	case NBirth:
		out, err = h.nodeBirth(t, now, dst)
	case NDeath:
		out, err = h.nodeDeath(t, now, dst)
	default:
		out, err = h.deviceOrData(t, now, dst)
	}
	if err != nil {
		return nil, &mqtt.DecodeError{Class: classProtobuf, Reason: fmt.Sprintf("topic %q: %v", name, err)}
	}
	return out, nil
}

// isOffline reports whether a STATE payload says offline. Sparkplug 3.0 STATE payloads are
// JSON objects {"online":bool,"timestamp":ms}.
func isOffline(payload []byte) bool {
	var st struct {
		Online *bool `json:"online"`
	}
	return json.Unmarshal(payload, &st) == nil && st.Online != nil && !*st.Online
}

// lookup returns the edge node of t, or nil when it is not tracked.
func (h *host) lookup(t topic) *edgeNode {
	return h.nodes[nodeKey{group: t.group, edgeNode: t.edgeNode}]
}

// create starts tracking the edge node of t, which is not tracked, as unborn. When max_nodes
// are tracked it takes the place of the first unborn node: for a birth always, for data only
// when that node's rebirth request is older than rebirth_interval (so that forgetting it
// does not lift its rate limit). Without a place it returns nil.
func (h *host) create(t topic, forBirth bool) *edgeNode {
	if len(h.nodes) >= h.cfg.MaxNodes {
		e := h.unborn.Front()
		if e == nil {
			h.m.nodesOverLimit.Inc()
			return nil
		}
		old := e.Value.(*edgeNode)
		if !forBirth && old.rebirthSent && h.now().Sub(old.lastRebirth) < h.cfg.RebirthInterval {
			h.m.nodesOverLimit.Inc()
			return nil
		}
		h.unborn.Remove(e)
		delete(h.nodes, old.key)
		h.m.nodesEvicted.Inc()
	}
	k := nodeKey{group: h.names.String(t.group), edgeNode: h.names.String(t.edgeNode)}
	n := &edgeNode{key: k, devices: make(map[string]*scope)}
	n.node.reset()
	n.unborn = h.unborn.PushBack(n)
	h.nodes[k] = n
	h.m.nodes.Set(float64(len(h.nodes)))
	return n
}

// setBorn records whether n's node scope is born, and keeps h.unborn in step.
func (h *host) setBorn(n *edgeNode, born bool) {
	n.node.born = born
	switch {
	case born && n.unborn != nil:
		h.unborn.Remove(n.unborn)
		n.unborn = nil
	case !born && n.unborn == nil:
		n.unborn = h.unborn.PushBack(n)
	}
}

func (h *host) nodeBirth(t topic, now int64, dst []telemetry.Point) ([]telemetry.Point, error) {
	n := h.lookup(t)
	if n == nil {
		if n = h.create(t, true); n == nil {
			return nil, nil
		}
	}
	n.node.reset()
	clear(n.devices)
	n.defined = 0
	n.lastData = 0
	n.hasBdSeq = false
	n.seq = uint8(h.payload.Seq)
	if !h.payload.HasSeq() {
		h.m.seqGaps.Inc() // a birth without seq: count from 0
		n.seq = 0
	}
	names := metricNames{group: n.key.group, edgeNode: n.key.edgeNode}
	out, err := h.birth(n, &n.node, &names, now, dst)
	h.setBorn(n, err == nil)
	return out, err
}

func (h *host) nodeDeath(t topic, now int64, dst []telemetry.Point) ([]telemetry.Point, error) {
	n := h.lookup(t)
	if n == nil {
		return nil, nil
	}
	// The death is the will of the session its bdSeq names; that of an earlier session is
	// stale (the node has been born again since).
	m := &h.metric
	for {
		ok, err := h.payload.NextMetric(m)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if string(m.Name) == bdSeqMetric && n.hasBdSeq {
			if v, ok := integer(m); ok && v != n.bdSeq {
				h.m.staleDeaths.Inc()
				return nil, nil
			}
		}
	}
	if !n.node.born {
		return nil, nil
	}
	// The NDEATH is the will registered when the node connected, so its timestamp is that
	// of the connect (Sparkplug 3.0 §5): the stale points take the receive time, and never
	// precede the node's last data.
	at := max(now, n.lastData)
	out := h.stale(&n.node, at, now, dst)
	for _, d := range n.devices {
		if d.born {
			out = h.stale(d, at, now, out)
		}
	}
	h.setBorn(n, false)
	clear(n.devices)
	return out, nil
}

// connectionLost makes every edge node unborn, as its death would: what the nodes did while
// the host was away (a death, a birth with other aliases) is unknown, so their aliases and
// sequence numbers are forgotten and their next message asks for a rebirth. The tables of
// the nodes that were born are kept for takeStale, their points stamped at (Unix ns) or at
// the node's last data if later (Sparkplug 3.0 §5: a host that loses its connection marks
// the metrics of every known edge node stale).
func (h *host) connectionLost(at int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range h.nodes {
		if !n.node.born {
			continue
		}
		node := n.node
		ln := lostNode{scopes: []*scope{&node}, at: max(at, n.lastData)}
		for _, d := range n.devices {
			if d.born {
				ln.scopes = append(ln.scopes, d)
			}
		}
		if len(h.lost) >= h.cfg.MaxNodes {
			h.m.staleDropped.Add(float64(h.lost[0].points()))
			h.lost = slices.Delete(h.lost, 0, 1)
		}
		h.lost = append(h.lost, ln)
		h.anyLost.Store(true)
		n.node.reset()
		n.devices = make(map[string]*scope) // the old one is ln's
		n.defined, n.hasBdSeq, n.lastData = 0, false, 0
		n.rebirthSent = false // a request of the old connection does not limit the new one
		h.setBorn(n, false)
	}
}

// points returns how many stale points ln gives.
func (ln *lostNode) points() int {
	k := 0
	for _, sc := range ln.scopes {
		for _, def := range sc.byName {
			if !def.excluded && def.hasLast {
				k++
			}
		}
	}
	return k
}

// takeStale returns the stale points of the lost nodes, as many nodes as fit in max points
// (at least one), and the AckFunc of the batch: settled with an error, it puts the nodes
// back for the next call. now is the server time of the points.
func (h *host) takeStale(maxPoints int, now int64) ([]telemetry.Point, func(context.Context, error)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []telemetry.Point
	k := 0
	for ; k < len(h.lost); k++ {
		if k > 0 && len(out)+h.lost[k].points() > maxPoints {
			break
		}
		for _, sc := range h.lost[k].scopes {
			out = h.stale(sc, h.lost[k].at, now, out)
		}
	}
	taken := slices.Clone(h.lost[:k])
	h.lost = slices.Delete(h.lost, 0, k)
	h.anyLost.Store(len(h.lost) > 0)
	if len(out) == 0 {
		return nil, nil
	}
	return out, func(_ context.Context, err error) {
		if err == nil {
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		h.lost = append(taken, h.lost...)
		if drop := len(h.lost) - h.cfg.MaxNodes; drop > 0 {
			for _, ln := range h.lost[:drop] {
				h.m.staleDropped.Add(float64(ln.points()))
			}
			h.lost = slices.Delete(h.lost, 0, drop)
		}
		h.anyLost.Store(len(h.lost) > 0)
	}
}

// deviceOrData handles the messages that carry a sequence number: NDATA, DBIRTH, DDATA,
// DDEATH.
func (h *host) deviceOrData(t topic, now int64, dst []telemetry.Point) ([]telemetry.Point, error) {
	n := h.lookup(t)
	if n == nil || !n.node.born {
		if n == nil {
			n = h.create(t, false)
		}
		h.skipAll(skipNotBorn)
		if n != nil {
			h.requestRebirth(n, rebirthBeforeBirth)
		}
		return nil, nil
	}
	h.checkSeq(n)
	if t.msgType == NData {
		return h.data(n, &n.node, now, dst)
	}
	d := n.devices[t.device]
	switch t.msgType {
	case DBirth:
		if d == nil {
			if len(n.devices) >= h.cfg.MaxDevicesPerNode {
				h.m.devicesOverLimit.Inc()
				return nil, nil
			}
			d = &scope{}
			n.devices[h.names.String(t.device)] = d
		} else {
			n.defined -= len(d.byName)
		}
		d.reset()
		names := metricNames{group: n.key.group, edgeNode: n.key.edgeNode, device: t.device}
		out, err := h.birth(n, d, &names, now, dst)
		d.born = err == nil
		return out, err
	case DData:
		if d == nil || !d.born {
			h.skipAll(skipNotBorn)
			h.requestRebirth(n, rebirthBeforeBirth)
			return nil, nil
		}
		return h.data(n, d, now, dst)
	default: // DDEATH
		if d == nil || !d.born {
			return nil, nil
		}
		d.born = false
		// A DDEATH is published when the device goes, with the time it went.
		return h.stale(d, h.payloadTime(), now, dst), nil
	}
}

// payloadTime returns the timestamp of the payload being handled (Unix ns), 0 when it has
// none.
func (h *host) payloadTime() int64 {
	if h.payload.HasTimestamp() {
		return msToNanos(h.payload.Timestamp)
	}
	return 0
}

// checkSeq checks the sequence number of a message of n that carries one, and asks for a
// rebirth on a gap. The message itself is still used: its aliases are known.
func (h *host) checkSeq(n *edgeNode) {
	want := n.seq + 1
	got := uint8(h.payload.Seq)
	if !h.payload.HasSeq() || h.payload.Seq > 255 || got != want {
		h.m.seqGaps.Inc()
		h.requestRebirth(n, rebirthSeqGap)
	}
	n.seq = got
}

// skipAll counts every metric of the payload as skipped for reason.
func (h *host) skipAll(reason string) {
	if h.payload.Metrics > 0 {
		h.m.skipped.WithLabelValues(reason).Add(float64(h.payload.Metrics))
	}
}

// requestRebirth queues a rebirth request for n, at most one per rebirth_interval.
func (h *host) requestRebirth(n *edgeNode, reason string) {
	now := h.now()
	if n.rebirthSent && now.Sub(n.lastRebirth) < h.cfg.RebirthInterval {
		h.m.rebirthsLimited.Inc()
		return
	}
	select {
	case h.rebirths <- rebirthRequest{group: n.key.group, edgeNode: n.key.edgeNode}:
		n.rebirthSent, n.lastRebirth = true, now
		if n.unborn != nil {
			h.unborn.MoveToBack(n.unborn) // its rate limit now runs until last
		}
		h.m.rebirths.WithLabelValues(reason).Inc()
	default:
		h.m.rebirthsFailed.Inc()
	}
}

// birth defines the metrics of a birth in sc and returns the points of their values.
func (h *host) birth(n *edgeNode, sc *scope, names *metricNames, now int64, out []telemetry.Point) ([]telemetry.Point, error) {
	m := &h.metric
	for {
		ok, err := h.payload.NextMetric(m)
		if err != nil {
			return out, err
		}
		if !ok {
			return out, nil
		}
		if !m.HasName() || len(m.Name) == 0 {
			h.m.skipped.WithLabelValues(skipNoName).Inc()
			continue
		}
		if sc == &n.node && string(m.Name) == bdSeqMetric {
			if v, ok := integer(m); ok {
				n.bdSeq, n.hasBdSeq = v, true
			}
			continue
		}
		if def := sc.byName[string(m.Name)]; def != nil {
			h.m.skipped.WithLabelValues(skipDuplicate).Inc()
			continue
		}
		if m.HasAlias() && sc.byAlias[m.Alias] != nil {
			h.m.skipped.WithLabelValues(skipDuplicate).Inc()
			continue
		}
		if n.defined >= h.cfg.MaxMetricsPerNode {
			h.m.skipped.WithLabelValues(skipTableFull).Inc()
			sc.full = true
			continue
		}
		name := string(m.Name)
		def := &metricDef{datatype: m.Datatype, excluded: h.mapper.excluded(name), transient: m.IsTransient}
		if !def.excluded {
			pn := h.mapper.names(names, name)
			def.names = pointNames{
				factory: h.names.String(pn.factory), line: h.names.String(pn.line),
				machine: h.names.String(pn.machine), signal: h.names.String(pn.signal),
			}
		}
		n.defined++
		sc.byName[name] = def
		if m.HasAlias() {
			sc.byAlias[m.Alias] = def
		}
		out = h.point(n, def, m, now, out)
	}
}

// data resolves the metrics of a data message and returns their points.
func (h *host) data(n *edgeNode, sc *scope, now int64, out []telemetry.Point) ([]telemetry.Point, error) {
	m := &h.metric
	for {
		ok, err := h.payload.NextMetric(m)
		if err != nil {
			return out, err
		}
		if !ok {
			return out, nil
		}
		var def *metricDef
		switch {
		case m.HasAlias():
			def = sc.byAlias[m.Alias]
		case m.HasName():
			def = sc.byName[string(m.Name)]
		}
		if def == nil && sc.full {
			h.m.skipped.WithLabelValues(skipTableFull).Inc() // a rebirth would not make room
			continue
		}
		if def == nil {
			h.m.skipped.WithLabelValues(skipUnknownAlias).Inc()
			h.requestRebirth(n, rebirthUnknownAlias)
			continue
		}
		out = h.point(n, def, m, now, out)
	}
}

// point appends the point of metric m of node n defined by def, or counts why there is
// none. A historical value (is_historical) is stored with its time but is not the metric's
// last value; a transient one (is_transient, here or in the birth) is not stored at all.
func (h *host) point(n *edgeNode, def *metricDef, m *Metric, now int64, out []telemetry.Point) []telemetry.Point {
	if m.IsNull {
		h.m.skipped.WithLabelValues(skipNull).Inc()
		return out
	}
	if def.transient || m.IsTransient {
		h.m.skipped.WithLabelValues(skipTransient).Inc()
		return out
	}
	v, reason := value(def.datatype, m)
	if reason != "" {
		h.m.skipped.WithLabelValues(reason).Inc()
		return out
	}
	ts := h.payloadTime()
	if m.HasTimestamp() {
		ts = msToNanos(m.Timestamp)
	}
	if !m.IsHistorical {
		def.last, def.hasLast = v, true
		n.lastData = max(n.lastData, ts)
	}
	if def.excluded {
		return out
	}
	var q telemetry.Quality
	if m.HasQuality() {
		q = quality(m.Quality)
	}
	return append(out, telemetry.Point{
		Factory: def.names.factory, Line: def.names.line, Machine: def.names.machine, Signal: def.names.signal,
		SourceTime: ts, ServerTime: now, Value: v, Quality: q,
	})
}

// Sparkplug quality codes (Sparkplug 3.0 §6.4.18), the property "Quality" of a metric.
const (
	qualityBad   = 0
	qualityGood  = 192
	qualityStale = 500
)

// quality maps a Sparkplug quality code: GOOD is good, BAD and STALE bad, any other code
// uncertain. Code keeps the Sparkplug code.
func quality(code uint64) telemetry.Quality {
	c := uint32(min(code, math.MaxUint32))
	switch code {
	case qualityGood:
		return telemetry.Quality{Level: telemetry.Good, Code: c}
	case qualityBad, qualityStale:
		return telemetry.Quality{Level: telemetry.Bad, Code: c}
	}
	return telemetry.Quality{Level: telemetry.Uncertain, Code: c}
}

// stale appends a point of quality bad (Sparkplug STALE), with the last value and source
// time ts, for every stored metric of sc.
func (h *host) stale(sc *scope, ts, now int64, out []telemetry.Point) []telemetry.Point {
	for _, def := range sc.byName {
		if def.excluded || !def.hasLast {
			continue
		}
		out = append(out, telemetry.Point{
			Factory: def.names.factory, Line: def.names.line, Machine: def.names.machine, Signal: def.names.signal,
			SourceTime: ts, ServerTime: now, Value: def.last, Quality: telemetry.Quality{Level: telemetry.Bad, Code: qualityStale},
		})
		h.m.stalePoints.Inc()
	}
	return out
}

// msToNanos converts Unix milliseconds to nanoseconds, saturating.
func msToNanos(ms uint64) int64 {
	if ms > math.MaxInt64/1_000_000 {
		return math.MaxInt64
	}
	return int64(ms) * 1e6
}

// integer returns an integer metric's value (bdSeq is Int64 or UInt64 in practice).
func integer(m *Metric) (uint64, bool) {
	if m.Value == fieldMetricInt || m.Value == fieldMetricLong {
		return m.Bits, true
	}
	return 0, false
}

// Sparkplug B data types (sparkplugpb.DataType).
const (
	typeInt8     = 1
	typeInt16    = 2
	typeInt32    = 3
	typeInt64    = 4
	typeUInt8    = 5
	typeUInt16   = 6
	typeUInt32   = 7
	typeUInt64   = 8
	typeFloat    = 9
	typeDouble   = 10
	typeBoolean  = 11
	typeString   = 12
	typeDateTime = 13
	typeText     = 14
	typeUUID     = 15
)

// value converts a metric's value by its datatype (the birth's). Integers become Int
// values (UInt64 above the int64 range a Float), DateTime its Unix milliseconds as an Int,
// Float and Double Float values, Boolean Bool, String, Text and UUID String values. The other types give reason skipUnsupportedType; a value field that does
// not fit the type skipTypeMismatch.
func value(datatype uint32, m *Metric) (telemetry.Value, string) {
	isInt := m.Value == fieldMetricInt || m.Value == fieldMetricLong
	switch datatype {
	case typeInt8, typeInt16, typeInt32, typeInt64, typeUInt8, typeUInt16, typeUInt32, typeUInt64, typeDateTime:
		if !isInt {
			break
		}
		b := m.Bits
		switch datatype {
		case typeInt8:
			return telemetry.Int(int64(int8(b))), ""
		case typeInt16:
			return telemetry.Int(int64(int16(b))), ""
		case typeInt32:
			return telemetry.Int(int64(int32(b))), ""
		case typeUInt8:
			return telemetry.Int(int64(uint8(b))), ""
		case typeUInt16:
			return telemetry.Int(int64(uint16(b))), ""
		case typeUInt32:
			return telemetry.Int(int64(uint32(b))), ""
		case typeUInt64:
			if b > math.MaxInt64 {
				return telemetry.Float(float64(b)), ""
			}
		}
		return telemetry.Int(int64(b)), "" // Int64 (two's complement), DateTime, small UInt64
	case typeFloat:
		if m.Value == fieldMetricFloat {
			return telemetry.Float(float64(math.Float32frombits(uint32(m.Bits)))), ""
		}
	case typeDouble:
		if m.Value == fieldMetricDouble {
			return telemetry.Float(math.Float64frombits(m.Bits)), ""
		}
	case typeBoolean:
		if m.Value == fieldMetricBoolean {
			return telemetry.Bool(m.Bits != 0), ""
		}
	case typeString, typeText, typeUUID:
		if m.Value == fieldMetricString {
			return telemetry.String(string(m.Bytes)), ""
		}
	default:
		return telemetry.Value{}, skipUnsupportedType
	}
	return telemetry.Value{}, skipTypeMismatch
}
