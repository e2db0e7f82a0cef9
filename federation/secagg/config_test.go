package secagg

import (
	"strings"
	"testing"

	"github.com/millwright-io/millwright/internal/configtest"
)

func TestSampleConfigLoads(t *testing.T) {
	var c Config
	configtest.Load(t, "testdata/secagg.yaml", &c)
	for _, tc := range []struct{ clients, t int }{{3, 3}, {10, 7}, {4, 3}, {2, 2}} {
		p, err := c.Params(1, tc.clients, 100)
		if err != nil || p.Threshold != tc.t {
			t.Errorf("%d clients: threshold %d (%v), want %d", tc.clients, p.Threshold, err, tc.t)
		}
	}
	// 8 × 2^16 × clients must stay below 2^31: at most 4095 clients, more than MaxClients anyway;
	// a coarser range shows the overflow check.
	c.Range = 1 << 12
	if _, err := c.Params(1, 10, 100); err == nil || !strings.Contains(err.Error(), "overflow") {
		t.Errorf("overflowing params: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	err := Config{Threshold: 0.5, Range: -1, FracBits: 25}.Validate()
	for _, want := range []string{"threshold: 0.5", "range: -1", "frac_bits: 25"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	err = Config{Threshold: 0.67, Range: 0.5, FracBits: 16, SampleCap: 1 << 41}.Validate()
	for _, want := range []string{"sample_cap: 2199023255552 is out of range", "range: 0.5 with sample_cap"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	for _, tc := range []struct {
		samples int
		cap     uint64
		want    float32
	}{{10, 40, 0.25}, {40, 40, 1}, {4000, 40, 1}, {0, 4, 0.25}} {
		if got := Weight(tc.samples, tc.cap); got != tc.want {
			t.Errorf("Weight(%d, %d) = %v, want %v", tc.samples, tc.cap, got, tc.want)
		}
	}
}
