package opcua

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/connectors/influxdb"
	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/gateway/pipeline"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// The integration tests run the source against node-opcua (deploy/opcua/server.js), a real
// third-party OPC-UA server: the shared one of deploy/services.sh, or private ones started
// by the test when it must kill the server.

// m01 is the node-opcua machine most tests read: Plant/line1/m01.
func m01Nodes(signals ...string) []Node {
	var nodes []Node
	for _, s := range signals {
		nodes = append(nodes, Node{BrowsePath: "Plant/line1/m01/" + s})
	}
	return nodes
}

func TestNodeOPCUASecurityModes(t *testing.T) {
	p := sharedPeer(t)
	for _, tc := range []struct{ policy, mode string }{
		{"None", "None"},
		{"Basic256Sha256", "Sign"},
		{"Basic256Sha256", "SignAndEncrypt"},
		{"Aes128_Sha256_RsaOaep", "SignAndEncrypt"},
		{"Aes256_Sha256_RsaPss", "SignAndEncrypt"},
	} {
		t.Run(tc.policy+"_"+tc.mode, func(t *testing.T) {
			cfg := peerConfig(t, p, tc.policy, tc.mode)
			cfg.Nodes = m01Nodes("temperature", "counter")
			s := newSource(t, cfg)
			var c collector
			err := c.readUntil(s, 20*time.Second, func() bool { return len(c.series()) == 2 })
			if err != nil {
				t.Fatal(err)
			}
			for _, pt := range c.points {
				if pt.Line != "line1" || pt.Machine != "m01" || pt.Quality.Level != telemetry.Good || pt.SourceTime == 0 {
					t.Fatalf("point %+v: want line1/m01, good quality and a source time", pt)
				}
			}
		})
	}
}

func TestNodeOPCUAWrongPassword(t *testing.T) {
	p := sharedPeer(t)
	cfg := peerConfig(t, p, "Basic256Sha256", "SignAndEncrypt")
	cfg.Auth.Password = config.NewSecret("not-" + p.password)
	cfg.Nodes = m01Nodes("temperature")
	s := buildSource(t, cfg)
	// Well within the context: a refused login must come back as an error, not a hang
	// until the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := s.Connect(ctx)
	if err == nil {
		t.Fatal("connected with a wrong password")
	}
	if ctx.Err() != nil {
		t.Fatalf("Connect returned only when its context ended: %v", err)
	}
	msg := err.Error()
	if !containsAll(msg, p.user, "BadUserAccessDenied") && !containsAll(msg, p.user, ua.StatusBadUserAccessDenied.Error()) {
		t.Errorf("error %q should name the user %q and the server's refusal (BadUserAccessDenied)", msg, p.user)
	}
}

func TestNodeOPCUABrowseDiscovery(t *testing.T) {
	p := sharedPeer(t)
	cfg := peerConfig(t, p, "None", "None")
	cfg.Browse = []Browse{{Include: []string{"Plant/line*/*/*"}, Exclude: []string{"**/spectrum"}}}
	s := newSource(t, cfg)

	// deploy/opcua/server.js: six machines m01..m06 with seven signals each, of which the
	// exclude pattern drops the spectrum; Plant/Diagnostics/* does not match the include.
	const machines, signals = 6, 6
	items := s.Items()
	if len(items) != machines*signals {
		t.Fatalf("discovered %d items, want %d: %+v", len(items), machines*signals, items)
	}
	for _, it := range items {
		if it.Err != "" || strings.HasSuffix(it.Path, "spectrum") || strings.Contains(it.Path, "Diagnostics") {
			t.Errorf("item %+v: want a working, included item", it)
		}
	}
	var c collector
	if err := c.readUntil(s, 20*time.Second, func() bool { return len(c.series()) == machines*signals }); err != nil {
		t.Fatalf("%v; series so far %v", err, sortedKeys(c.series()))
	}
	for k := range c.series() {
		if !strings.HasPrefix(k, "m0") {
			t.Errorf("series %q: want machine m0x", k)
		}
	}
}

