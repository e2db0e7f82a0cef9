package score

import (
	"time"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/models/threshold"
)

// Defaults of the configuration.
const (
	DefaultQueue       = 256
	DefaultMeasurement = "anomaly"
	DefaultTopicPrefix = "millwright"
	DefaultTopSignals  = 3
	DefaultMaxPending  = 20000
	// DefaultFutureTolerance is how far ahead of the gateway's clock a sample may be
	// stamped. It is also the longest one mis-stamped sample can hold back a machine's
	// scoring (see Config.FutureTolerance).
	DefaultFutureTolerance = time.Minute
)

// Config configures live scoring and its outputs.
type Config struct {
	// Queue is how many ingest batches wait for the scorer; when it is full the batch is
	// not scored (its windows are skipped and counted), so ingest never waits.
	Queue int `yaml:"queue"`
	// Alarm debounces the alarm (k of n windows above the threshold raise it; hysteresis
	// clears it).
	Alarm threshold.AlarmConfig `yaml:"alarm"`
	// TopSignals is how many contributing signals an alarm names.
	TopSignals int `yaml:"top_signals"`
	// Measurement is the InfluxDB measurement of the scores ("" writes none).
	Measurement string `yaml:"measurement"`
	// MaxPending bounds the score points waiting to be written; beyond it the newest are
	// dropped and counted.
	MaxPending int `yaml:"max_pending"`
	// TopicPrefix starts the MQTT alarm topic: <prefix>/<factory>/<machine>/alarm.
	TopicPrefix string `yaml:"topic_prefix"`
	// FutureTolerance is how far ahead of the gateway's clock a sample's time may be.
	// Later samples are refused and counted (millwright_scorer_dropped_samples_total,
	// reason future): one sample would otherwise move the machine's grid to its time, and
	// every correctly stamped sample before that time would be late, unscored.
	FutureTolerance time.Duration `yaml:"future_tolerance"`
}

// SetDefaults fills the defaults in.
func (c *Config) SetDefaults() {
	c.Queue = DefaultQueue
	c.Alarm.SetDefaults()
	c.TopSignals = DefaultTopSignals
	c.Measurement = DefaultMeasurement
	c.MaxPending = DefaultMaxPending
	c.TopicPrefix = DefaultTopicPrefix
	c.FutureTolerance = DefaultFutureTolerance
}

// Validate reports every problem at once, with paths relative to the block.
func (c Config) Validate() error {
	var p config.Problems
	if c.Queue < 1 || c.Queue > 1<<16 {
		p.Addf("queue", "%d is out of range; expected 1 to 65536 batches", c.Queue)
	}
	p.Nest("alarm", c.Alarm.Validate())
	if c.TopSignals < 0 || c.TopSignals > 64 {
		p.Addf("top_signals", "%d is out of range; expected 0 to 64", c.TopSignals)
	}
	if c.MaxPending < 1 {
		p.Addf("max_pending", "%d is out of range; expected at least 1 point", c.MaxPending)
	}
	if c.TopicPrefix == "" {
		p.Addf("topic_prefix", "must be set, such as millwright")
	}
	if c.FutureTolerance < time.Second || c.FutureTolerance > 24*time.Hour {
		p.Addf("future_tolerance", "%v is out of range; expected 1s to 24h", c.FutureTolerance)
	}
	return p.Err()
}
