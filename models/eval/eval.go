// Package eval reproduces the published evaluation protocols of SKAB, NAB and C-MAPSS on any
// directory in their formats and prints tables comparable with the published ones.
package eval
