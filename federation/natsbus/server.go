package natsbus

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"github.com/millwright-io/millwright/gateway/config"
)

// hubUser is the embedded server's user for the hub itself, with a random password
// generated at every start, and the name of the hub's account, which holds JetStream.
const hubUser = "millwright-hub"

// Names of the JetStream assets of one federation.
func modelBucket(fed string) string { return "mwmodels-" + fed }
func roundBucket(fed string) string { return "mwround-" + fed }
func hubBucket(fed string) string   { return "mwhub-" + fed }
func updateStream(fed string) string {
	return "MWUPD-" + fed
}

// inboxPrefix is a user's private inbox prefix: a factory may subscribe only below it, so
// it cannot read replies (model downloads) meant for another factory.
func inboxPrefix(user string) string { return "_INBOX_" + user }

// FactoryPermissions returns the subject permissions of factory name in federations feds
// on a server whose JetStream domain is domain: publish its own updates, read the models
// and round state of its federations and its own round receipts through the JetStream
// API's message gets (also under the domain prefix that clients behind a leaf node use),
// receive on its own inbox prefix and its federations' round-state notices.
// Nothing else: no stream administration, no consumers, no other factory's updates, no
// other federation's models. The same permissions serve a factory whose site's leaf node
// connects with its credentials (the update stream's subjects are per member, so that
// the hub's interest in them passes the leaf connection's permissions). The factory's
// account imports the same subjects from the hub's (accounts.go): the permissions name
// what a refused request was, the account keeps the reply subjects away from the streams.
func FactoryPermissions(name string, feds []string, domain string) *server.Permissions {
	sub := []string{inboxPrefix(name) + ".>"}
	var pub []string
	for _, fed := range feds {
		pub = append(pub, updateSubject(fed, name))
		sub = append(sub, roundNotice(fed))
	}
	for _, api := range factoryAPI(name, feds) {
		pub = append(pub, "$JS.API."+api)
		if domain != "" {
			pub = append(pub, "$JS."+domain+".API."+api)
		}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
}

// Server is an embedded NATS server with JetStream, for a single-node hub.
type Server struct {
	srv         *server.Server
	hubPassword string
	domain      string
	leafListen  string
	hubURL      string        // a leaf node's hub (credentials redacted)
	lastErr     *atomic.Value // the server's last error or warning (string)
}

// StartServer starts the embedded server of cfg (defaults set, valid) and waits until it
// accepts connections.
func StartServer(cfg ServerConfig, log *slog.Logger) (*Server, error) {
	host, port, err := splitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("natsbus: listen %q: %w", cfg.Listen, err)
	}
	var pw [16]byte
	if _, err := rand.Read(pw[:]); err != nil {
		return nil, fmt.Errorf("natsbus: hub password: %w", err)
	}
	s := &Server{hubPassword: hex.EncodeToString(pw[:]), domain: cfg.Domain, leafListen: cfg.LeafListen, lastErr: &atomic.Value{}}
	// The server keeps only a bcrypt hash of the hub's random password too (the lowest
	// cost: 128 random bits need no stretching), so that it holds no plaintext password.
	hubHash, err := bcrypt.GenerateFromPassword([]byte(s.hubPassword), bcrypt.MinCost)
	if err != nil {
		return nil, fmt.Errorf("natsbus: hub password: %w", err)
	}
	opts := &server.Options{
		ServerName:      cfg.ServerName,
		Host:            host,
		Port:            port,
		JetStream:       true,
		JetStreamDomain: cfg.Domain,
		StoreDir:        cfg.StoreDir,
		NoSigs:          true,
		MaxPayload:      8 << 20,
		// The server's first PING to a client otherwise comes 2 s after the client
		// connects. A client still waiting for its CONNECT to be checked (bcrypt on a busy
		// hub, ten gateways reconnecting at once) reads that PING in place of the PONG
		// that ends its handshake and gives up the connection.
		DisableShortFirstPing: true,
	}
	// The accounts (accounts.go): the hub's holds JetStream, each factory's imports from it.
	var block bytes.Buffer
	accounts(&block, hubUser, cfg.Factories, cfg.Domain, func(string) string { return "" })
	if err := opts.ProcessConfigString(block.String()); err != nil {
		return nil, fmt.Errorf("natsbus: accounts: %w", err)
	}
	users := []*server.User{{Username: hubUser, Password: string(hubHash), Account: server.NewAccount(hubUser)}}
	for _, f := range cfg.Factories {
		if !IsBcrypt(f.Password.Value()) {
			log.Warn("factory password is configured in plaintext; configure its bcrypt hash instead (millwright hub passwd)", "factory", f.Name)
		}
		users = append(users, &server.User{Username: f.Name, Password: f.Password.Value(), Permissions: FactoryPermissions(f.Name, f.Federations, cfg.Domain),
			Account: server.NewAccount(f.Name)})
	}
	if len(cfg.Factories) > 0 {
		opts.Users = users
	} else {
		log.Warn("embedded nats server allows anonymous clients: no factories configured")
		opts.Users = users
		opts.NoAuthUser = hubUser
	}
	if cfg.CertFile != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, CaFile: cfg.CAFile, Verify: cfg.CAFile != ""})
		if err != nil {
			return nil, fmt.Errorf("natsbus: tls: %w", err)
		}
		if cfg.CAFile != "" {
			// The hub's own connection is an in-memory pipe to this server, with no
			// certificate to present: it authenticates with its password alone.
			tc.GetConfigForClient = inProcessTLS(tc)
		}
		opts.TLSConfig, opts.TLS, opts.TLSVerify, opts.TLSTimeout = tc, true, cfg.CAFile != "", 5
	}
	if cfg.LeafListen != "" {
		lh, lp, err := splitHostPort(cfg.LeafListen)
		if err != nil {
			return nil, fmt.Errorf("natsbus: leaf_listen %q: %w", cfg.LeafListen, err)
		}
		opts.LeafNode.Host, opts.LeafNode.Port = lh, lp
		opts.LeafNode.TLSConfig = opts.TLSConfig
	}
	// A hub from before accounts kept its streams in the server's global account: they
	// move to the hub's, last thing before the server starts, and back if it does not
	// (the previous version, which an operator may fall back to, finds them there).
	moved, err := moveStreams(cfg.StoreDir, globalAccount, hubUser)
	if err != nil {
		return nil, err
	}
	failed := func(err error) (*Server, error) {
		if moved {
			if _, merr := moveStreams(cfg.StoreDir, hubUser, globalAccount); merr != nil {
				err = errors.Join(err, merr)
			}
		}
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return failed(fmt.Errorf("natsbus: embedded server: %w", err))
	}
	srv.SetLoggerV2(newSlogLogger(log, s.lastErr), false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return failed(fmt.Errorf("natsbus: embedded server on %s not ready after 10s", cfg.Listen))
	}
	if moved {
		log.Info("moved the hub's streams from the global account to the hub's account", "store_dir", cfg.StoreDir)
	}
	s.srv = srv
	return s, nil
}

