//go:build race

package eval

// raceEnabled is set when the tests run with -race, which makes training several times slower.
const raceEnabled = true