func TestNodeOPCUASubscriptionValues(t *testing.T) {
	p := sharedPeer(t)
	cfg := peerConfig(t, p, "Basic256Sha256", "SignAndEncrypt")
	cfg.Nodes = append(m01Nodes("temperature", "vibration", "counter", "speed", "running", "state", "spectrum"),
		Node{NodeID: "ns=1;s=Plant/Diagnostics/uncertain", Line: "diag", Machine: "diagnostics", Signal: "uncertain"},
		Node{NodeID: "ns=1;s=Plant/Diagnostics/bad", Line: "diag", Machine: "diagnostics", Signal: "bad"},
	)
	s := newSource(t, cfg)
	want := map[string]telemetry.Kind{
		"m01/temperature":       telemetry.KindFloat, // Double
		"m01/vibration":         telemetry.KindFloat, // Float
		"m01/counter":           telemetry.KindInt,   // Int32
		"m01/speed":             telemetry.KindInt,   // UInt16
		"m01/running":           telemetry.KindBool,
		"m01/state":             telemetry.KindString,
		"diagnostics/uncertain": telemetry.KindFloat,
		"diagnostics/bad":       telemetry.KindFloat,
	}
	for i := range 8 { // Double[8], flattened
		want[fmt.Sprintf("m01/spectrum[%d]", i)] = telemetry.KindFloat
	}
	var c collector
	complete := func() bool {
		got := c.series()
		for k := range want {
			// running and state change every 30 s only: their first value is enough.
			if got[k] < 2 && (got[k] == 0 || k != "m01/running" && k != "m01/state") {
				return false
			}
		}
		return true
	}
	start := time.Now()
	if err := c.readUntil(s, 30*time.Second, complete); err != nil {
		t.Fatalf("%v; series so far %v", err, sortedKeys(c.series()))
	}
	last := map[string]int64{}
	for _, pt := range c.points {
		k := pt.Machine + "/" + pt.Signal
		kind, ok := want[k]
		if !ok {
			t.Errorf("unexpected series %q", k)
			continue
		}
		if pt.Value.Kind != kind {
			t.Errorf("%s: value %v of kind %s, want %s", k, pt.Value, pt.Value.Kind, kind)
		}
		// node-opcua stamps each value with its tick's time and its own receive time.
		src, srv := time.Unix(0, pt.SourceTime), time.Unix(0, pt.ServerTime)
		if pt.SourceTime == 0 || pt.ServerTime == 0 || src.After(srv.Add(time.Second)) || src.Before(start.Add(-time.Minute)) {
			t.Errorf("%s: source time %s, server time %s: want both set, the source not after the server", k, src, srv)
		}
		if pt.SourceTime <= last[k] {
			t.Errorf("%s: source time %s does not advance (previous %s)", k, src, time.Unix(0, last[k]))
		}
		last[k] = pt.SourceTime
		wantQ := telemetry.Quality{Level: telemetry.Good}
		switch k {
		case "diagnostics/uncertain":
			wantQ = telemetry.Quality{Level: telemetry.Uncertain, Code: uint32(ua.StatusUncertainLastUsableValue)}
		case "diagnostics/bad":
			wantQ = telemetry.Quality{Level: telemetry.Bad, Code: uint32(ua.StatusBadSensorFailure)}
		}
		if pt.Quality != wantQ {
			t.Errorf("%s: quality %+v, want %+v", k, pt.Quality, wantQ)
		}
		if pt.Line != "line1" && pt.Line != "diag" {
			t.Errorf("%s: line %q", k, pt.Line)
		}
	}
}

