package influxdb

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the sink's protocol metrics; the pipeline owns the standard ones (points in
// and out, rejections, write latency of whole batches).
type metrics struct {
	requests *prometheus.CounterVec // by code
	seconds  prometheus.Observer
	bytes    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, name string) (*metrics, error) {
	requests, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "millwright_influxdb_requests_total",
		Help: "HTTP requests to InfluxDB by status code (\"error\" when no response arrived, \"timeout\" when it came too late).",
	}, []string{"sink", "code"}))
	if err != nil {
		return nil, err
	}
	seconds, err := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "millwright_influxdb_request_seconds",
		Help:    "Duration of HTTP requests to InfluxDB.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"sink"}))
	if err != nil {
		return nil, err
	}
	bytes, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "millwright_influxdb_request_bytes_total",
		Help: "Bytes of request bodies sent to InfluxDB (after compression).",
	}, []string{"sink"}))
	if err != nil {
		return nil, err
	}
	return &metrics{
		requests: requests.MustCurryWith(prometheus.Labels{"sink": name}),
		seconds:  seconds.WithLabelValues(name),
		bytes:    bytes.WithLabelValues(name),
	}, nil
}

// register registers c, or returns the collector already registered under the same
// description, so that several sinks share one registerer.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// request records one request: code is the HTTP status, or 0 for no response.
func (m *metrics) request(code int, timeout bool, d time.Duration, bodyBytes int) {
	label := "error"
	switch {
	case code != 0:
		label = strconv.Itoa(code)
	case timeout:
		label = "timeout"
	}
	m.requests.WithLabelValues(label).Inc()
	m.seconds.Observe(d.Seconds())
	m.bytes.Add(float64(bodyBytes))
}
