package federation_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/federation/natsbus"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/models"
)

// TestMain checks for leaked goroutines. nats.go v1.55's ObjectStore.Put leaves one
// goroutine per put blocked forever (jetStream.resetPendingAcksOnReconnect reads a status
// channel that cleanupReplySub has already set to nil); it is the library's, not ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"))
}

const fedName = "plant"

var discard = slog.New(slog.DiscardHandler)

func freeAddr(t testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(servicetest.FreePort(t)))
}

// gatewayKey is a deterministic identity key per gateway index.
func gatewayKey(i int) ed25519.PrivateKey {
	var seed [32]byte
	copy(seed[:], fmt.Sprintf("gateway-%d", i))
	return ed25519.NewKeyFromSeed(seed[:])
}

func hubKey() ed25519.PrivateKey {
	var seed [32]byte
	copy(seed[:], "hub")
	return ed25519.NewKeyFromSeed(seed[:])
}

func gwName(i int) string { return fmt.Sprintf("g%d", i) }

// env is an embedded NATS server with one factory per gateway, and the hub's connection.
type env struct {
	t   testing.TB
	srv *natsbus.Server
	hub *natsbus.Bus
	n   int
}

func newEnv(t testing.TB, n int, leaf bool) *env {
	t.Helper()
	return newEnvWith(t, n, func(cfg *natsbus.ServerConfig) {
		if leaf {
			cfg.LeafListen = freeAddr(t)
		}
	})
}

// newEnvWith is newEnv with the hub server's configuration adjusted by configure
// (listeners, TLS) before it starts.
func newEnvWith(t testing.TB, n int, configure func(*natsbus.ServerConfig)) *env {
	t.Helper()
	cfg := natsbus.ServerConfig{Listen: freeAddr(t), StoreDir: t.TempDir()}
	configure(&cfg)
	for i := range n {
		cfg.Factories = append(cfg.Factories, natsbus.Factory{Name: gwName(i), Password: config.NewSecret("pw-" + gwName(i)), Federations: []string{fedName}})
	}
	cfg.SetDefaults()
	srv, err := natsbus.StartServer(cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	e := &env{t: t, srv: srv, n: n}
	e.hub = e.dial(srv.HubClient())
	var members []string
	for i := range n {
		members = append(members, gwName(i))
	}
	if err := e.hub.EnsureFederation(context.Background(), fedName, members, time.Hour); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) dial(c natsbus.ClientConfig) *natsbus.Bus {
	e.t.Helper()
	c.SetDefaults()
	b, err := natsbus.Dial(context.Background(), c, discard)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = b.Close() })
	return b
}

// gatewayBus connects gateway i with its own credentials.
func (e *env) gatewayBus(i int) *natsbus.Bus {
	return e.dial(natsbus.ClientConfig{URL: e.srv.ClientURL(), User: gwName(i), Password: config.NewSecret("pw-" + gwName(i))})
}

func fedConfig(n, params int) federation.FederationConfig {
	fc := federation.FederationConfig{
		Name:         fedName,
		Architecture: models.Architecture{Kind: "linear", Version: 1, Inputs: params, Params: params},
		RoundTimeout: 30 * time.Second,
	}
	for i := range n {
		fc.Members = append(fc.Members, federation.Member{Name: gwName(i), Key: federation.PublicKey{PublicKey: gatewayKey(i).Public().(ed25519.PublicKey)}})
	}
	return fc
}

// hubRun is a running hub with its round reports.
type hubRun struct {
	hub     *federation.Hub
	reports chan federation.RoundReport
	reg     *prometheus.Registry
	rec     *fakeRecorder
	cancel  context.CancelFunc
	done    chan error
}

func startHub(t testing.TB, tr federation.Transport, fcs ...federation.FederationConfig) *hubRun {
	t.Helper()
	return startHubRecording(t, tr, nil, fcs...)
}

// startHubRecording is startHub with the hub's ledger records going to rec (to h.rec, a
// fakeRecorder, when rec is nil).
func startHubRecording(t testing.TB, tr federation.Transport, rec ledger.Recorder, fcs ...federation.FederationConfig) *hubRun {
	t.Helper()
	return startHubWith(t, tr, func(o *federation.HubOptions) {
		if rec != nil {
			o.Recorder = rec
		}
	}, fcs...)
}

// startHubWith is startHub with the hub's options adjusted by adjust.
func startHubWith(t testing.TB, tr federation.Transport, adjust func(*federation.HubOptions), fcs ...federation.FederationConfig) *hubRun {
	t.Helper()
	cfg := federation.HubConfig{Federations: fcs}
	cfg.SetDefaults()
	h := &hubRun{reports: make(chan federation.RoundReport, 100), reg: prometheus.NewRegistry(), rec: &fakeRecorder{}, done: make(chan error, 1)}
	opts := federation.HubOptions{Logger: discard, Registerer: h.reg, Recorder: h.rec, OnRound: func(r federation.RoundReport) { h.reports <- r }}
	adjust(&opts)
	var err error
	if h.hub, err = federation.NewHub(cfg, tr, hubKey(), opts); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.hub.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *hubRun) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
		h.cancel = nil
	}
}

func (h *hubRun) next(t testing.TB) federation.RoundReport {
	t.Helper()
	select {
	case r := <-h.reports:
		return r
	case <-time.After(60 * time.Second):
		t.Fatal("no round closed within 60s")
		return federation.RoundReport{}
	}
}

