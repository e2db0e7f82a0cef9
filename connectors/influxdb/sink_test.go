package influxdb

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// genPoints returns n points over machines x signals series, cycling through every value
// kind by signal, with increasing timestamps per series.
func genPoints(n, machines, signals int, base int64) []telemetry.Point {
	pts := make([]telemetry.Point, n)
	for i := range pts {
		s := i % (machines * signals)
		sig := s % signals
		p := telemetry.Point{
			Factory:    "f1",
			Line:       "l1",
			Machine:    fmt.Sprintf("m%03d", s/signals),
			Signal:     fmt.Sprintf("s%02d", sig),
			SourceTime: base + int64(i)*1000,
		}
		switch sig % 4 {
		case 0:
			p.Value = telemetry.Float(float64(i) / 8)
		case 1:
			p.Value = telemetry.Int(int64(i))
		case 2:
			p.Value = telemetry.Bool(i%3 == 0)
		case 3:
			p.Value = telemetry.String(fmt.Sprintf("state %d, \"q\"", i))
		}
		if i%5 == 0 {
			p.ServerTime = p.SourceTime + 10
			p.Quality = telemetry.Quality{Level: telemetry.Uncertain, Code: 0x40000000}
		}
		pts[i] = p
	}
	return pts
}

func testConfig(url string, mutate func(*Config)) Config {
	var cfg Config
	cfg.SetDefaults()
	cfg.URL = url
	cfg.Bucket = "db"
	cfg.Timeout = 5 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	return cfg
}

// newTestSink builds and connects a sink to url.
func newTestSink(t *testing.T, url string, mutate func(*Config)) (*Sink, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New("test", testConfig(url, mutate), connectors.Env{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, reg
}

func rejectedOf(t *testing.T, err error) []connectors.Rejection {
	t.Helper()
	if err == nil {
		return nil
	}
	var rej *connectors.RejectedError
	if !errors.As(err, &rej) {
		t.Fatalf("Write = %v; want nil or a *connectors.RejectedError", err)
	}
	return rej.Rejected
}

func TestWriteStoresEveryPointInSeriesOrder(t *testing.T) {
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			fake := newFakeInflux(t, "db")
			s, _ := newTestSink(t, fake.srv.URL, func(c *Config) { c.BatchPoints = 300; c.Writers = 4; c.Gzip = gz })
			pts := genPoints(10_000, 20, 8, t0)
			for i := 0; i < len(pts); i += 2500 {
				if err := s.Write(context.Background(), telemetry.Batch{Points: pts[i : i+2500]}); err != nil {
					t.Fatal(err)
				}
			}
			if got := fake.count(); got != len(pts) {
				t.Fatalf("stored %d points; want %d", got, len(pts))
			}
			fake.mu.Lock()
			defer fake.mu.Unlock()
			for series, times := range fake.times {
				if !slices.IsSorted(times) {
					t.Fatalf("series %s arrived out of order: %v", series, times)
				}
			}
			// 10,000 points in 4 shards of requests of at most 300: at least 34 requests.
			if fake.bodies < 34 {
				t.Errorf("%d write requests; want at least 34 (batch_points 300)", fake.bodies)
			}
			if gz && fake.gzipped != fake.bodies {
				t.Errorf("%d of %d requests were gzipped", fake.gzipped, fake.bodies)
			}
			// Spot-check the layout through the fake's parser.
			want := expectLine("telemetry", &pts[5])
			got := fake.stored[fmt.Sprintf("%s %d", seriesKey(&want), pts[5].SourceTime)]
			got.FieldOrder = nil
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("stored %+v; want %+v", got, want)
			}
		})
	}
}

