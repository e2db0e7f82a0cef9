package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

const (
	// internedNames bounds the names (element signals) a source interns.
	internedNames = 100_000
	// monitorChunk is how many monitored items one CreateMonitoredItems request carries.
	monitorChunk = 1000
	// maxLoggedItemErrors bounds the distinct item errors remembered so each is logged once.
	maxLoggedItemErrors = 10_000
)

// Source is the OPC-UA source. It implements connectors.Source.
type Source struct {
	name   string
	cfg    Config
	log    *slog.Logger
	m      *metrics
	mapper *mapper
	names  *telemetry.Interner
	pkiDir string
	appURI string
	host   string
	policy string
	mode   ua.MessageSecurityMode
	token  ua.UserTokenType
	// nodePaths are the parsed browse paths of cfg.Nodes (nil for node_id items).
	nodePaths [][]pathSegment
	include   [][]glob // per browse root
	exclude   [][]glob

	nextHandle atomic.Uint32

	// inflight counts points returned by Read and not yet settled; room is signalled when
	// it drops.
	inflight atomic.Int64
	room     chan struct{}

	mu   sync.Mutex // guards conn
	conn *connection

	errMu     sync.Mutex
	loggedErr map[string]string // item key -> last error logged
}

var _ connectors.Source = (*Source)(nil)

// New validates cfg and builds the source. It does no I/O; Connect creates the certificate,
// connects and subscribes.
func New(name string, cfg Config, env connectors.Env) (*Source, error) {
	env = env.WithDefaults()
	cfg.Nodes = slices.Clone(cfg.Nodes)
	cfg.Browse = slices.Clone(cfg.Browse)
	cfg.Mapping = slices.Clone(cfg.Mapping)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("opcua source %q: %w", name, err)
	}
	fail := func(err error) (*Source, error) { return nil, fmt.Errorf("opcua source %q: %w", name, err) }
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	s := &Source{
		name:      name,
		cfg:       cfg,
		log:       env.Logger,
		names:     telemetry.NewInterner(internedNames),
		host:      host,
		policy:    securityPolicies[cfg.SecurityPolicy],
		mode:      securityModes[cfg.SecurityMode],
		room:      make(chan struct{}, 1),
		loggedErr: make(map[string]string),
	}
	switch cfg.Auth.Type {
	case AuthUsername:
		s.token = ua.UserTokenTypeUserName
	case AuthCertificate:
		s.token = ua.UserTokenTypeCertificate
	default:
		s.token = ua.UserTokenTypeAnonymous
	}
	s.appURI = cfg.ApplicationURI
	if s.appURI == "" {
		s.appURI = "urn:millwright:" + host + ":" + name
	}
	s.pkiDir = cfg.PKI.Dir
	if s.pkiDir == "" {
		if cfg.StateDir == "" && cfg.PKI.CertFile == "" {
			return fail(errors.New("pki.dir or state_dir must be set (the gateway fills state_dir from gateway.state_dir)"))
		}
		s.pkiDir = filepath.Join(cfg.StateDir, "opcua", name)
	}
	if s.mapper, err = newMapper(cfg.Mapping); err != nil {
		return fail(err)
	}
	for _, n := range cfg.Nodes {
		var segs []pathSegment
		if n.BrowsePath != "" {
			segs, _ = parseBrowsePath(n.BrowsePath) // valid: checked by Validate
		}
		s.nodePaths = append(s.nodePaths, segs)
	}
	for _, b := range cfg.Browse {
		var inc, exc []glob
		for _, g := range b.Include {
			c, _ := compileGlob(g)
			inc = append(inc, c)
		}
		for _, g := range b.Exclude {
			c, _ := compileGlob(g)
			exc = append(exc, c)
		}
		s.include = append(s.include, inc)
		s.exclude = append(s.exclude, exc)
	}
	if s.m, err = newMetrics(env.Registerer, name); err != nil {
		return fail(err)
	}
	return s, nil
}

// ItemStatus describes one configured or discovered item of the current connection.
type ItemStatus struct {
	// Origin is the configuration entry that yields the item: "nodes[2]" or "browse[0]".
	Origin string
	NodeID string
	Path   string
	// Machine and Signal are the names of its points (empty when it failed before mapping).
	Machine, Signal string
	// Class and Err are empty for a working item; otherwise the error class and message.
	Class string
	Err   string
}

