package buffer_test

import (
	"errors"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/config"
)

func TestConfigDefaults(t *testing.T) {
	var c buffer.Config
	c.SetDefaults()
	want := buffer.Config{MaxBytes: 1 << 30, SegmentBytes: 64 << 20, Fsync: "batch", FsyncInterval: 100 * time.Millisecond, Overflow: "block"}
	if c != want {
		t.Fatalf("defaults = %+v, want %+v", c, want)
	}
	if err := c.Validate(); err == nil || err.Error() != "dir: is empty; expected the directory of the write-ahead log" {
		t.Fatalf("Validate of the defaults without a dir = %v, want only the dir problem", err)
	}
}

func TestConfigDecodeAndValidate(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // one substring per expected problem, in order; none means valid
	}{
		{"valid", "dir: /var/lib/millwright/wal\nmax_bytes: 2GiB\nsegment_bytes: 32MiB\nfsync: interval\nfsync_interval: 250ms\noverflow: drop_oldest\n", nil},
		{"defaults with dir", "dir: /tmp/wal\n", nil},
		{"no dir", "max_bytes: 1GiB\n", []string{"dir: is empty"}},
		{"segment over half", "dir: d\nmax_bytes: 100MiB\nsegment_bytes: 64MiB\n",
			[]string{"segment_bytes: 64MiB is more than half of max_bytes (100MiB); expected at most 50MiB"}},
		{"segment too small", "dir: d\nsegment_bytes: 1KiB\n", []string{"segment_bytes: 1KiB is too small; expected at least 4KiB"}},
		{"bad policies", "dir: d\nfsync: always\noverflow: wait\n",
			[]string{`fsync: "always" is not a policy; expected "batch", "interval" or "off"`, `overflow: "wait" is not a policy; expected "block" or "drop_oldest"`}},
		{"zero interval", "dir: d\nfsync: interval\nfsync_interval: 0s\n", []string{"fsync_interval: 0s must be positive"}},
		{"negative interval", "dir: d\nfsync_interval: -1s\n", []string{"fsync_interval: -1s must be positive"}},
		{"everything wrong", "dir: ''\nsegment_bytes: 1MiB\nmax_bytes: 1MiB\nfsync: x\noverflow: y\n",
			[]string{"dir:", "segment_bytes:", "fsync:", "overflow:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c buffer.Config
			c.SetDefaults()
			if err := config.Decode([]byte(tc.yaml), &c); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			errs := config.Flatten(c.Validate())
			if len(errs) != len(tc.want) {
				t.Fatalf("Validate = %v, want %d problems %q", errs, len(tc.want), tc.want)
			}
			for i, err := range errs {
				var fe *config.FieldError
				if !errors.As(err, &fe) || fe.Path == "" {
					t.Errorf("problem %v is not a FieldError with a path", err)
				}
				if !containsAll(err.Error(), tc.want[i]) {
					t.Errorf("problem %d = %q, want it to contain %q", i, err, tc.want[i])
				}
			}
		})
	}
}

func TestConfigRejectsUnknownKeys(t *testing.T) {
	var c buffer.Config
	c.SetDefaults()
	if err := config.Decode([]byte("dir: d\nmax_byte: 1GiB\n"), &c); err == nil {
		t.Fatal("Decode accepted an unknown key")
	}
}
