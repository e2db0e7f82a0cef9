package mqtt

import (
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/configtest"
)

func TestSampleConfig(t *testing.T) {
	c, err := configtest.Decode[Config](SampleConfig)
	if err != nil {
		t.Fatalf("sample.yaml: %v", err)
	}
	if len(c.Topics) != 2 || c.Topics[0].QoS != 1 || c.Topics[1].QoS != 2 {
		t.Fatalf("topics = %+v", c.Topics)
	}
	if c.Topics[1].Payload.TimestampFormat != "rfc3339" || c.Topics[1].Payload.ValueField != "value" {
		t.Errorf("topics[1].payload = %+v, want rfc3339 and the other defaults", c.Topics[1].Payload)
	}
	if c.KeepAlive != 30*time.Second || c.MaxInflight != 10000 || c.MaxPayloadBytes != 256<<10 || c.Connections != 1 {
		t.Errorf("defaults not applied: %+v", c)
	}
	if _, err := New("sample", c, testEnv(t)); err != nil {
		t.Errorf("New(sample): %v", err)
	}
}

func TestConfigQoSZero(t *testing.T) {
	c, err := configtest.Decode[Config]("servers: [tcp://h:1883]\ntopics:\n  - {pattern: \"a/{machine}\", qos: 0}\n  - {pattern: \"b/{machine}\"}\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Topics[0].QoS != 0 || c.Topics[1].QoS != 1 {
		t.Errorf("qos = %d, %d; want 0 (given) and 1 (default)", c.Topics[0].QoS, c.Topics[1].QoS)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // every problem, in order
	}{
		{"empty", ``, []string{
			"servers: at least one broker URL is required, such as tcp://127.0.0.1:1883",
			"topics: at least one topic is required",
		}},
		{"servers", `
servers: ["ftp://h", "tcp://", "tcp://h:1883", "%zz"]
topics: [{pattern: "a/{machine}"}]`, []string{
			`servers[0]: "ftp://h": scheme "ftp" is not tcp, ssl, ws or wss (nor mqtt, mqtts, tls, tcps)`,
			`servers[1]: "tcp://" has no host; expected a URL such as tcp://127.0.0.1:1883`,
			`servers[3]: "%zz" is not a URL: parse "%zz": invalid URL escape "%zz"`,
		}},
		{"tls on a plain url", `
servers: ["tcp://h:1883", "ssl://h:8883"]
tls: {ca_file: /x/ca.pem, cert_file: /x/c.pem}
topics: [{pattern: "a/{machine}"}]`, []string{
			`servers[0]: "tcp://h:1883" is a plain tcp:// URL but tls is configured; use ssl:// or wss:// for TLS`,
			`tls.cert_file: cert_file and key_file must be given together (got cert_file "/x/c.pem", key_file "")`,
		}},
		{"limits", `
servers: [tcp://h:1883]
password: secret
keep_alive: 500ms
connect_timeout: -1s
connections: 65
share_group: "a/b"
max_inflight: -1
max_batch_points: 2000000
max_payload_bytes: 1GiB
topics: [{pattern: "a/{machine}"}]`, []string{
			`password: a password needs a username (MQTT 3.1.1 sends no password without one)`,
			`keep_alive: 500ms is out of range; expected from 1s to 18h12m15s`,
			`connect_timeout: -1s is negative; expected a positive duration such as 10s`,
			`connections: 65 is out of range; expected 1 to 64`,
			`share_group: "a/b" must not contain '/', '+', '#' or NUL`,
			`max_inflight: -1 is out of range; expected 1 to 1048576`,
			`max_batch_points: 2000000 is out of range; expected 1 to 1048576`,
			`max_payload_bytes: 1GiB is out of range; expected 1B to 256MiB`,
		}},
		{"topics", `
servers: [tcp://h:1883]
topics:
  - {pattern: "plant/{lin}/x"}
  - {pattern: "plant/{line}", qos: 3}
  - {pattern: "plant/{machine}/{signal}", machine: m1, signal: s}
  - {pattern: "a/{line}/b", machine: m}
  - {pattern: "a/{machine}/b"}
  - pattern: "c/{machine}"
    payload: {timestamp_field: value, timestamp_format: "dd.mm.yyyy", quality_field: value}
`, []string{
			`topics[0].pattern: "plant/{lin}/x": capture {lin} is not one of factory, line, machine, signal`,
			`topics[1].qos: 3 is not 0, 1 or 2`,
			`topics[1].machine: no machine: capture {machine} in the pattern or set machine`,
			`topics[2].machine: "m1" is fixed but the pattern "plant/{machine}/{signal}" also captures {machine}; keep one`,
			`topics[2].signal: "s" is fixed but the pattern "plant/{machine}/{signal}" also captures {signal}; keep one`,
			`topics[4].pattern: "a/{machine}/b" subscribes to the same filter "a/+/b" as topics[3]; merge them or make them differ`,
			`topics[5].payload.value_field: "value" is also the timestamp_field; each field needs its own key`,
			`topics[5].payload.quality_field: "value" is also the timestamp_field; each field needs its own key`,
			`topics[5].payload.quality_field: "value" is also the value_field; each field needs its own key`,
			`topics[5].payload.timestamp_format: "dd.mm.yyyy" is not unix, unix_ms, unix_us, unix_ns, rfc3339 or a Go time layout (such as "2006-01-02 15:04:05.000")`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := configtest.Decode[Config](tt.yaml)
			var got []string
			for _, e := range config.Flatten(err) {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	cfg := Config{Servers: []string{"tcp://h:1883"}, Topics: []Topic{{Pattern: "a/{machine}", QoS: 1}}}
	s, err := New("line-1", cfg, testEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.ClientID != "millwright-line-1" || s.cfg.MaxBatchPoints != DefaultMaxBatchPoints || s.cfg.Topics[0].Payload.ValueField != "value" {
		t.Errorf("defaults not applied: %+v", s.cfg)
	}
	if cfg.Topics[0].Payload.ValueField != "" {
		t.Error("New changed the caller's config")
	}
	if ids := s.cfg.clientIDs(); len(ids) != 1 || ids[0] != "millwright-line-1" {
		t.Errorf("clientIDs = %q", ids)
	}
	if got := s.filters; len(got) != 1 || got["a/+"] != 1 {
		t.Errorf("filters = %v", got)
	}

	cfg.Connections, cfg.ClientID = 3, "gw"
	s, err = New("line-1", cfg, testEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	if ids := s.cfg.clientIDs(); strings.Join(ids, " ") != "gw-0 gw-1 gw-2" {
		t.Errorf("clientIDs = %q", ids)
	}
	if got := s.filters; len(got) != 1 || got["$share/millwright/a/+"] != 1 {
		t.Errorf("filters = %v", got)
	}
}

func TestNewErrors(t *testing.T) {
	_, err := New("s", Config{Servers: []string{"tcp://h:1883"}, Topics: []Topic{{Pattern: "a/{machine}", QoS: 5}}}, testEnv(t))
	if err == nil || err.Error() != `mqtt source "s": topics[0].qos: 5 is not 0, 1 or 2` {
		t.Errorf("New error = %v", err)
	}
	_, err = New("s", Config{Servers: []string{"ssl://h:8883"}, TLS: config.TLS{CAFile: "/nonexistent/ca.pem"},
		Topics: []Topic{{Pattern: "a/{machine}"}}}, testEnv(t))
	if err == nil || !strings.Contains(err.Error(), "tls ca_file: open /nonexistent/ca.pem") {
		t.Errorf("New error = %v", err)
	}
}
