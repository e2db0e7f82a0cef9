package mqtt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/millwright-io/millwright/gateway/config"
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	Server   string
	ClientID string
	Username string
	Password config.Secret
	TLS      config.TLS
	// QoS of every message (0, 1 or 2).
	QoS byte
	// MaxInflight bounds the messages published but not yet acknowledged by the broker;
	// Publish blocks past it. Default 1,000.
	MaxInflight int
	// Will, when not nil, is the message the broker publishes if the connection ends
	// without a DISCONNECT.
	Will *Message
	// OnConnectionLost, when not nil, is called from the client's goroutine when an
	// established connection ends without Close; it must not block.
	OnConnectionLost func(error)
}

// Publisher publishes messages to a broker with a bounded window of unacknowledged
// messages, so it can keep a broker busy without waiting for each acknowledgement. It does
// not reconnect by itself: after a lost connection (Connected reports false, and the
// messages in flight are settled with an error) its owner calls Connect again. The demo,
// the benchmarks and the tests use it to play machines, and the gateway's alarm outbox
// publishes alarms with it, reconnecting with backoff; it is safe for concurrent use.
type Publisher struct {
	cfg    PublisherConfig
	client paho.Client
	window chan struct{}
	wg     sync.WaitGroup
}

// NewPublisher checks cfg and builds the client. It does no I/O.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.Server == "" {
		return nil, errors.New("mqtt publisher: no server")
	}
	if cfg.QoS > 2 {
		return nil, fmt.Errorf("mqtt publisher: qos %d is not 0, 1 or 2", cfg.QoS)
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 1000
	}
	tlsCfg, err := cfg.TLS.Load()
	if err != nil {
		return nil, fmt.Errorf("mqtt publisher: %w", err)
	}
	opts := paho.NewClientOptions().
		AddBroker(cfg.Server).
		SetClientID(cfg.ClientID).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetMaxResumePubInFlight(cfg.MaxInflight)
	if cfg.Username != "" {
		opts.SetUsername(cfg.Username)
		opts.SetPassword(cfg.Password.Value())
	}
	if tlsCfg != nil {
		opts.SetTLSConfig(tlsCfg)
	}
	if lost := cfg.OnConnectionLost; lost != nil {
		opts.SetConnectionLostHandler(func(_ paho.Client, err error) { lost(err) })
	}
	if w := cfg.Will; w != nil {
		opts.SetBinaryWill(w.Topic, w.Payload, w.QoS, w.Retained)
	}
	return &Publisher{cfg: cfg, client: paho.NewClient(opts), window: make(chan struct{}, cfg.MaxInflight)}, nil
}

// Connect connects to the broker, again after a lost connection too.
func (p *Publisher) Connect(ctx context.Context) error {
	return publisherWait(ctx, p.client.Connect(), "connect to "+p.cfg.Server)
}

// Connected reports whether the connection to the broker is up.
func (p *Publisher) Connected() bool { return p.client.IsConnectionOpen() }

// Publish sends payload to topic. It blocks while MaxInflight messages are unacknowledged
// and returns ctx's error if ctx ends first. done, when not nil, is called exactly once from
// another goroutine: with nil once the broker acknowledged the message (for QoS 0, once it
// was written), or with the error.
func (p *Publisher) Publish(ctx context.Context, topic string, payload []byte, done func(error)) error {
	select {
	case p.window <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	tok := p.client.Publish(topic, p.cfg.QoS, false, payload)
	p.wg.Go(func() {
		<-tok.Done()
		<-p.window
		if done != nil {
			done(tok.Error())
		}
	})
	return nil
}

// Flush waits until every message published so far is settled.
func (p *Publisher) Flush(ctx context.Context) error {
	for {
		if len(p.window) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Close disconnects (waiting up to a second for outstanding messages) and waits for every
// done callback.
func (p *Publisher) Close() {
	p.client.Disconnect(1000)
	p.wg.Wait()
}

// publisherWait waits for a paho token or ctx, and wraps its error with what.
func publisherWait(ctx context.Context, tok paho.Token, what string) error {
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
