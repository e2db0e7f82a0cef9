package ledger_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/ledger"
)

func TestRoundTripEveryType(t *testing.T) {
	s := testSigner(t, "gw-1", "acme")
	seen := map[ledger.Type]bool{}
	prev := ""
	for _, body := range sampleBodies() {
		t.Run(string(body.Type()), func(t *testing.T) {
			seen[body.Type()] = true
			rec := signed(t, s, body, prev)
			b, err := ledger.MarshalRecord(rec)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ledger.DecodeRecord(b)
			if err != nil {
				t.Fatalf("decode: %v\n%s", err, b)
			}
			if !reflect.DeepEqual(got, rec) {
				t.Errorf("round trip changed the record:\n got %+v\nwant %+v", got, rec)
			}
			gotBody, err := got.DecodeBody()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(gotBody, body) {
				t.Errorf("body:\n got %#v\nwant %#v", gotBody, body)
			}
			if err := ledger.Verify(got, s.Public()); err != nil {
				t.Errorf("verify after round trip: %v", err)
			}
			h1, _ := ledger.Hash(rec)
			h2, _ := ledger.Hash(got)
			if h1 != h2 || len(h1) != 64 {
				t.Errorf("hash changed: %s != %s", h1, h2)
			}
			prev = h1
		})
	}
	for _, typ := range ledger.Types {
		if !seen[typ] {
			t.Errorf("no round trip test for %s", typ)
		}
	}
}

