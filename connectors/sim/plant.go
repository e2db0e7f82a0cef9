// Package sim is a deterministic, seeded simulator of a plant's machines.
package sim

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"time"
)

// Signal names, as published and stored.
const (
	SignalTemperature  = "temperature"   // °C, motor or housing temperature
	SignalVibrationRMS = "vibration_rms" // mm/s, RMS vibration velocity at the bearing housing
	SignalCurrent      = "current"       // A, motor phase current
	SignalPressure     = "pressure"      // bar, discharge pressure (pumps only)
	SignalSpeed        = "speed"         // rpm, shaft speed
)

// kindParams is the nominal operating point of a kind of machine.
type kindParams struct {
	speed        float64 // rpm at no load
	slip         float64 // fraction of speed lost at full load (0: speed follows the load)
	currentIdle  float64 // A at no load
	currentFull  float64 // A at full load
	tempRise     float64 // °C above ambient at full load, in steady state
	tau          float64 // thermal time constant, seconds
	vibration    float64 // mm/s at nominal speed, healthy
	pressure     float64 // bar at nominal speed; 0: no pressure signal
	loadPeriodLo float64 // seconds, range of the machine's load cycle
	loadPeriodHi float64
}

var kinds = map[Kind]kindParams{
	KindPump: {speed: 2950, slip: 0.02, currentIdle: 4, currentFull: 11, tempRise: 35, tau: 600,
		vibration: 1.8, pressure: 4, loadPeriodLo: 300, loadPeriodHi: 900},
	KindSpindle: {speed: 12000, slip: 0, currentIdle: 3, currentFull: 18, tempRise: 14, tau: 300,
		vibration: 0.8, loadPeriodLo: 60, loadPeriodHi: 240},
	KindMotor: {speed: 1480, slip: 0.03, currentIdle: 8, currentFull: 22, tempRise: 40, tau: 900,
		vibration: 1.2, loadPeriodLo: 600, loadPeriodHi: 1800},
}

var (
	signalsWithPressure = []string{SignalTemperature, SignalVibrationRMS, SignalCurrent, SignalPressure, SignalSpeed}
	signalsNoPressure   = []string{SignalTemperature, SignalVibrationRMS, SignalCurrent, SignalSpeed}
)

// Signals returns the names of the signals a machine of kind k reports, in the order of its
// JSON encoding. Pumps report all five; spindles and motors have no pressure. The slice is
// shared: do not modify it.
func (k Kind) Signals() []string {
	if kinds[k].pressure > 0 {
		return signalsWithPressure
	}
	return signalsNoPressure
}

// Signals are the values of one sample. Pressure is 0 for kinds without pressure (see
// Kind.Signals).
type Signals struct {
	Temperature  float64 // °C
	VibrationRMS float64 // mm/s
	Current      float64 // A
	Pressure     float64 // bar
	Speed        float64 // rpm
}

// Value returns the signal named name (one of the Signal* constants), or NaN for any
// other name.
func (s Signals) Value(name string) float64 {
	switch name {
	case SignalTemperature:
		return s.Temperature
	case SignalVibrationRMS:
		return s.VibrationRMS
	case SignalCurrent:
		return s.Current
	case SignalPressure:
		return s.Pressure
	case SignalSpeed:
		return s.Speed
	}
	return math.NaN()
}

// Label is the ground truth of a sample: the fault the machine has at that time, or none.
type Label struct {
	// Fault is the active fault (one whose onset has passed) with the highest severity, or
	// "" when the machine is healthy. Of equal severities the first configured wins.
	Fault FaultKind
	// Severity of Fault, from 0 at its onset to 1 at the end of its ramp; 0 when healthy.
	Severity float64
}

// Sample is one machine's signals at one time, with their ground truth.
type Sample struct {
	Machine string
	Line    string
	Kind    Kind
	Time    time.Time
	Signals Signals
	Label   Label
}

// Plant is a set of simulated machines. It has no clock of its own: every Step is given its
// time, so the same seed and the same times give the same samples. A Plant is not safe for
// concurrent use.
type Plant struct {
	cfg      Config
	machines []machine
	start    time.Time
	last     time.Time
	started  bool
	out      []Sample
}

// machine is the state of one simulated machine.
type machine struct {
	cfg Machine
	p   kindParams
	rng *rand.Rand

	// Per-machine variations of the kind's operating point, drawn once from the seed.
	vibration    float64
	tempRise     float64
	currentFull  float64
	loadPeriod   float64
	loadPhase    float64
	ambientPhase float64

	loadDev float64 // slow random deviation of the load (Ornstein-Uhlenbeck)
	temp    float64 // thermal state, °C
}

const (
	ambientMean   = 22.0   // °C
	ambientSwing  = 5.0    // °C
	ambientPeriod = 3600.0 // s
	loadMean      = 0.65
	loadSwing     = 0.2
	loadDevSigma  = 0.06
	loadDevTau    = 120.0 // s
	loadMin       = 0.2
	loadMax       = 1.0
)

// New builds a plant from cfg, after SetDefaults and Validate. It does no I/O.
func New(cfg Config) (*Plant, error) {
	cfg.Machines = append([]Machine(nil), cfg.Machines...)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("simulated plant: %w", err)
	}
	p := &Plant{cfg: cfg, machines: make([]machine, len(cfg.Machines)), out: make([]Sample, len(cfg.Machines))}
	for i, mc := range cfg.Machines {
		h := fnv.New64a()
		h.Write([]byte(mc.ID))
		rng := rand.New(rand.NewPCG(cfg.Seed, h.Sum64()))
		kp := kinds[mc.Kind]
		vary := func(v float64) float64 { return v * (0.95 + 0.1*rng.Float64()) }
		p.machines[i] = machine{
			cfg:          mc,
			p:            kp,
			rng:          rng,
			vibration:    vary(kp.vibration),
			tempRise:     vary(kp.tempRise),
			currentFull:  vary(kp.currentFull),
			loadPeriod:   kp.loadPeriodLo + (kp.loadPeriodHi-kp.loadPeriodLo)*rng.Float64(),
			loadPhase:    2 * math.Pi * rng.Float64(),
			ambientPhase: 2 * math.Pi * rng.Float64(),
		}
	}
	return p, nil
}

