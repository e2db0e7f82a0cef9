package gateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestFederationStatusFollowsTheConnection: a running round watch over a lost NATS
// connection shows as reconnecting (the client redials on its own and the watch does not
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