// inProcessTLS returns a GetConfigForClient hook that waives the client certificate for
// in-process connections (net.Pipe, whose address network is "pipe"; no network peer
// can produce one) and keeps tc's verification for every other connection.
func inProcessTLS(tc *tls.Config) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	pipe := tc.Clone()
	pipe.ClientAuth = tls.NoClientCert
	return func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		if h.Conn != nil && h.Conn.RemoteAddr().Network() == "pipe" {
			return pipe, nil
		}
		return nil, nil // tc itself
	}
}

// LeafConfig configures a gateway's local leaf node, connected to the hub with the
// factory's credentials.
type LeafConfig struct {
	Listen     string // local client address host:port
	ServerName string
	Domain     string // the leaf's own JetStream domain (the hub's is reached by name)
	StoreDir   string
	HubURL     string // nats-leaf://host:port of the hub's leaf listener
	User       string
	Password   string
	// TLS secures the link to the hub: CAFile verifies the hub's certificate (system roots
	// when empty), CertFile and KeyFile present the site's certificate (mutual TLS, for a
	// hub with ca_file), ServerName is the name checked in the hub's certificate (default:
	// the host of HubURL). A hub whose leaf listener has TLS requires it.
	TLS config.TLS
}

// StartLeaf starts a leaf node for a gateway site: local clients connect to it; it keeps
// working while the link to the hub is down and forwards to the hub's JetStream domain.
// The link is made in the background: WaitLinked reports whether it is up, and why not.
func StartLeaf(cfg LeafConfig, log *slog.Logger) (*Server, error) {
	host, port, err := splitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("natsbus: leaf listen %q: %w", cfg.Listen, err)
	}
	u, err := url.Parse(cfg.HubURL)
	if err != nil {
		return nil, fmt.Errorf("natsbus: hub url %q: %w", cfg.HubURL, err)
	}
	hubURL := u.Redacted()
	if cfg.User != "" {
		u.User = url.UserPassword(cfg.User, cfg.Password)
	}
	opts := &server.Options{
		ServerName: cfg.ServerName, Host: host, Port: port, NoSigs: true,
		JetStream: true, JetStreamDomain: cfg.Domain, StoreDir: cfg.StoreDir,
		MaxPayload: 8 << 20, DisableShortFirstPing: true, // as StartServer
	}
	remote := &server.RemoteLeafOpts{URLs: []*url.URL{u}}
	tc, err := cfg.TLS.Load()
	if err != nil {
		return nil, fmt.Errorf("natsbus: leaf link tls: %w", err)
	}
	if tc != nil {
		remote.TLS, remote.TLSConfig, remote.TLSTimeout = true, tc, 5
		if cfg.TLS.InsecureSkipVerify {
			log.Warn("leaf link does not verify the hub's certificate (insecure_skip_verify): for lab use only", "hub", hubURL)
		}
	}
	opts.LeafNode.Remotes = []*server.RemoteLeafOpts{remote}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsbus: leaf server: %w", err)
	}
	s := &Server{domain: cfg.Domain, hubURL: hubURL, lastErr: &atomic.Value{}}
	srv.SetLoggerV2(newSlogLogger(log, s.lastErr), false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("natsbus: leaf server on %s not ready after 10s", cfg.Listen)
	}
	s.srv = srv
	return s, nil
}

