package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/millwright-io/millwright/ledger"
)

// ErrActorMismatch: a record is signed by a key the keyring registers under another name
// or organisation than the actor the record names.
var ErrActorMismatch = errors.New("actor does not match the keyring")

// ErrRevoked: a record is signed by a key the keyring revoked before the record was made.
var ErrRevoked = errors.New("key revoked")

// ErrNotPermitted: a record is of a type the keyring does not let its key sign (Key.Records).
var ErrNotPermitted = errors.New("record type not permitted for the key")

// Key is one trusted public key and the actor it is registered to.
type Key struct {
	Name   string
	Org    string
	Public ed25519.PublicKey
	// Revoked, when set, is when the key stopped being trusted (it was lost, stolen or
	// retired): records made then or later fail their check.
	Revoked time.Time
	// Records, when set, are the only record types the key may sign: the separation of
	// duties between, say, the engineer who approves a model and the QA lead who releases
	// it. Empty: any type.
	Records []ledger.Type
	// Channels, when set, are the only channels the key may release on (a QA engineer on
	// beta, the head of QA on stable too). Empty: any channel.
	Channels []string
	// Models, when set, are the only models whose versions the key may approve, reject or
	// release (the engineer responsible for one machine type): names, or prefixes ending
	// in * ("anomaly.pump-*"). Empty: any model.
	Models []string
}

// The prefixes of a keyring line's optional trailing fields.
const (
	revokedPrefix  = "revoked="
	recordsPrefix  = "records="
	channelsPrefix = "channels="
	modelsPrefix   = "models="
)

// Keyring is the set of keys an auditor trusts, with the actor each belongs to. The zero
// value trusts no key. It is read-only after ParseKeyring and then safe for concurrent use.
type Keyring struct {
	keys map[string]Key // by ledger.KeyID
}

// maxKeyringLine bounds one line of a keyring file.
const maxKeyringLine = 8 << 10

// ParseKeyring parses a keyring file: one key per line as
//
//	NAME ORG BASE64-ED25519-PUBLIC-KEY [records=TYPE,...] [channels=CHANNEL,...] [models=MODEL,...] [revoked=RFC3339-TIME]
//
// separated by spaces or tabs, where the key is the 32 raw public-key bytes in standard
// padded base64 (44 characters), ORG is one identifier and NAME is everything before it
// (it may contain single spaces). The optional fields come last, in any order. A key with
// records= may sign only records of those types (Key.Records); one with channels= may
// release only on those channels (Key.Channels); one with models= may sign off (approve,
// reject, release) only those models (Key.Models); one with revoked= is trusted only for
// records made before that time (Key.Revoked). Blank lines and lines
// starting with # are ignored. The same key twice is an error, even under the same actor.
// Every problem is reported with its line number.
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
		var key Key
		f, err := key.parseOptions(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n, err))
			continue
		}
		if len(f) < 3 {
			errs = append(errs, fmt.Errorf("line %d: has %d field(s), expected NAME ORG BASE64-ED25519-PUBLIC-KEY", n, len(f)))
			continue
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(f[len(f)-1])
		if err != nil || len(raw) != ed25519.PublicKeySize {
			errs = append(errs, fmt.Errorf("line %d: %.60q is not an ed25519 public key, expected %d bytes in standard padded base64", n, f[len(f)-1], ed25519.PublicKeySize))
			continue
		}
		key.Name, key.Org, key.Public = strings.Join(f[:len(f)-2], " "), f[len(f)-2], ed25519.PublicKey(raw)
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

// parseOptions takes the optional trailing fields off f into key and returns the rest.
func (key *Key) parseOptions(f []string) ([]string, error) {
	seen := map[string]bool{}
	for len(f) > 0 {
		last := f[len(f)-1]
		prefix, value, ok := strings.Cut(last, "=")
		prefix += "="
		if !ok || !slices.Contains([]string{revokedPrefix, recordsPrefix, channelsPrefix, modelsPrefix}, prefix) {
			return f, nil // a base64 key has '=' only at its end
		}
		if seen[prefix] {
			return nil, fmt.Errorf("%s appears twice, expected it at most once", prefix)
		}
		seen[prefix] = true
		switch prefix {
		case revokedPrefix:
			t, err := time.Parse(time.RFC3339Nano, value)
			if err != nil {
				return nil, fmt.Errorf("%.60q is not a revocation time, expected revoked=RFC3339 (2026-11-25T08:00:00Z)", last)
			}
			key.Revoked = t.UTC()
		case recordsPrefix:
			for name := range strings.SplitSeq(value, ",") {
				t := ledger.Type(name)
				if !slices.Contains(ledger.Types, t) {
					return nil, fmt.Errorf("records=: %.40q is not a record type, expected a comma-separated list of %s", name, joinTypes(ledger.Types, ", "))
				}
				if !slices.Contains(key.Records, t) {
					key.Records = append(key.Records, t)
				}
			}
		case channelsPrefix:
			for name := range strings.SplitSeq(value, ",") {
				if !ledger.ValidName(name) {
					return nil, fmt.Errorf("channels=: %.40q is not a channel name, expected a comma-separated list of identifiers (A-Z a-z 0-9 _ . : @ / + -)", name)
				}
				if !slices.Contains(key.Channels, name) {
					key.Channels = append(key.Channels, name)
				}
			}
		case modelsPrefix:
			for name := range strings.SplitSeq(value, ",") {
				if !ledger.ValidName(strings.TrimSuffix(name, "*")) {
					return nil, fmt.Errorf("models=: %.40q is not a model name, expected a comma-separated list of names or prefixes ending in * (anomaly.pump-*)", name)
				}
				if !slices.Contains(key.Models, name) {
					key.Models = append(key.Models, name)
				}
			}
		}
		f = f[:len(f)-1]
	}
	return f, nil
}

// joinTypes returns the names of ts separated by sep.
func joinTypes(ts []ledger.Type, sep string) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = string(t)
	}
	return strings.Join(names, sep)
}

