package opcua

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

func TestSubscribeDelivers(t *testing.T) {
	u := startUnitServer(t)
	cfg := unitConfig(t, u)
	cfg.Browse = []Browse{{Root: "ns=1;s=folder:Plant"}}
	cfg.Browse[0].SetDefaults()
	s := connectUnit(t, cfg)
	pts := readUntil(t, s, 10*time.Second, hasAll("Press7/Temperature", "Pump3/Pressure", "Press7/Running", "Press7/Label"))
	m := bySignal(pts)
	if v := m["Press7/Temperature"].Value; v.Kind != telemetry.KindFloat || v.Float() != 21.5 {
		t.Errorf("Press7/Temperature = %v, want float 21.5", v)
	}
	if v := m["Press7/Running"].Value; v.Kind != telemetry.KindBool || !v.Bool() {
		t.Errorf("Running = %v, want true", v)
	}
	if v := m["Press7/Label"].Value; v.Kind != telemetry.KindString || v.Str != "ok" {
		t.Errorf("Label = %v", v)
	}
	if v := m["Pump3/Pressure"].Value; v.Kind != telemetry.KindInt || v.Int() != 3 {
		t.Errorf("Pressure = %v, want int 3", v)
	}
	p := m["Press7/Temperature"]
	if p.SourceTime == 0 || p.ServerTime == 0 || p.ServerTime-p.SourceTime != int64(time.Millisecond) {
		t.Errorf("timestamps source %d server %d, want both, 1ms apart", p.SourceTime, p.ServerTime)
	}
	// A change is delivered.
	u.set(99.5, 0, "Line1", "Press7", "Temperature")
	readUntil(t, s, 10*time.Second, func(pts []telemetry.Point) bool {
		for _, p := range pts {
			if p.Signal == "Temperature" && p.Machine == "Press7" && p.Value.Float() == 99.5 {
				return true
			}
		}
		return false
	})
}

func TestPollingDelivers(t *testing.T) {
	u := startUnitServer(t)
	cfg := unitConfig(t, u)
	cfg.Mode = ModePolling
	cfg.Polling.MaxNodesPerRead = 2 // several Read requests per cycle
	cfg.Browse = []Browse{{Root: "ns=1;s=folder:Plant"}}
	cfg.Browse[0].SetDefaults()
	s := connectUnit(t, cfg)
	readUntil(t, s, 10*time.Second, hasAll("Press7/Temperature", "Pump3/Pressure", "Pump3/Temperature", "Diagnostics/Errors"))
	u.set(-3.25, 0, "Line1", "Press7", "Temperature")
	readUntil(t, s, 10*time.Second, func(pts []telemetry.Point) bool {
		return bySignal(pts)["Press7/Temperature"].Value.Float() == -3.25
	})
}

func TestBrowseIncludeExcludeLimit(t *testing.T) {
	u := startUnitServer(t)
	tests := []struct {
		name             string
		include, exclude []string
		maxItems         int
		want             int
	}{
		{"all", nil, nil, 0, 8},
		{"include one machine", []string{"Line1/Press7/*"}, nil, 0, 5},
		{"exclude diagnostics", nil, []string{"**/Diagnostics/**"}, 0, 7},
		{"double star", []string{"**/Temperature"}, nil, 0, 2},
		{"limit", nil, nil, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := unitConfig(t, u)
			b := Browse{Root: "ns=1;s=folder:Plant", Include: tt.include, Exclude: tt.exclude, MaxItems: tt.maxItems}
			b.SetDefaults()
			cfg.Browse = []Browse{b}
			s := connectUnit(t, cfg)
			items := s.Items()
			ok := 0
			for _, it := range items {
				if it.Err == "" {
					ok++
				}
			}
			if ok != tt.want {
				t.Errorf("%d items, want %d: %+v", ok, tt.want, items)
			}
		})
	}
}

