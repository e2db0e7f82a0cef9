package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/connectors/influxdb"
	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/connectors/opcua"
	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/connectors/sparkplug"
	"github.com/millwright-io/millwright/gateway"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/models/alarmlog"
	"github.com/millwright-io/millwright/models/score"
	"github.com/millwright-io/millwright/models/store"
)

// demoOptions are the demo's flags.
type demoOptions struct {
	mqttURL, influxURL, db string
	httpAddr, stateDir     string
	history                time.Duration // normal history backfilled for training
	duration               time.Duration // longest live phase
	rate                   int           // samples per second per machine (the models' grid step is 1/rate)
	machines               int           // machines publishing MQTT JSON (the second one develops the fault)
	opcuaMachines          int           // machines served by the embedded OPC-UA simulator
	sparkplugMachines      int           // machines of a Sparkplug B edge node
	seed                   uint64
	logLevel               string // the gateway's log level (to standard error)
	federation             bool   // run step 5
	fedRounds              int    // federated rounds of step 5
}

// demoResult is what a demo run read back from the real systems; the test asserts on it.
type demoResult struct {
	Factory  string
	StateDir string
	Stored   map[string]int64 // points per machine in InfluxDB after step 1
	BySource map[string]int64 // the same, per source (mqtt, opcua)
	Expected int64            // MQTT points published in step 1
	Models   map[string]score.ModelInfo
	Faulty   string
	Raised   []score.AlarmMessage // alarms received on MQTT, in order
	States   []score.State        // /api/v1/alarms at the end of the live phase
	Records  map[ledger.Type]int  // local ledger records by type
	// AlarmsDigested is the alarms counted by the alarm_digest records, each checked
	// against its alarm log file.
	AlarmsDigested int64
	Lineage        int // records in the faulty machine's lineage tree
	Verified       audit.Result
	Wall           time.Duration
	FirstWarn      time.Duration // alarm time minus the fault's onset (source time)
	// Federation is what step 5 read back (nil when it did not run).
	Federation *demoFederationResult
}

// Demo layout: the second MQTT machine develops the fault; the OPC-UA machines are on
// their own line.
const (
	demoFaultAfter = 12 * time.Second // fault onset after the live phase starts
	demoFaultRamp  = 20 * time.Second // onset to full severity
	demoSettle     = 8 * time.Second  // live time kept after the alarm, to show the others stay quiet
	demoAlarmQueue = 64               // alarm messages buffered for printing
	demoLiveGrace  = 20 * time.Second // how long step 1 waits for the live OPC-UA and Sparkplug lines after the MQTT history
)

var demoKinds = []sim.Kind{sim.KindPump, sim.KindPump, sim.KindSpindle, sim.KindMotor}

// demoMQTTMachines returns n machines publishing MQTT JSON, two per line; machine 1
// (pump-2) gets the bearing wear when fault is true.
func demoMQTTMachines(n int, fault bool) []sim.Machine {
	ms := make([]sim.Machine, n)
	count := map[sim.Kind]int{}
	for i := range ms {
		k := demoKinds[i%len(demoKinds)]
		count[k]++
		ms[i] = sim.Machine{ID: fmt.Sprintf("%s-%d", k, count[k]), Line: fmt.Sprintf("line-%d", i/2+1), Kind: k}
	}
	if fault {
		ms[1].Faults = []sim.Fault{{Kind: sim.FaultBearingWear, Onset: demoFaultAfter, Ramp: demoFaultRamp}}
	}
	return ms
}

// demoSparkplugMachines returns the n (at most 2) machines of the Sparkplug B line.
func demoSparkplugMachines(n int) []sim.Machine {
	all := []sim.Machine{
		{ID: "packer-motor", Line: "line-sp", Kind: sim.KindMotor},
		{ID: "wrap-spindle", Line: "line-sp", Kind: sim.KindSpindle},
	}
	return all[:n]
}

// demoOPCUAMachines returns the n (at most 2) machines of the OPC-UA line.
func demoOPCUAMachines(n int) []sim.Machine {
	all := []sim.Machine{
		{ID: "press-pump", Line: "line-ua", Kind: sim.KindPump},
		{ID: "fan-motor", Line: "line-ua", Kind: sim.KindMotor},
	}
	return all[:n]
}

