package sparkplug

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// offlineTimeout bounds how long Close waits to publish the offline STATE.
const offlineTimeout = 2 * time.Second

// Source is the Sparkplug B host application source. It implements connectors.Source.
type Source struct {
	name       string
	cfg        Config
	log        *slog.Logger
	m          *metrics
	host       *host
	mq         *mqtt.Source
	stateTopic string
	stateTS    atomic.Int64 // Unix ms of the current connection's will and birth STATE

	mu     sync.Mutex // guards cancel
	cancel context.CancelFunc
	wg     sync.WaitGroup // the rebirth publisher
}

var _ connectors.Source = (*Source)(nil)

// New validates cfg and builds the source. It does no network I/O.
func New(name string, cfg Config, env connectors.Env) (*Source, error) {
	env = env.WithDefaults()
	cfg.Groups = slices.Clone(cfg.Groups)
	cfg.SetDefaults()
	if cfg.HostID == "" {
		cfg.HostID = "millwright-" + name
	}
	if cfg.MQTT.ClientID == "" {
		cfg.MQTT.ClientID = "millwright-" + name
	}
	cfg.MQTT.CleanSession = true // Sparkplug 3.0 hosts connect with a clean session
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sparkplug source %q: %w", name, err)
	}
	m, err := newMetrics(env.Registerer, name)
	if err != nil {
		return nil, fmt.Errorf("sparkplug source %q: %w", name, err)
	}
	h, err := newHost(cfg, m)
	if err != nil {
		return nil, fmt.Errorf("sparkplug source %q: %w", name, err)
	}
	s := &Source{name: name, cfg: cfg, log: env.Logger, m: m, host: h, stateTopic: StateTopic(cfg.HostID)}
	filters := map[string]byte{}
	if len(cfg.Groups) == 0 {
		filters[namespace+"/#"] = 1
	} else {
		for _, g := range cfg.Groups {
			filters[namespace+"/"+g+"/#"] = 1
		}
		filters[s.stateTopic] = 1 // its own STATE, to answer an offline one
	}
	s.mq, err = mqtt.NewWithHooks(name, cfg.MQTT, env, mqtt.Hooks{
		Filters:   filters,
		Handler:   h,
		Will:      s.will,
		OnConnect: s.online,
	})
	if err != nil {
		return nil, fmt.Errorf("sparkplug source %q: %w", name, err)
	}
	return s, nil
}

// will is the offline STATE the broker publishes when the connection ends unannounced.
func (s *Source) will() *mqtt.Message {
	ts := time.Now().UnixMilli()
	s.stateTS.Store(ts)
	return &mqtt.Message{Topic: s.stateTopic, QoS: 1, Retained: true, Payload: StatePayload(false, ts)}
}

// online publishes the birth STATE of a new connection, with its will's timestamp, after
// the subscriptions (Sparkplug 3.0 orders them so).
func (s *Source) online(ctx context.Context, publish func(context.Context, mqtt.Message) error) error {
	err := publish(ctx, mqtt.Message{Topic: s.stateTopic, QoS: 1, Retained: true, Payload: StatePayload(true, s.stateTS.Load())})
	if err != nil {
		s.m.statePublishFails.Inc()
		return fmt.Errorf("publish the online STATE: %w", err)
	}
	return nil
}

// Connect connects to the broker with the offline STATE as will, subscribes, publishes the
// online STATE and starts sending rebirth requests. No edge node is born on a new connection
// (see Close).
func (s *Source) Connect(ctx context.Context) error {
	s.host.connectionLost(s.host.now().UnixNano()) // none is born unless the old connection lingered
	if err := s.mq.Connect(ctx); err != nil {
		return fmt.Errorf("sparkplug source %q: %w", s.name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel == nil {
		rctx, cancel := context.WithCancel(context.Background())
		s.cancel = cancel
		s.wg.Go(func() { s.sendRebirths(rctx) })
	}
	return nil
}

// Read returns the points of the messages received, as the MQTT source does: the AckFunc
// acknowledges the messages to the broker once the pipeline stored their points. The stale
// points of the edge nodes that were born when the last connection ended come first, in
// batches of whole nodes; an AckFunc called with an error returns them to the next Read.
func (s *Source) Read(ctx context.Context) (telemetry.Batch, connectors.AckFunc, error) {
	if s.host.anyLost.Load() {
		if pts, ack := s.host.takeStale(s.cfg.MQTT.MaxBatchPoints, s.host.now().UnixNano()); len(pts) > 0 {
			return telemetry.Batch{Points: pts}, ack, nil
		}
	}
	b, ack, err := s.mq.Read(ctx)
	if err != nil {
		return b, ack, fmt.Errorf("sparkplug source %q: %w", s.name, err)
	}
	return b, ack, nil
}

// Close stops sending rebirth requests, publishes the offline STATE (a clean disconnect
// does not publish the will) and disconnects. Every edge node becomes unborn, its metrics
// stale, as Sparkplug 3.0 requires of a host that loses its connection (the pipeline calls
// Close when Read reports the loss): the next connection asks each node for its births
// before it uses its data.
func (s *Source) Close(ctx context.Context) error {
	s.host.connectionLost(s.host.now().UnixNano())
	s.mu.Lock()
	cancel := s.cancel
	s.cancel = nil
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		s.wg.Wait()
	}
	pctx, stop := context.WithTimeout(ctx, offlineTimeout)
	err := s.mq.Publish(pctx, mqtt.Message{Topic: s.stateTopic, QoS: 1, Retained: true, Payload: StatePayload(false, s.stateTS.Load())})
	stop()
	if err != nil {
		s.m.statePublishFails.Inc()
		s.log.Debug("offline state not published", "err", err)
	}
	return s.mq.Close(ctx)
}

// sendRebirths publishes the rebirth requests the host queues, and the online STATE again
// when the broker delivers an offline one for this host, until ctx ends.
func (s *Source) sendRebirths(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.host.offline:
			err := s.mq.Publish(ctx, mqtt.Message{Topic: s.stateTopic, QoS: 1, Retained: true, Payload: StatePayload(true, s.stateTS.Load())})
			if err != nil {
				s.m.statePublishFails.Inc()
				s.log.Debug("online state not published again", "err", err)
			}
		case r := <-s.host.rebirths:
			topic := Topic(r.group, NCmd, r.edgeNode, "")
			if err := s.mq.Publish(ctx, mqtt.Message{Topic: topic, QoS: 0, Payload: RebirthRequest(time.Now())}); err != nil {
				s.m.rebirthsFailed.Inc()
				s.log.Debug("rebirth request not sent", "topic", topic, "err", err)
				continue
			}
			s.log.Debug("rebirth requested", "topic", topic)
		}
	}
}
