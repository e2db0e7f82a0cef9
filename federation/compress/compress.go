// Package compress shrinks model updates for the trip from gateway to hub.
//
// Threat model: the bytes come from the network and are untrusted; Decode is strict (magic,
// version, kind, lengths checked against a caller's bound before anything is allocated,
// finite values, strictly increasing in-range indices, no trailing bytes) and fuzzed.
// Compression protects nothing: a compressed update reveals as much as the update. It is
// lossy; stochastic rounding keeps int8 unbiased and error feedback re-sends what top-k
// dropped in later rounds, so neither biases the aggregate.
package compress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/f32le"
)

// The kinds of Codec.
const (
	None = "none" // float32, 4 bytes per parameter
	Int8 = "int8" // int8 with stochastic rounding and one float32 scale per chunk
	TopK = "topk" // the K largest-magnitude entries, indices gap-coded as uvarints
)

var kindByte = map[string]byte{None: 0, Int8: 1, TopK: 2}

// DefaultChunk is the default number of values sharing one int8 scale.
const DefaultChunk = 256

// maxChunk bounds Codec.Chunk (and what Decode accepts).
const maxChunk = 1 << 20

// Codec describes how an update is compressed; the hub offers codecs with a round and a
// client picks one it supports (Negotiate).
type Codec struct {
	// Kind is "none", "int8" or "topk". Default "none".
	Kind string `yaml:"kind" json:"kind"`
	// K is the number of entries topk keeps (required for topk).
	K int `yaml:"k" json:"k,omitempty"`
	// Chunk is the number of values sharing one int8 scale. Default 256.
	Chunk int `yaml:"chunk" json:"chunk,omitempty"`
}

// SetDefaults fills in every field left at its zero value.
func (c *Codec) SetDefaults() {
	if c.Kind == "" {
		c.Kind = None
	}
	if c.Chunk == 0 {
		c.Chunk = DefaultChunk
	}
}

// Validate reports every problem of the codec at once, with paths relative to it.
func (c Codec) Validate() error {
	var p config.Problems
	if _, ok := kindByte[c.Kind]; !ok {
		p.Addf("kind", "%q is not a codec; expected %q, %q or %q", c.Kind, None, Int8, TopK)
	}
	if c.Kind == TopK && c.K < 1 {
		p.Addf("k", "%d must be ≥ 1 for topk", c.K)
	}
	if c.K < 0 {
		p.Addf("k", "%d must be ≥ 0", c.K)
	}
	if c.Chunk < 1 || c.Chunk > maxChunk {
		p.Addf("chunk", "%d is out of range; expected 1 to %d", c.Chunk, maxChunk)
	}
	return p.Err()
}

// ErrNoCommonCodec is returned (wrapped) by Negotiate when the client supports none of
// the offered codecs.
var ErrNoCommonCodec = errors.New("no common codec")

// Negotiate returns the first codec of offer (the hub's preference order) whose kind the
// client supports.
func Negotiate(offer []Codec, supported []string) (Codec, error) {
	for _, c := range offer {
		if slices.Contains(supported, c.Kind) {
			return c, c.Validate()
		}
	}
	kinds := make([]string, len(offer))
	for i, c := range offer {
		kinds[i] = c.Kind
	}
	return Codec{}, fmt.Errorf("compress: hub offers %q, client supports %q: %w", kinds, supported, ErrNoCommonCodec)
}

// RawBytes is the size of n parameters as float32, to compare encodings with.
func RawBytes(n int) int { return 4 * n }

const headerLen = 4 + 1 + 4 // magic+version, kind, n

var magic = [4]byte{'M', 'W', 'C', 1}

// Encode compresses v with c (which must be valid). r supplies the stochastic rounding of
// int8 (unused by the other kinds); it need not be cryptographic. A non-finite value in v
// is an error: it would not decode.
func Encode(c Codec, v []float32, r *rand.Rand) ([]byte, error) {
	return encode(nil, c, v, r, nil)
}

// Append is Encode appending the encoding to dst (grown once, to the encoding's bound): a
// caller building a message around the encoding writes it in place, without a copy. On
// error dst is returned as it was.
func Append(dst []byte, c Codec, v []float32, r *rand.Rand) ([]byte, error) {
	return encode(dst, c, v, r, nil)
}

