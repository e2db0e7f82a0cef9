package buffer

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the log's Prometheus series. Their only label is the reader name, one per
// sink.
type metrics struct {
	bytes          prometheus.Gauge
	segments       prometheus.Gauge
	pending        *prometheus.GaugeVec
	appendedPoints prometheus.Counter
	droppedPoints  prometheus.Counter
	droppedRecords prometheus.Counter
	corruptRecords prometheus.Counter
	truncatedBytes prometheus.Counter
	fsyncSeconds   prometheus.Histogram
	blockedSeconds prometheus.Counter

	reg        prometheus.Registerer
	registered []prometheus.Collector
}

func newMetrics() *metrics {
	return &metrics{
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "millwright_buffer_bytes", Help: "Size of the write-ahead log's segment files in bytes.",
		}),
		segments: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "millwright_buffer_segments", Help: "Number of segment files of the write-ahead log.",
		}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "millwright_buffer_pending_points", Help: "Points appended to the write-ahead log but not yet committed by the reader (one per sink).",
		}, []string{"reader"}),
		appendedPoints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_buffer_appended_points_total", Help: "Points appended to the write-ahead log.",
		}),
		droppedPoints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_buffer_dropped_points_total", Help: "Points deleted unread by at least one reader to make space (overflow drop_oldest).",
		}),
		droppedRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_buffer_dropped_records_total", Help: "Records (appended batches) deleted unread by at least one reader to make space (overflow drop_oldest).",
		}),
		corruptRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_buffer_corrupt_records_total", Help: "Records skipped because they failed their checksum or could not be decoded.",
		}),
		truncatedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_buffer_truncated_bytes_total", Help: "Bytes of a torn or corrupt tail cut off the last segment when the log was opened.",
		}),
		fsyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "millwright_buffer_fsync_seconds", Help: "Duration of segment file fsyncs.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9), // 100µs to 6.5s
		}),
		blockedSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_buffer_append_blocked_seconds_total", Help: "Time appenders spent waiting for space in a full log (overflow block).",
		}),
	}
}

// register registers every series on reg (nothing when reg is nil); on failure it
// unregisters what it registered.
func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	m.reg = reg
	for _, c := range []prometheus.Collector{m.bytes, m.segments, m.pending, m.appendedPoints, m.droppedPoints,
		m.droppedRecords, m.corruptRecords, m.truncatedBytes, m.fsyncSeconds, m.blockedSeconds} {
		if err := reg.Register(c); err != nil {
			m.unregister()
			return fmt.Errorf("register buffer metrics: %w", err)
		}
		m.registered = append(m.registered, c)
	}
	return nil
}

func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}