func TestNodeOPCUAUnknownNode(t *testing.T) {
	p := sharedPeer(t)
	cfg := peerConfig(t, p, "None", "None")
	cfg.Nodes = append(m01Nodes("temperature"),
		Node{NodeID: "ns=1;s=Plant/line1/m01/no_such_signal", Machine: "m01", Signal: "ghost"},
		Node{BrowsePath: "Plant/line1/m01/no_such_path"},
		Node{NodeID: "ns=1;s=Plant/line1/m02/counter", Machine: "m02", Signal: "counter"},
	)
	s := newSource(t, cfg)

	failed := failedItems(s)
	if len(failed) != 2 {
		t.Fatalf("failed items %+v, want the unknown node id and the unknown path", failed)
	}
	for k, it := range failed {
		if !strings.Contains(it.Err, "no_such") && !strings.Contains(k, "no_such") {
			t.Errorf("failed item %q: %+v should name the missing node", k, it)
		}
		if it.Class == "" {
			t.Errorf("failed item %q has no error class", k)
		}
	}
	var idErr ItemStatus
	for k, it := range failed {
		if strings.Contains(k, "no_such_signal") {
			idErr = it
		}
	}
	if !strings.Contains(idErr.Err, "BadNodeIdUnknown") && !strings.Contains(idErr.Err, ua.StatusBadNodeIDUnknown.Error()) {
		t.Errorf("unknown node id: error %q, want the server's BadNodeIdUnknown", idErr.Err)
	}
	if n := workingItems(s); n != 2 {
		t.Errorf("%d working items, want 2", n)
	}
	// The other items keep delivering, several times each.
	var c collector
	if err := c.readUntil(s, 20*time.Second, func() bool {
		return c.series()["m01/temperature"] >= 3 && c.series()["m02/counter"] >= 3
	}); err != nil {
		t.Fatalf("%v; series %v", err, c.series())
	}
	if n := c.series()["m01/ghost"]; n != 0 {
		t.Errorf("%d points of the unknown node", n)
	}
}

func TestNodeOPCUAServerRestart(t *testing.T) {
	srv, p := privatePeer(t, servicetest.NodeOPCUAOptions{Machines: 3, Interval: 100 * time.Millisecond})
	cfg := peerConfig(t, p, "Basic256Sha256", "SignAndEncrypt")
	cfg.Browse = []Browse{{Include: []string{"Plant/**"}, Exclude: []string{"**/spectrum"}}}
	// Kill the server (an outage, not a clean shutdown) and start it again on the same port
	// with the same certificate.
	after, restarted := survivesOutage(t, cfg, 3*6+2, srv.Kill, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return srv.Start(ctx)
	})
	fresh := 0
	seen := map[string]int{}
	for _, pt := range after.points {
		if time.Unix(0, pt.SourceTime).After(restarted) {
			fresh++
		}
		seen[fmt.Sprintf("%s/%s@%d", pt.Machine, pt.Signal, pt.SourceTime)]++
	}
	if fresh == 0 {
		t.Error("no value sampled after the restart was delivered")
	}
	for k, n := range seen {
		if n > 1 {
			t.Errorf("%s delivered %d times", k, n)
		}
	}
}

func TestNodeOPCUAServerStall(t *testing.T) {
	srv, p := privatePeer(t, servicetest.NodeOPCUAOptions{Machines: 2, Interval: 100 * time.Millisecond})
	cfg := peerConfig(t, p, "None", "None")
	cfg.Browse = []Browse{{Include: []string{"Plant/line*/*/*"}, Exclude: []string{"**/spectrum"}}}
	// A frozen server answers nothing while its sockets stay open: the keep-alive must
	// notice, rather than Read waiting forever.
	survivesOutage(t, cfg, 2*6, srv.Pause, srv.Resume)
}

