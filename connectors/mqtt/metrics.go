package mqtt

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the source's protocol-specific series. The pipeline owns the standard ones
// (points in, dead letters, connection up).
type metrics struct {
	messages     prometheus.Counter
	payloadBytes prometheus.Counter
	inflight     prometheus.Gauge
	connects     prometheus.Counter
	lost         prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, source string) (*metrics, error) {
	labels := prometheus.Labels{"source": source}
	m := &metrics{
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_messages_total", ConstLabels: labels,
			Help: "MQTT messages received, including those dead-lettered.",
		}),
		payloadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_payload_bytes_total", ConstLabels: labels,
			Help: "Bytes of MQTT message payloads received.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "millwright_mqtt_inflight_messages", ConstLabels: labels,
			Help: "MQTT messages received and not yet settled by the pipeline (at most max_inflight).",
		}),
		connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_connects_total", ConstLabels: labels,
			Help: "MQTT connections established (one per client when connections > 1).",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_connection_lost_total", ConstLabels: labels,
			Help: "MQTT connections lost without the source closing them.",
		}),
	}
	var err error
	m.messages = register(reg, m.messages, &err)
	m.payloadBytes = register(reg, m.payloadBytes, &err)
	m.inflight = register(reg, m.inflight, &err)
	m.connects = register(reg, m.connects, &err)
	m.lost = register(reg, m.lost, &err)
	if err != nil {
		return nil, fmt.Errorf("register mqtt metrics: %w", err)
	}
	return m, nil
}

// register registers c, or returns the collector already registered under the same name and
// labels (a source rebuilt under the same name keeps counting on the same series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	if *errp == nil {
		*errp = err
	}
	return c
}
