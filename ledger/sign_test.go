package ledger_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/ledger"
)

func TestVerify(t *testing.T) {
	s := testSigner(t, "gw-1", "acme")
	other := testSigner(t, "gw-2", "acme")
	rec := signed(t, s, sampleBodies()[4], "")
	tests := []struct {
		name string
		rec  func() ledger.Record
		keys ledger.Keyring
		want error
	}{
		{"good", func() ledger.Record { return rec }, ledger.NewKeyring(s.Public()), nil},
		{"tampered header", func() ledger.Record { r := rec; r.Header.Site = "site-b"; return r }, ledger.NewKeyring(s.Public()), ledger.ErrBadSignature},
		{"tampered body", func() ledger.Record {
			r := rec
			r.Body = []byte(strings.Replace(string(r.Body), "approved", "rejected", 1))
			return r
		}, ledger.NewKeyring(s.Public()), ledger.ErrBadSignature},
		{"tampered signature", func() ledger.Record {
			r := rec
			c := byte('A')
			if r.Signature[0] == c {
				c = 'B'
			}
			r.Signature = string(c) + r.Signature[1:]
			return r
		}, ledger.NewKeyring(s.Public()), ledger.ErrBadSignature},
		{"actor swapped to another key", func() ledger.Record { r := rec; r.Header.Actor = other.Actor(); return r },
			ledger.NewKeyring(s.Public(), other.Public()), ledger.ErrBadSignature},
		{"unknown actor", func() ledger.Record { return rec }, ledger.NewKeyring(other.Public()), ledger.ErrUnknownActor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.keys.Verify(tt.rec())
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	if err := ledger.Verify(rec, other.Public()); !errors.Is(err, ledger.ErrBadSignature) {
		t.Errorf("Verify with the wrong key = %v", err)
	}
}

func TestSignRefusesInvalidRecords(t *testing.T) {
	s := testSigner(t, "gw-1", "acme")
	_, err := s.Sign(ledger.Record{Header: ledger.Header{ID: ledger.NewID(), SchemaVersion: 1, Type: ledger.TypeRelease, Time: t0, Site: "site a"}, Body: []byte(`{}`)})
	if err == nil || !strings.Contains(err.Error(), `header.site: "site a" is not an identifier`) || !strings.Contains(err.Error(), "body.channel: missing") {
		t.Errorf("Sign = %v", err)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "identity.key")
	key, err := ledger.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	again, err := ledger.LoadOrCreateKey(path)
	if err != nil || !again.Equal(key) {
		t.Fatalf("reloaded key differs: %v", err)
	}
	if names, _ := os.ReadDir(dir); len(names) != 1 {
		t.Errorf("temporary files left: %v", names)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.LoadKey(path); err == nil || !strings.Contains(err.Error(), "expected 0600") {
		t.Errorf("LoadKey of a 0644 file = %v", err)
	}
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte(`{"type":"rsa","seed":"AAAA"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.LoadKey(bad); err == nil || !strings.Contains(err.Error(), `type "rsa" with a 3-byte seed, expected ed25519 with a 32-byte seed`) {
		t.Errorf("LoadKey of a bad file = %v", err)
	}
}

// TestSignedRecordGolden pins the signed form: the canonical bytes, the signature (ed25519
// is deterministic) and the hash of a fixed record. A change here breaks every verifier
// and every chain already written, so it needs a new schema version.
func TestSignedRecordGolden(t *testing.T) {
	s := testSigner(t, "gw-1", "acme")
	body, err := ledger.CanonicalMarshal(sampleBodies()[1])
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Sign(ledger.Record{Header: ledger.Header{ID: "6f1c2b7a-9d3e-4f5a-8b6c-7d8e9f0a1b2c", SchemaVersion: 1,
		Type: ledger.TypeLocalTraining, Time: t0, Site: "site-a", Gateway: "gw-1", FirmwareVersion: "3.4.1", Prev: h("prev")}, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ledger.MarshalRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := ledger.Hash(rec)
	got = append(append(got, '\n'), hash+"\n"...)
	golden := filepath.Join("testdata", "signed-record.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("signed record changed:\n got %s\nwant %s", got, want)
	}
}
