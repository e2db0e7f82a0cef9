// Package f32le encodes vectors of float32 as little-endian bytes, the federation's wire
// format for model parameters and updates, and finds their NaN and infinite values.
//
// A round moves every parameter through these loops several times (the hub's model, each
// gateway's download and update, the hub's decoding of each update), on data just read
// from the network and so not in the cache. On a little-endian machine (every one
// Millwright builds for) the bytes are copied as a block and checked two values at a time
// with no branch, about twice as fast as converting value by value (BenchmarkDecode).
// Elsewhere it converts value by value.
package f32le

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// expMask is a float32's exponent field: all ones for NaN and the infinities only.
const expMask = 0x7f800000

// native reports whether this machine stores a float32 as its little-endian bytes. A
// variable, so that tests can take the portable path too.
var native = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// Encode writes v into dst (at least 4·len(v) bytes) as little-endian float32s and returns
// the index of v's first NaN or infinity, or -1. When it returns an index, what dst holds
// is unspecified.
func Encode(dst []byte, v []float32) int {
	dst = dst[:4*len(v)]
	if native {
		copy(dst, bytesOf(v))
		return NonFinite(v)
	}
	for i, x := range v {
		bits := math.Float32bits(x)
		if bits&expMask == expMask {
			return i
		}
		binary.LittleEndian.PutUint32(dst[4*i:], bits)
	}
	return -1
}

// Decode reads dst's values from src (at least 4·len(dst) bytes of little-endian float32s)
// and returns the index of the first NaN or infinity, or -1. When it returns an index,
// what dst holds is unspecified.
func Decode(dst []float32, src []byte) int {
	src = src[:4*len(dst)]
	if native {
		copy(bytesOf(dst), src)
		return NonFinite(dst)
	}
	for i := range dst {
		bits := binary.LittleEndian.Uint32(src[4*i:])
		if bits&expMask == expMask {
			return i
		}
		dst[i] = math.Float32frombits(bits)
	}
	return -1
}

// NonFinite returns the index of v's first NaN or infinity, or -1. It checks a block of
// values with no branch and looks for the index only in a block that has one.
func NonFinite(v []float32) int {
	const block = 1024 // values; the index search rereads at most this many
	for start := 0; start < len(v); start += block {
		if b := v[start:min(start+block, len(v))]; !finite(b) {
			for i, x := range b {
				if math.Float32bits(x)&expMask == expMask {
					return start + i
				}
			}
		}
	}
	return -1
}

// finite reports whether all of v is finite. An exponent field of all ones, and only
// that, carries into bit 31 when 1 is added to it; it checks two values at a time, as one
// uint64 whose halves cannot carry into each other (whatever the byte order), and or-s
// the sums with no branch.
func finite(v []float32) bool {
	const (
		one   = 1 << 23
		exps  = expMask<<32 | expMask
		ones  = one<<32 | one
		carry = 1<<63 | 1<<31
	)
	var acc uint64
	if len(v) > 0 && uintptr(unsafe.Pointer(&v[0]))%8 != 0 { // the pairs are 8-byte aligned
		acc = uint64(math.Float32bits(v[0])&expMask + one)
		v = v[1:]
	}
	// The view is made only over pairs that exist: a pointer to where v's array ends,
	// made a *uint64, would reach into the next allocation.
	if pairs := len(v) / 2; pairs > 0 {
		for _, w := range unsafe.Slice((*uint64)(unsafe.Pointer(&v[0])), pairs) {
			acc |= w&exps + ones
		}
	}
	if len(v)%2 == 1 {
		acc |= uint64(math.Float32bits(v[len(v)-1])&expMask + one)
	}
	return acc&carry == 0
}

// bytesOf is v's memory as bytes.
func bytesOf(v []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*len(v))
}
