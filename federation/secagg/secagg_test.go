package secagg

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func params(n, t, dim int) Params {
	return Params{Round: 42, Clients: n, Threshold: t, Dim: dim, Range: 8, FracBits: 16}
}

// identityKey is client id's deterministic identity key.
func identityKey(id uint32) ed25519.PrivateKey {
	var seed [32]byte
	copy(seed[:], fmt.Sprintf("client-%d", id))
	return ed25519.NewKeyFromSeed(seed[:])
}

// identities returns the identities of clients 1..n.
func identities(n int) Identities {
	ids := Identities{Context: "test", Keys: map[uint32]ed25519.PublicKey{}}
	for id := uint32(1); int(id) <= n; id++ {
		ids.Keys[id] = identityKey(id).Public().(ed25519.PublicKey)
	}
	return ids
}

func newClient(t testing.TB, p Params, id uint32, rnd io.Reader) *Client {
	t.Helper()
	c, err := NewClient(p, id, identityKey(id), identities(p.Clients), rnd)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wire sends m through Marshal and Unmarshal, as the transport will.
func wire[M Message](t testing.TB, round uint64, m M) M {
	t.Helper()
	r, got, err := Unmarshal(Marshal(round, m))
	if err != nil || r != round {
		t.Fatalf("%T: round %d, %v", m, r, err)
	}
	return got.(M)
}

type round struct {
	p       Params
	server  *Server
	clients map[uint32]*Client
	inputs  map[uint32][]float32
	// beforeSum, when set, is called just before Server.Sum (benchmarks time it).
	beforeSum func()
}

func newRound(t testing.TB, p Params, seed uint64) *round {
	t.Helper()
	s, err := NewServer(p, identities(p.Clients))
	if err != nil {
		t.Fatal(err)
	}
	r := &round{p: p, server: s, clients: map[uint32]*Client{}, inputs: map[uint32][]float32{}}
	in := rand.New(rand.NewPCG(seed, 0))
	for id := uint32(1); int(id) <= p.Clients; id++ {
		r.clients[id] = newClient(t, p, id, rand.NewChaCha8([32]byte{byte(seed), byte(id)}))
		x := make([]float32, p.Dim)
		for i := range x {
			x[i] = float32(in.Float64()*2 - 1)
		}
		r.inputs[id] = x
	}
	return r
}

// run plays the protocol; clients in dropMask never send their masked input, clients in
// dropUnmask never answer the unmasking request. It returns the server's sum.
func (r *round) run(t testing.TB, dropMask, dropUnmask []uint32) ([]float32, error) {
	t.Helper()
	p, s := r.p, r.server
	bundles, err := r.setup(t)
	if err != nil {
		return nil, err
	}
	for id, c := range r.clients {
		if slices.Contains(dropMask, id) {
			continue
		}
		m, err := c.MaskInput(wire(t, p.Round, bundles[id]), r.inputs[id])
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ReceiveMasked(wire(t, p.Round, m)); err != nil {
			t.Fatal(err)
		}
	}
	req, err := s.Request()
	if err != nil {
		return nil, err
	}
	for _, id := range req.Survivors {
		m, err := r.clients[id].SignSurvivors(wire(t, p.Round, req))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ReceiveSurvivorSig(wire(t, p.Round, m)); err != nil {
			t.Fatal(err)
		}
	}
	sigs, err := s.Signatures()
	if err != nil {
		return nil, err
	}
	for _, id := range req.Survivors {
		if slices.Contains(dropUnmask, id) {
			continue
		}
		m, err := r.clients[id].Unmask(wire(t, p.Round, sigs))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ReceiveUnmask(wire(t, p.Round, m)); err != nil {
			t.Fatal(err)
		}
	}
	if r.beforeSum != nil {
		r.beforeSum()
	}
	return s.Sum()
}

// setup plays phases 1 and 2 (every client advertises and shares keys), through the
// wire encoding, and returns the share bundles.
func (r *round) setup(t testing.TB) (map[uint32]*ShareBundle, error) {
	t.Helper()
	p, s := r.p, r.server
	for _, c := range r.clients {
		m, err := c.Advertise()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ReceiveAdvertise(wire(t, p.Round, m)); err != nil {
			t.Fatal(err)
		}
	}
	roster, err := s.Roster()
	if err != nil {
		return nil, err
	}
	for _, c := range r.clients {
		m, err := c.ShareKeys(wire(t, p.Round, roster))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ReceiveShares(wire(t, p.Round, m)); err != nil {
			t.Fatal(err)
		}
	}
	return s.Bundles()
}

func (r *round) plainSum(except []uint32) []float64 {
	sum := make([]float64, r.p.Dim)
	for id, x := range r.inputs {
		if slices.Contains(except, id) {
			continue
		}
		for i, v := range x {
			sum[i] += float64(v)
		}
	}
	return sum
}

func checkSum(t *testing.T, r *round, got []float32, dropped []uint32) {
	t.Helper()
	want := r.plainSum(dropped)
	// Each input is rounded to 2^-(f+1); the sum is then converted to float32.
	tol := float64(r.p.Clients)*math.Ldexp(1, -r.p.FracBits-1) + 1e-6
	for i := range want {
		if d := math.Abs(float64(got[i]) - want[i]); d > tol {
			t.Fatalf("element %d: secure sum %v, plain sum %v (off by %.3g > %.3g)", i, got[i], want[i], d, tol)
		}
	}
}

func TestSumEqualsPlainSum(t *testing.T) {
	for _, tc := range []struct{ n, t int }{{2, 2}, {5, 3}, {10, 7}} {
		r := newRound(t, params(tc.n, tc.t, 1000), 1)
		got, err := r.run(t, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkSum(t, r, got, nil)
	}
}

func TestClippingToRange(t *testing.T) {
	r := newRound(t, params(3, 2, 2), 1)
	r.inputs[1] = []float32{100, -100}
	r.inputs[2] = []float32{1, 1}
	r.inputs[3] = []float32{1, 1}
	got, err := r.run(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{8 + 2, -8 + 2}; !slices.Equal(got, want) {
		t.Errorf("sum %v, want %v (inputs clipped to ±8)", got, want)
	}
}

// TestNonFiniteInputRefused: clipping leaves NaN as it is, and its fixed-point encoding is
// implementation-defined (the 32-bit sum could wrap), so MaskInput refuses a NaN or
// infinite element, naming it, and masks a finite input afterwards.
func TestNonFiniteInputRefused(t *testing.T) {
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		r := newRound(t, params(3, 2, 3), 1)
		bundles, err := r.setup(t)
		if err != nil {
			t.Fatal(err)
		}
		b := wire(t, r.p.Round, bundles[1])
		_, err = r.clients[1].MaskInput(b, []float32{1, bad, 2})
		if want := fmt.Sprintf("input element 1 is %v; expected a finite number", bad); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("input with %v: error %v; want it to say %q", bad, err, want)
		}
		if _, err := r.clients[1].MaskInput(b, []float32{1, 1, 2}); err != nil {
			t.Errorf("a finite input after the refused one: %v", err)
		}
	}
}

func TestDropoutsRecovered(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		dropMask, dropUnmask []uint32
	}{
		{"two before masking", []uint32{2, 5}, nil},
		{"two after masking", nil, []uint32{1, 4}},
		{"one before, one after", []uint32{3}, []uint32{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRound(t, params(5, 3, 500), 7)
			got, err := r.run(t, tc.dropMask, tc.dropUnmask)
			if err != nil {
				t.Fatal(err)
			}
			// Clients that dropped after uploading are in the sum; those before are not.
			checkSum(t, r, got, tc.dropMask)
		})
	}
}

