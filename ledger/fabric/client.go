package fabric

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hyperledger/fabric-gateway/pkg/client"
	"github.com/hyperledger/fabric-gateway/pkg/identity"
	gwproto "github.com/hyperledger/fabric-protos-go-apiv2/gateway"
	"github.com/hyperledger/fabric-protos-go-apiv2/peer"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/chaincode/wire"
)

// ErrKeyNotRegistered: the chaincode does not know the record's actor key and the client
// holds no signer to register it (see WithActors). Transient: once the key is registered,
// the same record anchors.
var ErrKeyNotRegistered = errors.New("actor key not registered on the ledger")

// ErrClock: an endorsing peer refused the transaction because its time, the client's
// clock, is further from the peer's than the chaincode's tolerance (one of the two clocks
// is wrong). Transient: once they agree, the same record anchors.
var ErrClock = errors.New("the client's clock is off the peers'")

// Option customises a Client.
type Option func(*Client)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// WithRegisterer sets where the client's metrics are registered (default: nowhere).
func WithRegisterer(r prometheus.Registerer) Option { return func(c *Client) { c.reg = r } }

// WithActors lets the client register the public keys of these signers on the ledger the
// first time the chaincode reports one of them unknown. Their org must be the client's
// MSP id.
func WithActors(signers ...*ledger.Signer) Option {
	return func(c *Client) {
		for _, s := range signers {
			c.actors[s.Actor().KeyID] = s
		}
	}
}

// Client is the Fabric backend of the ledger: it implements ledger.Querier against the
// lineage chaincode through the Fabric Gateway service of one peer. Safe for concurrent use.
type Client struct {
	cfg      Config
	log      *slog.Logger
	reg      prometheus.Registerer
	conn     *grpc.ClientConn
	gw       *client.Gateway
	contract *client.Contract
	network  *client.Network
	m        *metrics

	mu     sync.Mutex
	actors map[string]*ledger.Signer // by key id
}

var _ ledger.Querier = (*Client)(nil)

// Open validates cfg, reads the identity and TLS files it names and prepares the gRPC
// connection to the peer. It does no network I/O: the connection is made by the first
// call, and a peer that is down makes calls fail with transient errors.
func Open(cfg Config, opts ...Option) (*Client, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("fabric: %w", err)
	}
	c := &Client{cfg: cfg, log: slog.New(slog.DiscardHandler), actors: map[string]*ledger.Signer{}}
	for _, o := range opts {
		o(c)
	}
	for id, s := range c.actors {
		if s.Actor().Org != cfg.MSPID {
			return nil, fmt.Errorf("fabric: actor %s (key id %s) is of org %q, expected the client's msp_id %q", s.Actor().Name, id, s.Actor().Org, cfg.MSPID)
		}
	}
	var err error
	if c.m, err = newMetrics(c.reg); err != nil {
		return nil, err
	}
	caPEM, err := readPEM("tls_ca", cfg.TLSCA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("fabric tls_ca %s: no PEM certificate found", cfg.TLSCA)
	}
	certPEM, err := readPEM("cert", cfg.Cert)
	if err != nil {
		return nil, err
	}
	cert, err := identity.CertificateFromPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("fabric cert %s: %w", cfg.Cert, err)
	}
	id, err := identity.NewX509Identity(cfg.MSPID, cert)
	if err != nil {
		return nil, fmt.Errorf("fabric cert %s: %w", cfg.Cert, err)
	}
	sign, err := signer(cfg)
	if err != nil {
		return nil, err
	}
	serverName := cfg.ServerName
	if serverName == "" {
		serverName, _, _ = net.SplitHostPort(cfg.Endpoint)
	}
	c.conn, err = grpc.NewClient(cfg.Endpoint, grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(pool, serverName)))
	if err != nil {
		return nil, fmt.Errorf("fabric endpoint %s: %w", cfg.Endpoint, err)
	}
	c.gw, err = client.Connect(id, client.WithSign(sign), client.WithClientConnection(c.conn),
		client.WithEvaluateTimeout(cfg.EvaluateTimeout), client.WithEndorseTimeout(cfg.EndorseTimeout),
		client.WithSubmitTimeout(cfg.SubmitTimeout), client.WithCommitStatusTimeout(cfg.CommitStatusTimeout))
	if err != nil {
		_ = c.conn.Close()
		return nil, fmt.Errorf("fabric gateway: %w", err)
	}
	c.network = c.gw.GetNetwork(cfg.Channel)
	c.contract = c.network.GetContract(cfg.Chaincode)
	return c, nil
}

