package gateway

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/millwright-io/millwright/connectors/influxdb"
	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/natsbus"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/backoff"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/signoff"
	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/train"
)

// FederationConfig is the gateway's membership in the federations of a hub: where the
// hub's NATS is, the factory's credentials, the hub's public key and, per federation, the
// machines whose local history trains the shared model. Raw data never leaves the gateway:
// only signed parameter updates do.
type FederationConfig struct {
	// Enabled turns federated training on (default off).
	Enabled bool `yaml:"enabled"`
	// NATS is the connection to the hub: its URL (or the site's leaf node), the factory's
	// user and password (the user is the gateway's member name), TLS with the hub's CA, and
	// the hub's JetStream domain when connecting through a leaf node.
	NATS natsbus.ClientConfig `yaml:"nats"`
	// Leaf, when set, runs a NATS leaf node in the gateway that links to the hub's
	// leaf_listen with the factory's credentials (nats.user, nats.password); the gateway
	// then talks to the hub through it and nats.url is not needed.
	Leaf *LeafNodeConfig `yaml:"leaf"`
	// HubKey is the hub's ed25519 public key (64 hex digits, printed by millwright hub):
	// every global model is verified with it.
	HubKey federation.PublicKey `yaml:"hub_key"`
	// Peers are the other members' identity keys (the hub's members list, from the same
	// trusted source as hub_key). With them, secure aggregation checks every advertised
	// key and survivor-set signature against the configured key, so the hub cannot stand
	// in for a member or invent members; for a member not listed the gateway takes the key
	// the hub relays (a hub showing gateways different survivor sets is still caught).
	Peers []federation.Member `yaml:"peers"`
	// Federations are the federations this gateway joins.
	Federations []JoinConfig `yaml:"federations"`
}

// JoinConfig is one federation the gateway takes part in.
type JoinConfig struct {
	// Name is the federation's name on the hub.
	Name string `yaml:"name"`
	// Machines are the machines whose history trains the shared model; each gets its own
	// copy of the model (with its own scaling and threshold) in the artifact store.
	Machines []string `yaml:"machines"`
	// Architecture is the model layout the gateway expects; a global model of another
	// layout is refused.
	Architecture models.Architecture `yaml:"architecture"`
}

// LeafNodeConfig is the gateway's own leaf node.
type LeafNodeConfig struct {
	// Listen is the leaf node's local client address (default 127.0.0.1:4223).
	Listen string `yaml:"listen"`
	// HubURL is the hub's leaf listener, e.g. nats-leaf://hub.example:7422.
	HubURL string `yaml:"hub_url"`
	// StoreDir holds the leaf's JetStream files (default <state_dir>/leaf).
	StoreDir string `yaml:"store_dir"`
	// TLS secures the link to the hub (required when the hub's leaf listener has TLS):
	// ca_file verifies the hub's certificate, cert_file and key_file are the site's
	// certificate for a hub that verifies leaf nodes (mutual TLS), server_name is the name
	// expected in the hub's certificate when hub_url names it by address.
	TLS config.TLS `yaml:"tls"`
}

// leafSchemes are the URL schemes of a hub's leaf listener.
var leafSchemes = []string{"nats-leaf", "nats", "tls"}

// validate reports the leaf block's problems, with paths relative to the federation block.
func (l LeafNodeConfig) validate(p *config.Problems) {
	if l.HubURL == "" {
		p.Addf("leaf.hub_url", "must be set to the hub's leaf listener, such as nats-leaf://hub.example:7422")
	} else if u, err := url.Parse(l.HubURL); err != nil || !slices.Contains(leafSchemes, u.Scheme) || u.Port() == "" || u.User != nil {
		p.Addf("leaf.hub_url", "%q is not a leaf listener URL; expected nats-leaf://host:port (schemes %v, no credentials: they come from nats.user and nats.password)", l.HubURL, leafSchemes)
	}
	if l.Listen != "" {
		if _, _, err := net.SplitHostPort(l.Listen); err != nil {
			p.Addf("leaf.listen", "%q: %v; expected host:port", l.Listen, err)
		}
	}
	p.Nest("leaf.tls", l.TLS.Validate())
}

