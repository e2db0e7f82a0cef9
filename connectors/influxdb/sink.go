package influxdb

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	influxhttp "github.com/influxdata/influxdb-client-go/v2/api/http"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// Sink writes telemetry to InfluxDB. It implements connectors.Sink and connectors.Batcher.
type Sink struct {
	name string
	cfg  Config
	log  *slog.Logger
	enc  *Encoder
	m    *metrics

	mu   sync.Mutex
	conn *conn // nil before Connect and after Close

	writeMu sync.Mutex // serializes Write; guards shards
	shards  []*shard
}

var (
	_ connectors.Sink    = (*Sink)(nil)
	_ connectors.Batcher = (*Sink)(nil)
)

// conn is one configured client: a Connect builds a new one (so that rotated TLS files are
// read again), Close drops it.
type conn struct {
	client    influxdb2.Client
	svc       influxhttp.Service
	transport *http.Transport
	writeURL  string
	pingURL   string
}

func (c *conn) close() {
	c.client.Close()
	c.transport.CloseIdleConnections()
}

// New returns a sink named name. It validates cfg (defaults must already be set, see
// Config.SetDefaults) and registers the sink's metrics; it does no I/O.
func New(name string, cfg Config, env connectors.Env) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("influxdb sink %q: %w", name, err)
	}
	env = env.WithDefaults()
	enc, err := NewEncoder(cfg.Measurement)
	if err != nil {
		return nil, fmt.Errorf("influxdb sink %q: %w", name, err) // unreachable after Validate
	}
	m, err := newMetrics(env.Registerer, name)
	if err != nil {
		return nil, fmt.Errorf("influxdb sink %q: metrics: %w", name, err)
	}
	s := &Sink{name: name, cfg: cfg, log: env.Logger, enc: enc, m: m}
	s.shards = make([]*shard, cfg.Writers)
	for i := range s.shards {
		s.shards[i] = &shard{s: s}
	}
	return s, nil
}

// BatchPolicy implements connectors.Batcher: a batch fills every writer's request once.
func (s *Sink) BatchPolicy() (maxPoints int, linger time.Duration) {
	return s.cfg.BatchPoints * s.cfg.Writers, s.cfg.FlushInterval
}

// Connect checks that the server answers /ping, then that the token may write to the bucket
// (an empty write: on InfluxDB 1.8 this also checks that the database exists). An error
// names the URL and says what to check; the pipeline retries it with backoff.
func (s *Sink) Connect(ctx context.Context) error {
	tlsCfg, err := s.cfg.TLS.Load()
	if err != nil {
		return fmt.Errorf("influxdb sink %q: %w", s.name, err)
	}
	if tlsCfg != nil && tlsCfg.InsecureSkipVerify {
		s.log.Warn("tls certificate verification is off (insecure_skip_verify); use it only in a lab", "url", s.cfg.URL)
	}
	c := s.newConn(tlsCfg)
	if err := s.ping(ctx, c); err != nil {
		c.close()
		return err
	}
	if err := s.probe(ctx, c); err != nil {
		c.close()
		return err
	}
	s.mu.Lock()
	old := s.conn
	s.conn = c
	s.mu.Unlock()
	if old != nil {
		old.close()
	}
	return nil
}

// Close drops the connection. Write holds no points between calls, so there is nothing to
// flush; a Write in flight finishes on the old connection.
func (s *Sink) Close(context.Context) error {
	s.mu.Lock()
	c := s.conn
	s.conn = nil
	s.mu.Unlock()
	if c != nil {
		c.close()
	}
	return nil
}

func (s *Sink) newConn(tlsCfg *tls.Config) *conn {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: s.cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   s.cfg.Timeout,
		ForceAttemptHTTP2:     tlsCfg != nil,
		MaxIdleConns:          2 * s.cfg.Writers,
		MaxIdleConnsPerHost:   2 * s.cfg.Writers,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	// Request timeouts come from contexts (Config.Timeout per request), so the http.Client
	// has none of its own.
	opts := influxdb2.DefaultOptions().
		SetHTTPClient(&http.Client{Transport: tr}).
		SetApplicationName("millwright")
	client := influxdb2.NewClientWithOptions(s.cfg.URL, s.cfg.Token.Value(), opts)
	svc := client.HTTPService()
	q := url.Values{}
	if s.cfg.Org != "" {
		q.Set("org", s.cfg.Org)
	}
	q.Set("bucket", s.cfg.Bucket)
	q.Set("precision", "ns")
	return &conn{
		client:    client,
		svc:       svc,
		transport: tr,
		writeURL:  svc.ServerAPIURL() + "write?" + q.Encode(),
		pingURL:   svc.ServerURL() + "ping",
	}
}

