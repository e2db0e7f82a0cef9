package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation/compress"
	"github.com/millwright-io/millwright/models"
)

// codecTransport is the part of a Transport a participant answering a round with a
// compressed update uses: the models and the round state it reads, the updates it sends.
// The other methods are not implemented (nil embedded interface). It stands in for NATS
// here only to set round states that no running hub shows on demand (a round that closed
// while the gateway trained, a restarted hub's new codecs); natsbus is tested on a real
// server, and the whole federation over it in federation_test.go.
type codecTransport struct {
	Transport
	hub    ed25519.PrivateKey
	arch   models.Architecture
	models map[string][]byte
	round  []byte   // the stored round state
	sent   [][]byte // the updates published, in order
}

func newCodecTransport(params int) *codecTransport {
	return &codecTransport{hub: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize)),
		arch: models.Architecture{Kind: "linear", Version: 1, Inputs: params, Params: params}, models: map[string][]byte{}}
}

// model stores the zero model of round, which lists participants, and returns its hash.
func (c *codecTransport) model(t *testing.T, round uint64, participants ...string) string {
	t.Helper()
	g := GlobalModel{Header: ModelHeader{Federation: "plant", Round: round, Architecture: c.arch, Created: time.Unix(0, 0).UTC(),
		Participants: participants}, Params: make([]float32, c.arch.Params)}
	b, err := g.SignedBytes(c.hub)
	if err != nil {
		t.Fatal(err)
	}
	c.models[g.Hash()] = b
	return g.Hash()
}

func (c *codecTransport) setRound(t *testing.T, st RoundState) {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	c.round = b
}

func (c *codecTransport) GetModel(_ context.Context, _, hash string) ([]byte, error) {
	if b, ok := c.models[hash]; ok {
		return b, nil
	}
	return nil, ErrNotFound
}

func (c *codecTransport) GetRound(context.Context, string) ([]byte, error) {
	if c.round == nil {
		return nil, ErrNotFound
	}
	return c.round, nil
}

func (c *codecTransport) PublishUpdate(_ context.Context, _ string, _ uint64, _ string, data []byte) error {
	c.sent = append(c.sent, slices.Clone(data))
	return nil
}

// lastSent decodes the last update published and its payload.
func (c *codecTransport) lastSent(t *testing.T) (*Update, []float32, string) {
	t.Helper()
	u, err := DecodeUpdate(c.sent[len(c.sent)-1])
	if err != nil {
		t.Fatal(err)
	}
	v, kind, err := compress.Decode(u.Payload, c.arch.Params)
	if err != nil {
		t.Fatal(err)
	}
	return u, v, kind
}

// addTrainer returns the global model plus delta: the update is delta itself.
type addTrainer struct{ delta []float32 }

func (a addTrainer) Train(_ context.Context, _ Task, global []float32) (TrainResult, error) {
	for i := range global {
		global[i] += a.delta[i]
	}
	return TrainResult{Params: global, Samples: 10}, nil
}

