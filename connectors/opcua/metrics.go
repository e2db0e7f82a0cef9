package opcua

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/internal/metricreg"
)

// Reasons for which values are dropped by the source (the label of drops).
const (
	dropArraySkipped   = "array_skipped"
	dropArrayTruncated = "array_truncated"
	dropUnsupported    = "unsupported_type"
	dropNoValue        = "no_value"
	dropUnknownItem    = "unknown_item"
	dropBrowseLimit    = "browse_limit"
	dropPollSkipped    = "poll_cycle_skipped"
)

var dropReasons = []string{dropArraySkipped, dropArrayTruncated, dropUnsupported, dropNoValue, dropUnknownItem, dropBrowseLimit, dropPollSkipped}

// Item error classes (the label of item errors).
const (
	itemErrNodeUnknown = "node_id_unknown"
	itemErrPath        = "browse_path_unresolved"
	itemErrMapping     = "unmapped"
	itemErrMonitor     = "monitor_failed"
	itemErrRead        = "read_failed"
)

var itemErrClasses = []string{itemErrNodeUnknown, itemErrPath, itemErrMapping, itemErrMonitor, itemErrRead}

// metrics are the source's protocol-specific series. The pipeline owns the standard ones
// (points in, connection up). Labels are bounded: never a node id.
type metrics struct {
	notifications prometheus.Counter
	values        prometheus.Counter
	overflows     prometheus.Counter
	drops         *prometheus.CounterVec
	lost          prometheus.Counter
	itemErrors    *prometheus.CounterVec
	items         *prometheus.GaugeVec
	inflight      prometheus.Gauge
	connects      prometheus.Counter
	connLost      prometheus.Counter
	stalls        prometheus.Counter
	resumes       prometheus.Counter
	browses       prometheus.Counter
	certRejected  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, source string) (*metrics, error) {
	labels := prometheus.Labels{"source": source}
	m := &metrics{
		notifications: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_opcua_notifications_total", ConstLabels: labels,
			Help: "OPC-UA data change notifications received (one per publish response part), or poll cycles completed.",
		}),
		values: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_opcua_values_total", ConstLabels: labels,
			Help: "OPC-UA data values received (monitored item notifications or read results).",
		}),
		overflows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_opcua_server_queue_overflows_total", ConstLabels: labels,
			Help: "Values whose status carries the Overflow info bit: the server's item queue dropped samples before this one.",
		}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_opcua_dropped_total", ConstLabels: labels,
			Help: "Values or elements the source did not turn into points, by reason.",
		}, []string{"reason"}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_opcua_lost_points_total", ConstLabels: labels,
			Help: "Points of batches the pipeline could not store: OPC-UA does not deliver them again.",
		}),
		itemErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_opcua_item_errors_total", ConstLabels: labels,
			Help: "Items that could not be monitored or read, by class (counted on every connect).",
		}, []string{"class"}),
		items: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "millwright_opcua_items", ConstLabels: labels,
			Help: "Items of the current connection, by state (ok or error).",
		}, []string{"state"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "millwright_opcua_inflight_points", ConstLabels: labels,
			Help: "Points read and not yet settled by the pipeline (at most max_inflight_points).",
		}),
		connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_opcua_connects_total", ConstLabels: labels,
			Help: "OPC-UA sessions established.",
		}),
		connLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_opcua_connection_lost_total", ConstLabels: labels,
			Help: "OPC-UA connections found dead (keep-alive failed, channel closed, subscription ended).",
		}),
		stalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_opcua_subscription_stalls_total", ConstLabels: labels,
			Help: "Subscriptions silent past subscription.stall_timeout (no publish response); each ended its connection.",
		}),
		resumes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_opcua_publish_resumes_total", ConstLabels: labels,
			Help: "Subscriptions that delivered nothing in their first three publishing intervals (at least a second), whose client publish loop the source resumed.",
		}),
		browses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_opcua_browses_total", ConstLabels: labels,
			Help: "Discovery runs (on connect and on the rebrowse schedule).",
		}),
		certRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_opcua_certificates_rejected_total", ConstLabels: labels,
			Help: "Server certificates refused by the trust list.",
		}),
	}
	var errs [14]error
	m.notifications, errs[0] = metricreg.Register(reg, m.notifications)
	m.values, errs[1] = metricreg.Register(reg, m.values)
	m.overflows, errs[2] = metricreg.Register(reg, m.overflows)
	m.drops, errs[3] = metricreg.Register(reg, m.drops)
	m.lost, errs[4] = metricreg.Register(reg, m.lost)
	m.itemErrors, errs[5] = metricreg.Register(reg, m.itemErrors)
	m.items, errs[6] = metricreg.Register(reg, m.items)
	m.inflight, errs[7] = metricreg.Register(reg, m.inflight)
	m.connects, errs[8] = metricreg.Register(reg, m.connects)
	m.connLost, errs[9] = metricreg.Register(reg, m.connLost)
	m.browses, errs[10] = metricreg.Register(reg, m.browses)
	m.certRejected, errs[11] = metricreg.Register(reg, m.certRejected)
	m.stalls, errs[12] = metricreg.Register(reg, m.stalls)
	m.resumes, errs[13] = metricreg.Register(reg, m.resumes)
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("register opcua metrics: %w", err)
	}
	// Every series exists from the start, so a rate shows 0 rather than nothing.
	for _, r := range dropReasons {
		m.drops.WithLabelValues(r)
	}
	for _, c := range itemErrClasses {
		m.itemErrors.WithLabelValues(c)
	}
	return m, nil
}