func TestWriteRejectsUnstorablePointsLocally(t *testing.T) {
	fake := newFakeInflux(t, "db")
	s, _ := newTestSink(t, fake.srv.URL, func(c *Config) { c.BatchPoints = 7; c.Writers = 3 })
	pts := genPoints(100, 5, 4, t0)
	bad := map[int]string{
		3:  ClassNotFinite,
		17: ClassNoTimestamp,
		40: ClassMissingTag,
		41: ClassInvalidName,
		99: ClassNotFinite,
	}
	pts[3].Value = telemetry.Float(math.NaN())
	pts[17].SourceTime, pts[17].ServerTime = 0, 0
	pts[40].Signal = ""
	pts[41].Machine = "bad\xff"
	pts[99].Value = telemetry.Float(math.Inf(-1))
	rej := rejectedOf(t, s.Write(context.Background(), telemetry.Batch{Points: pts}))
	if len(rej) != len(bad) {
		t.Fatalf("rejected %d points; want %d: %+v", len(rej), len(bad), rej)
	}
	for _, r := range rej {
		i := slices.IndexFunc(pts, func(p telemetry.Point) bool { return p == r.Point })
		if bad[i] != r.Class || r.Reason == "" {
			t.Errorf("point %d rejected as %s %q; want class %s", i, r.Class, r.Reason, bad[i])
		}
	}
	if got := fake.count(); got != len(pts)-len(bad) {
		t.Errorf("stored %d points; want %d", got, len(pts)-len(bad))
	}
}

func TestWriteFieldTypeConflictRejectsOnlyConflictingPoints(t *testing.T) {
	fake := newFakeInflux(t, "db")
	// Someone else wrote "value" as an integer: every float point of ours conflicts.
	fake.fieldTypes["telemetry\x00value"] = "integer"
	s, _ := newTestSink(t, fake.srv.URL, func(c *Config) { c.Writers = 1 })
	pts := genPoints(400, 5, 4, t0)
	before := fake.requestCount()
	rej := rejectedOf(t, s.Write(context.Background(), telemetry.Batch{Points: pts}))
	wantRejected := 0
	for i := range pts {
		if pts[i].Value.Kind == telemetry.KindFloat {
			wantRejected++
		}
	}
	if len(rej) != wantRejected {
		t.Fatalf("rejected %d points; want the %d float points", len(rej), wantRejected)
	}
	for _, r := range rej {
		if r.Point.Value.Kind != telemetry.KindFloat || r.Class != ClassTypeConflict ||
			!strings.Contains(r.Reason, `field type conflict: input field "value" on measurement "telemetry" is type float, already exists as type integer`) ||
			strings.Contains(r.Reason, "dropped=") {
			t.Errorf("rejection %s %q for a %s point", r.Class, r.Reason, r.Point.Value.Kind)
		}
	}
	if got := fake.count(); got != len(pts)-wantRejected {
		t.Errorf("stored %d points; want %d", got, len(pts)-wantRejected)
	}
	// The message names the field and type: one failed request, the others written, the
	// suspects confirmed in one more. No bisection.
	if n := fake.requestCount() - before; n != 3 {
		t.Errorf("%d requests; want 3 (the message names the conflicting points)", n)
	}
}

