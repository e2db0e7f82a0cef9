package chaincode

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/chaincode/wire"
)

// setup returns a store whose fake state holds the registered keys of the fixture's
// signers (each by its own organisation).
func setup(t *testing.T) (Store, *fakeStub, *audittest.Fixture) {
	t.Helper()
	s, st, f := Store{Policy: DefaultPolicy()}, newFakeStub(), audittest.New(t)
	for _, sg := range f.Signers {
		if _, err := s.RegisterKey(st, sg.Actor().Org, sg.Actor().Name, base64.StdEncoding.EncodeToString(sg.Public())); err != nil {
			t.Fatal(err)
		}
	}
	return s, st, f
}

func anchorJSON(t *testing.T, rec ledger.Record) string {
	t.Helper()
	b, err := ledger.MarshalRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// anchorAll anchors every record of the fixture as its actor's organisation.
func anchorAll(t *testing.T, s Store, st *fakeStub, recs []ledger.Record) {
	t.Helper()
	for _, r := range recs {
		if _, err := s.Anchor(st, r.Header.Actor.Org, anchorJSON(t, r)); err != nil {
			t.Fatalf("anchor %s %s: %v", r.Header.Type, r.Header.ID, err)
		}
	}
}

func TestAnchorIdempotentAndConflict(t *testing.T) {
	s, st, f := setup(t)
	res, err := s.Anchor(st, "factory-a", anchorJSON(t, f.SnapA))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ledger.Hash(f.SnapA)
	if res.Existed || res.Hash != want {
		t.Fatalf("first anchor = %+v, want new record with hash %s", res, want)
	}
	if len(st.events) != 1 || st.events[0] != wire.EventRecord {
		t.Fatalf("events = %v, want one %s", st.events, wire.EventRecord)
	}
	var ev wire.Event
	if err := json.Unmarshal(st.payload[0], &ev); err != nil || ev.ID != f.SnapA.Header.ID || ev.Hash != want || ev.Org != "factory-a" {
		t.Fatalf("event %s (%v), want id %s hash %s org factory-a", st.payload[0], err, f.SnapA.Header.ID, want)
	}
	res, err = s.Anchor(st, "factory-a", anchorJSON(t, f.SnapA))
	if err != nil || !res.Existed {
		t.Fatalf("same record again = %+v, %v; want existed, nil", res, err)
	}
	if len(st.events) != 1 {
		t.Fatalf("the repeat emitted an event: %v", st.events)
	}
	// Another record of the same actor under the same id.
	other := f.TrainA
	other.Header.ID = f.SnapA.Header.ID
	other, err = f.Signers["gw-a"].Sign(other)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Anchor(st, "factory-a", anchorJSON(t, other))
	if wire.Tagged(fmt.Sprint(err)) != wire.TagConflict {
		t.Fatalf("other record under the same id: %v, want %s", err, wire.TagConflict)
	}
}

func TestAnchorRefusals(t *testing.T) {
	s, st, f := setup(t)
	anchorAll(t, s, st, []ledger.Record{f.SnapA}) // site-a now belongs to factory-a

	forged := f.SnapB
	forged.Body = json.RawMessage(strings.Replace(string(forged.Body), `"rows":518400`, `"rows":1`, 1))
	unknown := audittest.Signer(t, "gw-c", "factory-b")
	unregistered, err := unknown.Sign(ledger.Record{Header: f.SnapB.Header, Body: f.SnapB.Body})
	if err != nil {
		t.Fatal(err)
	}
	unregistered.Header.ID = ledger.NewID()
	if unregistered, err = unknown.Sign(unregistered); err != nil {
		t.Fatal(err)
	}
	// factory-b's gateway writes a record for site-a, which factory-a owns.
	stolen := f.SnapB
	stolen.Header.ID, stolen.Header.Site = ledger.NewID(), "site-a"
	if stolen, err = f.Signers["gw-b"].Sign(stolen); err != nil {
		t.Fatal(err)
	}
	// A factory signs a federated round.
	round := f.Round
	round.Header.Site = "site-b"
	if round, err = f.Signers["gw-b"].Sign(round); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, msp, record, tag string
	}{
		{"wrong org", "factory-a", anchorJSON(t, f.SnapB), wire.TagRejected},
		{"reader org", "auditor", anchorJSON(t, f.SnapB), wire.TagRejected},
		{"forged body", "factory-b", anchorJSON(t, forged), wire.TagRejected},
		{"not json", "factory-b", `{"header":`, wire.TagRejected},
		{"unknown field", "factory-b", strings.Replace(anchorJSON(t, f.SnapB), `{"body"`, `{"extra":1,"body"`, 1), wire.TagRejected},
		{"unregistered key", "factory-b", anchorJSON(t, unregistered), wire.TagUnknownActor},
		{"site of another org", "factory-b", anchorJSON(t, stolen), wire.TagRejected},
		{"round from a factory", "factory-b", anchorJSON(t, round), wire.TagRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(st.state)
			_, err := s.Anchor(st, tc.msp, tc.record)
			if got := wire.Tagged(fmt.Sprint(err)); got != tc.tag {
				t.Fatalf("err = %v, want tag %q", err, tc.tag)
			}
			if len(st.state) != before {
				t.Fatalf("a refused record changed the state (%d keys, was %d)", len(st.state), before)
			}
		})
	}
}

