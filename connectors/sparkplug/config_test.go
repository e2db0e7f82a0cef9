package sparkplug

import (
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/configtest"
)

func TestSampleConfig(t *testing.T) {
	c, err := configtest.Decode[Config](SampleConfig)
	if err != nil {
		t.Fatalf("sample.yaml: %v", err)
	}
	if len(c.Groups) != 1 || len(c.Map.Rules) != 2 || c.RebirthInterval != 10*time.Second || c.Map.Separator != "." ||
		len(c.Map.Exclude) != 1 || c.MQTT.MaxInflight != 10000 {
		t.Errorf("sample decoded to %+v", c)
	}
	s, err := New("sample", c, connectors.Env{})
	if err != nil {
		t.Fatalf("New(sample): %v", err)
	}
	if s.cfg.HostID != "millwright-sample" || s.cfg.MQTT.ClientID != "millwright-sample" || !s.cfg.MQTT.CleanSession {
		t.Errorf("New defaults: host id %q, client id %q, clean session %v", s.cfg.HostID, s.cfg.MQTT.ClientID, s.cfg.MQTT.CleanSession)
	}
}

func TestConfigExcludeEmpty(t *testing.T) {
	c, err := configtest.Decode[Config]("mqtt: {servers: [tcp://b:1883]}\nmap: {exclude: []}\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Map.Exclude) != 0 {
		t.Errorf("exclude = %q, want none", c.Map.Exclude)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string // substrings of the error, one per problem
	}{
		{"no servers", "host_id: h\n", []string{"mqtt.servers: at least one broker URL"}},
		{"topics set", "mqtt: {servers: [tcp://b:1883], topics: [{pattern: a, machine: m}]}\n", []string{"mqtt.topics: 1 topic(s) set"}},
		{"connections", "mqtt: {servers: [tcp://b:1883], connections: 2}\n", []string{"mqtt.connections: 2: a Sparkplug host needs one connection"}},
		{"ids", "mqtt: {servers: [tcp://b:1883]}\nhost_id: a/b\ngroups: [g, '', 'x+', g]\n", []string{
			`host_id: "a/b" must not contain`, "groups[1]: is empty", `groups[2]: "x+" must not contain`, `groups[3]: "g" is already groups[0]`,
		}},
		{"limits", "mqtt: {servers: [tcp://b:1883], max_batch_points: 100}\nmax_nodes: -1\nrebirth_interval: -1s\n", []string{
			"rebirth_interval: -1s is negative", "max_nodes: -1 is out of range", "max_metrics_per_node: 10000 is more than mqtt.max_batch_points (100)",
		}},
		{"mapping", "mqtt: {servers: [tcp://b:1883]}\nmap: {group_as: plant, exclude: ['(']}\n", []string{
			`map.group_as: "plant" is not line, factory or none`, `map.exclude[0]: "(" is not a regular expression`,
		}},
		{"rules", "mqtt: {servers: [tcp://b:1883]}\nmap:\n  rules:\n    - {metric: '^(a)$', signal: '$2'}\n    - {device: '(?P<m>.*)', machine: '${m}${nope}'}\n    - {metric: '['}\n    - {machine: 'x$'}\n", []string{
			"map.rules[0].signal: template \"$2\": $2 refers to no submatch of the metric expression (it has 1)",
			"map.rules[1].machine: template \"${m}${nope}\": ${nope} is neither",
			`map.rules[2].metric: "[" is not a regular expression`,
			"map.rules[2]: the rule sets nothing",
			"map.rules[3].machine: template \"x$\": '$' at byte 1",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := configtest.Decode[Config](tc.yaml)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
			if n := len(config.Flatten(err)); n != len(tc.want) {
				t.Errorf("%d problems, want %d:\n%s", n, len(tc.want), msg)
			}
		})
	}
}
