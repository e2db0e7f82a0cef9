package compress

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/gateway/config"
)

func vec(seed uint64, n int) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * 0.05)
	}
	return v
}

func codec(kind string, k int) Codec {
	c := Codec{Kind: kind, K: k}
	c.SetDefaults()
	return c
}

func TestRoundTrip(t *testing.T) {
	v := vec(1, 1000)
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		c      Codec
		maxErr func(i int) float64
	}{
		{codec(None, 0), func(int) float64 { return 0 }},
		{codec(Int8, 0), func(i int) float64 { // within one quantization step of its chunk
			var m float64
			for _, x := range v[i/DefaultChunk*DefaultChunk : min(len(v), (i/DefaultChunk+1)*DefaultChunk)] {
				m = max(m, math.Abs(float64(x)))
			}
			return m / 127 * 1.0001
		}},
	} {
		b, err := Encode(tc.c, v, r)
		if err != nil {
			t.Fatal(err)
		}
		got, kind, err := Decode(b, len(v))
		if err != nil || kind != tc.c.Kind || len(got) != len(v) {
			t.Fatalf("%s: decode %v kind %q len %d", tc.c.Kind, err, kind, len(got))
		}
		for i := range v {
			if e := math.Abs(float64(got[i] - v[i])); e > tc.maxErr(i) {
				t.Fatalf("%s: parameter %d: %v decoded as %v", tc.c.Kind, i, v[i], got[i])
			}
		}
	}
	// topk keeps exactly the k largest magnitudes.
	b, _ := Encode(codec(TopK, 10), v, r)
	got, _, err := Decode(b, len(v))
	if err != nil {
		t.Fatal(err)
	}
	mags := make([]float64, len(v))
	for i, x := range v {
		mags[i] = math.Abs(float64(x))
	}
	slices.Sort(mags)
	kept := 0
	for i, x := range got {
		if x != 0 {
			kept++
			if x != v[i] || math.Abs(float64(x)) < mags[len(mags)-10] {
				t.Errorf("kept %d=%v, not among the 10 largest", i, x)
			}
		}
	}
	if kept != 10 {
		t.Errorf("kept %d entries, want 10", kept)
	}
}

func TestStochasticRoundingIsUnbiased(t *testing.T) {
	// Values between quantization steps: deterministic rounding would be biased.
	v := []float32{1, 0.3, -0.77, 0.001, 0.5, -0.25}
	r := rand.New(rand.NewPCG(3, 4))
	const trials = 20000
	sum := make([]float64, len(v))
	for range trials {
		b, _ := Encode(codec(Int8, 0), v, r)
		got, _, _ := Decode(b, len(v))
		for i, x := range got {
			sum[i] += float64(x)
		}
	}
	step := 1.0 / 127
	for i, x := range v {
		mean := sum[i] / trials
		// The rounding error of one trial is at most one step; its standard error over
		// the trials is at most step/(2√trials).
		if tol := 5 * step / (2 * math.Sqrt(trials)); math.Abs(mean-float64(x)) > tol {
			t.Errorf("value %v: mean of decodings %v, off by more than %.2g", x, mean, tol)
		}
	}
}

