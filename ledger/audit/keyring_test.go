package audit_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
)

func TestParseKeyring(t *testing.T) {
	a := audittest.Signer(t, "gw-a", "factory-a")
	b := audittest.Signer(t, "Alice Martin", "oem")
	ka := base64.StdEncoding.EncodeToString(a.Public())
	kb := base64.StdEncoding.EncodeToString(b.Public())
	tests := []struct {
		name, in string
		n        int
		err      []string
	}{
		{name: "two keys, comments, blank lines, tabs", in: "# keys\n\ngw-a factory-a " + ka + "\n  Alice  Martin\toem\t" + kb + "  \n", n: 2},
		{name: "empty", in: "", n: 0},
		{name: "too few fields", in: "gw-a " + ka + "\n", err: []string{"line 1: has 2 field(s), expected NAME ORG BASE64-ED25519-PUBLIC-KEY"}},
		{name: "bad key", in: "# x\ngw-a factory-a AAAA\nb oem !!!\n", err: []string{
			`line 2: "AAAA" is not an ed25519 public key, expected 32 bytes in standard padded base64`,
			`line 3: "!!!" is not an ed25519 public key`}},
		{name: "duplicate", in: "gw-a factory-a " + ka + "\nother org " + ka + "\n", err: []string{"line 2: key " + a.Actor().KeyID[:12] + " is already registered to gw-a (factory-a)"}},
		{name: "line too long", in: strings.Repeat("x", 9000) + "\n", err: []string{"line 1: bufio.Scanner: token too long"}},
		{name: "not utf-8", in: "gw-\xff factory-a " + ka + "\n", err: []string{"line 1: not UTF-8 text"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := audit.ParseKeyring([]byte(tt.in))
			if len(tt.err) == 0 {
				if err != nil || k.Len() != tt.n {
					t.Fatalf("got %d keys, %v; want %d", k.Len(), err, tt.n)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.err)
			}
			for _, want := range tt.err {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}

	k, err := audit.ParseKeyring([]byte("gw-a factory-a " + ka + "\nAlice Martin oem " + kb + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Ledger()) != 2 {
		t.Errorf("Ledger() has %d keys", len(k.Ledger()))
	}
	rec, err := b.Sign(ledger.Record{Header: ledger.Header{ID: ledger.NewID(), SchemaVersion: ledger.SchemaVersion,
		Type: ledger.TypeAlarmDigest, Time: audittest.T0, Site: "hub"},
		Body: []byte(`{"count":0,"from":"2026-03-02T06:00:00Z","log_hash":"` + audittest.Hash(nil) + `","to":"2026-03-02T06:00:00Z"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Check(rec); err != nil {
		t.Errorf("Check = %v", err)
	}
	forged := rec
	forged.Header.Site = "site-a"
	if err := k.Check(forged); !errors.Is(err, ledger.ErrBadSignature) {
		t.Errorf("Check(altered) = %v, want ErrBadSignature", err)
	}
	var none *audit.Keyring
	if err := none.Check(rec); !errors.Is(err, ledger.ErrUnknownActor) {
		t.Errorf("nil keyring Check = %v, want ErrUnknownActor", err)
	}
}

func FuzzParseKeyring(f *testing.F) {
	pub := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	line := audit.FormatKey(audit.Key{Name: "gw a", Org: "factory-a", Public: pub})
	f.Add([]byte(line + "\n"))
	f.Add([]byte("# c\n\n" + line + "\n" + line))
	f.Add([]byte("a b c\n\xff\xfe\n"))
	f.Add([]byte("x y " + strings.Repeat("A", 43) + "=\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := audit.ParseKeyring(b)
		if err != nil {
			if k != nil {
				t.Fatal("keyring returned with an error")
			}
			return
		}
		// Every parsed key is a whole ed25519 public key filed under its own id.
		for id, pub := range k.Ledger() {
			if ledger.KeyID(pub) != id || len(pub) != ed25519.PublicKeySize {
				t.Fatalf("key %s is %d bytes", id, len(pub))
			}
		}
	})
}
