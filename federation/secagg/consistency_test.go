package secagg

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// splitViews plays a malicious server against prepared(t)'s five clients: clients in
// viewB are shown survivors {1,2,3,4} with 5 dropped (so they would reveal 5's mask-key
// shares), the others the honest set {1..5} (so they would reveal 5's self-mask shares):
// with t of each the server could unmask client 5's input. It returns every client's
// signature, by the view it signed.
func splitViews(t *testing.T, r *round, viewB []uint32) (a, b []SurvivorSig) {
	t.Helper()
	reqA := &UnmaskRequest{Survivors: []uint32{1, 2, 3, 4, 5}}
	reqB := &UnmaskRequest{Survivors: []uint32{1, 2, 3, 4}, Dropped: []uint32{5}}
	for id := uint32(1); id <= 5; id++ {
		req := reqA
		if slices.Contains(viewB, id) {
			req = reqB
		}
		sig, err := r.clients[id].SignSurvivors(wire(t, r.p.Round, req))
		if err != nil {
			t.Fatalf("client %d signing %v: %v", id, req.Survivors, err)
		}
		if req == reqB {
			b = append(b, *sig)
		} else {
			a = append(a, *sig)
		}
	}
	return a, b
}

func sorted(s []SurvivorSig) []SurvivorSig {
	s = slices.Clone(s)
	slices.SortFunc(s, func(x, y SurvivorSig) int { return int(x.From) - int(y.From) })
	return s
}

// TestSplitSurvivorSetsRevealNothing: whatever a server relays after showing clients
// different survivor sets, no client reveals a share unless t clients signed its own set,
// so the server never holds t self-mask shares and t mask-key shares of one client.
func TestSplitSurvivorSetsRevealNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		viewB []uint32
		relay func(id uint32, a, b []SurvivorSig, inB bool) []SurvivorSig
		// answered are the clients expected to reveal shares.
		answered []uint32
	}{
		{"every signature to everyone", []uint32{3, 4},
			func(_ uint32, a, b []SurvivorSig, _ bool) []SurvivorSig { return sorted(append(a, b...)) }, nil},
		{"only the signatures over each client's set", []uint32{3, 4},
			func(_ uint32, a, b []SurvivorSig, inB bool) []SurvivorSig {
				if inB {
					return b
				}
				return a
			}, []uint32{1, 2, 5}},
		{"view B padded with view A's signatures", []uint32{3, 4},
			func(_ uint32, a, b []SurvivorSig, inB bool) []SurvivorSig {
				if !inB {
					return a
				}
				forged := slices.Clone(b)
				for _, s := range a {
					if s.From != 5 && !slices.ContainsFunc(forged, func(x SurvivorSig) bool { return x.From == s.From }) {
						forged = append(forged, s)
					}
				}
				return sorted(forged)
			}, []uint32{1, 2, 5}},
		{"view B padded with a duplicated signer", []uint32{3, 4},
			func(_ uint32, a, b []SurvivorSig, inB bool) []SurvivorSig {
				if !inB {
					return a
				}
				return append(slices.Clone(b), b[0])
			}, []uint32{1, 2, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := prepared(t)
			a, b := splitViews(t, r, tc.viewB)
			var answered []uint32
			maskKeyShares5 := 0
			for id := uint32(1); id <= 5; id++ {
				inB := slices.Contains(tc.viewB, id)
				resp, err := r.clients[id].Unmask(&SurvivorSigs{Sigs: tc.relay(id, a, b, inB)})
				if err != nil {
					if !errors.Is(err, ErrInconsistent) {
						t.Errorf("client %d refused with %v, want ErrInconsistent", id, err)
					}
					continue
				}
				answered = append(answered, id)
				for _, s := range resp.MaskKeys {
					if s.Owner == 5 {
						maskKeyShares5++
					}
				}
			}
			if !slices.Equal(answered, tc.answered) {
				t.Errorf("clients %v revealed shares, want %v", answered, tc.answered)
			}
			if maskKeyShares5 >= r.p.Threshold {
				t.Errorf("server got %d mask-key shares of client 5 (threshold %d)", maskKeyShares5, r.p.Threshold)
			}
		})
	}
}

