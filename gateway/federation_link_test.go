package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/federation"
)

// TestFederationStatusFollowsTheConnection: a running round watch over a lost NATS
// connection, or through a leaf node that lost its link to the hub, shows as reconnecting (the client redials on its own and the watch does not
// fail meanwhile), with the connected gauge at 0, and as connected again once it is back;
// a stopped watch stays stopped whatever the connection does.
func TestFederationStatusFollowsTheConnection(t *testing.T) {
	m, err := newFedMetrics(prometheus.NewRegistry(), []string{"pumps"})
	if err != nil {
		t.Fatal(err)
	}
	st := newFedStatus("pumps", "f1", nil, m)
	for _, step := range []struct {
		do   func()
		want string
	}{
		{func() {}, hubConnecting},
		{func() { st.setHub(hubConnected) }, hubConnected},
		{func() { st.link(false) }, hubReconnect},
		{func() { st.link(true) }, hubConnected},
		{func() { st.link(false) }, hubReconnect},
		{func() { st.setHub(hubStopped) }, hubStopped},
		{func() { st.setHub(hubConnected) }, hubReconnect},
		{func() { st.link(true) }, hubConnected},
		{func() { st.leafLink(false) }, hubReconnect},
		{func() { st.link(false) }, hubReconnect},
		{func() { st.leafLink(true) }, hubReconnect},
		{func() { st.link(true) }, hubConnected},
	} {
		step.do()
		if got := st.snapshot().Hub; got != step.want {
			t.Fatalf("hub %q, want %q", got, step.want)
		}
		gauge, want := testutil.ToFloat64(m.connected.WithLabelValues("pumps")), 0.0
		if step.want == hubConnected {
			want = 1
		}
		if gauge != want {
			t.Fatalf("hub %q: connected gauge %v, want %v", step.want, gauge, want)
		}
	}
}

// leafStub is a leaf node whose link to the hub the test sets.
type leafStub struct{ linked atomic.Bool }

func (l *leafStub) LeafConnected() int {
	if l.linked.Load() {
		return 1
	}
	return 0
}

// TestWatchLeafShowsALostLink: the gateway's check of its leaf node turns every
// federation's status to reconnecting within one period of the leaf losing its link to
// the hub, and back to connected within one period of it relinking.
func TestWatchLeafShowsALostLink(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, err := newFedMetrics(prometheus.NewRegistry(), []string{"pumps", "fans"})
		if err != nil {
			t.Fatal(err)
		}
		leaf := &leafStub{}
		leaf.linked.Store(true)
		fr := &federationRuntime{log: slog.New(slog.DiscardHandler), leaf: leaf,
			status: []*fedStatus{newFedStatus("pumps", "f1", nil, m), newFedStatus("fans", "f1", nil, m)}}
		for _, st := range fr.status {
			st.setHub(hubConnected)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { fr.watchLeaf(ctx, time.Second); close(done) }()
		want := func(hub string) {
			t.Helper()
			time.Sleep(time.Second)
			synctest.Wait()
			for _, st := range fr.status {
				if got := st.snapshot().Hub; got != hub {
					t.Fatalf("%s: hub %q, want %q", st.name, got, hub)
				}
			}
		}
		want(hubConnected)
		leaf.linked.Store(false)
		want(hubReconnect)
		leaf.linked.Store(true)
		want(hubConnected)
		cancel()
		<-done
	})
}

// heldWatch is a transport whose round watch has reached nothing until the test sends it
// a state to deliver; it then delivers the states sent, until its context ends. asked is
// closed once the watch was asked for.
type heldWatch struct {
	modelShelf
	asked  chan struct{}
	states chan []byte
}

func (h *heldWatch) WatchRound(ctx context.Context, _ string, fn func([]byte)) error {
	close(h.asked)
	for {
		select {
		case <-ctx.Done():
			return nil
		case b := <-h.states:
			fn(b)
		}
	}
}

