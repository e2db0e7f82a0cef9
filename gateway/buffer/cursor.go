package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"regexp"

	"github.com/millwright-io/millwright/internal/atomicfile"
)

// A cursor file, "cursor-<reader>", holds the position up to which a reader has committed:
// the 8-byte magic cursorMagic, the position (uint64) and a CRC-32C of both (uint32), all
// little-endian. It is replaced atomically: written to a temporary file, fsynced (unless
// fsync is "off"), renamed over the old one.
const (
	cursorPrefix = "cursor-"
	// cursorTmpPrefix starts the temporary file of a cursor write (atomicfile's naming). Reader names cannot start
	// with '.', so it never collides with a cursor file.
	cursorTmpPrefix = atomicfile.TempPrefix + cursorPrefix
	cursorFileLen   = 20
)

var cursorMagic = [8]byte{'M', 'W', 'C', 'U', 'R', 0, 0, 1}

// readerNameRE is what a reader name may look like: it becomes part of a file name and a
// metric label.
var readerNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$`)

func cursorPath(dir, reader string) string { return filepath.Join(dir, cursorPrefix+reader) }

func encodeCursor(pos Position) []byte {
	b := make([]byte, cursorFileLen)
	copy(b, cursorMagic[:])
	binary.LittleEndian.PutUint64(b[8:], uint64(pos))
	binary.LittleEndian.PutUint32(b[16:], crc32.Checksum(b[:16], castagnoli))
	return b
}

// readCursor returns the position stored in a cursor file; ok is false when there is none.
func readCursor(path string) (pos Position, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if len(b) != cursorFileLen || [8]byte(b[:8]) != cursorMagic || crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:]) {
		return 0, false, fmt.Errorf("cursor file %s is damaged (%d bytes, expected %d with a valid checksum)", path, len(b), cursorFileLen)
	}
	return Position(binary.LittleEndian.Uint64(b[8:])), true, nil
}

// writeCursor replaces the cursor file at path atomically; with fsync it is also durable.
func writeCursor(path string, pos Position, fsync bool) error {
	return atomicfile.WriteFile(path, encodeCursor(pos), 0o600, fsync)
}
