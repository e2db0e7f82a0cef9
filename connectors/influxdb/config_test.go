package influxdb

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/internal/configtest"
)

func TestSampleConfig(t *testing.T) {
	cfg, err := configtest.Decode[Config](SampleConfig)
	if err != nil {
		t.Fatalf("sample.yaml: %v", err)
	}
	var want Config
	want.SetDefaults()
	want.URL, want.Bucket = "http://127.0.0.1:8086", "millwright"
	if fmt.Sprint(cfg) != fmt.Sprint(want) {
		t.Errorf("sample.yaml decodes as %+v; want the defaults %+v", cfg, want)
	}
	// The commented-out keys, uncommented, are the defaults too (so the comments cannot rot).
	var lines []string
	for _, l := range strings.Split(SampleConfig, "\n") {
		if rest, ok := strings.CutPrefix(l, "# "); ok && strings.Contains(rest, ":") && !strings.HasPrefix(rest, " ") &&
			!strings.HasPrefix(rest, "InfluxDB sink") && !strings.HasPrefix(rest, "Every key") &&
			!strings.HasPrefix(rest, "org:") && !strings.HasPrefix(rest, "token:") && !strings.HasPrefix(rest, "tls:") {
			lines = append(lines, rest)
		}
	}
	uncommented, err := configtest.Decode[Config]("url: http://127.0.0.1:8086\nbucket: millwright\n" + strings.Join(lines, "\n"))
	if err != nil {
		t.Fatalf("uncommented defaults: %v", err)
	}
	if fmt.Sprint(uncommented) != fmt.Sprint(want) || len(lines) != 6 {
		t.Errorf("the %d commented defaults decode as %+v; want %+v", len(lines), uncommented, want)
	}
}

func TestConfigFiles(t *testing.T) {
	t.Setenv("MILLWRIGHT_TEST_INFLUX_TOKEN", "writer:s3cret")
	cfg, err := configtest.Decode[Config](configtest.Read(t, "testdata/config/good.yaml"))
	if err != nil {
		t.Fatalf("good.yaml: %v", err)
	}
	if cfg.Token.Value() != "writer:s3cret" || cfg.Bucket != "telemetry/autogen" || cfg.FlushInterval != 500*time.Millisecond ||
		cfg.Timeout != 15*time.Second || !cfg.Gzip || cfg.TLS.CAFile != "/etc/millwright/influx-ca.pem" {
		t.Errorf("good.yaml decoded as %+v", cfg)
	}

	cfg, err = configtest.Decode[Config](configtest.Read(t, "testdata/config/minimal.yaml"))
	if err != nil {
		t.Fatalf("minimal.yaml: %v", err)
	}
	if cfg.Measurement != DefaultMeasurement || cfg.BatchPoints != DefaultBatchPoints || cfg.Writers != DefaultWriters ||
		cfg.FlushInterval != DefaultFlushInterval || cfg.Timeout != DefaultTimeout || cfg.Gzip || cfg.Token.IsSet() {
		t.Errorf("minimal.yaml did not get the defaults: %+v", cfg)
	}

	_, err = configtest.Decode[Config](configtest.Read(t, "testdata/config/bad.yaml"))
	if err == nil {
		t.Fatal("bad.yaml validated")
	}
	for _, want := range []string{
		"url: \"ftp://influx:8086\" must start with http:// or https://",
		"bucket: is required",
		"measurement: measurement \"#nope\" starts with '#'",
		"batch_points: 0 is out of range; expected 1 to 1000000",
		"writers: 100 is out of range; expected 1 to 64",
		"flush_interval: -1s is negative",
		"timeout: 0s must be positive",
		"tls.cert_file: cert_file and key_file must be given together",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("bad.yaml errors lack %q:\n%v", want, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // "" for valid
	}{
		{"defaults with url and bucket", func(*Config) {}, ""},
		{"https with tls", func(c *Config) { c.URL = "https://h:8086"; c.TLS.InsecureSkipVerify = true }, ""},
		{"path prefix", func(c *Config) { c.URL = "http://h/influx/" }, ""},
		{"zero flush interval", func(c *Config) { c.FlushInterval = 0 }, ""},
		{"no url", func(c *Config) { c.URL = "" }, "url: is required"},
		{"not a url", func(c *Config) { c.URL = "http://[::1" }, "is not a URL"},
		{"no host", func(c *Config) { c.URL = "http:///x" }, "has no host"},
		{"query", func(c *Config) { c.URL = "http://h:8086?db=x" }, "must not have a query"},
		{"credentials in url", func(c *Config) { c.URL = "http://u:pw@h:8086" }, "must not hold credentials"},
		{"tls on http", func(c *Config) { c.TLS.CAFile = "/ca.pem" }, "tls: TLS is configured but url"},
		{"blank bucket", func(c *Config) { c.Bucket = " " }, "bucket: is required"},
		{"empty measurement", func(c *Config) { c.Measurement = "" }, "measurement: the measurement is empty"},
		{"measurement with backslash", func(c *Config) { c.Measurement = `a\` }, "ends in a backslash"},
		{"too many points", func(c *Config) { c.BatchPoints = 2_000_000 }, "batch_points: 2000000 is out of range"},
		{"no writers", func(c *Config) { c.Writers = 0 }, "writers: 0 is out of range"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "timeout: -1s must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig("http://127.0.0.1:8086", tt.mutate)
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate = %v; want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v; want an error containing %q", err, tt.want)
			}
		})
	}
	if strings.Contains(testConfig("http://u:pw@h:8086", nil).Validate().Error(), "pw") {
		t.Error("the URL's password appears in the error")
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	var cfg Config
	cfg.SetDefaults()
	_, err := New("broken", cfg, connectors.Env{})
	if err == nil || !strings.Contains(err.Error(), `influxdb sink "broken"`) || !strings.Contains(err.Error(), "url: is required") {
		t.Fatalf("New = %v; want a configuration error naming the sink", err)
	}
}