// encode is Append; when residual is not nil (of v's length) it also sets residual to what
// the encoding loses, v minus what Decode returns, computed as Decode computes it.
func encode(dst []byte, c Codec, v []float32, r *rand.Rand, residual []float32) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return dst, fmt.Errorf("compress: codec: %w", err)
	}
	if uint64(len(v)) > math.MaxUint32 {
		return dst, fmt.Errorf("compress: %d parameters do not fit the format", len(v))
	}
	start := len(dst)
	b := slices.Grow(dst, Bound(c, len(v)))
	b = append(b, magic[:]...)
	b = append(b, kindByte[c.Kind])
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	switch c.Kind {
	case None:
		b = b[:start+headerLen+4*len(v)]
		if f32le.Encode(b[start+headerLen:], v) >= 0 {
			return dst, notFinite(v)
		}
		if residual != nil {
			clear(residual) // float32 is sent exactly
		}
	case Int8:
		b = binary.LittleEndian.AppendUint32(b, uint32(c.Chunk))
		for start := 0; start < len(v); start += c.Chunk {
			end := min(start+c.Chunk, len(v))
			var res []float32
			if residual != nil {
				res = residual[start:end]
			}
			var ok bool
			if b, ok = appendInt8Chunk(b, v[start:end], r.Uint64(), res); !ok {
				return dst, notFinite(v)
			}
		}
	case TopK:
		if f32le.NonFinite(v) >= 0 {
			return dst, notFinite(v)
		}
		idx := topK(v, c.K)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(idx)))
		prev := -1
		for _, i := range idx {
			b = binary.AppendUvarint(b, uint64(i-prev-1))
			prev = i
		}
		for _, i := range idx {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v[i]))
		}
		if residual != nil {
			copy(residual, v) // what was not kept
			for _, i := range idx {
				residual[i] = 0
			}
		}
	}
	return b, nil
}

// f32ExpMask is a float32's exponent field, all ones for NaN and the infinities only.
const f32ExpMask = 0x7f800000

func notFinite(v []float32) error {
	i := f32le.NonFinite(v)
	return fmt.Errorf("compress: parameter %d is %v; expected a finite number", i, v[i])
}

// Bound is an upper bound of the size of n parameters encoded with c: what Append grows
// its buffer by.
func Bound(c Codec, n int) int { return headerLen + encodedCap(c, n) }

// encodedCap is an upper bound of the encoded size after the header.
func encodedCap(c Codec, n int) int {
	switch c.Kind {
	case Int8:
		return 4 + n + 4*((n+c.Chunk-1)/c.Chunk)
	case TopK:
		k := min(c.K, n)
		return 4 + k*(binary.MaxVarintLen32+4)
	}
	return 4 * n
}

// appendInt8Chunk appends the chunk's scale and its (finite) values stochastically rounded
// to multiples of the scale: x/s is rounded up with probability equal to its fractional
// part (to 2⁻³²), so the decoded value's expectation is x. The uniforms come from a
// SplitMix64 sequence seeded with seed, two per 64 bits: the chunk takes one value of the
// caller's generator, not one per parameter. When res is not nil it receives v minus the
// decoded values. It returns false, having appended nothing, if v has a non-finite value.
func appendInt8Chunk(b []byte, v []float32, seed uint64, res []float32) ([]byte, bool) {
	var m uint32 // the largest magnitude's bits: non-negative floats order as their bits do
	for _, x := range v {
		m = max(m, math.Float32bits(x)&^(1<<31))
	}
	if m >= f32ExpMask {
		return b, false
	}
	scale := float32(float64(math.Float32frombits(m)) / 127)
	if !finite(127 * scale) { // rounded up past what decodes to finite values
		scale = math.Nextafter32(scale, 0)
	}
	b = binary.LittleEndian.AppendUint32(b, math.Float32bits(scale))
	start := len(b)
	b = b[:start+len(v)]
	out := b[start:]
	if scale == 0 {
		clear(out)
		if res != nil {
			copy(res, v) // all zero (or below what a scale can represent)
		}
		return b, true
	}
	inv := 1 / float64(scale)
	round := func(i int, u float64) {
		// x/s + u + 128 is positive, so truncation floors it.
		q := int8(max(-127, min(127, int64(float64(v[i])*inv+u+128)-128)))
		out[i] = byte(q)
		if res != nil {
			// The product is rounded to float32 first, as Decode rounds it: without the
			// conversion the compiler may fuse v − q·s into one instruction (FMSUB on
			// arm64), and the residual would not be what decoding lost.
			res[i] = v[i] - float32(float32(q)*scale)
		}
	}
	for i := 0; i < len(v); i += 2 {
		seed += 0x9e3779b97f4a7c15
		z := seed
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		round(i, float64(int64(z>>32))*0x1p-32)
		if i+1 < len(v) {
			round(i+1, float64(int64(z&0xffffffff))*0x1p-32)
		}
	}
	return b, true
}

