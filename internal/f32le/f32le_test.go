package f32le

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// reference is what Decode must do, value by value: the values of src and the index of
// the first non-finite one, or -1.
func reference(src []byte) ([]float32, int) {
	v := make([]float32, len(src)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		if math.IsNaN(float64(v[i])) || math.IsInf(float64(v[i]), 0) {
			return v, i
		}
	}
	return v, -1
}

// randomBits returns n random float32 bit patterns, finite except, with probability
// bad, one at a random position (NaN with any payload or ±Inf), and some edge values:
// zeros, subnormals, the largest finite values.
func randomBits(r *rand.Rand, n int, bad float64) []uint32 {
	edges := []uint32{0, 1 << 31, 1, 0x007fffff, 0x7f7fffff, 0xff7fffff, 0x00800000}
	bits := make([]uint32, n)
	for i := range bits {
		switch {
		case r.IntN(10) == 0:
			bits[i] = edges[r.IntN(len(edges))]
		default:
			bits[i] = r.Uint32()
			if bits[i]&expMask == expMask {
				bits[i] &^= 1 << 23 // finite
			}
		}
	}
	if n > 0 && r.Float64() < bad {
		for range 1 + r.IntN(3) {
			bits[r.IntN(n)] = expMask | r.Uint32()&(1<<31|0x7fffff) // ±Inf or a NaN
		}
	}
	return bits
}

// paths runs t on the little-endian fast path (when this machine has it) and on the
// portable one.
func paths(t *testing.T, f func(t *testing.T)) {
	was := native
	t.Cleanup(func() { native = was })
	for _, n := range []bool{was, false} {
		native = n
		t.Run(fmt.Sprintf("native=%v", n), f)
	}
}

func TestDecodeAndEncodeMatchValueByValue(t *testing.T) {
	paths(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for trial := range 3000 {
			n := r.IntN(2100)
			off := r.IntN(3) // subslices that start off an 8-byte boundary
			bits := randomBits(r, n, 0.5)
			src := make([]byte, 4*n)
			for i, b := range bits {
				binary.LittleEndian.PutUint32(src[4*i:], b)
			}
			want, wantBad := reference(src)

			dst := make([]float32, n+off)[off:]
			if got := Decode(dst, src); got != wantBad {
				t.Fatalf("trial %d (n %d, offset %d): Decode returned %d, want %d", trial, n, off, got, wantBad)
			}
			if got := NonFinite(want); got != wantBad {
				t.Fatalf("trial %d: NonFinite returned %d, want %d", trial, got, wantBad)
			}
			if wantBad >= 0 {
				continue // dst is unspecified
			}
			for i := range dst {
				if math.Float32bits(dst[i]) != bits[i] {
					t.Fatalf("trial %d: Decode value %d is %#x, want %#x", trial, i, math.Float32bits(dst[i]), bits[i])
				}
			}
			enc := make([]byte, 4*n+5)
			if got := Encode(enc[1:], dst); got != -1 {
				t.Fatalf("trial %d: Encode of finite values returned %d", trial, got)
			}
			if string(enc[1:4*n+1]) != string(src) || enc[0] != 0 || enc[4*n+1] != 0 {
				t.Fatalf("trial %d: Encode wrote other bytes than the values' little-endian ones, or outside them", trial)
			}
		}
	})
}

func TestEncodeFindsTheFirstNonFinite(t *testing.T) {
	paths(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 4))
		for trial := range 2000 {
			n := 1 + r.IntN(3000)
			v := make([]float32, n)
			for i, b := range randomBits(r, n, 1) {
				v[i] = math.Float32frombits(b)
			}
			want := -1
			for i, x := range v {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					want = i
					break
				}
			}
			if got := Encode(make([]byte, 4*n), v); got != want {
				t.Fatalf("trial %d: Encode returned %d, want %d", trial, got, want)
			}
		}
	})
}

// TestNonFiniteEveryExponent checks each of the 256 exponents, with a random sign and
// mantissa, at each position of a short vector and of a long one (in a block past the
// first): only the all-ones exponent is found.
func TestNonFiniteEveryExponent(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 2, 3, 7, 2500} {
		for e := range uint32(256) {
			for _, at := range []int{0, n / 2, n - 1} {
				v := make([]float32, n)
				v[at] = math.Float32frombits(r.Uint32()&(1<<31|0x7fffff) | e<<23)
				want := -1
				if e == 255 {
					want = at
				}
				if got := NonFinite(v); got != want {
					t.Fatalf("n %d, exponent %d at %d: NonFinite returned %d, want %d", n, e, at, got, want)
				}
			}
		}
	}
}

// BenchmarkDecode decodes 100k parameters (a round's model or update) from buffers that
// are not in the cache (40 of them, 16 MB, taken in turn), on the fast path and on the
// portable one (value by value), as a round meets them.
func BenchmarkDecode(b *testing.B) {
	const n, bufs = 100_000, 40
	src, dst := make([][]byte, bufs), make([][]float32, bufs)
	for i := range bufs {
		src[i], dst[i] = make([]byte, 4*n), make([]float32, n)
	}
	ops := []struct {
		name string
		run  func(i int) int
	}{
		{"decode", func(i int) int { return Decode(dst[i%bufs], src[(i+bufs/2)%bufs]) }},
		{"encode", func(i int) int { return Encode(src[i%bufs], dst[(i+bufs/2)%bufs]) }},
	}
	for _, fast := range []bool{native, false} {
		path := "portable"
		if fast {
			path = "native"
		}
		for _, op := range ops {
			b.Run(path+"/"+op.name, func(b *testing.B) {
				defer func(was bool) { native = was }(native)
				native = fast
				b.SetBytes(4 * n)
				i := 0
				for b.Loop() {
					if op.run(i) != -1 {
						b.Fatal("not finite")
					}
					i++
				}
			})
		}
	}
	b.Run("nonfinite", func(b *testing.B) {
		b.SetBytes(4 * n)
		i := 0
		for b.Loop() {
			if NonFinite(dst[i%bufs]) != -1 {
				b.Fatal("not finite")
			}
			i++
		}
	})
}

func TestNonFiniteEdges(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	for _, c := range []struct {
		v    []float32
		want int
	}{
		{nil, -1},
		{[]float32{0, -1, math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32}, -1},
		{[]float32{1, nan, inf}, 1},
		{[]float32{1, 2, -inf}, 2},
		{[]float32{inf}, 0},
	} {
		if got := NonFinite(c.v); got != c.want {
			t.Errorf("NonFinite(%v) = %d, want %d", c.v, got, c.want)
		}
	}
}

// TestSlicesAtTheEndOfTheirArray checks every subslice of arrays of 1 to 40 values, and
// every tail of arrays around NonFinite's block of 1024: with the race detector on, the
// runtime checks that no pointer made from them reaches past their array (checkptr), as a
// view of two values from the last one would.
func TestSlicesAtTheEndOfTheirArray(t *testing.T) {
	for _, n := range append(seq(1, 40), 1025, 1026, 2048, 2049) {
		a := make([]float32, n)
		a[n-1] = float32(math.Inf(-1))
		for i := range n {
			from := i // every end for short arrays; the array's end for long ones
			if n > 40 {
				from = n
			}
			for j := from; j <= n; j++ {
				want := -1
				if j == n {
					want = n - 1 - i
				}
				if got := NonFinite(a[i:j]); got != want {
					t.Fatalf("array of %d, values %d to %d: NonFinite returned %d, want %d", n, i, j, got, want)
				}
			}
		}
	}
}

func seq(from, to int) []int {
	var s []int
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}
