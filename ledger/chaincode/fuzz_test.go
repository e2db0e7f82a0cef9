package chaincode

import (
	"encoding/base64"
	"fmt"
	"maps"
	"testing"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
	"github.com/millwright-io/millwright/ledger/chaincode/wire"
)

// FuzzAnchor: whatever bytes a client submits, Anchor either stores a record that
// decodes strictly, or refuses with a tag and leaves the state as it was.
func FuzzAnchor(f *testing.F) {
	s := Store{Policy: DefaultPolicy()}
	sg := audittest.Signer(f, "gw-a", "factory-a")
	base := newFakeStub()
	if _, err := s.RegisterKey(base, "factory-a", "gw-a", base64.StdEncoding.EncodeToString(sg.Public())); err != nil {
		f.Fatal(err)
	}
	body, _ := ledger.CanonicalMarshal(ledger.AlarmDigest{From: audittest.T0, To: audittest.T0.Add(1), Count: 1, LogHash: audittest.Hash([]byte("x"))})
	rec, err := sg.Sign(ledger.Record{Header: ledger.Header{ID: ledger.NewID(), SchemaVersion: ledger.SchemaVersion, Type: ledger.TypeAlarmDigest,
		Time: audittest.T0, Site: "site-a"}, Body: body})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := ledger.MarshalRecord(rec)
	f.Add(string(good))
	f.Add(`{"header":{},"body":{},"signature":""}`)
	f.Add(`{"header":{"id":"x"}}`)
	f.Fuzz(func(t *testing.T, in string) {
		st := newFakeStub()
		maps.Copy(st.state, base.state)
		before := len(st.state)
		res, err := s.Anchor(st, "factory-a", in)
		if err != nil {
			if wire.Tagged(err.Error()) == "" {
				t.Fatalf("untagged refusal %v", err)
			}
			if len(st.state) != before {
				t.Fatalf("refused input changed the state")
			}
			return
		}
		stored, err := s.Get(st, res.ID)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ledger.DecodeRecord(stored)
		if err != nil {
			t.Fatalf("stored record does not decode: %v", err)
		}
		if h, _ := ledger.Hash(back); h != res.Hash {
			t.Fatal(fmt.Sprintf("stored hash %s, anchored %s", h, res.Hash))
		}
	})
}

// FuzzQuery: any query document and bookmark is answered or refused with a tag.
func FuzzQuery(f *testing.F) {
	s := Store{Policy: DefaultPolicy()}
	st := newFakeStub()
	f.Add(`{"site":"a","from":"2026-01-01T00:00:00Z"}`, "")
	f.Add(`{"model":"m"}`, "m m ")
	f.Add(`{"version":"1"}`, "")
	f.Fuzz(func(t *testing.T, q, bookmark string) {
		if _, err := s.Query(st, q, bookmark); err != nil && wire.Tagged(err.Error()) == "" {
			t.Fatalf("untagged refusal %v", err)
		}
	})
}
