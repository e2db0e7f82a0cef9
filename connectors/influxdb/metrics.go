package influxdb

import (
	"strconv"
	"time"

	"github.com/millwright-io/millwright/internal/metricreg"

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
	requests, err := metricreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "millwright_influxdb_requests_total",
		Help: "HTTP requests to InfluxDB by status code (\"error\" when no response arrived, \"timeout\" when it came too late).",
	}, []string{"sink", "code"}))
	if err != nil {
		return nil, err
	}
	seconds, err := metricreg.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "millwright_influxdb_request_seconds",
		Help:    "Duration of HTTP requests to InfluxDB.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"sink"}))
	if err != nil {
		return nil, err
	}
	bytes, err := metricreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
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