func TestRegisterKey(t *testing.T) {
	s, st := Store{Policy: DefaultPolicy()}, newFakeStub()
	sg := audittest.Signer(t, "gw-a", "factory-a")
	pub := base64.StdEncoding.EncodeToString(sg.Public())
	k, err := s.RegisterKey(st, "factory-a", "gw-a", pub)
	if err != nil || k.KeyID != sg.Actor().KeyID || k.Org != "factory-a" {
		t.Fatalf("register = %+v, %v", k, err)
	}
	if _, err := s.RegisterKey(st, "factory-a", "gw-a", pub); err != nil {
		t.Fatalf("again by the same org: %v", err)
	}
	for _, tc := range []struct{ name, msp, pub, tag string }{
		{"other org", "factory-b", pub, wire.TagConflict},
		{"reader", "auditor", pub, wire.TagRejected},
		{"short key", "factory-a", base64.StdEncoding.EncodeToString([]byte("short")), wire.TagRejected},
		{"not base64", "factory-a", "!!", wire.TagRejected},
	} {
		if _, err := s.RegisterKey(st, tc.msp, "x", tc.pub); wire.Tagged(fmt.Sprint(err)) != tc.tag {
			t.Errorf("%s: %v, want tag %q", tc.name, err, tc.tag)
		}
	}
	if got, err := s.GetKey(st, k.KeyID); err != nil || got != k {
		t.Fatalf("GetKey = %+v, %v; want %+v", got, err, k)
	}
}

// TestLineageMatchesLocal: the chaincode's DAG walk returns what the local ledger's does.
func TestLineageMatchesLocal(t *testing.T) {
	s, st, f := setup(t)
	anchorAll(t, s, st, f.All)
	want, err := f.Open(t).Lineage(context.Background(), audittest.Model)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Lineage(st, audittest.Model.Model, audittest.Model.Version)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(hashes(t, got.Versions), hashes(t, want.Versions)) || !reflect.DeepEqual(hashes(t, got.Datasets), hashes(t, want.Datasets)) ||
		!reflect.DeepEqual(got.Edges, want.Edges) || !reflect.DeepEqual(got.Missing, want.Missing) {
		t.Fatalf("lineage\n got %+v\nwant %+v", got, want)
	}
	if len(got.Versions) != 3 || len(got.Datasets) != 2 {
		t.Fatalf("%d versions and %d datasets, want 3 and 2", len(got.Versions), len(got.Datasets))
	}
	if _, err := s.Lineage(st, "no-such-model", "1"); wire.Tagged(fmt.Sprint(err)) != wire.TagNotFound {
		t.Fatalf("unknown model: %v, want %s", err, wire.TagNotFound)
	}
}

