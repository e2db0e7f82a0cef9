package mqtt

import (
	"errors"
	"fmt"

	"github.com/millwright-io/millwright/internal/metricreg"

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
	// A source rebuilt under the same name keeps counting on the same series.
	var errs [5]error
	m.messages, errs[0] = metricreg.Register(reg, m.messages)
	m.payloadBytes, errs[1] = metricreg.Register(reg, m.payloadBytes)
	m.inflight, errs[2] = metricreg.Register(reg, m.inflight)
	m.connects, errs[3] = metricreg.Register(reg, m.connects)
	m.lost, errs[4] = metricreg.Register(reg, m.lost)
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("register mqtt metrics: %w", err)
	}
	return m, nil
}