// Items returns the status of every item of the current connection, failed ones included.
func (s *Source) Items() []ItemStatus {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.statuses()
}

// PKIDir returns the directory of the application certificate and the trust list.
func (s *Source) PKIDir() string { return s.pkiDir }

// Connect creates (or loads) the application certificate, selects the endpoint, checks the
// server's certificate against the trust list, opens the session, resolves, browses and
// subscribes to (or starts polling) the items. The whole sequence is bounded by
// connect_timeout. Calling Connect on a connected source is an error.
func (s *Source) Connect(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		return fmt.Errorf("opcua source %q: Connect called while connected; call Close first", s.name)
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	c, err := s.connect(cctx)
	if err != nil {
		return fmt.Errorf("opcua source %q: %w", s.name, err)
	}
	s.conn = c
	s.m.connects.Inc()
	return nil
}

func (s *Source) appCert() (appCert, error) {
	if s.cfg.PKI.CertFile != "" {
		return loadAppCert(s.cfg.PKI.CertFile, s.cfg.PKI.KeyFile)
	}
	cert, created, err := loadOrCreateAppCert(s.pkiDir, s.appURI, s.host)
	if err != nil {
		return appCert{}, fmt.Errorf("application certificate: %w", err)
	}
	if created {
		s.log.Info("generated application certificate", "path", filepath.Join(s.pkiDir, ownCertFile), "application_uri", s.appURI)
	}
	return cert, nil
}

func (s *Source) clientOptions(ep *ua.EndpointDescription, cert appCert) ([]opcua.Option, error) {
	opts := []opcua.Option{
		opcua.ApplicationURI(s.appURI),
		opcua.ApplicationName("Millwright"),
		opcua.ProductURI("urn:millwright"),
		opcua.SessionName("millwright-" + s.name),
		opcua.Certificate(cert.der),
		opcua.PrivateKey(cert.key),
		opcua.AutoReconnect(false), // the pipeline reconnects, with backoff
		opcua.DialTimeout(s.cfg.ConnectTimeout),
		opcua.RequestTimeout(s.cfg.RequestTimeout),
		opcua.SessionTimeout(s.cfg.SessionTimeout),
	}
	switch s.token {
	case ua.UserTokenTypeUserName:
		opts = append(opts, opcua.AuthUsername(s.cfg.Auth.Username, s.cfg.Auth.Password.Value()))
	case ua.UserTokenTypeCertificate:
		user, err := loadAppCert(s.cfg.Auth.CertFile, s.cfg.Auth.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("auth: user certificate: %w", err)
		}
		opts = append(opts, opcua.AuthCertificate(user.der), opcua.AuthPrivateKey(user.key))
	default:
		opts = append(opts, opcua.AuthAnonymous())
	}
	// After the Auth option: it sets the token's policy id from the endpoint.
	opts = append(opts, opcua.SecurityFromEndpoint(ep, s.token))
	return opts, nil
}

func (s *Source) connect(ctx context.Context) (*connection, error) {
	cert, err := s.appCert()
	if err != nil {
		return nil, err
	}
	eps, err := opcua.GetEndpoints(ctx, s.cfg.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("get endpoints of %s: %w", s.cfg.Endpoint, err)
	}
	ep, err := selectEndpoint(eps, s.policy, s.mode, s.token)
	if err != nil {
		return nil, fmt.Errorf("select endpoint of %s: %w", s.cfg.Endpoint, err)
	}
	if s.policy != ua.SecurityPolicyURINone {
		res, err := checkServerCert(s.pkiDir, ep.ServerCertificate, s.cfg.PKI.TrustOnFirstUse, time.Now())
		if err != nil {
			var rej *RejectedError
			if errors.As(err, &rej) {
				s.m.certRejected.Inc()
				s.log.Error("server certificate rejected", "reason", rej.Reason, "thumbprint", rej.Thumbprint, "subject", rej.Subject, "path", rej.Path)
			}
			return nil, err
		}
		if res == trustedPinned {
			s.log.Warn("TRUST ON FIRST USE: pinned the server certificate without verification; check its thumbprint",
				"thumbprint", thumbprint(ep.ServerCertificate), "trusted_dir", filepath.Join(s.pkiDir, trustedDir))
		}
	}
	opts, err := s.clientOptions(ep, cert)
	if err != nil {
		return nil, err
	}
	client, err := opcua.NewClient(s.cfg.Endpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("client options: %w", err)
	}
	if err := client.Connect(ctx); err != nil {
		_ = client.Close(context.Background())
		who := tokenName(s.token)
		if s.token == ua.UserTokenTypeUserName {
			who = fmt.Sprintf("user %q", s.cfg.Auth.Username)
		}
		return nil, fmt.Errorf("connect to %s (%s/%s, %s): %w", s.cfg.Endpoint, policyName(ep.SecurityPolicyURI), modeName(ep.SecurityMode), who, err)
	}
	c := newConnection(s, client)
	if err := c.start(ctx); err != nil {
		c.shutdown(context.Background())
		return nil, err
	}
	return c, nil
}

