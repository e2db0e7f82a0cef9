package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/internal/metricreg"
)

// metrics are the standard series the framework keeps for every connector. Labels are the
// configured connector names only, so their number is bounded by the configuration.
type metrics struct {
	pointsIn      *prometheus.CounterVec
	batchesIn     *prometheus.CounterVec
	pointsOut     *prometheus.CounterVec
	batchesOut    *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	connectionUp  *prometheus.GaugeVec
	connectErrors *prometheus.CounterVec
	readErrors    *prometheus.CounterVec
	writeErrors   *prometheus.CounterVec
	appendErrors  *prometheus.CounterVec
	writeSeconds  *prometheus.HistogramVec
	appendSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		pointsIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_points_in_total", Help: "Points read from a source and stored in the write-ahead log.",
		}, []string{"source"}),
		batchesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_batches_in_total", Help: "Batches read from a source and stored in the write-ahead log.",
		}, []string{"source"}),
		pointsOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_points_out_total", Help: "Points a sink stored.",
		}, []string{"sink"}),
		batchesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_batches_out_total", Help: "Batches a sink stored (each fully, or with its rejected points dead-lettered).",
		}, []string{"sink"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_points_rejected_total", Help: "Points a sink refused for good; each is dead-lettered.",
		}, []string{"sink"}),
		readErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_source_read_errors_total", Help: "Reads that ended in an error (the source then reconnects).",
		}, []string{"source"}),
		writeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_sink_write_errors_total", Help: "Sink writes that failed and were retried.",
		}, []string{"sink"}),
		appendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_buffer_append_errors_total", Help: "Batches the write-ahead log could not store; they were not acknowledged to the source.",
		}, []string{"source"}),
		writeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "millwright_sink_write_seconds", Help: "Latency of successful sink writes.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"sink"}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "millwright_buffer_append_seconds", Help: "Time a source batch waited to become durable in the write-ahead log.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	for _, c := range []prometheus.Collector{m.pointsIn, m.batchesIn, m.pointsOut, m.batchesOut, m.rejected,
		m.readErrors, m.writeErrors, m.appendErrors, m.writeSeconds, m.appendSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	var err error
	if m.connectionUp, m.connectErrors, err = ConnectionMetrics(reg); err != nil {
		return nil, err
	}
	return m, nil
}

// ConnectionMetrics returns the standard connection series, millwright_connection_up and
// millwright_connect_errors_total labelled kind and name, registered on reg or shared with
// those already registered there: the pipeline's connectors and the gateway's other
// connections (the models' alarm output) report on the same series.
func ConnectionMetrics(reg prometheus.Registerer) (*prometheus.GaugeVec, *prometheus.CounterVec, error) {
	up, err := metricreg.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "millwright_connection_up", Help: "1 while a connector is connected, else 0.",
	}, []string{"kind", "name"}))
	if err != nil {
		return nil, nil, err
	}
	errs, err := metricreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "millwright_connect_errors_total", Help: "Failed connection attempts (each is retried with backoff).",
	}, []string{"kind", "name"}))
	if err != nil {
		return nil, nil, err
	}
	return up, errs, nil
}