// mutate decodes a valid record's JSON, applies f to the generic document, re-encodes it.
func mutate(t *testing.T, rec ledger.Record, f func(doc map[string]any)) []byte {
	t.Helper()
	b, _ := json.Marshal(rec)
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	f(doc)
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDecodeRecordErrors(t *testing.T) {
	s := testSigner(t, "gw-1", "acme")
	snap := signed(t, s, sampleBodies()[0], "")
	train := signed(t, s, sampleBodies()[1], "")
	round := signed(t, s, sampleBodies()[2], "")
	header := func(doc map[string]any) map[string]any { return doc["header"].(map[string]any) }
	body := func(doc map[string]any) map[string]any { return doc["body"].(map[string]any) }
	tests := []struct {
		name string
		rec  ledger.Record
		f    func(doc map[string]any)
		want []string // every line of the error
	}{
		{"local time", snap, func(d map[string]any) { header(d)["time"] = "2026-03-01T09:00:00+01:00" },
			[]string{`header.time: "2026-03-01T09:00:00+01:00" is not a UTC time, expected RFC 3339 UTC (2006-01-02T15:04:05.999999999Z)`}},
		{"time not a string", snap, func(d map[string]any) { header(d)["time"] = 5 },
			[]string{`header.time: got number 5, expected RFC 3339 UTC`}},
		{"unknown header field and bad id", snap, func(d map[string]any) { header(d)["colour"] = "red"; header(d)["id"] = "x" },
			[]string{
				`header.colour: unknown field, expected one of actor, firmware_version, gateway, id, prev, schema_version, site, time, type`,
				`header.id: "x" is not an id, expected a lower-case UUID`,
			}},
		{"unknown type", snap, func(d map[string]any) { header(d)["type"] = "coffee" },
			[]string{
				`header.type: "coffee" is not a record type, expected one of [dataset_snapshot local_training federated_round evaluation approval release deployment rollback alarm_digest]`,
				`body: cannot decode the body of unknown record type "coffee"`,
			}},
		{"schema version", snap, func(d map[string]any) { header(d)["schema_version"] = 2 },
			[]string{`header.schema_version: 2 is not supported, expected 1`}},
		{"integer too large", snap, func(d map[string]any) { body(d)["rows"] = json.Number("9007199254740993") },
			[]string{`body.rows: 9007199254740993 is not an integer in range, expected an integer between -9007199254740991 and 9007199254740991`}},
		{"fractional count", snap, func(d map[string]any) { body(d)["rows"] = 1.5 },
			[]string{`body.rows: 1.5 is not an integer in range, expected an integer between -9007199254740991 and 9007199254740991`}},
		{"rows do not add up and bad hash", snap, func(d map[string]any) { body(d)["rows"] = 1; body(d)["metadata_hash"] = "ABC" },
			[]string{
				`body.rows: 1 is not the sum of the windows' rows (39600)`,
				`body.metadata_hash: "ABC" is not a hash, expected 64 lower-case hex digits (SHA-256)`,
			}},
		{"unknown body field", snap, func(d map[string]any) { body(d)["windows"].([]any)[1].(map[string]any)["values"] = []any{1, 2} },
			[]string{`body.windows[1].values: unknown field, expected one of bad_quality, from, rows, signal, to, uncertain`}},
		{"window backwards", snap, func(d map[string]any) { body(d)["windows"].([]any)[0].(map[string]any)["to"] = "2026-03-01T07:00:00Z" },
			[]string{`body.windows[0].to: 2026-03-01T07:00:00Z is before from (2026-03-01T08:00:00.123456789Z)`}},
		{"hyper-parameter not scalar", train, func(d map[string]any) { body(d)["hyper_params"].(map[string]any)["layers"] = []any{8, 4} },
			[]string{`body.hyper_params.layers: got an array, expected a string, number or boolean`}},
		{"round metric name", round, func(d map[string]any) { body(d)["metrics"].(map[string]any)["False Alarms"] = 0.1 },
			[]string{`body.metrics.False Alarms: is not a metric name, expected an identifier`}},
		{"parent is itself", train, func(d map[string]any) {
			body(d)["parents"] = []any{map[string]any{"model": "press-anomaly", "version": "1.2.0"}}
		}, []string{`body.parents[0]: press-anomaly@1.2.0 is the version itself, expected an earlier version`}},
		{"bad signature encoding", snap, func(d map[string]any) { d["signature"] = "nope" },
			[]string{`signature: "nope" is not a signature, expected 64 bytes in padded standard base64`}},
		{"body not an object", snap, func(d map[string]any) { d["body"] = "x" },
			[]string{`body: got "x", expected an object`}},
		{"missing body", snap, func(d map[string]any) { delete(d, "body") },
			[]string{`body: missing, expected an object`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ledger.DecodeRecord(mutate(t, tt.rec, tt.f))
			if err == nil {
				t.Fatal("decoded without error")
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("error:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestDecodeRecordRejectsNonJSON(t *testing.T) {
	for _, in := range []string{``, `{`, `{"header":{},"header":{}}`, "\xff", `{} {}`, `[]`} {
		if _, err := ledger.DecodeRecord([]byte(in)); err == nil {
			t.Errorf("%q decoded without error", in)
		}
	}
}

func TestRecordValidatesBodyBeforeQueueing(t *testing.T) {
	err := ledger.Approval{ModelRef: ledger.ModelRef{Model: "m", Version: "1"}, ArtifactHash: h("a"), Decision: "maybe"}.Validate()
	if err == nil || err.Error() != `decision: "maybe" is not a decision, expected approved or rejected` {
		t.Errorf("err = %v", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	s := testSigner(f, "gw-1", "acme")
	for _, body := range sampleBodies() {
		b, _ := ledger.MarshalRecord(signed(f, s, body, ""))
		f.Add(b)
	}
	f.Add([]byte(`{"header":{"time":"x"},"body":{},"signature":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := ledger.DecodeRecord(b)
		if err != nil {
			return
		}
		// A record that decodes re-encodes to a document that decodes to the same record.
		again, err := ledger.MarshalRecord(rec)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		rec2, err := ledger.DecodeRecord(again)
		if err != nil {
			t.Fatalf("re-decode: %v\n%s", err, again)
		}
		if h1, _ := ledger.Hash(rec); func() string { h2, _ := ledger.Hash(rec2); return h2 }() != h1 {
			t.Fatalf("hash changed on re-encoding")
		}
	})
}
