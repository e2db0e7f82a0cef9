package secagg

import (
	"crypto/ecdh"
	"fmt"
	"slices"
)

type serverPhase int

const (
	sAdvertise serverPhase = iota
	sShare
	sMask
	sCheck
	sUnmask
	sDone
)

// Server is the server's side of an aggregation. It is not safe for concurrent use. Each
// phase collects messages (Receive*) until the caller, on its deadline or when all have
// arrived, closes it (Roster, Bundles, Request, Signatures, Sum); a client missing at a
// close has dropped out. Messages that do not fit the phase are refused with ErrInvalid.
// Every close is a deterministic function of the messages accepted before it, so a
// server fed the same accepted messages in the same order closes every phase the same
// way (how a restarted server is rebuilt from a durable log).
type Server struct {
	p      Params
	ids    Identities
	phase  serverPhase
	keys   map[uint32]AdvertiseKeys // U1
	shares map[uint32][]EncryptedShare
	u2     []uint32
	masked map[uint32][]uint32 // U3
	req    UnmaskRequest
	sigs   map[uint32]SurvivorSig // U4
	bad    int                    // survivor-set signatures that did not verify
	resp   map[uint32]*UnmaskResponse
}

// NewServer returns the server of the aggregation p, which checks signatures against ids.
func NewServer(p Params, ids Identities) (*Server, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("secagg: params: %w", err)
	}
	if err := ids.check(p); err != nil {
		return nil, err
	}
	return &Server{p: p, ids: ids, keys: map[uint32]AdvertiseKeys{}, shares: map[uint32][]EncryptedShare{},
		masked: map[uint32][]uint32{}, sigs: map[uint32]SurvivorSig{}, resp: map[uint32]*UnmaskResponse{}}, nil
}

func (s *Server) expect(ph serverPhase, call string) error {
	if s.phase != ph {
		return fmt.Errorf("server: %s in phase %d: %w", call, s.phase, ErrPhase)
	}
	return nil
}

func (s *Server) enough(have int, what string) error {
	if have < s.p.Threshold {
		return fmt.Errorf("server: %d of %d clients %s, threshold %d: the round cannot complete: %w", have, s.p.Clients, what, s.p.Threshold, ErrTooFewClients)
	}
	return nil
}

// ReceiveAdvertise records a client's keys.
func (s *Server) ReceiveAdvertise(m *AdvertiseKeys) error {
	if err := s.expect(sAdvertise, "ReceiveAdvertise"); err != nil {
		return err
	}
	if m.From < 1 || int(m.From) > s.p.Clients {
		return invalid("keys from client %d, outside 1..%d", m.From, s.p.Clients)
	}
	if _, dup := s.keys[m.From]; dup {
		return invalid("second set of keys from client %d", m.From)
	}
	if !s.ids.verify(m.From, s.ids.keysStatement(s.p.Round, m), m.Sig) {
		return invalid("keys of client %d are not signed by its identity key", m.From)
	}
	s.keys[m.From] = *m
	return nil
}

// Roster closes phase 1 and returns the roster to send to every client in it.
func (s *Server) Roster() (*Roster, error) {
	if err := s.expect(sAdvertise, "Roster"); err != nil {
		return nil, err
	}
	if err := s.enough(len(s.keys), "advertised keys"); err != nil {
		return nil, err
	}
	r := &Roster{}
	for _, id := range sortedIDs(s.keys) {
		r.Keys = append(r.Keys, s.keys[id])
	}
	s.phase = sShare
	return r, nil
}

// ReceiveShares records a client's encrypted shares: one for every other roster member.
func (s *Server) ReceiveShares(m *ShareKeys) error {
	if err := s.expect(sShare, "ReceiveShares"); err != nil {
		return err
	}
	if _, ok := s.keys[m.From]; !ok {
		return invalid("shares from client %d, not in the roster", m.From)
	}
	if _, dup := s.shares[m.From]; dup {
		return invalid("second set of shares from client %d", m.From)
	}
	to := map[uint32]bool{}
	for _, e := range m.Shares {
		if _, ok := s.keys[e.To]; !ok || e.From != m.From || e.To == m.From || to[e.To] {
			return invalid("client %d sent a share from %d to %d", m.From, e.From, e.To)
		}
		to[e.To] = true
	}
	if len(to) != len(s.keys)-1 {
		return invalid("client %d sent %d shares for %d other roster members", m.From, len(to), len(s.keys)-1)
	}
	s.shares[m.From] = m.Shares
	return nil
}

