// Package api serves the gateway's HTTP endpoints: Prometheus metrics, liveness, readiness and, when enabled, profiles.
package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is the HTTP server. It is a service: Run it under the gateway's errgroup.
type Server struct {
	addr  string
	log   *slog.Logger
	srv   *http.Server
	mux   *http.ServeMux
	ready func() error
}

// New builds the server for addr ("127.0.0.1:9273"); ready reports nil when the gateway is
// ready to serve, or an error naming what is not. It does no I/O.
// With profiling on, /debug/pprof/ serves Go's profiles (keep the address local).
func New(addr string, gatherer prometheus.Gatherer, ready func() error, profiling bool, log *slog.Logger) *Server {
	s := &Server{addr: addr, log: log, ready: ready}
	mux := http.NewServeMux()
	if profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: stdlog.New(serverErrors{log}, "", 0)}
	s.mux = mux
	return s
}

// serverErrors logs what net/http's server reports: a client's failed TLS handshake (a
// port scan, a TCP health check, a client without the certificate) at debug level, so that
// those do not flood the log, and anything else (a handler's panic) as a warning.
type serverErrors struct{ log *slog.Logger }

func (e serverErrors) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "TLS handshake error") {
		e.log.Debug(msg)
	} else {
		e.log.Warn(msg)
	}
	return len(p), nil
}

// WithTLS makes the server speak HTTPS with c (its certificates, and client verification
// when set); nil leaves it plain HTTP. Call it before Run.
func (s *Server) WithTLS(c *tls.Config) *Server {
	s.srv.TLSConfig = c
	return s
}

// HandleJSON serves GET path with the JSON of what fn returns at each request (the
// gateway adds /api/v1/alarms and /api/v1/models this way). Call it before Run.
func (s *Server) HandleJSON(path string, fn func() any) {
	s.mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(fn()); err != nil {
			s.log.Debug("write json response", "path", path, "err", err)
		}
	})
}

// Handle serves pattern (a net/http ServeMux pattern, such as "POST /api/v1/ledger/records")
// with h. Call it before Run.
func (s *Server) Handle(pattern string, h http.HandlerFunc) { s.mux.HandleFunc(pattern, h) }

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.ready(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, err)
		return
	}
	fmt.Fprintln(w, "ready")
}

// Run listens and serves until ctx is done, then shuts down gracefully. A listen error (the
// address is taken) is returned at once.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("http api: listen on %s: %w", s.addr, err)
	}
	tls := s.srv.TLSConfig != nil
	s.log.Info("http api listening", "addr", ln.Addr().String(), "tls", tls)
	errc := make(chan error, 1)
	go func() {
		if tls {
			errc <- s.srv.ServeTLS(ln, "", "") // the certificates are in TLSConfig
			return
		}
		errc <- s.srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("http api: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err = s.srv.Shutdown(shutCtx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