// ErrLeafNotLinked is returned (wrapped) by WaitLinked when the link to the hub is not up.
var ErrLeafNotLinked = errors.New("natsbus: leaf node not linked to the hub")

// WaitLinked waits until the leaf node's link to the hub is up and the hub's interest
// (its JetStream API among it) has come over it, so that a request through the leaf finds
// its responders; or until ctx ends: it then returns ErrLeafNotLinked with the server's
// last error about the link (a refused certificate, wrong credentials, an unreachable
// hub).
func (s *Server) WaitLinked(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !s.linked() {
		select {
		case <-ctx.Done():
			last, _ := s.lastErr.Load().(string)
			hint := ""
			switch {
			case last == "":
				last = "the hub closed the link or did not answer, with no error the leaf can see"
				hint = " (the hub's log says why: a hub with ca_file requires the site's tls cert_file and key_file; the factory's user and password must match the hub's)"
			case strings.Contains(last, "x509:") || strings.Contains(last, "tls:"):
				hint = " (check that leaf tls.ca_file holds the CA of the hub's certificate and that the certificate is valid for tls.server_name or the hub_url's host)"
			}
			return fmt.Errorf("%w: %s: %s%s", ErrLeafNotLinked, s.hubURL, last, hint)
		case <-tick.C:
		}
	}
	return nil
}

