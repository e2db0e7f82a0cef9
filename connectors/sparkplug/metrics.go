package sparkplug

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/internal/metricreg"
)

// Reasons a metric is not stored (the "reason" label of metrics_skipped_total).
const (
	skipNull            = "null"
	skipUnsupportedType = "unsupported_type" // data set, template, bytes, file, arrays, ...
	skipTypeMismatch    = "type_mismatch"    // the value field does not fit the datatype
	skipUnknownAlias    = "unknown_alias"
	skipNoName          = "no_name" // a birth metric without a name
	skipDuplicate       = "duplicate_alias"
	skipTableFull       = "table_full" // max_metrics_per_node reached
	skipExcluded        = "excluded"
	skipNotBorn         = "not_born"  // data of an edge node or device without a birth
	skipTransient       = "transient" // is_transient: not for a historian
)

// Reasons for a rebirth request (the "reason" label of rebirth_requests_total).
const (
	rebirthSeqGap       = "seq_gap"
	rebirthBeforeBirth  = "before_birth"
	rebirthUnknownAlias = "unknown_alias"
)

// metrics are the source's Sparkplug series; labels are bounded sets of constants.
type metrics struct {
	messages          *prometheus.CounterVec // by message type
	skipped           *prometheus.CounterVec // by reason
	rebirths          *prometheus.CounterVec // by reason, sent
	rebirthsLimited   prometheus.Counter
	rebirthsFailed    prometheus.Counter
	seqGaps           prometheus.Counter
	staleDeaths       prometheus.Counter
	stalePoints       prometheus.Counter
	nodesOverLimit    prometheus.Counter
	nodesEvicted      prometheus.Counter
	staleDropped      prometheus.Counter
	devicesOverLimit  prometheus.Counter
	nodes             prometheus.Gauge
	statePublishFails prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, source string) (*metrics, error) {
	labels := prometheus.Labels{"source": source}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "millwright_sparkplug_" + name, Help: help, ConstLabels: labels})
	}
	vec := func(name, help, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_sparkplug_" + name, Help: help, ConstLabels: labels}, []string{label})
	}
	m := &metrics{
		messages:          vec("messages_total", "Sparkplug messages received, by type (nbirth, ndata, ndeath, dbirth, ddata, ddeath, ncmd, dcmd, state, other).", "type"),
		skipped:           vec("metrics_skipped_total", "Metrics of received messages that gave no point, by reason.", "reason"),
		rebirths:          vec("rebirth_requests_total", "Rebirth requests (NCMD Node Control/Rebirth) queued for sending, by reason.", "reason"),
		rebirthsLimited:   counter("rebirth_requests_limited_total", "Rebirth requests not sent because one went to the same edge node within rebirth_interval."),
		rebirthsFailed:    counter("rebirth_requests_failed_total", "Rebirth requests that could not be sent (queue full or publish failed)."),
		seqGaps:           counter("seq_gaps_total", "Edge node messages whose sequence number was not the one expected."),
		staleDeaths:       counter("stale_deaths_total", "NDEATH messages ignored because their bdSeq is not that of the node's current birth."),
		stalePoints:       counter("stale_points_total", "Points of quality bad emitted for the metrics of dead edge nodes and devices, and of every born edge node when the broker connection ends."),
		nodesOverLimit:    counter("nodes_over_limit_total", "Messages ignored because max_nodes edge nodes are already tracked and none can be forgotten."),
		nodesEvicted:      counter("nodes_evicted_total", "Unborn edge nodes (never born, or dead) forgotten to make room for another within max_nodes."),
		staleDropped:      counter("stale_points_dropped_total", "Stale points of a lost broker connection dropped because those of max_nodes edge nodes were already waiting to be read."),
		devicesOverLimit:  counter("devices_over_limit_total", "Device messages ignored because the edge node already has max_devices_per_node devices."),
		statePublishFails: counter("state_publish_failed_total", "STATE messages of the host that could not be published."),
		nodes:             prometheus.NewGauge(prometheus.GaugeOpts{Name: "millwright_sparkplug_edge_nodes", Help: "Edge nodes tracked.", ConstLabels: labels}),
	}
	var errs []error
	reg1 := func(c prometheus.Collector) prometheus.Collector {
		got, err := metricreg.Register(reg, c)
		errs = append(errs, err)
		return got
	}
	m.messages = reg1(m.messages).(*prometheus.CounterVec)
	m.skipped = reg1(m.skipped).(*prometheus.CounterVec)
	m.rebirths = reg1(m.rebirths).(*prometheus.CounterVec)
	m.rebirthsLimited = reg1(m.rebirthsLimited).(prometheus.Counter)
	m.rebirthsFailed = reg1(m.rebirthsFailed).(prometheus.Counter)
	m.seqGaps = reg1(m.seqGaps).(prometheus.Counter)
	m.staleDeaths = reg1(m.staleDeaths).(prometheus.Counter)
	m.stalePoints = reg1(m.stalePoints).(prometheus.Counter)
	m.nodesOverLimit = reg1(m.nodesOverLimit).(prometheus.Counter)
	m.nodesEvicted = reg1(m.nodesEvicted).(prometheus.Counter)
	m.staleDropped = reg1(m.staleDropped).(prometheus.Counter)
	m.devicesOverLimit = reg1(m.devicesOverLimit).(prometheus.Counter)
	m.statePublishFails = reg1(m.statePublishFails).(prometheus.Counter)
	m.nodes = reg1(m.nodes).(prometheus.Gauge)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register sparkplug metrics: %w", err)
	}
	return m, nil
}