func TestTooManyDropouts(t *testing.T) {
	r := newRound(t, params(5, 3, 10), 1)
	_, err := r.run(t, []uint32{1, 2, 3}, nil)
	if !errors.Is(err, ErrTooFewClients) || !strings.Contains(err.Error(), "2 of 5 clients sent masked inputs, threshold 3") {
		t.Errorf("three dropouts before masking: %v", err)
	}
	r = newRound(t, params(5, 3, 10), 1)
	_, err = r.run(t, []uint32{1}, []uint32{2, 3})
	if !errors.Is(err, ErrTooFewClients) || !strings.Contains(err.Error(), "2 of 5 clients answered the unmasking request, threshold 3") {
		t.Errorf("one dropout before and two after masking: %v", err)
	}
}

// maskedUpdate returns client 1's masked input for x in a round of n clients.
func maskedUpdate(t *testing.T, n int, x []float32) []uint32 {
	r := newRound(t, params(n, n/2+1, len(x)), 3)
	r.inputs[1] = x
	bundles, err := r.setup(t)
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.clients[1].MaskInput(bundles[1], x)
	if err != nil {
		t.Fatal(err)
	}
	return m.Y
}

// chiSquare256 is the chi-square statistic of the byte at bit offset shift of every
// element of v against the uniform distribution over 256 bins (255 degrees of freedom).
func chiSquare256(v []uint32, shift int) float64 {
	var bins [256]float64
	for _, y := range v {
		bins[byte(y>>shift)]++
	}
	e := float64(len(v)) / 256
	var chi float64
	for _, o := range bins {
		chi += (o - e) * (o - e) / e
	}
	return chi
}

