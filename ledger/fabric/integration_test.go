package fabric_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/chaincode"
	"github.com/millwright-io/millwright/ledger/chaincode/wire"
	"github.com/millwright-io/millwright/ledger/fabric"
	"github.com/millwright-io/millwright/ledger/fabric/fabrictest"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// site returns a site name no earlier run on the same network used.
func site(prefix string) string { return servicetest.UniqueName(prefix) }

// runOutbox opens an outbox anchoring to backend as signer for site and runs it until
// the test ends.
func runOutbox(t *testing.T, signer *ledger.Signer, backend ledger.Backend, site string) *ledger.Outbox {
	t.Helper()
	cfg := ledger.Config{Dir: t.TempDir(), Site: site, Gateway: "gw-" + site, RetryInitial: 50 * time.Millisecond, RetryMax: time.Second}
	cfg.SetDefaults()
	ob, err := ledger.Open(cfg, signer, backend)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var g errgroup.Group
	g.Go(func() error { return ob.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Error(err)
		}
		ob.Close()
	})
	return ob
}

// drain waits until the outbox has anchored (or dead-lettered) everything queued.
func drain(t *testing.T, ob *ledger.Outbox) ledger.OutboxStats {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st := ob.Stats()
		if st.Pending == 0 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox did not drain in a minute: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// queue records n dataset snapshots in the outbox.
func queue(t *testing.T, ob *ledger.Outbox, n int) []ledger.Record {
	t.Helper()
	var recs []ledger.Record
	for i := range n {
		rec, err := ob.Record(context.Background(), snapshot(i))
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	return recs
}

func snapshot(i int) ledger.DatasetSnapshot {
	t0 := audittest.T0.Add(time.Duration(i) * time.Hour)
	return ledger.DatasetSnapshot{Windows: []ledger.SignalWindow{{Signal: "plant/line/pump/vibration", From: t0, To: t0.Add(time.Hour), Rows: 3600}},
		Rows: 3600, MetadataHash: audittest.Hash(fmt.Appendf(nil, "snapshot %d", i))}
}

// TestAnchorThroughOutbox: records queued in the outbox are anchored on the channel in
// order and read back byte for byte (same hash), by site and by time range.
func TestAnchorThroughOutbox(t *testing.T) {
	ctx := testCtx(t)
	signer := audittest.Signer(t, "outbox-gw", "factory-a")
	c := fabrictest.Client(t, "factory-a", signer)
	s := site("outbox")
	ob := runOutbox(t, signer, c, s)
	start := time.Now()
	recs := queue(t, ob, 5)
	if st := drain(t, ob); st.Rejected != 0 {
		t.Fatalf("dead-lettered: %+v", st)
	}
	for _, want := range recs {
		got, err := c.Get(ctx, want.Header.ID)
		if err != nil {
			t.Fatal(err)
		}
		if hashOf(t, got) != hashOf(t, want) {
			t.Fatalf("record %s read back with another hash", want.Header.ID)
		}
	}
	bySite, err := c.Query(ctx, ledger.Query{Site: s})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids(bySite), ids(recs)) {
		t.Fatalf("query by site = %v, want %v", ids(bySite), ids(recs))
	}
	window, err := c.Query(ctx, ledger.Query{Site: s, From: recs[1].Header.Time, To: recs[3].Header.Time})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids(window), ids(recs[1:3])) {
		t.Fatalf("query by time range = %v, want %v", ids(window), ids(recs[1:3]))
	}
	h, err := c.History(ctx, recs[0].Header.ID)
	if err != nil || len(h) != 1 || h[0].TxID == "" || h[0].Hash != hashOf(t, recs[0]) {
		t.Fatalf("history = %+v, %v; want one transaction writing hash %s", h, err, hashOf(t, recs[0]))
	}
	// The ledger knows when each was appended (now, within the peers' clock tolerance),
	// not only the day in March their signer dated them.
	appended, err := c.Appended(ctx, append(ids(recs), ledger.NewID()))
	if err != nil || len(appended) != len(recs) {
		t.Fatalf("append times = %v, %v; want one for each of the %d records", appended, err, len(recs))
	}
	lo, hi := start.Add(-time.Second), time.Now()
	for _, r := range recs {
		if a := appended[r.Header.ID]; a.At.Before(lo) || a.At.After(hi) || a.Tolerance != chaincode.DefaultClockTolerance {
			t.Errorf("record %s dated %v: appended at %v ± %v, want between %v and %v ± %v", r.Header.ID, r.Header.Time, a.At, a.Tolerance, lo, hi, chaincode.DefaultClockTolerance)
		}
	}
	// Each record names the previous one of its actor: the chain survives the trip.
	for i := 1; i < len(recs); i++ {
		if recs[i].Header.Prev != hashOf(t, recs[i-1]) {
			t.Fatalf("record %d does not chain to record %d", i, i-1)
		}
	}
}