func TestWriteBisectionFindsExactlyTheRefusedPoints(t *testing.T) {
	fake := newFakeInflux(t, "db")
	// Points the message does not identify: only bisection finds them.
	fake.refuse = func(pl *parsedLine) string {
		if v, ok := pl.Fields["value_int"].(int64); ok && v%97 == 0 {
			return "points beyond retention policy"
		}
		return ""
	}
	s, _ := newTestSink(t, fake.srv.URL, func(c *Config) { c.BatchPoints = 1000; c.Writers = 2 })
	pts := genPoints(2000, 10, 4, t0)
	rej := rejectedOf(t, s.Write(context.Background(), telemetry.Batch{Points: pts}))
	var want []int
	for i := range pts {
		if pts[i].Value.Kind == telemetry.KindInt && pts[i].Value.Int()%97 == 0 {
			want = append(want, i)
		}
	}
	var got []int
	for _, r := range rej {
		got = append(got, slices.IndexFunc(pts, func(p telemetry.Point) bool { return p == r.Point }))
		if r.Class != ClassRetention || !strings.Contains(r.Reason, "points beyond retention policy") {
			t.Errorf("rejection %s %q", r.Class, r.Reason)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("rejected points %v; want exactly %v (in batch order)", got, want)
	}
	if got := fake.count(); got != len(pts)-len(want) {
		t.Errorf("stored %d points; want %d", got, len(pts)-len(want))
	}
}

func TestWriteRejectsUnparsableLines(t *testing.T) {
	fake := newFakeInflux(t, "db")
	fake.unparsable = func(line string) bool {
		return strings.Contains(line, "signal=s01 ") && strings.Contains(line, "value_int=7")
	}
	s, _ := newTestSink(t, fake.srv.URL, func(c *Config) { c.Writers = 1 })
	pts := genPoints(800, 5, 4, t0)
	rej := rejectedOf(t, s.Write(context.Background(), telemetry.Batch{Points: pts}))
	want := 0
	for i := range pts {
		if pts[i].Signal == "s01" && strings.HasPrefix(fmt.Sprint(pts[i].Value.Int()), "7") {
			want++
		}
	}
	if len(rej) != want || want == 0 {
		t.Fatalf("rejected %d points; want %d", len(rej), want)
	}
	for _, r := range rej {
		if r.Class != ClassUnparsable || !strings.Contains(r.Reason, "invalid field format") {
			t.Errorf("rejection %s %q", r.Class, r.Reason)
		}
	}
	if got := fake.count(); got != len(pts)-want {
		t.Errorf("stored %d points; want %d", got, len(pts)-want)
	}
}

func TestWriteSplitsTooLargeRequests(t *testing.T) {
	fake := newFakeInflux(t, "db")
	fake.maxBody = 4000
	s, _ := newTestSink(t, fake.srv.URL, func(c *Config) { c.Writers = 1 })
	pts := genPoints(300, 3, 4, t0)
	huge := pts[10]
	huge.Signal = "huge"
	huge.Value = telemetry.String(strings.Repeat("x", 5000))
	pts = append(pts, huge)
	rej := rejectedOf(t, s.Write(context.Background(), telemetry.Batch{Points: pts}))
	if len(rej) != 1 || rej[0].Point.Signal != "huge" || rej[0].Class != ClassTooLarge {
		t.Fatalf("rejections %+v; want only the huge point, as too_large", rej)
	}
	if got := fake.count(); got != len(pts)-1 {
		t.Errorf("stored %d points; want %d", got, len(pts)-1)
	}
}

func TestWriteErrorsToRetry(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		retryAfter time.Duration
		text       string
	}{
		{"429 with Retry-After seconds", http.StatusTooManyRequests, map[string]string{"Retry-After": "7"}, "", 7 * time.Second, "429 Too Many Requests"},
		{"503 with Retry-After date", http.StatusServiceUnavailable, map[string]string{"Retry-After": time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)}, "", 30 * time.Second, "503"},
		{"500 with 2.x JSON", http.StatusInternalServerError, map[string]string{"Content-Type": "application/json"}, `{"code":"internal error","message":"engine: cache full"}`, 0, "engine: cache full"},
		{"401", http.StatusUnauthorized, nil, "", 0, "check the token"},
		{"403", http.StatusForbidden, nil, "", 0, `may write to bucket "db"`},
		{"404", http.StatusNotFound, nil, "", 0, `CREATE DATABASE "db"`},
		{"400 about the request", http.StatusBadRequest, map[string]string{"X-Influxdb-Error": "database is required"}, "", 0, "refused the request as a whole"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := newFakeInflux(t, "db")
			s, _ := newTestSink(t, fake.srv.URL, nil)
			fake.set(func(f *fakeInflux) {
				f.hook = func(w http.ResponseWriter, r *http.Request) bool {
					for k, v := range tt.header {
						w.Header().Set(k, v)
					}
					w.WriteHeader(tt.status)
					_, _ = w.Write([]byte(tt.body))
					return true
				}
			})
			err := s.Write(context.Background(), telemetry.Batch{Points: genPoints(50, 2, 2, t0)})
			var we *WriteError
			if !errors.As(err, &we) {
				t.Fatalf("Write = %v; want a *WriteError", err)
			}
			var rej *connectors.RejectedError
			if errors.As(err, &rej) {
				t.Fatal("a request failure came back as rejected points")
			}
			if we.StatusCode != tt.status || !strings.Contains(err.Error(), tt.text) || !strings.Contains(err.Error(), fake.srv.URL) {
				t.Errorf("error %q (status %d); want status %d, the URL and %q", err, we.StatusCode, tt.status, tt.text)
			}
			if d := we.RetryAfter() - tt.retryAfter; d < -2*time.Second || d > 2*time.Second {
				t.Errorf("RetryAfter = %s; want about %s", we.RetryAfter(), tt.retryAfter)
			}
			var ra interface{ RetryAfter() time.Duration }
			if !errors.As(err, &ra) {
				t.Error("the error does not expose RetryAfter to the pipeline")
			}
			if errors.Is(err, connectors.ErrNotConnected) {
				t.Error("an HTTP status must not mark the sink disconnected")
			}
		})
	}
}

