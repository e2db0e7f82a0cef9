// Package atomicfile replaces files so that a crash or a power loss leaves either the old or the new content, never a mix.
package atomicfile

import (
	"os"
	"path/filepath"
)

// TempPrefix starts the name of the temporary file WriteFile writes beside its target
// (".tmp-<target name>-<random>"); a directory's owner may remove leftovers that start with it.
const TempPrefix = ".tmp-"

// WriteFile replaces path with data: it writes a temporary file in the same directory with
// mode perm, renames it over path, and, when durable is true, fsyncs the file before the
// rename and the directory after it, so the replacement survives a power loss.
func WriteFile(path string, data []byte, perm os.FileMode, durable bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, TempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if durable {
		return SyncDir(dir)
	}
	return nil
}

// SyncDir fsyncs a directory, so that creating, renaming or removing a file in it survives
// a power loss.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
