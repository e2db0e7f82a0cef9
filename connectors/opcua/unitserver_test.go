package opcua

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/server/attrs"
	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uasc"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// unitServer is a gopcua in-process server (security None) with a small plant:
//
//	Objects/Plant/Line1/Press7/{Temperature, Running, Label, Vibration (array), Count}
//	Objects/Plant/Line1/Pump3/{Temperature, Pressure}
//	Objects/Plant/Line1/Diagnostics/{Errors}
//
// Node ids are "ns=<ns>;s=<browse path below Plant, joined by '.'>".
//
// A test that reads subscription data starts a server per subscribing session. The gopcua
// server (v0.8.0) numbers a new subscription len(subscriptions)+1, so a session's new
// subscription can take the number of the previous session's deleted one, and the deleted
// one's goroutine, which deletes its number once more when it stops, may then delete the
// new subscription: that session connects and never receives a value. This made
// TestArraysFlattenAndSkip's second session fail about once in a hundred runs on a loaded
// machine. Servers that follow the specification number subscriptions uniquely.
type unitServer struct {
	srv  *server.Server
	ns   *server.NodeNameSpace
	url  string
	mu   sync.Mutex
	vals map[string]*ua.DataValue // by node id string
	// clockStill: the server does not sample its clock, so it reports it once only.
	clockStill atomic.Bool
	// failPublish is how many publish requests the server answers BadNoSubscription, as a
	// server does to one that comes before a subscription exists; gopcua's client pauses
	// its publish loop on that answer.
	failPublish atomic.Int32
	// browseFaults are the nodes whose Browse the server answers with a bad status (by
	// node id string; guarded by mu).
	browseFaults map[string]ua.StatusCode
	// readFault, when set, is a node id string: a Read request that names it is answered
	// with a service fault.
	readFault atomic.Pointer[string]
	// revisedInterval, when set, is the publishing interval the server's CreateSubscription
	// answer claims (a server may revise the requested one upward, Part 4, 5.13.2).
	revisedInterval atomic.Int64
}

type unitVar struct {
	path  []string // below Plant
	value any
}

var unitVars = []unitVar{
	{[]string{"Line1", "Press7", "Temperature"}, 21.5},
	{[]string{"Line1", "Press7", "Running"}, true},
	{[]string{"Line1", "Press7", "Label"}, "ok"},
	{[]string{"Line1", "Press7", "Vibration"}, []float64{0.1, 0.2, 0.3}},
	{[]string{"Line1", "Press7", "Count"}, int32(7)},
	{[]string{"Line1", "Pump3", "Temperature"}, float32(40)},
	{[]string{"Line1", "Pump3", "Pressure"}, uint16(3)},
	{[]string{"Line1", "Diagnostics", "Errors"}, int64(0)},
}