const demoUsage = `usage: millwright demo [flags]

A simulated plant end to end, against the MQTT broker and InfluxDB of the flags: ingest,
training, an alarm, the lineage in a local ledger and, with -federation, a federation of
three factories.

Flags:
`

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	var o demoOptions
	fs.StringVar(&o.mqttURL, "mqtt", "tcp://127.0.0.1:1883", "MQTT broker: the simulated machines publish to it, the gateway reads from it and publishes alarms to it")
	fs.StringVar(&o.influxURL, "influx", "http://127.0.0.1:8086", "InfluxDB the gateway writes to and trains from")
	fs.StringVar(&o.db, "db", "millwright", "InfluxDB database (bucket)")
	fs.StringVar(&o.httpAddr, "http", "127.0.0.1:9273", "gateway HTTP API (/metrics, /api/v1/alarms, /api/v1/models)")
	fs.StringVar(&o.stateDir, "state", "", "state directory, kept afterwards for the audit commands (default: a new temporary one)")
	fs.DurationVar(&o.history, "history", 30*time.Minute, "normal history backfilled for training (at -rate, sent as fast as the broker takes it)")
	fs.DurationVar(&o.duration, "duration", 45*time.Second, "longest live phase; it ends "+demoSettle.String()+" after the alarm")
	fs.IntVar(&o.rate, "rate", 5, "samples per second per machine; the models' grid step is 1/rate")
	fs.IntVar(&o.machines, "machines", 4, "machines publishing MQTT JSON (2 to 40); the second one, pump-2, develops bearing wear")
	fs.IntVar(&o.opcuaMachines, "opcua", 2, "machines served over OPC-UA by the embedded simulator (0 to 2)")
	fs.IntVar(&o.sparkplugMachines, "sparkplug", 1, "machines of a Sparkplug B edge node during step 1 (0 to 2)")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the simulated plant: the same seed gives the same signals")
	fs.BoolVar(&o.federation, "federation", true, "run step 5: an embedded federation hub and three factory gateways train one shared model")
	fs.IntVar(&o.fedRounds, "federation-rounds", 2, "federated rounds of step 5 (1 to 3)")
	fs.StringVar(&o.logLevel, "log-level", "error", "the gateway's log level on standard error: debug, info, warn or error")
	if code, ok := parseOnlyFlags(fs, demoUsage, args, stdout, stderr); !ok {
		return code
	}
	if err := o.validate(); err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 2
	}
	res, err := runDemo(ctx, o, stdout, stderr)
	if res.Wall > 0 {
		fmt.Fprintf(stdout, "\ndemo wall time: %.1fs\n", res.Wall.Seconds())
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "demo: interrupted; state kept in", res.StateDir)
		} else {
			fmt.Fprintln(stderr, "demo:", err)
		}
		return 1
	}
	return 0
}

// validate reports every out-of-range flag at once.
func (o demoOptions) validate() error {
	var errs []error
	if o.rate < 1 || o.rate > 50 {
		errs = append(errs, fmt.Errorf("-rate %d is out of range; expected 1 to 50 samples per second", o.rate))
	}
	if o.machines < 2 || o.machines > 40 {
		errs = append(errs, fmt.Errorf("-machines %d is out of range; expected 2 to 40", o.machines))
	}
	if o.opcuaMachines < 0 || o.opcuaMachines > 2 {
		errs = append(errs, fmt.Errorf("-opcua %d is out of range; expected 0 to 2", o.opcuaMachines))
	}
	if o.sparkplugMachines < 0 || o.sparkplugMachines > 2 {
		errs = append(errs, fmt.Errorf("-sparkplug %d is out of range; expected 0 to 2", o.sparkplugMachines))
	}
	if o.history < 2*time.Minute || o.history > 24*time.Hour {
		errs = append(errs, fmt.Errorf("-history %s is out of range; expected 2m to 24h", o.history))
	}
	if o.duration < demoFaultAfter+10*time.Second {
		errs = append(errs, fmt.Errorf("-duration %s is too short; expected at least %s (the fault starts %s into the live phase)", o.duration, demoFaultAfter+10*time.Second, demoFaultAfter))
	}
	if o.federation && (o.fedRounds < 1 || o.fedRounds > 3) {
		errs = append(errs, fmt.Errorf("-federation-rounds %d is out of range; expected 1 to 3", o.fedRounds))
	}
	switch o.logLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("-log-level %q is not a level; expected debug, info, warn or error", o.logLevel))
	}
	return errors.Join(errs...)
}

// level returns the slog level of o.logLevel (validate has checked it).
func (o demoOptions) level() slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(o.logLevel))
	return l
}

// demo is one run of the demo.
type demo struct {
	o        demoOptions
	out      io.Writer
	errOut   io.Writer // the embedded hub's log
	log      *slog.Logger
	factory  string
	interval time.Duration
	mqttMs   []sim.Machine
	uaMs     []sim.Machine
	spMs     []sim.Machine
	uaURL    string
	pub      *mqtt.Publisher
	res      demoResult
}

// runDemo runs the five steps. It returns what it read back even when a step failed.
func runDemo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) (demoResult, error) {
	start := time.Now()
	// gopcua's server (the embedded OPC-UA simulator) logs its start-up through the standard
	// logger; the demo's output is its own.
	log.SetOutput(io.Discard)
	defer log.SetOutput(os.Stderr)
	d := &demo{
		o: o, out: stdout, errOut: stderr, interval: time.Second / time.Duration(o.rate),
		log:     slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.level()})),
		factory: fmt.Sprintf("demo-%d", start.Unix()),
		mqttMs:  demoMQTTMachines(o.machines, false),
		uaMs:    demoOPCUAMachines(o.opcuaMachines),
		spMs:    demoSparkplugMachines(o.sparkplugMachines),
	}
	d.res.Factory = d.factory
	d.res.Faulty = d.mqttMs[1].ID
	err := d.run(ctx)
	d.res.Wall = time.Since(start)
	return d.res, err
}

