package federation

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/millwright-io/millwright/federation/compress"
	"github.com/millwright-io/millwright/models"
)

// An update sealed with its payload encoded in place is the update Sign and Marshal give
// for the same payload: the same bytes, so it decodes, verifies and has the same ID; a
// payload writer's error comes back and nothing is returned. Each is sealed in the buffer
// of the one before, as a gateway does.
func TestSealedWritesThePayloadInPlace(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	delta := make([]float32, 5000)
	for i := range delta {
		delta[i] = float32(i%17) / 100
	}
	buf := bytes.Repeat([]byte{0xff}, 300) // each message is sealed in the one before's buffer
	for _, kind := range []string{compress.None, compress.Int8, compress.TopK} {
		c := compress.Codec{Kind: kind, K: 100}
		c.SetDefaults()
		u := Update{Federation: "press", Round: 9, BaseRound: 8, Participant: "gw-1", Samples: 40, Metrics: map[string]float64{"loss": 0.25}}
		u.Nonce[3] = 1
		got, err := u.sealed(buf, key, compress.Bound(c, len(delta)), func(b []byte) ([]byte, error) {
			return compress.Append(b, c, delta, rand.New(rand.NewPCG(1, 1)))
		})
		if err != nil {
			t.Fatal(err)
		}
		want := u // the same fields, its payload encoded apart
		if want.Payload, err = compress.Encode(c, delta, rand.New(rand.NewPCG(1, 1))); err != nil {
			t.Fatal(err)
		}
		want.Sign(key)
		if !bytes.Equal(got, want.Marshal()) {
			t.Fatalf("%s: sealed wire form (%d bytes) differs from Sign and Marshal's (%d)", kind, len(got), len(want.Marshal()))
		}
		d, err := DecodeUpdate(got)
		if err != nil || !bytes.Equal(d.Payload, u.Payload) || d.ID() != want.ID() {
			t.Fatalf("%s: decoded %v, payload equal %v", kind, err, err == nil && bytes.Equal(d.Payload, u.Payload))
		}
		buf = got
	}
	boom := errors.New("boom")
	u := Update{Federation: "press", Round: 1, Participant: "gw-1", Samples: 1}
	if b, err := u.sealed(nil, key, 10, func(b []byte) ([]byte, error) { return b, boom }); !errors.Is(err, boom) || b != nil {
		t.Fatalf("sealed with a failing payload: %d bytes, %v", len(b), err)
	}
}

// A model decoded into a used buffer with room for it has the parameters DecodeModel
// gives, in that buffer's storage; into one too small, in a new slice.
func TestDecodeModelIntoUsedBuffer(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	g := GlobalModel{Header: ModelHeader{Federation: "press", Round: 3, Architecture: models.Architecture{Kind: "linear", Version: 1, Params: 3}},
		Params: []float32{1, -2, 3.5}}
	b, err := g.SignedBytes(key)
	if err != nil {
		t.Fatal(err)
	}
	want, err := DecodeModel(b, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	used := []float32{9, 9, 9, 9, 9}
	got, err := decodeModel(b, key.Public().(ed25519.PublicKey), used)
	if err != nil || !slices.Equal(got.Params, want.Params) || &got.Params[0] != &used[0] || got.Hash() != want.Hash() {
		t.Fatalf("into a used buffer: %v, %v (in the buffer: %v)", err, got.Params, err == nil && &got.Params[0] == &used[0])
	}
	small := []float32{9, 9}
	if got, err := decodeModel(b, key.Public().(ed25519.PublicKey), small); err != nil || !slices.Equal(got.Params, want.Params) || small[0] != 9 {
		t.Fatalf("into a small buffer: %v, %v; the buffer %v", err, got.Params, small)
	}
}
