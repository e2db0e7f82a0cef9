package opcua

import (
	_ "embed"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/millwright-io/millwright/gateway/config"
)

// SampleConfig is a documented example of the source's configuration, as it appears under a
// source's "opcua" key. A test loads it, so it stays valid.
//
//go:embed sample.yaml
var SampleConfig string

// Defaults. A zero value in a Config means the default.
const (
	DefaultSecurityPolicy     = "None"
	DefaultConnectTimeout     = 10 * time.Second
	DefaultRequestTimeout     = 10 * time.Second
	DefaultSessionTimeout     = time.Minute
	DefaultKeepAlive          = 5 * time.Second
	DefaultPublishingInterval = time.Second
	DefaultStallTimeout       = 30 * time.Second
	// DefaultKeepAliveEvery and DefaultLifetime set the subscription's default counts:
	// the server sends a keep-alive after about 5s without changes, and closes the
	// subscription after about a minute without publish requests (a gateway that crashed).
	DefaultKeepAliveEvery    = 5 * time.Second
	DefaultLifetime          = time.Minute
	DefaultQueueSize         = 10
	DefaultPollInterval      = time.Second
	DefaultMaxNodesPerRead   = 1000
	DefaultMaxBatchPoints    = 10000
	DefaultMaxInflightPoints = 50000
	DefaultNotificationQueue = 16
	DefaultMaxArrayElements  = 256
	DefaultBrowseMaxDepth    = 10
	DefaultBrowseMaxItems    = 10000
	DefaultMaxNotifications  = 10000
	DefaultBrowseRoot        = "i=85" // the Objects folder
)

// Modes, security modes, authentications, triggers, deadbands and array policies accepted
// in a Config.
const (
	ModeSubscription = "subscription"
	ModePolling      = "polling"

	AuthAnonymous   = "anonymous"
	AuthUsername    = "username"
	AuthCertificate = "certificate"

	TriggerStatus               = "status"
	TriggerStatusValue          = "status_value"
	TriggerStatusValueTimestamp = "status_value_timestamp"

	DeadbandNone     = "none"
	DeadbandAbsolute = "absolute"
	DeadbandPercent  = "percent"

	ArraysFlatten = "flatten"
	ArraysSkip    = "skip"
)

// securityPolicies maps the policy names a Config accepts to their URIs.
var securityPolicies = map[string]string{
	"None":                  ua.SecurityPolicyURINone,
	"Basic256Sha256":        ua.SecurityPolicyURIBasic256Sha256,
	"Aes128_Sha256_RsaOaep": ua.SecurityPolicyURIAes128Sha256RsaOaep,
	"Aes256_Sha256_RsaPss":  ua.SecurityPolicyURIAes256Sha256RsaPss,
}

// securityModes maps the mode names a Config accepts to their values.
var securityModes = map[string]ua.MessageSecurityMode{
	"None":           ua.MessageSecurityModeNone,
	"Sign":           ua.MessageSecurityModeSign,
	"SignAndEncrypt": ua.MessageSecurityModeSignAndEncrypt,
}

// Limits that Validate enforces.
const (
	maxBatchPointsLimit  = 1 << 20
	maxInflightLimit     = 1 << 24
	maxNotificationQueue = 1024
	maxNodesPerReadLimit = 100000
	maxArrayLimit        = 1 << 16
	maxBrowseDepth       = 64
	maxBrowseItems       = 1 << 20
	maxFixedValueBytes   = 256
	minInterval          = 10 * time.Millisecond
)