func TestInt8SizeAtMostAThirdOfFloat32(t *testing.T) {
	v := vec(2, 100_000)
	b, err := Encode(codec(Int8, 0), v, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	ratio := float64(len(b)) / float64(RawBytes(len(v)))
	t.Logf("int8: %d bytes for %d float32 bytes (%.3f×)", len(b), RawBytes(len(v)), ratio)
	if ratio > 0.3 {
		t.Errorf("int8 is %.3f× float32, want ≤ 0.3×", ratio)
	}
	b, _ = Encode(codec(TopK, 1000), v, nil)
	if ratio := float64(len(b)) / float64(RawBytes(len(v))); ratio > 0.015 {
		t.Errorf("top-1%% is %.4f× float32", ratio)
	}
}

// Append writes exactly Encode's bytes after what dst holds, leaves dst's bytes alone and,
// on error, returns dst as it was.
func TestAppendWritesAfterThePrefix(t *testing.T) {
	v := vec(3, 700)
	prefix := []byte("head")
	for _, k := range []string{None, Int8, TopK} {
		c := codec(k, 50)
		want, err := Encode(c, v, rand.New(rand.NewPCG(7, 7)))
		if err != nil {
			t.Fatal(err)
		}
		dst := append(make([]byte, 0, 8), prefix...) // too small: Append grows it
		got, err := Append(dst, c, v, rand.New(rand.NewPCG(7, 7)))
		if err != nil || string(got[:len(prefix)]) != string(prefix) || !slices.Equal(got[len(prefix):], want) {
			t.Fatalf("%s: Append gave %d bytes (%v), want %q then Encode's %d", k, len(got), err, prefix, len(want))
		}
		var f Feedback
		if got, err = f.Append(slices.Clone(prefix), c, v, rand.New(rand.NewPCG(7, 7))); err != nil || !slices.Equal(got[len(prefix):], want) {
			t.Fatalf("%s: Feedback.Append differs from Encode (%v)", k, err)
		}
		bad := slices.Clone(v)
		bad[9] = float32(math.Inf(1))
		if got, err := Append(dst, c, bad, rand.New(rand.NewPCG(7, 7))); err == nil || !slices.Equal(got, dst) {
			t.Fatalf("%s: Append of a non-finite vector returned %d bytes and %v; want dst and an error", k, len(got), err)
		}
	}
}

func TestErrorFeedbackCarriesTheResidual(t *testing.T) {
	var f Feedback
	c := codec(TopK, 2)
	v := []float32{5, 0.1, 0.2, -4, 0.3}
	b, _ := f.Encode(c, v, nil)
	sent, _, _ := Decode(b, len(v))
	if want := []float32{5, 0, 0, -4, 0}; !slices.Equal(sent, want) {
		t.Fatalf("first round sent %v, want %v", sent, want)
	}
	if want := []float32{0, 0.1, 0.2, 0, 0.3}; !slices.Equal(f.Residual(), want) {
		t.Fatalf("residual %v, want %v", f.Residual(), want)
	}
	// With zero new updates the residual is sent, largest first, until nothing is left.
	zero := make([]float32, len(v))
	b, _ = f.Encode(c, zero, nil)
	sent, _, _ = Decode(b, len(v))
	if want := []float32{0, 0, 0.2, 0, 0.3}; !slices.Equal(sent, want) {
		t.Errorf("second round sent %v, want the residual's top 2 %v", sent, want)
	}
	// Over many rounds, what was sent plus the residual equals what was given.
	var g Feedback
	r := rand.New(rand.NewPCG(9, 9))
	given, total := make([]float64, 200), make([]float64, 200)
	for round := range 50 {
		u := vec(uint64(round), 200)
		for i, x := range u {
			given[i] += float64(x)
		}
		b, err := g.Encode(codec(Int8, 0), u, r)
		if err != nil {
			t.Fatal(err)
		}
		s, _, _ := Decode(b, 200)
		for i, x := range s {
			total[i] += float64(x)
		}
	}
	for i, res := range g.Residual() {
		if d := math.Abs(total[i] + float64(res) - given[i]); d > 1e-4 {
			t.Fatalf("parameter %d: sent %v + residual %v ≠ given %v", i, total[i], res, given[i])
		}
	}
}

// TestFeedbackResidualIsWhatDecodingLost: the residual the encoder computes while
// encoding is exactly the corrected input minus what Decode returns, for every kind, over
// rounds in which the residual feeds back, and when the codec changes from round to round
// (a lossless round after lossy ones sends what they owed).
func TestFeedbackResidualIsWhatDecodingLost(t *testing.T) {
	mixed := []Codec{codec(None, 0), codec(Int8, 0), codec(None, 0), codec(TopK, 50), codec(Int8, 0), codec(None, 0), codec(None, 0)}
	for _, cs := range [][]Codec{{codec(None, 0)}, {codec(Int8, 0)}, {{Kind: Int8, Chunk: 7}}, {codec(TopK, 50)}, mixed} {
		var f Feedback
		r := rand.New(rand.NewPCG(5, 6))
		for round := range max(3, len(cs)) {
			c := cs[round%len(cs)]
			v := vec(uint64(10+round), 1001)
			if round == 1 {
				clear(v[100:400]) // whole int8 chunks of zeros
			}
			corrected := slices.Clone(v)
			for i, res := range f.Residual() { // none before the first round
				corrected[i] += res
			}
			b, err := f.Encode(c, v, r)
			if err != nil {
				t.Fatal(err)
			}
			sent, _, err := Decode(b, len(v))
			if err != nil {
				t.Fatal(err)
			}
			for i, res := range f.Residual() {
				if want := corrected[i] - sent[i]; math.Float32bits(res) != math.Float32bits(want) {
					t.Fatalf("%s chunk %d round %d: residual[%d] = %v, corrected − decoded = %v", c.Kind, c.Chunk, round, i, res, want)
				}
			}
		}
	}
}

// TestInt8LargestValuesDecodeFinite: a chunk holding ±MaxFloat32 encodes to values that
// decode finite (the scale is rounded down if 127 of it would overflow).
func TestInt8LargestValuesDecodeFinite(t *testing.T) {
	v := []float32{math.MaxFloat32, -math.MaxFloat32, 1, math.MaxFloat32 / 3}
	b, err := Encode(codec(Int8, 0), v, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := Decode(b, len(v))
	if err != nil {
		t.Fatal(err)
	}
	if got[0] < 0.99*math.MaxFloat32 || got[1] > -0.99*math.MaxFloat32 {
		t.Errorf("decoded %v", got)
	}
}

// TestEncodeRefusesNonFinite: a NaN or an infinity would not decode, so it is not encoded,
// and error feedback keeps its residual.
func TestEncodeRefusesNonFinite(t *testing.T) {
	for _, c := range []Codec{codec(None, 0), codec(Int8, 0), codec(TopK, 3)} {
		for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
			v := vec(3, 600)
			v[517] = bad
			if b, err := Encode(c, v, rand.New(rand.NewPCG(1, 1))); err == nil || !strings.Contains(err.Error(), "parameter 517") {
				t.Errorf("%s with %v: %d bytes, %v", c.Kind, bad, len(b), err)
			}
			var f Feedback
			if _, err := f.Encode(c, v, rand.New(rand.NewPCG(1, 1))); err == nil || slices.ContainsFunc(f.Residual(), func(x float32) bool { return x != 0 }) {
				t.Errorf("%s first feedback round with %v: %v, residual not zero", c.Kind, bad, err)
			}
			if _, err := f.Encode(c, vec(4, 600), rand.New(rand.NewPCG(1, 1))); err != nil {
				t.Fatal(err)
			}
			before := f.Residual()
			if _, err := f.Encode(c, v, rand.New(rand.NewPCG(1, 1))); err == nil {
				t.Errorf("%s feedback with %v: no error", c.Kind, bad)
			}
			if !slices.Equal(f.Residual(), before) {
				t.Errorf("%s feedback with %v changed the residual", c.Kind, bad)
			}
		}
	}
}

func TestNegotiate(t *testing.T) {
	offer := []Codec{codec(TopK, 100), codec(Int8, 0), codec(None, 0)}
	c, err := Negotiate(offer, []string{None, Int8})
	if err != nil || c.Kind != Int8 {
		t.Errorf("got %+v, %v; want int8", c, err)
	}
	if _, err := Negotiate(offer[:2], []string{None}); !errors.Is(err, ErrNoCommonCodec) {
		t.Errorf("no common codec: %v", err)
	}
}

func TestCodecValidate(t *testing.T) {
	err := Codec{Kind: "zstd", K: -1, Chunk: 0}.Validate()
	for _, want := range []string{`kind: "zstd"`, "k: -1", "chunk: 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if err := (Codec{Kind: TopK, Chunk: 1}).Validate(); err == nil || !strings.Contains(err.Error(), "k: 0") {
		t.Errorf("topk without k: %v", err)
	}
	var c Codec
	c.SetDefaults()
	if err := config.Decode([]byte("kind: topk\nk: 1000\n"), &c); err != nil || c.Validate() != nil || c.K != 1000 {
		t.Errorf("decode: %+v %v", c, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	v := vec(1, 300)
	good := map[string][]byte{}
	for _, k := range []string{None, Int8, TopK} {
		good[k], _ = Encode(codec(k, 5), v, rand.New(rand.NewPCG(1, 1)))
	}
	nan := slices.Clone(good[None])
	copy(nan[headerLen:], []byte{0, 0, 0xc0, 0x7f})
	minus128 := slices.Clone(good[Int8])
	minus128[headerLen+8] = 0x80
	huge := slices.Clone(good[Int8]) // a finite scale whose multiples overflow
	copy(huge[headerLen+4:], []byte{0x30, 0x30, 0x30, 0x7f})
	for name, b := range map[string][]byte{
		"empty":     nil,
		"bad magic": append([]byte("XXXX"), good[None][4:]...),
		"bad kind":  append(append([]byte{}, good[None][:4]...), append([]byte{9}, good[None][5:]...)...),
		"trailing":  append(slices.Clone(good[Int8]), 0),
		"truncated": good[TopK][:len(good[TopK])-1],
		"nan":       nan,
		"int8 -128": minus128,
		"int8 huge": huge,
		"too many":  good[None],
	} {
		max := 1000
		if name == "too many" {
			max = 299
		}
		if _, _, err := Decode(b, max); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	v := vec(1, 40)
	for _, k := range []string{None, Int8, TopK} {
		b, _ := Encode(codec(k, 7), v, rand.New(rand.NewPCG(1, 1)))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out, kind, err := Decode(b, 1<<16)
		// Into a used buffer (full of NaN), the same result: nothing of it is left over.
		dirty := slices.Repeat([]float32{float32(math.NaN())}, 64)
		if out2, kind2, err2 := DecodeTo(dirty, b, 1<<16); kind2 != kind || (err2 == nil) != (err == nil) ||
			!slices.EqualFunc(out, out2, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) }) {
			t.Fatalf("into a used buffer: %v %q %v; new: %v %q %v", out2, kind2, err2, out, kind, err)
		}
		if err != nil {
			if out != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v with output", err)
			}
			return
		}
		for i, x := range out {
			if !finite(x) {
				t.Fatalf("decoded non-finite %v at %d", x, i)
			}
		}
		// What decodes re-encodes (losslessly for none and topk) to something that decodes.
		if kind == None {
			b2, _ := Encode(codec(None, 0), out, nil)
			if !slices.Equal(b, b2) {
				t.Fatal("none: re-encoding differs")
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	v := vec(1, 100_000)
	for _, c := range []Codec{codec(None, 0), codec(Int8, 0), codec(TopK, 1000)} {
		b.Run(c.Kind, func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 1))
			var n int
			b.ReportAllocs()
			for b.Loop() {
				enc, err := Encode(c, v, r)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := Decode(enc, len(v)); err != nil {
					b.Fatal(err)
				}
				n = len(enc)
			}
			b.ReportMetric(float64(n), "bytes/update")
			b.ReportMetric(float64(n)/float64(RawBytes(len(v))), "x_float32")
			b.ReportMetric(float64(len(v))*float64(b.N)/b.Elapsed().Seconds(), "params/s")
		})
	}
}

// BenchmarkFeedbackEncode measures what a gateway does with each update: error feedback
// and encoding of 100k parameters (the residual computed while encoding).
func BenchmarkFeedbackEncode(b *testing.B) {
	v := vec(1, 100_000)
	for _, c := range []Codec{codec(None, 0), codec(Int8, 0)} {
		b.Run(c.Kind, func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 1))
			var f Feedback
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.Encode(c, v, r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(v))*float64(b.N)/b.Elapsed().Seconds(), "params/s")
		})
	}
}

