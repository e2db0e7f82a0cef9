package eval

import (
	"fmt"
	"os"
	"path/filepath"
)

// DataEnv names the environment variable that points at the benchmark data folder (the one
// holding skab/ and cmapss/).
const DataEnv = "MILLWRIGHT_DATA"

// BenchmarkData returns the path of sub inside the benchmark data folder: $MILLWRIGHT_DATA, or
// ../shared/data next to the repository root (the nearest directory above the working
// directory that holds go.mod). The error wraps fs.ErrNotExist when the folder is absent, which
// is the normal case in a user's checkout: tests skip on it.
func BenchmarkData(sub string) (string, error) {
	dir := os.Getenv(DataEnv)
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "..", "shared", "data")
	}
	p := filepath.Join(dir, sub)
	if _, err := os.Stat(p); err != nil {
		return p, fmt.Errorf("benchmark data %s: %w; set %s to the folder holding skab/ and cmapss/", p, err, DataEnv)
	}
	return p, nil
}

// repoRoot is the nearest directory at or above the working directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", fmt.Errorf("benchmark data: no go.mod above the working directory: %w", os.ErrNotExist)
		}
		dir = up
	}
}
