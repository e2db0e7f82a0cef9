package sim

import (
	"fmt"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
)

// Defaults. A zero value in a Config means the default.
const (
	DefaultInterval = time.Second
	DefaultRamp     = 10 * time.Minute

	maxInterval   = time.Hour
	maxMachines   = 100000
	maxNameBytes  = 256
	maxFaultCount = 4
)

// Kind is a kind of machine. Each kind has its own nominal operating point and signals.
type Kind string

// The machine kinds.
const (
	// KindPump is a centrifugal water pump on a 2-pole induction motor (2,950 rpm), with a
	// discharge pressure.
	KindPump Kind = "pump"
	// KindSpindle is a machine-tool spindle (variable speed around 12,000 rpm, liquid-cooled).
	KindSpindle Kind = "spindle"
	// KindMotor is a 4-pole induction motor driving a conveyor or a fan (1,480 rpm).
	KindMotor Kind = "motor"
)

// FaultKind is a kind of fault that can be injected into a machine.
type FaultKind string

// The fault kinds.
const (
	// FaultBearingWear makes vibration grow, then temperature (friction heat) and a little
	// current.
	FaultBearingWear FaultKind = "bearing_wear"
	// FaultImbalance raises vibration by an amount that grows with the square of the speed.
	FaultImbalance FaultKind = "imbalance"
	// FaultCavitation (pumps only) makes the pressure drop and fluctuate, and the vibration
	// spike.
	FaultCavitation FaultKind = "cavitation"
	// FaultOverheating (a failing cooler or fan) makes the temperature drift up.
	FaultOverheating FaultKind = "overheating"
)

// Config configures a simulated plant.
type Config struct {
	// Seed makes the plant reproducible: the same seed, machines and sample times give the
	// same samples. Each machine's noise depends only on the seed and its id, so adding a
	// machine does not change the others.
	Seed uint64 `yaml:"seed"`
	// Interval is the time between samples when the plant is run by a Runner (default 1s,
	// at most 1h).
	Interval time.Duration `yaml:"interval"`
	// Machines of the plant, at least one.
	Machines []Machine `yaml:"machines"`
}

// Machine is one simulated machine.
type Machine struct {
	// ID names the machine; unique within the plant.
	ID string `yaml:"id"`
	// Line names the production line the machine belongs to.
	Line string `yaml:"line"`
	// Kind is pump, spindle or motor.
	Kind Kind `yaml:"kind"`
	// Faults injected into the machine, at most one of each kind.
	Faults []Fault `yaml:"faults"`
}

// Fault is a fault that starts at Onset and grows linearly to full severity (1) over Ramp:
// its growth rate is 1/Ramp per unit of time. How each signal responds to the severity is
// described with the FaultKind constants.
type Fault struct {
	Kind FaultKind `yaml:"kind"`
	// Onset is when the fault starts, after the plant's first sample (0: from the start).
	Onset time.Duration `yaml:"onset"`
	// Ramp is how long the fault takes from onset to full severity (default 10m).
	Ramp time.Duration `yaml:"ramp"`
}

// SetDefaults fills the zero values with the defaults.
func (c *Config) SetDefaults() {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	for i := range c.Machines {
		for j := range c.Machines[i].Faults {
			if c.Machines[i].Faults[j].Ramp == 0 {
				c.Machines[i].Faults[j].Ramp = DefaultRamp
			}
		}
	}
}

// Validate reports every problem of c, with paths relative to the simulator's configuration
// ("machines[2].faults[0].kind"). It expects SetDefaults to have run.
func (c Config) Validate() error {
	var p config.Problems
	if c.Interval <= 0 || c.Interval > maxInterval {
		p.Addf("interval", "interval %s is out of range; expected more than 0 and at most %s", c.Interval, maxInterval)
	}
	switch {
	case len(c.Machines) == 0:
		p.Addf("machines", "no machines; expected at least one")
	case len(c.Machines) > maxMachines:
		p.Addf("machines", "%d machines; expected at most %d", len(c.Machines), maxMachines)
	}
	seen := make(map[string]int, len(c.Machines))
	for i, m := range c.Machines {
		path := fmt.Sprintf("machines[%d]", i)
		if first, dup := seen[m.ID]; dup && m.ID != "" {
			p.Addf(path+".id", "id %q is already used by machines[%d]; expected a unique id", m.ID, first)
		} else {
			seen[m.ID] = i
		}
		p.Nest(path, m.Validate())
	}
	return p.Err()
}

// Validate reports every problem of m, with paths relative to the machine ("faults[0].kind").
func (m Machine) Validate() error {
	var p config.Problems
	checkName(&p, "id", m.ID)
	checkName(&p, "line", m.Line)
	if _, ok := kinds[m.Kind]; !ok {
		p.Addf("kind", "kind %q is not known; expected pump, spindle or motor", m.Kind)
	}
	if len(m.Faults) > maxFaultCount {
		p.Addf("faults", "%d faults; expected at most %d, one of each kind", len(m.Faults), maxFaultCount)
	}
	seen := make(map[FaultKind]int, len(m.Faults))
	for i, f := range m.Faults {
		path := fmt.Sprintf("faults[%d]", i)
		switch f.Kind {
		case FaultBearingWear, FaultImbalance, FaultOverheating:
		case FaultCavitation:
			if m.Kind != KindPump {
				p.Addf(path+".kind", "cavitation needs a pump, not a %s", m.Kind)
			}
		default:
			p.Addf(path+".kind", "kind %q is not known; expected bearing_wear, imbalance, cavitation or overheating", f.Kind)
		}
		if first, dup := seen[f.Kind]; dup {
			p.Addf(path+".kind", "fault %q is already injected by faults[%d]; expected one of each kind", f.Kind, first)
		} else {
			seen[f.Kind] = i
		}
		if f.Onset < 0 {
			p.Addf(path+".onset", "onset %s is negative; expected 0 or more", f.Onset)
		}
		if f.Ramp <= 0 {
			p.Addf(path+".ramp", "ramp %s is not positive; expected the time to full severity, such as 10m", f.Ramp)
		}
	}
	return p.Err()
}

func checkName(p *config.Problems, field, v string) {
	switch {
	case v == "":
		p.Addf(field, "%s is empty; expected a name", field)
	case len(v) > maxNameBytes:
		p.Addf(field, "%s is %d bytes; expected at most %d", field, len(v), maxNameBytes)
	}
	for _, r := range v {
		if r == '/' || r == '+' || r == '#' || r < ' ' {
			p.Addf(field, "%s %q contains %q; expected no MQTT topic separators, wildcards or control characters", field, v, r)
			break
		}
	}
}
