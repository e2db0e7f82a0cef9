package telemetry

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
)

// The binary batch encoding, version 1, is:
//
//	version   byte (1)
//	count     uvarint, the number of points
//	count times a point:
//	  head    byte: bits 0-2 the value Kind (0-4), bit 3 the bool value, bit 4 set when a
//	          quality code follows, bits 5-6 the quality Level (0-2), bit 7 zero
//	  factory, line, machine, signal: a string reference each
//	  source  varint, SourceTime minus the previous point's SourceTime (the first point's
//	          "previous" is 0; the subtraction wraps)
//	  server  varint, ServerTime minus the previous point's ServerTime
//	  code    uvarint, the quality code, when head bit 4 is set
//	  value   float: 8 bytes, the IEEE-754 bits little-endian; int: varint; string: a string
//	          reference; bool and invalid: nothing
//
// A string reference is a uvarint r: 0 introduces a new string (uvarint length, then the
// bytes), which joins the batch's string table; r > 0 names entry r-1 of that table. Every
// distinct string of a batch is therefore written once.

// codecVersion is the encoding version AppendBatch writes and DecodeBatch reads.
const codecVersion = 1

// minPointBytes is the smallest encoding of a point (head, four references, two
// timestamps), used to reject absurd counts before allocating.
const minPointBytes = 7

const (
	headKindMask   = 0x07
	headBoolTrue   = 0x08
	headHasCode    = 0x10
	headLevelShift = 5
	headLevelMask  = 0x03 << headLevelShift
	headReserved   = 0x80
)

// ErrMalformedBatch is returned, wrapped with the details, by DecodeBatch when its input is
// not a valid batch encoding: truncated, of another version, or garbage.
var ErrMalformedBatch = errors.New("malformed batch encoding")

// maxPooledStrings bounds the string tables kept for reuse, so that one batch with a flood
// of distinct strings does not make every later batch pay for clearing a huge table.
const maxPooledStrings = 4096

// encodeState is the string table of one AppendBatch call, pooled for reuse.
type encodeState struct {
	index map[string]uint32
	// prev and prevRef remember the last string written per field (factory, line, machine,
	// signal, string value): consecutive points mostly repeat them, and comparing with the
	// previous one is cheaper than a map lookup.
	prev    [5]string
	prevRef [5]uint32
	hasPrev [5]bool
}

