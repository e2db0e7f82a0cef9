package gateway

import (
	"crypto/ed25519"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/fabric"
	"github.com/millwright-io/millwright/ledger/local"
)

// LedgerConfig configures where the gateway records the lineage of its models (dataset
// snapshots, trainings, deployments): records are signed with the gateway's identity key,
// queued durably in the outbox and anchored to the backend in the background, so ingest and
// training never wait for the ledger.
type LedgerConfig struct {
	// Backend is "local" (a hash-chained, append-only file in the state directory:
	// tamper-evident, not tamper-proof), "fabric" (a Hyperledger Fabric channel, configured
	// in Fabric) or "none" (no records are kept).
	Backend string `yaml:"backend"`
	// Fabric is the peer, identity and channel of the "fabric" backend. Its msp_id is the
	// organisation of the gateway's records (org defaults to it).
	Fabric *fabric.Config `yaml:"fabric"`
	// Dir is the local ledger's directory (default <state_dir>/ledger).
	Dir string `yaml:"dir"`
	// Key is the gateway's ed25519 identity key file, created with mode 0600 on first start
	// (default <state_dir>/identity.key).
	Key string `yaml:"key"`
	// Name and Org identify the gateway as the actor of its records (defaults "gateway" and
	// gateway.factory).
	Name string `yaml:"name"`
	Org  string `yaml:"org"`
	// Outbox is the durable queue in front of the backend (dir default <state_dir>/outbox;
	// its site defaults to gateway.factory).
	Outbox ledger.Config `yaml:"outbox"`
}

// SetDefaults fills what does not depend on the gateway's settings.
func (c *LedgerConfig) SetDefaults() {
	c.Backend = "local"
	c.Name = "gateway"
	c.Outbox.SetDefaults()
}

// resolve fills the defaults that come from the gateway's settings.
func (c *LedgerConfig) resolve(s Settings) {
	c.Dir = statePath(s.StateDir, c.Dir, "ledger")
	c.Key = statePath(s.StateDir, c.Key, "identity.key")
	c.Outbox.Dir = statePath(s.StateDir, c.Outbox.Dir, "outbox")
	if c.Fabric != nil {
		c.Fabric.SetDefaults()
	}
	if c.Org == "" {
		c.Org = s.Factory
		if c.Backend == "fabric" && c.Fabric != nil {
			c.Org = c.Fabric.MSPID
		}
	}
	if c.Outbox.Site == "" {
		c.Outbox.Site = s.Factory
	}
}

// Validate reports every problem at once, with paths relative to the ledger block.
func (c LedgerConfig) Validate() error {
	var p config.Problems
	switch c.Backend {
	case "none":
		return nil
	case "local":
		if c.Fabric != nil {
			p.Addf("fabric", "is set but backend is local; set backend: fabric or remove the block")
		}
	case "fabric":
		switch {
		case c.Fabric == nil:
			p.Addf("fabric", "missing; backend fabric needs the peer, identity and channel")
		default:
			p.Nest("fabric", c.Fabric.Validate())
			if c.Org != "" && c.Fabric.MSPID != "" && c.Org != c.Fabric.MSPID {
				p.Addf("org", "%q differs from fabric.msp_id %q; the chaincode accepts only records whose org is the submitting organisation", c.Org, c.Fabric.MSPID)
			}
		}
	default:
		p.Addf("backend", "%q is not a ledger backend; expected local, fabric or none", c.Backend)
	}
	if c.Name == "" {
		p.Addf("name", "must be set (the actor name in the gateway's records)")
	}
	if c.Org == "" {
		p.Addf("org", "must be set (the actor organisation in the gateway's records)")
	}
	p.Nest("outbox", c.Outbox.Validate())
	return p.Err()
}

// lineage is the gateway's open ledger: the outbox that records go to and the backend it
// anchors them in.
type lineage struct {
	key     ed25519.PrivateKey // the gateway's identity key (also its federation key)
	outbox  *ledger.Outbox
	backend interface {
		ledger.Backend
		Close() error
	}
}

// openLineage opens the identity key, the backend and the outbox; nil when the backend is
// "none". A local backend also takes records signed by the keys of others.
func openLineage(c LedgerConfig, log *slog.Logger, reg prometheus.Registerer, others ...ed25519.PublicKey) (*lineage, error) {
	if c.Backend == "none" {
		return nil, nil
	}
	key, err := ledger.LoadOrCreateKey(c.Key)
	if err != nil {
		return nil, fmt.Errorf("ledger identity: %w", err)
	}
	signer, err := ledger.NewSigner(key, c.Name, c.Org)
	if err != nil {
		return nil, fmt.Errorf("ledger identity %s: %w", c.Key, err)
	}
	var backend interface {
		ledger.Backend
		Close() error
	}
	switch c.Backend {
	case "fabric":
		// The client registers the gateway's key on the ledger on first use; it connects
		// lazily, so a peer that is down only delays anchoring.
		backend, err = fabric.Open(*c.Fabric, fabric.WithActors(signer), fabric.WithLogger(log), fabric.WithRegisterer(reg))
	default:
		backend, err = local.Open(c.Dir, local.WithKeyring(ledger.NewKeyring(append([]ed25519.PublicKey{signer.Public()}, others...)...)))
	}
	if err != nil {
		return nil, err
	}
	out, err := ledger.Open(c.Outbox, signer, backend, ledger.WithLogger(log), ledger.WithRegisterer(reg))
	if err != nil {
		_ = backend.Close()
		return nil, err
	}
	log.Info("lineage ledger open", "backend", c.Backend, "actor", signer.Actor().KeyID, "org", signer.Actor().Org)
	return &lineage{key: key, outbox: out, backend: backend}, nil
}

// Close closes the outbox, then the backend.
func (l *lineage) Close() error {
	err := l.outbox.Close()
	if cerr := l.backend.Close(); err == nil {
		err = cerr
	}
	return err
}