func hashOf(t *testing.T, rec ledger.Record) string {
	t.Helper()
	h, err := ledger.Hash(rec)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func ids(recs []ledger.Record) []string {
	out := []string{}
	for _, r := range recs {
		out = append(out, r.Header.ID)
	}
	return out
}

// sign returns a record of body signed by signer for site.
func sign(t *testing.T, signer *ledger.Signer, s string, body ledger.Body) ledger.Record {
	t.Helper()
	b, err := ledger.CanonicalMarshal(body)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := signer.Sign(ledger.Record{Header: ledger.Header{ID: ledger.NewID(), SchemaVersion: ledger.SchemaVersion,
		Type: body.Type(), Time: time.Now().UTC(), Site: s}, Body: b})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestDuplicateID: the same record again is an idempotent success; another record under
// the same id is a permanent conflict.
func TestDuplicateID(t *testing.T) {
	ctx := testCtx(t)
	signer := audittest.Signer(t, "dup-gw", "factory-a")
	c := fabrictest.Client(t, "factory-a", signer)
	s := site("dup")
	rec := sign(t, signer, s, snapshot(1))
	for i := range 2 {
		if err := c.Anchor(ctx, rec); err != nil {
			t.Fatalf("anchor #%d: %v", i+1, err)
		}
	}
	other := sign(t, signer, s, snapshot(2))
	other.Header.ID = rec.Header.ID
	other, err := signer.Sign(other)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Anchor(ctx, other)
	if !errors.Is(err, ledger.ErrConflict) || !ledger.IsPermanent(err) {
		t.Fatalf("other record under the same id: %v, want ErrConflict", err)
	}
}

// TestRefusals: records the chaincode must refuse come back as permanent errors naming
// the reason, and are not on the ledger.
func TestRefusals(t *testing.T) {
	ctx := testCtx(t)
	gwA := audittest.Signer(t, "refusal-gw-a", "factory-a")
	gwB := audittest.Signer(t, "refusal-gw-b", "factory-b")
	auditor := audittest.Signer(t, "refusal-auditor", "auditor")
	a := fabrictest.Client(t, "factory-a", gwA)
	b := fabrictest.Client(t, "factory-b", gwB)
	au := fabrictest.Client(t, "auditor", auditor)
	// Register gw-b's key through its own organisation first, so that only the org differs.
	if err := b.RegisterKey(ctx, gwB.Actor().Name, gwB.Public()); err != nil {
		t.Fatal(err)
	}
	forged := sign(t, gwA, site("forged"), snapshot(3))
	forged.Body = json.RawMessage(strings.Replace(string(forged.Body), audittest.Hash([]byte("snapshot 3")), audittest.Hash([]byte("other")), 1))
	round := sign(t, gwA, site("round"), ledger.FederatedRound{Federation: "f", Round: 1, Participants: []string{"a"}, Aggregation: "fedavg",
		InputUpdates: []string{audittest.Hash([]byte("u"))}, Output: ledger.ModelRef{Model: "m", Version: "2"}, OutputHash: audittest.Hash([]byte("m2")),
		Parents: []ledger.ModelRef{{Model: "m", Version: "1"}}})
	for _, tc := range []struct {
		name   string
		client *fabric.Client
		rec    ledger.Record
		reason string
	}{
		{"wrong org", a, sign(t, gwB, site("wrong-org"), snapshot(1)), "is not the submitting organisation"},
		{"auditor writes", au, sign(t, auditor, site("auditor"), snapshot(2)), "only reads"},
		{"forged signature", a, forged, "bad signature"},
		{"round from a factory", a, round, "may not write federated_round"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.client.Anchor(ctx, tc.rec)
			if !errors.Is(err, ledger.ErrRejected) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("err = %v, want ErrRejected saying %q", err, tc.reason)
			}
			if _, err := a.Get(ctx, tc.rec.Header.ID); !errors.Is(err, ledger.ErrNotFound) {
				t.Fatalf("refused record is readable: %v", err)
			}
		})
	}
	// An outbox dead-letters a refused record and goes on with the next one.
	ob := runOutbox(t, gwB, a, site("dead-letter")) // gw-b's records through factory-a's client
	if _, err := ob.Record(ctx, snapshot(4)); err != nil {
		t.Fatal(err)
	}
	if st := drain(t, ob); st.Rejected != 1 {
		t.Fatalf("outbox stats %+v, want the refused record dead-lettered", st)
	}
}