// TestDecodeRefusesCountsPastInt: a parameter or entry count of 2³¹ or more is refused
// as too many, never taken as a negative int (on 386 and arm, int is 32 bits: a 13-byte
// topk payload with both counts 0xffffffff got past every check and made the decoder
// panic allocating a slice of length -1, taking the hub down with it).
func TestDecodeRefusesCountsPastInt(t *testing.T) {
	head := func(kind string, n uint32) []byte {
		b := append(magic[:0:0], magic[:]...)
		b = append(b, kindByte[kind])
		return binary.LittleEndian.AppendUint32(b, n)
	}
	for _, n := range []uint32{1 << 31, 0xfffffffe, 0xffffffff} {
		for name, b := range map[string][]byte{
			"none":          head(None, n),
			"int8":          binary.LittleEndian.AppendUint32(head(Int8, n), 1<<31),
			"topk":          binary.LittleEndian.AppendUint32(head(TopK, n), n),
			"topk count":    binary.LittleEndian.AppendUint32(head(TopK, 3), n),
			"topk k=n":      append(binary.LittleEndian.AppendUint32(head(TopK, n), 0xffffffff), 0, 0, 0, 0, 0),
			"int8 chunk":    binary.LittleEndian.AppendUint32(head(Int8, 3), n),
			"none too many": append(head(None, n), make([]byte, 16)...),
		} {
			if out, _, err := Decode(b, 1000); !errors.Is(err, ErrMalformed) || out != nil {
				t.Errorf("%s with count %#x: %d values, %v; want ErrMalformed", name, n, len(out), err)
			}
		}
	}
}

