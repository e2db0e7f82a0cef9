package gateway

import (
	"fmt"
	"testing"

	"github.com/millwright-io/millwright/connectors/influxdb"
	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// BenchmarkHotPath measures what the gateway does per point on one core, without the
// network: decode an MQTT JSON message (4 signals), and encode the points as line protocol;
// "with_wal_codec" adds the write-ahead log's encoding and decoding in between. One op is
// one message; points/s is reported.
func BenchmarkHotPath(b *testing.B) {
	var topic mqtt.Topic
	topic.SetDefaults()
	topic.Pattern = "plant/{line}/{machine}/telemetry"
	names := telemetry.NewInterner(1 << 16)
	dec, err := mqtt.NewDecoder(topic, mqtt.DecoderOptions{Names: names})
	if err != nil {
		b.Fatal(err)
	}
	enc, err := influxdb.NewEncoder("telemetry")
	if err != nil {
		b.Fatal(err)
	}
	const machines = 100
	topics := make([]string, machines)
	payloads := make([][]byte, machines)
	for i := range machines {
		topics[i] = fmt.Sprintf("plant/line-%d/machine-%d/telemetry", i%4, i)
		payloads[i] = fmt.Appendf(nil, `{"ts": %d, "temperature": 41.25, "vibration_rms": 1.2034, "current": 12.5, "speed": 1480}`, int64(1700000000000)+int64(i))
	}
	for _, withWAL := range []bool{false, true} {
		name := "decode_encode"
		if withWAL {
			name = "with_wal_codec"
		}
		b.Run(name, func(b *testing.B) {
			var (
				pts   []telemetry.Point
				walb  []byte
				batch telemetry.Batch
				line  []byte
				n     int
			)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				m := i % machines
				pts, err = dec.Decode(topics[m], payloads[m], 1700000000000000000, pts[:0])
				if err != nil {
					b.Fatal(err)
				}
				if withWAL {
					walb = telemetry.AppendBatch(walb[:0], telemetry.Batch{Points: pts})
					if err := telemetry.DecodeBatch(walb, &batch, names); err != nil {
						b.Fatal(err)
					}
					pts = batch.Points
				}
				line = line[:0]
				for j := range pts {
					if line, err = enc.Append(line, &pts[j]); err != nil {
						b.Fatal(err)
					}
				}
				n += len(pts)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "points/s")
		})
	}
}
