//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package buffer

import (
	"os"
	"path/filepath"
)

// lockDir creates the lock file but cannot lock it on this platform; the gateway targets
// Linux, where lock_flock.go applies.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
}