// readPEM reads the PEM file of configuration field at path.
func readPEM(field, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("fabric %s: %w", field, err)
	}
	return b, nil
}

// signer returns the signing function of cfg.Key, the client identity's private key.
func signer(cfg Config) (identity.Sign, error) {
	keyPEM, err := readPEM("key", cfg.Key)
	if err != nil {
		return nil, err
	}
	key, err := identity.PrivateKeyFromPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("fabric key %s: %w", cfg.Key, err)
	}
	sign, err := identity.NewPrivateKeySign(key)
	if err != nil {
		return nil, fmt.Errorf("fabric key %s: %w", cfg.Key, err)
	}
	return sign, nil
}

// Close releases the connection to the peer.
func (c *Client) Close() error {
	err := c.gw.Close()
	return errors.Join(err, c.conn.Close())
}

// MSPID returns the organisation the client acts for.
func (c *Client) MSPID() string { return c.cfg.MSPID }

// classify turns a Fabric error into the ledger's errors: the chaincode's tags travel in
// the gRPC status details of the peers that refused.
func classify(op string, err error) error {
	msg := err.Error()
	if st, ok := status.FromError(err); ok {
		var b strings.Builder
		b.WriteString(st.Message())
		for _, d := range st.Details() {
			if ed, ok := d.(*gwproto.ErrorDetail); ok {
				fmt.Fprintf(&b, "; %s (%s): %s", ed.GetAddress(), ed.GetMspId(), ed.GetMessage())
			}
		}
		msg = b.String()
	}
	switch wire.Tagged(msg) {
	case wire.TagRejected:
		return fmt.Errorf("%s: %w: %s", op, ledger.ErrRejected, msg)
	case wire.TagConflict:
		return fmt.Errorf("%s: %w: %s", op, ledger.ErrConflict, msg)
	case wire.TagNotFound:
		return fmt.Errorf("%s: %w: %s", op, ledger.ErrNotFound, msg)
	case wire.TagUnknownActor:
		return fmt.Errorf("%s: %w: %s", op, ErrKeyNotRegistered, msg)
	case wire.TagClock:
		return fmt.Errorf("%s: %w: %s", op, ErrClock, msg)
	}
	return fmt.Errorf("%s: %s", op, msg)
}

// Anchor implements ledger.Backend. It endorses the record first: a record anchored
// before with the same hash returns nil there, without ordering a transaction. An
// unknown actor key of a signer given WithActors is registered, then the record is tried
// again. A transaction that fails validation (an MVCC conflict with a concurrent write of
// the same id or site) is a transient error: the retry sees the committed state.
func (c *Client) Anchor(ctx context.Context, rec ledger.Record) error {
	start := time.Now()
	res, err := c.anchor(ctx, rec)
	c.m.observe(res, err, time.Since(start))
	return err
}

func (c *Client) anchor(ctx context.Context, rec ledger.Record) (string, error) {
	op := "fabric anchor record " + rec.Header.ID
	payload, err := ledger.MarshalRecord(rec)
	if err != nil {
		return "", fmt.Errorf("%s: %w: %w", op, ledger.ErrRejected, err)
	}
	for attempt := 0; ; attempt++ {
		res, err := c.submit(ctx, wire.FnAnchor, string(payload))
		if errors.Is(err, ErrKeyNotRegistered) && attempt == 0 {
			if s := c.actor(rec.Header.Actor.KeyID); s != nil {
				if err := c.RegisterKey(ctx, s.Actor().Name, s.Public()); err != nil {
					return "", err
				}
				continue
			}
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", op, err)
		}
		var ar wire.AnchorResult
		if err := json.Unmarshal(res, &ar); err != nil {
			return "", fmt.Errorf("%s: chaincode result %.100q: %w", op, res, err)
		}
		if want, err := ledger.Hash(rec); err == nil && ar.Hash != want {
			return "", fmt.Errorf("%s: the chaincode hashed it to %s, expected %s", op, ar.Hash, want)
		}
		if ar.Existed {
			return "existed", nil
		}
		return "anchored", nil
	}
}

func (c *Client) actor(keyID string) *ledger.Signer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.actors[keyID]
}