// Config configures an OPC-UA source.
type Config struct {
	// Endpoint is the server's endpoint URL, opc.tcp://host:4840[/path]. The source asks it
	// for its endpoints (GetEndpoints) and picks the one with the configured policy and mode.
	Endpoint string `yaml:"endpoint"`
	// SecurityPolicy is None (the default), Basic256Sha256, Aes128_Sha256_RsaOaep or
	// Aes256_Sha256_RsaPss.
	SecurityPolicy string `yaml:"security_policy"`
	// SecurityMode is None, Sign or SignAndEncrypt. Default: None with policy None,
	// SignAndEncrypt otherwise.
	SecurityMode string `yaml:"security_mode"`
	// Auth is how the session authenticates its user.
	Auth Auth `yaml:"auth"`
	// PKI holds the client's application certificate and the trust list of server
	// certificates.
	PKI PKI `yaml:"pki"`
	// StateDir is where PKI.Dir defaults to (<state_dir>/opcua/<source name>). The gateway
	// fills it from gateway.state_dir; set it only for a source run on its own.
	StateDir string `yaml:"state_dir"`
	// ApplicationURI names the client in its certificate and session (default
	// urn:millwright:<hostname>:<source name>). It must match the certificate's URI SAN,
	// so a certificate generated with another URI is regenerated.
	ApplicationURI string `yaml:"application_uri"`
	// ConnectTimeout bounds dialing, opening the channel and activating the session (default 10s).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// RequestTimeout bounds one service request (default 10s).
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// SessionTimeout is the session lifetime the server keeps without requests (default 1m).
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// KeepAlive is how often the source reads the server's state to check the session
	// (default 5s). One failed check ends the connection; the pipeline reconnects.
	KeepAlive time.Duration `yaml:"keep_alive"`
	// Mode is "subscription" (the default: monitored items, the server reports changes) or
	// "polling" (a cyclic Read of every item).
	Mode string `yaml:"mode"`
	// Subscription configures the subscription and the default monitoring of its items.
	Subscription Subscription `yaml:"subscription"`
	// Polling configures the polling mode.
	Polling Polling `yaml:"polling"`
	// Nodes are items addressed by node id or by browse path.
	Nodes []Node `yaml:"nodes"`
	// Browse are discovery roots: every variable below each is an item, filtered.
	Browse []Browse `yaml:"browse"`
	// RebrowseInterval re-runs discovery on this schedule, adding and removing items (default 0:
	// only on every connect).
	RebrowseInterval time.Duration `yaml:"rebrowse_interval"`
	// Mapping rules name the points of items: the first rule whose pattern matches an item's
	// path decides. See Rule.
	Mapping []Rule `yaml:"mapping"`
	// Arrays says what to do with array values: "flatten" (the default: signal[0],
	// signal[1], ...) or "skip" (counted). Items may override it.
	Arrays string `yaml:"arrays"`
	// MaxArrayElements bounds the elements flattened from one array value (default 256); the
	// rest are dropped and counted.
	MaxArrayElements int `yaml:"max_array_elements"`
	// MaxBatchPoints bounds the points one Read returns (default 10000).
	MaxBatchPoints int `yaml:"max_batch_points"`
	// MaxInflightPoints bounds the points read and not yet settled by the pipeline (default
	// 50000). At the bound the source stops draining notifications (and polling): the
	// server then holds or drops samples in its own queues (counted as overflows).
	MaxInflightPoints int `yaml:"max_inflight_points"`
	// NotificationQueue bounds the publish responses held between the OPC-UA client and Read
	// (default 16). When it is full the client stops sending publish requests.
	NotificationQueue int `yaml:"notification_queue"`
}

