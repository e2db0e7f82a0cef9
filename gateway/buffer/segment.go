package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// On-disk format.
//
// A segment file is named by its base position, "%020d.seg", and starts with a header:
// the 8-byte magic segmentMagic, then the base position again (uint64, little-endian), so a
// renamed or foreign file is recognised. Records follow back to back:
//
//	length  uint32  payload length in bytes (at most MaxRecordBytes)
//	crc     uint32  CRC-32C (Castagnoli) of the point count and the payload
//	points  uint32  number of points in the payload
//	payload         telemetry.AppendBatch output
//
// All integers are little-endian. The position of a byte is the segment's base plus its
// offset in the file; a segment's base is the position where the previous one ended.
const (
	segmentHeaderLen = 16
	recordHeaderLen  = 12
	// MaxRecordBytes bounds the encoded size of one batch. A length field above it is
	// treated as corruption.
	MaxRecordBytes = 64 << 20
)

var segmentMagic = [8]byte{'M', 'W', 'W', 'A', 'L', 0, 0, 1} // last byte: format version

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const segmentSuffix = ".seg"

func segmentName(base Position) string { return fmt.Sprintf("%020d%s", uint64(base), segmentSuffix) }

// parseSegmentName returns the base position a segment file name holds.
func parseSegmentName(name string) (Position, bool) {
	digits, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, false
	}
	return Position(v), true
}

func segmentHeader(base Position) []byte {
	h := make([]byte, segmentHeaderLen)
	copy(h, segmentMagic[:])
	binary.LittleEndian.PutUint64(h[8:], uint64(base))
	return h
}

// recordHeader is the decoded fixed part of a record.
type recordHeader struct {
	length uint32
	crc    uint32
	points uint32
}

func parseRecordHeader(b []byte) recordHeader {
	return recordHeader{
		length: binary.LittleEndian.Uint32(b[0:]),
		crc:    binary.LittleEndian.Uint32(b[4:]),
		points: binary.LittleEndian.Uint32(b[8:]),
	}
}

// size is the whole record's size on disk.
func (h recordHeader) size() int64 { return recordHeaderLen + int64(h.length) }

// recordChecksum is the CRC of a whole record (header included) as stored in its header.
func recordChecksum(rec []byte) uint32 { return crc32.Checksum(rec[8:], castagnoli) }

// sealRecord fills in the header of rec, which holds recordHeaderLen reserved bytes and
// then the payload.
func sealRecord(rec []byte, points int) {
	binary.LittleEndian.PutUint32(rec[0:], uint32(len(rec)-recordHeaderLen))
	binary.LittleEndian.PutUint32(rec[8:], uint32(points))
	binary.LittleEndian.PutUint32(rec[4:], recordChecksum(rec))
}

// window is a read-ahead buffer over one file, read with ReadAt so it never moves a
// shared file offset.
type window struct {
	f   *os.File
	buf []byte
	off int64 // file offset of buf[0]
}

func (w *window) reset(f *os.File) {
	w.f = f
	w.buf = w.buf[:0]
	w.off = 0
}

// peek returns the n bytes at off, reading ahead up to ahead bytes but never past limit.
// The slice is valid until the next call. The caller guarantees off+n <= limit.
func (w *window) peek(off int64, n int, limit int64, ahead int) ([]byte, error) {
	if off >= w.off && off+int64(n) <= w.off+int64(len(w.buf)) {
		i := off - w.off
		return w.buf[i : i+int64(n)], nil
	}
	want := int64(max(n, ahead))
	want = min(want, limit-off)
	if int64(cap(w.buf)) < want {
		w.buf = make([]byte, want)
	}
	w.buf = w.buf[:want]
	m, err := w.f.ReadAt(w.buf, off)
	w.buf, w.off = w.buf[:m], off
	if m < n {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return w.buf[:n], nil
}

// scanResult is what a walk over a segment's records found.
type scanResult struct {
	// end is the offset after the last sound record (at least segmentHeaderLen when the
	// header is sound, 0 when it is not).
	end int64
	// records and points count the sound records before end.
	records, points int64
	// problem says why the walk stopped before the end of the file; "" when it did not.
	problem string
}

const (
	scanAheadHeaders = 4 << 10 // read-ahead when only the headers are needed
	scanAheadVerify  = 1 << 20 // read-ahead when every payload is checked
)

// scanSegment walks the records of the segment file f of size bytes, whose name says it
// starts at base. With verify it reads every payload and checks its checksum; without, it
// checks only the structure (lengths within bounds and within the file). It stops at the
// first unsound record, or at the last record boundary at or before stop.
// The error is an I/O error; damage is reported in scanResult.problem.
func scanSegment(f *os.File, size int64, base Position, verify bool, stop int64) (scanResult, error) {
	var win window
	win.reset(f)
	var r scanResult
	if size < segmentHeaderLen {
		r.problem = fmt.Sprintf("file of %d bytes is shorter than the %d-byte segment header", size, segmentHeaderLen)
		return r, nil
	}
	ahead := scanAheadHeaders
	if verify {
		ahead = scanAheadVerify
	}
	h, err := win.peek(0, segmentHeaderLen, size, ahead)
	if err != nil {
		return r, err
	}
	if [8]byte(h[:8]) != segmentMagic {
		r.problem = fmt.Sprintf("segment header % x is not the expected magic % x", h[:8], segmentMagic[:])
		return r, nil
	}
	if got := Position(binary.LittleEndian.Uint64(h[8:])); got != base {
		r.problem = fmt.Sprintf("segment header names base position %d, but the file name says %d", got, base)
		return r, nil
	}
	r.end = segmentHeaderLen
	for r.end < size {
		if r.end+recordHeaderLen > size {
			r.problem = fmt.Sprintf("%d bytes at offset %d are too few for a record header", size-r.end, r.end)
			return r, nil
		}
		b, err := win.peek(r.end, recordHeaderLen, size, ahead)
		if err != nil {
			return r, err
		}
		rh := parseRecordHeader(b)
		if rh.length > MaxRecordBytes {
			r.problem = fmt.Sprintf("record at offset %d claims %d bytes, more than the %d allowed", r.end, rh.length, MaxRecordBytes)
			return r, nil
		}
		if r.end+rh.size() > size {
			r.problem = fmt.Sprintf("record at offset %d of %d bytes runs past the end of the file", r.end, rh.size())
			return r, nil
		}
		if r.end+rh.size() > stop {
			return r, nil
		}
		if verify {
			rec, err := win.peek(r.end, int(rh.size()), size, ahead)
			if err != nil {
				return r, err
			}
			if recordChecksum(rec) != rh.crc {
				r.problem = fmt.Sprintf("record at offset %d fails its checksum", r.end)
				return r, nil
			}
		}
		r.end += rh.size()
		r.records++
		r.points += int64(rh.points)
	}
	return r, nil
}

func segmentPath(dir string, base Position) string { return filepath.Join(dir, segmentName(base)) }
