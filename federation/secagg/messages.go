package secagg

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"slices"
)

// Message is one of the protocol's messages: *AdvertiseKeys, *Roster, *ShareKeys,
// *ShareBundle, *MaskedInput, *UnmaskRequest, *SurvivorSig, *SurvivorSigs,
// *UnmaskResponse.
type Message interface {
	tag() byte
	appendTo(b []byte) []byte
	read(r *reader)
}

// AdvertiseKeys (client → server, phase 1): the client's two X25519 public keys, one for
// encrypting shares to it, one for pairwise mask agreement, signed with its identity key
// (Identities) so that every other client can check them in the roster.
type AdvertiseKeys struct {
	From    uint32
	EncKey  [32]byte
	MaskKey [32]byte
	Sig     [ed25519.SignatureSize]byte
}

// Roster (server → every client): the AdvertiseKeys of every client in phase 1, by id.
type Roster struct {
	Keys []AdvertiseKeys
}

// EncryptedShare carries, from one client to another through the server, the sender's
// Shamir shares of its self-mask seed and of its mask private key, AES-GCM encrypted.
type EncryptedShare struct {
	From, To   uint32
	Ciphertext [ciphertextLen]byte
}

// ShareKeys (client → server, phase 2): one EncryptedShare for every other roster member.
type ShareKeys struct {
	From   uint32
	Shares []EncryptedShare
}

// ShareBundle (server → one client): the EncryptedShares addressed to it.
type ShareBundle struct {
	To     uint32
	Shares []EncryptedShare
}

// MaskedInput (client → server, phase 3): the masked, fixed-point input.
type MaskedInput struct {
	From uint32
	Y    []uint32
}

// UnmaskRequest (server → surviving clients, phase 4): who sent a masked input
// (Survivors) and who did not (Dropped).
type UnmaskRequest struct {
	Survivors, Dropped []uint32
}

// SurvivorSig (client → server, phase 4, the consistency check): the client's identity
// signature over the round and the survivor set it was shown (Identities.SurvivorStatement).
type SurvivorSig struct {
	From uint32
	Sig  [ed25519.SignatureSize]byte
}

// SurvivorSigs (server → surviving clients, phase 5): the survivor-set signatures the
// server collected, by increasing signer id. A client reveals shares only if at least t
// of them verify over the set it signed, and none fails.
type SurvivorSigs struct {
	Sigs []SurvivorSig
}

// Share is one Shamir share of Owner's secret.
type Share struct {
	Owner uint32
	Value [shareLen]byte
}

// UnmaskResponse (client → server, phase 5): shares of the self-mask seeds of survivors
// and of the mask private keys of dropouts, never both for one client.
type UnmaskResponse struct {
	From      uint32
	SelfSeeds []Share
	MaskKeys  []Share
}

const (
	plaintextLen   = 4 + 4 + shareLen + shareLen
	ciphertextLen  = plaintextLen + 16
	advertiseLen   = 4 + 32 + 32 + ed25519.SignatureSize
	survivorSigLen = 4 + ed25519.SignatureSize
	version        = 2
)

func (*AdvertiseKeys) tag() byte  { return 1 }
func (*Roster) tag() byte         { return 2 }
func (*ShareKeys) tag() byte      { return 3 }
func (*ShareBundle) tag() byte    { return 4 }
func (*MaskedInput) tag() byte    { return 5 }
func (*UnmaskRequest) tag() byte  { return 6 }
func (*UnmaskResponse) tag() byte { return 7 }
func (*SurvivorSig) tag() byte    { return 8 }
func (*SurvivorSigs) tag() byte   { return 9 }

func newMessage(tag byte) Message {
	switch tag {
	case 1:
		return &AdvertiseKeys{}
	case 2:
		return &Roster{}
	case 3:
		return &ShareKeys{}
	case 4:
		return &ShareBundle{}
	case 5:
		return &MaskedInput{}
	case 6:
		return &UnmaskRequest{}
	case 7:
		return &UnmaskResponse{}
	case 8:
		return &SurvivorSig{}
	case 9:
		return &SurvivorSigs{}
	}
	return nil
}