func TestMaskedUpdateLooksUniform(t *testing.T) {
	const d = 100_000
	// The most structured input there is: a constant.
	x := make([]float32, d)
	for i := range x {
		x[i] = 0.5
	}
	y := maskedUpdate(t, 5, x)
	// χ²(255) exceeds 330.5 with probability 0.001 (for each of the two bytes tested).
	plain := make([]uint32, d)
	params(5, 3, d).encode(plain, x)
	for _, shift := range []int{24, 0} {
		if chi := chiSquare256(y, shift); chi > 330.5 {
			t.Errorf("masked update, byte at bit %d: χ² = %.1f > 330.5, not uniform", shift, chi)
		}
		// The test has power: the plain encoding fails it by far.
		if chi := chiSquare256(plain, shift); chi < 1e5 {
			t.Errorf("plain encoding, byte at bit %d: χ² = %.1f; the test cannot tell structure from noise", shift, chi)
		}
	}
	// No correlation with a varying plaintext.
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range x {
		x[i] = float32(rng.Float64()*16 - 8)
	}
	y = maskedUpdate(t, 5, x)
	ys := make([]float64, d)
	xs := make([]float64, d)
	for i := range y {
		ys[i], xs[i] = float64(y[i]), float64(x[i])
	}
	if c := correlation(xs, ys); math.Abs(c) > 4/math.Sqrt(d) {
		t.Errorf("correlation of masked update with its plaintext %.4f, want ≈ 0 (|r| ≤ %.4f)", c, 4/math.Sqrt(d))
	}
}

func correlation(a, b []float64) float64 {
	n := float64(len(a))
	var sa, sb, saa, sbb, sab float64
	for i := range a {
		sa += a[i]
		sb += b[i]
		saa += a[i] * a[i]
		sbb += b[i] * b[i]
		sab += a[i] * b[i]
	}
	return (sab/n - sa/n*sb/n) / math.Sqrt((saa/n-sa/n*sa/n)*(sbb/n-sb/n*sb/n))
}

// prepared plays a 5-client round up to the unmasking request, all clients masked.
func prepared(t *testing.T) (*round, *UnmaskRequest) {
	r := newRound(t, params(5, 3, 10), 2)
	bundles, err := r.setup(t)
	if err != nil {
		t.Fatal(err)
	}
	for id, c := range r.clients {
		m, err := c.MaskInput(bundles[id], r.inputs[id])
		if err != nil {
			t.Fatal(err)
		}
		r.server.ReceiveMasked(m)
	}
	req, err := r.server.Request()
	if err != nil {
		t.Fatal(err)
	}
	return r, req
}