// Auth is the user authentication of the session.
type Auth struct {
	// Type is "anonymous" (the default), "username" or "certificate".
	Type     string        `yaml:"type"`
	Username string        `yaml:"username"`
	Password config.Secret `yaml:"password"`
	// CertFile and KeyFile are the X.509 user certificate (PEM or DER) and its RSA key (PEM,
	// PKCS#1 or PKCS#8) for type "certificate".
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// PKI configures the certificates.
type PKI struct {
	// Dir holds own/cert.pem and own/key.pem (the client's application certificate and its
	// PKCS#1 key, generated on first start), trusted/ (server certificates accepted) and
	// rejected/ (server certificates refused, written there with the reason logged).
	// Default <state_dir>/opcua/<source name>.
	Dir string `yaml:"dir"`
	// CertFile and KeyFile replace the generated application certificate with your own.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// TrustOnFirstUse accepts the server's certificate when trusted/ is empty and pins it
	// there, with a warning in the log. Later a different certificate is rejected.
	TrustOnFirstUse bool `yaml:"trust_on_first_use"`
}

// Monitoring are the settings of a monitored item. In an item's "monitoring" block, zero
// values inherit the subscription's.
type Monitoring struct {
	// SamplingInterval is how often the server samples the value (default: the publishing
	// interval).
	SamplingInterval time.Duration `yaml:"sampling_interval"`
	// QueueSize is how many samples the server queues per item between publishes (default 10).
	QueueSize uint32 `yaml:"queue_size"`
	// DiscardOldest drops the oldest sample when the server's queue is full (default true).
	DiscardOldest *bool `yaml:"discard_oldest"`
	// Trigger is "status", "status_value" (the default) or "status_value_timestamp".
	Trigger string `yaml:"trigger"`
	// Deadband is "none" (the default), "absolute" or "percent" (of the EURange) with
	// DeadbandValue.
	Deadband      string  `yaml:"deadband"`
	DeadbandValue float64 `yaml:"deadband_value"`
}

// Subscription configures the subscription. Its Monitoring fields are the items' defaults.
type Subscription struct {
	// PublishingInterval is how often the server sends changes (default 1s).
	PublishingInterval time.Duration `yaml:"publishing_interval"`
	// MaxNotificationsPerPublish bounds the values in one publish response (default 10000).
	MaxNotificationsPerPublish uint32 `yaml:"max_notifications_per_publish"`
	// StallTimeout ends a connection whose subscription delivered nothing for this long
	// (default 30s, at least 3 publishing intervals): the source monitors the server's
	// clock, sampled every third of it, as a heartbeat (see watchdog.go).
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// MaxKeepAliveCount is how many publishing intervals without changes the server waits
	// before it sends a keep-alive (default: about 5s' worth, at least 1).
	MaxKeepAliveCount uint32 `yaml:"max_keep_alive_count"`
	// LifetimeCount is how many publishing intervals without a publish request from the
	// client the server keeps the subscription (default: about 1m's worth, at least 3
	// keep-alive counts). A session that ends without closing (the gateway crashed or
	// lost its network) leaves its subscription on the server for that long, taking one
	// of the few a PLC may have; the client library's default would be 10,000 intervals.
	LifetimeCount uint32 `yaml:"lifetime_count"`
	Monitoring
}

// Polling configures the polling mode.
type Polling struct {
	// Interval between the starts of two read cycles (default 1s). A cycle that cannot
	// start on time (the pipeline is slow) is skipped and counted.
	Interval time.Duration `yaml:"interval"`
	// MaxNodesPerRead bounds the nodes of one Read request (default 1000).
	MaxNodesPerRead int `yaml:"max_nodes_per_read"`
}

// Node is one item addressed by node id or browse path.
type Node struct {
	// NodeID such as "ns=2;s=Press7.Temperature" or "ns=3;i=1001".
	NodeID string `yaml:"node_id"`
	// BrowsePath from the Objects folder, browse names separated by "/", each optionally
	// prefixed by its namespace index: "2:Plant/2:Line1/2:Press7/2:Temperature" or
	// "Plant/Line1/Press7/Temperature" (any namespace). Resolved on every connect.
	BrowsePath string `yaml:"browse_path"`
	// Factory, Line, Machine and Signal fix the point's names, overriding the mapping rules.
	Factory string `yaml:"factory"`
	Line    string `yaml:"line"`
	Machine string `yaml:"machine"`
	Signal  string `yaml:"signal"`
	// Arrays overrides the source's array policy for this item.
	Arrays string `yaml:"arrays"`
	// Monitoring overrides the subscription's settings for this item.
	Monitoring Monitoring `yaml:"monitoring"`
}

// Browse is one discovery root.
type Browse struct {
	// Root is the node id to browse below (default i=85, the Objects folder).
	Root string `yaml:"root"`
	// Include and Exclude are glob patterns on the browse path below the root ("Line1/*/Temp*",
	// "**/Diagnostics/**"): "*" matches within one segment, "**" any number of segments. A
	// variable is an item when it matches some Include (or Include is empty) and no Exclude.
	Include []string `yaml:"include"`
	Exclude []string `yaml:"exclude"`
	// MaxDepth bounds the levels browsed below the root (default 10).
	MaxDepth int `yaml:"max_depth"`
	// MaxItems bounds the items this root yields (default 10000); more are logged and counted.
	MaxItems int `yaml:"max_items"`
	// Arrays overrides the source's array policy for these items.
	Arrays string `yaml:"arrays"`
	// Monitoring overrides the subscription's settings for these items.
	Monitoring Monitoring `yaml:"monitoring"`
}

// Rule maps an item's path to a point's names. The path is the browse path of a browsed or
// browse_path item ("Plant/Line1/Press7/Temperature") and the node id of a node_id item.
type Rule struct {
	// Match is a regular expression on the whole path; its named groups factory, line,
	// machine and signal give those names.
	Match string `yaml:"match"`
	// Factory, Line, Machine and Signal are templates expanded with the match ("$machine",
	// "${line}_x", "$1"); a non-empty template overrides the group of the same name.
	Factory string `yaml:"factory"`
	Line    string `yaml:"line"`
	Machine string `yaml:"machine"`
	Signal  string `yaml:"signal"`
}

// SetDefaults fills every zero field with its default. It may be called more than once.
func (c *Config) SetDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.SecurityPolicy, DefaultSecurityPolicy)
	if c.SecurityMode == "" {
		if c.SecurityPolicy == "None" {
			c.SecurityMode = "None"
		} else {
			c.SecurityMode = "SignAndEncrypt"
		}
	}
	def(&c.Auth.Type, AuthAnonymous)
	def(&c.Mode, ModeSubscription)
	def(&c.Arrays, ArraysFlatten)
	dur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	dur(&c.ConnectTimeout, DefaultConnectTimeout)
	dur(&c.RequestTimeout, DefaultRequestTimeout)
	dur(&c.SessionTimeout, DefaultSessionTimeout)
	dur(&c.KeepAlive, DefaultKeepAlive)
	dur(&c.Subscription.PublishingInterval, DefaultPublishingInterval)
	dur(&c.Subscription.StallTimeout, max(DefaultStallTimeout, 3*c.Subscription.PublishingInterval))
	dur(&c.Polling.Interval, DefaultPollInterval)
	num := func(n *int, v int) {
		if *n == 0 {
			*n = v
		}
	}
	num(&c.Polling.MaxNodesPerRead, DefaultMaxNodesPerRead)
	num(&c.MaxArrayElements, DefaultMaxArrayElements)
	num(&c.MaxBatchPoints, DefaultMaxBatchPoints)
	num(&c.MaxInflightPoints, DefaultMaxInflightPoints)
	num(&c.NotificationQueue, DefaultNotificationQueue)
	if c.Subscription.MaxNotificationsPerPublish == 0 {
		c.Subscription.MaxNotificationsPerPublish = DefaultMaxNotifications
	}
	if sub := &c.Subscription; sub.PublishingInterval > 0 {
		intervals := func(d time.Duration) uint32 {
			return uint32(min((d+sub.PublishingInterval-1)/sub.PublishingInterval, math.MaxUint32))
		}
		if sub.MaxKeepAliveCount == 0 {
			sub.MaxKeepAliveCount = max(1, intervals(DefaultKeepAliveEvery))
		}
		if sub.LifetimeCount == 0 {
			sub.LifetimeCount = max(uint32(min(3*uint64(sub.MaxKeepAliveCount), math.MaxUint32)), intervals(DefaultLifetime))
		}
	}
	m := &c.Subscription.Monitoring
	if m.QueueSize == 0 {
		m.QueueSize = DefaultQueueSize
	}
	if m.DiscardOldest == nil {
		t := true
		m.DiscardOldest = &t
	}
	def(&m.Trigger, TriggerStatusValue)
	def(&m.Deadband, DeadbandNone)
	for i := range c.Browse {
		c.Browse[i].SetDefaults()
	}
}

