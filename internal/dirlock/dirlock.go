// Package dirlock keeps two writers out of one directory: an exclusive advisory lock on a file in it, released when the holder closes it or exits.
package dirlock

import "errors"

// FileName is the lock file Lock creates in the directory.
const FileName = "LOCK"

// ErrLocked is wrapped by Lock's error when another holder has the directory.
var ErrLocked = errors.New("directory locked")
