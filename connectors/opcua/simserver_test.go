package opcua

import (
	"context"
	"testing"
	"time"

	gopcua "github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/millwright-io/millwright/connectors/sim"
)

// simPlantConfig is a small plant: a pump (five signals) and a spindle (four).
func simPlantConfig() sim.Config {
	return sim.Config{Seed: 7, Interval: 50 * time.Millisecond, Machines: []sim.Machine{
		{ID: "pump-1", Line: "line1", Kind: sim.KindPump},
		{ID: "spindle-1", Line: "line1", Kind: sim.KindSpindle, Faults: []sim.Fault{{Kind: sim.FaultImbalance}}},
	}}
}

func newPlant(t testing.TB, cfg sim.Config) *sim.Plant {
	t.Helper()
	p, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startSimServer serves a plant of cfg and closes it when the test ends.
func startSimServer(t testing.TB, cfg sim.Config, opts SimServerOptions) *SimServer {
	t.Helper()
	s, err := NewSimServer(newPlant(t, cfg), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// rawClient connects gopcua's client with security None, without the source under test.
func rawClient(t *testing.T, url string) *gopcua.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := gopcua.NewClient(url, gopcua.SecurityMode(ua.MessageSecurityModeNone), gopcua.AutoReconnect(false))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func TestSimServerValuesMatchThePlant(t *testing.T) {
	cfg := simPlantConfig()
	start := time.Now().Truncate(time.Millisecond)
	// An hour between steps: every value stays the first sample's during the test.
	s := startSimServer(t, cfg, SimServerOptions{Start: start, Interval: time.Hour})
	c := rawClient(t, s.URL())

	// The server's first step is the plant's first sample at start: a plant of the same
	// seed gives the same values.
	want := newPlant(t, cfg).Step(start)
	ctx := context.Background()
	for i, m := range cfg.Machines {
		for _, signal := range m.Kind.Signals() {
			nid := ua.MustParseNodeID(s.NodeID(m.Line, m.ID, signal))
			resp, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: nid, AttributeID: ua.AttributeIDValue}}})
			if err != nil {
				t.Fatal(err)
			}
			dv := resp.Results[0]
			if dv.Status != ua.StatusOK {
				t.Fatalf("%s: status %s", nid, dv.Status)
			}
			if !dv.SourceTimestamp.Equal(start) {
				t.Errorf("%s: source time %s, want %s", nid, dv.SourceTimestamp, start)
			}
			if got, want := dv.Value.Float(), signalValue(want[i].Signals, signal); got != want {
				t.Errorf("%s = %v, want %v", nid, got, want)
			}
		}
	}
}