// Marshal encodes m for round: a tag, a version, the round, then m's fields, integers
// big-endian, lists prefixed by their length.
func Marshal(round uint64, m Message) []byte {
	b := []byte{m.tag(), version}
	b = binary.BigEndian.AppendUint64(b, round)
	return m.appendTo(b)
}

// Unmarshal decodes exactly one message of at most MaxClients list entries and MaxDim
// vector elements; anything else (unknown tag or version, short or trailing bytes, a list
// longer than the bytes left) is an error wrapping ErrInvalid. It checks form only;
// whether the message fits the protocol's state is for Client and Server.
func Unmarshal(b []byte) (round uint64, m Message, err error) {
	r := &reader{b: b}
	tag, ver := r.u8(), r.u8()
	round = r.u64()
	if r.err != nil {
		return 0, nil, r.err
	}
	if ver != version {
		return 0, nil, invalid("version %d, expected %d", ver, version)
	}
	if m = newMessage(tag); m == nil {
		return 0, nil, invalid("unknown message tag %d", tag)
	}
	m.read(r)
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return 0, nil, fmt.Errorf("%T: %w", m, r.err)
	}
	return round, m, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = invalid(format, args...)
	}
	r.b = nil
}

func (r *reader) take(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.fail("truncated")
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() byte    { return r.take(1)[0] }
func (r *reader) u32() uint32 { return binary.BigEndian.Uint32(r.take(4)) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.take(8)) }

// count reads a list length, refusing one above limit or needing more than the bytes left.
func (r *reader) count(limit, elemSize int) int {
	n := int(r.u32())
	if r.err == nil && (n > limit || n*elemSize > len(r.b)) {
		r.fail("list of %d entries (limit %d, %d bytes left)", n, limit, len(r.b))
		return 0
	}
	return n
}

// id reads a client id, which is 1..MaxClients.
func (r *reader) id() uint32 {
	v := r.u32()
	if r.err == nil && (v < 1 || v > MaxClients) {
		r.fail("client id %d out of range 1..%d", v, MaxClients)
	}
	return v
}

func (r *reader) ids() []uint32 {
	n := r.count(MaxClients, 4)
	out := make([]uint32, n)
	for i := range out {
		out[i] = r.id()
		if i > 0 && out[i] <= out[i-1] && r.err == nil {
			r.fail("ids not strictly increasing")
		}
	}
	return out
}

func appendIDs(b []byte, ids []uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(ids)))
	for _, id := range ids {
		b = binary.BigEndian.AppendUint32(b, id)
	}
	return b
}

func (m *AdvertiseKeys) appendTo(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, m.From)
	b = append(b, m.EncKey[:]...)
	b = append(b, m.MaskKey[:]...)
	return append(b, m.Sig[:]...)
}

func (m *AdvertiseKeys) read(r *reader) {
	m.From = r.id()
	copy(m.EncKey[:], r.take(32))
	copy(m.MaskKey[:], r.take(32))
	copy(m.Sig[:], r.take(ed25519.SignatureSize))
}

// entry is an element of a list by client id (a roster entry, a signature).
type entry[E any] interface {
	*E
	appendTo(b []byte) []byte
	read(r *reader)
	Sender() uint32
}

// Sender is the client that sent the message (and must have signed its transport).
func (m *AdvertiseKeys) Sender() uint32 { return m.From }

// Sender is the client that sent the message (and must have signed its transport).
func (m *ShareKeys) Sender() uint32 { return m.From }

// Sender is the client that sent the message (and must have signed its transport).
func (m *MaskedInput) Sender() uint32 { return m.From }

// Sender is the client that sent the message (and must have signed its transport).
func (m *SurvivorSig) Sender() uint32 { return m.From }

// Sender is the client that sent the message (and must have signed its transport).
func (m *UnmaskResponse) Sender() uint32 { return m.From }

func appendList[E any, P entry[E]](b []byte, list []E) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(list)))
	for i := range list {
		b = P(&list[i]).appendTo(b)
	}
	return b
}