// counter reads a counter of the hub's registry.
func (h *hubRun) counter(name, label, value string) float64 {
	mfs, _ := h.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

type fakeRecorder struct {
	mu     sync.Mutex
	bodies []ledger.FederatedRound
	evals  []ledger.Evaluation
}

func (f *fakeRecorder) Record(_ context.Context, b ledger.Body) (ledger.Record, error) {
	if err := b.Validate(); err != nil {
		return ledger.Record{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch b := b.(type) {
	case ledger.FederatedRound:
		f.bodies = append(f.bodies, b)
	case ledger.Evaluation:
		f.evals = append(f.evals, b)
	default:
		return ledger.Record{}, errors.New("unexpected body")
	}
	return ledger.Record{}, nil
}

// pullTrainer moves the global model a fraction of the way to the gateway's own optimum,
// like a few local epochs on a convex loss; byzantine gateways send the opposite, scaled.
type pullTrainer struct {
	target    []float32
	samples   int
	byzantine float32 // 0: honest; else the factor applied to the honest delta
	block     chan struct{}
	metrics   func(round uint64) map[string]float64 // the local metrics sent; nil: loss 0.5
}

func (p *pullTrainer) Train(ctx context.Context, task federation.Task, global []float32) (federation.TrainResult, error) {
	if p.block != nil {
		select {
		case <-p.block:
		case <-ctx.Done():
			return federation.TrainResult{}, ctx.Err()
		}
	}
	out := global // trained in place, as a Trainer may
	for i := range global {
		d := 0.8 * (p.target[i] - global[i])
		if p.byzantine != 0 {
			d *= p.byzantine
		}
		out[i] = global[i] + d
	}
	metrics := map[string]float64{"loss": 0.5}
	if p.metrics != nil {
		metrics = p.metrics(task.Round)
	}
	return federation.TrainResult{Params: out, Samples: p.samples, Metrics: metrics}, nil
}

// target returns gateway i's optimum: a shared optimum plus a per-gateway offset (non-IID).
func target(i, dim int) []float32 {
	v := make([]float32, dim)
	for j := range v {
		v[j] = float32(math.Sin(float64(j))) + 0.2*float32(math.Cos(float64(7*i+j)))
	}
	return v
}

func dist(a, b []float32) float64 {
	s := 0.0
	for i := range a {
		d := float64(a[i] - b[i])
		s += d * d
	}
	return math.Sqrt(s)
}

// gateway starts participant i running on its own connection; the returned cancel kills it.
func (e *env) gateway(t testing.TB, i int, tr federation.Trainer) (*federation.Participant, context.CancelFunc) {
	t.Helper()
	p := gatewayOver(t, i, e.gatewayBus(i), tr)
	return p, runParticipant(t, p)
}

// gatewayOver is gateway i's participant (not running) on transport tr, training with
// trainer.
func gatewayOver(t testing.TB, i int, tr federation.Transport, trainer federation.Trainer) *federation.Participant {
	t.Helper()
	p, err := federation.NewParticipant(federation.ParticipantConfig{Federation: fedName, Name: gwName(i), HubKey: hubKey().Public().(ed25519.PublicKey)},
		tr, gatewayKey(i), trainer, discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// participants returns one participant per gateway, not running.
func (e *env) participants(t testing.TB, dim int) []*federation.Participant {
	ps := make([]*federation.Participant, e.n)
	for i := range e.n {
		ps[i] = gatewayOver(t, i, e.gatewayBus(i), &pullTrainer{target: target(i, dim), samples: 10})
	}
	return ps
}

// runParticipant runs p until the test ends or the returned function kills it.
func runParticipant(t testing.TB, p *federation.Participant) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func roundState(t testing.TB, tr federation.Transport) federation.RoundState {
	t.Helper()
	b, err := tr.GetRound(context.Background(), fedName)
	if err != nil {
		t.Fatal(err)
	}
	st, err := federation.DecodeRoundState(b)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// runFederation runs rounds of a federation of arch over an embedded NATS server: a hub
// (initial model seeded by seed, scaled by initScale) and one participant per trainer, and
// returns the final global parameters.
func runFederation(t *testing.T, arch models.Architecture, strategy aggregate.Strategy, seed uint64, initScale float64, rounds int, trainers []federation.Trainer) []float32 {
	t.Helper()
	params, _ := runFederationWith(t, arch, strategy, seed, initScale, rounds, trainers, nil)
	return params
}

// runFederationWith is runFederation with the federation's configuration adjusted by
// configure (nil: unchanged; codecs, for one) before the hub starts; it also returns the
// hub's report of every round.
func runFederationWith(t *testing.T, arch models.Architecture, strategy aggregate.Strategy, seed uint64, initScale float64, rounds int,
	trainers []federation.Trainer, configure func(*federation.FederationConfig)) ([]float32, []federation.RoundReport) {
	t.Helper()
	e := newEnv(t, len(trainers), false)
	fc := fedConfig(len(trainers), arch.Params)
	fc.Architecture, fc.Rounds, fc.Strategy, fc.InitSeed, fc.InitScale = arch, uint64(rounds), strategy, seed, initScale
	if configure != nil {
		configure(&fc)
	}
	h := startHub(t, e.hub, fc)
	var stops []context.CancelFunc
	for i, tr := range trainers {
		_, stop := e.gateway(t, i, tr)
		stops = append(stops, stop)
	}
	reports := make([]federation.RoundReport, rounds)
	for i := range reports {
		reports[i] = h.next(t)
	}
	last := reports[rounds-1]
	for _, stop := range stops {
		stop()
	}
	h.stop()
	g, err := federation.FetchModel(context.Background(), e.hub, fedName, last.Model, hubKey().Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return g.Params, reports
}

// dataOf adapts fn, which looks at a message's bytes only, to Transport.Updates.
func dataOf(fn func([]byte)) func(federation.UpdateMessage) {
	return func(m federation.UpdateMessage) { fn(m.Data) }
}