func codecParticipant(t *testing.T, tr *codecTransport, key ed25519.PrivateKey, delta []float32) *Participant {
	t.Helper()
	p, err := NewParticipant(ParticipantConfig{Federation: "plant", Name: "g0", HubKey: tr.hub.Public().(ed25519.PublicKey)}, tr, key,
		addTrainer{delta: delta}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func codecOf(kind string, k int) compress.Codec {
	c := compress.Codec{Kind: kind, K: k}
	c.SetDefaults()
	return c
}

// TestLateUpdateUsesTheCodecOfItsRound: a gateway whose round closed while it trained
// sends its update to the round now open (max_staleness), encoded with a codec that round
// offers. The rounds' codecs differ when the hub was restarted with new codecs between
// them; an update encoded with the old round's codec is refused by the hub as bad_payload
// ("codec was not offered"), and its error feedback is lost with it.
func TestLateUpdateUsesTheCodecOfItsRound(t *testing.T) {
	const dim = 300
	tr := newCodecTransport(dim)
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, ed25519.SeedSize))
	r := rand.New(rand.NewPCG(1, 2))
	delta := make([]float32, dim)
	for i := range delta {
		delta[i] = float32(r.NormFloat64() * 0.05)
	}
	p := codecParticipant(t, tr, key, delta)
	h0 := tr.model(t, 0)
	st1 := RoundState{Version: StateVersion, Federation: "plant", Round: 1, Phase: PhaseOpen, Global: h0, Targets: []string{"g0"},
		Quorum: 1, Deadline: time.Now().Add(time.Hour), MaxStaleness: 1, Codecs: []compress.Codec{codecOf(compress.Int8, 0)}}
	st2 := st1 // round 1 closed without g0 (abandoned); the restarted hub offers codec none only
	st2.Round, st2.Codecs = 2, []compress.Codec{codecOf(compress.None, 0)}
	tr.setRound(t, st2)
	if err := p.Answer(context.Background(), st1); err != nil {
		t.Fatal(err)
	}
	u, _, kind := tr.lastSent(t)
	if u.Round != 2 {
		t.Fatalf("update sent to round %d; want round 2, open", u.Round)
	}

	// The hub's own check of the update, in round 2.
	fc := FederationConfig{Name: "plant", Architecture: tr.arch, Codecs: st2.Codecs,
		Members: []Member{{Name: "g0", Key: PublicKey{PublicKey: key.Public().(ed25519.PublicKey)}}}}
	cfg := HubConfig{Federations: []FederationConfig{fc}}
	cfg.SetDefaults()
	h, err := NewHub(cfg, tr, tr.hub, HubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := newFedRun(h, cfg.Federations[0])
	if err != nil {
		t.Fatal(err)
	}
	m := &message{b: tr.sent[0], ready: make(chan struct{})}
	m.decode(dim, &f.bufs)
	c := &collected{updates: map[string]*Update{}, deltas: map[string][]float32{}, nonces: map[[nonceLen]byte]string{}, seen: map[string]bool{}}
	f.handle(st2, map[string]bool{"g0": true}, c, m)
	if c.updates["g0"] == nil {
		t.Fatalf("round 2 offers %q; the late update, encoded with %q, was refused: %+v", compress.None, kind, c.rejects)
	}
}

// TestErrorFeedbackOwesOnlyWhatTheHubUsed: error feedback keeps what an update left out,
// to send later, on the ground that the hub applied the rest. When the hub did not (the
// round closed without a model, or its model does not list the gateway: refused, left out
// by the rule, or too late), the next update is what the gateway would have sent had it
// sat that round out; otherwise the residual is carried as before. Without that, an
// update top-k left 98% of behind is sent again on top of the next round's delta, trained
// from the same model: nearly twice the gateway's step, which grows with every round the
// hub leaves it out.
func TestErrorFeedbackOwesOnlyWhatTheHubUsed(t *testing.T) {
	const dim = 100
	delta := make([]float32, dim)
	for i := range delta {
		delta[i] = float32(dim-i) / dim * float32(1-2*(i%2)) // distinct magnitudes: top-k is unambiguous
	}
	topk := codecOf(compress.TopK, 2)
	// want returns what a gateway sends with the deltas of rounds (the same delta each).
	want := func(rounds int) []float32 {
		var fb compress.Feedback
		var b []byte
		for range rounds {
			var err error
			if b, err = fb.Encode(topk, delta, nil); err != nil {
				t.Fatal(err)
			}
		}
		v, _, err := compress.Decode(b, dim)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name string
		// round2 returns round 2's global model: round 1's, or the one before if round 1
		// closed without a model.
		round2 func(tr *codecTransport, h0 string) (hash string, globalRound uint64)
		used   bool // whether round 1's update was used
	}{
		{"abandoned", func(tr *codecTransport, h0 string) (string, uint64) { return h0, 0 }, false},
		{"left out", func(tr *codecTransport, h0 string) (string, uint64) { return tr.model(t, 1, "g1", "g2"), 1 }, false},
		{"used", func(tr *codecTransport, h0 string) (string, uint64) { return tr.model(t, 1, "g0", "g1"), 1 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newCodecTransport(dim)
			p := codecParticipant(t, tr, ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, ed25519.SeedSize)), delta)
			h0 := tr.model(t, 0)
			st := RoundState{Version: StateVersion, Federation: "plant", Round: 1, Phase: PhaseOpen, Global: h0, Targets: []string{"g0"},
				Quorum: 1, Deadline: time.Now().Add(time.Hour), Codecs: []compress.Codec{topk}}
			tr.setRound(t, st)
			if err := p.Answer(context.Background(), st); err != nil {
				t.Fatal(err)
			}
			st.Round = 2
			st.Global, st.GlobalRound = tc.round2(tr, h0)
			tr.setRound(t, st)
			if err := p.Answer(context.Background(), st); err != nil {
				t.Fatal(err)
			}
			_, got, _ := tr.lastSent(t)
			rounds := 1 // as if it had sat round 1 out
			if tc.used {
				rounds = 2 // round 1's residual carried
			}
			if w := want(rounds); !slices.Equal(got, w) {
				t.Errorf("round 2 sent %v…; want %v…, what it sends after %d round(s) of feedback", nonzero(got), nonzero(w), rounds)
			}
		})
	}
}

// nonzero returns v's non-zero entries by index.
func nonzero(v []float32) map[int]float32 {
	out := map[int]float32{}
	for i, x := range v {
		if x != 0 {
			out[i] = x
		}
	}
	return out
}
