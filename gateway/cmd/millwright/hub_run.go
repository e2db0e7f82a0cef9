package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/gateway"
	"github.com/millwright-io/millwright/gateway/api"
	"github.com/millwright-io/millwright/ledger/audit"
)

// runHub runs the hub's federations, its ledger outbox (when lg is not nil) and its HTTP
// API until ctx ends; with signoff, the API takes those people's approvals and releases
// into lg.
func runHub(ctx context.Context, cfg hubFileConfig, tr federation.Transport, key ed25519.PrivateKey, lg *gateway.Ledger, signoff *audit.Keyring,
	reg *prometheus.Registry, log *slog.Logger) error {
	apiTLS, err := cfg.HTTP.TLS.Load()
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	st := newHubStatus(cfg.Federations, tr)
	opts := federation.HubOptions{Logger: log, Registerer: reg, OnRound: st.onRound}
	if lg != nil {
		opts.Recorder, opts.SignedOff = lg.Outbox, lg.SignedOff
	}
	hub, err := federation.NewHub(federation.HubConfig{Federations: cfg.Federations}, tr, key, opts)
	if err != nil {
		return err
	}
	grp, gctx := errgroup.WithContext(ctx)
	grp.Go(func() error { return hub.Run(gctx) })
	if lg != nil {
		grp.Go(func() error { return lg.Outbox.Run(gctx) })
	}
	if addr := cfg.HTTP.Listen; addr != "" {
		srv := api.New(addr, reg, func() error { return nil }, cfg.HTTP.Pprof, log.With("component", "api")).WithTLS(apiTLS)
		srv.HandleJSON("/api/v1/federations", func() any { return st.snapshot(ctx) })
		if signoff != nil && lg != nil {
			a := signOffAPI{lg: lg, keys: signoff, log: log.With("component", "signoff")}
			srv.Handle("POST "+ledgerRecordsPath, a.post)
			srv.Handle("GET "+ledgerRecordsPath+"/{id}", a.get)
		}
		if lg != nil {
			if q, ok := lg.Querier(); ok {
				ra := newRestoreAPI(q, tr, key.Public().(ed25519.PublicKey), cfg.Federations, log.With("component", "restore"))
				srv.Handle("PUT "+modelPath, ra.put)
			}
		}
		grp.Go(func() error { return srv.Run(gctx) })
	}
	log.Info("hub running", "federations", len(cfg.Federations), "http", cfg.HTTP.Listen, "ledger", cfg.Ledger.Backend)
	return grp.Wait()
}

// hubStatus keeps each federation's last round report, and a summary of its recent rounds,
// for the HTTP API.
type hubStatus struct {
	tr     federation.Transport
	names  []string
	mu     sync.Mutex
	last   map[string]federation.RoundReport
	recent map[string][]roundSummary // oldest first, at most recentRounds
}

// recentRounds is how many closed rounds GET /api/v1/federations summarises per
// federation: enough to see a trend of the round metrics; Prometheus keeps the rest.
const recentRounds = 32

// roundSummary is one closed round in the recent rounds of GET /api/v1/federations.
type roundSummary struct {
	Round    uint64             `json:"round"`
	Outcome  string             `json:"outcome"`
	Reason   string             `json:"reason,omitempty"`
	Model    string             `json:"model,omitempty"`
	Used     int                `json:"used"`
	Rejected int                `json:"rejected"`
	Metrics  map[string]float64 `json:"metrics,omitempty"`
	Seconds  float64            `json:"seconds"`
}

func newHubStatus(fcs []federation.FederationConfig, tr federation.Transport) *hubStatus {
	s := &hubStatus{tr: tr, last: map[string]federation.RoundReport{}, recent: map[string][]roundSummary{}}
	for _, f := range fcs {
		s.names = append(s.names, f.Name)
	}
	return s
}

func (s *hubStatus) onRound(r federation.RoundReport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last[r.Federation] = r
	rs := append(s.recent[r.Federation], roundSummary{Round: r.Round, Outcome: r.Outcome, Reason: r.Reason, Model: r.Model,
		Used: len(r.Used), Rejected: len(r.Rejected), Metrics: r.Metrics, Seconds: r.Duration.Seconds()})
	if len(rs) > recentRounds {
		rs = slices.Delete(rs, 0, len(rs)-recentRounds)
	}
	s.recent[r.Federation] = rs
}

// federationStatus is one entry of GET /api/v1/federations.
type federationStatus struct {
	Name      string                  `json:"name"`
	State     *federation.RoundState  `json:"state,omitempty"`       // the round state published now
	StateErr  string                  `json:"state_error,omitempty"` // why it could not be read
	LastRound *federation.RoundReport `json:"last_round,omitempty"`  // the last closed round
	// Recent are the last closed rounds (up to recentRounds), oldest first.
	Recent []roundSummary `json:"recent_rounds,omitempty"`
}

// snapshot reads every federation's round state (bounded by a short timeout) and adds the
// last round report.
func (s *hubStatus) snapshot(ctx context.Context) []federationStatus {
	out := make([]federationStatus, 0, len(s.names))
	for _, name := range s.names {
		fs := federationStatus{Name: name}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		b, err := s.tr.GetRound(rctx, name)
		cancel()
		switch {
		case errors.Is(err, federation.ErrNotFound):
		case err != nil:
			fs.StateErr = err.Error()
		default:
			if st, err := federation.DecodeRoundState(b); err != nil {
				fs.StateErr = err.Error()
			} else {
				fs.State = &st
			}
		}
		s.mu.Lock()
		if r, ok := s.last[name]; ok {
			fs.LastRound = &r
		}
		fs.Recent = slices.Clone(s.recent[name])
		s.mu.Unlock()
		out = append(out, fs)
	}
	return out
}