func (d *demo) run(ctx context.Context) error {
	o := d.o
	if o.stateDir == "" {
		dir, err := os.MkdirTemp("", "millwright-demo-")
		if err != nil {
			return err
		}
		o.stateDir = dir
		d.o.stateDir = dir
	}
	d.res.StateDir = o.stateDir
	fmt.Fprintf(d.out, "Millwright demo  (factory %q, state in %s)\n", d.factory, o.stateDir)
	fmt.Fprintf(d.out, "  MQTT %s   InfluxDB %s (database %q)   gateway API http://%s\n", o.mqttURL, o.influxURL, o.db, o.httpAddr)

	// The machines' own MQTT connection; it also receives the alarms.
	pub, err := mqtt.NewPublisher(mqtt.PublisherConfig{Server: o.mqttURL, ClientID: "millwright-demo-machines-" + d.factory, QoS: 1})
	if err != nil {
		return err
	}
	if err := pub.Connect(ctx); err != nil {
		return fmt.Errorf("cannot reach the MQTT broker %s (is `make services` running?): %w", o.mqttURL, err)
	}
	defer pub.Close()
	d.pub = pub
	defer d.clearSparkplugState(ctx) // after the gateway has stopped (deferred calls run last first)

	if len(d.uaMs) > 0 {
		plant, err := sim.New(sim.Config{Seed: o.seed, Interval: d.interval, Machines: d.uaMs})
		if err != nil {
			return err
		}
		srv, err := opcua.NewSimServer(plant, opcua.SimServerOptions{Interval: d.interval})
		if err != nil {
			return err
		}
		if err := srv.Start(ctx); err != nil {
			return err
		}
		defer srv.Close()
		d.uaURL = srv.URL()
	}

	if err := d.ingest(ctx); err != nil {
		return fmt.Errorf("step 1: %w", err)
	}
	g, err := d.startGateway(ctx, true)
	if err != nil {
		return fmt.Errorf("step 2: %w", err)
	}
	defer g.stop()
	if err := d.train(ctx, g); err != nil {
		return fmt.Errorf("step 2: %w", err)
	}
	if err := d.live(ctx, g); err != nil {
		return fmt.Errorf("step 3: %w", err)
	}
	if err := d.lineage(ctx, g); err != nil {
		return fmt.Errorf("step 4: %w", err)
	}
	if !o.federation {
		fmt.Fprintln(d.out, "\n5. Federation between factories: skipped (-federation=false)")
		return nil
	}
	if err := d.federate(ctx, g); err != nil {
		return fmt.Errorf("step 5: %w", err)
	}
	return nil
}

// config returns the gateway's configuration; models adds the models block.
func (d *demo) config(models bool) (gateway.Config, error) {
	o := d.o
	var b strings.Builder
	fmt.Fprintf(&b, `
gateway:
  factory: %s
  state_dir: %q
  http: {listen: %q}
  log: {level: %s}
sources:
%s`, d.factory, o.stateDir, o.httpAddr, o.logLevel, demoMQTTSource(o.mqttURL, "millwright-demo-gateway-"+d.factory, "{factory}"))
	if d.uaURL != "" {
		fmt.Fprintf(&b, `  - name: machines-opcua
    opcua:
      endpoint: %q
      subscription: {publishing_interval: %s}
      browse: [{include: ["Plant/**"]}]
      mapping: [{match: '^Plant/(?P<line>[^/]+)/(?P<machine>[^/]+)/(?P<signal>.+)$'}]
`, d.uaURL, d.interval)
	}
	if len(d.spMs) > 0 {
		fmt.Fprintf(&b, `  - name: machines-sparkplug
    sparkplug:
      mqtt: {servers: [%q], client_id: %q}
      host_id: %q
      groups: [%q]
      map: {rules: [{line: %s}]}
`, o.mqttURL, "millwright-demo-sphost-"+d.factory, d.spHost(), d.spGroup(), d.spMs[0].Line)
	}
	fmt.Fprintf(&b, `sinks:
  - name: influx
    influxdb: {url: %q, bucket: %q, flush_interval: 200ms}
`, o.influxURL, o.db)
	if models {
		ids := make([]string, len(d.mqttMs))
		for i, m := range d.mqttMs {
			ids[i] = m.ID
		}
		rows := int(o.history / d.interval)
		fmt.Fprintf(&b, `models:
  enabled: true
  train:
    machines: [%s]
    interval: 24h
    window: %s
    min_rows: %d
    chunk: %s
    features: {step: %s}
  score: {topic_prefix: millwright}
  mqtt: {server: %q, client_id: %q}
`, strings.Join(ids, ", "), o.history+5*time.Minute, rows/2, max(o.history/4, time.Minute), d.interval, o.mqttURL, "millwright-demo-alarms-"+d.factory)
	}
	return gateway.Parse([]byte(b.String()))
}

// demoMQTTSource is the YAML of the source that reads the machines' MQTT JSON of factory
// (a name, or {factory} to take it from the topic).
func demoMQTTSource(server, clientID, factory string) string {
	return fmt.Sprintf(`  - name: machines-mqtt
    mqtt:
      servers: [%q]
      client_id: %q
      clean_session: true
      topics:
        - pattern: "demo/%s/{line}/{machine}/telemetry"
          qos: 1
`, server, clientID, factory)
}

