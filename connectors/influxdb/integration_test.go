package influxdb

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/servicetest"
)

// integrationBase is a fixed time in the middle of one of InfluxDB's 7-day shard groups, so
// that a test's points share a shard (field types are per shard in InfluxDB 1.8).
var integrationBase = time.Date(2026, 1, 6, 12, 0, 0, 0, time.UTC).UnixNano()

// sharedInflux skips the test unless the integration services run, and returns the shared
// InfluxDB's URL and a database unique to the test (dropped when it ends).
func sharedInflux(t testing.TB) (url, db string) {
	t.Helper()
	servicetest.Require(t, "InfluxDB")
	url = servicetest.InfluxURL()
	return url, servicetest.Database(t, url)
}

func integrationSink(t *testing.T, baseURL, db string, mutate func(*Config)) *Sink {
	t.Helper()
	s, err := New("it", testConfig(baseURL, func(c *Config) {
		c.Bucket = db
		c.Timeout = 30 * time.Second
		if mutate != nil {
			mutate(c)
		}
	}), connectors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// writeAll writes pts in batches of the sink's BatchPolicy, as the pipeline does, and
// returns the rejected points.
func writeAll(t testing.TB, s *Sink, pts []telemetry.Point) []connectors.Rejection {
	t.Helper()
	n, _ := s.BatchPolicy()
	var rejected []connectors.Rejection
	for i := 0; i < len(pts); i += n {
		err := s.Write(context.Background(), telemetry.Batch{Points: pts[i:min(i+n, len(pts))]})
		var rej *connectors.RejectedError
		switch {
		case errors.As(err, &rej):
			rejected = append(rejected, rej.Rejected...)
		case err != nil:
			t.Fatalf("Write: %v", err)
		}
	}
	return rejected
}

// fieldCounts returns InfluxQL's count of every field of the measurement.
func fieldCounts(t *testing.T, baseURL, db string) map[string]int64 {
	t.Helper()
	series, err := servicetest.InfluxQL(baseURL, db, `SELECT count(*) FROM "telemetry"`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	if len(series) == 0 {
		return out
	}
	for i, col := range series[0].Columns {
		if f, ok := strings.CutPrefix(col, "count_"); ok {
			out[f] = int64(series[0].Values[0][i].(float64))
		}
	}
	return out
}

// fluxFields runs a Flux query through the package's Querier and returns the points it
// read, by time, as field name to value, with the tags under their names.
func fluxFields(t *testing.T, baseURL, db, filter string) map[int64]map[string]any {
	t.Helper()
	q, err := NewQuerier(testConfig(baseURL, func(c *Config) { c.Bucket = db; c.Timeout = time.Minute }))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	flux := fmt.Sprintf(`from(bucket: "%s/autogen")
  |> range(start: time(v: %d), stop: time(v: %d))
  |> filter(fn: (r) => r._measurement == "telemetry" and %s)`, db, integrationBase-int64(time.Second), integrationBase+int64(time.Second), filter)
	out := map[int64]map[string]any{}
	err = q.Query(context.Background(), flux, func(v map[string]any) error {
		ts := v["_time"].(time.Time).UnixNano()
		if out[ts] == nil {
			out[ts] = map[string]any{}
		}
		for _, tag := range []string{"factory", "line", "machine", "signal"} {
			if tv, ok := v[tag]; ok && tv != nil && tv != "" {
				out[ts][tag] = tv
			}
		}
		out[ts][v["_field"].(string)] = v["_value"]
		return nil
	})
	if err != nil {
		t.Fatalf("Flux query: %v", err)
	}
	return out
}

func TestIntegrationWriteAndReadBack(t *testing.T) {
	baseURL, db := sharedInflux(t)
	s := integrationSink(t, baseURL, db, nil)

	pts := genPoints(50_000, 50, 8, integrationBase)
	special := []telemetry.Point{
		{Factory: "plant one", Line: "a,b", Machine: "oven 2", Signal: "zone,a=1", SourceTime: integrationBase + 1, ServerTime: integrationBase + 7,
			Value: telemetry.String("door \"open\"\\check\nsecond line, a=b"), Quality: telemetry.Quality{Level: telemetry.Bad, Code: 0x80340000}},
		{Machine: "oven 2", Signal: "tiny", SourceTime: integrationBase + 2, Value: telemetry.Float(5e-324)},
		{Machine: "oven 2", Signal: "integral", SourceTime: integrationBase + 3, Value: telemetry.Float(5)},
		{Machine: "oven 2", Signal: "min", SourceTime: integrationBase + 4, Value: telemetry.Int(-1 << 63)},
	}
	pts = append(pts, special...)
	if rej := writeAll(t, s, pts); len(rej) != 0 {
		t.Fatalf("%d points rejected, first: %+v", len(rej), rej[0])
	}

	// Every point is stored, each field as the layout says.
	want := map[string]int64{}
	for i := range pts {
		for f := range expectLine("telemetry", &pts[i]).Fields {
			want[f]++
		}
	}
	if got := fieldCounts(t, baseURL, db); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("InfluxDB counts %v; want %v", got, want)
	}

	// The escaped names, the string with quotes, backslash and line break, and the extreme
	// numbers read back exactly through Flux.
	got := fluxFields(t, baseURL, db, `r.machine == "oven 2"`)
	for i := range special {
		p := &special[i]
		want := map[string]any{}
		for _, tag := range [][2]string{{"factory", p.Factory}, {"line", p.Line}, {"machine", p.Machine}, {"signal", p.Signal}} {
			if tag[1] != "" {
				want[tag[0]] = tag[1]
			}
		}
		for f, v := range expectLine("telemetry", p).Fields {
			want[f] = v
		}
		if fmt.Sprintf("%#v", got[p.Time()]) != fmt.Sprintf("%#v", want) {
			t.Errorf("point %d reads back through Flux as\n %#v\nwant\n %#v", i, got[p.Time()], want)
		}
	}

	// One narrow Flux query over a whole machine (one machine, 2 s) reads every point.
	machine := fluxFields(t, baseURL, db, `r.machine == "m007"`)
	n := 0
	for i := range pts {
		if pts[i].Machine == "m007" {
			n++
			if fmt.Sprint(machine[pts[i].Time()]["quality"]) != pts[i].Quality.Level.String() {
				t.Fatalf("point %d of m007 reads back as %v", i, machine[pts[i].Time()])
			}
		}
	}
	if len(machine) != n {
		t.Errorf("Flux read %d points of m007; want %d", len(machine), n)
	}
}

func TestIntegrationFieldTypeConflict(t *testing.T) {
	baseURL, db := sharedInflux(t)
	// Another writer made "value" an integer field of the measurement.
	body := fmt.Sprintf("telemetry,machine=other,signal=x value=1i %d\n", integrationBase)
	resp, err := http.Post(baseURL+"/write?precision=ns&db="+db, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("seeding write: %s", resp.Status)
	}

	s := integrationSink(t, baseURL, db, func(c *Config) { c.BatchPoints = 1000; c.Writers = 2; c.Gzip = true })
	pts := genPoints(4000, 10, 4, integrationBase+int64(time.Millisecond))
	rejected := writeAll(t, s, pts)
	t.Logf("requests: %v answered 204, %v answered 400", testutil.ToFloat64(s.m.requests.WithLabelValues("204")), testutil.ToFloat64(s.m.requests.WithLabelValues("400")))
	want := map[string]int64{"value": 1} // the seeded point
	floats := 0
	for i := range pts {
		if pts[i].Value.Kind == telemetry.KindFloat {
			floats++
			continue
		}
		for f := range expectLine("telemetry", &pts[i]).Fields {
			want[f]++
		}
	}
	if len(rejected) != floats {
		t.Fatalf("%d points rejected; want the %d float points", len(rejected), floats)
	}
	for _, r := range rejected {
		if r.Point.Value.Kind != telemetry.KindFloat || r.Class != ClassTypeConflict || !strings.Contains(r.Reason, `input field "value" on measurement "telemetry" is type float, already exists as type integer`) {
			t.Fatalf("rejection %s %q of a %s point", r.Class, r.Reason, r.Point.Value.Kind)
		}
	}
	if got := fieldCounts(t, baseURL, db); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("InfluxDB counts %v; want %v (every point but the conflicting ones stored)", got, want)
	}
}

func TestIntegrationMissingDatabase(t *testing.T) {
	servicetest.Require(t, "InfluxDB")
	s, err := New("it", testConfig(servicetest.InfluxURL(), func(c *Config) { c.Bucket = servicetest.UniqueName("missing") + "/autogen" }), connectors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	err = s.Connect(context.Background())
	if err == nil || !strings.Contains(err.Error(), "CREATE DATABASE") || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Connect to a missing database = %v; want a 404 that says to CREATE DATABASE", err)
	}
}

func TestIntegrationStoppedServer(t *testing.T) {
	servicetest.Require(t, "InfluxDB")
	d := servicetest.StartInfluxd(t, "mw")
	s := integrationSink(t, d.URL, "mw", nil)
	pts := genPoints(1000, 5, 4, integrationBase)
	if rej := writeAll(t, s, pts); len(rej) != 0 {
		t.Fatalf("rejected %+v", rej[0])
	}
	d.Stop()

	err := s.Write(context.Background(), telemetry.Batch{Points: pts})
	var we *WriteError
	if !errors.Is(err, connectors.ErrNotConnected) || !errors.As(err, &we) || !strings.Contains(err.Error(), d.URL) {
		t.Fatalf("Write to a stopped server = %v; want a *WriteError naming %s that wraps ErrNotConnected", err, d.URL)
	}
	if err := s.Connect(context.Background()); err == nil || !strings.Contains(err.Error(), d.URL) || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("Connect to a stopped server = %v; want an error naming %s", err, d.URL)
	}

	d.Start()
	if err := s.Connect(context.Background()); err != nil {
		t.Fatalf("Connect after the restart: %v", err)
	}
	if rej := writeAll(t, s, pts); len(rej) != 0 {
		t.Fatalf("rejected %+v", rej[0])
	}
}

