package opcua

import (
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/configtest"
)

func TestSampleConfig(t *testing.T) {
	t.Setenv("OPCUA_PASSWORD", "pw")
	c, err := configtest.Decode[Config](SampleConfig)
	if err != nil {
		t.Fatalf("sample.yaml: %v", err)
	}
	if c.SecurityPolicy != "Basic256Sha256" || c.SecurityMode != "SignAndEncrypt" || c.Auth.Type != AuthUsername {
		t.Errorf("security = %s/%s %s", c.SecurityPolicy, c.SecurityMode, c.Auth.Type)
	}
	if len(c.Nodes) != 2 || len(c.Browse) != 1 || len(c.Mapping) != 2 {
		t.Fatalf("nodes %d browse %d mapping %d", len(c.Nodes), len(c.Browse), len(c.Mapping))
	}
	if c.Browse[0].MaxDepth != 4 || c.Nodes[0].Monitoring.Deadband != DeadbandAbsolute || *c.Subscription.DiscardOldest != true {
		t.Errorf("values not decoded: %+v %+v", c.Browse[0], c.Nodes[0].Monitoring)
	}
	c.StateDir = t.TempDir()
	if _, err := New("sample", c, unitEnv(t)); err != nil {
		t.Errorf("New(sample): %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"empty", ``, []string{
			"endpoint: is required, such as opc.tcp://127.0.0.1:4840",
			"nodes: no items: give nodes (node_id or browse_path) or browse roots",
		}},
		{"security", `
endpoint: http://h:4840
security_policy: Basic128
security_mode: Sign
nodes: [{node_id: "ns=2;s=A", machine: m, signal: s}]`, []string{
			`endpoint: "http://h:4840": expected opc.tcp://host:port[/path]`,
			`security_policy: "Basic128" is not a policy`,
		}},
		{"none with sign", `
endpoint: opc.tcp://h:4840
security_policy: None
security_mode: Sign
nodes: [{node_id: "ns=2;s=A", machine: m, signal: s}]`, []string{
			`security_mode: "Sign" needs a security_policy other than None`,
		}},
		{"stall timeout", `
endpoint: opc.tcp://h:4840
subscription: {publishing_interval: 2s, stall_timeout: 5s}
nodes: [{node_id: "ns=2;s=A", machine: m, signal: s}]`, []string{
			"subscription.stall_timeout: 5s is out of range; expected at least 3 publishing intervals (6s)",
		}},
		{"lifetime", `
endpoint: opc.tcp://h:4840
subscription: {max_keep_alive_count: 10, lifetime_count: 29}
nodes: [{node_id: "ns=2;s=A", machine: m, signal: s}]`, []string{
			"subscription.lifetime_count: 29 is out of range; expected at least 3 × max_keep_alive_count (30)",
		}},
		{"auth and items", `
endpoint: opc.tcp://h:4840
auth: {type: username}
nodes:
  - {node_id: "ns=x;i=1"}
  - {node_id: "ns=2;s=A", browse_path: "A/B", machine: m, signal: s}
  - {browse_path: "A//B", monitoring: {deadband: percent, deadband_value: 150}}
browse:
  - {root: "ns=q;i=1", include: [""], max_depth: 100}
mapping:
  - {match: "(?P<station>x)"}`, []string{
			"auth.username: is required with type username",
			`nodes[0].node_id: "ns=x;i=1" is not a node id`,
			"nodes[1].node_id: give node_id or browse_path, not both",
			`nodes[2].browse_path: browse path "A//B": segment 2 is empty`,
			"nodes[2].monitoring.deadband_value: 150 is out of range; expected 0 to 100",
			`browse[0].root: "ns=q;i=1" is not a node id`,
			"browse[0].include[0]: pattern is empty",
			"browse[0].max_depth: 100 is out of range; expected 1 to 64",
			`mapping[0].match: group "station" is not one of factory, line, machine, signal`,
			"mapping[0].machine: no machine",
			"mapping[0].signal: no signal",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := configtest.Decode[Config](tt.yaml)
			if err == nil {
				t.Fatal("valid, want errors")
			}
			got := config.Flatten(err)
			if len(got) != len(tt.want) {
				t.Errorf("%d problems, want %d:\n%v", len(got), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
		})
	}
}

// TestSubscriptionCounts: by default the server sends a keep-alive after about 5s without
// changes and keeps a subscription without publish requests about a minute, whatever the
// publishing interval; counts that are set are kept.
func TestSubscriptionCounts(t *testing.T) {
	for _, tt := range []struct {
		interval         time.Duration
		keepAlive, life  uint32
		wantKeep, wantLi uint32
	}{
		{time.Second, 0, 0, 5, 60},
		{100 * time.Millisecond, 0, 0, 50, 600},
		{300 * time.Millisecond, 0, 0, 17, 200},
		{10 * time.Second, 0, 0, 1, 6},
		{time.Minute, 0, 0, 1, 3},
		{time.Second, 30, 0, 30, 90},
		{time.Second, 0, 20, 5, 20}, // Validate reports it: below 3 keep-alive counts
		{time.Second, 2, 1000, 2, 1000},
	} {
		c := Config{Subscription: Subscription{PublishingInterval: tt.interval, MaxKeepAliveCount: tt.keepAlive, LifetimeCount: tt.life}}
		c.SetDefaults()
		if got := c.Subscription; got.MaxKeepAliveCount != tt.wantKeep || got.LifetimeCount != tt.wantLi {
			t.Errorf("interval %s, counts %d/%d: max_keep_alive_count %d, lifetime_count %d; want %d, %d",
				tt.interval, tt.keepAlive, tt.life, got.MaxKeepAliveCount, got.LifetimeCount, tt.wantKeep, tt.wantLi)
		}
	}
}

func TestMapping(t *testing.T) {
	m, err := newMapper([]Rule{
		{Match: `^Plant/(?P<line>[^/]+)/(?P<machine>[^/]+)/(?P<signal>.+)$`},
		{Match: `^ns=2;s=(\w+)\.(\w+)$`, Machine: "m-$1", Signal: "${2}_raw", Line: "fixed"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path  string
		fixed names
		want  names
		err   bool
	}{
		{"Plant/L1/Press7/Temp", names{}, names{"", "L1", "Press7", "Temp"}, false},
		{"Plant/L1/Press7/Motor/Current", names{}, names{"", "L1", "Press7", "Motor/Current"}, false},
		{"Plant/L1/Press7/Temp", names{machine: "override"}, names{"", "L1", "override", "Temp"}, false},
		{"ns=2;s=Pump.Speed", names{}, names{"", "fixed", "m-Pump", "Speed_raw"}, false},
		{"Other/Mixer/Level", names{}, names{"", "", "Mixer", "Level"}, false}, // default: last two segments
		{"Level", names{}, names{}, true},                                      // no machine
	}
	for _, tt := range tests {
		got, err := m.resolve(tt.path, tt.fixed)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("resolve(%q) = %+v, %v; want %+v, error %v", tt.path, got, err, tt.want, tt.err)
		}
	}
}

// TestMappingErrorNamesTheRule: an item that a rule matches but that gets no machine (or
// signal) from it is refused with an error naming that rule and what it lacks, not with
// "no mapping rule matches it", which sends the user looking at the wrong thing.
func TestMappingErrorNamesTheRule(t *testing.T) {
	m, err := newMapper([]Rule{
		{Match: `^Plant/(?P<line>[^/]+)/(?P<signal>.+)$`},
		{Match: `^ns=3;s=(\w+)$`, Machine: "m-$1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ path, want string }{
		{"Plant/L1/Temp", `item "Plant/L1/Temp" has no machine: mapping[0].match "^Plant/(?P<line>[^/]+)/(?P<signal>.+)$" matches it but gives none (expected a "machine" group or template that is not empty)`},
		{"ns=3;s=Pump", `item "ns=3;s=Pump" has no signal: mapping[1].match "^ns=3;s=(\\w+)$" matches it but gives none (expected a "signal" group or template that is not empty)`},
		{"Level", `item "Level" has no machine: no mapping rule matches it and it fixes none`},
	}
	for _, tt := range tests {
		if _, err := m.resolve(tt.path, names{}); err == nil || err.Error() != tt.want {
			t.Errorf("resolve(%q) error\n %v\nwant\n %s", tt.path, err, tt.want)
		}
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"Line1/*/Temp*", "Line1/Press7/Temperature", true},
		{"Line1/*/Temp*", "Line1/Press7/Sub/Temperature", false},
		{"**/Temperature", "Temperature", true},
		{"**/Temperature", "A/B/Temperature", true},
		{"**/Diagnostics/**", "Line1/Diagnostics/Errors", true},
		{"Line?", "Line1", true},
		{"Line?", "Line12", false},
		{"a.b", "axb", false},
	}
	for _, tt := range tests {
		g, err := compileGlob(tt.pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.match(tt.path); got != tt.want {
			t.Errorf("%q match %q = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}
