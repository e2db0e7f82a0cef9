package sparkplug

import (
	_ "embed"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/gateway/config"
)

// SampleConfig is a documented example of the source's configuration, as it appears under a
// source's "sparkplug" key. A test loads it, so it stays valid.
//
//go:embed sample.yaml
var SampleConfig string

// Defaults. A zero value in a Config means the default.
const (
	DefaultRebirthInterval   = 10 * time.Second
	DefaultMaxNodes          = 10_000
	DefaultMaxDevicesPerNode = 1_000
	DefaultMaxMetricsPerNode = 10_000
	DefaultSeparator         = "."
	DefaultGroupAs           = GroupAsLine
)

// What the group id of a topic becomes (Mapping.GroupAs).
const (
	GroupAsLine    = "line"
	GroupAsFactory = "factory"
	GroupAsNone    = "none"
)

// DefaultExclude are the metric names not stored by default: the node and device control
// metrics of the births (Node Control/Rebirth and the like) and the birth/death sequence.
var DefaultExclude = []string{`^(Node|Device) Control/`}

// Limits that Validate enforces.
const (
	maxLimit       = 1 << 20
	maxIDBytes     = 256
	maxRegexpBytes = 4096
)

// Config configures a Sparkplug B host application source.
type Config struct {
	// MQTT holds the broker connection settings of the MQTT source (servers, client_id,
	// credentials, tls, keep_alive, max_inflight, max_batch_points, ...). Its topics must
	// be empty: the subscriptions come from groups. The host always connects with a clean
	// session, as Sparkplug 3.0 requires, and with one connection, so that every edge node's
	// sequence numbers arrive in order.
	MQTT mqtt.Config `yaml:"mqtt"`
	// HostID is the Sparkplug host id: the STATE messages go to spBv1.0/STATE/<host_id>.
	// Default "millwright-<source name>".
	HostID string `yaml:"host_id"`
	// Groups are the Sparkplug group ids subscribed to (spBv1.0/<group>/#); empty means
	// every group (spBv1.0/#).
	Groups []string `yaml:"groups"`
	// RebirthInterval is the least time between two rebirth requests (NCMD Node
	// Control/Rebirth) to one edge node (default 10s); requests within it are counted and
	// not sent.
	RebirthInterval time.Duration `yaml:"rebirth_interval"`
	// MaxNodes bounds the edge nodes tracked (default 10000). A node that is not born (never,
	// or dead) gives its place to the birth of another, and to data of another once its
	// rebirth request is older than rebirth_interval; otherwise messages of further nodes
	// are counted and ignored.
	MaxNodes int `yaml:"max_nodes"`
	// MaxDevicesPerNode bounds the devices tracked per edge node (default 1000).
	MaxDevicesPerNode int `yaml:"max_devices_per_node"`
	// MaxMetricsPerNode bounds the metric definitions (and aliases) of an edge node and its
	// devices together (default 10000, at most mqtt.max_batch_points, since a death turns
	// them all into points of one message); further metrics of a birth are counted and
	// skipped.
	MaxMetricsPerNode int `yaml:"max_metrics_per_node"`
	// Map says how topics and metric names become factory, line, machine and signal.
	Map Mapping `yaml:"map"`
}

// Mapping maps a metric to a point's factory, line, machine and signal. Without a rule
// that sets them, the machine is the device id (or the edge node id for the node's own
// metrics), the signal is the metric name with "/" replaced by the separator, and the group
// id is the line (or the factory, or nothing, by group_as).
type Mapping struct {
	// GroupAs is what the group id becomes: "line" (the default), "factory" or "none".
	GroupAs string `yaml:"group_as"`
	// Factory is a fixed factory; empty means the gateway's (or the group's, with
	// group_as factory).
	Factory string `yaml:"factory"`
	// Separator replaces "/" in metric names to make signal names (default ".").
	Separator string `yaml:"separator"`
	// Exclude are regular expressions of metric names that are not stored (default
	// DefaultExclude); bdSeq is never stored.
	Exclude []string `yaml:"exclude"`
	// Rules are tried in order on each metric of a birth; the first that matches sets what
	// it gives, the defaults fill the rest.
	Rules []Rule `yaml:"rules"`
}

// Rule matches metrics by regular expressions (empty: anything; all given must match) and
// gives templates for the point's names. In a template, $1 (or ${1}) is a submatch of the
// metric expression, ${name} a named submatch of any of the rule's expressions, ${group},
// ${edge_node}, ${device} and ${metric} the whole texts, and $$ a '$'. A template that is
// empty, or renders empty, keeps the default.
type Rule struct {
	Group    string `yaml:"group"`
	EdgeNode string `yaml:"edge_node"`
	Device   string `yaml:"device"`
	Metric   string `yaml:"metric"`

	Factory string `yaml:"factory"`
	Line    string `yaml:"line"`
	Machine string `yaml:"machine"`
	Signal  string `yaml:"signal"`
}

// SetDefaults fills every zero field with its default.
func (c *Config) SetDefaults() {
	c.MQTT.SetDefaults()
	if c.RebirthInterval == 0 {
		c.RebirthInterval = DefaultRebirthInterval
	}
	if c.MaxNodes == 0 {
		c.MaxNodes = DefaultMaxNodes
	}
	if c.MaxDevicesPerNode == 0 {
		c.MaxDevicesPerNode = DefaultMaxDevicesPerNode
	}
	if c.MaxMetricsPerNode == 0 {
		c.MaxMetricsPerNode = DefaultMaxMetricsPerNode
	}
	c.Map.SetDefaults()
}