// TestFeedbackUndo: Undo puts the residual back as it was before the last Append, once,
// whatever the codecs of the updates before and of the one undone; after an Append that
// failed (and left the residual alone) there is nothing to undo.
func TestFeedbackUndo(t *testing.T) {
	for _, cs := range [][]Codec{{codec(TopK, 5)}, {codec(Int8, 0)}, {codec(None, 0), codec(TopK, 5)}, {codec(TopK, 5), codec(None, 0)}} {
		var f Feedback
		r := rand.New(rand.NewPCG(3, 3))
		var before []float32
		for round := range 3 {
			before = f.Residual()
			if _, err := f.Encode(cs[round%len(cs)], vec(uint64(round), 50), r); err != nil {
				t.Fatal(err)
			}
		}
		f.Undo()
		if got := f.Residual(); !slices.Equal(got, before) {
			t.Errorf("%v: after Undo the residual is %v, want %v", cs, got, before)
		}
		f.Undo() // once only
		if got := f.Residual(); !slices.Equal(got, before) {
			t.Errorf("%v: a second Undo changed the residual to %v", cs, got)
		}
		bad := vec(9, 50)
		bad[3] = float32(math.NaN())
		if _, err := f.Encode(codec(Int8, 0), bad, r); err == nil {
			t.Fatal("NaN encoded")
		}
		f.Undo() // nothing to undo
		if got := f.Residual(); !slices.Equal(got, before) {
			t.Errorf("%v: Undo after a failed Append changed the residual to %v", cs, got)
		}
	}
}
