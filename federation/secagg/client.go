package secagg

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

type clientPhase int

const (
	cAdvertise clientPhase = iota
	cShare
	cMask
	cCheck
	cUnmask
	cDone
)

// Client is one client's side of an aggregation. It is not safe for concurrent use; the
// calls must come in order: Advertise, ShareKeys, MaskInput, SignSurvivors, Unmask.
type Client struct {
	p        Params
	id       uint32
	key      ed25519.PrivateKey
	ids      Identities
	rnd      io.Reader
	phase    clientPhase
	encKey   *ecdh.PrivateKey
	maskKey  *ecdh.PrivateKey
	selfSeed [32]byte
	roster   map[uint32]AdvertiseKeys
	// held are the shares this client holds, of its own and others' secrets: owner → pair.
	held map[uint32]heldShares
	u2   []uint32 // clients that shared keys with this one (itself included), sorted
	req  UnmaskRequest
}

type heldShares struct {
	self, mask [shareLen]byte
}

// NewClient returns client id (1..p.Clients) of the aggregation p, which signs with key
// (whose public half must be ids.Keys[id]) and checks the others against ids. rnd is its
// randomness: nil for crypto/rand (production), a deterministic reader in tests.
func NewClient(p Params, id uint32, key ed25519.PrivateKey, ids Identities, rnd io.Reader) (*Client, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("secagg: params: %w", err)
	}
	if id < 1 || int(id) > p.Clients {
		return nil, fmt.Errorf("secagg: client id %d out of range 1..%d", id, p.Clients)
	}
	if err := ids.check(p); err != nil {
		return nil, err
	}
	if len(key) != ed25519.PrivateKeySize || !ids.Keys[id].Equal(key.Public()) {
		return nil, fmt.Errorf("secagg: client %d: its identity key is not the one the identities name: %w", id, ErrInvalid)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	return &Client{p: p, id: id, key: key, ids: ids, rnd: rnd}, nil
}

func (c *Client) randKey() (*ecdh.PrivateKey, error) {
	var b [32]byte
	if _, err := io.ReadFull(c.rnd, b[:]); err != nil {
		return nil, fmt.Errorf("secagg: randomness: %w", err)
	}
	return ecdh.X25519().NewPrivateKey(b[:])
}

func (c *Client) expect(ph clientPhase, call string) error {
	if c.phase != ph {
		return fmt.Errorf("client %d: %s in phase %d: %w", c.id, call, c.phase, ErrPhase)
	}
	return nil
}

// Advertise generates the client's keys for this round and returns them for the server.
func (c *Client) Advertise() (*AdvertiseKeys, error) {
	if err := c.expect(cAdvertise, "Advertise"); err != nil {
		return nil, err
	}
	var err error
	if c.encKey, err = c.randKey(); err != nil {
		return nil, err
	}
	if c.maskKey, err = c.randKey(); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(c.rnd, c.selfSeed[:]); err != nil {
		return nil, fmt.Errorf("secagg: randomness: %w", err)
	}
	m := &AdvertiseKeys{From: c.id}
	copy(m.EncKey[:], c.encKey.PublicKey().Bytes())
	copy(m.MaskKey[:], c.maskKey.PublicKey().Bytes())
	copy(m.Sig[:], ed25519.Sign(c.key, c.ids.keysStatement(c.p.Round, m)))
	c.phase = cShare
	return m, nil
}

