package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/gateway/config"
)

func TestHubExampleConfigLoads(t *testing.T) {
	cfg := loadHubExample(t)
	fc := cfg.Federations[0]
	if fc.Name != "pumps" || len(fc.Members) != 3 || !fc.DP.Enabled || fc.Architecture.Params != 155 || cfg.KeyFile != "/var/lib/millwright-hub/hub.key" ||
		cfg.NATS.Embedded.StoreDir != "/var/lib/millwright-hub/jetstream" || cfg.NATS.Embedded.Factories[2].Password.Value() != "secret-NATS_FACTORY_C" {
		t.Fatalf("decoded %+v", cfg)
	}
}

func TestHubConfigReportsEveryProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.yaml")
	doc := `
http: {tls: {key_file: hub-key.pem, client_ca_file: ca.pem}}
nats:
  embedded:
    listen: nowhere
    factories: [{name: a, password: x, federations: [f]}]
  connect: {url: "nats://x:4222"}
federations:
  - name: f
    members: [{name: b, key: 00}]
    architecture: {kind: linear, params: 0}
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadHubConfig(path)
	if err == nil {
		t.Fatal("bad config accepted")
	}
	paths := problemPaths(err)
	// A decode error (the key) stops before Validate; fix it and look again.
	if !paths["federations[0].members[0].key"] {
		t.Fatalf("bad key not reported: %v", err)
	}
	doc2 := strings.Replace(doc, "key: 00", "key: d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", 1)
	_ = os.WriteFile(path, []byte(doc2), 0o600)
	_, err = loadHubConfig(path)
	paths = problemPaths(err)
	for _, want := range []string{"state_dir", "nats", "federations[0].architecture.params", "http.tls.cert_file", "http.tls.client_ca_file"} {
		if !paths[want] {
			t.Errorf("no problem at %s: %v", want, err)
		}
	}
}

// problemPaths returns the paths of the problems err reports.
func problemPaths(err error) map[string]bool {
	paths := map[string]bool{}
	for _, e := range config.Flatten(err) {
		var fe *config.FieldError
		if errors.As(e, &fe) {
			paths[fe.Path] = true
		}
	}
	return paths
}

func TestHubLedgerAndHTTPConfig(t *testing.T) {
	cfg := loadHubExample(t)
	if cfg.Ledger.Backend != "local" || cfg.Ledger.Key != cfg.KeyFile || cfg.Ledger.Name != "hub" || cfg.HTTP.Listen != "127.0.0.1:9274" {
		t.Fatalf("ledger %+v, http %+v", cfg.Ledger, cfg.HTTP)
	}
	path := filepath.Join(t.TempDir(), "hub.yaml")
	doc := `
state_dir: /tmp/hub
nats: {embedded: {listen: "127.0.0.1:4222"}}
ledger: {backend: chain, name: ""}
federations:
  - name: f
    members: [{name: b, key: d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a}]
    architecture: {kind: autoencoder, params: 10}
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadHubConfig(path)
	paths := problemPaths(err)
	for _, want := range []string{"ledger.backend", "ledger.name"} {
		if !paths[want] {
			t.Errorf("no problem at %s: %v", want, err)
		}
	}
	if len(paths) != 2 {
		t.Errorf("%d problems, want 2: %v", len(paths), err)
	}
}

// TestHubSignOffConfig: the sign-off API needs the local ledger and the HTTP API.
func TestHubSignOffConfig(t *testing.T) {
	base := `
state_dir: /tmp/hub
nats: {embedded: {listen: "127.0.0.1:4222"}}
signoff: {keys: /etc/millwright/signoff-keys.txt}
federations:
  - name: f
    members: [{name: b, key: d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a}]
    architecture: {kind: autoencoder, params: 10}
`
	for _, tc := range []struct{ name, extra, want string }{
		{"local ledger", "", ""},
		{"no ledger", "ledger: {backend: none}\n", "needs ledger.backend local"},
		{"no http", "http: {listen: \"\"}\n", "needs http.listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseHubConfig([]byte(base + tc.extra))
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), "signoff.keys: "+tc.want)) {
				t.Errorf("parse: %v; want %q", err, tc.want)
			}
		})
	}
}

// loadHubExample loads deploy/examples/hub.yaml with its factories' passwords set.
func loadHubExample(t *testing.T) hubFileConfig {
	t.Helper()
	for _, v := range []string{"NATS_FACTORY_A", "NATS_FACTORY_B", "NATS_FACTORY_C"} {
		t.Setenv(v, "secret-"+v)
	}
	cfg, err := loadHubConfig("../../../deploy/examples/hub.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestHubConfigRetentionCoversARound: update_retention must be above the longest a round
// lasts (round_timeout, once per phase with secure aggregation): a hub restarted in a
// round reads the round's updates again from the stream, and the stream would have
// dropped the first ones. Before, any positive update_retention was accepted.
func TestHubConfigRetentionCoversARound(t *testing.T) {
	const base = `
state_dir: /tmp/hub
nats: {embedded: {listen: "127.0.0.1:4222"}}
federations:
  - name: f
    members: [{name: b, key: d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a}, {name: c, key: 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29}]
    architecture: {kind: autoencoder, params: 10}
    round_timeout: 15m
`
	for _, tc := range []struct{ name, extra, want string }{
		{"default", "", ""},
		{"above a round", "update_retention: 16m\n", ""},
		{"a round", "update_retention: 15m\n",
			`update_retention: 15m0s is not above the longest round of federation "f" (round_timeout 15m0s); expected more than 15m0s`},
		{"shorter than secure aggregation's phases", "update_retention: 1h\n    secagg: {enabled: true}\n",
			`update_retention: 1h0m0s is not above the longest round of federation "f" (round_timeout 15m0s for each of the 5 phases of secure aggregation); expected more than 1h15m0s`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := base
			if strings.HasPrefix(tc.extra, "update_retention") {
				first, rest, _ := strings.Cut(tc.extra, "\n")
				doc = first + "\n" + base + rest
			}
			_, err := parseHubConfig([]byte(doc))
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("parse: %v; want %q", err, tc.want)
			}
		})
	}
}

// TestHubPermissions: hub permissions prints an account for the hub and one per factory,
// with a user each, with its password variable, and the factory's own update subject, which
// its account imports from the hub's; missing flags and bad
// names are usage errors (exit 2) naming what is expected. That a real nats-server loads
// the block and enforces it is TestAuthorizationOnAServerOfItsOwn (natsbus), and through a
// gateway's leaf node TestAuthorizationThroughALeafNode.
func TestHubPermissions(t *testing.T) {
	var stdout, stderr strings.Builder
	if code := run([]string{"hub", "permissions", "--federations", "pumps,valves", "factory-a", "factory-b"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{`{user: "hub", password: $MILLWRIGHT_NATS_PASSWORD_HUB}`,
		`{user: "factory-a", password: $MILLWRIGHT_NATS_PASSWORD_FACTORY_A, permissions:`, `"mw.upd.pumps.factory-a"`, `"mw.upd.valves.factory-b"`,
		"accounts {", `"hub": {`, `"factory-a": {`, `{service: {account: "hub", subject: "mw.upd.valves.factory-b"}}`} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %s:\n%s", want, stdout.String())
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"factory-a"}, "--federations is missing"},
		{[]string{"--federations", "pumps"}, "no FACTORY"},
		{[]string{"--federations", "pumps", "Factory A"}, `user "Factory A"`},
	} {
		stdout.Reset()
		stderr.Reset()
		if code := run(append([]string{"hub", "permissions"}, c.args...), &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", c.args, code, stderr.String(), c.want)
		}
	}
}
