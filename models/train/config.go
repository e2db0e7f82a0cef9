package train

import (
	"time"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/pca"
	"github.com/millwright-io/millwright/models/threshold"
)

// Defaults of the configuration.
const (
	DefaultInterval     = 24 * time.Hour
	DefaultWindow       = 7 * 24 * time.Hour
	DefaultMinRows      = 3600
	DefaultChunk        = time.Hour
	DefaultChunkTimeout = 30 * time.Second
	DefaultHoldout      = 0.2
	DefaultDetector     = "pca"
	DefaultNice         = 10
)

// Config configures training and the features the models see. The scorer uses the same
// feature settings, which travel in each artifact.
type Config struct {
	// Machines are the machines (ids, as in the machine tag) the gateway learns a model for.
	Machines []string `yaml:"machines"`
	// Measurement and Bucket locate the history in InfluxDB (defaults: the first InfluxDB
	// sink's).
	Measurement string `yaml:"measurement"`
	Bucket      string `yaml:"bucket"`
	// Interval is how often each machine is retrained; a machine without a model is trained
	// at start and retried hourly until it has one. 0 trains only on demand (millwright
	// models train).
	Interval time.Duration `yaml:"interval"`
	// Window is how much history a training reads, ending now.
	Window time.Duration `yaml:"window"`
	// MinRows is the fewest grid rows a training needs; with fewer it is skipped.
	MinRows int `yaml:"min_rows"`
	// Chunk is the time span of one Flux query; ChunkTimeout bounds each query.
	Chunk        time.Duration `yaml:"chunk"`
	ChunkTimeout time.Duration `yaml:"chunk_timeout"`
	// Holdout is the newest share of the rows kept out of fitting, to validate on.
	Holdout float64 `yaml:"holdout"`
	// Detector is pca, autoencoder or ensemble (both, picked or combined on validation
	// data).
	Detector string `yaml:"detector"`
	// Seed makes training deterministic.
	Seed uint64 `yaml:"seed"`
	// Nice is the nice value (0 to 19) of the training thread: higher yields more to ingest.
	Nice int `yaml:"nice"`
	// Threshold sets the alarm threshold from the scores of held-out normal data.
	Threshold threshold.Config `yaml:"threshold"`
	// Features are the grid, gap filling and window settings; the scorer uses the same
	// ones, which travel in each model.
	Features features.Config `yaml:"features"`
	// PCA and Autoencoder configure the detectors.
	PCA         pca.Config         `yaml:"pca"`
	Autoencoder autoencoder.Config `yaml:"autoencoder"`
}

// SetDefaults fills the defaults in.
func (c *Config) SetDefaults() {
	c.Measurement = "telemetry"
	c.Interval = DefaultInterval
	c.Window = DefaultWindow
	c.MinRows = DefaultMinRows
	c.Chunk = DefaultChunk
	c.ChunkTimeout = DefaultChunkTimeout
	c.Holdout = DefaultHoldout
	c.Detector = DefaultDetector
	c.Nice = DefaultNice
	c.Threshold.SetDefaults()
	c.Features.SetDefaults()
	c.PCA.SetDefaults()
	c.Autoencoder.SetDefaults()
}

// Validate reports every problem at once, with paths relative to the block.
func (c Config) Validate() error {
	var p config.Problems
	seen := map[string]int{}
	for i, m := range c.Machines {
		switch first, dup := seen[m]; {
		case m == "":
			p.Addf(config.Index("machines", i), "is empty; expected a machine id")
		case dup:
			p.Addf(config.Index("machines", i), "%q is already machines[%d]; expected unique ids", m, first)
		default:
			seen[m] = i
		}
	}
	if c.Measurement == "" {
		p.Addf("measurement", "must be set (the measurement the telemetry is stored in)")
	}
	if c.Interval < 0 {
		p.Addf("interval", "%s is negative; expected 0 (on demand only) or a period such as 24h", c.Interval)
	} else if c.Interval > 0 && c.Interval < time.Minute {
		p.Addf("interval", "%s is too short; expected at least 1m", c.Interval)
	}
	if c.Window < time.Minute {
		p.Addf("window", "%s is too short; expected at least 1m of history", c.Window)
	}
	if c.MinRows < 10 {
		p.Addf("min_rows", "%d is too few; expected at least 10", c.MinRows)
	}
	if c.Chunk < time.Second {
		p.Addf("chunk", "%s is too short; expected at least 1s", c.Chunk)
	}
	if c.ChunkTimeout <= 0 {
		p.Addf("chunk_timeout", "%s is not positive; expected a timeout such as 30s", c.ChunkTimeout)
	}
	if !(c.Holdout >= 0.05 && c.Holdout <= 0.5) {
		p.Addf("holdout", "%v is out of range; expected 0.05 to 0.5", c.Holdout)
	}
	switch c.Detector {
	case "pca", "autoencoder", "ensemble":
	default:
		p.Addf("detector", "%q is not a detector; expected pca, autoencoder or ensemble", c.Detector)
	}
	if c.Nice < 0 || c.Nice > 19 {
		p.Addf("nice", "%d is out of range; expected 0 to 19", c.Nice)
	}
	p.Nest("threshold", c.Threshold.Validate())
	p.Nest("features", c.Features.Validate())
	p.Nest("pca", c.PCA.Validate())
	ac := c.Autoencoder
	if ac.Kernel > 0 && ac.Signals == 0 {
		ac.Signals = 1 // filled in from the data at training time
	}
	p.Nest("autoencoder", ac.Validate())
	return p.Err()
}