// submit endorses fn(args); a result saying the write was a no-op (AnchorResult.Existed)
// is returned without ordering; otherwise the transaction is submitted and its commit
// status awaited.
func (c *Client) submit(ctx context.Context, fn string, args ...string) ([]byte, error) {
	prop, err := c.contract.NewProposal(fn, client.WithArguments(args...))
	if err != nil {
		return nil, fmt.Errorf("proposal: %w", err)
	}
	// The ...WithContext calls ignore the gateway's default timeouts: apply them here, so
	// that a peer that hangs makes a transient error, not a stuck outbox.
	ectx, cancel := context.WithTimeout(ctx, c.cfg.EndorseTimeout)
	tx, err := prop.EndorseWithContext(ectx)
	cancel()
	if err != nil {
		return nil, classify("endorse", err)
	}
	if fn == wire.FnAnchor {
		var ar wire.AnchorResult
		if json.Unmarshal(tx.Result(), &ar) == nil && ar.Existed {
			return tx.Result(), nil
		}
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.SubmitTimeout)
	commit, err := tx.SubmitWithContext(sctx)
	cancel()
	if err != nil {
		return nil, classify("submit", err)
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CommitStatusTimeout)
	st, err := commit.StatusWithContext(cctx)
	cancel()
	if err != nil {
		return nil, classify("commit status", err)
	}
	if !st.Successful {
		// MVCC_READ_CONFLICT and PHANTOM_READ_CONFLICT are races with a concurrent
		// writer; the other codes mean the peers disagreed. Either way a retry decides.
		return nil, fmt.Errorf("transaction %s in block %d invalid: %s", st.TransactionID, st.BlockNumber, peer.TxValidationCode_name[int32(st.Code)])
	}
	return tx.Result(), nil
}

