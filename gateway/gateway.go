// Package gateway assembles a running gateway from its configuration: sources, write-ahead log, pipeline, sinks, dead letters and the HTTP API.
package gateway

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/connectors/influxdb"
	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/connectors/opcua"
	"github.com/millwright-io/millwright/connectors/sparkplug"
	"github.com/millwright-io/millwright/gateway/api"
	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/deadletter"
	"github.com/millwright-io/millwright/gateway/pipeline"
	"github.com/millwright-io/millwright/ledger"
)

// Gateway is one configured gateway. Build it with New, run it with Run.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	dl      *lazyDeadLetters
	sources []pipeline.Source
	sinks   []pipeline.Sink
	// recorder is the ledger outbox while Run has it open.
	recorder atomic.Pointer[ledger.Outbox]
}

// New builds every connector from a validated configuration. It does no I/O: an error is a
// configuration error.
func New(cfg Config, log *slog.Logger) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g := &Gateway{cfg: cfg, log: log, reg: reg, dl: &lazyDeadLetters{}}
	for _, sc := range cfg.Sources {
		env := connectors.Env{Logger: log.With("component", "source", "name", sc.Name), Registerer: reg, DeadLetters: g.dl}
		var (
			src connectors.Source
			err error
		)
		switch {
		case sc.MQTT != nil:
			src, err = mqtt.New(sc.Name, *sc.MQTT, env)
		case sc.OPCUA != nil:
			src, err = opcua.New(sc.Name, *sc.OPCUA, env)
		case sc.Sparkplug != nil:
			src, err = sparkplug.New(sc.Name, *sc.Sparkplug, env)
		}
		if err != nil {
			return nil, err // names the connector already
		}
		g.sources = append(g.sources, pipeline.Source{Name: sc.Name, Source: src})
	}
	for _, sc := range cfg.Sinks {
		env := connectors.Env{Logger: log.With("component", "sink", "name", sc.Name), Registerer: reg, DeadLetters: g.dl}
		var (
			sink connectors.Sink
			err  error
		)
		switch {
		case sc.InfluxDB != nil:
			sink, err = influxdb.New(sc.Name, *sc.InfluxDB, env)
		}
		if err != nil {
			return nil, err // names the connector already
		}
		g.sinks = append(g.sinks, pipeline.Sink{Name: sc.Name, Sink: sink})
	}
	return g, nil
}

// Recorder returns the ledger outbox that the gateway's records go to while Run is running,
// or nil (before Run, after it, or with the ledger backend "none").
func (g *Gateway) Recorder() ledger.Recorder {
	if o := g.recorder.Load(); o != nil {
		return o
	}
	return nil
}

// Registry returns the gateway's metrics registry.
func (g *Gateway) Registry() *prometheus.Registry { return g.reg }

// Run opens the state directory, then runs the pipeline and the HTTP API until ctx is done.
// It returns nil after a clean shutdown, or the error that stopped the gateway.
func (g *Gateway) Run(ctx context.Context) error {
	if err := os.MkdirAll(g.cfg.Gateway.StateDir, 0o750); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	apiTLS, err := g.cfg.Gateway.HTTP.TLS.Load()
	if err != nil {
		return fmt.Errorf("gateway.http: %w", err)
	}
	dl, err := deadletter.Open(g.cfg.DeadLetters, g.log.With("component", "deadletters"), g.reg)
	if err != nil {
		return err
	}
	defer dl.Close()
	g.dl.set(dl)

	readers := make([]string, len(g.sinks))
	for i, s := range g.sinks {
		readers[i] = s.Name
	}
	wal, err := buffer.Open(g.cfg.Buffer, readers, buffer.WithLogger(g.log.With("component", "buffer")), buffer.WithRegisterer(g.reg))
	if err != nil {
		return fmt.Errorf("write-ahead log in %s: %w", g.cfg.Buffer.Dir, err)
	}
	defer wal.Close()
	lin, err := openLineage(g.cfg.Ledger, g.log.With("component", "ledger"), g.reg)
	if err != nil {
		return err
	}
	if lin != nil {
		defer lin.Close()
	}
	sinks := make([]pipeline.Sink, len(g.sinks))
	for i, s := range g.sinks {
		s.Cursor = wal.Reader(s.Name)
		sinks[i] = s
	}
	mods, err := newModels(g.cfg, g.log, g.reg, g.Recorder)
	if err != nil {
		return err
	}
	defer mods.close()
	var key ed25519.PrivateKey
	if lin != nil {
		key = lin.key
	}
	fed, err := newFederation(g.cfg, key, mods, g.log, g.reg, g.Recorder)
	if err != nil {
		return err
	}
	defer fed.close()
	engine, err := pipeline.New(wal, g.sources, sinks, pipeline.Options{
		Logger: g.log, Registerer: g.reg, DeadLetters: dl, Factory: g.cfg.Gateway.Factory, Tap: mods.tap(),
	})
	if err != nil {
		return err
	}

	grp, gctx := errgroup.WithContext(ctx)
	grp.Go(func() error { return engine.Run(gctx) })
	if lin != nil {
		g.recorder.Store(lin.outbox)
		defer g.recorder.Store(nil)
		grp.Go(func() error { return lin.outbox.Run(gctx) })
	}
	if mods != nil {
		mods.start(gctx, grp)
	}
	if fed != nil {
		grp.Go(func() error { return fed.run(gctx) })
	}
	if addr := g.cfg.Gateway.HTTP.Listen; addr != "" {
		srv := api.New(addr, g.reg, engine.Ready, g.cfg.Gateway.HTTP.Pprof, g.log.With("component", "api")).WithTLS(apiTLS)
		mods.serve(srv)
		fed.serve(srv)
		grp.Go(func() error { return srv.Run(gctx) })
	}
	g.log.Info("gateway started", "factory", g.cfg.Gateway.Factory, "sources", len(g.sources), "sinks", len(sinks),
		"state_dir", g.cfg.Gateway.StateDir)
	err = grp.Wait()
	if lin != nil {
		// Records made while stopping (the alarm log's last digest) are anchored now when
		// the ledger answers in time; otherwise they wait in the outbox for the next start.
		dctx, cancel := context.WithTimeout(context.Background(), stopDrainTimeout)
		if derr := lin.outbox.Drain(dctx); derr != nil {
			g.log.Warn("ledger records not anchored at stop", "err", derr)
		}
		cancel()
	}
	g.log.Info("gateway stopped")
	return err
}

// stopDrainTimeout bounds how long a stopping gateway waits for the ledger to take the
// records still queued.
const stopDrainTimeout = 5 * time.Second

// lazyDeadLetters lets connectors be built (in New, without I/O) before the dead-letter file
// is opened (in Run). Nothing is put before Run, because connectors do not read before then.
type lazyDeadLetters struct {
	store connectors.DeadLetters
}

func (l *lazyDeadLetters) set(s connectors.DeadLetters) { l.store = s }

func (l *lazyDeadLetters) Put(ctx context.Context, d connectors.DeadLetter) {
	if l.store != nil {
		l.store.Put(ctx, d)
	}
}