func TestClientRefusesRevealingRequests(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  UnmaskRequest
		want string
	}{
		{"both shares of client 2", UnmaskRequest{Survivors: []uint32{1, 2, 3, 4, 5}, Dropped: []uint32{2}}, "both the self-mask and the mask-key share of client 2"},
		{"unknown dropout", UnmaskRequest{Survivors: []uint32{1, 2, 3, 4}, Dropped: []uint32{5, 6}}, "are not the"},
		{"missing client", UnmaskRequest{Survivors: []uint32{1, 2, 3}, Dropped: []uint32{4}}, "are not the"},
		{"too few survivors", UnmaskRequest{Survivors: []uint32{1, 2}, Dropped: []uint32{3, 4, 5}}, "2 survivors, threshold 3"},
		{"self as dropout", UnmaskRequest{Survivors: []uint32{2, 3, 4}, Dropped: []uint32{1, 5}}, "listed as a dropout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := prepared(t)
			_, err := r.clients[1].SignSurvivors(&tc.req)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want ErrRefused mentioning %q", err, tc.want)
			}
		})
	}
	// An honest request is answered once; a second, different one is refused.
	r, req := prepared(t)
	if _, err := r.clients[1].SignSurvivors(req); err != nil {
		t.Fatal(err)
	}
	_, err := r.clients[1].SignSurvivors(&UnmaskRequest{Survivors: []uint32{1, 3, 4, 5}, Dropped: []uint32{2}})
	if !errors.Is(err, ErrRefused) {
		t.Errorf("second request: %v", err)
	}
}

func TestTamperedShareIsRejected(t *testing.T) {
	r := newRound(t, params(3, 2, 4), 1)
	bundles, err := r.setup(t)
	if err != nil {
		t.Fatal(err)
	}
	roster := &Roster{}
	for _, id := range []uint32{1, 2, 3} {
		roster.Keys = append(roster.Keys, r.server.keys[id])
	}
	bundles[1].Shares[0].Ciphertext[10] ^= 1
	if _, err := r.clients[1].MaskInput(bundles[1], r.inputs[1]); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "authentication") {
		t.Errorf("tampered share: %v", err)
	}
	// A roster that swaps in another key for the client itself is refused.
	c := newClient(t, params(3, 2, 4), 1, rand.NewChaCha8([32]byte{9}))
	c.Advertise()
	if _, err := c.ShareKeys(roster); !errors.Is(err, ErrInvalid) {
		t.Errorf("roster with other keys for client 1: %v", err)
	}
}

func TestServerRefusesOutOfOrderAndDuplicates(t *testing.T) {
	s, _ := NewServer(params(3, 2, 4), identities(3))
	if _, err := s.Bundles(); !errors.Is(err, ErrPhase) {
		t.Errorf("bundles before roster: %v", err)
	}
	c := newClient(t, params(3, 2, 4), 1, nil) // crypto/rand
	m, _ := c.Advertise()
	if err := s.ReceiveAdvertise(m); err != nil {
		t.Fatal(err)
	}
	if err := s.ReceiveAdvertise(m); !errors.Is(err, ErrInvalid) {
		t.Errorf("duplicate: %v", err)
	}
	if _, err := s.Roster(); !errors.Is(err, ErrTooFewClients) {
		t.Errorf("roster of 1 with t=2: %v", err)
	}
}

func TestParamsValidate(t *testing.T) {
	p := params(100, 60, 10)
	p.Range = 1000
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "overflow") {
		t.Errorf("overflowing range: %v", err)
	}
	err := Params{Clients: 1, Threshold: 0, Dim: 0, Range: -1, FracBits: 30}.Validate()
	for _, want := range []string{"clients: 1", "threshold: 0", "dim: 0", "frac_bits: 30", "range: -1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if err := (Params{Clients: 4, Threshold: 2, Dim: 1, Range: 1, FracBits: 8}).Validate(); err == nil {
		t.Error("threshold of half the clients accepted")
	}
}