// SetDefaults fills every zero field with its default. The YAML decoder calls it before it
// decodes the mapping, so an explicit "exclude: []" stores every metric.
func (m *Mapping) SetDefaults() {
	if m.GroupAs == "" {
		m.GroupAs = DefaultGroupAs
	}
	if m.Separator == "" {
		m.Separator = DefaultSeparator
	}
	if m.Exclude == nil {
		m.Exclude = append([]string(nil), DefaultExclude...)
	}
}

// Validate reports every problem of the configuration at once, with paths relative to it.
// Zero values that SetDefaults fills are accepted.
func (c Config) Validate() error {
	var p config.Problems
	p.Nest("mqtt", mqtt.ValidateConnection(c.MQTT))
	if c.MQTT.Connections > 1 {
		p.Addf("mqtt.connections", "%d: a Sparkplug host needs one connection, so that each edge node's messages arrive in order; expected 1", c.MQTT.Connections)
	}
	checkID(&p, "host_id", c.HostID, true)
	seen := make(map[string]int, len(c.Groups))
	for i, g := range c.Groups {
		path := config.Index("groups", i)
		if g == "" {
			p.Addf(path, "is empty; expected a Sparkplug group id")
			continue
		}
		checkID(&p, path, g, false)
		if j, dup := seen[g]; dup {
			p.Addf(path, "%q is already groups[%d]", g, j)
		}
		seen[g] = i
	}
	if c.RebirthInterval < 0 {
		p.Addf("rebirth_interval", "%s is negative; expected a duration such as 10s (0: the default)", c.RebirthInterval)
	}
	limit := func(key string, v int) {
		if v < 0 || v > maxLimit {
			p.Addf(key, "%d is out of range; expected 1 to %d", v, maxLimit)
		}
	}
	limit("max_nodes", c.MaxNodes)
	limit("max_devices_per_node", c.MaxDevicesPerNode)
	limit("max_metrics_per_node", c.MaxMetricsPerNode)
	batch := c.MQTT.MaxBatchPoints
	if batch == 0 {
		batch = mqtt.DefaultMaxBatchPoints
	}
	metrics := c.MaxMetricsPerNode
	if metrics == 0 {
		metrics = DefaultMaxMetricsPerNode
	}
	if metrics > batch {
		p.Addf("max_metrics_per_node", "%d is more than mqtt.max_batch_points (%d): a death turns every metric of a node into points of one message; lower it or raise max_batch_points", metrics, batch)
	}
	p.Nest("map", c.Map.Validate())
	return p.Err()
}

// Validate checks the mapping, with paths relative to it.
func (m Mapping) Validate() error {
	var p config.Problems
	switch m.GroupAs {
	case "", GroupAsLine, GroupAsFactory, GroupAsNone:
	default:
		p.Addf("group_as", "%q is not line, factory or none", m.GroupAs)
	}
	if len(m.Factory) > maxIDBytes {
		p.Addf("factory", "is %d bytes long, more than %d", len(m.Factory), maxIDBytes)
	}
	if len(m.Separator) > 16 {
		p.Addf("separator", "%q is longer than 16 bytes", m.Separator)
	}
	for i, e := range m.Exclude {
		if _, err := compileRegexp(e); err != nil {
			p.Addf(config.Index("exclude", i), "%v", err)
		}
	}
	for i, r := range m.Rules {
		p.Nest(config.Index("rules", i), r.Validate())
	}
	return p.Err()
}

// Validate checks a rule's expressions and templates, with paths relative to it.
func (r Rule) Validate() error {
	var p config.Problems
	var res [numSources]*regexp.Regexp
	for src, expr := range [numSources]string{r.Metric, r.Group, r.EdgeNode, r.Device} {
		re, err := compileRegexp(expr)
		if err != nil {
			p.Addf(sourceNames[src], "%v", err)
		}
		res[src] = re
	}
	for _, f := range []struct{ key, tmpl string }{{"factory", r.Factory}, {"line", r.Line}, {"machine", r.Machine}, {"signal", r.Signal}} {
		if _, err := parseTemplate(f.tmpl, &res); err != nil {
			p.Addf(f.key, "%v", err)
		}
	}
	if r.Factory == "" && r.Line == "" && r.Machine == "" && r.Signal == "" {
		p.Addf("", "the rule sets nothing; expected at least one of factory, line, machine, signal")
	}
	return p.Err()
}

// compileRegexp compiles a rule's expression; empty matches anything (nil).
func compileRegexp(expr string) (*regexp.Regexp, error) {
	if expr == "" {
		return nil, nil
	}
	if len(expr) > maxRegexpBytes {
		return nil, fmt.Errorf("expression is %d bytes long, more than %d", len(expr), maxRegexpBytes)
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("%q is not a regular expression: %v", expr, err)
	}
	return re, nil
}

// checkID checks a Sparkplug id (group, host): no topic separators, wildcards or NUL.
func checkID(p *config.Problems, path, v string, emptyOK bool) {
	switch {
	case v == "" && emptyOK:
	case len(v) > maxIDBytes:
		p.Addf(path, "is %d bytes long, more than %d", len(v), maxIDBytes)
	case strings.ContainsAny(v, "/+#\x00"):
		p.Addf(path, "%q must not contain '/', '+', '#' or NUL", v)
	}
}