// SetDefaults fills the browse root's defaults. The YAML decoder calls it on every entry.
func (b *Browse) SetDefaults() {
	if b.Root == "" {
		b.Root = DefaultBrowseRoot
	}
	if b.MaxDepth == 0 {
		b.MaxDepth = DefaultBrowseMaxDepth
	}
	if b.MaxItems == 0 {
		b.MaxItems = DefaultBrowseMaxItems
	}
}

// Validate reports every problem of the configuration at once, with paths relative to it.
// Zero values that SetDefaults fills are accepted.
func (c Config) Validate() error {
	var p config.Problems
	if c.Endpoint == "" {
		p.Addf("endpoint", "is required, such as opc.tcp://127.0.0.1:4840")
	} else if u, err := url.Parse(c.Endpoint); err != nil {
		p.Addf("endpoint", "%q is not a URL: %v", c.Endpoint, err)
	} else if u.Scheme != "opc.tcp" || u.Host == "" {
		p.Addf("endpoint", "%q: expected opc.tcp://host:port[/path]", c.Endpoint)
	}
	policy := orDefault(c.SecurityPolicy, DefaultSecurityPolicy)
	if _, ok := securityPolicies[policy]; !ok {
		p.Addf("security_policy", "%q is not a policy; expected None, Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss", c.SecurityPolicy)
	}
	if c.SecurityMode != "" {
		mode, ok := securityModes[c.SecurityMode]
		switch {
		case !ok:
			p.Addf("security_mode", "%q is not a mode; expected None, Sign or SignAndEncrypt", c.SecurityMode)
		case policy == "None" && mode != ua.MessageSecurityModeNone:
			p.Addf("security_mode", "%q needs a security_policy other than None", c.SecurityMode)
		case policy != "None" && mode == ua.MessageSecurityModeNone:
			p.Addf("security_mode", "None cannot go with security_policy %q; expected Sign or SignAndEncrypt", policy)
		}
	}
	p.Nest("auth", c.Auth.Validate())
	if c.PKI.CertFile != "" && c.PKI.KeyFile == "" || c.PKI.CertFile == "" && c.PKI.KeyFile != "" {
		p.Addf("pki.cert_file", "cert_file and key_file must be given together (got cert_file %q, key_file %q)", c.PKI.CertFile, c.PKI.KeyFile)
	}
	if c.ApplicationURI != "" {
		if u, err := url.Parse(c.ApplicationURI); err != nil || u.Scheme == "" {
			p.Addf("application_uri", "%q is not an absolute URI such as urn:millwright:host:source", c.ApplicationURI)
		}
	}
	positive := func(key string, d time.Duration, least time.Duration) {
		if d < 0 || d > 0 && d < least {
			p.Addf(key, "%s is out of range; expected at least %s", d, least)
		}
	}
	positive("connect_timeout", c.ConnectTimeout, 100*time.Millisecond)
	positive("request_timeout", c.RequestTimeout, 100*time.Millisecond)
	positive("session_timeout", c.SessionTimeout, time.Second)
	positive("keep_alive", c.KeepAlive, 100*time.Millisecond)
	positive("rebrowse_interval", c.RebrowseInterval, time.Second)
	switch c.Mode {
	case "", ModeSubscription, ModePolling:
	default:
		p.Addf("mode", "%q is not a mode; expected subscription or polling", c.Mode)
	}
	positive("subscription.publishing_interval", c.Subscription.PublishingInterval, minInterval)
	if st, pi := c.Subscription.StallTimeout, c.Subscription.PublishingInterval; st != 0 && pi > 0 && st < 3*pi {
		p.Addf("subscription.stall_timeout", "%s is out of range; expected at least 3 publishing intervals (%s)", st, 3*pi)
	}
	if k, l := c.Subscription.MaxKeepAliveCount, c.Subscription.LifetimeCount; l != 0 && uint64(l) < 3*uint64(k) {
		p.Addf("subscription.lifetime_count", "%d is out of range; expected at least 3 × max_keep_alive_count (%d)", l, 3*uint64(k))
	}
	p.Nest("subscription", c.Subscription.Monitoring.Validate())
	positive("polling.interval", c.Polling.Interval, minInterval)
	rangeInt := func(key string, v, hi int) {
		if v < 0 || v > hi {
			p.Addf(key, "%d is out of range; expected 1 to %d", v, hi)
		}
	}
	rangeInt("polling.max_nodes_per_read", c.Polling.MaxNodesPerRead, maxNodesPerReadLimit)
	rangeInt("max_array_elements", c.MaxArrayElements, maxArrayLimit)
	rangeInt("max_batch_points", c.MaxBatchPoints, maxBatchPointsLimit)
	rangeInt("max_inflight_points", c.MaxInflightPoints, maxInflightLimit)
	rangeInt("notification_queue", c.NotificationQueue, maxNotificationQueue)
	if c.MaxInflightPoints > 0 && c.MaxBatchPoints > c.MaxInflightPoints {
		p.Addf("max_inflight_points", "%d is less than max_batch_points %d", c.MaxInflightPoints, c.MaxBatchPoints)
	}
	p.Nest("arrays", validArrays(c.Arrays))
	if len(c.Nodes) == 0 && len(c.Browse) == 0 {
		p.Addf("nodes", "no items: give nodes (node_id or browse_path) or browse roots")
	}
	seen := map[string]int{}
	for i, n := range c.Nodes {
		path := config.Index("nodes", i)
		p.Nest(path, n.validate(len(c.Mapping) > 0))
		key := n.NodeID + "\x00" + n.BrowsePath
		if j, dup := seen[key]; dup {
			p.Addf(path, "names the same node as nodes[%d]", j)
		} else {
			seen[key] = i
		}
	}
	for i, b := range c.Browse {
		p.Nest(config.Index("browse", i), b.Validate())
	}
	for i, r := range c.Mapping {
		p.Nest(config.Index("mapping", i), r.Validate())
	}
	return p.Err()
}

