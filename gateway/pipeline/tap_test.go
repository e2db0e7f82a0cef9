package pipeline

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// TestTapSeesEveryDurableBatchBeforeItsAck checks the tap's contract: it is handed every
// stored batch, with the factory filled in, before the source is acknowledged.
func TestTapSeesEveryDurableBatchBeforeItsAck(t *testing.T) {
	wal := openWAL(t, nil, "out")
	src, sink := newFakeSource(), &fakeSink{}
	var (
		mu         sync.Mutex
		tapped     []int // sequence numbers seen by the tap
		ackedFirst int   // batches already acknowledged when the tap saw them
	)
	tap := func(b telemetry.Batch) {
		mu.Lock()
		defer mu.Unlock()
		seq := int(b.Points[0].Value.Int())
		tapped = append(tapped, seq)
		if b.Points[0].Factory != "acme" {
			t.Errorf("tapped batch %d has factory %q, want the gateway's", seq, b.Points[0].Factory)
		}
		if src.ackedCount() > seq {
			ackedFirst++
		}
	}
	e, err := New(wal, []Source{{Name: "src", Source: src}},
		[]Sink{{Name: "out", Sink: sink, Cursor: wal.Reader("out"), MaxPoints: 100, Linger: time.Millisecond}},
		Options{Registerer: prometheus.NewRegistry(), DeadLetters: &recordedLetters{}, Factory: "acme", Tap: tap})
	if err != nil {
		t.Fatal(err)
	}
	defer runEngine(e)()
	for seq := range 20 {
		src.batches <- batch(seq, 3)
	}
	servicetest.WaitFor(t, 10*time.Second, "acks", func() bool { return src.ackedCount() == 20 })
	mu.Lock()
	defer mu.Unlock()
	if len(tapped) != 20 {
		t.Fatalf("tap saw %d batches, want 20", len(tapped))
	}
	for i, seq := range tapped {
		if seq != i {
			t.Fatalf("tap saw batch %d at position %d: order not kept", seq, i)
		}
	}
	if ackedFirst != 0 {
		t.Fatalf("%d batches were acknowledged before the tap saw them", ackedFirst)
	}
}
