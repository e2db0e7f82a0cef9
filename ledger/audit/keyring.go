package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/millwright-io/millwright/ledger"
)

// ErrActorMismatch: a record is signed by a key the keyring registers under another name
// or organisation than the actor the record names.
var ErrActorMismatch = errors.New("actor does not match the keyring")

// Key is one trusted public key and the actor it is registered to.
type Key struct {
	Name   string
	Org    string
	Public ed25519.PublicKey
}

// Keyring is the set of keys an auditor trusts, with the actor each belongs to. The zero
// value trusts no key. It is read-only after ParseKeyring and then safe for concurrent use.
type Keyring struct {
	keys map[string]Key // by ledger.KeyID
}

// maxKeyringLine bounds one line of a keyring file.
const maxKeyringLine = 8 << 10

// ParseKeyring parses a keyring file: one key per line as
//
//	NAME ORG BASE64-ED25519-PUBLIC-KEY
//
// separated by spaces or tabs, where the key is the 32 raw public-key bytes in standard
// padded base64 (44 characters), ORG is one identifier and NAME is everything before it
// (it may contain single spaces). Blank lines and lines starting with # are ignored. The
// same key twice is an error, even under the same actor. Every problem is reported with its
// line number.
func ParseKeyring(b []byte) (*Keyring, error) {
	k := &Keyring{keys: map[string]Key{}}
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, maxKeyringLine)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !utf8.ValidString(line) {
			errs = append(errs, fmt.Errorf("line %d: not UTF-8 text", n))
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			errs = append(errs, fmt.Errorf("line %d: has %d field(s), expected NAME ORG BASE64-ED25519-PUBLIC-KEY", n, len(f)))
			continue
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(f[len(f)-1])
		if err != nil || len(raw) != ed25519.PublicKeySize {
			errs = append(errs, fmt.Errorf("line %d: %.60q is not an ed25519 public key, expected %d bytes in standard padded base64", n, f[len(f)-1], ed25519.PublicKeySize))
			continue
		}
		key := Key{Name: strings.Join(f[:len(f)-2], " "), Org: f[len(f)-2], Public: ed25519.PublicKey(raw)}
		id := ledger.KeyID(key.Public)
		if prev, ok := k.keys[id]; ok {
			errs = append(errs, fmt.Errorf("line %d: key %s is already registered to %s (%s)", n, short(id), prev.Name, prev.Org))
			continue
		}
		k.keys[id] = key
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("line %d: %w", n+1, err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	return k, nil
}

// FormatKey returns the keyring line for key.
func FormatKey(key Key) string {
	return key.Name + " " + key.Org + " " + base64.StdEncoding.EncodeToString(key.Public)
}

// Len returns the number of keys.
func (k *Keyring) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// Ledger returns the keyring as a ledger.Keyring (key ids to public keys).
func (k *Keyring) Ledger() ledger.Keyring {
	out := ledger.Keyring{}
	if k != nil {
		for id, key := range k.keys {
			out[id] = key.Public
		}
	}
	return out
}

// Check verifies rec's signature with the key of its actor and that the actor's name and
// organisation are those the key is registered to. Errors wrap ledger.ErrUnknownActor,
// ledger.ErrBadSignature or ErrActorMismatch.
func (k *Keyring) Check(rec ledger.Record) error {
	var key Key
	ok := false
	if k != nil {
		key, ok = k.keys[rec.Header.Actor.KeyID]
	}
	a := rec.Header.Actor
	if !ok {
		return fmt.Errorf("record %s: %w: key %s claimed by %s (%s) is not in the keyring", rec.Header.ID, ledger.ErrUnknownActor, short(a.KeyID), a.Name, a.Org)
	}
	if err := ledger.Verify(rec, key.Public); err != nil {
		return err
	}
	if a.Name != key.Name || a.Org != key.Org {
		return fmt.Errorf("record %s: %w: signed with the key of %s (%s) but names %s (%s)", rec.Header.ID, ErrActorMismatch, key.Name, key.Org, a.Name, a.Org)
	}
	return nil
}
