//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package dirlock

import (
	"os"
	"path/filepath"
)

// Lock creates the lock file but cannot lock it on this platform; millwright targets
// Linux, where lock_flock.go applies.
func Lock(dir, holder string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, FileName), os.O_CREATE|os.O_RDWR, 0o600)
}
