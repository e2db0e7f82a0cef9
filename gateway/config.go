package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/millwright-io/millwright/connectors/influxdb"
	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/connectors/opcua"
	"github.com/millwright-io/millwright/connectors/sparkplug"
	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/gateway/deadletter"
)

// Config is the whole gateway configuration, one YAML file. deploy/examples/gateway.yaml
// documents every key.
type Config struct {
	Gateway     Settings          `yaml:"gateway"`
	Buffer      buffer.Config     `yaml:"buffer"`
	DeadLetters deadletter.Config `yaml:"dead_letters"`
	Sources     []SourceConfig    `yaml:"sources"`
	Sinks       []SinkConfig      `yaml:"sinks"`
	Ledger      LedgerConfig      `yaml:"ledger"`
	Models      ModelsConfig      `yaml:"models"`
	Federation  FederationConfig  `yaml:"federation"`
}

// Settings are the gateway's own settings.
type Settings struct {
	// Factory identifies the site; it is filled into every point that carries no factory.
	Factory string `yaml:"factory"`
	// StateDir holds everything the gateway keeps on disk (write-ahead log, dead letters, and
	// later model artifacts, keys and the ledger outbox).
	StateDir string     `yaml:"state_dir"`
	HTTP     HTTPConfig `yaml:"http"`
	Log      LogConfig  `yaml:"log"`
}

// HTTPConfig configures the HTTP API (/metrics, /healthz, /readyz).
type HTTPConfig struct {
	// Listen is the address to serve on; empty turns the API off.
	Listen string `yaml:"listen"`
	// Pprof serves Go's runtime profiles under /debug/pprof/ (for diagnosing CPU or memory
	// use; keep the address local).
	Pprof bool `yaml:"pprof"`
	// TLS serves the API over HTTPS (mutual TLS with client_ca_file).
	TLS config.ServerTLS `yaml:"tls"`
}

// Validate checks the TLS settings' combination.
func (c HTTPConfig) Validate() error {
	var p config.Problems
	p.Nest("tls", c.TLS.Validate())
	return p.Err()
}

// LogConfig configures logging to standard error.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// SourceConfig is one source: a name and exactly one connector block.
type SourceConfig struct {
	Name  string        `yaml:"name"`
	MQTT  *mqtt.Config  `yaml:"mqtt"`
	OPCUA *opcua.Config `yaml:"opcua"`

	Sparkplug *sparkplug.Config `yaml:"sparkplug"`
}

// SinkConfig is one sink: a name and exactly one connector block.
type SinkConfig struct {
	Name     string           `yaml:"name"`
	InfluxDB *influxdb.Config `yaml:"influxdb"`
}

// SetDefaults sets every default.
func (c *Config) SetDefaults() {
	c.Gateway = Settings{
		StateDir: "/var/lib/millwright",
		HTTP:     HTTPConfig{Listen: "127.0.0.1:9273"},
		Log:      LogConfig{Level: "info", Format: "text"},
	}
	c.Buffer.SetDefaults()
	c.DeadLetters.SetDefaults()
	c.Ledger.SetDefaults()
	c.Models.SetDefaults()
	c.Federation.SetDefaults()
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// Validate reports every problem of the configuration at once, each with its path.
func (c Config) Validate() error {
	var p config.Problems
	if c.Gateway.Factory == "" {
		p.Addf("gateway.factory", "must be set to the site's name (it tags every point)")
	} else if !namePattern.MatchString(c.Gateway.Factory) {
		p.Addf("gateway.factory", "%q is not a valid name; expected letters, digits, '_', '.', '-', at most 63", c.Gateway.Factory)
	}
	if c.Gateway.StateDir == "" {
		p.Addf("gateway.state_dir", "must be set")
	}
	p.Nest("gateway.http", c.Gateway.HTTP.Validate())
	switch c.Gateway.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.Addf("gateway.log.level", "%q is not a level; expected debug, info, warn or error", c.Gateway.Log.Level)
	}
	switch c.Gateway.Log.Format {
	case "text", "json":
	default:
		p.Addf("gateway.log.format", "%q is not a format; expected text or json", c.Gateway.Log.Format)
	}
	p.Nest("buffer", c.Buffer.Validate())
	p.Nest("dead_letters", c.DeadLetters.Validate())
	p.Nest("ledger", c.Ledger.Validate())
	p.Nest("models", c.Models.validate(c.Sinks))
	p.Nest("federation", c.Federation.validate(c.Models, c.Sinks))

	names := map[string]string{}
	checkName := func(path, name string) {
		switch {
		case name == "":
			p.Addf(config.Join(path, "name"), "must be set")
		case !namePattern.MatchString(name):
			p.Addf(config.Join(path, "name"), "%q is not a valid name; expected letters, digits, '_', '.', '-', at most 63", name)
		case names[name] != "":
			p.Addf(config.Join(path, "name"), "%q is already the name of %s; names must be unique", name, names[name])
		default:
			names[name] = path
		}
	}
	if len(c.Sources) == 0 {
		p.Addf("sources", "at least one source is needed")
	}
	for i, s := range c.Sources {
		path := config.Index("sources", i)
		checkName(path, s.Name)
		switch {
		case s.MQTT != nil && s.OPCUA != nil:
			p.Addf(path, "has both an mqtt and an opcua block; expected exactly one")
		case s.Sparkplug != nil && (s.MQTT != nil || s.OPCUA != nil):
			p.Addf(path, "has a sparkplug block and another connector block; expected exactly one")
		case s.MQTT != nil:
			p.Nest(config.Join(path, "mqtt"), s.MQTT.Validate())
		case s.OPCUA != nil:
			p.Nest(config.Join(path, "opcua"), s.OPCUA.Validate())
		case s.Sparkplug != nil:
			p.Nest(config.Join(path, "sparkplug"), s.Sparkplug.Validate())
		default:
			p.Addf(path, "no connector block; expected one of: mqtt, opcua, sparkplug")
		}
	}
	if len(c.Sinks) == 0 {
		p.Addf("sinks", "at least one sink is needed")
	}
	for i, s := range c.Sinks {
		path := config.Index("sinks", i)
		checkName(path, s.Name)
		switch {
		case s.InfluxDB != nil:
			p.Nest(config.Join(path, "influxdb"), s.InfluxDB.Validate())
		default:
			p.Addf(path, "no connector block; expected one of: influxdb")
		}
	}
	return p.Err()
}

// Parse decodes and validates a configuration document. It reports every problem at once.
func Parse(data []byte) (Config, error) {
	var c Config
	c.SetDefaults()
	derr := config.Decode(data, &c)
	c.Buffer.Dir = statePath(c.Gateway.StateDir, c.Buffer.Dir, "wal")
	c.DeadLetters.Dir = statePath(c.Gateway.StateDir, c.DeadLetters.Dir, "deadletters")
	for _, s := range c.Sources {
		if s.OPCUA != nil && s.OPCUA.StateDir == "" {
			s.OPCUA.StateDir = c.Gateway.StateDir
		}
	}
	c.Ledger.resolve(c.Gateway)
	c.Models.resolve(c.Gateway, c.Sinks)
	// Decoding and validation problems are reported together, so one run shows them all.
	return c, config.Merge(derr, c.Validate())
}

// Load reads, decodes and validates the configuration file at path.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read configuration: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return c, fmt.Errorf("%s:\n%w", path, err)
	}
	return c, nil
}

// statePath returns dir, or <state_dir>/name when dir is empty.
func statePath(stateDir, dir, name string) string {
	if dir != "" {
		return dir
	}
	return filepath.Join(stateDir, name)
}