// topK returns the indices of the k entries of largest magnitude, ascending (ties go to
// the lower index, so the choice is deterministic).
func topK(v []float32, k int) []int {
	k = min(k, len(v))
	if k == 0 {
		return nil
	}
	mags := make([]float32, len(v))
	for i, x := range v {
		mags[i] = float32(math.Abs(float64(x)))
	}
	sorted := slices.Clone(mags)
	slices.Sort(sorted)
	thr := sorted[len(v)-k]
	above := 0 // entries strictly above the threshold are all kept
	for _, m := range mags {
		if m > thr {
			above++
		}
	}
	ties := k - above
	idx := make([]int, 0, k)
	for i, m := range mags {
		if m > thr || (m == thr && ties > 0) {
			if m == thr {
				ties--
			}
			idx = append(idx, i)
		}
	}
	return idx
}

// ErrMalformed is returned (wrapped) by Decode for every malformed input.
var ErrMalformed = errors.New("malformed compressed update")

// Decode decodes b, which must hold exactly one encoded vector of at most maxParams
// parameters, and returns the vector, every value of it finite, and its codec kind.
func Decode(b []byte, maxParams int) ([]float32, string, error) { return DecodeTo(nil, b, maxParams) }

// DecodeTo decodes b as Decode does, into dst's storage when it has room for the vector
// (its contents are replaced), else into a new slice.
func DecodeTo(dst []float32, b []byte, maxParams int) ([]float32, string, error) {
	fail := func(format string, args ...any) ([]float32, string, error) {
		return nil, "", fmt.Errorf("compress: %s: %w", fmt.Sprintf(format, args...), ErrMalformed)
	}
	if len(b) < headerLen {
		return fail("%d bytes, shorter than the %d-byte header", len(b), headerLen)
	}
	if [4]byte(b[:4]) != magic {
		return fail("magic/version %x, expected %x", b[:4], magic)
	}
	kind := ""
	for k, v := range kindByte {
		if v == b[4] {
			kind = k
		}
	}
	if kind == "" {
		return fail("unknown codec %d", b[4])
	}
	// The counts are compared before they become ints: on 32-bit platforms int(2³¹) is
	// negative and would pass every check after.
	count := binary.LittleEndian.Uint32(b[5:])
	if int64(count) > int64(maxParams) {
		return fail("%d parameters, more than the %d allowed", count, maxParams)
	}
	n := int(count)
	rest := b[headerLen:]
	switch kind {
	case None:
		if len(rest) != 4*n {
			return fail("%d bytes of float32 data for %d parameters", len(rest), n)
		}
		out := slices.Grow(dst[:0], n)[:n]
		if i := f32le.Decode(out, rest); i >= 0 {
			return fail("parameter %d is %v", i, out[i])
		}
		return out, kind, nil
	case Int8:
		if len(rest) < 4 {
			return fail("int8 without a chunk size")
		}
		chunk := int(binary.LittleEndian.Uint32(rest))
		if chunk < 1 || chunk > maxChunk {
			return fail("chunk size %d out of range 1..%d", chunk, maxChunk)
		}
		rest = rest[4:]
		chunks := (n + chunk - 1) / chunk
		if len(rest) != n+4*chunks {
			return fail("%d bytes of int8 data for %d parameters in %d chunks; expected %d", len(rest), n, chunks, n+4*chunks)
		}
		out := slices.Grow(dst[:0], n)[:n]
		for start := 0; start < n; start += chunk {
			scale := math.Float32frombits(binary.LittleEndian.Uint32(rest))
			if !finite(scale) || scale < 0 || !finite(127*scale) { // ±127·scale must be finite too
				return fail("chunk at %d has scale %v", start, scale)
			}
			end := min(start+chunk, n)
			for i, q := range rest[4 : 4+end-start] {
				if int8(q) == -128 {
					return fail("parameter %d is -128, outside ±127", start+i)
				}
				out[start+i] = float32(int8(q)) * scale
			}
			rest = rest[4+end-start:]
		}
		return out, kind, nil
	default: // TopK
		if len(rest) < 4 {
			return fail("topk without a count")
		}
		entries := binary.LittleEndian.Uint32(rest)
		if int64(entries) > int64(n) {
			return fail("%d entries for %d parameters", entries, n)
		}
		k := int(entries)
		rest = rest[4:]
		if len(rest) < 5*k { // at least one varint byte and four value bytes each
			return fail("%d bytes for %d entries", len(rest), k)
		}
		idx := make([]int, k)
		prev := -1
		for j := range idx {
			gap, m := binary.Uvarint(rest)
			if m <= 0 {
				return fail("index %d is not a valid uvarint", j)
			}
			rest = rest[m:]
			if gap >= uint64(n) || prev+1+int(gap) >= n {
				return fail("index %d is past the %d parameters", j, n)
			}
			prev += 1 + int(gap)
			idx[j] = prev
		}
		if len(rest) != 4*k {
			return fail("%d bytes of values for %d entries", len(rest), k)
		}
		out := slices.Grow(dst[:0], n)[:n]
		clear(out)
		for j, i := range idx {
			x := math.Float32frombits(binary.LittleEndian.Uint32(rest[4*j:]))
			if !finite(x) {
				return fail("entry %d is %v", j, x)
			}
			out[i] = x
		}
		return out, kind, nil
	}
}

