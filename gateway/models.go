package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/connectors/influxdb"
	"github.com/millwright-io/millwright/gateway/api"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/backoff"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/models/alarmlog"
	"github.com/millwright-io/millwright/models/score"
	"github.com/millwright-io/millwright/models/store"
	"github.com/millwright-io/millwright/models/train"
)

// ModelsConfig configures the gateway's anomaly models: training each machine's model
// from its history in the local InfluxDB, and scoring every window live with alarms.
type ModelsConfig struct {
	// Enabled turns training and live scoring on.
	Enabled bool `yaml:"enabled"`
	// Dir is the artifact store: each machine's trained models, its current and previous
	// one (default <state_dir>/models).
	Dir string `yaml:"dir"`
	// InfluxDB names the InfluxDB sink whose server holds the history and receives the
	// scores (default: the first InfluxDB sink).
	InfluxDB string `yaml:"influxdb"`
	// Train configures the schedule, data window, features and detector.
	Train train.Config `yaml:"train"`
	// Score configures live scoring, the alarm's debouncing and the score measurement.
	Score score.Config `yaml:"score"`
	// MQTT is the broker alarms are published to; without it alarms are only logged,
	// written to InfluxDB and shown on the HTTP API.
	MQTT *AlarmMQTTConfig `yaml:"mqtt"`
	// AlarmLog keeps every alarm message in a file per period and records each period's
	// digest in the ledger (dir default <state_dir>/alarms, period 24h).
	AlarmLog alarmlog.Config `yaml:"alarm_log"`
}

// AlarmMQTTConfig is the broker the alarms go to.
type AlarmMQTTConfig struct {
	Server   string        `yaml:"server"`
	ClientID string        `yaml:"client_id"`
	Username string        `yaml:"username"`
	Password config.Secret `yaml:"password"`
	QoS      int           `yaml:"qos"`
	TLS      config.TLS    `yaml:"tls"`
	// Queue bounds the alarm messages kept while the broker is unreachable (default
	// 1000); when it is full the oldest is dropped and counted.
	Queue int `yaml:"queue"`
}

// SetDefaults fills the defaults in.
func (c *ModelsConfig) SetDefaults() {
	c.Train.SetDefaults()
	c.Score.SetDefaults()
	c.AlarmLog.SetDefaults()
}

// SetDefaults fills the defaults in.
func (c *AlarmMQTTConfig) SetDefaults() { c.QoS, c.Queue = 1, 1000 }

// validate reports every problem at once, with paths relative to the block.
func (c ModelsConfig) validate(sinks []SinkConfig) error {
	if !c.Enabled {
		return nil
	}
	var p config.Problems
	if _, err := c.influx(sinks); err != nil {
		p.Addf("influxdb", "%v", err)
	}
	if len(c.Train.Machines) == 0 {
		p.Addf("train.machines", "empty; expected the machines to learn models for")
	}
	p.Nest("train", c.Train.Validate())
	p.Nest("score", c.Score.Validate())
	p.Nest("alarm_log", c.AlarmLog.Validate())
	if m := c.MQTT; m != nil {
		if m.Server == "" {
			p.Addf("mqtt.server", "must be set, such as tcp://127.0.0.1:1883")
		}
		if m.QoS < 0 || m.QoS > 2 {
			p.Addf("mqtt.qos", "%d is not 0, 1 or 2", m.QoS)
		}
		if m.Queue < 1 || m.Queue > 1<<20 {
			p.Addf("mqtt.queue", "queue %d is out of range; expected 1 to %d alarm messages", m.Queue, 1<<20)
		}
		p.Nest("mqtt.tls", m.TLS.Validate())
	}
	return p.Err()
}

// influx returns the configuration of the InfluxDB sink the models use.
func (c ModelsConfig) influx(sinks []SinkConfig) (influxdb.Config, error) {
	for _, s := range sinks {
		if s.InfluxDB != nil && (c.InfluxDB == "" || s.Name == c.InfluxDB) {
			return *s.InfluxDB, nil
		}
	}
	if c.InfluxDB == "" {
		return influxdb.Config{}, fmt.Errorf("no InfluxDB sink; the models need one to read history from")
	}
	return influxdb.Config{}, fmt.Errorf("%q is not the name of an InfluxDB sink", c.InfluxDB)
}