// runningGateway is a gateway running in its own goroutine, owned by the demo.
type runningGateway struct {
	*gateway.Gateway
	cfg    gateway.Config
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func (d *demo) startGateway(ctx context.Context, models bool) (*runningGateway, error) {
	cfg, err := d.config(models)
	if err != nil {
		return nil, fmt.Errorf("demo configuration: %w", err)
	}
	return d.startConfigured(ctx, cfg)
}

// stop stops the gateway and waits for it; it may be called more than once.
func (r *runningGateway) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
	})
	return r.err
}

// failed returns the gateway's error if it stopped on its own.
func (r *runningGateway) failed() error {
	select {
	case err := <-r.done:
		r.once.Do(func() { r.err = err })
		if err == nil {
			err = errors.New("the gateway stopped")
		}
		return fmt.Errorf("gateway: %w", err)
	default:
		return nil
	}
}

// ingest is step 1 (and the data of step 2): the MQTT machines publish their normal
// history with its own timestamps as fast as the broker takes it, then a few live seconds;
// the OPC-UA machines are live. The gateway stores everything; Flux counts it back.
func (d *demo) ingest(ctx context.Context) error {
	o := d.o
	fmt.Fprintf(d.out, "\n1. Simulated plant -> gateway -> InfluxDB\n")
	fmt.Fprintf(d.out, "   MQTT JSON:   %s\n", orNone(machineIDs(d.mqttMs)))
	if len(d.uaMs) > 0 {
		fmt.Fprintf(d.out, "   OPC-UA:      %s (embedded simulator at %s)\n", machineIDs(d.uaMs), d.uaURL)
	}
	if len(d.spMs) > 0 {
		fmt.Fprintf(d.out, "   Sparkplug B: %s (edge node %s/edge-1)\n", machineIDs(d.spMs), d.spGroup())
	}
	fmt.Fprintf(d.out, "   the MQTT machines first send %s of normal history at %d samples/s, stamped in the past\n", o.history, o.rate)
	g, err := d.startGateway(ctx, false)
	if err != nil {
		return err
	}
	defer g.stop()

	plant, err := sim.New(sim.Config{Seed: o.seed, Interval: d.interval, Machines: d.mqttMs})
	if err != nil {
		return err
	}
	since := time.Now().Truncate(d.interval).Add(-o.history)
	steps := int((o.history + 5*time.Second) / d.interval)
	runner, err := sim.NewRunner(plant, d.pub, sim.RunOptions{Start: since, Steps: steps, Topic: d.topic})
	if err != nil {
		return err
	}
	spCtx, stopSparkplug := context.WithCancel(ctx)
	spDone := make(chan error, 1)
	if len(d.spMs) > 0 {
		go func() { spDone <- d.runSparkplug(spCtx) }()
	} else {
		spDone <- nil
	}
	err = d.runPlant(ctx, g, runner, "history + live")
	stopSparkplug()
	if spErr := <-spDone; err == nil && spErr != nil {
		err = fmt.Errorf("sparkplug edge node: %w", spErr)
	}
	if err != nil {
		return err
	}
	if err := d.pub.Flush(ctx); err != nil {
		return err
	}
	st := runner.Stats()
	if st.Failed > 0 {
		return fmt.Errorf("%d of %d messages were not accepted by the broker", st.Failed, st.Published)
	}
	for _, m := range d.mqttMs {
		d.res.Expected += int64(steps * len(m.Kind.Signals()))
	}

	q, err := influxdb.NewQuerier(*g.cfg.Sinks[0].InfluxDB)
	if err != nil {
		return err
	}
	defer q.Close()
	all := slices.Concat(d.mqttMs, d.uaMs, d.spMs)
	// Every MQTT point must arrive (90 s at most); the live OPC-UA and Sparkplug lines get
	// demoLiveGrace more to show up, after which the demo goes on and says which is missing.
	deadline := time.Now().Add(90 * time.Second)
	var mqttDone time.Time
	for {
		d.res.Stored, err = countPoints(ctx, q, o.db, d.factory, since, all)
		if err == nil && mqttDone.IsZero() && sumPoints(d.res.Stored, d.mqttMs) >= d.res.Expected {
			mqttDone = time.Now()
		}
		live := (len(d.uaMs) == 0 || sumPoints(d.res.Stored, d.uaMs) > 0) && (len(d.spMs) == 0 || sumPoints(d.res.Stored, d.spMs) > 0)
		if !mqttDone.IsZero() && (live || time.Since(mqttDone) > demoLiveGrace) {
			break
		}
		if err := g.failed(); err != nil {
			return err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err == nil {
				err = fmt.Errorf("%d of %d MQTT points arrived in InfluxDB within 90s", sumPoints(d.res.Stored, d.mqttMs), d.res.Expected)
			}
			return err
		}
		sleep(ctx, time.Second)
	}
	d.res.BySource = map[string]int64{"mqtt": sumPoints(d.res.Stored, d.mqttMs), "opcua": sumPoints(d.res.Stored, d.uaMs), "sparkplug": sumPoints(d.res.Stored, d.spMs)}
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "   source\tmachine\tpoints in InfluxDB (Flux count)")
	for i, m := range all {
		src := "mqtt"
		switch {
		case i >= len(d.mqttMs)+len(d.uaMs):
			src = "sparkplug"
		case i >= len(d.mqttMs):
			src = "opcua"
		}
		fmt.Fprintf(tw, "   %s\t%s\t%d\n", src, m.ID, d.res.Stored[m.ID])
	}
	tw.Flush()
	fmt.Fprintf(d.out, "   => MQTT JSON: %d of %d published points stored; OPC-UA: %d points; Sparkplug B: %d points\n",
		d.res.BySource["mqtt"], d.res.Expected, d.res.BySource["opcua"], d.res.BySource["sparkplug"])
	for _, src := range []struct {
		name string
		ms   []sim.Machine
	}{{"opcua", d.uaMs}, {"sparkplug", d.spMs}} {
		if len(src.ms) > 0 && d.res.BySource[src.name] == 0 {
			fmt.Fprintf(d.out, "   WARNING: no %s point arrived within %s; the demo goes on without them (rerun with -log-level info to see why)\n", src.name, demoLiveGrace)
		}
	}
	return g.stop()
}