// peerKeys is Peers by member name.
func (c FederationConfig) peerKeys() map[string]ed25519.PublicKey {
	keys := make(map[string]ed25519.PublicKey, len(c.Peers))
	for _, m := range c.Peers {
		keys[m.Name] = m.Key.PublicKey
	}
	return keys
}

// SetDefaults fills the defaults in.
func (c *FederationConfig) SetDefaults() { c.NATS.SetDefaults() }

// validate reports every problem at once, with paths relative to the block.
func (c FederationConfig) validate(m ModelsConfig, sinks []SinkConfig) error {
	if !c.Enabled {
		return nil
	}
	var p config.Problems
	nc := c.NATS
	if l := c.Leaf; l != nil {
		// The gateway connects to its own leaf node, over local plain TCP.
		if c.NATS.URL != "" {
			p.Addf("nats.url", "%q is not used with leaf: the gateway connects to its own leaf node (leaf.listen); expected no nats.url, or no leaf block to connect directly", c.NATS.URL)
		}
		if c.NATS.TLS.Active() {
			p.Addf("nats.tls", "is not used with leaf: the link to the gateway's own leaf node is local plain TCP; expected the hub's TLS settings under leaf.tls")
		}
		nc.URL, nc.TLS = "nats://leaf", config.TLS{} // the leaf node's address
		l.validate(&p)
	}
	p.Nest("nats", nc.Validate())
	if c.NATS.User == "" {
		p.Addf("nats.user", "must be set: it is the factory's NATS user and its member name in the federations")
	}
	if len(c.HubKey.PublicKey) != ed25519.PublicKeySize {
		p.Addf("hub_key", "must be set to the hub's public key (64 hex digits, printed by millwright hub)")
	}
	peers := map[string]bool{}
	for i, m := range c.Peers {
		path := config.Index("peers", i)
		if err := federation.CheckName(m.Name); err != nil {
			p.Addf(config.Join(path, "name"), "%v", err)
		} else if peers[m.Name] {
			p.Addf(config.Join(path, "name"), "%q appears twice", m.Name)
		}
		peers[m.Name] = true
		if len(m.Key.PublicKey) != ed25519.PublicKeySize {
			p.Addf(config.Join(path, "key"), "must be set to the member's identity key (64 hex digits, printed by its gateway)")
		}
	}
	if _, err := m.influx(sinks); err != nil {
		p.Addf("enabled", "federated training reads the machines' history: %v", err)
	}
	if len(c.Federations) == 0 {
		p.Addf("federations", "is empty; expected at least one federation to join")
	}
	seen := map[string]bool{}
	for i, f := range c.Federations {
		path := config.Index("federations", i)
		if err := federation.CheckName(f.Name); err != nil {
			p.Addf(config.Join(path, "name"), "%v", err)
		} else if seen[f.Name] {
			p.Addf(config.Join(path, "name"), "%q appears twice", f.Name)
		}
		seen[f.Name] = true
		if len(f.Machines) == 0 {
			p.Addf(config.Join(path, "machines"), "is empty; expected the machines whose data trains the model")
		}
		machines := map[string]int{}
		for j, mc := range f.Machines {
			mp := config.Index(config.Join(path, "machines"), j)
			switch first, dup := machines[mc]; {
			case !namePattern.MatchString(mc):
				p.Addf(mp, "%q is not a machine id; expected letters, digits, '_', '.', '-', at most 63", mc)
			case dup:
				// It would be trained twice a round and its windows counted twice: the
				// gateway's weight in the hub's average doubled.
				p.Addf(mp, "%q is already machines[%d]; expected each machine once", mc, first)
			default:
				machines[mc] = j
			}
		}
		a := f.Architecture
		if a.Kind != autoencoder.Kind {
			p.Addf(config.Join(path, "architecture.kind"), "%q is not supported; expected %q (the Parametric detector)", a.Kind, autoencoder.Kind)
		}
		if a.Inputs <= 0 {
			p.Addf(config.Join(path, "architecture.inputs"), "%d must be positive (the width of a feature window)", a.Inputs)
		}
		if a.Params <= 0 || a.Params > federation.MaxParams {
			p.Addf(config.Join(path, "architecture.params"), "%d is out of range; expected 1..%d", a.Params, federation.MaxParams)
		}
		if a.Kind == autoencoder.Kind && a.Inputs > 0 {
			checkLayout(&p, config.Join(path, "architecture"), a)
		}
	}
	return p.Err()
}

