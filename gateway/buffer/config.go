package buffer

import (
	"time"

	"github.com/millwright-io/millwright/gateway/config"
)

// The values of Config.Fsync.
const (
	// FsyncBatch makes every Append durable before it returns; concurrent appends share
	// one write and one fsync (group commit).
	FsyncBatch = "batch"
	// FsyncInterval lets Append return once its batch is written to the operating system and
	// fsyncs every Config.FsyncInterval: a power loss can lose that much acknowledged data.
	FsyncInterval = "interval"
	// FsyncOff never fsyncs; the operating system decides when data reaches the disk.
	FsyncOff = "off"
)

// The values of Config.Overflow.
const (
	// OverflowBlock makes Append wait until the sinks have consumed enough to free space.
	OverflowBlock = "block"
	// OverflowDropOldest deletes the oldest segment to make space, counting what the sinks
	// lose (millwright_buffer_dropped_records_total and _points_total).
	OverflowDropOldest = "drop_oldest"
)

// Defaults and limits of Config.
const (
	DefaultMaxBytes      = config.ByteSize(1 << 30)
	DefaultSegmentBytes  = config.ByteSize(64 << 20)
	DefaultFsyncInterval = 100 * time.Millisecond
	// MinSegmentBytes is the smallest segment_bytes accepted.
	MinSegmentBytes = config.ByteSize(4 << 10)
)

// Config configures the write-ahead log. Decode it with config.Decode after SetDefaults,
// then call Validate.
type Config struct {
	// Dir is the directory of the segment and cursor files. The gateway sets
	// <state_dir>/wal when it is empty; Validate requires it.
	Dir string `yaml:"dir"`
	// MaxBytes bounds the total size of the segment files (within a segment header of
	// slack). Default 1GiB.
	MaxBytes config.ByteSize `yaml:"max_bytes"`
	// SegmentBytes is the size at which the log starts a new segment file. Space is
	// reclaimed a whole segment at a time, so it must be at most half of MaxBytes, and a
	// batch must fit in one segment. Default 64MiB.
	SegmentBytes config.ByteSize `yaml:"segment_bytes"`
	// Fsync is the durability policy: "batch" (default), "interval" or "off"; see
	// FsyncBatch, FsyncInterval and FsyncOff.
	Fsync string `yaml:"fsync"`
	// FsyncInterval is the period of the "interval" policy. Default 100ms.
	FsyncInterval time.Duration `yaml:"fsync_interval"`
	// Overflow says what Append does when the log is full: "block" (default) or
	// "drop_oldest"; see OverflowBlock and OverflowDropOldest.
	Overflow string `yaml:"overflow"`
}

// SetDefaults fills in every field left at its zero value, except Dir.
func (c *Config) SetDefaults() {
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.SegmentBytes == 0 {
		c.SegmentBytes = DefaultSegmentBytes
	}
	if c.Fsync == "" {
		c.Fsync = FsyncBatch
	}
	if c.FsyncInterval == 0 {
		c.FsyncInterval = DefaultFsyncInterval
	}
	if c.Overflow == "" {
		c.Overflow = OverflowBlock
	}
}

// Validate reports every problem of the configuration at once, as config.FieldErrors with
// paths relative to the buffer section ("max_bytes"). It does no I/O.
func (c Config) Validate() error {
	var p config.Problems
	if c.Dir == "" {
		p.Addf("dir", "is empty; expected the directory of the write-ahead log")
	}
	if c.MaxBytes <= 0 {
		p.Addf("max_bytes", "%s must be positive", c.MaxBytes)
	}
	switch {
	case c.SegmentBytes < MinSegmentBytes:
		p.Addf("segment_bytes", "%s is too small; expected at least %s", c.SegmentBytes, MinSegmentBytes)
	case c.MaxBytes > 0 && c.SegmentBytes > c.MaxBytes/2:
		p.Addf("segment_bytes", "%s is more than half of max_bytes (%s); expected at most %s, so that a full segment can be reclaimed while the next one fills",
			c.SegmentBytes, c.MaxBytes, c.MaxBytes/2)
	}
	switch c.Fsync {
	case FsyncBatch, FsyncInterval, FsyncOff:
	default:
		p.Addf("fsync", "%q is not a policy; expected %q, %q or %q", c.Fsync, FsyncBatch, FsyncInterval, FsyncOff)
	}
	if c.FsyncInterval < 0 || (c.Fsync == FsyncInterval && c.FsyncInterval == 0) {
		p.Addf("fsync_interval", "%s must be positive", c.FsyncInterval)
	}
	switch c.Overflow {
	case OverflowBlock, OverflowDropOldest:
	default:
		p.Addf("overflow", "%q is not a policy; expected %q or %q", c.Overflow, OverflowBlock, OverflowDropOldest)
	}
	return p.Err()
}