func hashes(t *testing.T, recs []ledger.Record) []string {
	t.Helper()
	var out []string
	for _, r := range recs {
		h, err := ledger.Hash(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
	return out
}

// TestQueryMatchesLocal runs the same queries against the chaincode and the local ledger.
func TestQueryMatchesLocal(t *testing.T) {
	s, st, f := setup(t)
	anchorAll(t, s, st, f.All)
	loc := f.Open(t)
	for _, q := range []ledger.Query{
		{},
		{Site: "site-a"},
		{Site: "site-b", Type: ledger.TypeAlarmDigest},
		{Model: audittest.Model},
		{Model: ledger.ModelRef{Model: audittest.Model.Model}},
		{From: audittest.T0.Add(time.Hour), To: audittest.T0.Add(5 * time.Hour)},
		{Site: "hub", From: audittest.T0.Add(3 * time.Hour)},
		{Type: ledger.TypeLocalTraining},
		{Site: "nowhere"},
	} {
		want, err := loc.Query(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		// The chaincode's order is header time, then id; the local ledger's is append order.
		slices.SortStableFunc(want, func(a, b ledger.Record) int {
			return cmp.Or(a.Header.Time.Compare(b.Header.Time), strings.Compare(a.Header.ID, b.Header.ID))
		})
		qb, _ := json.Marshal(wireQuery(q))
		page, err := s.Query(st, string(qb), "")
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		if !reflect.DeepEqual(hashes(t, page.Records), hashes(t, want)) {
			t.Errorf("query %+v: chaincode returned %d records, local %d, or in another order", q, len(page.Records), len(want))
		}
	}
	if _, err := s.Query(st, `{"colour":"red"}`, ""); wire.Tagged(fmt.Sprint(err)) != wire.TagRejected {
		t.Errorf("unknown query field: %v, want %s", err, wire.TagRejected)
	}
}

func wireQuery(q ledger.Query) wire.Query {
	w := wire.Query{Type: q.Type, Site: q.Site, Model: q.Model.Model, Version: q.Model.Version}
	if !q.From.IsZero() {
		w.From = q.From.Format(time.RFC3339Nano)
	}
	if !q.To.IsZero() {
		w.To = q.To.Format(time.RFC3339Nano)
	}
	return w
}

// TestQueryPages: more records than a page come back whole, in order, through bookmarks.
func TestQueryPages(t *testing.T) {
	s, st := Store{Policy: DefaultPolicy()}, newFakeStub()
	sg := audittest.Signer(t, "gw-a", "factory-a")
	if _, err := s.RegisterKey(st, "factory-a", "gw-a", base64.StdEncoding.EncodeToString(sg.Public())); err != nil {
		t.Fatal(err)
	}
	n := wire.PageSize*2 + 7
	var ids []string
	for i := range n {
		body, _ := ledger.CanonicalMarshal(ledger.AlarmDigest{From: audittest.T0, To: audittest.T0.Add(time.Hour), Count: int64(i), LogHash: audittest.Hash([]byte{byte(i)})})
		rec, err := sg.Sign(ledger.Record{Header: ledger.Header{ID: ledger.NewID(), SchemaVersion: ledger.SchemaVersion, Type: ledger.TypeAlarmDigest,
			Time: audittest.T0.Add(time.Duration(i) * time.Second), Site: "site-a"}, Body: body})
		if err != nil {
			t.Fatal(err)
		}
		anchorAll(t, s, st, []ledger.Record{rec})
		ids = append(ids, rec.Header.ID)
	}
	var got []string
	bookmark, pages := "", 0
	for {
		page, err := s.Query(st, `{"site":"site-a"}`, bookmark)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, r := range page.Records {
			got = append(got, r.Header.ID)
		}
		if bookmark = page.Bookmark; bookmark == "" {
			break
		}
	}
	if pages != 3 || !reflect.DeepEqual(got, ids) {
		t.Fatalf("%d pages, %d records (want 3 pages, %d records in time order)", pages, len(got), n)
	}
}

func TestHistory(t *testing.T) {
	s, st, f := setup(t)
	anchorAll(t, s, st, []ledger.Record{f.SnapA})
	h, err := s.History(st, f.SnapA.Header.ID)
	want, _ := ledger.Hash(f.SnapA)
	if err != nil || len(h) != 1 || h[0].Hash != want {
		t.Fatalf("history = %+v, %v; want one write of hash %s", h, err, want)
	}
	if _, err := s.History(st, ledger.NewID()); wire.Tagged(fmt.Sprint(err)) != wire.TagNotFound {
		t.Fatalf("history of an unknown id: %v", err)
	}
	if _, err := s.Get(st, ledger.NewID()); wire.Tagged(fmt.Sprint(err)) != wire.TagNotFound {
		t.Fatalf("get of an unknown id: %v", err)
	}
}

func TestPolicyFromEnv(t *testing.T) {
	t.Setenv("LINEAGE_HUB_ORGS", "hub1, hub2")
	t.Setenv("LINEAGE_READER_ORGS", "")
	p, err := PolicyFromEnv()
	if err != nil || !reflect.DeepEqual(p.Hubs, []string{"hub1", "hub2"}) || len(p.Readers) != 0 || p.ClockTolerance != DefaultClockTolerance {
		t.Fatalf("policy = %+v, %v", p, err)
	}
	t.Setenv("LINEAGE_CLOCK_TOLERANCE", "90s")
	if p, err := PolicyFromEnv(); err != nil || p.ClockTolerance != 90*time.Second {
		t.Fatalf("policy = %+v, %v; want a tolerance of 90s", p, err)
	}
	for _, bad := range []string{"5", "-1m", "0s"} {
		t.Setenv("LINEAGE_CLOCK_TOLERANCE", bad)
		if _, err := PolicyFromEnv(); err == nil || !strings.Contains(err.Error(), `LINEAGE_CLOCK_TOLERANCE="`+bad+`"`) {
			t.Errorf("tolerance %q: %v, want an error naming it", bad, err)
		}
	}
}

// TestAnchorRecordsAppendTime: the chaincode keeps, with each record, the time of the
// transaction that wrote it, after checking it against the peer's clock; a record
// backdated by its signer still shows when it was appended, and a client whose clock is
// off is told so, with a tag that is not a refusal for good.
func TestAnchorRecordsAppendTime(t *testing.T) {
	s, st, f := setup(t)
	peer := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return peer }
	s.Policy.ClockTolerance = time.Minute

	// SnapA says it was made long before; its transaction is 40 s ahead of the peer.
	st.txTime = peer.Add(40 * time.Second)
	anchorAll(t, s, st, []ledger.Record{f.SnapA})
	for _, off := range []time.Duration{61 * time.Second, -61 * time.Second} {
		st.txTime = peer.Add(off)
		before := len(st.state)
		_, err := s.Anchor(st, "factory-b", anchorJSON(t, f.SnapB))
		if wire.Tagged(fmt.Sprint(err)) != wire.TagClock || !strings.Contains(err.Error(), "expected within 1m0s") {
			t.Fatalf("transaction %v off the peer's clock: %v, want %s ... expected within 1m0s", off, err, wire.TagClock)
		}
		if len(st.state) != before {
			t.Fatalf("a refused record changed the state")
		}
	}
	// A forged record is refused for good, whatever the client's clock says.
	forged := f.SnapB
	forged.Body = json.RawMessage(strings.Replace(string(forged.Body), `"rows":518400`, `"rows":1`, 1))
	if _, err := s.Anchor(st, "factory-b", anchorJSON(t, forged)); wire.Tagged(fmt.Sprint(err)) != wire.TagRejected {
		t.Fatalf("a forged record with the clock off: %v, want %s", err, wire.TagRejected)
	}
	// The same record again is a no-op whatever the client's clock says.
	if res, err := s.Anchor(st, "factory-a", anchorJSON(t, f.SnapA)); err != nil || !res.Existed {
		t.Fatalf("SnapA again with the clock off: %+v, %v", res, err)
	}

	ids, _ := json.Marshal([]string{f.SnapA.Header.ID, f.SnapB.Header.ID, "no-such-id"})
	got, err := s.Appended(st, string(ids))
	want := map[string]wire.Appended{f.SnapA.Header.ID: {Time: "2026-11-25T12:00:40Z", Tolerance: "1m0s"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("appended = %v, %v; want %v", got, err, want)
	}
	a, err := got[f.SnapA.Header.ID].Ledger()
	if err != nil || !a.After().Equal(peer.Add(-20*time.Second)) {
		t.Fatalf("appended %+v, %v; want after the transaction time less the tolerance, %v", a, err, peer.Add(-20*time.Second))
	}
	if !f.SnapA.Header.Time.Before(a.After()) {
		t.Fatalf("fixture: SnapA is dated %v, expected before its append", f.SnapA.Header.Time)
	}
	for _, bad := range []string{"{}", `["a"`, string(must(json.Marshal(make([]string, wire.PageSize+1))))} {
		if _, err := s.Appended(st, bad); wire.Tagged(fmt.Sprint(err)) != wire.TagRejected {
			t.Errorf("appended(%.40s): %v, want %s", bad, err, wire.TagRejected)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