// checkLayout reports where architecture a differs from the network the gateway builds
// from its inputs, layers and activation: every round's global model would otherwise be
// refused, each time with both layouts in the error.
func checkLayout(p *config.Problems, path string, a models.Architecture) {
	ac := autoencoder.Config{Inputs: a.Inputs, Layers: a.Layers, Activation: a.Activation}
	ac.SetDefaults()
	if err := ac.Validate(); err != nil {
		p.Nest(path, err)
		return
	}
	d, err := autoencoder.New(ac)
	if err != nil {
		p.Addf(path, "%v", err)
		return
	}
	built := d.Architecture()
	if a.Version != built.Version {
		p.Addf(config.Join(path, "version"), "%d is not the autoencoder's layout; expected %d", a.Version, built.Version)
	}
	if !slices.Equal(a.Layers, built.Layers) {
		p.Addf(config.Join(path, "layers"), "%v; expected the hidden widths as the hub's architecture lists them (the default for %d inputs is %v)", a.Layers, a.Inputs, built.Layers)
	} else if a.Params != built.Params {
		p.Addf(config.Join(path, "params"), "%d does not match inputs %d and layers %v; expected %d", a.Params, a.Inputs, a.Layers, built.Params)
	}
	if a.Activation != built.Activation {
		p.Addf(config.Join(path, "activation"), "%q; expected the hub's, e.g. %q", a.Activation, built.Activation)
	}
	if a.Channels != 0 || a.Kernel != 0 {
		p.Addf(path, "channels %d and kernel %d describe a convolutional layout; expected 0 for %q", a.Channels, a.Kernel, a.Kind)
	}
}

// federationRuntime is the gateway's running membership: one participant per federation
// over one NATS connection.
type federationRuntime struct {
	cfg      FederationConfig
	client   natsbus.ClientConfig
	log      *slog.Logger
	reg      prometheus.Registerer
	key      ed25519.PrivateKey
	trainer  *train.Trainer
	querier  *influxdb.Querier // the trainer's, when the federation has its own (models off)
	recorder func() ledger.Recorder
	status   []*fedStatus // one per federation, in the configuration's order
	// dir keeps, per federation, the round of the last update sent (<name>.sent).
	dir string
	// closing is set when run closes its connection: the client reports that as a lost
	// link, which it is not.
	closing atomic.Bool
	// leaf is the site's leaf node once it has linked to the hub (nil without one).
	leaf interface{ LeafConnected() int }
}