// TestFederationShowsConnectedOnceWatching: a gateway whose round watch has not
// delivered the round state yet (the hub's NATS does not answer) shows connecting, with
// the connected gauge at 0, and connected from the first state; a stopped watch shows
// stopped.
func TestFederationShowsConnectedOnceWatching(t *testing.T) {
	msg := newFedMessages(t)
	reg := prometheus.NewRegistry()
	m, err := newFedMetrics(reg, []string{"pumps"})
	if err != nil {
		t.Fatal(err)
	}
	st := newFedStatus("pumps", "factory-a", nil, m)
	h := &heldWatch{asked: make(chan struct{}), states: make(chan []byte)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	delivered := make(chan struct{}, 1)
	go func() {
		done <- observedTransport{Transport: h, st: st}.WatchRound(ctx, "pumps", func([]byte) { delivered <- struct{}{} })
	}()
	want := func(hub string, gauge float64) {
		t.Helper()
		if got := st.snapshot().Hub; got != hub {
			t.Fatalf("hub %q, want %q", got, hub)
		}
		if got := testutil.ToFloat64(m.connected.WithLabelValues("pumps")); got != gauge {
			t.Fatalf("connected gauge %v, want %v", got, gauge)
		}
	}
	<-h.asked
	want(hubConnecting, 0)
	h.states <- msg.state(t, 2, 1, "h1", "factory-a")
	<-delivered
	want(hubConnected, 1)
	if r := st.snapshot().Round; r == nil || r.Round != 2 {
		t.Fatalf("round seen %+v, want round 2", r)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want(hubStopped, 0)
}

// timedReceipts is a transport whose receipt reads are answered after lag, with b, or,
// when lag is past the transport's timeout (10 s, as natsbus's default), not at all: the
// read fails with context.DeadlineExceeded then, as natsbus's does. reads counts them.
type timedReceipts struct {
	modelShelf
	lag   time.Duration
	b     []byte
	reads int
}

func (r *timedReceipts) GetReceipt(ctx context.Context, _, _ string) ([]byte, error) {
	r.reads++
	const timeout = 10 * time.Second
	select {
	case <-time.After(min(r.lag, timeout)):
		if r.lag >= timeout {
			return nil, fmt.Errorf("natsbus: receipt: %w", context.DeadlineExceeded)
		}
		return r.b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestReceiptReadsAreBounded: a receipt read that gets no answer within the transport's
// timeout (through a leaf node, from a hub that made no receipt bucket) is not tried
// again, so the checker waits one timeout, not twenty; the pending update is then
// unknown. A read answered slowly, but within the timeout, settles the update.
func TestReceiptReadsAreBounded(t *testing.T) {
	b, err := json.Marshal(federation.Receipt{Version: federation.ReceiptVersion, Federation: "pumps", Participant: "f1", Round: 3, Outcome: federation.ReceiptUsed})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		lag   time.Duration
		want  string
		reads int
	}{
		{time.Hour, OutcomeUnknown, 1},
		{3500 * time.Millisecond, OutcomeUsed, 1},
	} {
		synctest.Test(t, func(t *testing.T) {
			m, err := newFedMetrics(prometheus.NewRegistry(), []string{"pumps"})
			if err != nil {
				t.Fatal(err)
			}
			st := newFedStatus("pumps", "f1", nil, m)
			st.s.LastUpdate = &UpdateSent{Round: 3, Kind: kindEvaluation, Outcome: OutcomePending}
			tr := &timedReceipts{lag: c.lag, b: b}
			st.readReceipt(context.Background(), tr, 3)
			if u := st.snapshot().LastUpdate; u == nil || u.Outcome != c.want || tr.reads != c.reads {
				t.Fatalf("reads answered after %v: last update %+v after %d reads; want %s after %d", c.lag, u, tr.reads, c.want, c.reads)
			}
		})
	}
}
