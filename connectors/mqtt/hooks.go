package mqtt

import (
	"context"
	"fmt"
	"maps"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// Handler turns the messages of a source built with NewWithHooks into points, in place of
// the topic patterns and the JSON decoding: protocols layered on MQTT (Sparkplug B) use it.
//
// *Decoder is the Handler of the JSON topics. Decode is called from one goroutine at a time,
// in the order the messages arrive, while the message holds a place in the in-flight window;
// it must not block for long. It appends the message's points to dst (whose spare capacity it should use) and returns them,
// or returns an error, which dead-letters the message (a *DecodeError gives the class). The
// points are acknowledged to the broker only once the pipeline has stored them, as for JSON
// messages. The payload is valid only during the call.
type Handler interface {
	Decode(topic string, payload []byte, now int64, dst []telemetry.Point) ([]telemetry.Point, error)
}

var _ Handler = (*Decoder)(nil)

// Message is a message a Hooks user publishes.
type Message struct {
	Topic    string
	QoS      byte
	Retained bool
	Payload  []byte
}

// Hooks let a protocol layered on MQTT drive a Source: its own subscriptions and decoding,
// a will message, and a message published on every new connection.
type Hooks struct {
	// Filters are the subscriptions (topic filter → QoS) in place of the configured topics.
	Filters map[string]byte
	// Handler decodes every message received whose payload is within max_payload_bytes
	// (larger ones are dead-lettered as payload_too_large without being handed over).
	Handler Handler
	// Will, when not nil, is called before each client connects and returns the will
	// message the broker publishes if the connection ends without a DISCONNECT (nil: none).
	Will func() *Message
	// OnConnect, when not nil, is called by Connect once every client is connected and
	// subscribed, with a function that publishes on the new connection and waits for the
	// broker's acknowledgement. An error fails the Connect.
	OnConnect func(ctx context.Context, publish func(context.Context, Message) error) error
}

// NewWithHooks builds a source whose subscriptions and decoding come from hooks: cfg's
// connection settings apply, and its topics must be empty. Everything else (the bounded
// in-flight window, acknowledgement after the pipeline stored the points, dead letters,
// metrics) is that of New.
func NewWithHooks(name string, cfg Config, env connectors.Env, hooks Hooks) (*Source, error) {
	switch {
	case len(cfg.Topics) > 0:
		return nil, fmt.Errorf("mqtt source %q: topics are set by the protocol on top of MQTT; expected none", name)
	case hooks.Handler == nil:
		return nil, fmt.Errorf("mqtt source %q: no message handler", name)
	case len(hooks.Filters) == 0:
		return nil, fmt.Errorf("mqtt source %q: no subscriptions", name)
	}
	cfg.Topics = []Topic{placeholderTopic()}
	s, err := New(name, cfg, env)
	if err != nil {
		return nil, err
	}
	s.hooks = &hooks
	s.filters = maps.Clone(hooks.Filters)
	return s, nil
}

// placeholderTopic stands in for the topics of a source built with hooks, so that the
// connection settings are validated as those of any source.
func placeholderTopic() Topic {
	t := Topic{Pattern: "#", Machine: "hooks"}
	t.SetDefaults()
	return t
}

// ValidateConnection checks cfg's connection settings (everything but its topics, which
// must be empty) as NewWithHooks does, with paths relative to cfg.
func ValidateConnection(cfg Config) error {
	if len(cfg.Topics) > 0 {
		var p config.Problems
		p.Addf("topics", "%d topic(s) set; the protocol on top of MQTT sets the subscriptions, expected none", len(cfg.Topics))
		return p.Err()
	}
	cfg.Topics = []Topic{placeholderTopic()}
	return cfg.Validate()
}

// Publish publishes m on the current connection and waits until it is written (QoS 0) or
// acknowledged by the broker (QoS 1 and 2), or ctx ends. It returns an error wrapping
// connectors.ErrNotConnected when the source is not connected. Do not call it from a
// Handler: paho reads no acknowledgement while a handler runs.
func (s *Source) Publish(ctx context.Context, m Message) error {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil || len(c.clients) == 0 {
		return fmt.Errorf("mqtt source %q: publish to %q: %w", s.name, m.Topic, connectors.ErrNotConnected)
	}
	return c.publish(ctx, m)
}

// publish publishes on the connection's first client. While the in-flight window is full
// paho reads no acknowledgement, so it then stops waiting after the message is handed over.
func (c *connection) publish(ctx context.Context, m Message) error {
	tok := c.clients[0].Publish(m.Topic, m.QoS, m.Retained, m.Payload)
	timer := time.NewTimer(c.src.cfg.ConnectTimeout)
	defer timer.Stop()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("mqtt source %q: publish to %q: %w", c.src.name, m.Topic, err)
		}
		return nil
	case <-c.full:
		return nil
	case <-c.lost:
		return fmt.Errorf("mqtt source %q: publish to %q: %w", c.src.name, m.Topic, c.lostError())
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("mqtt source %q: publish to %q: no acknowledgement within %s: %w", c.src.name, m.Topic, c.src.cfg.ConnectTimeout, connectors.ErrNotConnected)
	}
}

// onConnect runs the hooks' OnConnect for a new connection.
func (h *Hooks) onConnect(ctx context.Context, c *connection) error {
	if h == nil || h.OnConnect == nil {
		return nil
	}
	return h.OnConnect(ctx, c.publish)
}

// setWill registers the hooks' will message, if any, in o.
func (h *Hooks) setWill(o *paho.ClientOptions) {
	if h == nil || h.Will == nil {
		return
	}
	if w := h.Will(); w != nil {
		o.SetBinaryWill(w.Topic, w.Payload, w.QoS, w.Retained)
	}
}

// handler returns the hooks' message handler, or nil for the JSON decoding.
func (h *Hooks) handler() Handler {
	if h == nil {
		return nil
	}
	return h.Handler
}