// readList reads a list of entries of size bytes each, by strictly increasing client id.
func readList[E any, P entry[E]](r *reader, size int) []E {
	out := make([]E, r.count(MaxClients, size))
	for i := range out {
		P(&out[i]).read(r)
		if i > 0 && P(&out[i]).Sender() <= P(&out[i-1]).Sender() && r.err == nil {
			r.fail("%T client ids not strictly increasing", out[i])
		}
	}
	return out
}

func (m *Roster) appendTo(b []byte) []byte { return appendList(b, m.Keys) }

func (m *Roster) read(r *reader) { m.Keys = readList[AdvertiseKeys](r, advertiseLen) }

func appendShares(b []byte, s []EncryptedShare) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	for _, e := range s {
		b = binary.BigEndian.AppendUint32(b, e.From)
		b = binary.BigEndian.AppendUint32(b, e.To)
		b = append(b, e.Ciphertext[:]...)
	}
	return b
}

func readShares(r *reader) []EncryptedShare {
	out := make([]EncryptedShare, r.count(MaxClients, 8+ciphertextLen))
	for i := range out {
		out[i].From, out[i].To = r.id(), r.id()
		copy(out[i].Ciphertext[:], r.take(ciphertextLen))
	}
	return out
}

func (m *ShareKeys) appendTo(b []byte) []byte {
	return appendShares(binary.BigEndian.AppendUint32(b, m.From), m.Shares)
}

func (m *ShareKeys) read(r *reader) {
	m.From = r.id()
	m.Shares = readShares(r)
}

func (m *ShareBundle) appendTo(b []byte) []byte {
	return appendShares(binary.BigEndian.AppendUint32(b, m.To), m.Shares)
}

func (m *ShareBundle) read(r *reader) {
	m.To = r.id()
	m.Shares = readShares(r)
}

func (m *MaskedInput) appendTo(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, m.From)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Y)))
	for _, y := range m.Y {
		b = binary.BigEndian.AppendUint32(b, y)
	}
	return b
}

func (m *MaskedInput) read(r *reader) {
	m.From = r.id()
	m.Y = make([]uint32, r.count(MaxDim, 4))
	for i := range m.Y {
		m.Y[i] = r.u32()
	}
}

func (m *UnmaskRequest) appendTo(b []byte) []byte {
	return appendIDs(appendIDs(b, m.Survivors), m.Dropped)
}

func (m *UnmaskRequest) read(r *reader) {
	m.Survivors = r.ids()
	m.Dropped = r.ids()
}

func (m *SurvivorSig) appendTo(b []byte) []byte {
	return append(binary.BigEndian.AppendUint32(b, m.From), m.Sig[:]...)
}

func (m *SurvivorSig) read(r *reader) {
	m.From = r.id()
	copy(m.Sig[:], r.take(ed25519.SignatureSize))
}

func (m *SurvivorSigs) appendTo(b []byte) []byte { return appendList(b, m.Sigs) }

func (m *SurvivorSigs) read(r *reader) { m.Sigs = readList[SurvivorSig](r, survivorSigLen) }

func appendShareList(b []byte, s []Share) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	for _, e := range s {
		b = binary.BigEndian.AppendUint32(b, e.Owner)
		b = append(b, e.Value[:]...)
	}
	return b
}

func readShareList(r *reader) []Share {
	out := make([]Share, r.count(MaxClients, 4+shareLen))
	for i := range out {
		out[i].Owner = r.id()
		copy(out[i].Value[:], r.take(shareLen))
		if i > 0 && out[i].Owner <= out[i-1].Owner && r.err == nil {
			r.fail("share owners not strictly increasing")
		}
	}
	return out
}

func (m *UnmaskResponse) appendTo(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, m.From)
	return appendShareList(appendShareList(b, m.SelfSeeds), m.MaskKeys)
}

func (m *UnmaskResponse) read(r *reader) {
	m.From = r.id()
	m.SelfSeeds = readShareList(r)
	m.MaskKeys = readShareList(r)
}

// sortedIDs returns the keys of m in increasing order.
func sortedIDs[V any](m map[uint32]V) []uint32 {
	out := make([]uint32, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