func TestArraysFlattenAndSkip(t *testing.T) {
	for _, policy := range []string{ArraysFlatten, ArraysSkip} {
		t.Run(policy, func(t *testing.T) {
			u := startUnitServer(t) // one subscribing session per server: see unitServer
			cfg := unitConfig(t, u)
			cfg.Arrays = policy
			cfg.Nodes = []Node{
				{NodeID: u.nodeID("Line1", "Press7", "Vibration").String(), Machine: "press-7", Signal: "vib"},
				{NodeID: u.nodeID("Line1", "Press7", "Count").String(), Machine: "press-7", Signal: "count"},
			}
			s := connectUnit(t, cfg)
			pts := readUntil(t, s, 10*time.Second, hasAll("press-7/count"))
			if policy == ArraysFlatten {
				if !hasAll("press-7/vib[0]", "press-7/vib[1]", "press-7/vib[2]")(pts) {
					pts = readUntil(t, s, 10*time.Second, hasAll("press-7/vib[0]", "press-7/vib[1]", "press-7/vib[2]"))
				}
				if v := bySignal(pts)["press-7/vib[2]"].Value.Float(); v != 0.3 {
					t.Errorf("vib[2] = %v, want 0.3", v)
				}
				return
			}
			// Skipped arrays are counted, never delivered.
			time.Sleep(200 * time.Millisecond)
			for _, p := range pts {
				if p.Signal != "count" {
					t.Errorf("unexpected point %+v", p)
				}
			}
		})
	}
}

func TestBadNodeIDIsPerItemError(t *testing.T) {
	u := startUnitServer(t)
	for _, mode := range []string{ModeSubscription, ModePolling} {
		t.Run(mode, func(t *testing.T) {
			cfg := unitConfig(t, u)
			cfg.Mode = mode
			cfg.Nodes = []Node{
				{NodeID: "ns=1;s=Does.Not.Exist", Machine: "ghost", Signal: "x"},
				{NodeID: u.nodeID("Line1", "Pump3", "Pressure").String(), Machine: "pump-3", Signal: "pressure"},
				{BrowsePath: "Plant/Line1/Nowhere/Temperature", Machine: "ghost", Signal: "y"},
			}
			s := connectUnit(t, cfg)
			readUntil(t, s, 10*time.Second, hasAll("pump-3/pressure"))
			var bad []ItemStatus
			for _, it := range s.Items() {
				if it.Err != "" {
					bad = append(bad, it)
				}
			}
			if len(bad) != 2 {
				t.Fatalf("failed items = %+v, want the unknown node id and the unresolved path", bad)
			}
			classes := map[string]bool{bad[0].Class: true, bad[1].Class: true}
			if !classes[itemErrNodeUnknown] || !classes[itemErrPath] {
				t.Errorf("classes = %v", classes)
			}
		})
	}
}

func TestQualityFromStatus(t *testing.T) {
	u := startUnitServer(t)
	cfg := unitConfig(t, u)
	cfg.Nodes = []Node{{NodeID: u.nodeID("Line1", "Pump3", "Temperature").String(), Machine: "pump-3", Signal: "temp"}}
	s := connectUnit(t, cfg)
	readUntil(t, s, 10*time.Second, hasAll("pump-3/temp"))
	u.set(float32(41), 0x40000000|0x00920000, "Line1", "Pump3", "Temperature") // UncertainLastUsableValue-like
	pts := readUntil(t, s, 10*time.Second, func(pts []telemetry.Point) bool {
		return len(pts) > 0 && pts[len(pts)-1].Value.Float() == 41
	})
	q := pts[len(pts)-1].Quality
	if q.Level != telemetry.Uncertain || q.Code != 0x40920000 {
		t.Errorf("quality = %+v, want uncertain with the raw code", q)
	}
}

func TestAckFailureCountsLostAndWindowBounds(t *testing.T) {
	u := startUnitServer(t)
	cfg := unitConfig(t, u)
	cfg.Browse = []Browse{{Root: "ns=1;s=folder:Plant"}}
	cfg.Browse[0].SetDefaults()
	cfg.MaxBatchPoints = 2
	cfg.MaxInflightPoints = 2
	s := connectUnit(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, ack, err := s.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Len() > 2 {
		t.Errorf("batch of %d points, max_batch_points 2", b.Len())
	}
	if b.Len() == 2 {
		// The window is full: Read takes nothing until the batch is settled.
		short, stop := context.WithTimeout(ctx, 300*time.Millisecond)
		_, _, err := s.Read(short)
		stop()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Read with a full window = %v, want it to wait", err)
		}
	}
	ack(ctx, errors.New("wal full"))
	ack(ctx, errors.New("twice")) // settles once
	if got := testutil.ToFloat64(s.m.lost); got != float64(b.Len()) {
		t.Errorf("lost points = %v, want %d", got, b.Len())
	}
	if _, ack, err := s.Read(ctx); err != nil {
		t.Errorf("Read after settling: %v", err)
	} else {
		ack(ctx, nil)
	}
}

