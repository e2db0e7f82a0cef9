package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const (
	exampleConfig = "../../../deploy/examples/gateway.yaml"
	hubExample    = "../../../deploy/examples/hub.yaml"
	goodConfig    = "../../testdata/good/minimal.yaml"
	badConfig     = "../../testdata/bad/many.yaml"
	badConfigWant = "../../testdata/bad/many.want"
)

func TestRun(t *testing.T) {
	t.Setenv("MQTT_PASSWORD", "s3cret")
	t.Setenv("INFLUX_TOKEN", "user:pass")
	for _, f := range []string{"A", "B", "C"} { // the hub example's factory passwords
		t.Setenv("NATS_FACTORY_"+f, "pw-"+f)
	}
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	badHub := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(badHub, []byte(`state_dir: /tmp/hub
federations:
  - name: pumps
    members: [{name: factory-a, key: 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29}]
    architecture: {kind: autoencoder, version: 1, inputs: 8, layers: [6, 3, 6], activation: tanh, params: 155}
    secagg: {enabled: true, metrics: [loss, loss]}
    dp: {enabled: true, epsilon_limit: 8}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	badWant := wantLines(t, badConfigWant)

	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     []string // fragments stdout must contain
		stderr     []string // fragments stderr must contain
		noStdout   bool
		notStderr  []string // fragments stderr must not contain
		secretFree bool     // neither output may show a secret value
	}{
		{
			name: "no arguments", args: nil, code: 2,
			stderr: []string{"millwright: industrial IoT edge gateway", "Usage:", "millwright config check FILE..."}, noStdout: true,
		},
		{
			name: "version", args: []string{"version"}, code: 0,
			stdout: []string{"millwright ", runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH},
		},
		{name: "--version", args: []string{"--version"}, code: 0, stdout: []string{"millwright ", runtime.Version()}},
		{name: "help", args: []string{"help"}, code: 0, stdout: []string{"Usage:", "millwright run --config FILE"}},
		{name: "-h", args: []string{"-h"}, code: 0, stdout: []string{"Usage:"}},
		{
			name: "unknown command", args: []string{"frobnicate"}, code: 2,
			stderr: []string{`millwright: unknown command "frobnicate"`, "Usage:"}, noStdout: true,
		},
		{
			name: "config without check", args: []string{"config"}, code: 2,
			stderr: []string{"usage: millwright config check FILE..."}, noStdout: true,
		},
		{
			name: "config with another subcommand", args: []string{"config", "validate", exampleConfig}, code: 2,
			stderr: []string{"usage: millwright config check FILE..."}, noStdout: true,
		},
		{
			name: "config check without files", args: []string{"config", "check"}, code: 2,
			stderr: []string{"usage: millwright config check FILE..."}, noStdout: true,
		},
		{
			name: "config check the example", args: []string{"config", "check", exampleConfig}, code: 0,
			stdout:     []string{exampleConfig + ": ok (factory acme-berlin, 2 source(s), 1 sink(s))"},
			secretFree: true,
		},
		{
			name: "config check the hub example", args: []string{"config", "check", hubExample}, code: 0,
			stdout: []string{hubExample + ": ok (hub, 1 federation(s): pumps)"}, secretFree: true,
		},
		{
			name: "config check a bad hub file", args: []string{"config", "check", badHub}, code: 1,
			stderr: []string{badHub + ":", `federations[0].secagg.metrics[1]: "loss" appears twice`,
				"federations[0].secagg.metrics: with dp are masked, clipped and noised in the final evaluation round only"}, noStdout: true,
		},
		{
			name: "config check a bad file", args: []string{"config", "check", badConfig}, code: 1,
			stderr: append([]string{badConfig + ":"}, badWant...), noStdout: true,
		},
		{
			name: "config check a missing file", args: []string{"config", "check", missing}, code: 1,
			stderr: []string{"read configuration", missing}, noStdout: true,
		},
		{
			name: "config check a bad and a good file", args: []string{"config", "check", badConfig, goodConfig}, code: 1,
			stdout: []string{goodConfig + ": ok (factory plant-1, 1 source(s), 1 sink(s))"},
			stderr: append([]string{badConfig + ":"}, badWant...), notStderr: []string{goodConfig},
		},
		{
			name: "config check a good and a bad file", args: []string{"config", "check", exampleConfig, missing}, code: 1,
			stdout: []string{exampleConfig + ": ok"},
			stderr: []string{missing}, notStderr: []string{exampleConfig},
		},
		{
			name: "run with a bad configuration", args: []string{"run", "--config", badConfig}, code: 1,
			stderr: append([]string{"millwright: invalid configuration", badConfig}, badWant...), noStdout: true,
		},
		{
			name: "run with a missing configuration", args: []string{"run", "-config", missing}, code: 1,
			stderr: []string{"millwright: invalid configuration", missing}, noStdout: true,
		},
		{
			name: "run with an unknown flag", args: []string{"run", "--nope"}, code: 2,
			stderr: []string{"flag provided but not defined: -nope", "-config"}, noStdout: true,
		},
		{name: "run -h", args: []string{"run", "-h"}, code: 0, stdout: []string{"usage: millwright run [--config FILE]", "-config", "configuration file"}},
		{
			name: "run with a stray argument", args: []string{"run", "gateway.yaml"}, code: 2,
			stderr: []string{`millwright run: unexpected argument "gateway.yaml"; it takes flags only`, "usage: millwright run"}, noStdout: true,
		},
		{name: "hub -h", args: []string{"hub", "-h"}, code: 0, stdout: []string{"usage: millwright hub [--config FILE]", "hub passwd", "-config"}},
		{
			name: "hub with an unknown flag", args: []string{"hub", "--nope"}, code: 2,
			stderr: []string{"millwright hub: flag provided but not defined: -nope", "-config"}, noStdout: true,
		},
		{name: "demo -h", args: []string{"demo", "-h"}, code: 0, stdout: []string{"usage: millwright demo [flags]", "-federation-rounds"}},
		{name: "models train -h", args: []string{"models", "train", "-h"}, code: 0, stdout: []string{"usage: millwright models train", "-machine"}},
		{
			name: "models train without a machine", args: []string{"models", "train"}, code: 2,
			stderr: []string{"millwright models train: --machine is required"}, noStdout: true,
		},
		{
			name: "demo with an unknown flag", args: []string{"demo", "--nope"}, code: 2,
			stderr: []string{"flag provided but not defined: -nope", "-mqtt", "-influx"}, noStdout: true,
		},
		{
			name: "demo with a bad flag value", args: []string{"demo", "-duration", "forever"}, code: 2,
			stderr: []string{`invalid value "forever" for flag -duration`}, noStdout: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr := runCLI(t, tt.args, tt.code, tt.stdout, tt.stderr)
			for _, f := range tt.notStderr {
				if strings.Contains(stderr, f) {
					t.Errorf("stderr contains %q:\n%s", f, stderr)
				}
			}
			if tt.noStdout && stdout != "" {
				t.Errorf("unexpected stdout:\n%s", stdout)
			}
			if tt.secretFree {
				for _, s := range []string{"s3cret", "user:pass"} {
					if strings.Contains(stdout+stderr, s) {
						t.Errorf("the output shows the secret %q", s)
					}
				}
			}
		})
	}
}

// Every problem of a bad file is printed on a line of its own, after the file's name.
func TestConfigCheckPrintsOneProblemPerLine(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"config", "check", badConfig}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit code %d", code)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if lines[0] != badConfig+":" {
		t.Errorf("first line %q, want the file name", lines[0])
	}
	for _, want := range wantLines(t, badConfigWant) {
		i := slices.IndexFunc(lines[1:], func(l string) bool { return strings.Contains(l, want) })
		if i < 0 {
			t.Errorf("no line contains %q:\n%s", want, &stderr)
			continue
		}
		lines = slices.Delete(lines, i+1, i+2) // each problem on its own line
	}
}

// wantLines reads a .want file: one expected error fragment per non-empty line.
func wantLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
