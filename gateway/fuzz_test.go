package gateway

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/millwright-io/millwright/gateway/config"
)

// FuzzParse parses arbitrary configuration documents: Parse must never panic, every problem
// it reports must be a *config.FieldError, and a configuration it accepts must validate.
func FuzzParse(f *testing.F) {
	// The example refers to these secrets; set for the whole fuzz run (t.Setenv cannot be
	// used inside the fuzz function).
	f.Setenv("MQTT_PASSWORD", "s3cret")
	f.Setenv("INFLUX_TOKEN", "user:pass")
	files := []string{"../deploy/examples/gateway.yaml"}
	for _, pattern := range []string{"testdata/good/*.yaml", "testdata/bad/*.yaml"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		files = append(files, m...)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(""))
	f.Add([]byte("gateway: {factory: f}\nsources: [&s {name: a, mqtt: {servers: ['tcp://h:1883'], topics: [{pattern: 'a/{signal}'}]}}, *s]\nsinks: [{name: i, influxdb: {url: 'http://h:8086', bucket: b}}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		for _, e := range config.Flatten(err) {
			if _, ok := e.(*config.FieldError); !ok {
				t.Fatalf("a problem is a %T, not a *config.FieldError: %v", e, e)
			}
		}
		if err == nil {
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("Parse accepted a configuration that does not validate: %v", verr)
			}
		}
	})
}