// TestIntegrationAuthentication checks the 1.8 form of the token, "user:password", and the
// hints of 401 and 403.
func TestIntegrationAuthentication(t *testing.T) {
	servicetest.Require(t, "InfluxDB")
	d := servicetest.StartInfluxd(t, "mw")
	d.Stop()
	t.Setenv("INFLUXDB_HTTP_AUTH_ENABLED", "true") // influxd reads config overrides from its environment
	d.Start()
	admin := strings.Replace(d.URL, "http://", "http://admin:admin-pw@", 1) // basic auth
	for _, q := range []string{
		`CREATE USER "admin" WITH PASSWORD 'admin-pw' WITH ALL PRIVILEGES`,
		`CREATE USER "writer" WITH PASSWORD 'writer-pw'`,
		`GRANT WRITE ON "mw" TO "writer"`,
		`CREATE USER "reader" WITH PASSWORD 'reader-pw'`,
		`GRANT READ ON "mw" TO "reader"`,
	} {
		if _, err := servicetest.InfluxQL(admin, "", q); err != nil {
			t.Fatal(err)
		}
	}

	for _, tt := range []struct {
		name, token, want string
	}{
		{"no token", "", "check the token"},
		{"wrong password", "writer:nope", "check the token"},
		{"read-only user", "reader:reader-pw", `may write to bucket "mw"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New("it", testConfig(d.URL, func(c *Config) { c.Bucket = "mw"; c.Token = config.NewSecret(tt.token) }), connectors.Env{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close(context.Background())
			err = s.Connect(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Connect = %v; want an error saying %q", err, tt.want)
			}
			t.Logf("Connect: %v", err)
		})
	}

	s := integrationSink(t, d.URL, "mw", func(c *Config) { c.Token = config.NewSecret("writer:writer-pw") })
	if rej := writeAll(t, s, genPoints(500, 5, 4, integrationBase)); len(rej) != 0 {
		t.Fatalf("rejected %+v", rej[0])
	}
	if n, err := servicetest.Count(admin, "mw", `SELECT count("quality") FROM "telemetry"`); err != nil || n != 500 {
		t.Fatalf("count after an authenticated write: %d, %v; want 500", n, err)
	}
}
