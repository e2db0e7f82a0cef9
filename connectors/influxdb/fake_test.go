package influxdb

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeInflux imitates the write path of InfluxDB 1.8's /api/v2/write: database lookup, token
// check, body size limit, gzip, line parsing (with the test oracle), field types per
// measurement and partial writes with its exact messages, which travel in the
// X-Influxdb-Error header as on 1.8. Stored points are keyed by series and time, so
// rewriting is idempotent as in InfluxDB.
//
// With v2 set it answers as InfluxDB 2.x does instead: JSON errors {"code","message"}, an
// org that must exist, 400 for an empty body, 422 for partial writes, and a parse error
// fails the whole request.
type fakeInflux struct {
	srv *httptest.Server

	mu         sync.Mutex
	dbs        map[string]bool
	v2         bool
	org        string            // with v2, the only organization
	token      string            // when set, "Token <token>" is required
	maxBody    int               // 413 above this many bytes; 0 for no limit
	fieldTypes map[string]string // measurement + "\x00" + field -> float, integer, boolean, string
	stored     map[string]parsedLine
	times      map[string][]int64 // series -> times in the order they were first stored
	requests   int
	bodies     int // requests with a non-empty body
	gzipped    int

	// hook, when set, may answer a request itself (and return true).
	hook func(w http.ResponseWriter, r *http.Request) bool
	// refuse, when set, gives the reason a parsed point is dropped ("" to keep it).
	refuse func(pl *parsedLine) string
	// unparsable, when set, makes the server fail to parse the lines it returns true for.
	unparsable func(line string) bool
}

func newFakeInflux(t *testing.T, dbs ...string) *fakeInflux {
	t.Helper()
	f := newFake(dbs)
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// newFakeInfluxTLS is newFakeInflux serving HTTPS with httptest's self-signed certificate.
func newFakeInfluxTLS(t *testing.T, dbs ...string) *fakeInflux {
	t.Helper()
	f := newFake(dbs)
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failing handshakes are the test
	t.Cleanup(f.srv.Close)
	return f
}

func newFake(dbs []string) *fakeInflux {
	f := &fakeInflux{dbs: map[string]bool{}, fieldTypes: map[string]string{}, stored: map[string]parsedLine{}, times: map[string][]int64{}}
	for _, db := range dbs {
		f.dbs[db] = true
	}
	return f
}

func (f *fakeInflux) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests++
	hook := f.hook
	f.mu.Unlock()
	if hook != nil && hook(w, r) {
		return
	}
	switch r.URL.Path {
	case "/ping":
		w.WriteHeader(http.StatusNoContent)
	case "/api/v2/write":
		f.write(w, r)
	default:
		http.NotFound(w, r)
	}
}

// influxError answers like InfluxDB 1.8's httpError, or with f.v2 like 2.x.
func (f *fakeInflux) influxError(w http.ResponseWriter, msg string, code int) {
	w.Header().Set("Content-Type", "application/json")
	body := map[string]string{"error": msg}
	if f.v2 {
		body = map[string]string{"code": strings.ToLower(http.StatusText(code)), "message": msg}
	} else {
		w.Header().Set("X-Influxdb-Error", msg)
	}
	w.WriteHeader(code)
	b, _ := json.Marshal(body)
	_, _ = w.Write(b)
}

