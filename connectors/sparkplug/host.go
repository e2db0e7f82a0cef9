package sparkplug

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
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
	datatype uint32
	excluded bool
	names    pointNames
	last     telemetry.Value
	hasLast  bool
}

// scope is the metric table of an edge node or one of its devices.
type scope struct {
	born    bool
	byAlias map[uint64]*metricDef
	byName  map[string]*metricDef
}

func (s *scope) reset() {
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
}

// host is the Sparkplug B host application's state machine: it turns the messages of the
// spBv1.0 namespace into points and asks edge nodes for rebirths. It implements
// mqtt.Handler. The MQTT source calls it from one goroutine at a time; mu orders the calls
// of successive connections.
type host struct {
	mu       sync.Mutex
	cfg      Config
	mapper   *mapper
	names    *telemetry.Interner
	m        *metrics
	nodes    map[nodeKey]*edgeNode
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

// lookup returns the edge node of t, creating it when create is set and there is room.
func (h *host) lookup(t topic, create bool) *edgeNode {
	k := nodeKey{group: t.group, edgeNode: t.edgeNode}
	if n := h.nodes[k]; n != nil || !create {
		return n
	}
	if len(h.nodes) >= h.cfg.MaxNodes {
		h.m.nodesOverLimit.Inc()
		return nil
	}
	k = nodeKey{group: h.names.String(t.group), edgeNode: h.names.String(t.edgeNode)}
	n := &edgeNode{key: k, devices: make(map[string]*scope)}
	n.node.reset()
	h.nodes[k] = n
	h.m.nodes.Set(float64(len(h.nodes)))
	return n
}

func (h *host) nodeBirth(t topic, now int64, dst []telemetry.Point) ([]telemetry.Point, error) {
	n := h.lookup(t, true)
	if n == nil {
		return nil, nil
	}
	n.node.reset()
	clear(n.devices)
	n.defined = 0
	n.hasBdSeq = false
	n.seq = uint8(h.payload.Seq)
	if !h.payload.HasSeq() {
		h.m.seqGaps.Inc() // a birth without seq: count from 0
		n.seq = 0
	}
	names := metricNames{group: n.key.group, edgeNode: n.key.edgeNode}
	out, err := h.birth(n, &n.node, &names, now, dst)
	n.node.born = err == nil
	return out, err
}

func (h *host) nodeDeath(t topic, now int64, dst []telemetry.Point) ([]telemetry.Point, error) {
	n := h.lookup(t, false)
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
	out := h.stale(&n.node, now, dst)
	for _, d := range n.devices {
		if d.born {
			out = h.stale(d, now, out)
		}
	}
	n.node.born = false
	clear(n.devices)
	return out, nil
}

// deviceOrData handles the messages that carry a sequence number: NDATA, DBIRTH, DDATA,
// DDEATH.
func (h *host) deviceOrData(t topic, now int64, dst []telemetry.Point) ([]telemetry.Point, error) {
	n := h.lookup(t, false)
	if n == nil || !n.node.born {
		if n == nil {
			n = h.lookup(t, true)
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
		return h.stale(d, now, dst), nil
	}
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
			continue
		}
		name := string(m.Name)
		def := &metricDef{datatype: m.Datatype, excluded: h.mapper.excluded(name)}
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
		out = h.point(def, m, now, out)
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
		if def == nil {
			h.m.skipped.WithLabelValues(skipUnknownAlias).Inc()
			h.requestRebirth(n, rebirthUnknownAlias)
			continue
		}
		out = h.point(def, m, now, out)
	}
}

// point appends the point of metric m defined by def, or counts why there is none.
func (h *host) point(def *metricDef, m *Metric, now int64, out []telemetry.Point) []telemetry.Point {
	if m.IsNull {
		h.m.skipped.WithLabelValues(skipNull).Inc()
		return out
	}
	v, reason := value(def.datatype, m)
	if reason != "" {
		h.m.skipped.WithLabelValues(reason).Inc()
		return out
	}
	def.last, def.hasLast = v, true
	if def.excluded {
		return out
	}
	var ts int64
	switch {
	case m.HasTimestamp():
		ts = msToNanos(m.Timestamp)
	case h.payload.HasTimestamp():
		ts = msToNanos(h.payload.Timestamp)
	}
	return append(out, telemetry.Point{
		Factory: def.names.factory, Line: def.names.line, Machine: def.names.machine, Signal: def.names.signal,
		SourceTime: ts, ServerTime: now, Value: v,
	})
}

// stale appends a point of quality bad, with the last value, for every stored metric of sc.
func (h *host) stale(sc *scope, now int64, out []telemetry.Point) []telemetry.Point {
	var ts int64
	if h.payload.HasTimestamp() {
		ts = msToNanos(h.payload.Timestamp)
	}
	for _, def := range sc.byName {
		if def.excluded || !def.hasLast {
			continue
		}
		out = append(out, telemetry.Point{
			Factory: def.names.factory, Line: def.names.line, Machine: def.names.machine, Signal: def.names.signal,
			SourceTime: ts, ServerTime: now, Value: def.last, Quality: telemetry.Quality{Level: telemetry.Bad},
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