func TestShamir(t *testing.T) {
	secret := [32]byte{1, 2, 3, 250}
	rnd := rand.NewChaCha8([32]byte{1})
	ids := []uint32{1, 2, 3, 4, 5}
	shares, err := split(secret, 3, ids, func(b []byte) error { _, err := rnd.Read(b); return err })
	if err != nil {
		t.Fatal(err)
	}
	for _, subset := range [][]uint32{{1, 2, 3}, {2, 4, 5}, {1, 2, 3, 4, 5}} {
		sub := map[uint32][shareLen]byte{}
		for _, id := range subset {
			sub[id] = shares[id]
		}
		if got, err := combine(sub); err != nil || got != secret {
			t.Errorf("%v: %x, %v", subset, got, err)
		}
	}
	// Two shares (below the threshold) interpolate to something else.
	if got, _ := combine(map[uint32][shareLen]byte{1: shares[1], 2: shares[2]}); got == secret {
		t.Error("two shares reconstructed the secret with t=3")
	}
}

func FuzzUnmarshal(f *testing.F) {
	var ek, mk [32]byte
	ek[0], mk[0] = 1, 2
	seeds := []Message{
		&AdvertiseKeys{From: 1, EncKey: ek, MaskKey: mk},
		&Roster{Keys: []AdvertiseKeys{{From: 1}, {From: 2}}},
		&ShareKeys{From: 1, Shares: []EncryptedShare{{From: 1, To: 2}}},
		&ShareBundle{To: 2, Shares: []EncryptedShare{{From: 1, To: 2}}},
		&MaskedInput{From: 3, Y: []uint32{1, 2, 3}},
		&UnmaskRequest{Survivors: []uint32{1, 2}, Dropped: []uint32{3}},
		&UnmaskResponse{From: 1, SelfSeeds: []Share{{Owner: 1}, {Owner: 2}}, MaskKeys: []Share{{Owner: 3}}},
		&SurvivorSig{From: 2, Sig: [64]byte{1}},
		&SurvivorSigs{Sigs: []SurvivorSig{{From: 1}, {From: 4}}},
	}
	for _, m := range seeds {
		f.Add(Marshal(7, m))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		round, m, err := Unmarshal(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		if again := Marshal(round, m); !slices.Equal(again, b) {
			t.Fatalf("%T does not re-encode to its input", m)
		}
	})
}

// BenchmarkRound runs whole rounds of 100k-element inputs, one client dropping out before
// masking (so the server rebuilds its pairwise masks), and reports the time per client
// (key generation, sharing, masking, unmasking) and the server's unmasking time.
func BenchmarkRound(b *testing.B) {
	const dim = 100_000
	for _, n := range []int{5, 10, 20} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			p := params(n, n/2+1, dim)
			b.ReportAllocs()
			var server time.Duration
			for b.Loop() {
				r := newRound(b, p, 1)
				var start time.Time
				r.beforeSum = func() { start = time.Now() }
				_, err := r.run(b, []uint32{1}, nil)
				server += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
			}
			total := b.Elapsed().Seconds() * 1e3 / float64(b.N)
			srv := server.Seconds() * 1e3 / float64(b.N)
			b.ReportMetric((total-srv)/float64(n), "client_ms")
			b.ReportMetric(srv, "server_unmask_ms")
			b.ReportMetric(float64(len(Marshal(p.Round, &MaskedInput{From: 1, Y: make([]uint32, dim)})))/float64(4*dim), "upload_x_float32")
		})
	}
}

// BenchmarkPlainSum is the baseline: encoding and summing the same inputs unmasked.
func BenchmarkPlainSum(b *testing.B) {
	const dim = 100_000
	for _, n := range []int{5, 10, 20} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			p := params(n, n/2+1, dim)
			r := newRound(b, p, 1)
			enc := make([]uint32, dim)
			b.ReportAllocs()
			for b.Loop() {
				sum := make([]uint32, dim)
				for _, x := range r.inputs {
					p.encode(enc, x)
					for i, v := range enc {
						sum[i] += v
					}
				}
				p.decode(sum)
			}
			b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N)/float64(n), "client_ms")
		})
	}
}