// newFederation builds the federated-training runtime (no network I/O); nil when the
// federation block is off. key is the gateway's identity key (the ledger's); mods, when
// running, receives the validated models.
func newFederation(c Config, key ed25519.PrivateKey, mods *modelsRuntime, log *slog.Logger, reg prometheus.Registerer, recorder func() ledger.Recorder) (*federationRuntime, error) {
	fc := c.Federation
	if !fc.Enabled {
		return nil, nil
	}
	log = log.With("component", "federation")
	if key == nil {
		var err error
		if key, err = ledger.LoadOrCreateKey(c.Ledger.Key); err != nil {
			return nil, fmt.Errorf("federation: identity key: %w", err)
		}
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	names := make([]string, len(fc.Federations))
	for i, f := range fc.Federations {
		names[i] = f.Name
	}
	m, err := newFedMetrics(reg, names)
	if err != nil {
		return nil, err
	}
	// One trainer per gateway: with the models on, the federations train through the
	// scheduled trainer, which runs one training at a time, so a round's training and a
	// scheduled one take turns instead of competing for the same data and cores.
	tr, q := (*train.Trainer)(nil), (*influxdb.Querier)(nil)
	if mods != nil {
		tr = mods.trainer
	} else if tr, q, err = federationTrainer(c, log, reg, recorder); err != nil {
		return nil, err
	}
	if l := fc.Leaf; l != nil {
		lc := *l
		if lc.Listen == "" {
			lc.Listen = "127.0.0.1:4223"
		}
		lc.StoreDir = statePath(c.Gateway.StateDir, lc.StoreDir, "leaf")
		fc.Leaf = &lc
		if fc.NATS.Domain == "" {
			fc.NATS.Domain = "hub" // the hub's JetStream is reached by its domain through the leaf
		}
	}
	fr := &federationRuntime{cfg: fc, client: fc.NATS, log: log, reg: reg, key: key, trainer: tr, querier: q, recorder: recorder,
		dir: filepath.Join(c.Gateway.StateDir, "federation")}
	for _, f := range fc.Federations {
		fr.status = append(fr.status, newFedStatus(f.Name, fc.NATS.User, fc.HubKey.PublicKey, m))
	}
	fr.client.OnLink = func(up bool) {
		if fr.closing.Load() {
			return
		}
		if !up {
			fr.log.Warn("connection to the federation hub lost, reconnecting", "url", fr.client.URL)
		}
		for _, st := range fr.status {
			st.link(up)
		}
	}
	return fr, nil
}

// federationTrainer builds the trainer of a gateway whose models are off: it trains the
// federations' machines only when a round asks, and installs into the artifact store.
func federationTrainer(c Config, log *slog.Logger, reg prometheus.Registerer, recorder func() ledger.Recorder) (*train.Trainer, *influxdb.Querier, error) {
	dir, q, err := openHistory(c)
	if err != nil {
		return nil, nil, fmt.Errorf("federation: %w", err)
	}
	tc := c.Models.Train
	tc.Machines = nil
	for _, f := range c.Federation.Federations {
		tc.Machines = append(tc.Machines, f.Machines...)
	}
	slices.Sort(tc.Machines)
	tc.Machines = slices.Compact(tc.Machines)
	tr, err := train.New(tc, train.Options{Querier: q, Store: dir, Factory: c.Gateway.Factory, Recorder: recorder,
		Logger: log.With("name", "trainer"), Registerer: reg, Current: train.StoreCurrent(dir)})
	if err != nil {
		q.Close()
		return nil, nil, fmt.Errorf("federation: %w", err)
	}
	return tr, q, nil
}

// run connects to the hub (retrying with backoff) and takes part in every federation until
// ctx ends.
func (fr *federationRuntime) run(ctx context.Context) error {
	if l := fr.cfg.Leaf; l != nil {
		leaf, err := natsbus.StartLeaf(natsbus.LeafConfig{Listen: l.Listen, ServerName: "millwright-leaf-" + fr.client.User,
			Domain: "leaf-" + fr.client.User, StoreDir: l.StoreDir, HubURL: l.HubURL, User: fr.client.User,
			Password: fr.client.Password.Value(), TLS: l.TLS}, fr.log.With("name", "leaf"))
		if err != nil {
			return fmt.Errorf("federation: %w", err)
		}
		defer leaf.Shutdown()
		if !fr.waitLeaf(ctx, leaf) {
			return nil
		}
		fr.client.URL, fr.leaf = leaf.ClientURL(), leaf
	}
	bus, err := fr.dial(ctx)
	if err != nil || bus == nil {
		return err
	}
	defer func() {
		fr.closing.Store(true)
		_ = bus.Close()
	}()
	grp, gctx := errgroup.WithContext(ctx)
	if fr.leaf != nil {
		grp.Go(func() error { fr.watchLeaf(gctx, leafPoll); return nil })
	}
	for i, jc := range fr.cfg.Federations {
		st := fr.status[i]
		answered, err := st.restore(filepath.Join(fr.dir, jc.Name+".sent"))
		if err != nil {
			fr.log.Warn("the round of the last update sent is not known; a round answered before the restart may be answered again",
				"federation", jc.Name, "err", err)
		}
		tr := observedTransport{Transport: bus, st: st}
		p, err := federation.NewParticipant(federation.ParticipantConfig{Federation: jc.Name, Name: fr.client.User, HubKey: fr.cfg.HubKey.PublicKey,
			Peers: fr.cfg.peerKeys(), Answered: answered},
			tr, fr.key, &fedTrainer{cfg: jc, tr: fr.trainer, st: st, log: fr.log.With("federation", jc.Name)},
			fr.log, prometheus.WrapRegistererWith(prometheus.Labels{"federation": jc.Name}, fr.reg))
		if err != nil {
			return err
		}
		grp.Go(func() error { fr.participate(gctx, jc.Name, p); return nil })
		grp.Go(func() error { st.runChecker(gctx, tr); return nil })
	}
	fr.log.Info("federation joined", "member", fr.client.User, "federations", len(fr.cfg.Federations), "url", fr.client.URL)
	return grp.Wait()
}

// leafPoll is how often a running gateway checks its leaf node's link to the hub.
const leafPoll = 5 * time.Second

// watchLeaf checks every period whether the leaf node is still linked to the hub and
// shows a lost link in the federations' status (reconnecting: the leaf node relinks on its
// own; the gateway's connection to it stays up) until ctx ends.
func (fr *federationRuntime) watchLeaf(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	linked := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := fr.leaf.LeafConnected() > 0; now != linked {
			linked = now
			if !now {
				fr.log.Warn("leaf node lost its link to the federation hub, relinking")
			} else {
				fr.log.Info("leaf node linked to the federation hub again")
			}
			for _, st := range fr.status {
				st.leafLink(now)
			}
		}
	}
}

