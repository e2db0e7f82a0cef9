package mqtt

import (
	_ "embed"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
)

// SampleConfig is a documented example of the source's configuration, as it appears under a
// source's "mqtt" key. A test loads it, so it stays valid.
//
//go:embed sample.yaml
var SampleConfig string

// Defaults. A zero value in a Config (or an empty string in a Payload) means the default.
const (
	DefaultKeepAlive       = 30 * time.Second
	DefaultConnectTimeout  = 10 * time.Second
	DefaultShareGroup      = "millwright"
	DefaultMaxInflight     = 10000
	DefaultMaxBatchPoints  = 10000
	DefaultMaxPayloadBytes = 256 << 10
	DefaultQoS             = 1

	DefaultTimestampField  = "ts"
	DefaultTimestampFormat = "unix_ms"
	DefaultValueField      = "value"
	DefaultSignalField     = "signal"
	DefaultQualityField    = "quality"
	DefaultSeparator       = "."
)

// Limits that Validate enforces.
const (
	maxConnections     = 64
	maxMaxInflight     = 1 << 20
	maxMaxBatchPoints  = 1 << 20
	maxPayloadLimit    = 256 << 20 // MQTT's own limit on a packet
	maxKeepAlive       = 65535 * time.Second
	maxPatternBytes    = 65535
	maxClientIDBytes   = 65535 - 3 // room for the "-N" suffix of several connections
	maxFieldNameBytes  = 256
	maxFixedValueBytes = 256
)

// Config configures an MQTT source.
type Config struct {
	// Servers are the broker URLs, tried in order: tcp://host:1883, ssl://host:8883,
	// ws://host/path, wss://host/path (also mqtt://, mqtts://, tls://, tcps://).
	Servers []string `yaml:"servers"`
	// ClientID identifies the session at the broker; it must stay the same across restarts
	// for a persistent session to survive. Default "millwright-<source name>".
	ClientID string        `yaml:"client_id"`
	Username string        `yaml:"username"`
	Password config.Secret `yaml:"password"`
	// TLS applies to ssl://, mqtts://, tls://, tcps:// and wss:// servers.
	TLS config.TLS `yaml:"tls"`
	// CleanSession false (the default) keeps a persistent session: QoS 1 and 2 messages
	// published while the gateway is away are queued by the broker and delivered on reconnect.
	CleanSession bool `yaml:"clean_session"`
	// KeepAlive is the MQTT keep-alive interval (default 30s, at most 18h12m15s).
	KeepAlive time.Duration `yaml:"keep_alive"`
	// ConnectTimeout bounds one connection attempt (default 10s).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// Connections > 1 opens that many clients (client ids <client_id>-0 ... -N-1) on one
	// shared subscription, $share/<share_group>/<filter>, so the broker spreads the messages
	// across them. Default 1 (a plain subscription).
	Connections int `yaml:"connections"`
	// ShareGroup names the shared subscription when Connections > 1 (default "millwright").
	ShareGroup string `yaml:"share_group"`
	// MaxInflight bounds the messages received but not yet settled by the pipeline, for the
	// whole source (default 10000). At the bound the source stops reading from the broker,
	// which holds the rest: that is the backpressure.
	MaxInflight int `yaml:"max_inflight"`
	// MaxBatchPoints bounds the points one Read returns (default 10000). A message that
	// decodes to more points is dead-lettered.
	MaxBatchPoints int `yaml:"max_batch_points"`
	// MaxPayloadBytes bounds a message payload (default 256KiB); larger ones are dead-lettered.
	MaxPayloadBytes config.ByteSize `yaml:"max_payload_bytes"`
	// Topics to subscribe to, each with how its messages map to points. At least one.
	Topics []Topic `yaml:"topics"`
}

// Topic is one subscription and the mapping of its messages to points.
type Topic struct {
	// Pattern is an MQTT topic filter in which a whole level may be a named capture:
	// "plant/{line}/{machine}/telemetry", "sensors/{machine}/{signal}". Captures are
	// {factory}, {line}, {machine} and {signal}; they subscribe as "+". "+" and a final "#"
	// are allowed too.
	Pattern string `yaml:"pattern"`
	// QoS of the subscription: 0, 1 or 2. SetDefaults (which the YAML decoder calls for every
	// topic) sets 1; a Topic built in Go gets what it is given.
	QoS int `yaml:"qos"`
	// Fixed values of what the pattern does not capture. Factory may stay empty (the gateway
	// fills in its own); a machine must be captured or fixed; a signal may also come from the
	// payload. A topic's signal prefixes the names the payload gives: with signal "motor",
	// {"current": 3.2} becomes "motor.current".
	Factory string `yaml:"factory"`
	Line    string `yaml:"line"`
	Machine string `yaml:"machine"`
	Signal  string `yaml:"signal"`
	// Payload says how JSON payloads are read.
	Payload Payload `yaml:"payload"`
}