// spGroup and spHost are the Sparkplug group and host application ids, unique to the run.
func (d *demo) spGroup() string { return "sp-" + d.factory }
func (d *demo) spHost() string  { return "millwright-" + d.factory }

// runSparkplug publishes the Sparkplug line live until ctx ends, as an edge node with its
// own connection and NDEATH will.
func (d *demo) runSparkplug(ctx context.Context) error {
	will, payload := sim.SparkplugDeath(d.spGroup(), "edge-1", 0)
	c, err := mqtt.NewPublisher(mqtt.PublisherConfig{Server: d.o.mqttURL, ClientID: "millwright-demo-edge-" + d.factory, QoS: 1,
		Will: &mqtt.Message{Topic: will, Payload: payload, QoS: 1}})
	if err != nil {
		return err
	}
	if err := c.Connect(ctx); err != nil {
		return err
	}
	defer c.Close()
	plant, err := sim.New(sim.Config{Seed: d.o.seed, Interval: d.interval, Machines: d.spMs})
	if err != nil {
		return err
	}
	r, err := sim.NewSparkplugRunner(plant, c, sim.SparkplugOptions{Group: d.spGroup(), EdgeNode: "edge-1", Interval: d.interval})
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// clearSparkplugState removes the retained STATE message the gateway's Sparkplug host
// leaves on the broker.
func (d *demo) clearSparkplugState(ctx context.Context) {
	if len(d.spMs) > 0 {
		_ = d.pub.PublishRetained(context.WithoutCancel(ctx), sparkplug.StateTopic(d.spHost()), nil)
	}
}

func (d *demo) topic(s sim.Sample) string {
	return "demo/" + d.factory + "/" + s.Line + "/" + s.Machine + "/telemetry"
}

// runPlant runs r until it finishes, printing progress every 2 s.
func (d *demo) runPlant(ctx context.Context, g *runningGateway, r *sim.Runner, what string) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	start := time.Now()
	for {
		select {
		case err := <-done:
			fmt.Fprintf(d.out, "   %5.1fs  %s: %d messages published\n", time.Since(start).Seconds(), what, r.Stats().Published)
			return err
		case <-tick.C:
			if err := g.failed(); err != nil {
				cancel()
				<-done
				return err
			}
			fmt.Fprintf(d.out, "   %5.1fs  %s: %d messages published\n", time.Since(start).Seconds(), what, r.Stats().Published)
		}
	}
}

// train is step 2: the gateway restarts with its models block, trains every MQTT
// machine from InfluxDB and installs the models.
func (d *demo) train(ctx context.Context, g *runningGateway) error {
	fmt.Fprintf(d.out, "\n2. Training: the gateway restarts with `models: enabled: true` and trains one model per machine\n")
	fmt.Fprintf(d.out, "   from its InfluxDB history (detector %s, grid step %s, window %s)\n",
		g.cfg.Models.Train.Detector, g.cfg.Models.Train.Features.Step, g.cfg.Models.Train.Window)
	start := time.Now()
	want := len(d.mqttMs)
	last := ""
	for {
		if err := g.failed(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		done := int(metricSum(g.Registry(), "millwright_model_trainings_total", nil))
		installed := len(d.models())
		line := fmt.Sprintf("trainings finished %d/%d, models installed %d/%d%s", done, want, installed, want, stageProgress(g.Registry()))
		if line != last {
			fmt.Fprintf(d.out, "   %5.1fs  %s\n", time.Since(start).Seconds(), line)
			last = line
		}
		if done >= want {
			if installed < want {
				return fmt.Errorf("%d of %d machines got no model: %v trainings skipped (too little history), %v failed", want-installed, want,
					metricSum(g.Registry(), "millwright_model_trainings_total", map[string]string{"result": "skipped"}),
					metricSum(g.Registry(), "millwright_model_trainings_total", map[string]string{"result": "failed"}))
			}
			break
		}
		if time.Since(start) > 5*time.Minute {
			return errors.New("training did not finish within 5 minutes")
		}
		sleep(ctx, 300*time.Millisecond)
	}
	dir, err := store.OpenDir(g.cfg.Models.Dir)
	if err != nil {
		return err
	}
	d.res.Models = map[string]score.ModelInfo{}
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "   machine\tversion\tdetector\tthreshold\tfalse alarms*\tfaults caught*\tsize\tsha256 (its identity)")
	for _, m := range d.models() {
		d.res.Models[m.Machine] = m
		_, size := d.artifact(dir, m.Machine)
		fmt.Fprintf(tw, "   %s\t%s\t%s\t%.3g\t%.1f%%\t%.0f%%\t%d KB\t%.16s…\n", m.Machine, m.Version, m.Detector, m.Threshold,
			100*m.Metrics["false_alarm_rate"], 100*m.Metrics["detection_rate"], size/1024, m.Hash)
	}
	tw.Flush()
	fmt.Fprintln(d.out, "   * per window on the newest held-out history; faults are synthetic 4-sigma shifts of one signal")
	fmt.Fprintf(d.out, "   artifacts: %s\n", relPath(d.o.stateDir, filepath.Join(g.cfg.Models.Dir, "<machine>", "<sha256>"+store.Ext)))
	fmt.Fprintf(d.out, "   => %d models trained and installed in %.1fs\n", len(d.res.Models), time.Since(start).Seconds())
	return nil
}