func TestSimServerBrowse(t *testing.T) {
	cfg := simPlantConfig()
	s := startSimServer(t, cfg, SimServerOptions{})
	c := rawClient(t, s.URL())

	// Walk Objects -> Plant -> line -> machine -> variables, as a discovery would.
	var found []string
	var walk func(nid *ua.NodeID, path string, depth int)
	walk = func(nid *ua.NodeID, path string, depth int) {
		resp, err := c.Browse(context.Background(), &ua.BrowseRequest{
			NodesToBrowse: []*ua.BrowseDescription{{
				NodeID: nid, BrowseDirection: ua.BrowseDirectionForward,
				ReferenceTypeID: ua.NewNumericNodeID(0, id.HierarchicalReferences), IncludeSubtypes: true,
				ResultMask: uint32(ua.BrowseResultMaskAll),
			}},
			RequestedMaxReferencesPerNode: 1000,
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.Results[0].References {
			p := r.BrowseName.Name
			if path != "" {
				p = path + "/" + p
			}
			switch {
			case r.NodeClass == ua.NodeClassVariable:
				found = append(found, p)
			case depth < 4 && (path != "" || r.BrowseName.Name == "Plant"):
				walk(r.NodeID.NodeID, p, depth+1)
			}
		}
	}
	walk(ua.NewNumericNodeID(0, id.ObjectsFolder), "", 0)

	var want []string
	for _, m := range cfg.Machines {
		for _, signal := range m.Kind.Signals() {
			want = append(want, SimBrowsePath(m.Line, m.ID, signal))
		}
	}
	if len(found) != len(want) {
		t.Fatalf("browsed variables %q, want %q", found, want)
	}
	for i := range want {
		if found[i] != want[i] {
			t.Errorf("variable %d: %q, want %q", i, found[i], want[i])
		}
	}
}

func TestSimServerSubscription(t *testing.T) {
	cfg := simPlantConfig()
	start := time.Now().Truncate(time.Millisecond) // OPC-UA times have 100 ns resolution
	s := startSimServer(t, cfg, SimServerOptions{Start: start})
	c := rawClient(t, s.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	notes := make(chan *gopcua.PublishNotificationData, 64)
	sub, err := c.Subscribe(ctx, &gopcua.SubscriptionParameters{Interval: 50 * time.Millisecond}, notes)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Cancel(context.Background()) }()
	var reqs []*ua.MonitoredItemCreateRequest
	for _, m := range cfg.Machines {
		for _, signal := range m.Kind.Signals() {
			h := uint32(len(reqs))
			reqs = append(reqs, gopcua.NewMonitoredItemCreateRequestWithDefaults(ua.MustParseNodeID(s.NodeID(m.Line, m.ID, signal)), ua.AttributeIDValue, h))
		}
	}
	resp, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, reqs...)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resp.Results {
		if r.StatusCode != ua.StatusOK {
			t.Fatalf("monitor item %d: %s", i, r.StatusCode)
		}
	}

	// Every item reports step after step; the source times sit on the plant's grid.
	seen := make([]map[int64]bool, len(reqs))
	for i := range seen {
		seen[i] = map[int64]bool{}
	}
	complete := func() bool {
		for _, m := range seen {
			if len(m) < 3 {
				return false
			}
		}
		return true
	}
	for !complete() {
		select {
		case <-ctx.Done():
			t.Fatalf("not every item delivered 3 steps: %v", seen)
		case n := <-notes:
			if n.Error != nil {
				t.Fatal(n.Error)
			}
			dc, ok := n.Value.(*ua.DataChangeNotification)
			if !ok {
				continue
			}
			for _, item := range dc.MonitoredItems {
				off := item.Value.SourceTimestamp.Sub(start)
				if off%cfg.Interval != 0 {
					t.Fatalf("item %d: source time %s is %s after start, not a multiple of %s", item.ClientHandle, item.Value.SourceTimestamp, off, cfg.Interval)
				}
				seen[item.ClientHandle][int64(off/cfg.Interval)] = true
			}
		}
	}
}

func TestNewSimServerRejects(t *testing.T) {
	if _, err := NewSimServer(nil, SimServerOptions{}); err == nil {
		t.Error("no plant: no error")
	}
	if _, err := NewSimServer(newPlant(t, simPlantConfig()), SimServerOptions{Interval: -time.Second}); err == nil {
		t.Error("negative interval: no error")
	}
	s, err := NewSimServer(newPlant(t, simPlantConfig()), SimServerOptions{Addr: "nonsense"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err == nil {
		_ = s.Close()
		t.Error("address without port: no error")
	}
}

// TestSimServerThroughSource reads the simulator with the OPC-UA source (browse discovery,
// mapping rule, subscription): every point carries the value a plant of the same seed has at
// the point's source time.
func TestSimServerThroughSource(t *testing.T) {
	cfg := simPlantConfig()
	start := time.Now().Truncate(time.Millisecond)
	s := startSimServer(t, cfg, SimServerOptions{Start: start})
	src := newSource(t, Config{
		Endpoint:     s.URL(),
		PKI:          PKI{Dir: t.TempDir()},
		Subscription: Subscription{PublishingInterval: 50 * time.Millisecond},
		Browse:       []Browse{{Include: []string{"Plant/**"}}},
		Mapping:      []Rule{{Match: plantRule}},
	})
	if n, want := len(src.Items()), 5+4; n != want {
		t.Fatalf("discovered %d items, want %d: %+v", n, want, src.Items())
	}
	var c collector
	if err := c.readUntil(src, 20*time.Second, func() bool { return len(c.points) >= 10*9 }); err != nil {
		t.Fatal(err)
	}
	answersWhetherItHas(t, src)
	resumesHarmlessly(t, src)

	// Step a reference plant through the same times and compare every point.
	ref := newPlant(t, cfg)
	var steps [][]sim.Sample
	at := func(n int) []sim.Sample {
		for len(steps) <= n {
			tt := start.Add(time.Duration(len(steps)) * cfg.Interval)
			steps = append(steps, append([]sim.Sample(nil), ref.Step(tt)...))
		}
		return steps[n]
	}
	for _, pt := range c.points {
		off := time.Duration(pt.SourceTime - start.UnixNano())
		if off < 0 || off%cfg.Interval != 0 {
			t.Fatalf("point %+v: source time not on the plant's grid", pt)
		}
		var want *sim.Sample
		for i, smp := range at(int(off / cfg.Interval)) {
			if smp.Machine == pt.Machine {
				want = &at(int(off / cfg.Interval))[i]
			}
		}
		if want == nil || pt.Line != want.Line {
			t.Fatalf("point %+v: no such machine in the plant", pt)
		}
		if got, w := pt.Value.Float(), signalValue(want.Signals, pt.Signal); got != w {
			t.Errorf("%s/%s at step %d = %v, want %v", pt.Machine, pt.Signal, off/cfg.Interval, got, w)
		}
	}
}

func TestSimServerRunStopsWithContext(t *testing.T) {
	s, err := NewSimServer(newPlant(t, simPlantConfig()), SimServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	for s.Steps() < 3 { // serving: the plant steps every 50 ms
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := gopcua.GetEndpoints(ctx, s.URL()); err == nil {
		t.Error("the server still answers after Run returned")
	}
}
