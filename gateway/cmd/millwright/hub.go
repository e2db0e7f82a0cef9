package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/natsbus"
	"github.com/millwright-io/millwright/gateway"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
)

// hubFileConfig is the configuration of `millwright hub`.
type hubFileConfig struct {
	// StateDir holds the hub's identity key and, with the embedded server, JetStream's files.
	StateDir string `yaml:"state_dir"`
	// KeyFile is the hub's ed25519 key that signs global models (default state_dir/hub.key).
	KeyFile string            `yaml:"key_file"`
	Log     gateway.LogConfig `yaml:"log"`
	NATS    hubNATSConfig     `yaml:"nats"`
	// UpdateRetention is the longest an update stays in the stream (default 7 days): an
	// open round's, for a hub restarted mid-round; the hub deletes a closed round's.
	UpdateRetention time.Duration                 `yaml:"update_retention"`
	Federations     []federation.FederationConfig `yaml:"federations"`
	// RetiredFederations are federations this hub ran and no longer does: at start it
	// deletes what each keeps on the NATS server (its models, round state and versions,
	// updates and receipts; its ledger records stay). A federation removed from
	// federations and not listed here keeps its storage, and the hub warns of it.
	RetiredFederations []string `yaml:"retired_federations"`
	// Ledger records every aggregated round as a FederatedRound, signed with the hub's key:
	// by default in a local hash-chained file under state_dir/ledger, or on Fabric.
	Ledger gateway.LedgerConfig `yaml:"ledger"`
	// HTTP serves /metrics, /healthz, /readyz and /api/v1/federations (empty listen: off).
	HTTP gateway.HTTPConfig `yaml:"http"`
	// SignOff lets people record approvals and releases in the hub's local ledger through
	// its HTTP API while the hub runs (`models approve|release --hub URL`).
	SignOff hubSignOffConfig `yaml:"signoff"`
}

// hubOrg is the default organisation of the hub's ledger records.
const hubOrg = "hub"

// hubNATSConfig says where NATS is: embedded in the hub (single node) or an existing
// server or cluster the hub connects to with full rights.
type hubNATSConfig struct {
	Embedded *natsbus.ServerConfig `yaml:"embedded"`
	Connect  *natsbus.ClientConfig `yaml:"connect"`
}