// waitLeaf waits until the leaf node is linked to the hub, logging why not (a refused
// certificate, wrong credentials) with backoff; false when ctx ends first. (Not
// backoff.Retry: the backoff is how long each wait for the link lasts, not a pause
// between attempts.)
func (fr *federationRuntime) waitLeaf(ctx context.Context, leaf *natsbus.Server) bool {
	bo := backoff.Backoff{Initial: 5 * time.Second, Max: time.Minute}
	for {
		wctx, cancel := context.WithTimeout(ctx, bo.Next())
		err := leaf.WaitLinked(wctx)
		cancel()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		for _, st := range fr.status {
			st.fail("leaf", err)
		}
		if n := bo.Attempts(); backoff.Logged(n) {
			fr.log.Warn("leaf node not linked to the federation hub, waiting", "err", err, "attempt", n)
		}
	}
}

// participate runs p until ctx ends, starting it again with backoff when it stops with an
// error (the hub has not created the federation yet, or the connection failed): federated
// training never stops the gateway.
func (fr *federationRuntime) participate(ctx context.Context, fed string, p *federation.Participant) {
	bo := backoff.Backoff{Initial: time.Second, Max: time.Minute}
	// Run returns nil only once ctx has ended.
	backoff.Retry(ctx, &bo, fr.log.With("federation", fed), "federation participant stopped, restarting", p.Run, nil)
}

// dial connects to the hub's NATS, retrying until it succeeds or ctx ends (then nil, nil).
func (fr *federationRuntime) dial(ctx context.Context) (*natsbus.Bus, error) {
	bo := backoff.Backoff{Initial: time.Second, Max: time.Minute}
	var bus *natsbus.Bus
	try := func(ctx context.Context) (err error) {
		bus, err = natsbus.Dial(ctx, fr.client, fr.log.With("name", "natsbus"))
		return err
	}
	failed := func(err error) {
		for _, st := range fr.status {
			st.fail("connect", err)
		}
	}
	if !backoff.Retry(ctx, &bo, fr.log.With("url", fr.client.URL), "cannot connect to the federation hub, retrying", try, failed) {
		return nil, nil
	}
	return bus, nil
}

func (fr *federationRuntime) close() {
	if fr != nil && fr.querier != nil {
		fr.querier.Close()
	}
}

// fedTrainer is a federation.Trainer: it continues the round's global model on the
// history of each of the federation's machines (models/train's data path: InfluxDB,
// features, threshold, validation, artifact store, lineage records) and returns the
// window-weighted mean of the machines' parameters.
type fedTrainer struct {
	cfg JoinConfig
	tr  *train.Trainer
	st  *fedStatus // nil: not observed
	log *slog.Logger
}