// Validate checks the authentication settings. It reads no files.
func (a Auth) Validate() error {
	var p config.Problems
	switch orDefault(a.Type, AuthAnonymous) {
	case AuthAnonymous:
		if a.Username != "" || a.Password.IsSet() || a.CertFile != "" || a.KeyFile != "" {
			p.Addf("type", "is anonymous but credentials are given; set type: username or type: certificate")
		}
	case AuthUsername:
		if a.Username == "" {
			p.Addf("username", "is required with type username")
		}
		if a.CertFile != "" || a.KeyFile != "" {
			p.Addf("cert_file", "is for type certificate, not username")
		}
	case AuthCertificate:
		if a.CertFile == "" || a.KeyFile == "" {
			p.Addf("cert_file", "cert_file and key_file are required with type certificate (got cert_file %q, key_file %q)", a.CertFile, a.KeyFile)
		}
		if a.Username != "" || a.Password.IsSet() {
			p.Addf("username", "is for type username, not certificate")
		}
	default:
		p.Addf("type", "%q is not an authentication; expected anonymous, username or certificate", a.Type)
	}
	return p.Err()
}

// Validate checks monitoring settings, with paths relative to them. Zero values are accepted
// (they mean "inherit" or "default").
func (m Monitoring) Validate() error {
	var p config.Problems
	if m.SamplingInterval < 0 {
		p.Addf("sampling_interval", "%s is negative", m.SamplingInterval)
	}
	switch m.Trigger {
	case "", TriggerStatus, TriggerStatusValue, TriggerStatusValueTimestamp:
	default:
		p.Addf("trigger", "%q is not a trigger; expected status, status_value or status_value_timestamp", m.Trigger)
	}
	switch m.Deadband {
	case "", DeadbandNone:
		if m.DeadbandValue != 0 {
			p.Addf("deadband_value", "%g is set but deadband is none; set deadband: absolute or percent", m.DeadbandValue)
		}
	case DeadbandAbsolute:
		if m.DeadbandValue < 0 || math.IsNaN(m.DeadbandValue) || math.IsInf(m.DeadbandValue, 0) {
			p.Addf("deadband_value", "%g is out of range; expected a finite value >= 0", m.DeadbandValue)
		}
	case DeadbandPercent:
		if !(m.DeadbandValue >= 0 && m.DeadbandValue <= 100) {
			p.Addf("deadband_value", "%g is out of range; expected 0 to 100 (percent of the EURange)", m.DeadbandValue)
		}
	default:
		p.Addf("deadband", "%q is not a deadband; expected none, absolute or percent", m.Deadband)
	}
	return p.Err()
}

