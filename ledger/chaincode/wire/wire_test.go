package wire

import "testing"

func TestTagged(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{"rejected: bad", TagRejected},
		{"endorse: failed; 127.0.0.1:1 (a): chaincode response 500, conflict: record x", TagConflict},
		// The actor's name is the record's own text: the tag that opens the message counts.
		{"chaincode response 500, unknown actor: key id k (rejected: me of org) is not registered", TagUnknownActor},
		{"not found: record x", TagNotFound},
		{"connection refused", ""},
		{"", ""},
	} {
		if got := Tagged(tc.msg); got != tc.want {
			t.Errorf("Tagged(%q) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}