func (f *fakeInflux) write(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.token != "" && r.Header.Get("Authorization") != "Token "+f.token {
		f.influxError(w, "authorization failed", http.StatusUnauthorized)
		return
	}
	if f.v2 && r.URL.Query().Get("org") != f.org {
		f.influxError(w, fmt.Sprintf("organization name %q not found", r.URL.Query().Get("org")), http.StatusNotFound)
		return
	}
	db, _, _ := strings.Cut(r.URL.Query().Get("bucket"), "/")
	if f.v2 {
		db = r.URL.Query().Get("bucket")
	}
	if db == "" {
		f.influxError(w, "database is required", http.StatusBadRequest)
		return
	}
	if !f.dbs[db] {
		msg := fmt.Sprintf("database not found: %q", db)
		if f.v2 {
			msg = fmt.Sprintf("bucket %q not found", db)
		}
		f.influxError(w, msg, http.StatusNotFound)
		return
	}
	if r.URL.Query().Get("precision") != "ns" {
		f.influxError(w, "precision must be ns in these tests", http.StatusBadRequest)
		return
	}
	if f.maxBody > 0 && r.ContentLength > int64(f.maxBody) {
		f.influxError(w, http.StatusText(http.StatusRequestEntityTooLarge), http.StatusRequestEntityTooLarge)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			f.influxError(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
		f.gzipped++
	}
	data, err := io.ReadAll(body)
	if err != nil {
		f.influxError(w, err.Error(), http.StatusBadRequest)
		return
	}
	if len(data) > 0 {
		f.bodies++
	} else if f.v2 {
		f.influxError(w, "writing requires points", http.StatusBadRequest)
		return
	}
	lines, failed := parseLP(data)
	if f.unparsable != nil {
		kept := lines[:0]
		for _, l := range lines {
			if f.unparsable(l.Raw) {
				failed = append(failed, lineError{Line: l.Raw, Reason: "invalid field format"})
				continue
			}
			kept = append(kept, l)
		}
		lines = kept
	}
	var parseErr string
	if len(failed) > 0 {
		msgs := make([]string, len(failed))
		for i, fl := range failed {
			msgs[i] = fmt.Sprintf("unable to parse '%s': %s", fl.Line, fl.Reason)
		}
		parseErr = strings.Join(msgs, "\n")
		if len(lines) == 0 || f.v2 {
			f.influxError(w, parseErr, http.StatusBadRequest)
			return
		}
	}
	dropped, reason := 0, ""
	for i := range lines {
		l := &lines[i]
		if why := f.refusal(l); why != "" {
			dropped++
			if reason == "" {
				reason = why
			}
			continue
		}
		for k, v := range l.Fields {
			f.fieldTypes[l.Measurement+"\x00"+k] = fieldType(v)
		}
		series := seriesKey(l)
		key := fmt.Sprintf("%s %d", series, l.Time)
		if _, ok := f.stored[key]; !ok {
			f.times[series] = append(f.times[series], l.Time)
		}
		l.Raw = ""
		f.stored[key] = *l
	}
	switch {
	case dropped > 0 && f.v2:
		f.influxError(w, fmt.Sprintf("failure writing points to database: partial write: %s dropped=%d for database: 0a1b2c3d for retention policy: autogen", reason, dropped), http.StatusUnprocessableEntity)
	case dropped > 0:
		f.influxError(w, fmt.Sprintf("partial write: %s dropped=%d", reason, dropped), http.StatusBadRequest)
	case parseErr != "":
		f.influxError(w, fmt.Sprintf("partial write: %s dropped=0", parseErr), http.StatusBadRequest)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// refusal returns why InfluxDB would drop l: the refuse hook, or a field type conflict.
func (f *fakeInflux) refusal(l *parsedLine) string {
	if f.refuse != nil {
		if why := f.refuse(l); why != "" {
			return why
		}
	}
	for _, k := range l.FieldOrder {
		have, ok := f.fieldTypes[l.Measurement+"\x00"+k]
		if got := fieldType(l.Fields[k]); ok && have != got {
			return fmt.Sprintf("field type conflict: input field %q on measurement %q is type %s, already exists as type %s", k, l.Measurement, got, have)
		}
	}
	return ""
}

func fieldType(v any) string {
	switch v.(type) {
	case float64:
		return "float"
	case int64:
		return "integer"
	case bool:
		return "boolean"
	}
	return "string"
}

func seriesKey(l *parsedLine) string {
	var b strings.Builder
	b.WriteString(l.Measurement)
	for _, t := range l.Tags {
		b.WriteString("," + t[0] + "=" + t[1])
	}
	return b.String()
}

func (f *fakeInflux) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.stored)
}

func (f *fakeInflux) requestCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

func (f *fakeInflux) set(fn func(f *fakeInflux)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}