// Bundles closes phase 2 and returns, for every client that sent shares (U2), the shares
// addressed to it by the other members of U2.
func (s *Server) Bundles() (map[uint32]*ShareBundle, error) {
	if err := s.expect(sShare, "Bundles"); err != nil {
		return nil, err
	}
	if err := s.enough(len(s.shares), "shared keys"); err != nil {
		return nil, err
	}
	s.u2 = sortedIDs(s.shares)
	out := map[uint32]*ShareBundle{}
	for _, v := range s.u2 {
		out[v] = &ShareBundle{To: v}
	}
	for _, u := range s.u2 {
		for _, e := range s.shares[u] {
			if b, ok := out[e.To]; ok {
				b.Shares = append(b.Shares, e)
			}
		}
	}
	s.phase = sMask
	return out, nil
}

// ReceiveMasked records a client's masked input.
func (s *Server) ReceiveMasked(m *MaskedInput) error {
	if err := s.expect(sMask, "ReceiveMasked"); err != nil {
		return err
	}
	if !slices.Contains(s.u2, m.From) {
		return invalid("masked input from client %d, which did not share keys", m.From)
	}
	if _, dup := s.masked[m.From]; dup {
		return invalid("second masked input from client %d", m.From)
	}
	if len(m.Y) != s.p.Dim {
		return invalid("masked input from client %d has %d elements, expected %d", m.From, len(m.Y), s.p.Dim)
	}
	s.masked[m.From] = m.Y
	return nil
}

// Request closes phase 3 and returns the unmasking request for the survivors (U3): the
// clients of U2 without a masked input are the dropouts. The survivors sign its survivor
// set next (ReceiveSurvivorSig).
func (s *Server) Request() (*UnmaskRequest, error) {
	if err := s.expect(sMask, "Request"); err != nil {
		return nil, err
	}
	if err := s.enough(len(s.masked), "sent masked inputs"); err != nil {
		return nil, err
	}
	s.req = UnmaskRequest{Survivors: sortedIDs(s.masked)}
	for _, u := range s.u2 {
		if _, ok := s.masked[u]; !ok {
			s.req.Dropped = append(s.req.Dropped, u)
		}
	}
	s.phase = sCheck
	return &s.req, nil
}

// ReceiveSurvivorSig records a survivor's signature over the survivor set; one that does
// not verify over the server's set is refused with ErrInconsistent (the client was shown
// another set, or the signature is forged) and counted.
func (s *Server) ReceiveSurvivorSig(m *SurvivorSig) error {
	if err := s.expect(sCheck, "ReceiveSurvivorSig"); err != nil {
		return err
	}
	if _, ok := s.masked[m.From]; !ok {
		return invalid("survivor-set signature from client %d, not a survivor", m.From)
	}
	if _, dup := s.sigs[m.From]; dup {
		return invalid("second survivor-set signature from client %d", m.From)
	}
	if !s.ids.verify(m.From, s.ids.SurvivorStatement(s.p.Round, s.req.Survivors), m.Sig) {
		s.bad++
		return fmt.Errorf("server: survivor-set signature of client %d does not verify over %v: %w", m.From, s.req.Survivors, ErrInconsistent)
	}
	s.sigs[m.From] = *m
	return nil
}