// TestServerCountsInconsistentSignatures: the server refuses signatures over another set
// (ErrInconsistent) and, without t valid ones, cannot close the consistency check.
func TestServerCountsInconsistentSignatures(t *testing.T) {
	r, req := prepared(t)
	if !slices.Equal(req.Survivors, []uint32{1, 2, 3, 4, 5}) {
		t.Fatalf("request %+v", req)
	}
	a, b := splitViews(t, r, []uint32{1, 2, 3})
	for _, s := range a {
		if err := r.server.ReceiveSurvivorSig(&s); err != nil {
			t.Fatalf("honest signature of %d: %v", s.From, err)
		}
	}
	for _, s := range b {
		if err := r.server.ReceiveSurvivorSig(&s); !errors.Is(err, ErrInconsistent) {
			t.Errorf("signature of %d over another set: %v", s.From, err)
		}
	}
	if err := r.server.ReceiveUnmask(&UnmaskResponse{From: 4}); !errors.Is(err, ErrPhase) {
		t.Errorf("unmask response before the check closed: %v", err)
	}
	_, err := r.server.Signatures()
	if !errors.Is(err, ErrInconsistent) || !strings.Contains(err.Error(), "2 valid survivor-set signatures and 3 over another set") {
		t.Errorf("closing with 2 valid signatures: %v", err)
	}
}

// TestForgedRosterRefused: a roster entry whose keys are not signed by the client's
// identity key (a server standing in for a client) is refused before any share is made.
func TestForgedRosterRefused(t *testing.T) {
	r := newRound(t, params(3, 2, 4), 1)
	var keys []AdvertiseKeys
	for id := uint32(1); id <= 3; id++ {
		m, err := r.clients[id].Advertise()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, *m)
	}
	keys[2].MaskKey[0] ^= 1 // the server swaps in its own key for client 3
	if _, err := r.clients[1].ShareKeys(&Roster{Keys: keys}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "not signed") {
		t.Errorf("forged roster: %v", err)
	}
	if err := r.server.ReceiveAdvertise(&keys[2]); !errors.Is(err, ErrInvalid) {
		t.Errorf("server accepted keys with a bad signature: %v", err)
	}
	// A client whose key is not the one the identities name cannot even start.
	if _, err := NewClient(r.p, 1, identityKey(2), identities(3), nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("client 1 with client 2's key: %v", err)
	}
	other := identities(3)
	delete(other.Keys, 2)
	if _, err := NewServer(r.p, other); err == nil || !strings.Contains(err.Error(), "client 2") {
		t.Errorf("server without client 2's identity: %v", err)
	}
}

// BenchmarkIdentityChecks measures what authenticating the protocol adds per client and
// round: signing its advertised keys and its survivor set, and verifying the n roster
// entries and the n relayed survivor-set signatures (n = clients, all survivors).
func BenchmarkIdentityChecks(b *testing.B) {
	for _, n := range []int{5, 10, 20, 100} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			p, ids := params(n, n/2+1, 1), identities(n)
			var survivors []uint32
			var sigs []SurvivorSig
			var roster []AdvertiseKeys
			for id := uint32(1); int(id) <= n; id++ {
				survivors = append(survivors, id)
				k := AdvertiseKeys{From: id, EncKey: [32]byte{byte(id)}, MaskKey: [32]byte{1, byte(id)}}
				copy(k.Sig[:], ed25519.Sign(identityKey(id), ids.keysStatement(p.Round, &k)))
				roster = append(roster, k)
			}
			for id := uint32(1); int(id) <= n; id++ {
				s := SurvivorSig{From: id}
				copy(s.Sig[:], ed25519.Sign(identityKey(id), ids.SurvivorStatement(p.Round, survivors)))
				sigs = append(sigs, s)
			}
			key := identityKey(1)
			b.ReportAllocs()
			for b.Loop() {
				ed25519.Sign(key, ids.keysStatement(p.Round, &roster[0]))
				for i := range roster {
					if !ids.verify(roster[i].From, ids.keysStatement(p.Round, &roster[i]), roster[i].Sig) {
						b.Fatal("roster signature")
					}
				}
				ed25519.Sign(key, ids.SurvivorStatement(p.Round, survivors))
				if err := ids.checkSignatures(p, survivors, sigs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N), "client_ms")
		})
	}
}
