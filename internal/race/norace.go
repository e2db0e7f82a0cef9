//go:build !race

// Package race tells whether the race detector is on, so that slow tests (model training on
// benchmark data) can shrink their workload under -race rather than time out.
package race

// Enabled is true when the binary is built with -race.
const Enabled = false