// TestNodeOPCUAHeartbeat: node-opcua samples its clock, so the stall watchdog's heartbeat
// arrives every third of stall_timeout and arms the watchdog, and a subscription to values
// that do not change stays up past several stall timeouts.
func TestNodeOPCUAHeartbeat(t *testing.T) {
	p := sharedPeer(t)
	cfg := peerConfig(t, p, "None", "None")
	cfg.Subscription.StallTimeout = 900 * time.Millisecond
	cfg.Nodes = []Node{{NodeID: "ns=1;s=Plant/Diagnostics/uncertain", Machine: "diagnostics", Signal: "uncertain"}}
	s := newSource(t, cfg)
	s.mu.Lock()
	wd := &s.conn.wd
	s.mu.Unlock()
	// node-opcua samples its clock once a second, whatever the source asks: the watchdog
	// waits three of the server's samples and a publishing interval.
	if want := 3*time.Second + cfg.Subscription.PublishingInterval; wd.timeout != want {
		t.Errorf("stall timeout %s, want %s (the server's sampling interval)", wd.timeout, want)
	}
	var c collector
	wait := 2 * wd.timeout
	err := c.readUntil(s, wait, func() bool { return false })
	if err == nil || isNotConnected(err) {
		t.Fatalf("Read = %v, want it to wait with the connection up", err)
	}
	if beats := wd.heartbeats.Load(); beats < 4 {
		t.Errorf("%d heartbeats in %s, want the server's clock about once a second", beats, wait)
	}
	if n := testutil.ToFloat64(s.m.stalls); n != 0 {
		t.Errorf("stalls = %v", n)
	}
	answersWhetherItHas(t, s)
	resumesHarmlessly(t, s)
	beats := wd.heartbeats.Load()
	if err := c.readUntil(s, wait, func() bool { return false }); err == nil || isNotConnected(err) {
		t.Fatalf("Read after the resume = %v, want it to wait with the connection up", err)
	}
	if n := wd.heartbeats.Load() - beats; n < 4 {
		t.Errorf("%d heartbeats in %s after the resume, want the server's clock about once a second", n, wait)
	}
}