func (c *hubFileConfig) SetDefaults() {
	if c.UpdateRetention == 0 {
		c.UpdateRetention = 7 * 24 * time.Hour
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	c.Ledger.SetDefaults()
	c.Ledger.Name = "hub"
	c.HTTP.Listen = "127.0.0.1:9274"
}

// finish fills in the defaults that depend on other fields, after decoding.
func (c *hubFileConfig) finish() {
	if c.KeyFile == "" && c.StateDir != "" {
		c.KeyFile = filepath.Join(c.StateDir, "hub.key")
	}
	if e := c.NATS.Embedded; e != nil && e.StoreDir == "" && c.StateDir != "" {
		e.StoreDir = filepath.Join(c.StateDir, "jetstream")
	}
	if c.Ledger.Key == "" {
		c.Ledger.Key = c.KeyFile // one identity: the key that signs models signs the records
	}
}

// runs returns the names of the federations the hub runs.
func (c hubFileConfig) runs() map[string]bool {
	names := map[string]bool{}
	for _, fc := range c.Federations {
		names[fc.Name] = true
	}
	return names
}

func (c hubFileConfig) Validate() error {
	var p config.Problems
	runs := c.runs()
	if c.StateDir == "" {
		p.Addf("state_dir", "is required")
	}
	switch {
	case (c.NATS.Embedded == nil) == (c.NATS.Connect == nil):
		p.Addf("nats", "set exactly one of embedded (single-node hub) and connect (an existing NATS)")
	case c.NATS.Embedded != nil:
		p.Nest("nats.embedded", c.NATS.Embedded.Validate())
		members := map[string]map[string]bool{}
		for i, f := range c.NATS.Embedded.Factories {
			for j, fed := range f.Federations {
				if !runs[fed] {
					p.Addf(config.Join(config.Index("nats.embedded.factories", i), config.Index("federations", j)),
						"%q is not one of the hub's federations; expected one of federations (a factory listed for another could still read its models and store updates)", fed)
				}
				if members[fed] == nil {
					members[fed] = map[string]bool{}
				}
				members[fed][f.Name] = true
			}
		}
		if len(c.NATS.Embedded.Factories) > 0 {
			for i, fc := range c.Federations {
				for j, m := range fc.Members {
					if !members[fc.Name][m.Name] {
						p.Addf(config.Join(config.Index("federations", i), config.Index("members", j)),
							"%q has no credentials for federation %q in nats.embedded.factories", m.Name, fc.Name)
					}
				}
			}
		}
	default:
		p.Nest("nats.connect", c.NATS.Connect.Validate())
	}
	p.Nest("http", c.HTTP.Validate())
	if c.UpdateRetention <= 0 {
		p.Addf("update_retention", "%v must be positive", c.UpdateRetention)
	}
	for _, fc := range c.Federations {
		span, phases := fc.RoundSpan()
		if c.UpdateRetention <= 0 || fc.RoundTimeout <= 0 || c.UpdateRetention > span {
			continue
		}
		of := fmt.Sprintf("round_timeout %v", fc.RoundTimeout)
		if phases > 1 {
			of += fmt.Sprintf(" for each of the %d phases of secure aggregation", phases)
		}
		p.Addf("update_retention", "%v is not above the longest round of federation %q (%s); expected more than %v: a hub restarted in a round reads the round's updates again from the stream",
			c.UpdateRetention, fc.Name, of, span)
	}
	p.Nest("", federation.HubConfig{Federations: c.Federations}.Validate())
	for i, name := range c.RetiredFederations {
		path := config.Index("retired_federations", i)
		if err := federation.CheckName(name); err != nil {
			p.Addf(path, "%v", err)
		}
		if runs[name] {
			p.Addf(path, "%q is in federations too; a federation the hub runs cannot be retired (remove it from federations first)", name)
		}
	}
	if c.StateDir != "" {
		lc := c.Ledger
		gateway.ResolveLedger(&lc, c.StateDir, hubOrg)
		p.Nest("ledger", lc.Validate())
	}
	if c.SignOff.Keys != "" {
		switch {
		case c.Ledger.Backend != "local":
			p.Addf("signoff.keys", "needs ledger.backend local, not %q: on Fabric people record their decisions themselves", c.Ledger.Backend)
		case c.HTTP.Listen == "":
			p.Addf("signoff.keys", "needs http.listen: the API people send their records to")
		}
	}
	return p.Err()
}

func loadHubConfig(path string) (hubFileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return hubFileConfig{}, err
	}
	return parseHubConfig(data)
}

// parseHubConfig decodes and validates a hub's configuration. Decoding and validation
// problems are reported together (config.Merge), as the gateway's are, so one run shows
// them all.
func parseHubConfig(data []byte) (hubFileConfig, error) {
	var c hubFileConfig
	c.SetDefaults()
	derr := config.Decode(data, &c)
	c.finish()
	return c, config.Merge(derr, c.Validate())
}

const hubUsage = `usage: millwright hub [--config FILE]
       millwright hub passwd < FILE
       millwright hub permissions --federations F[,F...] FACTORY...

Runs the federation hub of the configuration until interrupted (SIGINT or SIGTERM). With
passwd, prints the bcrypt hash of the first line of standard input, for a factory's NATS
password in the hub's configuration. With permissions, prints the NATS users of a hub
that connects to a NATS server of its own and of its factories, with their permissions,
for that server's configuration.

Flags:
`

