package threshold

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/millwright-io/millwright/gateway/config"
)

// AlarmConfig configures the debouncing and hysteresis of an Alarm. The zero value means the
// defaults.
type AlarmConfig struct {
	// K and N: the alarm is raised when at least K of the last N scores are above the
	// threshold (default 3 of 5).
	K int `yaml:"k" json:"k"`
	N int `yaml:"n" json:"n"`
	// ClearRatio sets the lower level that clears an alarm, in (0, 1] (default 0.8): for a
	// threshold T ≥ 0 the level is ClearRatio·T, for T < 0 it is T − (1−ClearRatio)·|T|,
	// so it is always at or below T (see Alarm).
	ClearRatio float64 `yaml:"clear_ratio" json:"clear_ratio"`
	// ClearCount is how many consecutive scores below the lower level clear an alarm
	// (default N).
	ClearCount int `yaml:"clear_count" json:"clear_count"`
}

// SetDefaults fills zero values with the defaults.
func (c *AlarmConfig) SetDefaults() {
	if c.K == 0 {
		c.K = 3
	}
	if c.N == 0 {
		c.N = 5
	}
	if c.ClearRatio == 0 {
		c.ClearRatio = 0.8
	}
	if c.ClearCount == 0 {
		c.ClearCount = c.N
	}
}

// Validate reports every problem of c.
func (c AlarmConfig) Validate() error {
	var p config.Problems
	if c.N < 1 || c.N > 64 {
		p.Addf("n", "n %d is out of range; expected 1 to 64", c.N)
	}
	if c.K < 1 || c.K > c.N {
		p.Addf("k", "k %d is out of range; expected 1 to n (%d)", c.K, c.N)
	}
	if !(c.ClearRatio > 0 && c.ClearRatio <= 1) {
		p.Addf("clear_ratio", "clear_ratio %v is out of range; expected more than 0 and at most 1", c.ClearRatio)
	}
	if c.ClearCount < 1 || c.ClearCount > 1<<20 {
		p.Addf("clear_count", "clear_count %d is out of range; expected 1 to %d", c.ClearCount, 1<<20)
	}
	return p.Err()
}

// Transition is what one score did to the alarm.
type Transition int

// Transitions.
const (
	Unchanged Transition = iota
	Raised
	Cleared
)

// String names the transition.
func (t Transition) String() string {
	switch t {
	case Raised:
		return "raised"
	case Cleared:
		return "cleared"
	}
	return "unchanged"
}

// Alarm is the debounced alarm state of one machine: raised when K of the last N scores
// exceed the threshold T, cleared when ClearCount consecutive scores stay below the clear
// level. The clear level is T − (1−ClearRatio)·|T|: ClearRatio·T when T ≥ 0, and further
// below T when T < 0 (the ensemble scores in robust units, so its threshold may be
// negative; ClearRatio·T would then lie above T, and a score between the two would at once
// raise and clear the alarm). It is deterministic (its state depends only on the scores)
// and not safe for concurrent use.
type Alarm struct {
	cfg    AlarmConfig
	t      float64
	clear  float64 // the clear level, at or below t
	window uint64  // bit i: the score i updates ago was above T
	active bool
	quiet  int // consecutive scores below the lower level
}

// NewAlarm returns a cleared alarm for threshold t.
func NewAlarm(cfg AlarmConfig, t float64) (*Alarm, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("alarm: %w", err)
	}
	return &Alarm{cfg: cfg, t: t, clear: clearLevel(t, cfg.ClearRatio)}, nil
}

// clearLevel returns the level below which scores clear an alarm of threshold t:
// t − (1−ratio)·|t|, computed as ratio·t when t ≥ 0 so positive thresholds clear exactly
// where they always did. For ratio in (0, 1] it is never above t.
func clearLevel(t, ratio float64) float64 {
	if t >= 0 {
		return ratio * t
	}
	return t - (1-ratio)*-t
}

// Active reports whether the alarm is raised.
func (a *Alarm) Active() bool { return a.active }

// Threshold returns T.
func (a *Alarm) Threshold() float64 { return a.t }

// Update feeds the next score and returns the transition it caused.
func (a *Alarm) Update(score float64) Transition {
	above := score > a.t
	a.window <<= 1
	if above {
		a.window |= 1
	}
	a.window &= (1 << uint(a.cfg.N)) - 1
	if score < a.clear {
		a.quiet++
	} else {
		a.quiet = 0
	}
	switch {
	case !a.active && bits.OnesCount64(a.window) >= a.cfg.K:
		a.active, a.quiet = true, 0
		return Raised
	case a.active && a.quiet >= a.cfg.ClearCount:
		a.active, a.window = false, 0
		return Cleared
	}
	return Unchanged
}

// Restore raises the alarm without a transition, leaving it as K scores above T leave a new
// alarm: the last K windows above T, active, no quiet scores. A caller carries an alarm
// raised before a restart across it this way. It returns whether the alarm is raised: not
// when no score can exceed T (T is +Inf or NaN), and then the alarm is left with no window
// above T and no quiet scores, as such scores leave it. An alarm already raised is left as
// it is.
func (a *Alarm) Restore() bool {
	switch {
	case a.active:
	case !(math.Inf(1) > a.t):
		a.window, a.quiet = 0, 0
	default:
		a.window, a.active, a.quiet = (1<<uint(a.cfg.K))-1, true, 0
	}
	return a.active
}