// models returns the running models, as GET /api/v1/models shows them.
func (d *demo) models() []score.ModelInfo {
	var ms []score.ModelInfo
	if err := getJSON("http://"+d.o.httpAddr+"/api/v1/models", &ms); err != nil {
		return nil
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Machine < ms[j].Machine })
	return ms
}

// artifact returns the path and size of machine's current artifact.
func (d *demo) artifact(dir *store.Dir, machine string) (string, int64) {
	h, err := dir.Head(machine)
	if err != nil || h.Current == "" {
		return "", 0
	}
	p := dir.Path(machine, h.Current)
	fi, err := os.Stat(p)
	if err != nil {
		return p, 0
	}
	return p, fi.Size()
}

// live is step 3: the plant goes live, pump-2's bearing starts to wear; the scorer raises
// the alarm, which the demo receives over MQTT and reads on the HTTP API.
func (d *demo) live(ctx context.Context, g *runningGateway) error {
	o := d.o
	faulty := d.res.Faulty
	topic := "millwright/" + d.factory + "/+/alarm"
	alarms := make(chan score.AlarmMessage, demoAlarmQueue)
	var dropped atomic.Int64 // overflow policy: an alarm that does not fit is counted, not printed
	if err := d.pub.Subscribe(ctx, topic, 1, func(_ string, payload []byte) {
		var m score.AlarmMessage
		if json.Unmarshal(payload, &m) != nil {
			return
		}
		select {
		case alarms <- m:
		default:
			dropped.Add(1)
		}
	}); err != nil {
		return err
	}
	plant, err := sim.New(sim.Config{Seed: o.seed, Interval: d.interval, Machines: demoMQTTMachines(o.machines, true)})
	if err != nil {
		return err
	}
	start := time.Now().Truncate(d.interval).Add(d.interval)
	onset := start.Add(demoFaultAfter)
	fmt.Fprintf(d.out, "\n3. Live scoring: %s's bearing starts to wear %s into the live phase (full severity %s later)\n", faulty, demoFaultAfter, demoFaultRamp)
	fmt.Fprintf(d.out, "   the demo subscribes to %s and polls http://%s/api/v1/alarms\n", topic, o.httpAddr)
	runner, err := sim.NewRunner(plant, d.pub, sim.RunOptions{Start: start, Steps: int(o.duration / d.interval), Topic: d.topic})
	if err != nil {
		return err
	}
	rctx, stopRunner := context.WithCancel(ctx)
	defer stopRunner()
	done := make(chan error, 1)
	go func() { done <- runner.Run(rctx) }()
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	var end <-chan time.Time
	finished := false
	for !finished {
		select {
		case err := <-done:
			if err != nil {
				return err
			}
			finished = true
		case m := <-alarms:
			d.printAlarm(m, onset)
			if m.State == "raised" {
				d.res.Raised = append(d.res.Raised, m)
				if m.Machine == faulty && end == nil {
					d.res.FirstWarn = m.Time.Sub(onset)
					end = time.After(demoSettle)
				}
			}
		case <-end:
			stopRunner()
			if err := <-done; err != nil {
				return err
			}
			finished = true
		case <-tick.C:
			if err := g.failed(); err != nil {
				return err
			}
			d.printStates(start)
		}
	}
	// Let the last windows be scored and the last alarms arrive.
	sleep(ctx, time.Second)
	for len(alarms) > 0 {
		m := <-alarms
		d.printAlarm(m, onset)
		if m.State == "raised" {
			d.res.Raised = append(d.res.Raised, m)
		}
	}
	if n := dropped.Load(); n > 0 {
		fmt.Fprintf(d.out, "   (%d alarm messages arrived faster than they could be printed and were skipped)\n", n)
	}
	d.res.States = d.printStates(start)
	var active, others []string
	for _, s := range d.res.States {
		if s.Active {
			active = append(active, s.Machine)
		}
	}
	for _, m := range d.res.Raised {
		if m.Machine != faulty {
			others = append(others, m.Machine)
		}
	}
	if !slices.Contains(active, faulty) {
		return fmt.Errorf("no alarm on %s within the live phase (%s); try a longer -duration", faulty, o.duration)
	}
	if len(others) > 0 {
		return fmt.Errorf("healthy machines raised alarms: %v", others)
	}
	var healthy []string
	for _, st := range d.res.States {
		if st.Machine != faulty {
			healthy = append(healthy, st.Machine)
		}
	}
	fmt.Fprintf(d.out, "   => alarm on %s only, %.1fs after the fault's onset; no alarm on %s\n",
		faulty, d.res.FirstWarn.Seconds(), strings.Join(healthy, ", "))
	return nil
}

