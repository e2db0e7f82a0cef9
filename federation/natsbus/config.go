package natsbus

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/gateway/config"
)

// CheckName reports whether s can name a federation or a factory: names become NATS
// subject tokens, stream and bucket names.
var CheckName = federation.CheckName

// ClientConfig configures one connection to NATS: a gateway's, an OEM subscriber's or the
// hub's when it uses an existing NATS cluster.
type ClientConfig struct {
	// URL of a NATS server or of the local leaf node, e.g. nats://hub.example:4222.
	URL string `yaml:"url"`
	// User and Password are the factory's credentials; User is also the factory's name
	// (the only participant name it may publish updates as).
	User     string        `yaml:"user"`
	Password config.Secret `yaml:"password"`
	// TLS for the connection.
	TLS config.TLS `yaml:"tls"`
	// Domain is the hub's JetStream domain, needed when connecting through a leaf node
	// that runs its own JetStream (default: none).
	Domain string `yaml:"domain"`
	// Timeout bounds connecting and every request (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// OnLink, when set, is called with false when the connection to the server is lost
	// and with true when it is back (the client reconnects on its own, forever, and
	// subscriptions and watches resume without an error). Not from YAML.
	OnLink func(up bool) `yaml:"-"`

	inProcess *server.Server // the hub's own connection to its embedded server
}

// SetDefaults fills in every field left at its zero value.
func (c *ClientConfig) SetDefaults() {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
}

// Validate reports every problem at once, with paths relative to the config.
func (c ClientConfig) Validate() error {
	var p config.Problems
	if c.URL == "" {
		p.Addf("url", "is required (for example nats://127.0.0.1:4222)")
	}
	if c.User != "" {
		if err := CheckName(c.User); err != nil {
			p.Addf("user", "%v", err)
		}
	}
	if c.Password.IsSet() && c.User == "" {
		p.Addf("password", "is set but user is empty")
	}
	p.Nest("tls", c.TLS.Validate())
	if c.Timeout <= 0 {
		p.Addf("timeout", "%v must be positive", c.Timeout)
	}
	return p.Err()
}

// Factory is one factory's credentials on the embedded server and the federations it
// belongs to.
type Factory struct {
	Name string `yaml:"name"`
	// Password is the bcrypt hash of the factory's password ($2a$, $2b$ or $2y$, printed
	// by `millwright hub passwd`), or the password itself (plaintext, logged as a warning).
	Password    config.Secret `yaml:"password"`
	Federations []string      `yaml:"federations"`
}

// bcryptShape is the form of a bcrypt hash: version, two-digit cost, 53 characters of salt
// and digest.
var bcryptShape = regexp.MustCompile(`^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$`)

// IsBcrypt reports whether s is a bcrypt hash (the embedded server then compares the
// client's password with it) rather than a plaintext password.
func IsBcrypt(s string) bool {
	if !bcryptShape.MatchString(s) {
		return false
	}
	_, err := bcrypt.Cost([]byte(s))
	return err == nil
}

// bcryptPrefix marks a password the server treats as a bcrypt hash: a malformed hash
// with it would never match any password.
var bcryptPrefix = regexp.MustCompile(`^\$2[abxy]\$`)

// ErrPasswordLength is returned by HashPassword for an empty password or one longer than
// bcrypt's 72 bytes.
var ErrPasswordLength = errors.New("natsbus: password must be 1 to 72 bytes")

// HashPassword returns the bcrypt hash (cost bcrypt.DefaultCost) of a factory's password,
// for the password field of ServerConfig.Factories.
func HashPassword(password string) (string, error) {
	if len(password) == 0 || len(password) > 72 {
		return "", fmt.Errorf("%w (got %d bytes)", ErrPasswordLength, len(password))
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("natsbus: bcrypt: %w", err)
	}
	return string(h), nil
}

// ServerConfig configures the NATS server the hub embeds for a single-node setup.
type ServerConfig struct {
	// Listen is the client address, host:port (default 127.0.0.1:4222).
	Listen string `yaml:"listen"`
	// StoreDir holds JetStream's files (default: <hub state dir>/jetstream, set by the hub).
	StoreDir string `yaml:"store_dir"`
	// ServerName and Domain name the server and its JetStream domain (defaults
	// "millwright-hub" and "hub"); leaf nodes reach JetStream through the domain.
	ServerName string `yaml:"server_name"`
	Domain     string `yaml:"domain"`
	// LeafListen, when set, accepts leaf node connections (gateways' local NATS) on host:port.
	LeafListen string `yaml:"leaf_listen"`
	// CertFile and KeyFile turn TLS on for clients and leaf nodes; CAFile, when set,
	// requires and verifies client certificates.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`
	// Factories lists the per-factory credentials. With none, the server allows anonymous
	// clients (lab use only; logged).
	Factories []Factory `yaml:"factories"`
}

// SetDefaults fills in every field left at its zero value.
func (c *ServerConfig) SetDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:4222"
	}
	if c.ServerName == "" {
		c.ServerName = "millwright-hub"
	}
	if c.Domain == "" {
		c.Domain = "hub"
	}
}

// Validate reports every problem at once, with paths relative to the config.
func (c ServerConfig) Validate() error {
	var p config.Problems
	if _, _, err := splitHostPort(c.Listen); err != nil {
		p.Addf("listen", "%q: %v; expected host:port", c.Listen, err)
	}
	if c.LeafListen != "" {
		if _, _, err := splitHostPort(c.LeafListen); err != nil {
			p.Addf("leaf_listen", "%q: %v; expected host:port", c.LeafListen, err)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		p.Addf("cert_file", "cert_file and key_file must be set together")
	}
	if c.CAFile != "" && c.CertFile == "" {
		p.Addf("ca_file", "client certificate verification needs cert_file and key_file")
	}
	seen := map[string]bool{}
	for i, f := range c.Factories {
		path := config.Index("factories", i)
		if err := CheckName(f.Name); err != nil {
			p.Addf(config.Join(path, "name"), "%v", err)
		}
		if f.Name == hubUser {
			p.Addf(config.Join(path, "name"), "%q is reserved for the hub", f.Name)
		}
		if seen[f.Name] {
			p.Addf(config.Join(path, "name"), "%q appears twice", f.Name)
		}
		seen[f.Name] = true
		if !f.Password.IsSet() {
			p.Addf(config.Join(path, "password"), "is required")
		} else if pw := f.Password.Value(); bcryptPrefix.MatchString(pw) && !IsBcrypt(pw) {
			p.Addf(config.Join(path, "password"), "%.7s… (%d characters) is not a valid bcrypt hash; expected 60 characters: $2a$, $2b$ or $2y$, a cost 04..31, $ and 53 characters of salt and hash (as printed by millwright hub passwd)", pw, len(pw))
		}
		if len(f.Federations) == 0 {
			p.Addf(config.Join(path, "federations"), "is empty; a factory must belong to at least one federation")
		}
		for j, fed := range f.Federations {
			if err := CheckName(fed); err != nil {
				p.Addf(config.Index(config.Join(path, "federations"), j), "%v", err)
			}
		}
	}
	return p.Err()
}