func finite(x float32) bool { return !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) }

// Feedback is one participant's error-feedback accumulator (Seide et al. 2014; Karimireddy
// et al. 2019): what compression dropped from one round's update is added to the next, so
// nothing is lost for good. A client keeps one per federation; it is not safe for
// concurrent use.
type Feedback struct {
	residual  []float32
	corrected []float32 // scratch: v plus the residual
	// zero says the residual is all zeros (nothing owed yet, or the last codec was
	// lossless): v is then encoded as it is, without the pass that adds the residual.
	zero bool
	// before is the residual before the last Append (unless beforeZero: all zeros), for
	// Undo; undo says there is one to restore. It is the buffer the residual was in: an
	// Append writes the new residual into the other one and swaps them, so no
	// model-sized copy is made to keep the old one.
	before     []float32
	beforeZero bool
	undo       bool
}

// Encode adds the residual to v (without changing v), encodes the sum with c and keeps
// what the encoding lost as the new residual (computed while encoding, as Decode would
// decode it). Its scratch space is kept for the next call.
func (f *Feedback) Encode(c Codec, v []float32, r *rand.Rand) ([]byte, error) {
	return f.Append(nil, c, v, r)
}

// Append is Encode appending the encoding to dst, as the package's Append does.
func (f *Feedback) Append(dst []byte, c Codec, v []float32, r *rand.Rand) ([]byte, error) {
	if len(f.residual) != len(v) {
		f.residual, f.zero = make([]float32, len(v)), true
	}
	f.beforeZero, f.undo = f.zero, false
	if f.zero {
		if c.Kind == None { // lossless: the residual stays zero
			b, err := encode(dst, c, v, r, nil)
			f.undo = err == nil
			return b, err
		}
		if f32le.NonFinite(v) >= 0 { // refused before encode writes a residual
			return dst, notFinite(v)
		}
		b, err := encode(dst, c, v, r, f.residual)
		f.zero, f.undo = false, err == nil
		return b, err
	}
	if len(f.corrected) != len(v) {
		f.corrected = make([]float32, len(v))
	}
	corrected := f.corrected
	for i := range v {
		corrected[i] = v[i] + f.residual[i]
	}
	if f32le.NonFinite(corrected) >= 0 { // refused before encode writes a residual
		return dst, notFinite(corrected)
	}
	if len(f.before) != len(v) {
		f.before = make([]float32, len(v))
	}
	b, err := encode(dst, c, corrected, r, f.before)
	if err != nil {
		return dst, err // the residual is untouched: the new one went into before
	}
	f.residual, f.before = f.before, f.residual
	f.zero, f.undo = c.Kind == None, true
	return b, nil
}

// Undo forgets the last Append's update, whose sender learned that it was not used (its
// round closed without a model, or the model left it out): the residual is again what
// it was before, as if that update had not been made. Only the last Append can be
// undone, once.
func (f *Feedback) Undo() {
	if !f.undo {
		return
	}
	f.undo = false
	if f.zero = f.beforeZero; f.zero {
		clear(f.residual)
	} else {
		f.residual, f.before = f.before, f.residual
	}
}

// Residual returns a copy of what has not been sent yet.
func (f *Feedback) Residual() []float32 { return slices.Clone(f.residual) }