// TestStalledSubscriptionEndsConnection: the server drops the subscription while the
// session lives on (the keep-alive reads still succeed), so nothing is published any more;
// the watchdog ends the connection after stall_timeout, and counts it, and a reconnection
// delivers again. Before that, a subscription whose values do not change stays up: the
// server's clock arrives, or, from a server that reports its clock once only (it does not
// sample it), the server answers that it still has the subscription when asked.
func TestStalledSubscriptionEndsConnection(t *testing.T) {
	for _, tt := range []struct {
		name       string
		clockStill bool
		want       string // in the error that ends the connection
	}{
		{"clock sampled", false, "subscription stalled: no publish response for"},
		{"clock reported once", true, "the server no longer has the subscription"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := startUnitServer(t)
			u.clockStill.Store(tt.clockStill)
			cfg := unitConfig(t, u)
			cfg.Subscription.StallTimeout = 600 * time.Millisecond
			cfg.Nodes = []Node{{NodeID: u.nodeID("Line1", "Pump3", "Pressure").String(), Machine: "pump-3", Signal: "pressure"}}
			s := connectUnit(t, cfg)
			readUntil(t, s, 10*time.Second, hasAll("pump-3/pressure"))
			quiet, stop := context.WithTimeout(context.Background(), 4*cfg.Subscription.StallTimeout)
			_, _, err := s.Read(quiet)
			stop()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Read of unchanging values = %v, want it to wait with the connection up", err)
			}
			if n := testutil.ToFloat64(s.m.stalls); n != 0 {
				t.Fatalf("stalls = %v while the server has the subscription", n)
			}

			s.mu.Lock()
			id := s.conn.sub.SubscriptionID
			s.mu.Unlock()
			u.srv.SubscriptionService.DeleteSubscription(id)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _, err = s.Read(ctx)
			if !errors.Is(err, connectors.ErrNotConnected) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Read after the server dropped the subscription = %v, want ErrNotConnected: %s", err, tt.want)
			}
			if n := testutil.ToFloat64(s.m.stalls); n != 1 {
				t.Errorf("stalls = %v, want 1", n)
			}
			if n := testutil.ToFloat64(s.m.connLost); n != 1 {
				t.Errorf("connections lost = %v, want 1", n)
			}
			// The pipeline reconnects; the new subscription delivers again.
			reconnect(t, s, 20*time.Second)
			readUntil(t, s, 10*time.Second, hasAll("pump-3/pressure"))
		})
	}
}

// TestPausedPublishLoopResumed: the client's publish loop paused at the start of a
// subscription (here the server answers its first publish request BadNoSubscription, and
// gopcua pauses; gopcua's start race leaves it paused the same way) delivers nothing. The
// watchdog resumes it once the first values are late, and the connection delivers without
// waiting for the first-values deadline and reconnecting.
func TestPausedPublishLoopResumed(t *testing.T) {
	u := startUnitServer(t)
	u.failPublish.Store(1)
	cfg := unitConfig(t, u)
	cfg.Nodes = []Node{{NodeID: u.nodeID("Line1", "Pump3", "Pressure").String(), Machine: "pump-3", Signal: "pressure"}}
	s := connectUnit(t, cfg)
	readUntil(t, s, 20*time.Second, hasAll("pump-3/pressure"))
	if u.failPublish.Load() != 0 {
		t.Fatal("the server answered no publish request BadNoSubscription")
	}
	for name, want := range map[string]float64{"resumes": 1, "stalls": 0, "connects": 1} {
		got := map[string]prometheus.Counter{"resumes": s.m.resumes, "stalls": s.m.stalls, "connects": s.m.connects}[name]
		if n := testutil.ToFloat64(got); n != want {
			t.Errorf("%s = %v, want %v", name, n, want)
		}
	}
	// A connection that delivers is not resumed again.
	s.mu.Lock()
	resumed := s.conn.wd.resumed.Load()
	s.mu.Unlock()
	if !resumed {
		t.Error("the watchdog does not note that it resumed the loop")
	}
}

