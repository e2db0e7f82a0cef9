package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/millwright-io/millwright/internal/atomicfile"
)

// Errors of signature verification, matched with errors.Is.
var (
	// ErrBadSignature: the signature does not verify: the record was altered after signing,
	// or signed by another key than the one its actor names.
	ErrBadSignature = errors.New("bad signature")
	// ErrUnknownActor: no public key is known for the record's actor key id.
	ErrUnknownActor = errors.New("unknown actor")
)

// signingDomain separates ledger signatures from every other use of the same key.
const signingDomain = "millwright-ledger-record-v1\n"

// SigningBytes returns what a record's signature covers: a domain separator followed by the
// canonical JSON of {"body":..., "header":...}.
func SigningBytes(rec Record) ([]byte, error) {
	b, err := CanonicalMarshal(struct {
		Header Header          `json:"header"`
		Body   json.RawMessage `json:"body"`
	}{rec.Header, rec.Body})
	if err != nil {
		return nil, fmt.Errorf("signing bytes of record %s: %w", rec.Header.ID, err)
	}
	return append([]byte(signingDomain), b...), nil
}

// KeyID returns the fingerprint of a public key that records name their actor by: the
// lower-case hex SHA-256 of the 32 key bytes.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])
}

func decodeSignature(s string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%.20q is not a signature, expected %d bytes in padded standard base64", s, ed25519.SignatureSize)
	}
	return b, nil
}

// Signer signs records for one actor. It is safe for concurrent use.
type Signer struct {
	key   ed25519.PrivateKey
	actor Actor
}

// NewSigner returns a signer for the actor named name in organisation org, holding key.
// The actor's KeyID is derived from the key.
func NewSigner(key ed25519.PrivateKey, name, org string) (*Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("new signer: key is %d bytes, expected an ed25519 private key of %d", len(key), ed25519.PrivateKeySize)
	}
	pub := key.Public().(ed25519.PublicKey)
	return &Signer{key: key, actor: Actor{KeyID: KeyID(pub), Name: name, Org: org}}, nil
}

// Actor returns the identity the signer puts in headers.
func (s *Signer) Actor() Actor { return s.actor }

// Public returns the signer's public key.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Sign sets rec's actor to the signer's, validates the record and returns it signed.
func (s *Signer) Sign(rec Record) (Record, error) {
	rec.Header.Actor = s.actor
	rec.Signature = base64.StdEncoding.EncodeToString(make([]byte, ed25519.SignatureSize)) // placeholder for Validate
	if err := rec.Validate(); err != nil {
		return Record{}, fmt.Errorf("sign record: %w", err)
	}
	msg, err := SigningBytes(rec)
	if err != nil {
		return Record{}, err
	}
	rec.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(s.key, msg))
	return rec, nil
}

// Verify checks rec's signature against pub, which must be the key the record's actor
// names. It returns an error wrapping ErrBadSignature when it does not verify.
func Verify(rec Record, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("verify record %s: public key is %d bytes, expected %d", rec.Header.ID, len(pub), ed25519.PublicKeySize)
	}
	if id := KeyID(pub); id != rec.Header.Actor.KeyID {
		return fmt.Errorf("verify record %s: %w: actor key id %s is not the key given (%s)", rec.Header.ID, ErrBadSignature, rec.Header.Actor.KeyID, id)
	}
	sig, err := decodeSignature(rec.Signature)
	if err != nil {
		return fmt.Errorf("verify record %s: %w: %v", rec.Header.ID, ErrBadSignature, err)
	}
	msg, err := SigningBytes(rec)
	if err != nil {
		return err
	}
	if !ed25519.Verify(pub, msg, sig) {
		return fmt.Errorf("verify record %s: %w", rec.Header.ID, ErrBadSignature)
	}
	return nil
}

// Keyring maps actor key ids to the public keys that are trusted to sign records. It is
// read-only after construction and then safe for concurrent use.
type Keyring map[string]ed25519.PublicKey

// NewKeyring returns a keyring holding pubs.
func NewKeyring(pubs ...ed25519.PublicKey) Keyring {
	k := Keyring{}
	for _, p := range pubs {
		k[KeyID(p)] = p
	}
	return k
}

// Verify checks rec's signature with the key of its actor; an actor the keyring does not
// hold is an error wrapping ErrUnknownActor.
func (k Keyring) Verify(rec Record) error {
	pub, ok := k[rec.Header.Actor.KeyID]
	if !ok {
		return fmt.Errorf("verify record %s: %w: key id %q (%s of %s)", rec.Header.ID, ErrUnknownActor, rec.Header.Actor.KeyID, rec.Header.Actor.Name, rec.Header.Actor.Org)
	}
	return Verify(rec, pub)
}

// GenerateKey returns a new ed25519 private key.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

// keyFile is the on-disk form of an identity key.
type keyFile struct {
	Type string `json:"type"` // always "ed25519"
	Seed string `json:"seed"` // base64 of the 32-byte seed
}

// SaveKey writes key to path atomically with mode 0600: a temporary file in the same
// directory, fsynced, renamed over path, and the directory fsynced.
func SaveKey(path string, key ed25519.PrivateKey) error {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("save key %s: key is %d bytes, expected %d", path, len(key), ed25519.PrivateKeySize)
	}
	b, err := json.Marshal(keyFile{Type: "ed25519", Seed: base64.StdEncoding.EncodeToString(key.Seed())})
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600, true); err != nil {
		return fmt.Errorf("save key: %w", err)
	}
	return nil
}

// LoadKey reads a key written by SaveKey. A key file readable by others than its owner is
// refused.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("load key %s: mode %04o lets others read it, expected 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load key: %w", err)
	}
	var kf keyFile
	if err := json.Unmarshal(b, &kf); err != nil {
		return nil, fmt.Errorf("load key %s: not a key file: %w", path, err)
	}
	seed, err := base64.StdEncoding.Strict().DecodeString(kf.Seed)
	if kf.Type != "ed25519" || err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("load key %s: type %q with a %d-byte seed, expected ed25519 with a %d-byte seed", path, kf.Type, len(seed), ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// LoadOrCreateKey loads the key at path, or generates and saves one if there is none.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	key, err := LoadKey(path)
	if !errors.Is(err, os.ErrNotExist) {
		return key, err
	}
	if key, err = GenerateKey(); err != nil {
		return nil, err
	}
	return key, SaveKey(path, key)
}