// FormatKey returns the keyring line for key.
func FormatKey(key Key) string {
	line := key.Name + " " + key.Org + " " + base64.StdEncoding.EncodeToString(key.Public)
	if len(key.Records) > 0 {
		line += " " + recordsPrefix + joinTypes(key.Records, ",")
	}
	if len(key.Channels) > 0 {
		line += " " + channelsPrefix + strings.Join(key.Channels, ",")
	}
	if len(key.Models) > 0 {
		line += " " + modelsPrefix + strings.Join(key.Models, ",")
	}
	if !key.Revoked.IsZero() {
		line += " " + revokedPrefix + key.Revoked.UTC().Format(time.RFC3339Nano)
	}
	return line
}

// Revoked returns when the key with id (ledger.KeyID) was revoked: zero when it was not, or
// is not in the keyring.
func (k *Keyring) Revoked(id string) time.Time {
	if k == nil {
		return time.Time{}
	}
	return k.keys[id].Revoked
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

// Check verifies rec's signature with the key of its actor, that the actor's name and
// organisation are those the key is registered to, that the key may sign records of rec's
// type (and, for a release, on its channel), and that the key was not revoked when rec
// says it was made. Errors wrap
// ledger.ErrUnknownActor, ledger.ErrBadSignature, ErrActorMismatch, ErrNotPermitted or
// ErrRevoked.
//
// The time is the signer's claim: whoever holds a revoked key can sign a record dated
// before the revocation. CheckAfter also takes what the ledger's order says.
func (k *Keyring) Check(rec ledger.Record) error {
	return k.CheckAfter(rec, After{})
}

// After is the latest time the ledger shows a record came after, whatever time the
// record says it was made, and how the ledger shows it.
type After struct {
	Time time.Time // zero: unknown
	// Appended: the ledger vouches that the record was appended after Time
	// (ledger.AppendTimes: Fabric's endorsed transaction time). Otherwise the record
	// follows another one made at Time: one the ledger holds before it, when the ledger's
	// order is the order records were appended in (the local ledger's chain), or one that
	// produced the model version it is about (on any ledger).
	Appended bool
}

// raise moves a to t when t is later.
func (a *After) raise(t time.Time, appended bool) {
	if t.After(a.Time) {
		a.Time, a.Appended = t, appended
	}
}

// CheckAfter is Check for a record that came after after: a record of a revoked key
// fails too when after is at or past the revocation, however early rec says it was made
// (it was backdated).
func (k *Keyring) CheckAfter(rec ledger.Record, after After) error {
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
	if err := key.permits(rec); err != nil {
		return err
	}
	switch r := key.Revoked; {
	case r.IsZero():
	case !rec.Header.Time.Before(r):
		return fmt.Errorf("record %s: %w: the key of %s (%s) was revoked at %s, and the record was made at %s", rec.Header.ID, ErrRevoked,
			key.Name, key.Org, r.Format(time.RFC3339), rec.Header.Time.Format(time.RFC3339))
	case !after.Time.IsZero() && !after.Time.Before(r):
		how := "follows one made at"
		if after.Appended {
			how = "was appended to the ledger after"
		}
		return fmt.Errorf("record %s: %w: the key of %s (%s) was revoked at %s, and the record, dated %s, %s %s (backdated)",
			rec.Header.ID, ErrRevoked, key.Name, key.Org, r.Format(time.RFC3339), rec.Header.Time.Format(time.RFC3339), how, after.Time.Format(time.RFC3339))
	}
	return nil
}

// permits checks that key may sign rec: its type (Records), and for a sign-off its model
// (Models) and a release's channel (Channels). A record whose body a limit needs and
// cannot be read is not permitted.
func (key Key) permits(rec ledger.Record) error {
	id, who := rec.Header.ID, key.Name+" ("+key.Org+")"
	if len(key.Records) > 0 && !slices.Contains(key.Records, rec.Header.Type) {
		return fmt.Errorf("record %s: %w: %s may sign %s records, and this is a %s record", id, ErrNotPermitted, who, joinTypes(key.Records, " and "), rec.Header.Type)
	}
	t := rec.Header.Type
	limitsModel := len(key.Models) > 0 && (t == ledger.TypeApproval || t == ledger.TypeRelease)
	limitsChannel := len(key.Channels) > 0 && t == ledger.TypeRelease
	if !limitsModel && !limitsChannel {
		return nil
	}
	body, err := rec.DecodeBody()
	var m ledger.ModelRef
	channel := ""
	switch b := body.(type) {
	case ledger.Approval:
		m = b.ModelRef
	case ledger.Release:
		m, channel = b.ModelRef, b.Channel
	default:
		return fmt.Errorf("record %s: %w: its body cannot be read (%T): %v", id, ErrNotPermitted, body, err)
	}
	if limitsModel && !slices.ContainsFunc(key.Models, func(p string) bool { return matchModel(p, m.Model) }) {
		return fmt.Errorf("record %s: %w: %s may sign off %s, and this %s is of %s", id, ErrNotPermitted, who, strings.Join(key.Models, " and "), t, m)
	}
	if limitsChannel && !slices.Contains(key.Channels, channel) {
		return fmt.Errorf("record %s: %w: %s may release on %s, and this release is on %s", id, ErrNotPermitted, who, strings.Join(key.Channels, " and "), channel)
	}
	return nil
}

// matchModel reports whether model is pattern, or starts with pattern's prefix when
// pattern ends in *.
func matchModel(pattern, model string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(model, prefix)
	}
	return model == pattern
}
