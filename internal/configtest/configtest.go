// Package configtest loads configuration documents in tests the way the gateway does: defaults first, then strict decoding, then validation.
package configtest

import (
	"os"
	"testing"

	"github.com/millwright-io/millwright/gateway/config"
)

// Config is implemented by a pointer to a component's configuration.
type Config interface {
	SetDefaults()
	Validate() error
}

// Decode returns a T with its defaults set and yaml decoded into it strictly, and the error
// of config.Decode or, when decoding succeeded, of Validate.
func Decode[T any, P interface {
	*T
	Config
}](yaml string) (T, error) {
	var c T
	P(&c).SetDefaults()
	if err := config.Decode([]byte(yaml), P(&c)); err != nil {
		return c, err
	}
	return c, P(&c).Validate()
}

// Load sets c's defaults, decodes the file at path into c strictly and validates c; any
// failure fails t.
func Load(t testing.TB, path string, c Config) {
	t.Helper()
	c.SetDefaults()
	DecodeFile(t, path, c)
	if err := c.Validate(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// DecodeFile decodes the file at path into v (a pointer to a struct) strictly, failing t
// when the file cannot be read or decoded. Defaults and validation are the caller's.
func DecodeFile(t testing.TB, path string, v any) {
	t.Helper()
	if err := config.Decode([]byte(Read(t, path)), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// Read returns the content of the file at path, failing t when it cannot be read.
func Read(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