// Config returns the plant's configuration, with defaults filled in.
func (p *Plant) Config() Config { return p.cfg }

// Start returns the time of the first Step (the zero time before it). Fault onsets count
// from it.
func (p *Plant) Start() time.Time { return p.start }

// Step advances every machine to t and returns one sample per machine, in the order of the
// configuration. The first Step starts the plant (faults' onsets count from its t) in
// thermal steady state. A t before the previous one does not move the machines' state
// backwards: they hold their state and only the noise is new. The returned slice is reused
// by the next Step.
func (p *Plant) Step(t time.Time) []Sample {
	first := !p.started
	if first {
		p.start, p.last, p.started = t, t, true
	}
	dt := t.Sub(p.last).Seconds()
	if dt < 0 {
		dt = 0
	} else {
		p.last = t
	}
	elapsed := t.Sub(p.start).Seconds()
	for i := range p.machines {
		p.out[i] = p.machines[i].step(t, elapsed, dt, first)
	}
	return p.out
}

// noise is the fixed number of normal draws per step: every step draws the same numbers
// whatever the faults, so a fault changes nothing before its onset.
const noise = 9

// step advances the machine by dt seconds to elapsed seconds after the plant's start.
func (m *machine) step(t time.Time, elapsed, dt float64, first bool) Sample {
	var n [noise]float64
	for i := range n {
		n[i] = m.rng.NormFloat64()
	}
	u := m.rng.Float64()

	// Severities of the faults.
	var sBearing, sImbalance, sCavitation, sOverheat float64
	var label Label
	for _, f := range m.cfg.Faults {
		since := elapsed - f.Onset.Seconds()
		if since < 0 {
			continue
		}
		s := min(1, since/f.Ramp.Seconds())
		if label.Fault == "" || s > label.Severity {
			label = Label{Fault: f.Kind, Severity: s}
		}
		switch f.Kind {
		case FaultBearingWear:
			sBearing = s
		case FaultImbalance:
			sImbalance = s
		case FaultCavitation:
			sCavitation = s
		case FaultOverheating:
			sOverheat = s
		}
	}

	// Slow cycles: ambient temperature and load, with a random slow deviation of the load.
	ambient := ambientMean + ambientSwing*math.Sin(2*math.Pi*elapsed/ambientPeriod+m.ambientPhase)
	a := math.Exp(-dt / loadDevTau)
	m.loadDev = a*m.loadDev + loadDevSigma*math.Sqrt(1-a*a)*n[0]
	if first {
		m.loadDev = loadDevSigma * n[0]
	}
	load := loadMean + loadSwing*math.Sin(2*math.Pi*elapsed/m.loadPeriod+m.loadPhase) + m.loadDev
	load = min(loadMax, max(loadMin, load))

	kp := m.p
	var speed float64
	if kp.slip > 0 {
		speed = kp.speed * (1 - kp.slip*load) // induction motor: slip grows with load
	} else {
		speed = kp.speed * (0.5 + 0.5*load) // spindle: the program's speed follows the cut
	}
	ratio := speed / kp.speed

	// Current rises with load; worn bearings add friction, cavitation unloads the impeller
	// and makes it fluctuate.
	current := kp.currentIdle + (m.currentFull-kp.currentIdle)*load
	current *= 1 + 0.08*sBearing - 0.1*sCavitation
	current += m.currentFull * (0.01*n[1] + 0.04*sCavitation*n[2])

	// Temperature follows the copper losses (current squared) with the thermal time
	// constant; friction of worn bearings (past a third of the wear) and a failing cooler
	// add heat.
	target := ambient + m.tempRise*(current/m.currentFull)*(current/m.currentFull)
	target += 25*max(0, (sBearing-0.3)/0.7) + 35*sOverheat
	if first {
		m.temp = target
	} else {
		k := math.Exp(-dt / kp.tau)
		m.temp = k*m.temp + (1-k)*target
	}
	temperature := m.temp + 0.1*n[3]

	// Vibration grows with speed; faults add to it.
	vib := m.vibration * (0.6 + 0.4*ratio*ratio)
	vib += m.vibration * 6 * math.Pow(sBearing, 1.5)
	vib += m.vibration * 3 * sImbalance * ratio * ratio
	vib += m.vibration * sCavitation
	if u < 0.15*sCavitation { // implosion bursts
		vib += m.vibration * 4 * sCavitation * math.Abs(n[4])
	}
	vib *= 1 + 0.04*n[5]
	vib = max(0.01, vib)

	var pressure float64
	if kp.pressure > 0 {
		// Affinity law: head goes with speed squared; more flow (load) means less head.
		pressure = kp.pressure * ratio * ratio * (1.1 - 0.2*load)
		pressure *= 1 - 0.4*sCavitation
		pressure += kp.pressure * (0.005*n[6] + 0.08*sCavitation*n[7])
		pressure = max(0, pressure)
	}
	speed += kp.speed * 0.001 * n[8]

	return Sample{
		Machine: m.cfg.ID,
		Line:    m.cfg.Line,
		Kind:    m.cfg.Kind,
		Time:    t,
		Signals: Signals{
			Temperature:  temperature,
			VibrationRMS: vib,
			Current:      max(0, current),
			Pressure:     pressure,
			Speed:        speed,
		},
		Label: label,
	}
}
