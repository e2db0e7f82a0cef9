package natsbus

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/millwright-io/millwright/gateway/config"
)

// hubUser is the embedded server's account for the hub itself, with a random password
// generated at every start.
const hubUser = "millwright-hub"

// Names of the JetStream assets of one federation.
func modelBucket(fed string) string { return "mwmodels-" + fed }
func roundBucket(fed string) string { return "mwround-" + fed }
func hubBucket(fed string) string   { return "mwhub-" + fed }
func updateStream(fed string) string {
	return "MWUPD-" + fed
}
func updateSubject(fed string, round uint64, participant string) string {
	return "mw.upd." + fed + "." + strconv.FormatUint(round, 10) + "." + participant
}

// inboxPrefix is a user's private inbox prefix: a factory may subscribe only below it, so
// it cannot read replies (model downloads) meant for another factory.
func inboxPrefix(user string) string { return "_INBOX_" + user }

// FactoryPermissions returns the subject permissions of factory name in federations feds
// on a server whose JetStream domain is domain: publish its own updates, read the models
// and round state of its federations through the JetStream API (also under the domain
// prefix that clients behind a leaf node use), and receive on its own inbox prefix.
// Nothing else: no stream administration, no other factory's updates, no other
// federation's models. The same permissions serve a factory whose site's leaf node
// connects with its credentials (the update stream's subjects are per member, so that
// the hub's interest in them passes the leaf connection's permissions).
func FactoryPermissions(name string, feds []string, domain string) *server.Permissions {
	var pub []string
	api := func(s string) {
		pub = append(pub, "$JS.API."+s)
		if domain != "" {
			pub = append(pub, "$JS."+domain+".API."+s)
		}
	}
	api("INFO")
	for _, fed := range feds {
		pub = append(pub, "mw.upd."+fed+".*."+name)
		for _, s := range []string{"OBJ_" + modelBucket(fed), "KV_" + roundBucket(fed)} {
			api("STREAM.INFO." + s)
			api("STREAM.MSG.GET." + s)
			api("DIRECT.GET." + s)
			api("DIRECT.GET." + s + ".>")
			api("CONSUMER.CREATE." + s)
			api("CONSUMER.CREATE." + s + ".>")
			api("CONSUMER.DELETE." + s + ".>")
			api("CONSUMER.INFO." + s + ".>")
			pub = append(pub, "$JS.FC."+s+".>")
		}
	}
	p := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{inboxPrefix(name) + ".>"}},
	}
	return p
}

// Server is an embedded NATS server with JetStream, for a single-node hub.
type Server struct {
	srv         *server.Server
	hubPassword string
	domain      string
	leafListen  string
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
	s := &Server{hubPassword: hex.EncodeToString(pw[:]), domain: cfg.Domain, leafListen: cfg.LeafListen}
	opts := &server.Options{
		ServerName:      cfg.ServerName,
		Host:            host,
		Port:            port,
		JetStream:       true,
		JetStreamDomain: cfg.Domain,
		StoreDir:        cfg.StoreDir,
		NoSigs:          true,
		MaxPayload:      8 << 20,
	}
	users := []*server.User{{Username: hubUser, Password: s.hubPassword}}
	for _, f := range cfg.Factories {
		users = append(users, &server.User{Username: f.Name, Password: f.Password.Value(), Permissions: FactoryPermissions(f.Name, f.Federations, cfg.Domain)})
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
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsbus: embedded server: %w", err)
	}
	srv.SetLoggerV2(slogLogger{log}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("natsbus: embedded server on %s not ready after 10s", cfg.Listen)
	}
	s.srv = srv
	return s, nil
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
}

// StartLeaf starts a leaf node for a gateway site: local clients connect to it; it keeps
// working while the link to the hub is down and forwards to the hub's JetStream domain.
func StartLeaf(cfg LeafConfig, log *slog.Logger) (*Server, error) {
	host, port, err := splitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("natsbus: leaf listen %q: %w", cfg.Listen, err)
	}
	u, err := url.Parse(cfg.HubURL)
	if err != nil {
		return nil, fmt.Errorf("natsbus: hub url %q: %w", cfg.HubURL, err)
	}
	if cfg.User != "" {
		u.User = url.UserPassword(cfg.User, cfg.Password)
	}
	opts := &server.Options{
		ServerName: cfg.ServerName, Host: host, Port: port, NoSigs: true,
		JetStream: true, JetStreamDomain: cfg.Domain, StoreDir: cfg.StoreDir,
		MaxPayload: 8 << 20,
	}
	opts.LeafNode.Remotes = []*server.RemoteLeafOpts{{URLs: []*url.URL{u}}}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsbus: leaf server: %w", err)
	}
	srv.SetLoggerV2(slogLogger{log}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("natsbus: leaf server on %s not ready after 10s", cfg.Listen)
	}
	return &Server{srv: srv, domain: cfg.Domain}, nil
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
// that normal running stays quiet.
type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Noticef(f string, v ...any) {
	l.log.Debug("nats server", "detail", fmt.Sprintf(f, v...))
}
func (l slogLogger) Warnf(f string, v ...any) {
	l.log.Warn("nats server", "detail", fmt.Sprintf(f, v...))
}
func (l slogLogger) Fatalf(f string, v ...any) {
	l.log.Error("nats server", "detail", fmt.Sprintf(f, v...))
}
func (l slogLogger) Errorf(f string, v ...any) {
	l.log.Error("nats server", "detail", fmt.Sprintf(f, v...))
}
func (l slogLogger) Debugf(f string, v ...any) {}
func (l slogLogger) Tracef(f string, v ...any) {}