func startUnitServer(t testing.TB) *unitServer {
	t.Helper()
	port := servicetest.FreePort(t)
	u := &unitServer{vals: map[string]*ua.DataValue{}}
	u.srv = server.New(
		server.EndPoint("127.0.0.1", port),
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.SetLogger(quietLogger{}),
	)
	answerPublishingMode(u.srv)
	// Registered before Start, it takes the place of the server's own publish handler.
	u.srv.RegisterHandler(id.PublishRequest_Encoding_DefaultBinary, func(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
		for n := u.failPublish.Load(); n > 0; n = u.failPublish.Load() {
			if req, ok := r.(*ua.PublishRequest); ok && u.failPublish.CompareAndSwap(n, n-1) {
				return &ua.ServiceFault{ResponseHeader: responseHeader(req.RequestHeader, ua.StatusBadNoSubscription)}, nil
			}
		}
		return u.srv.SubscriptionService.Publish(sc, r, reqID)
	})
	u.srv.RegisterHandler(id.BrowseRequest_Encoding_DefaultBinary, func(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
		req, ok := r.(*ua.BrowseRequest)
		if !ok {
			return nil, ua.StatusBadRequestTypeInvalid
		}
		res := &ua.BrowseResponse{ResponseHeader: responseHeader(req.RequestHeader, ua.StatusOK), Results: make([]*ua.BrowseResult, len(req.NodesToBrowse))}
		for i, br := range req.NodesToBrowse {
			u.mu.Lock()
			code, fault := u.browseFaults[br.NodeID.String()]
			u.mu.Unlock()
			ns, err := u.srv.Namespace(int(br.NodeID.Namespace()))
			switch {
			case fault:
				res.Results[i] = &ua.BrowseResult{StatusCode: code}
			case err != nil:
				res.Results[i] = &ua.BrowseResult{StatusCode: ua.StatusBadNodeIDUnknown}
			default:
				res.Results[i] = ns.Browse(br)
			}
		}
		return res, nil
	})
	u.srv.RegisterHandler(id.CreateSubscriptionRequest_Encoding_DefaultBinary, func(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
		res, err := u.srv.SubscriptionService.CreateSubscription(sc, r, reqID)
		if cs, ok := res.(*ua.CreateSubscriptionResponse); ok && u.revisedInterval.Load() > 0 {
			cs.RevisedPublishingInterval = float64(time.Duration(u.revisedInterval.Load())) / float64(time.Millisecond)
		}
		return res, err
	})
	// The server's own Read, except for readFault.
	u.srv.RegisterHandler(id.ReadRequest_Encoding_DefaultBinary, func(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
		req, ok := r.(*ua.ReadRequest)
		if !ok {
			return nil, ua.StatusBadRequestTypeInvalid
		}
		results := make([]*ua.DataValue, len(req.NodesToRead))
		for i, n := range req.NodesToRead {
			if f := u.readFault.Load(); f != nil && n.NodeID.String() == *f {
				return &ua.ServiceFault{ResponseHeader: responseHeader(req.RequestHeader, ua.StatusBadTooManyOperations)}, nil
			}
			ns, err := u.srv.Namespace(int(n.NodeID.Namespace()))
			if err != nil {
				results[i] = &ua.DataValue{EncodingMask: ua.DataValueStatusCode, Status: ua.StatusBadNodeIDUnknown}
				continue
			}
			results[i] = ns.Attribute(n.NodeID, n.AttributeID)
		}
		return &ua.ReadResponse{ResponseHeader: responseHeader(req.RequestHeader, ua.StatusOK), Results: results}, nil
	})
	u.url = "opc.tcp://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	u.ns = server.NewNodeNameSpace(u.srv, "urn:millwright:test")
	root, _ := u.srv.Namespace(0)
	plant := u.folder("Plant", "Plant")
	root.Objects().AddRef(plant, id.Organizes, true)
	folders := map[string]*server.Node{}
	for _, v := range unitVars {
		parent := plant
		key := ""
		for _, seg := range v.path[:len(v.path)-1] {
			key += "." + seg
			f := folders[key]
			if f == nil {
				f = u.folder(key[1:], seg)
				parent.AddRef(f, id.Organizes, true)
				folders[key] = f
			}
			parent = f
		}
		nid := u.nodeID(v.path...)
		u.vals[nid.String()] = dataValue(v.value, time.Now())
		key2 := nid.String()
		node := server.NewNode(nid,
			map[ua.AttributeID]*ua.DataValue{
				ua.AttributeIDNodeClass:       server.DataValueFromValue(uint32(ua.NodeClassVariable)),
				ua.AttributeIDBrowseName:      server.DataValueFromValue(attrs.BrowseName(v.path[len(v.path)-1])),
				ua.AttributeIDDisplayName:     server.DataValueFromValue(attrs.DisplayName(v.path[len(v.path)-1], "")),
				ua.AttributeIDAccessLevel:     server.DataValueFromValue(byte(ua.AccessLevelTypeCurrentRead)),
				ua.AttributeIDUserAccessLevel: server.DataValueFromValue(byte(ua.AccessLevelTypeCurrentRead)),
			},
			nil,
			func() *ua.DataValue {
				u.mu.Lock()
				defer u.mu.Unlock()
				dv := *u.vals[key2]
				return &dv
			})
		u.ns.AddNode(node)
		parent.AddRef(node, id.HasComponent, true)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := u.srv.Start(ctx); err != nil {
		cancel()
		t.Fatalf("start server: %v", err)
	}
	// gopcua's server reports a value only when told it changed; a server samples its
	// clock, so this one is told every 20ms (the source's stall watchdog needs it).
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if !u.clockStill.Load() {
					u.srv.ChangeNotification(heartbeatNode)
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-ticked
		_ = u.srv.Close()
	})
	return u
}