// Payload names the JSON fields of a payload and their formats. Empty fields mean the defaults.
type Payload struct {
	// TimestampField is the key of the sample time (default "ts"). Without it a point's
	// SourceTime is 0 and its time is the gateway's receive time.
	TimestampField string `yaml:"timestamp_field"`
	// TimestampFormat is "unix" (seconds, may be fractional), "unix_ms" (the default),
	// "unix_us", "unix_ns", "rfc3339" (RFC 3339 with optional fractional seconds) or a Go time
	// layout such as "2006-01-02 15:04:05.000" (read as UTC unless it holds a zone). Unix
	// timestamps may be JSON numbers or strings of digits.
	TimestampFormat string `yaml:"timestamp_format"`
	// ValueField is the key of the value of a single sample (default "value").
	ValueField string `yaml:"value_field"`
	// SignalField is the key that names the signal of a single sample (default "signal").
	SignalField string `yaml:"signal_field"`
	// QualityField is the key of the sample quality (default "quality"): "good", "uncertain",
	// "bad", or a raw numeric code, where 0 is good and anything else bad (the code is kept).
	QualityField string `yaml:"quality_field"`
	// Separator joins the keys of nested objects into signal names (default "."):
	// {"motor": {"temp": 40}} is signal "motor.temp".
	Separator string `yaml:"separator"`
}

// SetDefaults fills every zero field with its default. It may be called more than once; it
// leaves the QoS of the topics alone (0 is a valid QoS), see Topic.SetDefaults.
func (c *Config) SetDefaults() {
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.Connections == 0 {
		c.Connections = 1
	}
	if c.ShareGroup == "" {
		c.ShareGroup = DefaultShareGroup
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.MaxBatchPoints == 0 {
		c.MaxBatchPoints = DefaultMaxBatchPoints
	}
	if c.MaxPayloadBytes == 0 {
		c.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	for i := range c.Topics {
		c.Topics[i].Payload.SetDefaults()
	}
}

// SetDefaults sets QoS 1 and the payload defaults. The YAML decoder calls it on every topic
// before it decodes the topic's keys, so "qos: 0" still means 0.
func (t *Topic) SetDefaults() {
	t.QoS = DefaultQoS
	t.Payload.SetDefaults()
}

// SetDefaults fills every empty field with its default.
func (p *Payload) SetDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&p.TimestampField, DefaultTimestampField)
	def(&p.TimestampFormat, DefaultTimestampFormat)
	def(&p.ValueField, DefaultValueField)
	def(&p.SignalField, DefaultSignalField)
	def(&p.QualityField, DefaultQualityField)
	def(&p.Separator, DefaultSeparator)
}

// serverSchemes maps the URL schemes paho dials to whether they use TLS.
var serverSchemes = map[string]bool{
	"tcp": false, "mqtt": false, "ws": false,
	"ssl": true, "tls": true, "mqtts": true, "mqtt+ssl": true, "tcps": true, "wss": true,
}