// anchorFixture anchors the audittest story, each record by its actor's organisation.
func anchorFixture(t *testing.T, f *audittest.Fixture) map[string]*fabric.Client {
	t.Helper()
	ctx := testCtx(t)
	clients := map[string]*fabric.Client{}
	for _, name := range []string{"gw-a", "gw-b", "hub", "alice"} {
		s := f.Signers[name]
		org := s.Actor().Org
		if clients[org] == nil {
			clients[org] = fabrictest.Client(t, org)
		}
		if err := clients[org].RegisterKey(ctx, s.Actor().Name, s.Public()); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range f.All {
		if err := clients[r.Header.Actor.Org].Anchor(ctx, r); err != nil {
			t.Fatalf("anchor %s %s: %v", r.Header.Type, r.Header.ID, err)
		}
	}
	return clients
}

// TestLineageMatchesLocal: the provenance DAG across a federated round, read from Fabric
// by the auditor's organisation, is the one the local ledger gives for the same records.
func TestLineageMatchesLocal(t *testing.T) {
	ctx := testCtx(t)
	f := audittest.New(t)
	anchorFixture(t, f)
	au := fabrictest.Client(t, "auditor")
	got, err := au.Lineage(ctx, audittest.Model)
	if err != nil {
		t.Fatal(err)
	}
	want, err := f.Open(t).Lineage(ctx, audittest.Model)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids(got.Versions), ids(want.Versions)) || !reflect.DeepEqual(ids(got.Datasets), ids(want.Datasets)) ||
		!reflect.DeepEqual(got.Edges, want.Edges) || !reflect.DeepEqual(got.Missing, want.Missing) {
		t.Fatalf("lineage from Fabric\n %+v\nfrom the local ledger\n %+v", got, want)
	}
	for i := range got.Versions {
		if hashOf(t, got.Versions[i]) != hashOf(t, want.Versions[i]) {
			t.Fatalf("version record %d differs", i)
		}
	}
	if _, err := au.Lineage(ctx, ledger.ModelRef{Model: "no-such-model", Version: "1"}); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("lineage of an unknown model: %v, want ErrNotFound", err)
	}
}

