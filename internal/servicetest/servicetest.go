// Package servicetest gives integration tests the real services that `make test` starts: their addresses, a skip when they are absent, InfluxDB administration, and private InfluxDB and node-opcua instances a test may stop and restart.
//
// Integration tests are always compiled and gated at run time by MILLWRIGHT_INTEGRATION,
// which `make test` sets (from .services/env) after deploy/services.sh has started the
// services.
package servicetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Require skips the test unless the integration services were started; service names what
// the test needs, for the skip message.
func Require(t testing.TB, service string) {
	t.Helper()
	if os.Getenv("MILLWRIGHT_INTEGRATION") == "" {
		t.Skipf("needs the real %s: set MILLWRIGHT_INTEGRATION=1 after deploy/services.sh up (make test does both)", service)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// MQTTURL is the broker started by deploy/services.sh.
func MQTTURL() string { return env("MILLWRIGHT_MQTT_URL", "tcp://127.0.0.1:1883") }

// InfluxURL is the InfluxDB started by deploy/services.sh.
func InfluxURL() string { return env("MILLWRIGHT_INFLUX_URL", "http://127.0.0.1:8086") }

var seq atomic.Int64

// UniqueName returns a name unique to this test run, usable as a database, topic level or
// client id ("prefix_<pid>_<n>").
func UniqueName(prefix string) string {
	return fmt.Sprintf("%s_%d_%d", prefix, os.Getpid(), seq.Add(1))
}

// InfluxQL runs one InfluxQL statement on the server at base and returns the decoded
// series of the first statement's result.
func InfluxQL(base, db, q string) ([]Series, error) {
	form := url.Values{"q": {q}}
	if db != "" {
		form.Set("db", db)
	}
	resp, err := http.PostForm(strings.TrimRight(base, "/")+"/query", form)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("influxql %q: HTTP %d: %s", q, resp.StatusCode, body)
	}
	var r struct {
		Results []struct {
			Series []Series `json:"series"`
			Error  string   `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("influxql %q: %w", q, err)
	}
	if len(r.Results) == 0 {
		return nil, nil
	}
	if r.Results[0].Error != "" {
		return nil, fmt.Errorf("influxql %q: %s", q, r.Results[0].Error)
	}
	return r.Results[0].Series, nil
}

// Series is one series of an InfluxQL result.
type Series struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

// Database creates a database unique to the test on the server at base and drops it when
// the test ends. It returns the database's name.
func Database(t testing.TB, base string) string {
	t.Helper()
	db := UniqueName("test")
	if _, err := InfluxQL(base, "", "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = InfluxQL(base, "", "DROP DATABASE "+db) })
	return db
}

// Count returns the result of an InfluxQL "SELECT count(...)" (0 when there are no rows).
func Count(base, db, q string) (int64, error) {
	series, err := InfluxQL(base, db, q)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, s := range series {
		for _, row := range s.Values {
			if len(row) > 1 {
				if f, ok := row[1].(float64); ok {
					total += int64(f)
				}
			}
		}
	}
	return total, nil
}

// WaitCount polls Count until it returns want or timeout passes, and returns the last count.
func WaitCount(t testing.TB, base, db, q string, want int64, timeout time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var n int64
	for {
		var err error
		n, err = Count(base, db, q)
		if err == nil && n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