// Validate reports every problem of the configuration at once, with paths relative to it.
// Zero values that SetDefaults fills are accepted.
func (c Config) Validate() error {
	var p config.Problems
	if len(c.Servers) == 0 {
		p.Addf("servers", "at least one broker URL is required, such as tcp://127.0.0.1:1883")
	}
	tlsOn := c.TLS.Active()
	for i, s := range c.Servers {
		path := config.Index("servers", i)
		u, err := url.Parse(s)
		if err != nil {
			p.Addf(path, "%q is not a URL: %v", s, err)
			continue
		}
		secure, known := serverSchemes[u.Scheme]
		switch {
		case !known:
			p.Addf(path, "%q: scheme %q is not tcp, ssl, ws or wss (nor mqtt, mqtts, tls, tcps)", s, u.Scheme)
		case u.Host == "":
			p.Addf(path, "%q has no host; expected a URL such as tcp://127.0.0.1:1883", s)
		case tlsOn && !secure:
			p.Addf(path, "%q is a plain %s:// URL but tls is configured; use ssl:// or wss:// for TLS", s, u.Scheme)
		}
	}
	if len(c.ClientID) > maxClientIDBytes {
		p.Addf("client_id", "is %d bytes long, more than %d", len(c.ClientID), maxClientIDBytes)
	}
	if c.Password.IsSet() && c.Username == "" {
		p.Addf("password", "a password needs a username (MQTT 3.1.1 sends no password without one)")
	}
	p.Nest("tls", c.TLS.Validate())
	if c.KeepAlive < 0 || c.KeepAlive > maxKeepAlive || (c.KeepAlive > 0 && c.KeepAlive < time.Second) {
		p.Addf("keep_alive", "%s is out of range; expected from 1s to %s", c.KeepAlive, maxKeepAlive)
	}
	if c.ConnectTimeout < 0 {
		p.Addf("connect_timeout", "%s is negative; expected a positive duration such as 10s", c.ConnectTimeout)
	}
	if c.Connections < 0 || c.Connections > maxConnections {
		p.Addf("connections", "%d is out of range; expected 1 to %d", c.Connections, maxConnections)
	}
	if strings.ContainsAny(c.ShareGroup, "/+#\x00") {
		p.Addf("share_group", "%q must not contain '/', '+', '#' or NUL", c.ShareGroup)
	}
	if c.MaxInflight < 0 || c.MaxInflight > maxMaxInflight {
		p.Addf("max_inflight", "%d is out of range; expected 1 to %d", c.MaxInflight, maxMaxInflight)
	}
	if c.MaxBatchPoints < 0 || c.MaxBatchPoints > maxMaxBatchPoints {
		p.Addf("max_batch_points", "%d is out of range; expected 1 to %d", c.MaxBatchPoints, maxMaxBatchPoints)
	}
	if c.MaxPayloadBytes < 0 || c.MaxPayloadBytes > maxPayloadLimit {
		p.Addf("max_payload_bytes", "%s is out of range; expected 1B to %s", c.MaxPayloadBytes, config.ByteSize(maxPayloadLimit))
	}
	if len(c.Topics) == 0 {
		p.Addf("topics", "at least one topic is required")
	}
	filters := make(map[string]int, len(c.Topics))
	for i, t := range c.Topics {
		path := config.Index("topics", i)
		p.Nest(path, t.Validate())
		pat, err := parsePattern(t.Pattern)
		if err != nil {
			continue // reported by t.Validate
		}
		if j, dup := filters[pat.filter]; dup {
			p.Addf(config.Join(path, "pattern"), "%q subscribes to the same filter %q as topics[%d]; merge them or make them differ", t.Pattern, pat.filter, j)
			continue
		}
		filters[pat.filter] = i
	}
	return p.Err()
}

// Validate checks one topic, with paths relative to it.
func (t Topic) Validate() error {
	var p config.Problems
	pat, err := parsePattern(t.Pattern)
	if err != nil {
		p.Addf("pattern", "%v", err)
	}
	if t.QoS < 0 || t.QoS > 2 {
		p.Addf("qos", "%d is not 0, 1 or 2", t.QoS)
	}
	fixed := [numFields]string{t.Factory, t.Line, t.Machine, t.Signal}
	for f := range numFields {
		name := fieldNames[f]
		v := fixed[f]
		switch {
		case err == nil && v != "" && pat.captures(f):
			p.Addf(name, "%q is fixed but the pattern %q also captures {%s}; keep one", v, t.Pattern, name)
		case len(v) > maxFixedValueBytes:
			p.Addf(name, "is %d bytes long, more than %d", len(v), maxFixedValueBytes)
		case strings.ContainsRune(v, 0):
			p.Addf(name, "%q contains a NUL character", v)
		}
	}
	if err == nil && t.Machine == "" && !pat.captures(fieldMachine) {
		p.Addf("machine", "no machine: capture {machine} in the pattern or set machine")
	}
	p.Nest("payload", t.Payload.Validate())
	return p.Err()
}

// Validate checks the payload settings, with paths relative to them. Empty fields mean the
// defaults.
func (pl Payload) Validate() error {
	var p config.Problems
	d := pl
	d.SetDefaults()
	fields := []struct{ key, value string }{
		{"timestamp_field", d.TimestampField},
		{"value_field", d.ValueField},
		{"signal_field", d.SignalField},
		{"quality_field", d.QualityField},
	}
	for i, f := range fields {
		if len(f.value) > maxFieldNameBytes {
			p.Addf(f.key, "is %d bytes long, more than %d", len(f.value), maxFieldNameBytes)
		}
		for _, g := range fields[:i] {
			if f.value == g.value {
				p.Addf(f.key, "%q is also the %s; each field needs its own key", f.value, g.key)
			}
		}
	}
	if len(d.Separator) > 16 {
		p.Addf("separator", "%q is longer than 16 bytes", d.Separator)
	}
	if _, err := parseTimestampFormat(d.TimestampFormat); err != nil {
		p.Addf("timestamp_format", "%v", err)
	}
	return p.Err()
}

// clientIDs returns the client id of each connection.
func (c *Config) clientIDs() []string {
	if c.Connections <= 1 {
		return []string{c.ClientID}
	}
	ids := make([]string, c.Connections)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", c.ClientID, i)
	}
	return ids
}