func (n Node) validate(haveRules bool) error {
	var p config.Problems
	switch {
	case n.NodeID == "" && n.BrowsePath == "":
		p.Addf("node_id", "give node_id or browse_path")
	case n.NodeID != "" && n.BrowsePath != "":
		p.Addf("node_id", "give node_id or browse_path, not both")
	case n.NodeID != "":
		if _, err := ua.ParseNodeID(n.NodeID); err != nil {
			p.Addf("node_id", "%q is not a node id such as ns=2;s=Press7.Temperature or ns=3;i=1001: %v", n.NodeID, err)
		}
		if !haveRules && (n.Machine == "" || n.Signal == "") {
			p.Addf("machine", "a node_id item needs machine and signal (or mapping rules)")
		}
	default:
		if _, err := parseBrowsePath(n.BrowsePath); err != nil {
			p.Addf("browse_path", "%v", err)
		}
	}
	for _, f := range [...]struct{ key, v string }{{"factory", n.Factory}, {"line", n.Line}, {"machine", n.Machine}, {"signal", n.Signal}} {
		if err := validName(f.v); err != nil {
			p.Addf(f.key, "%v", err)
		}
	}
	p.Nest("arrays", validArrays(n.Arrays))
	p.Nest("monitoring", n.Monitoring.Validate())
	return p.Err()
}

