package secagg

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"slices"
)

// Identities are the clients' long-term ed25519 public keys by id, with the context that
// every signature of the aggregation binds (a federation's name). They authenticate the
// advertised keys (nobody, the server included, can stand in for a client) and the
// consistency round (the server cannot show clients different survivor sets). They must
// come from a source the server does not control for that protection to hold against a
// malicious server.
type Identities struct {
	// Context names the aggregation's domain; with Params.Round it makes every signature
	// worthless in any other aggregation.
	Context string
	// Keys are the clients' public keys by id; every id 1..Params.Clients needs one.
	Keys map[uint32]ed25519.PublicKey
}

// Signature domains: a signature over one kind of statement is never valid for another.
const (
	keysDomain      = "millwright/secagg/keys/v1\x00"
	survivorsDomain = "millwright/secagg/survivors/v1\x00"
	maxContextLen   = 255
)

func (ids Identities) check(p Params) error {
	if len(ids.Context) > maxContextLen {
		return fmt.Errorf("secagg: identity context of %d bytes; at most %d", len(ids.Context), maxContextLen)
	}
	for id := uint32(1); int(id) <= p.Clients; id++ {
		if len(ids.Keys[id]) != ed25519.PublicKeySize {
			return fmt.Errorf("secagg: no ed25519 identity key for client %d", id)
		}
	}
	return nil
}

func (ids Identities) statement(domain string, round uint64) []byte {
	b := append([]byte(domain), byte(len(ids.Context)))
	b = append(b, ids.Context...)
	return binary.BigEndian.AppendUint64(b, round)
}

// keysStatement is what a client signs to advertise its keys.
func (ids Identities) keysStatement(round uint64, m *AdvertiseKeys) []byte {
	b := binary.BigEndian.AppendUint32(ids.statement(keysDomain, round), m.From)
	b = append(b, m.EncKey[:]...)
	return append(b, m.MaskKey[:]...)
}

// SurvivorStatement is what a client signs in the consistency round: the domain, the
// context, the round and the sorted survivor ids.
func (ids Identities) SurvivorStatement(round uint64, survivors []uint32) []byte {
	b := ids.statement(survivorsDomain, round)
	return appendIDs(b, survivors)
}

func (ids Identities) verify(id uint32, statement []byte, sig [ed25519.SignatureSize]byte) bool {
	k, ok := ids.Keys[id]
	return ok && len(k) == ed25519.PublicKeySize && ed25519.Verify(k, statement, sig[:])
}

// checkSignatures verifies a relayed set of survivor-set signatures against survivors:
// every signer is a distinct survivor and every signature verifies; at least t of them.
func (ids Identities) checkSignatures(p Params, survivors []uint32, sigs []SurvivorSig) error {
	st := ids.SurvivorStatement(p.Round, survivors)
	seen := map[uint32]bool{}
	for _, s := range sigs {
		if seen[s.From] || !slices.Contains(survivors, s.From) {
			return fmt.Errorf("signature of client %d: not a distinct survivor: %w", s.From, ErrInconsistent)
		}
		seen[s.From] = true
		if !ids.verify(s.From, st, s.Sig) {
			return fmt.Errorf("signature of client %d does not verify over the survivor set %v: the server showed clients different sets: %w", s.From, survivors, ErrInconsistent)
		}
	}
	if len(seen) < p.Threshold {
		return fmt.Errorf("%d valid signatures over the survivor set, threshold %d: %w", len(seen), p.Threshold, ErrInconsistent)
	}
	return nil
}