func (s *Sink) ping(ctx context.Context, c *conn) error {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, c.pingURL, nil)
	if err != nil {
		return fmt.Errorf("influxdb sink %q: ping %s: %w", s.name, c.pingURL, err)
	}
	start := time.Now()
	code := 0
	he := c.svc.DoHTTPRequest(req, nil, drain(&code))
	if he != nil {
		code = he.StatusCode
	}
	s.m.request(code, code == 0 && rctx.Err() != nil && ctx.Err() == nil, time.Since(start), 0)
	switch {
	case he == nil:
		return nil
	case he.StatusCode == 0:
		return fmt.Errorf("influxdb sink %q: cannot reach InfluxDB: %w", s.name, classifyTransport(ctx, "ping", s.cfg.URL, he.Err))
	default:
		we := &WriteError{Op: "ping", URL: s.cfg.URL, StatusCode: he.StatusCode, Message: serverMessage(he), retryAfter: retryAfter(he),
			Hint: "check that url points to an InfluxDB server (1.8 or later)"}
		return fmt.Errorf("influxdb sink %q: %w", s.name, we)
	}
}

// probe writes nothing to the bucket: InfluxDB checks the token and the bucket (or 1.8
// database) before it reads the body. An empty body is fine for 1.8 (204); 2.x may answer
// 400 "writing requires points", which also means the checks passed.
func (s *Sink) probe(ctx context.Context, c *conn) error {
	he, err := s.post(ctx, c, nil, nil)
	if err != nil {
		return fmt.Errorf("influxdb sink %q: %w", s.name, err)
	}
	if he == nil {
		return nil
	}
	switch he.StatusCode {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return nil
	}
	return fmt.Errorf("influxdb sink %q: %w", s.name, s.statusError("write", he))
}

// post sends one write request with body (compressed with sh's buffers when configured;
// sh may be nil for an empty body). It returns the server's error response, or an error when
// no response arrived (a *WriteError, or ctx's error when ctx ended).
func (s *Sink) post(ctx context.Context, c *conn, sh *shard, body []byte) (*influxhttp.Error, error) {
	payload := body
	gz := s.cfg.Gzip && len(body) > 0
	if gz {
		payload = sh.compress(body)
	}
	rb := &requestBody{b: payload}
	defer rb.detach()
	var rd io.Reader = http.NoBody
	if len(payload) > 0 {
		rd = rb.reader()
	}
	setHeaders := func(req *http.Request) {
		req.ContentLength = int64(len(payload))
		if len(payload) > 0 {
			req.GetBody = func() (io.ReadCloser, error) { return rb.reader(), nil }
		}
		// Writes are idempotent: let net/http resend a request that failed on a reused
		// connection the server had closed (a nil value marks it without sending a header).
		req.Header["Idempotency-Key"] = nil
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	start := time.Now()
	code := 0
	he := c.svc.DoPostRequest(rctx, c.writeURL, rd, setHeaders, drain(&code))
	if he != nil {
		code = he.StatusCode
	}
	s.m.request(code, code == 0 && rctx.Err() != nil && ctx.Err() == nil, time.Since(start), len(payload))
	switch {
	case he == nil:
		return nil, nil
	case he.StatusCode == 0:
		return nil, classifyTransport(ctx, "write", s.cfg.URL, he.Err)
	}
	return he, nil
}

// drain returns a response callback that records the status and reads and closes the body
// (the client library leaves a successful response's body to its callback).
func drain(code *int) influxhttp.ResponseCallback {
	return func(resp *http.Response) error {
		*code = resp.StatusCode
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		return nil
	}
}

// Write stores every point of b, see connectors.Sink and the package documentation for the
// errors it returns.
func (s *Sink) Write(ctx context.Context, b telemetry.Batch) error {
	if len(b.Points) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return fmt.Errorf("influxdb sink %q: write before Connect or after Close: %w", s.name, connectors.ErrNotConnected)
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	n := uint64(len(s.shards))
	for _, sh := range s.shards {
		sh.idx = sh.idx[:0]
	}
	for i := range b.Points {
		sh := s.shards[b.Points[i].SeriesHash()%n]
		sh.idx = append(sh.idx, int32(i))
	}
	var active []*shard
	for _, sh := range s.shards {
		if len(sh.idx) > 0 {
			active = append(active, sh)
		}
	}

	var (
		errMu    sync.Mutex
		firstErr error
	)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	run := func(sh *shard) {
		if err := sh.run(wctx, c, b.Points); err != nil {
			errMu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			errMu.Unlock()
			cancel() // the batch is retried as a whole; stop the other shards early
		}
	}
	if len(active) == 1 {
		run(active[0])
	} else {
		var wg sync.WaitGroup
		for _, sh := range active {
			wg.Go(func() { run(sh) })
		}
		wg.Wait()
	}

	if err := ctx.Err(); err != nil {
		return fmt.Errorf("influxdb sink %q: write: %w", s.name, err)
	}
	if firstErr != nil {
		return firstErr
	}
	var rejected []rejection
	for _, sh := range active {
		rejected = append(rejected, sh.rejected...)
	}
	if len(rejected) == 0 {
		return nil
	}
	slices.SortFunc(rejected, func(a, b rejection) int { return int(a.index - b.index) })
	out := make([]connectors.Rejection, len(rejected))
	for i, r := range rejected {
		out[i] = connectors.Rejection{Point: b.Points[r.index], Class: r.class, Reason: r.reason}
	}
	s.log.Debug("influxdb refused points", "points", len(out), "first_reason", out[0].Reason)
	return &connectors.RejectedError{Rejected: out}
}
