package wire

import (
	"testing"
	"time"
)

func TestTagged(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{"rejected: bad", TagRejected},
		{"endorse: failed; 127.0.0.1:1 (a): chaincode response 500, conflict: record x", TagConflict},
		// The actor's name is the record's own text: the tag that opens the message counts.
		{"chaincode response 500, unknown actor: key id k (rejected: me of org) is not registered", TagUnknownActor},
		{"not found: record x", TagNotFound},
		{"chaincode response 500, clock: record x: the transaction's time is 7m0s from this peer's clock", TagClock},
		{"connection refused", ""},
		{"", ""},
	} {
		if got := Tagged(tc.msg); got != tc.want {
			t.Errorf("Tagged(%q) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}

func TestAppended(t *testing.T) {
	got, err := Appended{Time: "2026-11-25T12:00:40Z", Tolerance: "1m0s"}.Ledger()
	if want := "2026-11-25T11:59:40Z"; err != nil || got.Tolerance != time.Minute || got.After().Format(time.RFC3339) != want {
		t.Fatalf("Ledger = %+v, %v; want appended after %s", got, err, want)
	}
	for _, bad := range []Appended{{Time: "yesterday", Tolerance: "1m"}, {Time: "2026-11-25T12:00:40Z", Tolerance: "-1m"}, {Time: "2026-11-25T12:00:40Z"}} {
		if _, err := bad.Ledger(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}