// resumesHarmlessly checks that the server of s's connection lets the watchdog resume the
// publish loop (create and delete a second subscription), and keeps the connection's own.
func resumesHarmlessly(t *testing.T, s *Source) {
	t.Helper()
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	if err := conn.resumePublishing(); err != nil {
		t.Errorf("resume the publish loop: %v", err)
	}
	if gone, err := conn.dropped(conn.sub.SubscriptionID); err != nil || gone {
		t.Errorf("after the resume, dropped(its subscription) = %v, %v; want false, nil", gone, err)
	}
}

// answersWhetherItHas checks that the server of s's connection answers the watchdog's
// question as the watchdog reads it: it has the subscription of s, and not one numbered
// 1000 higher.
func answersWhetherItHas(t *testing.T, s *Source) {
	t.Helper()
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	id := conn.sub.SubscriptionID
	if gone, err := conn.dropped(id); err != nil || gone {
		t.Errorf("dropped(its subscription %d) = %v, %v; want false, nil", id, gone, err)
	}
	if gone, err := conn.dropped(id + 1000); err != nil || !gone {
		t.Errorf("dropped(subscription %d, which it does not have) = %v, %v; want true, nil", id+1000, gone, err)
	}
}

func TestWatchdogStalled(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name                string
		expect              bool
		handled, heartbeats int64
		silence             time.Duration
		queued              int
		want                verdict
	}{
		{"recent notification", true, 5, 5, 900 * time.Millisecond, 0, live},
		{"silent with a sampled heartbeat", true, 5, 5, time.Second, 0, stalled},
		{"silent, notifications wait for the consumer", true, 5, 5, time.Minute, 3, live},
		{"nothing since the start, first values due", true, 0, 0, 300 * time.Millisecond, 0, stalled},
		{"nothing since the start, first values late", true, 0, 0, 200 * time.Millisecond, 0, late},
		{"nothing since the start, not for long", true, 0, 0, 150 * time.Millisecond, 0, live},
		{"nothing since the start, first values waiting", true, 0, 0, time.Minute, 1, live},
		{"nothing since the start, nothing monitored", false, 0, 0, time.Minute, 0, live},
		{"the server reported its clock once only", true, 5, 1, time.Minute, 0, unsure},
		{"the clock reported once, not silent for long", true, 5, 1, 900 * time.Millisecond, 0, live},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &watchdog{timeout: time.Second, first: 300 * time.Millisecond, resume: 200 * time.Millisecond}
			w.expect.Store(tt.expect)
			w.last.Store(t0.UnixNano())
			w.handled.Store(tt.handled)
			w.heartbeats.Store(tt.heartbeats)
			if got, _ := w.check(t0.Add(tt.silence), tt.queued); got != tt.want {
				t.Errorf("check = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestCloseCountsQueuedNotificationsLost: points of notifications the client library has
// handed over but Read has not taken yet are lost when the connection closes (OPC-UA
// cannot deliver them again), and counted in millwright_opcua_lost_points_total like the
// points converted and not yet read.
func TestCloseCountsQueuedNotificationsLost(t *testing.T) {
	u := startUnitServer(t)
	cfg := unitConfig(t, u)
	cfg.Browse = []Browse{{Root: "ns=1;s=folder:Plant"}}
	cfg.Browse[0].SetDefaults()
	s := connectUnit(t, cfg)
	c := s.conn
	// The server reports its clock at every publishing interval, so the queue fills up,
	// after the first values of every item.
	deadline := time.Now().Add(10 * time.Second)
	for len(c.notifs) < cap(c.notifs) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(c.notifs) < cap(c.notifs) {
		t.Fatalf("%d notifications queued after 10s, want the queue full (%d)", len(c.notifs), cap(c.notifs))
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Eight variables, one of them an array of three: ten points, none of them read.
	if got := testutil.ToFloat64(s.m.lost); got != 10 {
		t.Errorf("lost points = %v, want the 10 points of the first values, which Read never took", got)
	}
}

// TestBrowseFailureKeepsItems: a Browse the server answers with a bad status for one node
// (out of continuation points, Part 4, 5.8.2; too busy) is a failed browse, not a folder
// without children: a rebrowse then keeps the current items instead of deleting the
// monitored items below that folder. A browse root the server does not know is an item
// error listed by Items, not an empty address space.
func TestBrowseFailureKeepsItems(t *testing.T) {
	u := startUnitServer(t)
	cfg := unitConfig(t, u)
	cfg.Browse = []Browse{{Root: "ns=1;s=folder:Plant"}, {Root: "ns=1;s=folder:NoSuchFolder"}}
	cfg.Browse[0].SetDefaults()
	cfg.Browse[1].SetDefaults()
	s := connectUnit(t, cfg)
	count := func() (ok int, failed []ItemStatus) {
		for _, it := range s.Items() {
			if it.Err == "" {
				ok++
			} else {
				failed = append(failed, it)
			}
		}
		return ok, failed
	}
	if ok, failed := count(); ok != 8 || len(failed) != 1 || failed[0].Origin != "browse[1]" || failed[0].Class != itemErrNodeUnknown {
		t.Fatalf("%d items and failed %+v; want 8 and browse[1]'s root unknown", ok, failed)
	}
	u.failBrowse("ns=1;s=folder:Line1.Pump3", ua.StatusBadNoContinuationPoints)
	s.conn.rebrowse()
	if ok, _ := count(); ok != 8 {
		t.Errorf("after a rebrowse whose Browse of Line1/Pump3 failed: %d items, want the 8 kept", ok)
	}
	u.failBrowse("ns=1;s=folder:Line1.Pump3", ua.StatusOK)
	u.set(41.5, 0, "Line1", "Pump3", "Temperature")
	readUntil(t, s, 10*time.Second, func(pts []telemetry.Point) bool {
		for _, p := range pts {
			if p.Machine == "Pump3" && p.Signal == "Temperature" && p.Value.Float() == 41.5 {
				return true
			}
		}
		return false
	})
}

// TestPollingFailedReadKeepsCycleSoFar: a poll cycle reads max_nodes_per_read items per
// request; when a later request fails (the connection then ends), the points the earlier
// requests of the cycle read are delivered before Read reports the lost connection, not
// dropped uncounted.
func TestPollingFailedReadKeepsCycleSoFar(t *testing.T) {
	u := startUnitServer(t)
	cfg := unitConfig(t, u)
	cfg.Mode = ModePolling
	cfg.Polling.MaxNodesPerRead = 2
	cfg.Browse = []Browse{{Root: "ns=1;s=folder:Plant"}}
	cfg.Browse[0].SetDefaults()
	fault := u.nodeID("Line1", "Diagnostics", "Errors").String() // browsed last: the last request
	u.readFault.Store(&fault)
	s := connectUnit(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []telemetry.Point
	for {
		b, ack, err := s.Read(ctx)
		if errors.Is(err, connectors.ErrNotConnected) {
			break
		}
		if err != nil {
			t.Fatalf("Read: %v (after %d points)", err, len(got))
		}
		got = append(got, b.Points...)
		ack(ctx, nil)
	}
	// Two items per request in browse order: the fourth request (Pump3/Pressure and the
	// faulted Diagnostics/Errors) fails; the first three read six items, one of them an
	// array of three: eight points.
	if len(got) != 8 {
		t.Errorf("%d points before the connection ended, want the 8 of the requests that succeeded: %v", len(got), got)
	}
}

// TestWatchdogUsesRevisedPublishingInterval: a server may publish less often than asked
// (the revised publishing interval, Part 4, 5.13.2). The watchdog's deadlines count in
// the interval the server uses: with the requested one, a server that publishes every 40s
// would be taken for stalled before its first publish response, at every reconnection.
func TestWatchdogUsesRevisedPublishingInterval(t *testing.T) {
	u := startUnitServer(t)
	u.revisedInterval.Store(int64(40 * time.Second))
	cfg := unitConfig(t, u)
	cfg.Browse = []Browse{{Root: "ns=1;s=folder:Plant"}}
	cfg.Browse[0].SetDefaults()
	s := connectUnit(t, cfg)
	wd := &s.conn.wd
	if least := 3 * 40 * time.Second; wd.first < least || wd.timeout < least || wd.resume != 0 && wd.resume < least {
		t.Errorf("first-values deadline %s, stall timeout %s, resume after %s; want each at least three revised publishing intervals (%s)", wd.first, wd.timeout, wd.resume, least)
	}
}
