package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/internal/testlog"
)

// Helpers for the tests against node-opcua (deploy/opcua/server.js): the shared server that
// deploy/services.sh starts, and private ones a test may kill and restart.

// plantRule maps node-opcua's (and the SimServer's) browse paths
// Plant/<line>/<machine>/<signal> to points.
const plantRule = `^Plant/(?P<line>[^/]+)/(?P<machine>[^/]+)/(?P<signal>.+)$`

// peer is an OPC-UA server to test against.
type peer struct {
	url, user, password string
	certFile            string // the server's application certificate (PEM)
}

// sharedPeer is the node-opcua server of deploy/services.sh; the test is skipped without it.
func sharedPeer(t testing.TB) peer {
	t.Helper()
	servicetest.Require(t, "node-opcua")
	p := peer{
		url: servicetest.OPCUAURL(), user: servicetest.OPCUAUser(), password: servicetest.OPCUAPassword(),
		certFile: os.Getenv("MILLWRIGHT_OPCUA_SERVER_CERT"),
	}
	if p.password == "" || p.certFile == "" {
		t.Skip("needs MILLWRIGHT_OPCUA_PASSWORD and MILLWRIGHT_OPCUA_SERVER_CERT from .services/env (deploy/services.sh up)")
	}
	return p
}

// privatePeer starts a node-opcua server for this test alone.
func privatePeer(t testing.TB, o servicetest.NodeOPCUAOptions) (*servicetest.NodeOPCUA, peer) {
	t.Helper()
	n := servicetest.StartNodeOPCUA(t, o)
	return n, peer{url: n.URL, user: n.User, password: n.Password, certFile: n.CertFile()}
}

// peerConfig is a source configuration for p with the given security: anonymous with
// policy None, else the user and password with the server's certificate in the trust list.
// Items and browse roots are the caller's to add.
func peerConfig(t testing.TB, p peer, policy, mode string) Config {
	t.Helper()
	cfg := Config{
		Endpoint:       p.url,
		SecurityPolicy: policy,
		SecurityMode:   mode,
		PKI:            PKI{Dir: t.TempDir()},
		ConnectTimeout: 15 * time.Second,
		RequestTimeout: 5 * time.Second,
		KeepAlive:      500 * time.Millisecond,
		Subscription:   Subscription{PublishingInterval: 100 * time.Millisecond},
		Mapping:        []Rule{{Match: plantRule}},
	}
	if policy != "None" {
		cfg.Auth = Auth{Type: AuthUsername, Username: p.user, Password: config.NewSecret(p.password)}
		trustServer(t, cfg.PKI.Dir, p.certFile)
	}
	return cfg
}

// trustServer puts the server's certificate into the source's trust list.
func trustServer(t testing.TB, pkiDir, certFile string) {
	t.Helper()
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatalf("server certificate: %v", err)
	}
	dir := filepath.Join(pkiDir, "trusted")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "node-opcua.pem"), pem, 0o600); err != nil {
		t.Fatal(err)
	}
}

// buildSource builds a source that logs into a buffer, which the test prints if it fails.
func buildSource(t testing.TB, cfg Config) *Source {
	t.Helper()
	log, buf := testlog.New(slog.LevelDebug)
	s, err := New(servicetest.UniqueName("opcua"), cfg, connectors.Env{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close(context.Background())
		if t.Failed() {
			t.Logf("source log:\n%s", buf)
		}
	})
	return s
}

// newSource builds and connects a source, closing it when the test ends.
func newSource(t testing.TB, cfg Config) *Source {
	t.Helper()
	s := buildSource(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// collector reads a source as the pipeline does: Read, then acknowledge.
type collector struct {
	points []telemetry.Point
}

// readUntil reads and acknowledges batches until done says so or timeout passes; it returns
// the Read error that stopped it (nil when done, a timeout error otherwise).
func (c *collector) readUntil(s *Source, timeout time.Duration, done func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !done() {
		b, ack, err := s.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("timed out after %s with %d points", timeout, len(c.points))
			}
			return err
		}
		c.points = append(c.points, b.Points...)
		ack(ctx, nil)
	}
	return nil
}

// series returns the distinct machine/signal names of the points collected.
func (c *collector) series() map[string]int {
	m := map[string]int{}
	for _, p := range c.points {
		m[p.Machine+"/"+p.Signal]++
	}
	return m
}

// reconnect drives a source whose Read returned ErrNotConnected as the pipeline does: Close,
// then Connect until it succeeds or timeout passes.
func reconnect(t testing.TB, s *Source, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		_ = s.Close(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = s.Connect(ctx)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no reconnect within %s: %v", timeout, err)
}

func isNotConnected(err error) bool { return errors.Is(err, connectors.ErrNotConnected) }

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// failedItems returns the items of the connection that have an error, by node id or path.
func failedItems(s *Source) map[string]ItemStatus {
	m := map[string]ItemStatus{}
	for _, it := range s.Items() {
		if it.Err != "" {
			k := it.NodeID
			if k == "" {
				k = it.Path
			}
			m[k] = it
		}
	}
	return m
}

func workingItems(s *Source) int {
	n := 0
	for _, it := range s.Items() {
		if it.Err == "" {
			n++
		}
	}
	return n
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
