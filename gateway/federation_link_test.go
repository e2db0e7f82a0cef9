package gateway

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
