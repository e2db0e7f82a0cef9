package influxdb

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// BenchmarkEncode measures the line-protocol encoder on a realistic mix of points (every
// value kind, a fifth with a status code and a server time). One op is one point.
func BenchmarkEncode(b *testing.B) {
	enc := mustEncoder(b, DefaultMeasurement)
	pts := genPoints(10_000, 100, 20, t0)
	buf := make([]byte, 0, 2<<20)
	var bytesOut int
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%len(pts) == 0 {
			bytesOut += len(buf)
			buf = buf[:0]
		}
		var err error
		if buf, err = enc.Append(buf, &pts[i%len(pts)]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	bytesOut += len(buf)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "points/s")
	b.ReportMetric(float64(bytesOut)/float64(b.N), "bytes/point")
}

// BenchmarkWriteDiscard measures the sink's own cost per point (sharding, encoding,
// requests) against a local server that discards the bodies. One op is one point.
func BenchmarkWriteDiscard(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	benchmarkWrite(b, srv.URL, "db")
}

// BenchmarkWrite measures end-to-end writes into the real InfluxDB (MILLWRIGHT_INFLUX_URL)
// with the default configuration: 4 writers, requests of 5,000 points. One op is one point.
func BenchmarkWrite(b *testing.B) {
	baseURL, db := sharedInflux(b)
	benchmarkWrite(b, baseURL, db)
}

func benchmarkWrite(b *testing.B, baseURL, bucket string) {
	s, err := New("bench", testConfig(baseURL, func(c *Config) { c.Bucket = bucket; c.Timeout = time.Minute }), connectors.Env{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Connect(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	batch, _ := s.BatchPolicy()
	// 300 series, as in the project's load tests; new timestamps on every pass so that
	// InfluxDB stores new points rather than overwriting.
	pts := genPoints(batch, 30, 10, time.Now().Add(-time.Hour).UnixNano())
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += len(pts) {
		n := min(len(pts), b.N-done)
		if err := s.Write(context.Background(), telemetry.Batch{Points: pts[:n]}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for i := range pts {
			pts[i].SourceTime += int64(len(pts)) * 1000
			if pts[i].ServerTime != 0 {
				pts[i].ServerTime += int64(len(pts)) * 1000
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "points/s")
}
