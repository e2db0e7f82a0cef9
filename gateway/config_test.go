package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every sample configuration in the repository must load, so examples cannot rot.
func TestExampleConfigsLoad(t *testing.T) {
	t.Setenv("MQTT_PASSWORD", "s3cret")
	t.Setenv("INFLUX_TOKEN", "user:pass")
	files, err := filepath.Glob("../deploy/examples/gateway*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs found: %v", err)
	}
	files = append(files, mustGlob(t, "testdata/good/*.yaml")...)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Sources) == 0 || len(cfg.Sinks) == 0 {
				t.Fatalf("loaded with no sources or sinks: %+v", cfg)
			}
		})
	}
}

func TestExampleSecretsAreRedacted(t *testing.T) {
	t.Setenv("MQTT_PASSWORD", "s3cret")
	t.Setenv("INFLUX_TOKEN", "user:pass")
	cfg, err := Load("../deploy/examples/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pw := cfg.Sources[0].MQTT.Password
	if pw.Value() != "s3cret" {
		t.Fatalf("password not resolved from env: %q", pw.Value())
	}
	if s := pw.String(); strings.Contains(s, "s3cret") || !strings.Contains(s, "env:MQTT_PASSWORD") {
		t.Errorf("password prints as %q", s)
	}
}

// Each bad configuration in testdata/bad has a .want file listing, one per line, the
// fragments its error must contain (paths, values, expectations).
func TestBadConfigsReportEveryProblem(t *testing.T) {
	t.Setenv("INFLUX_TOKEN", "x")
	for _, f := range mustGlob(t, "testdata/bad/*.yaml") {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".want")
			if err != nil {
				t.Fatal(err)
			}
			_, err = Load(f)
			if err == nil {
				t.Fatal("loaded without error")
			}
			for _, frag := range strings.Split(strings.TrimSpace(string(want)), "\n") {
				if !strings.Contains(err.Error(), frag) {
					t.Errorf("error does not contain %q; got:\n%v", frag, err)
				}
			}
		})
	}
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