// Train implements federation.Trainer, and records the training in the federation's
// status (the last training, rounds joined, duration).
func (f *fedTrainer) Train(ctx context.Context, task federation.Task, global []float32) (federation.TrainResult, error) {
	rt := RoundTraining{Round: task.Round, StartedAt: time.Now().UTC()}
	res, err := f.train(ctx, task, global, &rt)
	if f.st != nil && ctx.Err() == nil {
		rt.Seconds = time.Since(rt.StartedAt).Seconds()
		rt.Samples = res.Samples
		f.st.trained(rt, err)
	}
	return res, err
}

func (f *fedTrainer) train(ctx context.Context, task federation.Task, global []float32, rt *RoundTraining) (federation.TrainResult, error) {
	if !task.Architecture.Equal(f.cfg.Architecture) {
		return federation.TrainResult{}, fmt.Errorf("global model layout %+v differs from the configured %+v", task.Architecture, f.cfg.Architecture)
	}
	// The round's μ weighs μ/2·‖w − global‖²; the autoencoder's ProxMu weighs ‖·‖² itself.
	ws := train.WarmStart{Architecture: task.Architecture, Params: global, ProxMu: task.ProximalMu / 2,
		From: fmt.Sprintf("%s@r%d", task.Federation, task.Round)}
	sum := make([]float64, len(global))
	// Each metric is the mean over the machines that have it, weighted by their windows:
	// the global model is judged on a machine only when it could be.
	metrics, weights := map[string]float64{}, map[string]float64{}
	add := func(name string, v float64, w int) {
		metrics[name] += float64(w) * v
		weights[name] += float64(w)
	}
	total := 0
	var errs []error
	for _, m := range f.cfg.Machines {
		res, err := f.tr.TrainFrom(ctx, m, ws, nil)
		if err != nil {
			if ctx.Err() != nil {
				return federation.TrainResult{}, ctx.Err()
			}
			f.log.Warn("machine not trained this round", "machine", m, "round", task.Round, "err", err)
			rt.Machines = append(rt.Machines, MachineTrained{Machine: m, Error: err.Error()})
			errs = append(errs, err)
			continue
		}
		rt.Machines = append(rt.Machines, MachineTrained{Machine: m, Version: res.Model.Version, Hash: res.Model.Hash,
			Windows: res.Windows, Installed: res.Swapped, Reason: res.Reason})
		p := res.Model.Detector.(models.Parametric).Params()
		w := res.Windows
		for i, v := range p {
			sum[i] += float64(w) * float64(v)
		}
		for k, v := range res.Model.Metrics() {
			add(k, v, w)
		}
		if res.Start != nil { // how the round's global model did here, before the training
			for k, v := range res.Start.Metrics() {
				add(federation.GlobalMetricPrefix+k, v, w)
			}
		}
		total += w
		f.log.Info("federated round trained", "machine", m, "round", task.Round, "windows", w, "installed", res.Swapped, "reason", res.Reason)
	}
	if total == 0 {
		return federation.TrainResult{}, fmt.Errorf("no machine could be trained: %w", errors.Join(errs...))
	}
	out := make([]float32, len(sum))
	for i, v := range sum {
		out[i] = float32(v / float64(total))
	}
	for k := range metrics {
		metrics[k] /= weights[k]
	}
	return federation.TrainResult{Params: out, Samples: total, Metrics: metrics}, nil
}