func TestWriteTimeout(t *testing.T) {
	fake := newFakeInflux(t, "db")
	s, _ := newTestSink(t, fake.srv.URL, nil)
	s.cfg.Timeout = 50 * time.Millisecond
	fake.set(func(f *fakeInflux) {
		f.hook = func(w http.ResponseWriter, r *http.Request) bool {
			_, _ = io.Copy(io.Discard, r.Body) // the server notices a closed connection only after the body
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return true
		}
	})
	err := s.Write(context.Background(), telemetry.Batch{Points: genPoints(10, 1, 1, t0)})
	var we *WriteError
	if !errors.As(err, &we) || !we.Timeout() || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("Write = %v; want a timed-out *WriteError", err)
	}
}

func TestWriteConnectionLost(t *testing.T) {
	fake := newFakeInflux(t, "db")
	s, _ := newTestSink(t, fake.srv.URL, nil)
	if err := s.Write(context.Background(), telemetry.Batch{Points: genPoints(10, 1, 1, t0)}); err != nil {
		t.Fatal(err)
	}
	fake.srv.Close()
	err := s.Write(context.Background(), telemetry.Batch{Points: genPoints(10, 1, 1, t0)})
	if !errors.Is(err, connectors.ErrNotConnected) {
		t.Fatalf("Write to a stopped server = %v; want ErrNotConnected", err)
	}
	var we *WriteError
	if !errors.As(err, &we) || !strings.Contains(err.Error(), fake.srv.URL) {
		t.Errorf("error %q; want a *WriteError naming the URL", err)
	}
}

func TestWriteCancelled(t *testing.T) {
	fake := newFakeInflux(t, "db")
	s, _ := newTestSink(t, fake.srv.URL, nil)
	ctx, cancel := context.WithCancel(context.Background())
	fake.set(func(f *fakeInflux) {
		f.hook = func(w http.ResponseWriter, r *http.Request) bool {
			_, _ = io.Copy(io.Discard, r.Body)
			cancel()
			<-r.Context().Done()
			return true
		}
	})
	err := s.Write(ctx, telemetry.Batch{Points: genPoints(100, 10, 2, t0)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Write = %v; want context.Canceled", err)
	}
}

func TestWriteBeforeConnect(t *testing.T) {
	s, err := New("x", testConfig("http://127.0.0.1:1", nil), connectors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), telemetry.Batch{Points: genPoints(1, 1, 1, t0)}); !errors.Is(err, connectors.ErrNotConnected) {
		t.Fatalf("Write before Connect = %v; want ErrNotConnected", err)
	}
	if err := s.Write(context.Background(), telemetry.Batch{}); err != nil {
		t.Fatalf("empty Write = %v; want nil", err)
	}
}

func TestConnect(t *testing.T) {
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + l.Addr().String()
	_ = l.Close()

	fake := newFakeInflux(t, "db")
	authed := newFakeInflux(t, "db")
	authed.token = "admin:secret"
	notInflux := newFakeInflux(t)
	notInflux.hook = func(w http.ResponseWriter, r *http.Request) bool { http.NotFound(w, r); return true }

	tests := []struct {
		name    string
		url     string
		mutate  func(*Config)
		want    string // "" for success
		notConn bool
	}{
		{"ok", fake.srv.URL, nil, "", false},
		{"unreachable", deadURL, nil, "cannot reach InfluxDB", true},
		{"no database", fake.srv.URL, func(c *Config) { c.Bucket = "nope/autogen" }, `CREATE DATABASE "nope"`, false},
		{"token accepted", authed.srv.URL, func(c *Config) { c.Token = config.NewSecret("admin:secret") }, "", false},
		{"token missing", authed.srv.URL, nil, "check the token", false},
		{"not InfluxDB", notInflux.srv.URL, nil, "points to an InfluxDB server", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New("c", testConfig(tt.url, tt.mutate), connectors.Env{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close(context.Background())
			err = s.Connect(context.Background())
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Connect = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.url) {
				t.Fatalf("Connect = %v; want an error naming %s and saying %q", err, tt.url, tt.want)
			}
			if errors.Is(err, connectors.ErrNotConnected) != tt.notConn {
				t.Errorf("errors.Is(err, ErrNotConnected) = %v; want %v", !tt.notConn, tt.notConn)
			}
		})
	}
}

