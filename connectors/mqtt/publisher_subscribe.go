package mqtt

import (
	"context"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Subscribe subscribes the publisher's client to filter at qos and waits for the broker's
// answer. handler is called for every message of the filter, from the client's goroutine,
// one message at a time; it must not block, and payload is valid only during the call.
// Simulated devices use it to receive commands.
func (p *Publisher) Subscribe(ctx context.Context, filter string, qos byte, handler func(topic string, payload []byte)) error {
	tok := p.client.Subscribe(filter, qos, func(_ paho.Client, m paho.Message) {
		handler(m.Topic(), m.Payload())
	})
	return publisherWait(ctx, tok, "subscribe to "+filter)
}

// PublishRetained publishes one message with the retained flag at the publisher's QoS and
// waits until it is settled or ctx ends. An empty payload clears the topic's retained
// message.
func (p *Publisher) PublishRetained(ctx context.Context, topic string, payload []byte) error {
	return publisherWait(ctx, p.client.Publish(topic, p.cfg.QoS, true, payload), "publish to "+topic)
}