// Validate checks a browse root, with paths relative to it.
func (b Browse) Validate() error {
	var p config.Problems
	if b.Root != "" {
		if _, err := ua.ParseNodeID(b.Root); err != nil {
			p.Addf("root", "%q is not a node id such as i=85 or ns=2;s=Plant: %v", b.Root, err)
		}
	}
	for i, g := range b.Include {
		if _, err := compileGlob(g); err != nil {
			p.Addf(config.Index("include", i), "%v", err)
		}
	}
	for i, g := range b.Exclude {
		if _, err := compileGlob(g); err != nil {
			p.Addf(config.Index("exclude", i), "%v", err)
		}
	}
	if b.MaxDepth < 0 || b.MaxDepth > maxBrowseDepth {
		p.Addf("max_depth", "%d is out of range; expected 1 to %d", b.MaxDepth, maxBrowseDepth)
	}
	if b.MaxItems < 0 || b.MaxItems > maxBrowseItems {
		p.Addf("max_items", "%d is out of range; expected 1 to %d", b.MaxItems, maxBrowseItems)
	}
	p.Nest("arrays", validArrays(b.Arrays))
	p.Nest("monitoring", b.Monitoring.Validate())
	return p.Err()
}

// ruleGroups are the named groups a rule's pattern may capture.
var ruleGroups = map[string]bool{"factory": true, "line": true, "machine": true, "signal": true}

// Validate checks a mapping rule, with paths relative to it.
func (r Rule) Validate() error {
	var p config.Problems
	if r.Match == "" {
		p.Addf("match", "is required: a regular expression on the item's path")
	} else if re, err := regexp.Compile(r.Match); err != nil {
		p.Addf("match", "%q is not a regular expression: %v", r.Match, err)
	} else {
		for _, g := range re.SubexpNames()[1:] {
			if g != "" && !ruleGroups[g] {
				p.Addf("match", "group %q is not one of factory, line, machine, signal", g)
			}
		}
		has := func(g string) bool { return re.SubexpIndex(g) >= 0 }
		if r.Machine == "" && !has("machine") {
			p.Addf("machine", "no machine: capture (?P<machine>...) or set machine")
		}
		if r.Signal == "" && !has("signal") {
			p.Addf("signal", "no signal: capture (?P<signal>...) or set signal")
		}
	}
	return p.Err()
}

func validArrays(s string) error {
	switch s {
	case "", ArraysFlatten, ArraysSkip:
		return nil
	}
	return fmt.Errorf("%q is not an array policy; expected flatten or skip", s)
}

func validName(s string) error {
	switch {
	case len(s) > maxFixedValueBytes:
		return fmt.Errorf("is %d bytes long, more than %d", len(s), maxFixedValueBytes)
	case strings.ContainsRune(s, 0):
		return fmt.Errorf("%q contains a NUL character", s)
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// monitoring returns m with the zero fields taken from def.
func (m Monitoring) inherit(def Monitoring) Monitoring {
	if m.SamplingInterval == 0 {
		m.SamplingInterval = def.SamplingInterval
	}
	if m.QueueSize == 0 {
		m.QueueSize = def.QueueSize
	}
	if m.DiscardOldest == nil {
		m.DiscardOldest = def.DiscardOldest
	}
	if m.Trigger == "" {
		m.Trigger = def.Trigger
	}
	if m.Deadband == "" {
		m.Deadband, m.DeadbandValue = def.Deadband, def.DeadbandValue
	}
	return m
}