// ref appends a reference to s, defining s in the table on its first use.
func (st *encodeState) ref(dst []byte, field int, s string) []byte {
	if st.hasPrev[field] && st.prev[field] == s {
		return binary.AppendUvarint(dst, uint64(st.prevRef[field])+1)
	}
	r, ok := st.index[s]
	if ok {
		dst = binary.AppendUvarint(dst, uint64(r)+1)
	} else {
		r = uint32(len(st.index))
		st.index[s] = r
		dst = append(dst, 0)
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	st.prev[field], st.prevRef[field], st.hasPrev[field] = s, r, true
	return dst
}

func (st *encodeState) reset() {
	clear(st.index)
	st.prev = [5]string{}
	st.hasPrev = [5]bool{}
}

type decodeState struct {
	table []string
}

var (
	encodePool = sync.Pool{New: func() any { return &encodeState{index: make(map[string]uint32, 64)} }}
	decodePool = sync.Pool{New: func() any { return &decodeState{table: make([]string, 0, 64)} }}
)

// AppendBatch appends the compact binary encoding of b to dst and returns the extended
// slice. Appending into a reused dst allocates nothing per point once the buffer has grown
// to the batch's size. It is safe for concurrent use.
//
// A Kind outside the defined constants is written as an invalid (zero) value and a Level
// beyond Bad is written as Bad, so that every output of AppendBatch decodes.
func AppendBatch(dst []byte, b Batch) []byte {
	st := encodePool.Get().(*encodeState)
	var prevSource, prevServer int64
	dst = append(dst, codecVersion)
	dst = binary.AppendUvarint(dst, uint64(len(b.Points)))
	for i := range b.Points {
		p := &b.Points[i]
		kind := p.Value.Kind
		if kind > KindString {
			kind = 0
		}
		level := p.Quality.Level
		if level > Bad {
			level = Bad
		}
		head := byte(kind) | byte(level)<<headLevelShift
		if kind == KindBool && p.Value.num != 0 {
			head |= headBoolTrue
		}
		if p.Quality.Code != 0 {
			head |= headHasCode
		}
		dst = append(dst, head)
		dst = st.ref(dst, 0, p.Factory)
		dst = st.ref(dst, 1, p.Line)
		dst = st.ref(dst, 2, p.Machine)
		dst = st.ref(dst, 3, p.Signal)
		dst = binary.AppendVarint(dst, p.SourceTime-prevSource)
		dst = binary.AppendVarint(dst, p.ServerTime-prevServer)
		prevSource, prevServer = p.SourceTime, p.ServerTime
		if p.Quality.Code != 0 {
			dst = binary.AppendUvarint(dst, uint64(p.Quality.Code))
		}
		switch kind {
		case KindFloat:
			dst = binary.LittleEndian.AppendUint64(dst, p.Value.num)
		case KindInt:
			dst = binary.AppendVarint(dst, int64(p.Value.num))
		case KindString:
			dst = st.ref(dst, 4, p.Value.Str)
		}
	}

	if len(st.index) <= maxPooledStrings {
		st.reset()
		encodePool.Put(st)
	}
	return dst
}

// DecodeBatch decodes an encoding written by AppendBatch into b, replacing its points: it
// decodes into b.Points[:0], reusing its capacity, and takes every string from in (when in
// is nil, strings are allocated). With a reused batch and interner it allocates nothing per
// point. It is safe for concurrent use on distinct batches.
//
// DecodeBatch never panics. Input that is truncated, has trailing bytes, announces more
// points than it could hold, names a string that was not defined, or holds an out-of-range
// kind or level is rejected with an error wrapping ErrMalformedBatch that says where; b then
// holds no points.
func DecodeBatch(src []byte, b *Batch, in *Interner) error {
	st := decodePool.Get().(*decodeState)
	err := decodeBatch(src, b, in, st)
	if len(st.table) <= maxPooledStrings {
		clear(st.table)
		st.table = st.table[:0]
		decodePool.Put(st)
	}
	if err != nil {
		b.Points = b.Points[:0]
		return err
	}
	return nil
}

func decodeBatch(src []byte, b *Batch, in *Interner, st *decodeState) error {
	d := decoder{src: src}
	b.Points = b.Points[:0]
	if len(src) == 0 {
		return fmt.Errorf("%w: empty input", ErrMalformedBatch)
	}
	if v := src[0]; v != codecVersion {
		return fmt.Errorf("%w: version %d, expected %d", ErrMalformedBatch, v, codecVersion)
	}
	d.off = 1
	n, err := d.uvarint("point count")
	if err != nil {
		return err
	}
	if rest := uint64(len(src) - d.off); n > rest/minPointBytes {
		return fmt.Errorf("%w: point count %d cannot fit in the %d bytes that follow (each point takes at least %d)", ErrMalformedBatch, n, rest, minPointBytes)
	}
	if uint64(cap(b.Points)) < n {
		b.Points = make([]Point, 0, n)
	}
	var prevSource, prevServer int64
	for i := 0; i < int(n); i++ {
		d.point = i
		if d.off >= len(src) {
			return d.fail("point header", "input ends")
		}
		head := src[d.off]
		d.off++
		kind := Kind(head & headKindMask)
		level := Level((head & headLevelMask) >> headLevelShift)
		if head&headReserved != 0 || kind > KindString || level > Bad || (head&headBoolTrue != 0 && kind != KindBool) {
			return d.fail("point header", fmt.Sprintf("invalid header byte 0x%02x", head))
		}
		var p Point
		var err error
		if p.Factory, err = d.str("factory", st, in); err != nil {
			return err
		}
		if p.Line, err = d.str("line", st, in); err != nil {
			return err
		}
		if p.Machine, err = d.str("machine", st, in); err != nil {
			return err
		}
		if p.Signal, err = d.str("signal", st, in); err != nil {
			return err
		}
		ds, err := d.varint("source time")
		if err != nil {
			return err
		}
		dv, err := d.varint("server time")
		if err != nil {
			return err
		}
		prevSource += ds
		prevServer += dv
		p.SourceTime, p.ServerTime = prevSource, prevServer
		p.Quality.Level = level
		if head&headHasCode != 0 {
			code, err := d.uvarint("quality code")
			if err != nil {
				return err
			}
			if code == 0 || code > math.MaxUint32 {
				return d.fail("quality code", fmt.Sprintf("%d is out of range 1..%d", code, uint32(math.MaxUint32)))
			}
			p.Quality.Code = uint32(code)
		}
		p.Value.Kind = kind
		switch kind {
		case KindFloat:
			if len(src)-d.off < 8 {
				return d.fail("float value", "input ends")
			}
			p.Value.num = binary.LittleEndian.Uint64(src[d.off:])
			d.off += 8
		case KindInt:
			v, err := d.varint("int value")
			if err != nil {
				return err
			}
			p.Value.num = uint64(v)
		case KindBool:
			if head&headBoolTrue != 0 {
				p.Value.num = 1
			}
		case KindString:
			if p.Value.Str, err = d.str("string value", st, in); err != nil {
				return err
			}
		}
		b.Points = append(b.Points, p)
	}
	if d.off != len(src) {
		return fmt.Errorf("%w: %d trailing bytes after the last of %d points", ErrMalformedBatch, len(src)-d.off, n)
	}
	return nil
}

// decoder walks an encoded batch; point is the index of the point being decoded, for errors.
type decoder struct {
	src   []byte
	off   int
	point int
}

func (d *decoder) fail(field, msg string) error {
	return fmt.Errorf("%w: point %d: %s at byte %d: %s", ErrMalformedBatch, d.point, field, d.off, msg)
}

func (d *decoder) uvarint(field string) (uint64, error) {
	v, n := binary.Uvarint(d.src[d.off:])
	if n <= 0 {
		if n == 0 {
			return 0, d.fail(field, "input ends inside a varint")
		}
		return 0, d.fail(field, "varint overflows 64 bits")
	}
	d.off += n
	return v, nil
}

// varint reads a zigzag-encoded signed varint, as binary.AppendVarint writes it.
func (d *decoder) varint(field string) (int64, error) {
	u, err := d.uvarint(field)
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x, err
}

func (d *decoder) str(field string, st *decodeState, in *Interner) (string, error) {
	r, err := d.uvarint(field)
	if err != nil {
		return "", err
	}
	if r > 0 {
		if r > uint64(len(st.table)) {
			return "", d.fail(field, fmt.Sprintf("string reference %d, but only %d strings are defined", r, len(st.table)))
		}
		return st.table[r-1], nil
	}
	l, err := d.uvarint(field)
	if err != nil {
		return "", err
	}
	if l > uint64(len(d.src)-d.off) {
		return "", d.fail(field, fmt.Sprintf("string of %d bytes, but %d bytes are left", l, len(d.src)-d.off))
	}
	raw := d.src[d.off : d.off+int(l)]
	d.off += int(l)
	var s string
	if in != nil {
		s = in.Bytes(raw)
	} else {
		s = string(raw)
	}
	st.table = append(st.table, s)
	return s, nil
}