// TestAuditAgainstFabric: the auditor's lineage, verify and report run against Fabric as
// against the local ledger.
func TestAuditAgainstFabric(t *testing.T) {
	ctx := testCtx(t)
	f := audittest.New(t)
	anchorFixture(t, f)
	au := fabrictest.Client(t, "auditor")
	tree, err := audit.Lineage(ctx, au, audittest.Model)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	if err := tree.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pump-anomaly@1-a", "pump-anomaly@1-b", f.SnapA.Header.ID} {
		if !strings.Contains(text.String(), want) {
			t.Fatalf("lineage text lacks %q:\n%s", want, text.String())
		}
	}
	res, err := audit.VerifyArtifact(ctx, au, f.Artifact, audit.Options{Keys: f.Keys})
	if err != nil || !res.OK {
		t.Fatalf("verify = %+v, %v", res, err)
	}
	out, err := audit.Report(ctx, au, audittest.Model, "json", audit.Options{Keys: f.Keys})
	if err != nil || !json.Valid(out) {
		t.Fatalf("report: %v", err)
	}
}

// TestEvents: a new record's event reaches a watcher, naming the record, its hash and
// the organisation that wrote it.
func TestEvents(t *testing.T) {
	ctx := testCtx(t)
	signer := audittest.Signer(t, "events-gw", "factory-b")
	c := fabrictest.Client(t, "factory-b", signer)
	s := site("events")
	wctx, cancel := context.WithCancel(ctx)
	seen := make(chan wire.Event, 1)
	var g errgroup.Group
	g.Go(func() error {
		return c.Watch(wctx, func(e wire.Event) error {
			if e.Site == s {
				seen <- e
				return errWatched
			}
			return nil
		})
	})
	defer func() {
		cancel()
		if err := g.Wait(); err != nil && !errors.Is(err, errWatched) {
			t.Error(err)
		}
	}()
	// The watch starts at the next block, and a record may commit before the stream is
	// registered: anchor new records until the watcher sees one.
	hashes := map[string]string{}
	for i := 0; ; i++ {
		rec := sign(t, signer, s, snapshot(i))
		if err := c.Anchor(ctx, rec); err != nil {
			t.Fatal(err)
		}
		hashes[rec.Header.ID] = hashOf(t, rec)
		select {
		case e := <-seen:
			if e.Hash != hashes[e.ID] || e.Org != "factory-b" || e.Type != ledger.TypeDatasetSnapshot {
				t.Fatalf("event %+v does not describe a record anchored here (%v)", e, hashes)
			}
			return
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("no event for %d records", len(hashes))
		}
	}
}

var errWatched = errors.New("watched")

// TestOutboxDrainsAfterOutage: while the peer the gateway talks to is down, records keep
// being queued (Record never waits for the ledger) and anchoring fails with transient
// errors; once it is back, the outbox drains, nothing lost, in order.
func TestOutboxDrainsAfterOutage(t *testing.T) {
	ctx := testCtx(t)
	signer := audittest.Signer(t, "outage-gw", "factory-a")
	cfg := fabrictest.Config(t, "factory-a")
	cfg.EvaluateTimeout, cfg.EndorseTimeout, cfg.SubmitTimeout, cfg.CommitStatusTimeout = 2*time.Second, 2*time.Second, 2*time.Second, 5*time.Second
	c, err := fabric.Open(cfg, fabric.WithActors(signer))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.RegisterKey(ctx, signer.Actor().Name, signer.Public()); err != nil {
		t.Fatal(err)
	}
	s := site("outage")
	ob := runOutbox(t, signer, c, s)
	resume := fabrictest.Freeze(t, "peer-factory-a")
	recs := queue(t, ob, 10)
	deadline := time.Now().Add(30 * time.Second)
	for ob.Stats().AnchorErrors == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no anchor failed while the peer was frozen: %+v", ob.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := ob.Stats(); st.Pending != len(recs) || st.Anchored != 0 {
		t.Fatalf("during the outage: %+v, want all %d records pending", st, len(recs))
	}
	resume()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if st := drain(t, ob); st.Anchored != int64(len(recs)) || st.Rejected != 0 {
		t.Fatalf("after the outage: %+v, want %d anchored", st, len(recs))
	}
	got, err := c.Query(ctx, ledger.Query{Site: s})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids(got), ids(recs)) {
		t.Fatalf("ledger holds %v, want %v in that order", ids(got), ids(recs))
	}
}