// Signatures closes the consistency check and returns the signatures to relay to the
// signers (U4), who then answer the unmasking request. With fewer than t valid
// signatures the round cannot complete: the error wraps ErrInconsistent if some
// signature failed, else ErrTooFewClients.
func (s *Server) Signatures() (*SurvivorSigs, error) {
	if err := s.expect(sCheck, "Signatures"); err != nil {
		return nil, err
	}
	if len(s.sigs) < s.p.Threshold {
		if s.bad > 0 {
			return nil, fmt.Errorf("server: %d valid survivor-set signatures and %d over another set, threshold %d: %w", len(s.sigs), s.bad, s.p.Threshold, ErrInconsistent)
		}
		if err := s.enough(len(s.sigs), "signed the survivor set"); err != nil {
			return nil, err
		}
	}
	out := &SurvivorSigs{}
	for _, id := range sortedIDs(s.sigs) {
		out.Sigs = append(out.Sigs, s.sigs[id])
	}
	s.phase = sUnmask
	return out, nil
}

// ReceiveUnmask records a survivor's shares.
func (s *Server) ReceiveUnmask(m *UnmaskResponse) error {
	if err := s.expect(sUnmask, "ReceiveUnmask"); err != nil {
		return err
	}
	if _, ok := s.sigs[m.From]; !ok {
		return invalid("unmasking shares from client %d, which did not sign the survivor set", m.From)
	}
	if _, dup := s.resp[m.From]; dup {
		return invalid("second unmasking response from client %d", m.From)
	}
	owners := func(sh []Share) []uint32 {
		o := make([]uint32, len(sh))
		for i, x := range sh {
			o[i] = x.Owner
		}
		return o
	}
	if !slices.Equal(owners(m.SelfSeeds), s.req.Survivors) || !slices.Equal(owners(m.MaskKeys), s.req.Dropped) {
		return invalid("client %d answered for other clients than requested", m.From)
	}
	s.resp[m.From] = m
	return nil
}

// Sum closes phase 4: with shares from at least t survivors it removes every mask and
// returns the sum of the survivors' inputs, decoded from fixed point.
func (s *Server) Sum() ([]float32, error) {
	if err := s.expect(sUnmask, "Sum"); err != nil {
		return nil, err
	}
	if err := s.enough(len(s.resp), "answered the unmasking request"); err != nil {
		return nil, err
	}
	s.phase = sDone
	sum := make([]uint32, s.p.Dim)
	for _, u := range s.req.Survivors {
		for i, y := range s.masked[u] {
			sum[i] += y
		}
	}
	responders := sortedIDs(s.resp)[:s.p.Threshold]
	collect := func(owner uint32, self bool) map[uint32][shareLen]byte {
		sh := map[uint32][shareLen]byte{}
		for _, r := range responders {
			list := s.resp[r].MaskKeys
			if self {
				list = s.resp[r].SelfSeeds
			}
			i, _ := slices.BinarySearchFunc(list, owner, func(x Share, o uint32) int { return int(x.Owner) - int(o) })
			sh[r] = list[i].Value
		}
		return sh
	}
	var e expander
	for _, u := range s.req.Survivors {
		seed, err := combine(collect(u, true))
		if err != nil {
			return nil, fmt.Errorf("server: self-mask seed of client %d: %w", u, err)
		}
		e.add(sum, derive(seed[:], s.p.Round, "self", u, u), -1)
	}
	for _, d := range s.req.Dropped {
		key, err := combine(collect(d, false))
		if err != nil {
			return nil, fmt.Errorf("server: mask key of dropped client %d: %w", d, err)
		}
		priv, err := ecdh.X25519().NewPrivateKey(key[:])
		if err != nil {
			return nil, fmt.Errorf("server: mask key of dropped client %d: %w", d, err)
		}
		dk := s.keys[d]
		if !slices.Equal(priv.PublicKey().Bytes(), dk.MaskKey[:]) {
			return nil, invalid("reconstructed mask key of dropped client %d does not match its public key (bad shares)", d)
		}
		for _, u := range s.req.Survivors {
			uk := s.keys[u]
			seed, err := pairSeed(priv, uk.MaskKey[:], s.p.Round, u, d)
			if err != nil {
				return nil, err
			}
			e.add(sum, seed, -pairSign(u, d)) // remove what u added for the pair (u, d)
		}
	}
	return s.p.decode(sum), nil
}

// Survivors returns the clients whose inputs are in the sum (after Request).
func (s *Server) Survivors() []uint32 { return slices.Clone(s.req.Survivors) }
