package opcua

import (
	"fmt"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

// BenchmarkNotificationToBatch measures converting one data change notification of n
// monitored items into points (the per-publish work of Read, without the network).
func BenchmarkNotificationToBatch(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("items=%d", n), func(b *testing.B) {
			s := &Source{cfg: Config{MaxBatchPoints: n}, names: telemetry.NewInterner(internedNames)}
			var err error
			if s.m, err = newMetrics(unitEnv(b).Registerer, "bench"); err != nil {
				b.Fatal(err)
			}
			c := newConnection(s, nil)
			defer c.cancel()
			now := time.Now()
			notif := &ua.DataChangeNotification{MonitoredItems: make([]*ua.MonitoredItemNotification, n)}
			for i := range n {
				h := uint32(i + 1)
				c.items[h] = &item{handle: h, names: names{line: "l1", machine: fmt.Sprintf("m%d", i/10), signal: fmt.Sprintf("s%d", i%10)}, arrays: ArraysFlatten}
				notif.MonitoredItems[i] = &ua.MonitoredItemNotification{ClientHandle: h, Value: &ua.DataValue{
					EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
					Value:        ua.MustVariant(float64(i)), SourceTimestamp: now, ServerTimestamp: now,
				}}
			}
			var dst []telemetry.Point
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				dst = c.convert(dst[:0], notif, 1)
			}
			if len(dst) != n {
				b.Fatalf("%d points, want %d", len(dst), n)
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "values/s")
		})
	}
}