// ShareKeys checks the roster (at least t distinct clients with distinct keys, each
// signed by its owner's identity key, this client among them with its own keys) and
// returns its Shamir shares of its self-mask
// seed and mask private key, one encrypted share per other roster member.
func (c *Client) ShareKeys(r *Roster) (*ShareKeys, error) {
	if err := c.expect(cShare, "ShareKeys"); err != nil {
		return nil, err
	}
	if len(r.Keys) < c.p.Threshold {
		return nil, fmt.Errorf("client %d: roster has %d clients, threshold %d: %w", c.id, len(r.Keys), c.p.Threshold, ErrTooFewClients)
	}
	roster := map[uint32]AdvertiseKeys{}
	seen := map[[32]byte]bool{}
	for _, k := range r.Keys {
		if _, dup := roster[k.From]; dup || int(k.From) > c.p.Clients || k.From < 1 {
			return nil, invalid("roster entry for client %d is duplicate or out of range", k.From)
		}
		if seen[k.EncKey] || seen[k.MaskKey] {
			return nil, invalid("roster reuses a public key (client %d)", k.From)
		}
		if !c.ids.verify(k.From, c.ids.keysStatement(c.p.Round, &k), k.Sig) {
			return nil, invalid("roster keys of client %d are not signed by its identity key", k.From)
		}
		seen[k.EncKey], seen[k.MaskKey] = true, true
		roster[k.From] = k
	}
	me, ok := roster[c.id]
	if !ok || !slices.Equal(me.EncKey[:], c.encKey.PublicKey().Bytes()) || !slices.Equal(me.MaskKey[:], c.maskKey.PublicKey().Bytes()) {
		return nil, invalid("roster lacks client %d or carries other keys for it", c.id)
	}
	c.roster = roster
	ids := sortedIDs(roster)
	rnd := func(b []byte) error { _, err := io.ReadFull(c.rnd, b); return err }
	selfShares, err := split(c.selfSeed, c.p.Threshold, ids, rnd)
	if err != nil {
		return nil, fmt.Errorf("secagg: randomness: %w", err)
	}
	var maskPriv [32]byte
	copy(maskPriv[:], c.maskKey.Bytes())
	maskShares, err := split(maskPriv, c.p.Threshold, ids, rnd)
	if err != nil {
		return nil, fmt.Errorf("secagg: randomness: %w", err)
	}
	c.held = map[uint32]heldShares{c.id: {self: selfShares[c.id], mask: maskShares[c.id]}}
	out := &ShareKeys{From: c.id}
	for _, v := range ids {
		if v == c.id {
			continue
		}
		vk := roster[v]
		aead, err := shareAEAD(c.encKey, vk.EncKey[:], c.p.Round, c.id, v)
		if err != nil {
			return nil, err
		}
		pt := make([]byte, 0, plaintextLen)
		pt = binary.BigEndian.AppendUint32(pt, c.id)
		pt = binary.BigEndian.AppendUint32(pt, v)
		s, m := selfShares[v], maskShares[v]
		pt = append(append(pt, s[:]...), m[:]...)
		e := EncryptedShare{From: c.id, To: v}
		// Each key encrypts one message only, so a fixed nonce is safe.
		copy(e.Ciphertext[:], aead.Seal(nil, make([]byte, aead.NonceSize()), pt, roundAD(c.p.Round)))
		out.Shares = append(out.Shares, e)
	}
	c.phase = cMask
	return out, nil
}

func roundAD(round uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("secagg share"), round)
}

// MaskInput decrypts the shares addressed to this client (their senders form U2), then
// returns x clipped, fixed-point encoded and masked with its self mask and one pairwise
// mask per other member of U2. len(x) must be Params.Dim, and every element finite: an
// error names the first that is not, and the client stays in its phase.
func (c *Client) MaskInput(b *ShareBundle, x []float32) (*MaskedInput, error) {
	if err := c.expect(cMask, "MaskInput"); err != nil {
		return nil, err
	}
	if len(x) != c.p.Dim {
		return nil, fmt.Errorf("secagg: input has %d elements, params say %d", len(x), c.p.Dim)
	}
	if err := checkFinite(x); err != nil {
		return nil, err
	}
	if b.To != c.id {
		return nil, invalid("bundle for client %d delivered to %d", b.To, c.id)
	}
	for _, e := range b.Shares {
		k, ok := c.roster[e.From]
		if !ok || e.To != c.id || e.From == c.id {
			return nil, invalid("share from %d to %d is not for client %d from a roster member", e.From, e.To, c.id)
		}
		if _, dup := c.held[e.From]; dup {
			return nil, invalid("two shares from client %d", e.From)
		}
		aead, err := shareAEAD(c.encKey, k.EncKey[:], c.p.Round, e.From, c.id)
		if err != nil {
			return nil, err
		}
		pt, err := aead.Open(nil, make([]byte, aead.NonceSize()), e.Ciphertext[:], roundAD(c.p.Round))
		if err != nil || binary.BigEndian.Uint32(pt) != e.From || binary.BigEndian.Uint32(pt[4:]) != c.id {
			return nil, invalid("share from client %d fails authentication", e.From)
		}
		var h heldShares
		copy(h.self[:], pt[8:8+shareLen])
		copy(h.mask[:], pt[8+shareLen:])
		c.held[e.From] = h
	}
	c.u2 = sortedIDs(c.held)
	if len(c.u2) < c.p.Threshold {
		return nil, fmt.Errorf("client %d: %d clients shared keys, threshold %d: %w", c.id, len(c.u2), c.p.Threshold, ErrTooFewClients)
	}
	y := make([]uint32, c.p.Dim)
	c.p.encode(y, x)
	var e expander
	e.add(y, derive(c.selfSeed[:], c.p.Round, "self", c.id, c.id), +1)
	for _, v := range c.u2 {
		if v == c.id {
			continue
		}
		vk := c.roster[v]
		seed, err := pairSeed(c.maskKey, vk.MaskKey[:], c.p.Round, c.id, v)
		if err != nil {
			return nil, err
		}
		e.add(y, seed, pairSign(c.id, v))
	}
	c.phase = cCheck
	return &MaskedInput{From: c.id, Y: y}, nil
}