// cmdHub runs the federation hub until interrupted.
func cmdHub(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "passwd" {
		return cmdHubPasswd(os.Stdin, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "permissions" {
		return cmdHubPermissions(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("hub", flag.ContinueOnError)
	path := fs.String("config", "/etc/millwright/hub.yaml", "hub configuration file")
	if code, ok := parseOnlyFlags(fs, hubUsage, args, stdout, stderr); !ok {
		return code
	}
	cfg, err := loadHubConfig(*path)
	if err != nil {
		fmt.Fprintf(stderr, "millwright hub: invalid configuration %s:\n%v\n", *path, err)
		return 1
	}
	log := newLogger(stderr, cfg.Log)
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		fmt.Fprintf(stderr, "millwright hub: state_dir: %v\n", err)
		return 1
	}
	reg := prometheus.NewRegistry()
	var signoff *audit.Keyring
	var people []ed25519.PublicKey
	if cfg.SignOff.Keys != "" {
		if signoff, err = loadKeyring(cfg.SignOff.Keys); err != nil {
			fmt.Fprintf(stderr, "millwright hub: signoff.keys: %v\n", err)
			return 1
		}
		for _, pub := range signoff.Ledger() {
			people = append(people, pub)
		}
	}
	lg, err := gateway.OpenLedger(cfg.Ledger, cfg.StateDir, hubOrg, log.With("component", "ledger"), reg, people...)
	if err != nil {
		fmt.Fprintf(stderr, "millwright hub: ledger: %v\n", err)
		return 1
	}
	var key ed25519.PrivateKey
	if lg != nil {
		defer func() { _ = lg.Close() }()
		key = lg.Key
	} else if key, err = ledger.LoadOrCreateKey(cfg.KeyFile); err != nil {
		fmt.Fprintf(stderr, "millwright hub: key_file: %v\n", err)
		return 1
	}
	pub := hex.EncodeToString(key.Public().(ed25519.PublicKey))
	fmt.Fprintf(stdout, "hub key %s (gateways and subscribers verify models with it)\n", pub)
	client := cfg.NATS.Connect
	if e := cfg.NATS.Embedded; e != nil {
		srv, err := natsbus.StartServer(*e, log.With("component", "nats"))
		if err != nil {
			fmt.Fprintf(stderr, "millwright hub: %v\n", err)
			return 1
		}
		defer srv.Shutdown()
		hc := srv.HubClient()
		client = &hc
		fmt.Fprintf(stdout, "embedded NATS at %s\n", srv.ClientURL())
	}
	bus, err := natsbus.Dial(ctx, *client, log.With("component", "natsbus"))
	if err != nil {
		fmt.Fprintf(stderr, "millwright hub: %v\n", err)
		return 1
	}
	defer func() { _ = bus.Close() }()
	if err := retireFederations(ctx, bus, cfg, log); err != nil {
		fmt.Fprintf(stderr, "millwright hub: %v\n", err)
		return 1
	}
	for _, fc := range cfg.Federations {
		var members []string
		for _, m := range fc.Members {
			members = append(members, m.Name)
		}
		if err := bus.EnsureFederation(ctx, fc.Name, members, cfg.UpdateRetention); err != nil {
			fmt.Fprintf(stderr, "millwright hub: %v\n", err)
			return 1
		}
	}
	if err := runHub(ctx, cfg, bus, key, lg, signoff, reg, log); err != nil {
		fmt.Fprintf(stderr, "millwright hub: %v\n", err)
		return 1
	}
	return 0
}

// cmdHubPasswd reads a factory's password (the first line of stdin) and prints its bcrypt
// hash, for the password of a factory in nats.embedded.factories.
func cmdHubPasswd(stdin io.Reader, stdout, stderr io.Writer) int {
	line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintf(stderr, "millwright hub passwd: read stdin: %v\n", err)
		return 1
	}
	hash, err := natsbus.HashPassword(strings.TrimRight(line, "\r\n"))
	if err != nil {
		fmt.Fprintf(stderr, "millwright hub passwd: %v\nusage: millwright hub passwd < password-file (prints the bcrypt hash of the password on the first line)\n", err)
		return 1
	}
	fmt.Fprintln(stdout, hash)
	return 0
}

// retireFederations deletes the NATS storage of cfg's retired federations (what is left of
// one whose deletion stopped partway too) and warns of any other federation with storage on
// the server that cfg does not run. A listing the server refuses is a warning: the retired
// federations are then deleted without it.
func retireFederations(ctx context.Context, bus *natsbus.Bus, cfg hubFileConfig, log *slog.Logger) error {
	present, err := bus.Federations(ctx)
	if err != nil {
		log.Warn("cannot list the federations on the NATS server; federations the hub does not run are not looked for", "err", err)
	}
	known := cfg.runs()
	for _, name := range cfg.RetiredFederations {
		known[name] = true
		if err == nil && !slices.Contains(present, name) {
			continue
		}
		if err := bus.DeleteFederation(ctx, name); err != nil {
			return fmt.Errorf("retire federation %s: %w", name, err)
		}
		log.Info("retired federation's storage deleted: its models, round state, updates and receipts (its ledger records stay)", "federation", name)
	}
	for _, name := range present {
		if !known[name] {
			log.Warn("a federation the hub does not run keeps its storage on the NATS server: its models, round state, updates and receipts; "+
				"list it in retired_federations to delete them, unless another hub on the same NATS account runs it", "federation", name)
		}
	}
	return nil
}