// TestNodeOPCUASubscriptionLifetime: the subscription's lifetime is the one configured,
// not the client library's 10,000 publishing intervals, so node-opcua closes a
// subscription whose client stopped sending publish requests after it (here the reader
// stops reading, so the library stops publishing; a crashed gateway leaves its
// subscription the same way). The source then ends the connection, and a reconnection
// reads again. With the library's default the subscription outlives the pause.
func TestNodeOPCUASubscriptionLifetime(t *testing.T) {
	p := sharedPeer(t)
	cfg := peerConfig(t, p, "None", "None")
	cfg.Subscription.MaxKeepAliveCount, cfg.Subscription.LifetimeCount = 5, 15 // 1.5s at 100ms
	cfg.Subscription.StallTimeout = 900 * time.Millisecond                     // 3.1s: node-opcua samples its clock once a second
	cfg.NotificationQueue = 1
	cfg.Nodes = []Node{{NodeID: "ns=1;s=Plant/Diagnostics/uncertain", Machine: "diagnostics", Signal: "uncertain"}}
	s := newSource(t, cfg)
	s.mu.Lock()
	sub := s.conn.sub
	s.mu.Unlock()
	// node-opcua keeps a subscription at least 5s: it revises 15 to 50 intervals.
	lifetime := time.Duration(sub.RevisedLifetimeCount) * sub.RevisedPublishingInterval
	if sub.RevisedMaxKeepAliveCount != 5 || lifetime > 5*time.Second {
		t.Fatalf("revised max keep-alive count %d, lifetime %d × %s; want 5 and at most 5s", sub.RevisedMaxKeepAliveCount, sub.RevisedLifetimeCount, sub.RevisedPublishingInterval)
	}
	var c collector
	if err := c.readUntil(s, 10*time.Second, func() bool { return len(c.points) > 0 }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(lifetime + 2*time.Second) // no reads: the notification queue fills and publishing stops
	// The server tells the session (StatusChangeNotification, BadTimeout) at its next
	// publish request.
	err := c.readUntil(s, 15*time.Second, func() bool { return false })
	if !isNotConnected(err) || !strings.Contains(err.Error(), "subscription status changed") || !strings.Contains(err.Error(), "BadTimeout") {
		t.Fatalf("Read after the subscription's lifetime without publish requests = %v; want ErrNotConnected: subscription status changed: BadTimeout", err)
	}
	if n := testutil.ToFloat64(s.m.connLost); n != 1 {
		t.Errorf("connections lost = %v, want 1", n)
	}
	reconnect(t, s, 20*time.Second)
	c.points = nil
	if err := c.readUntil(s, 10*time.Second, func() bool { return len(c.points) > 0 }); err != nil {
		t.Fatalf("after the reconnection: %v", err)
	}
}

// survivesOutage connects a source with cfg (which must yield want items), reads, makes an
// outage, expects Read to report ErrNotConnected, ends the outage, reconnects as the pipeline
// does, and checks that the same items deliver again, none subscribed twice: one tick of the
// server changes every item once, so no source timestamp may carry more points than items.
// It returns the points read after the reconnection and when the outage ended.
func survivesOutage(t *testing.T, cfg Config, want int, outage, recover func() error) (collector, time.Time) {
	t.Helper()
	s := newSource(t, cfg)
	if items := len(s.Items()); items != want {
		t.Fatalf("%d items before the outage, want %d", items, want)
	}
	var before collector
	if err := before.readUntil(s, 20*time.Second, func() bool { return len(before.points) >= 3*want }); err != nil {
		t.Fatal(err)
	}
	if err := outage(); err != nil {
		t.Fatal(err)
	}
	lost := before.readUntil(s, 60*time.Second, func() bool { return false })
	recovered := time.Now()
	if err := recover(); err != nil {
		t.Fatal(err)
	}
	if !isNotConnected(lost) {
		t.Fatalf("during the outage Read returned %v, want ErrNotConnected", lost)
	}
	reconnect(t, s, 60*time.Second)
	if items := len(s.Items()); items != want {
		t.Errorf("%d items after the outage, want %d (none lost, none twice)", items, want)
	}
	var after collector
	if err := after.readUntil(s, 30*time.Second, func() bool {
		return len(after.points) >= 5*want && len(after.series()) == want
	}); err != nil {
		t.Fatalf("data did not resume: %v; series %v", err, sortedKeys(after.series()))
	}
	perTime := map[int64]int{}
	for _, pt := range after.points {
		perTime[pt.SourceTime]++
	}
	for ts, n := range perTime {
		if n > want {
			t.Errorf("%d points at %s, more than the %d items: items were subscribed twice", n, time.Unix(0, ts), want)
		}
	}
	return after, recovered
}

// countingSource passes a source's batches on until it has passed want points, then holds
// further reads until ctx ends, so that the test knows exactly what entered the pipeline.
type countingSource struct {
	*Source
	want   int
	passed atomic.Int64
}

func (c *countingSource) Read(ctx context.Context) (telemetry.Batch, connectors.AckFunc, error) {
	if c.passed.Load() >= int64(c.want) {
		<-ctx.Done()
		return telemetry.Batch{}, nil, ctx.Err()
	}
	b, ack, err := c.Source.Read(ctx)
	c.passed.Add(int64(len(b.Points)))
	return b, ack, err
}

// TestNodeOPCUAToInfluxDB runs node-opcua -> OPC-UA source -> pipeline (write-ahead log) ->
// InfluxDB sink -> the real InfluxDB, and counts every point at the far end.
func TestNodeOPCUAToInfluxDB(t *testing.T) {
	p := sharedPeer(t)
	servicetest.Require(t, "InfluxDB")
	db := servicetest.Database(t, servicetest.InfluxURL())

	cfg := peerConfig(t, p, "Basic256Sha256", "SignAndEncrypt")
	cfg.Browse = []Browse{{Include: []string{"Plant/line*/*/*"}, Exclude: []string{"**/running", "**/state"}}}
	src := &countingSource{Source: buildSource(t, cfg), want: 3000}

	wcfg := buffer.Config{Dir: t.TempDir()}
	wcfg.SetDefaults()
	wal, err := buffer.Open(wcfg, []string{"influx"})
	if err != nil {
		t.Fatal(err)
	}
	defer wal.Close()
	icfg := influxdb.Config{URL: servicetest.InfluxURL(), Bucket: db, FlushInterval: 100 * time.Millisecond}
	icfg.SetDefaults()
	sink, err := influxdb.New("influx", icfg, connectors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := pipeline.New(wal, []pipeline.Source{{Name: "plant", Source: src}},
		[]pipeline.Sink{{Name: "influx", Sink: sink, Cursor: wal.Reader("influx")}},
		pipeline.Options{Factory: "e2e", BackoffInitial: 50 * time.Millisecond, BackoffMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("pipeline: %v", err)
		}
	}()

	deadline := time.Now().Add(60 * time.Second)
	for src.passed.Load() < int64(src.want) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d points read from node-opcua", src.passed.Load(), src.want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := src.passed.Load()
	got := servicetest.WaitCount(t, servicetest.InfluxURL(), db, `SELECT count("quality") FROM "telemetry"`, want, 30*time.Second)
	if got != want {
		t.Fatalf("InfluxDB holds %d points, want the %d the source delivered", got, want)
	}
	// Six machines, each with temperature, vibration, counter, speed and an 8-bin spectrum.
	series, err := servicetest.InfluxQL(servicetest.InfluxURL(), db, `SELECT count("quality") FROM "telemetry" WHERE factory = 'e2e' GROUP BY machine, signal`)
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 6*(4+8) {
		t.Errorf("%d machine/signal series in InfluxDB, want %d", len(series), 6*(4+8))
	}
	for _, s := range series {
		if !strings.HasPrefix(s.Tags["machine"], "m0") || s.Tags["signal"] == "" {
			t.Errorf("series tags %v", s.Tags)
		}
	}
}

func TestNodeOPCUAUserCertificate(t *testing.T) {
	p := sharedPeer(t)
	user, err := newAppCert("urn:millwright:test-user", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "user.pem"), filepath.Join(dir, "user.key")
	writePEMFile(t, certFile, "CERTIFICATE", user.der)
	writePEMFile(t, keyFile, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(user.key))

	cfg := peerConfig(t, p, "Basic256Sha256", "SignAndEncrypt")
	cfg.Auth = Auth{Type: AuthCertificate, CertFile: certFile, KeyFile: keyFile}
	cfg.Nodes = m01Nodes("temperature")
	s := newSource(t, cfg)
	var c collector
	if err := c.readUntil(s, 20*time.Second, func() bool { return c.series()["m01/temperature"] >= 2 }); err != nil {
		t.Fatal(err)
	}

	// The server checks the token's signature: a key that does not belong to the
	// certificate is refused.
	other, err := newAppCert("urn:millwright:test-user", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := filepath.Join(dir, "other.key")
	writePEMFile(t, wrongKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(other.key))
	cfg.Auth.KeyFile = wrongKey
	cfg.PKI.Dir = t.TempDir()
	trustServer(t, cfg.PKI.Dir, p.certFile)
	bad := buildSource(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = bad.Connect(ctx)
	switch {
	case err == nil:
		t.Fatal("connected with a user certificate and a key of another certificate")
	case ctx.Err() != nil:
		t.Fatalf("Connect returned only when its context ended: %v", err)
	case !strings.Contains(err.Error(), "BadIdentityTokenInvalid") && !strings.Contains(err.Error(), "BadUserSignatureInvalid") && !strings.Contains(err.Error(), "BadIdentityTokenRejected"):
		t.Errorf("error %q: want the server's refusal of the identity token", err)
	}
}

func writePEMFile(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