// pairSign is the sign with which client u adds the mask it shares with v: the two add
// opposite signs, so the pair's masks cancel in the sum.
func pairSign(u, v uint32) int {
	if u < v {
		return +1
	}
	return -1
}

// SignSurvivors is the consistency check's first half: it checks the server's request
// and signs its survivor set with the client's identity key. It answers once, and refuses
// (ErrRefused) a second request, one naming a client as both survivor and dropout, one
// whose survivors and dropouts are not exactly the clients that shared keys with it, one
// that lists this client as a dropout, and one with fewer than t survivors.
func (c *Client) SignSurvivors(req *UnmaskRequest) (*SurvivorSig, error) {
	if c.phase > cCheck {
		return nil, fmt.Errorf("client %d: survivor set already signed for this round: %w", c.id, ErrRefused)
	}
	if err := c.expect(cCheck, "SignSurvivors"); err != nil {
		return nil, err
	}
	c.phase = cDone // whatever happens, sign at most once; success moves on to cUnmask
	surv := map[uint32]bool{}
	for _, s := range req.Survivors {
		surv[s] = true
	}
	for _, d := range req.Dropped {
		if surv[d] {
			return nil, fmt.Errorf("client %d: server asks for both the self-mask and the mask-key share of client %d: %w", c.id, d, ErrRefused)
		}
	}
	all := append(slices.Clone(req.Survivors), req.Dropped...)
	slices.Sort(all)
	if !slices.Equal(slices.Compact(all), c.u2) || len(all) != len(req.Survivors)+len(req.Dropped) {
		return nil, fmt.Errorf("client %d: survivors %v and dropouts %v are not the %v that shared keys: %w", c.id, req.Survivors, req.Dropped, c.u2, ErrRefused)
	}
	if !surv[c.id] {
		return nil, fmt.Errorf("client %d: listed as a dropout after sending its input: %w", c.id, ErrRefused)
	}
	if len(req.Survivors) < c.p.Threshold {
		return nil, fmt.Errorf("client %d: %d survivors, threshold %d: %w", c.id, len(req.Survivors), c.p.Threshold, ErrRefused)
	}
	c.req = UnmaskRequest{Survivors: sortedIDs(surv), Dropped: slices.Sorted(slices.Values(req.Dropped))}
	out := &SurvivorSig{From: c.id}
	copy(out.Sig[:], ed25519.Sign(c.key, c.ids.SurvivorStatement(c.p.Round, c.req.Survivors)))
	c.phase = cUnmask
	return out, nil
}

// Unmask is the consistency check's second half and the unmasking: it reveals shares of
// the self-mask seeds of the survivors and of the mask private keys of the dropouts only
// if sigs holds at least t signatures of distinct survivors over the survivor set this
// client signed, and none that fails (ErrInconsistent: the server showed clients
// different sets). It answers once; a second call is refused (ErrRefused).
func (c *Client) Unmask(sigs *SurvivorSigs) (*UnmaskResponse, error) {
	if c.phase == cDone {
		return nil, fmt.Errorf("client %d: unmasking already answered or refused for this round: %w", c.id, ErrRefused)
	}
	if err := c.expect(cUnmask, "Unmask"); err != nil {
		return nil, err
	}
	c.phase = cDone // whatever happens, answer at most once
	if err := c.ids.checkSignatures(c.p, c.req.Survivors, sigs.Sigs); err != nil {
		return nil, fmt.Errorf("client %d: consistency check: %w", c.id, err)
	}
	out := &UnmaskResponse{From: c.id}
	for _, s := range c.req.Survivors {
		out.SelfSeeds = append(out.SelfSeeds, Share{Owner: s, Value: c.held[s].self})
	}
	for _, d := range c.req.Dropped {
		out.MaskKeys = append(out.MaskKeys, Share{Owner: d, Value: c.held[d].mask})
	}
	return out, nil
}