// linked reports whether a link to the hub is up with the hub's subscriptions received
// (a link counts from its handshake, before they arrive).
func (s *Server) linked() bool {
	if s.srv.NumLeafNodes() == 0 {
		return false
	}
	lz, err := s.srv.Leafz(nil)
	if err != nil {
		return false
	}
	for _, l := range lz.Leafs {
		if l.NumSubs > 0 {
			return true
		}
	}
	return false
}

// ClientURL is the address clients connect to.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// LeafURL is the address leaf nodes connect to ("" without a leaf listener).
func (s *Server) LeafURL() string {
	if s.leafListen == "" {
		return ""
	}
	return "nats-leaf://" + s.leafListen
}

// LeafConnected reports whether n leaf nodes are connected.
func (s *Server) LeafConnected() int { return s.srv.NumLeafNodes() }

// HubClient returns the client configuration of the hub's own connection (full rights,
// in process: no network, no TLS).
func (s *Server) HubClient() ClientConfig {
	c := ClientConfig{URL: s.ClientURL(), User: hubUser, inProcess: s.srv}
	c.Password = config.NewSecret(s.hubPassword)
	c.SetDefaults()
	return c
}

// Shutdown stops the server and waits for it.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

func splitHostPort(a string) (string, int, error) {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number in 0..65535", p)
	}
	return h, n, nil
}

// slogLogger adapts the server's logger to slog; the server's notices are debug-level so
// that normal running stays quiet, and an error or warning that repeats the previous one
// (a leaf link retried every second) is logged again only after repeatEvery. It keeps the
// last error or warning in last.
type slogLogger struct {
	log  *slog.Logger
	last *atomic.Value
	rep  *repeats
}

func newSlogLogger(log *slog.Logger, last *atomic.Value) slogLogger {
	return slogLogger{log: log, last: last, rep: &repeats{}}
}

const repeatEvery = time.Minute

// repeats remembers the last error or warning logged, without its connection ids.
type repeats struct {
	mu   sync.Mutex
	key  string
	when time.Time
}

// connIDs matches what differs between two reports of one problem: the peer's address,
// the connection id and the attempt number.
var connIDs = regexp.MustCompile(`[0-9a-fA-F.:\[\]]+:[0-9]+ - |\b[lcrg]id:[0-9]+|\(attempt [0-9]+\)`)

// fresh reports whether msg is not a repeat of the message logged less than repeatEvery ago.
func (r *repeats) fresh(msg string, now time.Time) bool {
	key := connIDs.ReplaceAllString(msg, "")
	r.mu.Lock()
	defer r.mu.Unlock()
	if key == r.key && now.Sub(r.when) < repeatEvery {
		return false
	}
	r.key, r.when = key, now
	return true
}

// plaintextWarning is the server's own warning about plaintext passwords; StartServer
// warns once per factory instead.
const plaintextWarning = "Plaintext passwords detected"

func (l slogLogger) Noticef(f string, v ...any) {
	l.log.Debug("nats server", "detail", fmt.Sprintf(f, v...))
}
func (l slogLogger) Warnf(f string, v ...any) {
	if strings.HasPrefix(f, plaintextWarning) {
		l.log.Debug("nats server", "detail", fmt.Sprintf(f, v...))
		return
	}
	l.report(slog.LevelWarn, f, v)
}
func (l slogLogger) Fatalf(f string, v ...any) { l.report(slog.LevelError, f, v) }
func (l slogLogger) Errorf(f string, v ...any) { l.report(slog.LevelError, f, v) }

func (l slogLogger) report(level slog.Level, f string, v []any) {
	msg := fmt.Sprintf(f, v...)
	l.last.Store(msg)
	if !l.rep.fresh(msg, time.Now()) {
		level = slog.LevelDebug
	}
	l.log.Log(context.Background(), level, "nats server", "detail", msg)
}
func (l slogLogger) Debugf(f string, v ...any) {}
func (l slogLogger) Tracef(f string, v ...any) {}