func (d *demo) printAlarm(m score.AlarmMessage, onset time.Time) {
	top := make([]string, len(m.Top))
	for i, c := range m.Top {
		top[i] = fmt.Sprintf("%s %.0f%%", c.Signal, 100*c.Share)
	}
	fmt.Fprintf(d.out, "   MQTT  millwright/%s/%s/alarm: %s  score %.3g > threshold %.3g  model %s  top signals: %s  (%+.1fs after onset)\n",
		m.Factory, m.Machine, strings.ToUpper(m.State), m.Score, m.Threshold, m.ModelVersion, strings.Join(top, ", "), m.Time.Sub(onset).Seconds())
}

// printStates prints one line of /api/v1/alarms and returns the states.
func (d *demo) printStates(start time.Time) []score.State {
	var st []score.State
	if err := getJSON("http://"+d.o.httpAddr+"/api/v1/alarms", &st); err != nil {
		fmt.Fprintf(d.out, "   API   %v\n", err)
		return nil
	}
	sort.Slice(st, func(i, j int) bool { return st[i].Machine < st[j].Machine })
	parts := make([]string, len(st))
	for i, s := range st {
		mark := ""
		if s.Active {
			mark = " ALARM"
		}
		parts[i] = fmt.Sprintf("%s %.2g/%.2g%s", s.Machine, s.Score, s.Threshold, mark)
	}
	fmt.Fprintf(d.out, "   API   t+%4.1fs  score/threshold: %s\n", time.Since(start).Seconds(), strings.Join(parts, "  "))
	return st
}

// lineage is step 4: once the outbox has anchored the records, the gateway stops and the
// demo audits the faulty machine's model in the local ledger with the audit package.
func (d *demo) lineage(ctx context.Context, g *runningGateway) error {
	want := float64(4 * len(d.res.Models)) // dataset snapshot, training, evaluation, deployment per model
	for deadline := time.Now().Add(30 * time.Second); ; {
		if metricSum(g.Registry(), "millwright_ledger_anchored_total", nil) >= want &&
			metricSum(g.Registry(), "millwright_ledger_outbox_records", nil) == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the ledger outbox anchored %v of %v records", metricSum(g.Registry(), "millwright_ledger_anchored_total", nil), want)
		}
		sleep(ctx, 200*time.Millisecond)
	}
	if err := g.stop(); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	lc := g.cfg.Ledger
	fmt.Fprintf(d.out, "\n4. Lineage: the gateway signed its records and anchored them in its local hash-chained ledger (%s)\n", relPath(d.o.stateDir, lc.Dir))
	l, err := openLedger(lc.Dir)
	if err != nil {
		return err
	}
	defer l.Close()
	recs, err := l.Query(ctx, ledger.Query{})
	if err != nil {
		return err
	}
	d.res.Records = map[ledger.Type]int{}
	for _, r := range recs {
		d.res.Records[r.Header.Type]++
	}
	types := make([]string, 0, len(d.res.Records))
	for t, n := range d.res.Records {
		types = append(types, fmt.Sprintf("%d %s", n, t))
	}
	sort.Strings(types)
	fmt.Fprintf(d.out, "   %d records: %s\n", len(recs), strings.Join(types, ", "))
	if err := d.alarmDigests(recs, g.cfg.Models.AlarmLog.Dir); err != nil {
		return err
	}

	m := d.res.Models[d.res.Faulty]
	ref := ledger.ModelRef{Model: "anomaly." + m.Machine, Version: m.Version}
	tree, err := audit.Lineage(ctx, l, ref)
	if err != nil {
		return err
	}
	d.res.Lineage = len(tree.Records())
	fmt.Fprintf(d.out, "   millwright audit lineage %s@%s:\n", ref.Model, ref.Version)
	var text strings.Builder
	if err := tree.WriteText(&text); err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimRight(text.String(), "\n"), "\n") {
		fmt.Fprintf(d.out, "     %s\n", line)
	}

	keys, err := d.keyring(lc)
	if err != nil {
		return err
	}
	kr, err := loadKeyring(keys)
	if err != nil {
		return err
	}
	dir, err := store.OpenDir(g.cfg.Models.Dir)
	if err != nil {
		return err
	}
	path, _ := d.artifact(dir, m.Machine)
	res, err := audit.VerifyArtifact(ctx, l, path, audit.Options{Keys: kr, Chain: audit.LocalChain(lc.Dir), Now: time.Now, Digest: artifactDigest})
	if err != nil {
		return err
	}
	d.res.Verified = res
	fmt.Fprintf(d.out, "   millwright audit verify %s --ledger %s --keys %s:\n     %s\n", path, lc.Dir, keys, res.Verdict)
	chain := make([]string, len(res.Checked))
	for i, c := range res.Checked {
		chain[i] = string(c.Record.Header.Type)
	}
	fmt.Fprintf(d.out, "     evidence %s: signatures checked against %s", strings.Join(chain, " -> "), relPath(d.o.stateDir, keys))
	if res.Chain != nil {
		fmt.Fprintf(d.out, ", hash chain of %d entries intact", res.Chain.Entries)
	}
	fmt.Fprintln(d.out)
	for _, p := range res.Problems {
		fmt.Fprintf(d.out, "     problem: %s\n", p)
	}
	if !res.OK {
		return fmt.Errorf("the artifact of %s is not verified", m.Machine)
	}
	fmt.Fprintf(d.out, "   The evidence report (EU AI Act mapping) for this model:\n")
	fmt.Fprintf(d.out, "     bin/millwright audit report %s@%s --ledger %s --keys %s --format html --out report.html\n",
		ref.Model, ref.Version, lc.Dir, keys)
	return nil
}