func TestReconnect(t *testing.T) {
	fake := newFakeInflux(t, "db")
	s, _ := newTestSink(t, fake.srv.URL, nil)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), telemetry.Batch{Points: genPoints(5, 1, 1, t0)}); !errors.Is(err, connectors.ErrNotConnected) {
		t.Fatalf("Write after Close = %v; want ErrNotConnected", err)
	}
	if err := s.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(context.Background()); err != nil { // again, replacing the connection
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), telemetry.Batch{Points: genPoints(5, 1, 1, t0)}); err != nil {
		t.Fatal(err)
	}
}

func TestMetrics(t *testing.T) {
	fake := newFakeInflux(t, "db")
	s, reg := newTestSink(t, fake.srv.URL, func(c *Config) { c.BatchPoints = 100; c.Writers = 1 })
	if err := s.Write(context.Background(), telemetry.Batch{Points: genPoints(250, 2, 2, t0)}); err != nil {
		t.Fatal(err)
	}
	// ping and probe at Connect, then 3 writes.
	if got := testutil.ToFloat64(s.m.requests.WithLabelValues("204")); got != 5 {
		t.Errorf("requests_total{code=204} = %v; want 5", got)
	}
	if got := testutil.ToFloat64(s.m.bytes); got < 250*50 {
		t.Errorf("request_bytes_total = %v; want at least %d", got, 250*50)
	}
	n, err := testutil.GatherAndCount(reg, "millwright_influxdb_requests_total", "millwright_influxdb_request_seconds", "millwright_influxdb_request_bytes_total")
	if err != nil || n != 3 {
		t.Errorf("gathered %d series (err %v); want 3", n, err)
	}
	// A second sink on the same registerer shares the metrics under its own label.
	if _, err := New("other", testConfig(fake.srv.URL, nil), connectors.Env{Registerer: reg}); err != nil {
		t.Fatalf("second sink on one registerer: %v", err)
	}
}

func TestBatchPolicy(t *testing.T) {
	s, err := New("x", testConfig("http://127.0.0.1:8086", func(c *Config) { c.BatchPoints = 1000; c.Writers = 3; c.FlushInterval = 250 * time.Millisecond }), connectors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if n, d := s.BatchPolicy(); n != 3000 || d != 250*time.Millisecond {
		t.Errorf("BatchPolicy = %d, %s; want 3000, 250ms", n, d)
	}
}

// TestWriteAllocatesPerRequest checks that steady-state writes allocate per request, not
// per point: ten times the points in one request cost (almost) no more allocations.
func TestWriteAllocatesPerRequest(t *testing.T) {
	srv := newFakeInflux(t, "db")
	srv.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/api/v2/write" {
			return false
		}
		buf := make([]byte, 64<<10)
		for {
			if _, err := r.Body.Read(buf); err != nil {
				break
			}
		}
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	s, _ := newTestSink(t, srv.srv.URL, func(c *Config) { c.BatchPoints = 20_000; c.Writers = 1 })
	small, large := genPoints(2_000, 10, 10, t0), genPoints(20_000, 10, 10, t0)
	measure := func(pts []telemetry.Point) float64 {
		return testing.AllocsPerRun(20, func() {
			if err := s.Write(context.Background(), telemetry.Batch{Points: pts}); err != nil {
				t.Fatal(err)
			}
		})
	}
	measure(large) // grow the buffers
	a, b := measure(small), measure(large)
	t.Logf("allocations per Write: %.0f for 2,000 points, %.0f for 20,000 points", a, b)
	if b-a > 50 {
		t.Errorf("18,000 more points cost %.0f more allocations; want O(1) per request", b-a)
	}
}

