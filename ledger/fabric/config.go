package fabric

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
)

// Config is where and as whom the client reaches the lineage chaincode.
type Config struct {
	// Endpoint is the peer's gateway service, host:port.
	Endpoint string `yaml:"endpoint"`
	// ServerName is the name checked against the peer's TLS certificate (its host alias);
	// empty: the host of Endpoint.
	ServerName string `yaml:"server_name"`
	// TLSCA is the PEM file of the CA that signed the peer's TLS certificate.
	TLSCA string `yaml:"tls_ca"`
	// MSPID is the client's organisation; it must equal the `org` of the ledger actors
	// whose records the client anchors.
	MSPID string `yaml:"msp_id"`
	// Cert and Key are the PEM files of the client's X.509 identity (enrolment
	// certificate and private key) in MSPID.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// Channel and Chaincode name the lineage chaincode (defaults millwright and lineage).
	Channel   string `yaml:"channel"`
	Chaincode string `yaml:"chaincode"`
	// Timeouts of the Fabric gateway calls (defaults 10s, 15s, 10s, 1m).
	EvaluateTimeout     time.Duration `yaml:"evaluate_timeout"`
	EndorseTimeout      time.Duration `yaml:"endorse_timeout"`
	SubmitTimeout       time.Duration `yaml:"submit_timeout"`
	CommitStatusTimeout time.Duration `yaml:"commit_status_timeout"`
}

// DefaultConfig returns a Config with every default set and nothing else.
func DefaultConfig() Config {
	var c Config
	c.SetDefaults()
	return c
}

// SetDefaults fills the zero fields that have a default.
func (c *Config) SetDefaults() {
	if c.Channel == "" {
		c.Channel = "millwright"
	}
	if c.Chaincode == "" {
		c.Chaincode = "lineage"
	}
	for _, d := range []struct {
		f *time.Duration
		v time.Duration
	}{{&c.EvaluateTimeout, 10 * time.Second}, {&c.EndorseTimeout, 15 * time.Second}, {&c.SubmitTimeout, 10 * time.Second}, {&c.CommitStatusTimeout, time.Minute}} {
		if *d.f == 0 {
			*d.f = d.v
		}
	}
}

var (
	hostPortRE = regexp.MustCompile(`^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$`)
	// Channel names as Fabric allows them; chaincode names likewise.
	channelRE   = regexp.MustCompile(`^[a-z][a-z0-9.-]{0,248}$`)
	chaincodeRE = regexp.MustCompile(`^[a-zA-Z0-9]+([-_][a-zA-Z0-9]+)*$`)
)

// Validate reports every problem at once, each with its field's path. It reads no file.
func (c Config) Validate() error {
	var p config.Problems
	if !hostPortRE.MatchString(c.Endpoint) {
		p.Addf("endpoint", "%q is not host:port, expected the peer's gateway address such as 127.0.0.1:17151", c.Endpoint)
	}
	for _, f := range []struct{ path, v, what string }{
		{"tls_ca", c.TLSCA, "the PEM file of the peer's TLS CA"},
		{"msp_id", c.MSPID, "the client's MSP id (its organisation)"},
		{"cert", c.Cert, "the PEM file of the client's certificate"},
		{"key", c.Key, "the PEM file of the client's private key"},
	} {
		if f.v == "" {
			p.Addf(f.path, "missing, expected %s", f.what)
		}
	}
	if !channelRE.MatchString(c.Channel) {
		p.Addf("channel", "%q is not a channel name, expected lower-case letters, digits, '.' and '-' starting with a letter", c.Channel)
	}
	if !chaincodeRE.MatchString(c.Chaincode) {
		p.Addf("chaincode", "%q is not a chaincode name, expected letters and digits separated by '-' or '_'", c.Chaincode)
	}
	for _, d := range []struct {
		path string
		v    time.Duration
	}{{"evaluate_timeout", c.EvaluateTimeout}, {"endorse_timeout", c.EndorseTimeout}, {"submit_timeout", c.SubmitTimeout}, {"commit_status_timeout", c.CommitStatusTimeout}} {
		if d.v <= 0 {
			p.Addf(d.path, "%v is not positive, expected a duration such as 10s", d.v)
		}
	}
	return p.Err()
}

// LoadConfig decodes a YAML document strictly into a Config with defaults and validates it.
func LoadConfig(data []byte) (Config, error) {
	c := DefaultConfig()
	if err := config.Decode(data, &c); err != nil {
		return Config{}, err
	}
	c.SetDefaults()
	return c, c.Validate()
}

// EnvPrefix returns the prefix of org's variables in the env file network.sh writes:
// MILLWRIGHT_FABRIC_FACTORY_A_ for factory-a.
func EnvPrefix(org string) string {
	return "MILLWRIGHT_FABRIC_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(org)) + "_"
}

// ConfigFromEnv builds the Config of organisation org from variables as
// deploy/fabric/network.sh writes them (MILLWRIGHT_FABRIC_CHANNEL, _CHAINCODE, and
// MILLWRIGHT_FABRIC_<ORG>_MSP_ID, _PEER_ENDPOINT, _PEER_HOST_ALIAS, _TLS_CA, _CERT, _KEY),
// looked up with getenv (os.Getenv, or the map of ParseEnvFile). It is validated.
func ConfigFromEnv(org string, getenv func(string) string) (Config, error) {
	pre := EnvPrefix(org)
	c := Config{
		Endpoint:   getenv(pre + "PEER_ENDPOINT"),
		ServerName: getenv(pre + "PEER_HOST_ALIAS"),
		TLSCA:      getenv(pre + "TLS_CA"),
		MSPID:      getenv(pre + "MSP_ID"),
		Cert:       getenv(pre + "CERT"),
		Key:        getenv(pre + "KEY"),
		Channel:    getenv("MILLWRIGHT_FABRIC_CHANNEL"),
		Chaincode:  getenv("MILLWRIGHT_FABRIC_CHAINCODE"),
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("fabric settings of organisation %q (variables %s*): %w", org, pre, err)
	}
	return c, nil
}

// maxEnvFile bounds the env file ParseEnvFile reads.
const maxEnvFile = 1 << 20

// ParseEnvFile reads a file of `export NAME=VALUE` (or `NAME=VALUE`) lines, with '#'
// comments and optional double quotes around VALUE, as network.sh writes .fabric/env.
// No shell expansion is done.
func ParseEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("fabric env file: %w", err)
	}
	if len(b) > maxEnvFile {
		return nil, fmt.Errorf("fabric env file %s: %d bytes, expected at most %d", path, len(b), maxEnvFile)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok || name == "" || strings.ContainsAny(name, " \t\"'") {
			return nil, fmt.Errorf("fabric env file %s:%d: %.80q is not NAME=VALUE", path, n, line)
		}
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			value = value[1 : len(value)-1]
		}
		env[name] = value
	}
	return env, sc.Err()
}