func (u *unitServer) folder(key, name string) *server.Node {
	n := server.NewNode(ua.NewStringNodeID(u.ns.ID(), "folder:"+key),
		map[ua.AttributeID]*ua.DataValue{
			ua.AttributeIDNodeClass:   server.DataValueFromValue(uint32(ua.NodeClassObject)),
			ua.AttributeIDBrowseName:  server.DataValueFromValue(attrs.BrowseName(name)),
			ua.AttributeIDDisplayName: server.DataValueFromValue(attrs.DisplayName(name, "")),
		}, nil, nil)
	return u.ns.AddNode(n)
}

func (u *unitServer) nodeID(path ...string) *ua.NodeID {
	s := ""
	for i, p := range path {
		if i > 0 {
			s += "."
		}
		s += p
	}
	return ua.NewStringNodeID(u.ns.ID(), s)
}

// failBrowse makes the server answer Browse of node with code (StatusOK: answer again).
func (u *unitServer) failBrowse(node string, code ua.StatusCode) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.browseFaults == nil {
		u.browseFaults = map[string]ua.StatusCode{}
	}
	if code == ua.StatusOK {
		delete(u.browseFaults, node)
		return
	}
	u.browseFaults[node] = code
}

// set changes a value (status Good unless given) and notifies the monitored items.
func (u *unitServer) set(v any, status ua.StatusCode, path ...string) {
	nid := u.nodeID(path...)
	dv := dataValue(v, time.Now())
	if status != ua.StatusOK {
		dv.Status = status
		dv.EncodingMask |= ua.DataValueStatusCode
	}
	u.mu.Lock()
	u.vals[nid.String()] = dv
	u.mu.Unlock()
	u.srv.ChangeNotification(nid)
}

func dataValue(v any, t time.Time) *ua.DataValue {
	return &ua.DataValue{
		EncodingMask:    ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
		Value:           ua.MustVariant(v),
		SourceTimestamp: t.Add(-time.Millisecond),
		ServerTimestamp: t,
	}
}

type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}

// unitConfig is a source configuration for u with fast intervals and a private PKI dir.
func unitConfig(t testing.TB, u *unitServer) Config {
	var c Config
	c.Endpoint = u.url
	c.StateDir = t.TempDir()
	c.KeepAlive = 200 * time.Millisecond
	c.Subscription.PublishingInterval = 50 * time.Millisecond
	c.Polling.Interval = 50 * time.Millisecond
	return c
}

func unitEnv(t testing.TB) connectors.Env {
	return connectors.Env{Logger: slog.New(slog.DiscardHandler)}.WithDefaults()
}

// connectUnit builds and connects a source; Close runs at cleanup.
func connectUnit(t testing.TB, cfg Config) *Source {
	t.Helper()
	s, err := New("unit", cfg, unitEnv(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// readUntil reads (acking every batch) until want returns true for the points seen so far.
func readUntil(t testing.TB, s *Source, timeout time.Duration, want func([]telemetry.Point) bool) []telemetry.Point {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var seen []telemetry.Point
	for !want(seen) {
		b, ack, err := s.Read(ctx)
		if err != nil {
			t.Fatalf("Read: %v (after %d points)", err, len(seen))
		}
		seen = append(seen, b.Points...)
		ack(ctx, nil)
	}
	return seen
}

// bySignal returns the last point of every machine/signal.
func bySignal(pts []telemetry.Point) map[string]telemetry.Point {
	m := map[string]telemetry.Point{}
	for _, p := range pts {
		m[p.Machine+"/"+p.Signal] = p
	}
	return m
}

func hasAll(keys ...string) func([]telemetry.Point) bool {
	return func(pts []telemetry.Point) bool {
		m := bySignal(pts)
		for _, k := range keys {
			if _, ok := m[k]; !ok {
				return false
			}
		}
		return true
	}
}
