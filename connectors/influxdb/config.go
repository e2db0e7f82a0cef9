package influxdb

import (
	_ "embed"
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
)

// SampleConfig is a documented example of the sink's configuration, as it appears under a
// sink's "influxdb" key.
//
//go:embed sample.yaml
var SampleConfig string

// Defaults and bounds of the configuration.
const (
	DefaultMeasurement   = "telemetry"
	DefaultBatchPoints   = 5000
	DefaultWriters       = 8
	DefaultFlushInterval = time.Second
	DefaultTimeout       = 10 * time.Second

	maxBatchPoints = 1_000_000
	maxWriters     = 64
)

// Config configures an InfluxDB sink.
type Config struct {
	// URL is the server's base URL, http(s)://host:port (a path prefix is kept, for proxies).
	URL string `yaml:"url"`
	// Token is the InfluxDB 2.x API token, or "user:password" for InfluxDB 1.8 with
	// authentication on; empty when authentication is off.
	Token config.Secret `yaml:"token"`
	// Org is the InfluxDB 2.x organization; InfluxDB 1.8 ignores it.
	Org string `yaml:"org"`
	// Bucket is the InfluxDB 2.x bucket, or "database" or "database/retention-policy" on 1.8.
	Bucket string `yaml:"bucket"`
	// Measurement is the measurement every point is written to.
	Measurement string `yaml:"measurement"`
	// BatchPoints is the most points sent in one HTTP request.
	BatchPoints int `yaml:"batch_points"`
	// Writers is the number of concurrent requests; a batch is sharded by series over them.
	Writers int `yaml:"writers"`
	// FlushInterval is the longest time points wait in the pipeline to fill a batch; 0 does
	// not wait: points are written as soon as they are stored (in smaller requests).
	FlushInterval time.Duration `yaml:"flush_interval"`
	// Timeout bounds each HTTP request.
	Timeout time.Duration `yaml:"timeout"`
	// Gzip compresses request bodies.
	Gzip bool `yaml:"gzip"`
	// TLS configures HTTPS; an https URL without it uses the system roots.
	TLS config.TLS `yaml:"tls"`
}

// SetDefaults fills the defaults in.
func (c *Config) SetDefaults() {
	c.Measurement = DefaultMeasurement
	c.BatchPoints = DefaultBatchPoints
	c.Writers = DefaultWriters
	c.FlushInterval = DefaultFlushInterval
	c.Timeout = DefaultTimeout
}

// Validate reports every problem of the configuration, with paths relative to the sink.
func (c Config) Validate() error {
	var p config.Problems
	if c.URL == "" {
		p.Addf("url", "is required: the InfluxDB server's base URL, such as http://127.0.0.1:8086")
	} else if u, err := url.Parse(c.URL); err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a password
		}
		p.Addf("url", "is not a URL: %v; expected http(s)://host:port", err)
	} else {
		shown := c.URL // never print a password given in the URL
		if u.User != nil {
			shown = redactURL(u)
		}
		switch {
		case u.Scheme != "http" && u.Scheme != "https":
			p.Addf("url", "%q must start with http:// or https://", shown)
		case u.Host == "":
			p.Addf("url", "%q has no host; expected http(s)://host:port", shown)
		case u.RawQuery != "" || u.Fragment != "":
			p.Addf("url", "%q must not have a query or fragment; set org and bucket instead", shown)
		case u.User != nil:
			p.Addf("url", "%q must not hold credentials; set token instead", shown)
		}
		if u.Scheme == "http" && c.TLS.Active() {
			p.Addf("tls", "TLS is configured but url %q is http://; use https://", shown)
		}
	}
	if strings.TrimSpace(c.Bucket) == "" {
		p.Addf("bucket", "is required: the bucket, or on InfluxDB 1.8 the database (\"db\" or \"db/retention_policy\")")
	}
	if err := ValidateMeasurement(c.Measurement); err != nil {
		p.Addf("measurement", "%v", err)
	}
	if c.BatchPoints < 1 || c.BatchPoints > maxBatchPoints {
		p.Addf("batch_points", "%d is out of range; expected 1 to %d", c.BatchPoints, maxBatchPoints)
	}
	if c.Writers < 1 || c.Writers > maxWriters {
		p.Addf("writers", "%d is out of range; expected 1 to %d", c.Writers, maxWriters)
	}
	if c.FlushInterval < 0 {
		p.Addf("flush_interval", "%s is negative; expected 0 or more", c.FlushInterval)
	}
	if c.Timeout <= 0 {
		p.Addf("timeout", "%s must be positive, such as 10s", c.Timeout)
	}
	p.Nest("tls", c.TLS.Validate())
	return p.Err()
}

func redactURL(u *url.URL) string {
	c := *u
	c.User = url.User("xxxxx")
	return c.String()
}
