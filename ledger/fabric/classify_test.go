package fabric

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/ledger"
)

// TestClassify: the chaincode's tags become the ledger's errors, and only refusals for
// good are permanent: a client whose clock is off keeps its records and retries.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		msg       string
		is        error
		permanent bool
	}{
		{"chaincode response 500, rejected: record r1: bad signature", ledger.ErrRejected, true},
		{"chaincode response 500, conflict: record r1 is anchored with hash a", ledger.ErrConflict, true},
		{"chaincode response 500, unknown actor: record r1: key id k", ErrKeyNotRegistered, false},
		{"chaincode response 500, clock: record r1: the transaction's time is 7m0s from this peer's clock", ErrClock, false},
		{"chaincode response 500, not found: record r1", ledger.ErrNotFound, false},
	} {
		err := classify("endorse", errors.New(tc.msg))
		if !errors.Is(err, tc.is) || ledger.IsPermanent(err) != tc.permanent {
			t.Errorf("%q: %v (permanent %v), want %v (permanent %v)", tc.msg, err, ledger.IsPermanent(err), tc.is, tc.permanent)
		}
	}
}

// TestAnchorResults: an operator sees a client clock off the peers' in the anchors'
// results, apart from other transient errors.
func TestAnchorResults(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	m.observe("", classify("endorse", errors.New("chaincode response 500, clock: record r1: 7m0s off")), time.Second)
	m.observe("", errors.New("connection refused"), time.Second)
	m.observe("anchored", nil, time.Second)
	for result, want := range map[string]float64{"clock": 1, "error": 1, "anchored": 1, "rejected": 0} {
		if got := testutil.ToFloat64(m.anchors.WithLabelValues(result)); got != want {
			t.Errorf("anchors{result=%q} = %v, want %v", result, got, want)
		}
	}
}