// alarmDigests checks each alarm_digest record among recs against its file in the alarm
// log's directory, as an auditor holding the file would, and says so.
func (d *demo) alarmDigests(recs []ledger.Record, dir string) error {
	for _, rec := range recs {
		body, err := rec.DecodeBody()
		want, ok := body.(ledger.AlarmDigest)
		if err != nil || !ok {
			continue
		}
		name := want.From.Format(alarmlog.Stamp) + "_" + want.To.Format(alarmlog.Stamp) + ".jsonl"
		got, err := alarmlog.Digest(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("alarm log %s: digest %+v, the ledger's record says %+v", name, got, want)
		}
		d.res.AlarmsDigested += want.Count
		fmt.Fprintf(d.out, "   alarm log %s: %d alarm(s) raised while the gateway ran; its SHA-256 matches the alarm_digest record\n",
			relPath(d.o.stateDir, filepath.Join(dir, name)), want.Count)
	}
	return nil
}

// keyring writes the gateway's public key as an audit keyring file next to its identity
// key, for the audit commands the demo prints.
func (d *demo) keyring(lc gateway.LedgerConfig) (string, error) {
	key, err := ledger.LoadKey(lc.Key)
	if err != nil {
		return "", err
	}
	line := audit.FormatKey(audit.Key{Name: lc.Name, Org: lc.Org, Public: key.Public().(ed25519.PublicKey)})
	path := filepath.Join(d.o.stateDir, "trusted-keys.txt")
	if err := os.WriteFile(path, []byte("# the demo gateway's identity key\n"+line+"\n"), 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// countPoints counts the points of each machine since t, one narrow Flux query per
// machine (InfluxDB 1.8's Flux is slow on wide queries).
func countPoints(ctx context.Context, q *influxdb.Querier, db, factory string, since time.Time, machines []sim.Machine) (map[string]int64, error) {
	out := map[string]int64{}
	for _, m := range machines {
		flux := fmt.Sprintf(`from(bucket: %q) |> range(start: %s) |> filter(fn: (r) => r._measurement == "telemetry" and r.factory == %q and r.machine == %q and r._field == "value") |> group() |> count()`,
			db, since.Add(-time.Minute).UTC().Format(time.RFC3339), factory, m.ID)
		err := q.Query(ctx, flux, func(v map[string]any) error {
			if n, ok := v["_value"].(int64); ok {
				out[m.ID] += n
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func sumPoints(stored map[string]int64, ms []sim.Machine) int64 {
	var n int64
	for _, m := range ms {
		n += stored[m.ID]
	}
	return n
}

// metricSum adds up the samples of the metric family name whose labels include match.
func metricSum(g prometheus.Gatherer, name string, match map[string]string) float64 {
	fams, _ := g.Gather()
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := match[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// stageProgress describes the running training's stages from the trainer's progress gauge.
func stageProgress(g prometheus.Gatherer) string {
	var parts []string
	for _, s := range []string{"read", "align", "fit", "validate"} {
		if v := metricSum(g, "millwright_model_training_progress", map[string]string{"stage": s}); v > 0 && v < 1 {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", s, 100*v))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "; running: " + strings.Join(parts, ", ")
}

var demoClient = &http.Client{Timeout: 5 * time.Second}

// getText returns the body (1 MiB at most) of a GET of url answered with 200 OK.
func getText(url string) (string, error) {
	resp, err := demoClient.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(b), err
}

func getJSON(url string, v any) error {
	b, err := getText(url)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(b), v)
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func machineIDs(ms []sim.Machine) string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return strings.Join(ids, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// relPath shortens path to <state>/... for printing.
func relPath(stateDir, path string) string {
	if r, err := filepath.Rel(stateDir, path); err == nil && !strings.HasPrefix(r, "..") {
		return filepath.Join("<state>", r)
	}
	return path
}