// resolve fills the defaults that come from the gateway's settings and sinks.
func (c *ModelsConfig) resolve(s Settings, sinks []SinkConfig) {
	c.Dir = statePath(s.StateDir, c.Dir, "models")
	c.AlarmLog.Dir = statePath(s.StateDir, c.AlarmLog.Dir, "alarms")
	if ic, err := c.influx(sinks); err == nil {
		if c.Train.Bucket == "" {
			c.Train.Bucket = ic.Bucket
		}
	}
}

// modelsRuntime is the running trainer and scorer of a gateway.
type modelsRuntime struct {
	cfg     ModelsConfig
	log     *slog.Logger
	scorer  *score.Scorer
	trainer *train.Trainer
	querier *influxdb.Querier
	store   *store.Dir
	scores  *influxdb.Sink
	outbox  *alarmOutbox // the alarms' MQTT output, nil without models.mqtt
	alarms  *alarmlog.Log

	// machines are the machines whose promoted models the scorer runs from the start: the
	// trained ones and the federations' (a federation trains its machines through this
	// trainer, which judges each new model against the one the scorer runs).
	machines []string
}

// newModels opens the artifact store and builds the trainer and the scorer (no network
// I/O); nil when the models are off. Run calls it once the state directory exists.
func newModels(c Config, log *slog.Logger, reg prometheus.Registerer, recorder func() ledger.Recorder) (*modelsRuntime, error) {
	mc := c.Models
	if !mc.Enabled {
		return nil, nil
	}
	log = log.With("component", "models")
	ic, err := mc.influx(c.Sinks)
	if err != nil {
		return nil, err
	}
	rt := &modelsRuntime{cfg: mc, log: log, machines: slices.Clone(mc.Train.Machines)}
	if c.Federation.Enabled {
		for _, f := range c.Federation.Federations {
			rt.machines = append(rt.machines, f.Machines...)
		}
		slices.Sort(rt.machines)
		rt.machines = slices.Compact(rt.machines)
	}
	if rt.store, rt.querier, err = openHistory(c); err != nil {
		return nil, err
	}
	if rt.alarms, err = alarmlog.Open(mc.AlarmLog, alarmlog.Options{Recorder: recorder, Logger: log.With("name", "alarm_log"), Registerer: reg}); err != nil {
		return nil, fmt.Errorf("models: %w", err)
	}
	opts := score.Options{Logger: log.With("name", "scorer"), Registerer: reg, Log: rt.alarms}
	if mc.Score.Measurement != "" {
		sc := ic
		sc.Measurement = mc.Score.Measurement
		if rt.scores, err = influxdb.New("scores", sc, connectors.Env{Logger: log.With("name", "scores"), Registerer: reg}); err != nil {
			return nil, fmt.Errorf("models: %w", err)
		}
		opts.Points = rt.scores
	}
	if m := mc.MQTT; m != nil {
		if rt.outbox, err = newAlarmOutbox(*m, c.Gateway.Factory, log.With("name", "alarm_mqtt"), reg); err != nil {
			return nil, fmt.Errorf("models: mqtt: %w", err)
		}
		opts.Alarms = rt.outbox
	}
	if rt.scorer, err = score.New(mc.Score, c.Gateway.Factory, opts); err != nil {
		return nil, err
	}
	rt.trainer, err = train.New(mc.Train, train.Options{
		Querier: rt.querier, Store: rt.store, Factory: c.Gateway.Factory,
		Current: rt.scorer.Model, Install: rt.scorer.Install, Recorder: recorder,
		Logger: log.With("name", "trainer"), Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	return rt, nil
}

// tap is the pipeline's hook: every durable batch is offered to the scorer.
func (rt *modelsRuntime) tap() func(telemetry.Batch) {
	if rt == nil {
		return nil
	}
	return rt.scorer.Offer
}

// start loads the installed models, connects the outputs and runs the scorer and the
// trainer under grp. A failed connection is logged: scoring goes on and the failed
// writes or publishes are counted.
func (rt *modelsRuntime) start(ctx context.Context, grp *errgroup.Group) {
	rt.scorer.Load(rt.store, rt.machines)
	if rt.scores != nil {
		grp.Go(func() error { rt.connectScores(ctx); return nil })
	}
	// The alarm log closes its period, and the alarm output drains its queue, only once
	// the scorer has stopped, so an alarm the scorer publishes while stopping is still in
	// the period's file and its digest, and still published.
	then := []func(context.Context) error{rt.alarms.Run}
	if rt.outbox != nil {
		then = append(then, rt.outbox.Run)
	}
	runThen(ctx, grp, rt.scorer.Run, then...)
	grp.Go(func() error { return rt.trainer.Run(ctx) })
	rt.log.Info("models running", "machines", len(rt.machines), "dir", filepath.Clean(rt.cfg.Dir))
}

// runThen runs first and each of then under grp, all until ctx ends, but then's context
// ends only once first has returned: what first does while it stops, then still takes.
func runThen(ctx context.Context, grp *errgroup.Group, first func(context.Context) error, then ...func(context.Context) error) {
	thenCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	grp.Go(func() error { defer stop(); return first(ctx) })
	for _, f := range then {
		grp.Go(func() error { return f(thenCtx) })
	}
}

// connectScores connects the scores' InfluxDB output, retrying with backoff until it
// succeeds or ctx ends. Until then the scores that cannot be written are counted and
// dropped; scoring goes on. (The alarms' MQTT output keeps its own connection: see
// alarmOutbox.)
func (rt *modelsRuntime) connectScores(ctx context.Context) {
	bo := backoff.Backoff{Initial: time.Second, Max: time.Minute}
	log := rt.log.With("output", "influxdb")
	if backoff.Retry(ctx, &bo, log, "cannot connect the scores output, retrying; meanwhile the scores are dropped and counted",
		rt.scores.Connect, nil) && bo.Attempts() > 0 {
		log.Info("scores output connected after retries", "attempts", bo.Attempts()+1)
	}
}

// serve adds the models' endpoints to the HTTP API.
func (rt *modelsRuntime) serve(srv *api.Server) {
	if rt == nil {
		return
	}
	srv.HandleJSON("/api/v1/alarms", func() any { return rt.scorer.States() })
	srv.HandleJSON("/api/v1/models", func() any { return rt.scorer.Models() })
	if rt.outbox != nil {
		srv.HandleJSON("/api/v1/alarms/mqtt", func() any { return rt.outbox.Status() })
	}
}

// close releases the outputs after the services stopped.
func (rt *modelsRuntime) close() {
	if rt == nil {
		return
	}
	if rt.scores != nil {
		_ = rt.scores.Close(context.Background())
	}
	if rt.outbox != nil {
		rt.outbox.close()
	}
	rt.querier.Close()
}

// Trainer builds a trainer for running one training by hand (millwright models train),
// with no scorer: a model that validates at least as well as the current one is promoted
// in the artifact store, where a running gateway picks it up on its next start. The
// caller calls the returned function to release the querier.
func Trainer(c Config, log *slog.Logger, recorder func() ledger.Recorder) (*train.Trainer, func(), error) {
	dir, q, err := openHistory(c)
	if err != nil {
		return nil, nil, err
	}
	tr, err := train.New(c.Models.Train, train.Options{
		Querier: q, Store: dir, Factory: c.Gateway.Factory, Recorder: recorder, Logger: log,
		Current: train.StoreCurrent(dir),
	})
	if err != nil {
		q.Close()
		return nil, nil, err
	}
	return tr, q.Close, nil
}

// openHistory opens what every trainer of the gateway reads and writes: the artifact
// store and a Flux querier of the InfluxDB sink holding the history.
func openHistory(c Config) (*store.Dir, *influxdb.Querier, error) {
	ic, err := c.Models.influx(c.Sinks)
	if err != nil {
		return nil, nil, err
	}
	dir, err := store.OpenDir(c.Models.Dir)
	if err != nil {
		return nil, nil, err
	}
	q, err := influxdb.NewQuerier(ic)
	if err != nil {
		return nil, nil, err
	}
	return dir, q, nil
}