// WaitReady waits until the peers can endorse a transaction of the chaincode (right
// after a network starts, cross-organisation discovery takes a few seconds), or ctx is
// done. It endorses a query (which must succeed: a peer returns a chaincode error before
// the gateway needs the other organisations) and submits nothing.
func (c *Client) WaitReady(ctx context.Context) error {
	for {
		prop, err := c.contract.NewProposal(wire.FnQuery, client.WithArguments(`{"site":"readiness-probe","limit":1}`, ""))
		if err != nil {
			return fmt.Errorf("fabric wait ready: %w", err)
		}
		ectx, cancel := context.WithTimeout(ctx, c.cfg.EndorseTimeout)
		_, err = prop.EndorseWithContext(ectx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fabric wait ready: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// RegisterKey registers an actor's ed25519 public key for the client's organisation, so
// that the chaincode can verify the actor's records. Registering a key again is a no-op.
func (c *Client) RegisterKey(ctx context.Context, name string, pub ed25519.PublicKey) error {
	_, err := c.submit(ctx, wire.FnRegisterKey, name, base64.StdEncoding.EncodeToString(pub))
	if err != nil {
		return fmt.Errorf("fabric register key %s of %s: %w", ledger.KeyID(pub), name, err)
	}
	c.log.Info("ledger actor key registered", "actor", name, "key_id", ledger.KeyID(pub))
	return nil
}

// Key returns a key registered on the ledger.
func (c *Client) Key(ctx context.Context, keyID string) (wire.Key, error) {
	var k wire.Key
	err := c.evaluate(ctx, &k, "fabric key "+keyID, wire.FnGetKey, keyID)
	return k, err
}

func (c *Client) evaluate(ctx context.Context, out any, op, fn string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.EvaluateTimeout)
	defer cancel()
	b, err := c.contract.EvaluateWithContext(ctx, fn, client.WithArguments(args...))
	if err != nil {
		return classify(op, err)
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = b
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s: chaincode result: %w", op, err)
	}
	return nil
}

// Get implements ledger.Backend. The record is decoded strictly.
func (c *Client) Get(ctx context.Context, id string) (ledger.Record, error) {
	var b []byte
	op := "fabric get record " + id
	if err := c.evaluate(ctx, &b, op, wire.FnGet, id); err != nil {
		return ledger.Record{}, err
	}
	rec, err := ledger.DecodeRecord(b)
	if err != nil {
		return ledger.Record{}, fmt.Errorf("%s: %w", op, err)
	}
	return rec, nil
}

// maxPages bounds the pages one Query reads (wire.PageSize records each).
const maxPages = 10000

// Query implements ledger.Querier. Records come in header time order (then id order);
// a query by model without version is ordered by time within each page of
// wire.PageSize records.
func (c *Client) Query(ctx context.Context, q ledger.Query) ([]ledger.Record, error) {
	wq := wire.Query{Type: q.Type, Site: q.Site, Model: q.Model.Model, Version: q.Model.Version, Limit: q.Limit}
	if !q.From.IsZero() {
		wq.From = q.From.UTC().Format(time.RFC3339Nano)
	}
	if !q.To.IsZero() {
		wq.To = q.To.UTC().Format(time.RFC3339Nano)
	}
	qb, err := json.Marshal(wq)
	if err != nil {
		return nil, err
	}
	var out []ledger.Record
	bookmark := ""
	for range maxPages {
		var page wire.Page
		if err := c.evaluate(ctx, &page, "fabric query", wire.FnQuery, string(qb), bookmark); err != nil {
			return nil, err
		}
		for _, rec := range page.Records {
			if err := rec.Validate(); err != nil {
				return nil, fmt.Errorf("fabric query: record %s: %w", rec.Header.ID, err)
			}
			out = append(out, rec)
			if q.Limit > 0 && len(out) == q.Limit {
				return out, nil
			}
		}
		if bookmark = page.Bookmark; bookmark == "" {
			return out, nil
		}
	}
	return nil, fmt.Errorf("fabric query: more than %d pages of %d records, expected a narrower query", maxPages, wire.PageSize)
}

// Lineage implements ledger.Querier; the chaincode walks the DAG in one evaluation.
func (c *Client) Lineage(ctx context.Context, m ledger.ModelRef) (ledger.Lineage, error) {
	var wl wire.Lineage
	if err := c.evaluate(ctx, &wl, "fabric lineage of "+m.String(), wire.FnLineage, m.Model, m.Version); err != nil {
		return ledger.Lineage{}, err
	}
	return ledger.Lineage{Root: wl.Root, Versions: wl.Versions, Datasets: wl.Datasets, Missing: wl.Missing, Edges: wl.Edges}, nil
}

// History returns the ledger's history of record id: the transaction that wrote it.
func (c *Client) History(ctx context.Context, id string) ([]wire.HistoryEntry, error) {
	var h []wire.HistoryEntry
	err := c.evaluate(ctx, &h, "fabric history of "+id, wire.FnHistory, id)
	return h, err
}

// Appended implements ledger.AppendTimes: when the records of ids whose append time the
// chaincode stored (wire.Appended) were appended. It asks wire.PageSize ids a call.
func (c *Client) Appended(ctx context.Context, ids []string) (map[string]ledger.Appended, error) {
	out := make(map[string]ledger.Appended, len(ids))
	for batch := range slices.Chunk(ids, wire.PageSize) {
		arg, err := json.Marshal(batch)
		if err != nil {
			return nil, err
		}
		var got map[string]wire.Appended
		if err := c.evaluate(ctx, &got, "fabric append times", wire.FnAppended, string(arg)); err != nil {
			return nil, err
		}
		for id, a := range got {
			if !slices.Contains(batch, id) {
				return nil, fmt.Errorf("fabric append times: the chaincode answered for record %s, which was not asked", id)
			}
			if out[id], err = a.Ledger(); err != nil {
				return nil, fmt.Errorf("fabric append times: record %s: %w", id, err)
			}
		}
	}
	return out, nil
}

// Watch calls fn with every new record's event, from the next block on, until ctx is
// done (then it returns nil) or fn returns an error (which it returns).
func (c *Client) Watch(ctx context.Context, fn func(wire.Event) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := c.network.ChaincodeEvents(ctx, c.cfg.Chaincode)
	if err != nil {
		return classify("fabric watch", err)
	}
	for ev := range events {
		if ev.EventName != wire.EventRecord {
			continue
		}
		var e wire.Event
		if err := json.Unmarshal(ev.Payload, &e); err != nil {
			return fmt.Errorf("fabric watch: event of transaction %s: %w", ev.TransactionID, err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

type metrics struct {
	anchors *prometheus.CounterVec
	seconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		anchors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_ledger_fabric_anchors_total",
			Help: "Records sent to the Fabric chaincode, by result (anchored, existed, rejected, conflict, clock: the client's clock is off the peers', error)."}, []string{"result"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "millwright_ledger_fabric_anchor_seconds",
			Help: "Time to endorse, order and commit one record.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}),
	}
	if reg != nil {
		for _, col := range []prometheus.Collector{m.anchors, m.seconds} {
			if err := reg.Register(col); err != nil {
				return nil, fmt.Errorf("fabric metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(result string, err error, d time.Duration) {
	switch {
	case errors.Is(err, ledger.ErrRejected):
		result = "rejected"
	case errors.Is(err, ledger.ErrConflict):
		result = "conflict"
	case errors.Is(err, ErrClock):
		result = "clock"
	case err != nil:
		result = "error"
	}
	m.anchors.WithLabelValues(result).Inc()
	if err == nil {
		m.seconds.Observe(d.Seconds())
	}
}
