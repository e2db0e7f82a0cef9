package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/server/attrs"
	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uasc"

	"github.com/millwright-io/millwright/connectors/sim"
)

// SimNamespaceURI is the namespace of the simulated plant's nodes on a SimServer.
const SimNamespaceURI = "urn:millwright:sim"

// SimServerOptions configure a SimServer. Zero values take the documented defaults.
type SimServerOptions struct {
	// Addr is the host:port to listen on (default 127.0.0.1 and a free port).
	Addr string
	// Interval between plant steps (default the plant's Interval).
	Interval time.Duration
	// Start is the time of the first step (default the wall clock when Start runs, to the
	// millisecond); step n is at Start + n*Interval, and that is every value's source
	// timestamp. OPC-UA times have a resolution of 100 ns.
	Start time.Time
	// Logger receives the OPC-UA server's own messages (default none).
	Logger *slog.Logger
}

// SimServer serves a simulated plant over OPC-UA with gopcua's server: security None,
// anonymous login, one folder per machine under Objects/Plant/<line>/<machine>, one Double
// variable per signal with the string node id "Plant/<line>/<machine>/<signal>" in
// namespace SimNamespaceURI. Every step updates every variable and notifies its monitored
// items. gopcua's server stops delivering above about 2,000-3,000 monitored items: it is a
// peer for the demo and quick tests, node-opcua is the one for load.
type SimServer struct {
	plant *sim.Plant
	opts  SimServerOptions
	url   string
	srv   *server.Server
	ns    *server.NodeNameSpace
	vars  [][]simVar // [machine][signal]

	mu     sync.RWMutex // guards the samples' values read by the variables
	steps  atomic.Int64
	cancel context.CancelFunc
	done   chan struct{}
}

type simVar struct {
	id     *ua.NodeID
	signal string
	value  ua.DataValue // guarded by SimServer.mu
}

// NewSimServer checks its arguments. It does no I/O: Start builds the address space and
// listens. The plant must not be used by anything else while the server runs.
func NewSimServer(plant *sim.Plant, opts SimServerOptions) (*SimServer, error) {
	if plant == nil {
		return nil, errors.New("opc-ua simulator: no plant")
	}
	if opts.Interval < 0 {
		return nil, fmt.Errorf("opc-ua simulator: interval %s is negative; expected 0 (the plant's) or more", opts.Interval)
	}
	if opts.Interval == 0 {
		opts.Interval = plant.Config().Interval
	}
	s := &SimServer{plant: plant, opts: opts}
	return s, nil
}

// URL is the endpoint URL (opc.tcp://host:port), known once Start returned.
func (s *SimServer) URL() string { return s.url }

// Namespace is the index of SimNamespaceURI on the server, known once Start returned.
func (s *SimServer) Namespace() uint16 { return s.ns.ID() }

// NodeID returns the node id of a machine's signal ("ns=1;s=Plant/line1/pump-1/temperature"),
// known once Start returned.
func (s *SimServer) NodeID(line, machine, signal string) string {
	return ua.NewStringNodeID(s.ns.ID(), SimBrowsePath(line, machine, signal)).String()
}

// SimBrowsePath is the browse path, from the Objects folder, of a machine's signal on a
// SimServer; it is also the string part of the signal's node id.
func SimBrowsePath(line, machine, signal string) string {
	return "Plant/" + line + "/" + machine + "/" + signal
}

// Steps counts the plant steps served so far.
func (s *SimServer) Steps() int64 { return s.steps.Load() }

// Start listens and starts stepping the plant. The server runs until Close, whatever
// becomes of ctx (use Run to tie it to a context).
func (s *SimServer) Start(ctx context.Context) error {
	if s.done != nil {
		return errors.New("opc-ua simulator: already started")
	}
	host, port, err := s.listenAddr()
	if err != nil {
		return err
	}
	opts := []server.Option{
		server.EndPoint(host, port),
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.ServerName("Millwright simulated plant"),
		server.ProductName("Millwright simulator"),
		server.ManufacturerName("Millwright"),
	}
	if s.opts.Logger != nil {
		opts = append(opts, server.SetLogger(s.opts.Logger))
	}
	s.srv = server.New(opts...)
	answerPublishingMode(s.srv)
	s.url = "opc.tcp://" + net.JoinHostPort(host, strconv.Itoa(port))
	s.build()

	// The first step fills every value before a client can read one.
	start := s.opts.Start
	if start.IsZero() {
		start = time.Now().Truncate(time.Millisecond)
	}
	s.step(start, false)

	srvCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if err := s.srv.Start(srvCtx); err != nil {
		cancel()
		return fmt.Errorf("opc-ua simulator: listen on %s: %w", s.url, err)
	}
	s.cancel, s.done = cancel, make(chan struct{})
	go s.run(srvCtx, start)
	return nil
}