// Evaluate implements federation.Evaluator: it judges the global model on each of the
// federation's machines without training (train.Trainer.EvaluateFrom, as a training
// judges the model it starts from) and returns the window-weighted mean of the metrics.
func (f *fedTrainer) Evaluate(ctx context.Context, task federation.Task, global []float32) (federation.Evaluation, error) {
	if !task.Architecture.Equal(f.cfg.Architecture) {
		return federation.Evaluation{}, fmt.Errorf("global model layout %+v differs from the configured %+v", task.Architecture, f.cfg.Architecture)
	}
	ws := train.WarmStart{Architecture: task.Architecture, Params: global, From: fmt.Sprintf("%s@r%d", task.Federation, task.GlobalRound)}
	metrics, total := map[string]float64{}, 0
	var errs []error
	for _, m := range f.cfg.Machines {
		q, err := f.tr.EvaluateFrom(ctx, m, ws)
		if err != nil {
			if ctx.Err() != nil {
				return federation.Evaluation{}, ctx.Err()
			}
			f.log.Warn("machine could not judge the global model", "machine", m, "round", task.Round, "err", err)
			errs = append(errs, err)
			continue
		}
		for k, v := range q.Metrics() {
			metrics[k] += float64(q.Windows) * v
		}
		total += q.Windows
		f.log.Info("global model judged", "machine", m, "model", ws.From, "windows", q.Windows, "false_alarm_rate", q.FalseAlarmRate, "detection_rate", q.DetectionRate)
	}
	if total == 0 {
		return federation.Evaluation{}, fmt.Errorf("no machine could judge the model: %w", errors.Join(errs...))
	}
	for k := range metrics {
		metrics[k] /= float64(total)
	}
	return federation.Evaluation{Samples: total, Metrics: metrics}, nil
}

// Ledger is a ledger opened by OpenLedger for a process other than the gateway (the
// federation hub): the outbox to record through and the identity key that signs.
type Ledger struct {
	Outbox *ledger.Outbox
	Key    ed25519.PrivateKey
	lin    *lineage
}

// OpenLedger opens c the way the gateway opens its own ledger (identity key, local or
// Fabric backend, durable outbox), with its defaults resolved against stateDir and org
// (the actor's organisation). It returns nil for the backend "none". A local ledger also
// takes the records of others, signed by their keys and anchored with Anchor (the hub's
// sign-off API). The caller runs Outbox.Run and calls Close after it returned.
func OpenLedger(c LedgerConfig, stateDir, org string, log *slog.Logger, reg prometheus.Registerer, others ...ed25519.PublicKey) (*Ledger, error) {
	ResolveLedger(&c, stateDir, org)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	lin, err := openLineage(c, log, reg, others...)
	if err != nil || lin == nil {
		return nil, err
	}
	return &Ledger{Outbox: lin.outbox, Key: lin.key, lin: lin}, nil
}

// Close closes the outbox, then the backend.
func (l *Ledger) Close() error { return l.lin.Close() }

// Anchor anchors a record someone else signed (and chained through their own outbox) in
// the backend, as ledger.Backend.Anchor does: a local ledger takes it only when its
// signer's key was given to OpenLedger.
func (l *Ledger) Anchor(ctx context.Context, rec ledger.Record) error {
	return l.lin.backend.Anchor(ctx, rec)
}

// Get returns the record with id from the backend (ledger.Backend.Get).
func (l *Ledger) Get(ctx context.Context, id string) (ledger.Record, error) {
	return l.lin.backend.Get(ctx, id)
}

// Querier returns the backend, when it can be queried (the local ledger and Fabric can).
func (l *Ledger) Querier() (ledger.Querier, bool) {
	q, ok := l.lin.backend.(ledger.Querier)
	return q, ok
}

// SignedOff returns the SHA-256 of every model of federation fed that people released, or
// whose latest decision approved it (a release candidate), as the backend's release and
// approval records name them (federation.HubOptions.SignedOff), by signoff.SignedOff's
// rule. A backend that cannot be queried names none.
func (l *Ledger) SignedOff(ctx context.Context, fed string) (map[string]bool, error) {
	q, ok := l.Querier()
	if !ok {
		return nil, nil
	}
	var recs []ledger.Record
	for _, t := range []ledger.Type{ledger.TypeRelease, ledger.TypeApproval} { // each type in ledger order
		got, err := q.Query(ctx, ledger.Query{Type: t, Model: ledger.ModelRef{Model: fed}})
		if err != nil {
			return nil, fmt.Errorf("%ss of %s: %w", t, fed, err)
		}
		recs = append(recs, got...)
	}
	return signoff.SignedOff(recs), nil
}

// ResolveLedger fills c's defaults that depend on the state directory and the actor's
// organisation, as OpenLedger does (for validating a configuration before opening it).
func ResolveLedger(c *LedgerConfig, stateDir, org string) {
	c.resolve(Settings{StateDir: stateDir, Factory: org})
}