func TestTLS(t *testing.T) {
	fake := newFakeInfluxTLS(t, "db")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fake.srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		tls  config.TLS
		want string // "" for success
	}{
		{"trusted CA", config.TLS{CAFile: caFile}, ""},
		{"insecure skip verify", config.TLS{InsecureSkipVerify: true}, ""},
		{"system roots only", config.TLS{}, "certificate"},
		{"missing CA file", config.TLS{CAFile: filepath.Join(t.TempDir(), "nope.pem")}, "tls ca_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New("tls", testConfig(fake.srv.URL, func(c *Config) { c.TLS = tt.tls }), connectors.Env{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close(context.Background())
			err = s.Connect(context.Background())
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Connect = %v; want an error about %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Connect = %v", err)
			}
			if err := s.Write(context.Background(), telemetry.Batch{Points: genPoints(20, 2, 2, t0)}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestInfluxDB2 runs the error handling against the fake in InfluxDB 2.x mode (JSON errors,
// 422 partial writes, org and token required, parse errors failing the whole request).
func TestInfluxDB2(t *testing.T) {
	newV2 := func(t *testing.T) *fakeInflux {
		f := newFakeInflux(t, "telemetry-bucket")
		f.v2, f.org, f.token = true, "acme", "v2-token"
		return f
	}
	v2Config := func(c *Config) {
		c.Org, c.Bucket, c.Token = "acme", "telemetry-bucket", config.NewSecret("v2-token")
		c.Writers = 2
	}

	t.Run("connect", func(t *testing.T) {
		fake := newV2(t)
		for _, tt := range []struct {
			name   string
			mutate func(*Config)
			want   string
		}{
			{"ok", func(*Config) {}, ""},
			{"wrong org", func(c *Config) { c.Org = "other" }, `organization name "other" not found`},
			{"wrong bucket", func(c *Config) { c.Bucket = "nope" }, `check that bucket "nope" exists`},
			{"wrong token", func(c *Config) { c.Token = config.NewSecret("x") }, "check the token"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				s, err := New("v2", testConfig(fake.srv.URL, func(c *Config) { v2Config(c); tt.mutate(c) }), connectors.Env{})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close(context.Background())
				err = s.Connect(context.Background())
				if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
					t.Fatalf("Connect = %v; want %q", err, tt.want)
				}
			})
		}
	})

	t.Run("type conflict", func(t *testing.T) {
		fake := newV2(t)
		fake.fieldTypes["telemetry\x00value_str"] = "float"
		s, _ := newTestSink(t, fake.srv.URL, v2Config)
		pts := genPoints(1000, 5, 4, t0)
		before := fake.requestCount()
		rej := rejectedOf(t, s.Write(context.Background(), telemetry.Batch{Points: pts}))
		for _, r := range rej {
			if r.Point.Value.Kind != telemetry.KindString || r.Class != ClassTypeConflict ||
				r.Reason != `InfluxDB refused the point: field type conflict: input field "value_str" on measurement "telemetry" is type string, already exists as type float for database: 0a1b2c3d for retention policy: autogen` {
				t.Fatalf("rejection %s %q of a %s point", r.Class, r.Reason, r.Point.Value.Kind)
			}
		}
		if len(rej) != 250 || fake.count() != 750 {
			t.Fatalf("rejected %d, stored %d; want 250 and 750", len(rej), fake.count())
		}
		if n := fake.requestCount() - before; n > 2*3 {
			t.Errorf("%d requests for 2 shards; want at most 3 each", n)
		}
	})

	t.Run("retention", func(t *testing.T) {
		fake := newV2(t)
		fake.refuse = func(pl *parsedLine) string {
			if pl.Time < t0+50_000 {
				return "dropped 1 points outside retention policy of duration 72h0m0s"
			}
			return ""
		}
		s, _ := newTestSink(t, fake.srv.URL, v2Config)
		rej := rejectedOf(t, s.Write(context.Background(), telemetry.Batch{Points: genPoints(500, 5, 4, t0)}))
		if len(rej) != 50 || fake.count() != 450 {
			t.Fatalf("rejected %d, stored %d; want 50 and 450", len(rej), fake.count())
		}
		for _, r := range rej {
			if r.Class != ClassRetention || r.Point.SourceTime >= t0+50_000 {
				t.Fatalf("rejection %s %q of a point at %d", r.Class, r.Reason, r.Point.SourceTime)
			}
		}
	})

	t.Run("unparsable", func(t *testing.T) {
		fake := newV2(t)
		fake.unparsable = func(line string) bool { return strings.Contains(line, "value_int=3") }
		s, _ := newTestSink(t, fake.srv.URL, v2Config)
		pts := genPoints(400, 5, 4, t0)
		rej := rejectedOf(t, s.Write(context.Background(), telemetry.Batch{Points: pts}))
		want := 0
		for i := range pts {
			if pts[i].Value.Kind == telemetry.KindInt && strings.HasPrefix(fmt.Sprint(pts[i].Value.Int()), "3") {
				want++
			}
		}
		if len(rej) != want || fake.count() != len(pts)-want {
			t.Fatalf("rejected %d, stored %d; want %d and %d", len(rej), fake.count(), want, len(pts)-want)
		}
	})
}