func (s *SimServer) listenAddr() (string, int, error) {
	addr := s.opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("opc-ua simulator: address %q: %w; expected host:port", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("opc-ua simulator: address %q: port %q is not a TCP port", addr, portStr)
	}
	if port == 0 {
		// gopcua announces the configured port in its endpoints, so pick a free one first.
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return "", 0, fmt.Errorf("opc-ua simulator: find a free port on %s: %w", host, err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	return host, port, nil
}

// build adds the plant's folders and variables to a new namespace, below Objects/Plant.
func (s *SimServer) build() {
	s.ns = server.NewNodeNameSpace(s.srv, SimNamespaceURI)
	root, _ := s.srv.Namespace(0)
	nsID := s.ns.ID()

	plant := s.folder(ua.NewStringNodeID(nsID, "Plant"), "Plant")
	root.Objects().AddRef(plant, id.Organizes, true)
	lines := map[string]*server.Node{}
	cfg := s.plant.Config()
	s.vars = make([][]simVar, len(cfg.Machines))
	for i, m := range cfg.Machines {
		line := lines[m.Line]
		if line == nil {
			line = s.folder(ua.NewStringNodeID(nsID, "Plant/"+m.Line), m.Line)
			plant.AddRef(line, id.Organizes, true)
			lines[m.Line] = line
		}
		machine := s.folder(ua.NewStringNodeID(nsID, "Plant/"+m.Line+"/"+m.ID), m.ID)
		line.AddRef(machine, id.Organizes, true)
		signals := m.Kind.Signals()
		s.vars[i] = make([]simVar, len(signals))
		for j, signal := range signals {
			v := &s.vars[i][j]
			v.id = ua.NewStringNodeID(nsID, SimBrowsePath(m.Line, m.ID, signal))
			v.signal = signal
			node := server.NewNode(v.id,
				map[ua.AttributeID]*ua.DataValue{
					ua.AttributeIDNodeClass:       server.DataValueFromValue(uint32(ua.NodeClassVariable)),
					ua.AttributeIDBrowseName:      server.DataValueFromValue(attrs.BrowseName(signal)),
					ua.AttributeIDDisplayName:     server.DataValueFromValue(attrs.DisplayName(signal, "")),
					ua.AttributeIDDataType:        server.DataValueFromValue(ua.NewNumericExpandedNodeID(0, id.Double)),
					ua.AttributeIDValueRank:       server.DataValueFromValue(int32(-1)),
					ua.AttributeIDAccessLevel:     server.DataValueFromValue(byte(ua.AccessLevelTypeCurrentRead)),
					ua.AttributeIDUserAccessLevel: server.DataValueFromValue(byte(ua.AccessLevelTypeCurrentRead)),
				},
				nil,
				func() *ua.DataValue {
					s.mu.RLock()
					dv := v.value
					s.mu.RUnlock()
					return &dv
				},
			)
			s.ns.AddNode(node)
			machine.AddRef(node, id.HasComponent, true)
		}
	}
}

func (s *SimServer) folder(nid *ua.NodeID, name string) *server.Node {
	n := server.NewNode(nid,
		map[ua.AttributeID]*ua.DataValue{
			ua.AttributeIDNodeClass:   server.DataValueFromValue(uint32(ua.NodeClassObject)),
			ua.AttributeIDBrowseName:  server.DataValueFromValue(attrs.BrowseName(name)),
			ua.AttributeIDDisplayName: server.DataValueFromValue(attrs.DisplayName(name, "")),
		},
		nil, nil)
	return s.ns.AddNode(n)
}

// run steps the plant once per interval until ctx ends. Step n is at start + n*interval,
// so the values do not depend on scheduling jitter.
func (s *SimServer) run(ctx context.Context, start time.Time) {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for n := int64(1); ; n++ {
		at := start.Add(time.Duration(n) * s.opts.Interval)
		timer.Reset(time.Until(at))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		s.step(at, true)
	}
}

// step advances the plant to t, stores every value and, when notify, tells the monitored
// items of every variable.
func (s *SimServer) step(t time.Time, notify bool) {
	samples := s.plant.Step(t)
	now := time.Now()
	s.mu.Lock()
	for i, smp := range samples {
		for j := range s.vars[i] {
			v := &s.vars[i][j]
			v.value = ua.DataValue{
				EncodingMask:    ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
				Value:           ua.MustVariant(signalValue(smp.Signals, v.signal)),
				SourceTimestamp: t,
				ServerTimestamp: now,
			}
		}
	}
	s.mu.Unlock()
	s.steps.Add(1)
	if !notify {
		return
	}
	for i := range s.vars {
		for j := range s.vars[i] {
			s.srv.ChangeNotification(s.vars[i][j].id)
		}
	}
	// A server samples its clock too; gopcua's reports it only when told (the source's
	// stall watchdog watches it).
	s.srv.ChangeNotification(heartbeatNode)
}

func signalValue(sig sim.Signals, name string) float64 {
	switch name {
	case sim.SignalTemperature:
		return sig.Temperature
	case sim.SignalVibrationRMS:
		return sig.VibrationRMS
	case sim.SignalCurrent:
		return sig.Current
	case sim.SignalPressure:
		return sig.Pressure
	case sim.SignalSpeed:
		return sig.Speed
	}
	return 0
}

// closeWait bounds how long Close waits for the stepping goroutine.
const closeWait = 10 * time.Second

// Close stops stepping and closes the server's listener and connections. gopcua's
// ChangeNotification can block for good when a subscription ends while it sends to it; Close
// then gives up on the stepping goroutine after 10 s and says so, rather than hanging.
func (s *SimServer) Close() error {
	if s.done == nil {
		return nil
	}
	s.cancel()
	err := s.srv.Close()
	select {
	case <-s.done:
	case <-time.After(closeWait):
		return errors.Join(err, fmt.Errorf("opc-ua simulator: the plant's stepping goroutine is stuck in gopcua's ChangeNotification after %s; abandoning it", closeWait))
	}
	return err
}

// Run starts the server, serves until ctx ends and closes it: the Service shape, for
// composing the simulator with the gateway in one process.
func (s *SimServer) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return s.Close()
}

// answerPublishingMode makes srv, before it starts, answer SetPublishingMode requests that
// enable publishing as the specification says: Good for a subscription of the session,
// BadSubscriptionIdInvalid for any other. That is how the source's stall watchdog asks
// whether a server still has a subscription, and gopcua's server (v0.8.0) does not
// support the service. Its subscriptions always publish, so a request to disable
// publishing is refused as unsupported.
func answerPublishingMode(srv *server.Server) {
	srv.RegisterHandler(id.SetPublishingModeRequest_Encoding_DefaultBinary, func(_ *uasc.SecureChannel, r ua.Request, _ uint32) (ua.Response, error) {
		req, ok := r.(*ua.SetPublishingModeRequest)
		if !ok {
			return nil, ua.StatusBadRequestTypeInvalid
		}
		if !req.PublishingEnabled {
			return &ua.ServiceFault{ResponseHeader: responseHeader(req.RequestHeader, ua.StatusBadServiceUnsupported)}, nil
		}
		session, subs := srv.Session(req.RequestHeader), srv.SubscriptionService // created by Start
		results := make([]ua.StatusCode, len(req.SubscriptionIDs))
		subs.Mu.Lock()
		for i, sid := range req.SubscriptionIDs {
			results[i] = ua.StatusBadSubscriptionIDInvalid
			if sub, ok := subs.Subs[sid]; ok && session != nil && sub.Session.AuthTokenID.String() == session.AuthTokenID.String() {
				results[i] = ua.StatusOK
			}
		}
		subs.Mu.Unlock()
		return &ua.SetPublishingModeResponse{ResponseHeader: responseHeader(req.RequestHeader, ua.StatusOK), Results: results, DiagnosticInfos: []*ua.DiagnosticInfo{}}, nil
	})
}

// responseHeader is the header of a server's answer to the request with header req, with
// service result code.
func responseHeader(req *ua.RequestHeader, code ua.StatusCode) *ua.ResponseHeader {
	return &ua.ResponseHeader{
		Timestamp:          time.Now(),
		RequestHandle:      req.RequestHandle,
		ServiceResult:      code,
		ServiceDiagnostics: &ua.DiagnosticInfo{},
		StringTable:        []string{},
		AdditionalHeader:   ua.NewExtensionObject(nil),
	}
}