// Read returns the points of the notifications (or poll cycles) received since the last
// Read: it waits for the first, then takes whatever else has arrived, up to
// max_batch_points points. It takes nothing while max_inflight_points points are unsettled.
// The AckFunc releases the batch's points from the window; OPC-UA cannot deliver values
// again, so a batch settled with an error is counted in millwright_opcua_lost_points_total.
func (s *Source) Read(ctx context.Context) (telemetry.Batch, connectors.AckFunc, error) {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return telemetry.Batch{}, nil, fmt.Errorf("opcua source %q: %w", s.name, connectors.ErrNotConnected)
	}
	if err := s.waitRoom(ctx, c); err != nil {
		return telemetry.Batch{}, nil, fmt.Errorf("opcua source %q: %w", s.name, err)
	}
	for len(c.pending) == 0 {
		if err := c.fill(ctx); err != nil {
			return telemetry.Batch{}, nil, fmt.Errorf("opcua source %q: %w", s.name, err)
		}
	}
	room := int64(s.cfg.MaxInflightPoints) - s.inflight.Load()
	n := int(min(int64(len(c.pending)), int64(s.cfg.MaxBatchPoints), max(room, 1)))
	pts := make([]telemetry.Point, n)
	copy(pts, c.pending)
	c.take(n)
	s.inflight.Add(int64(n))
	s.m.inflight.Set(float64(s.inflight.Load()))
	var once atomic.Bool
	ack := func(_ context.Context, err error) {
		if !once.CompareAndSwap(false, true) {
			return
		}
		if err != nil {
			s.m.lost.Add(float64(n))
			s.log.Warn("batch not stored; OPC-UA cannot deliver it again, its points are lost", "points", n, "err", err)
		}
		s.inflight.Add(-int64(n))
		s.m.inflight.Set(float64(s.inflight.Load()))
		select {
		case s.room <- struct{}{}:
		default:
		}
	}
	return telemetry.Batch{Points: pts}, ack, nil
}

// waitRoom blocks while the in-flight window is full.
func (s *Source) waitRoom(ctx context.Context, c *connection) error {
	for s.inflight.Load() >= int64(s.cfg.MaxInflightPoints) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.lost:
			return c.lostError()
		case <-s.room:
		}
	}
	return nil
}

// Close deletes the subscription and closes the session. Points of notifications received
// and not yet read are lost (OPC-UA keeps no copy for a new session).
func (s *Source) Close(ctx context.Context) error {
	s.mu.Lock()
	c := s.conn
	s.conn = nil
	s.mu.Unlock()
	if c != nil {
		c.shutdown(ctx)
		// Points converted and not yet read, and those of the notifications and poll
		// cycles still queued for Read.
		if n := len(c.pending) + c.discard(); n > 0 {
			s.m.lost.Add(float64(n))
		}
	}
	return nil
}

// noteItemError counts an item error and logs it once per item and message.
func (s *Source) noteItemError(key, origin, class string, err error) {
	s.m.itemErrors.WithLabelValues(class).Inc()
	msg := err.Error()
	s.errMu.Lock()
	prev, seen := s.loggedErr[key]
	if !seen && len(s.loggedErr) >= maxLoggedItemErrors {
		s.errMu.Unlock()
		return
	}
	s.loggedErr[key] = msg
	s.errMu.Unlock()
	if prev != msg {
		s.log.Warn("item failed; the other items keep working", "origin", origin, "item", key, "class", class, "err", err)
	}
}

// keepAliveNode is read to check the session: the server's state.
var keepAliveNode = ua.NewNumericNodeID(0, id.Server_ServerStatus_State)
