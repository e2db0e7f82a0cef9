package sim

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func mustNew(t testing.TB, cfg Config) *Plant {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// run steps p n times, every step apart, from t0, and returns a copy of every sample,
// machine by machine.
func run(p *Plant, n int, step time.Duration) [][]Sample {
	out := make([][]Sample, len(p.machines))
	for i := range n {
		for m, s := range p.Step(t0.Add(time.Duration(i) * step)) {
			out[m] = append(out[m], s)
		}
	}
	return out
}

func allKinds(faults ...Fault) Config {
	return Config{Seed: 42, Machines: []Machine{
		{ID: "pump-1", Line: "l1", Kind: KindPump, Faults: faults},
		{ID: "spindle-1", Line: "l1", Kind: KindSpindle},
		{ID: "motor-1", Line: "l2", Kind: KindMotor},
	}}
}

func TestDeterminism(t *testing.T) {
	a := run(mustNew(t, allKinds()), 2000, time.Second)
	b := run(mustNew(t, allKinds()), 2000, time.Second)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two plants with the same seed gave different samples")
	}
	other := allKinds()
	other.Seed = 43
	c := run(mustNew(t, other), 2000, time.Second)
	for m := range a {
		same := 0
		for i := range a[m] {
			if a[m][i].Signals == c[m][i].Signals {
				same++
			}
		}
		if same > 0 {
			t.Errorf("%s: %d of %d samples are the same with seeds 42 and 43", a[m][0].Machine, same, len(a[m]))
		}
	}
	// A machine's samples depend only on the seed and its id, not on the other machines.
	more := allKinds()
	more.Machines = append([]Machine{{ID: "extra", Line: "l0", Kind: KindMotor}}, more.Machines...)
	d := run(mustNew(t, more), 2000, time.Second)
	if !reflect.DeepEqual(a, d[1:]) {
		t.Error("adding a machine changed the samples of the others")
	}
}

// bounds are the plausible range of every signal of a healthy machine of a kind.
type bounds struct{ lo, hi Signals }

var healthy = map[Kind]bounds{
	// Temperature: ambient 17-27 °C plus the load's heating; vibration within ISO 10816
	// zones A/B (below 4.5 mm/s); current between no load and full load.
	KindPump: {
		lo: Signals{Temperature: 17, VibrationRMS: 0.8, Current: 3, Pressure: 2.5, Speed: 2880},
		hi: Signals{Temperature: 70, VibrationRMS: 4.5, Current: 13, Pressure: 5, Speed: 2960},
	},
	KindSpindle: {
		lo: Signals{Temperature: 17, VibrationRMS: 0.3, Current: 2, Speed: 5900},
		hi: Signals{Temperature: 50, VibrationRMS: 2, Current: 20, Speed: 12100},
	},
	KindMotor: {
		lo: Signals{Temperature: 17, VibrationRMS: 0.5, Current: 6, Speed: 1425},
		hi: Signals{Temperature: 75, VibrationRMS: 3, Current: 25, Speed: 1485},
	},
}

func TestPlausibleWithoutFaults(t *testing.T) {
	var cfg Config
	for seed := range uint64(4) {
		for _, k := range []Kind{KindPump, KindSpindle, KindMotor} {
			cfg.Machines = append(cfg.Machines, Machine{ID: string(k) + "-" + string(rune('a'+seed)), Line: "l", Kind: k})
		}
	}
	p := mustNew(t, cfg)
	// Two days at 10 s: every load and ambient cycle many times over.
	for _, samples := range run(p, 2*8640, 10*time.Second) {
		k := samples[0].Kind
		b := healthy[k]
		var sum Signals
		for _, s := range samples {
			if s.Label != (Label{}) {
				t.Fatalf("%s at %s: label %+v without faults", s.Machine, s.Time, s.Label)
			}
			check := func(name string, v, lo, hi float64) {
				if math.IsNaN(v) || v < lo || v > hi {
					t.Fatalf("%s at %s: %s %.3f is outside the plausible [%g, %g]", s.Machine, s.Time, name, v, lo, hi)
				}
			}
			check("temperature", s.Signals.Temperature, b.lo.Temperature, b.hi.Temperature)
			check("vibration_rms", s.Signals.VibrationRMS, b.lo.VibrationRMS, b.hi.VibrationRMS)
			check("current", s.Signals.Current, b.lo.Current, b.hi.Current)
			check("pressure", s.Signals.Pressure, b.lo.Pressure, b.hi.Pressure)
			check("speed", s.Signals.Speed, b.lo.Speed, b.hi.Speed)
			sum.Temperature += s.Signals.Temperature
			sum.Current += s.Signals.Current
		}
		// The signals move: a flat line is not a plausible machine.
		if sd := stddev(samples, func(s Sample) float64 { return s.Signals.Current }); sd < 0.3 {
			t.Errorf("%s: current barely varies (sd %.3f A)", samples[0].Machine, sd)
		}
		if sd := stddev(samples, func(s Sample) float64 { return s.Signals.Temperature }); sd < 1 {
			t.Errorf("%s: temperature barely varies (sd %.3f °C)", samples[0].Machine, sd)
		}
	}
}

func TestCouplings(t *testing.T) {
	// Current follows the load and temperature follows current with a lag: the temperature's
	// correlation with the current is strongest some minutes later.
	p := mustNew(t, Config{Seed: 7, Machines: []Machine{{ID: "m", Line: "l", Kind: KindMotor}}})
	s := run(p, 8640, 10*time.Second)[0]
	cur := func(i int) float64 { return s[i].Signals.Current }
	tmp := func(i int) float64 { return s[i].Signals.Temperature }
	corr := func(lag int) float64 {
		n := len(s) - lag
		var mx, my float64
		for i := range n {
			mx += cur(i)
			my += tmp(i + lag)
		}
		mx, my = mx/float64(n), my/float64(n)
		var sxy, sxx, syy float64
		for i := range n {
			dx, dy := cur(i)-mx, tmp(i+lag)-my
			sxy += dx * dy
			sxx += dx * dx
			syy += dy * dy
		}
		return sxy / math.Sqrt(sxx*syy)
	}
	best := 0
	for lag := range 120 { // up to 20 minutes
		if corr(lag) > corr(best) {
			best = lag
		}
	}
	if best < 3 || corr(best) < 0.25 || corr(best) < corr(0)+0.15 {
		t.Errorf("temperature does not follow the current with a lag: best correlation %.2f at %s (%.2f at once)", corr(best), time.Duration(best)*10*time.Second, corr(0))
	}
	t.Logf("temperature follows the current best %s later (correlation %.2f, %.2f at once)", time.Duration(best)*10*time.Second, corr(best), corr(0))
	// Induction motors slow down under load: speed falls as current rises.
	var sxy float64
	mc, ms := mean(s, func(x Sample) float64 { return x.Signals.Current }), mean(s, func(x Sample) float64 { return x.Signals.Speed })
	for _, x := range s {
		sxy += (x.Signals.Current - mc) * (x.Signals.Speed - ms)
	}
	if sxy >= 0 {
		t.Error("a motor's speed does not fall as its current rises")
	}
}

func mean(s []Sample, f func(Sample) float64) float64 {
	var sum float64
	for _, x := range s {
		sum += f(x)
	}
	return sum / float64(len(s))
}

func stddev(s []Sample, f func(Sample) float64) float64 {
	m := mean(s, f)
	var sum float64
	for _, x := range s {
		d := f(x) - m
		sum += d * d
	}
	return math.Sqrt(sum / float64(len(s)))
}

func maxOf(s []Sample, f func(Sample) float64) float64 {
	v := math.Inf(-1)
	for _, x := range s {
		v = max(v, f(x))
	}
	return v
}

var (
	temperature = func(s Sample) float64 { return s.Signals.Temperature }
	vibration   = func(s Sample) float64 { return s.Signals.VibrationRMS }
	pressure    = func(s Sample) float64 { return s.Signals.Pressure }
)

func TestFaults(t *testing.T) {
	const (
		step  = 10 * time.Second
		onset = time.Hour
		ramp  = 30 * time.Minute
		steps = 4 * 360 // 4 hours: healthy for 1, ramp for half of one, full severity for 2.5
	)
	// window returns the samples from a to b after the start.
	window := func(s []Sample, a, b time.Duration) []Sample { return s[a/step : b/step] }
	late := func(s []Sample) []Sample { return window(s, onset+ramp+time.Hour, steps*step) }

	tests := []struct {
		kind  Kind
		fault FaultKind
		// check compares the faulty machine's samples with its healthy twin's (same seed and
		// id, so the same noise).
		check func(t *testing.T, sick, well []Sample)
	}{
		{KindMotor, FaultBearingWear, func(t *testing.T, sick, well []Sample) {
			// Vibration first: at a quarter of the ramp it is up, the temperature not yet.
			early := func(s []Sample) []Sample { return window(s, onset+ramp/4, onset+ramp/4+5*time.Minute) }
			if r := mean(early(sick), vibration) / mean(early(well), vibration); r < 1.3 {
				t.Errorf("vibration is %.2fx healthy at a quarter of the ramp; want at least 1.3x", r)
			}
			if d := mean(early(sick), temperature) - mean(early(well), temperature); math.Abs(d) > 1 {
				t.Errorf("temperature is already %+.1f °C at a quarter of the ramp; want it to follow the vibration", d)
			}
			if r := mean(late(sick), vibration) / mean(late(well), vibration); r < 3 {
				t.Errorf("vibration is %.2fx healthy at full wear; want at least 3x", r)
			}
			if d := mean(late(sick), temperature) - mean(late(well), temperature); d < 10 {
				t.Errorf("temperature is %+.1f °C at full wear; want at least +10", d)
			}
		}},
		{KindSpindle, FaultImbalance, func(t *testing.T, sick, well []Sample) {
			if r := mean(late(sick), vibration) / mean(late(well), vibration); r < 2 {
				t.Errorf("vibration is %.2fx healthy; want at least 2x", r)
			}
			// The excess vibration grows with speed: compare the fastest and slowest thirds.
			type pt struct{ speed, excess float64 }
			var pts []pt
			for i, s := range late(sick) {
				pts = append(pts, pt{s.Signals.Speed, s.Signals.VibrationRMS - late(well)[i].Signals.VibrationRMS})
			}
			var slow, fast, ns, nf float64
			lo, hi := minMaxSpeed(late(sick))
			for _, p := range pts {
				switch {
				case p.speed < lo+(hi-lo)/3:
					slow, ns = slow+p.excess, ns+1
				case p.speed > hi-(hi-lo)/3:
					fast, nf = fast+p.excess, nf+1
				}
			}
			if ns == 0 || nf == 0 || fast/nf < 1.3*slow/ns {
				t.Errorf("excess vibration %.2f mm/s at high speed, %.2f at low speed; want it to grow with speed", fast/nf, slow/ns)
			}
			if d := mean(late(sick), temperature) - mean(late(well), temperature); math.Abs(d) > 0.5 {
				t.Errorf("imbalance moved the temperature by %+.1f °C", d)
			}
		}},
		{KindPump, FaultCavitation, func(t *testing.T, sick, well []Sample) {
			if r := mean(late(sick), pressure) / mean(late(well), pressure); r > 0.8 {
				t.Errorf("pressure is %.2fx healthy; want at most 0.8x", r)
			}
			if r := stddev(late(sick), pressure) / stddev(late(well), pressure); r < 2 {
				t.Errorf("pressure fluctuates %.2fx as much as healthy; want at least 2x", r)
			}
			if r := maxOf(late(sick), vibration) / maxOf(late(well), vibration); r < 2 {
				t.Errorf("vibration peaks at %.2fx healthy; want spikes of at least 2x", r)
			}
		}},
		{KindPump, FaultOverheating, func(t *testing.T, sick, well []Sample) {
			if d := mean(late(sick), temperature) - mean(late(well), temperature); d < 20 {
				t.Errorf("temperature is %+.1f °C; want at least +20", d)
			}
			// A drift, not a step: it rises through the ramp.
			mid := window(sick, onset+ramp/2, onset+ramp/2+5*time.Minute)
			midWell := window(well, onset+ramp/2, onset+ramp/2+5*time.Minute)
			d := mean(mid, temperature) - mean(midWell, temperature)
			if d < 2 || d > 20 {
				t.Errorf("temperature is %+.1f °C half-way through the ramp; want a drift between +2 and +20", d)
			}
			if r := mean(late(sick), vibration) / mean(late(well), vibration); math.Abs(r-1) > 0.05 {
				t.Errorf("overheating moved the vibration by %.2fx", r)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.fault), func(t *testing.T) {
			t.Parallel()
			f := Fault{Kind: tt.fault, Onset: onset, Ramp: ramp}
			mk := func(faults ...Fault) []Sample {
				cfg := Config{Seed: 3, Machines: []Machine{{ID: "m", Line: "l", Kind: tt.kind, Faults: faults}}}
				return run(mustNew(t, cfg), steps, step)[0]
			}
			sick, well := mk(f), mk()
			for i, s := range sick {
				elapsed := time.Duration(i) * step
				if elapsed < onset {
					// Not before the onset: exactly the healthy twin.
					if s.Signals != well[i].Signals || s.Label != (Label{}) {
						t.Fatalf("at %s, before the onset: %+v, healthy twin %+v", elapsed, s, well[i])
					}
					continue
				}
				want := Label{Fault: tt.fault, Severity: min(1, float64(elapsed-onset)/float64(ramp))}
				if s.Label.Fault != want.Fault || math.Abs(s.Label.Severity-want.Severity) > 1e-9 {
					t.Fatalf("at %s: label %+v, want %+v", elapsed, s.Label, want)
				}
			}
			tt.check(t, sick, well)
		})
	}
}

func minMaxSpeed(s []Sample) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range s {
		lo, hi = min(lo, x.Signals.Speed), max(hi, x.Signals.Speed)
	}
	return lo, hi
}

func TestLabelOfSeveralFaults(t *testing.T) {
	p := mustNew(t, Config{Machines: []Machine{{ID: "m", Line: "l", Kind: KindPump, Faults: []Fault{
		{Kind: FaultOverheating, Onset: 10 * time.Second, Ramp: 100 * time.Second},
		{Kind: FaultCavitation, Onset: 30 * time.Second, Ramp: 10 * time.Second},
	}}}})
	for _, tc := range []struct {
		at   time.Duration
		want Label
	}{
		{0, Label{}},
		{9 * time.Second, Label{}},
		{10 * time.Second, Label{FaultOverheating, 0}},
		{30 * time.Second, Label{FaultOverheating, 0.2}},
		{35 * time.Second, Label{FaultCavitation, 0.5}},
		{200 * time.Second, Label{FaultOverheating, 1}}, // equal severities: the first configured
	} {
		got := p.Step(t0.Add(tc.at))[0].Label
		if got.Fault != tc.want.Fault || math.Abs(got.Severity-tc.want.Severity) > 1e-9 {
			t.Errorf("at %s: label %+v, want %+v", tc.at, got, tc.want)
		}
	}
}

func TestStepBackwards(t *testing.T) {
	p := mustNew(t, allKinds())
	p.Step(t0)
	p.Step(t0.Add(time.Minute))
	s := p.Step(t0) // back in time: state holds, nothing breaks
	if s[0].Time != t0 || s[0].Label != (Label{}) {
		t.Errorf("sample %+v", s[0])
	}
	if !p.Start().Equal(t0) {
		t.Errorf("Start() = %s, want %s", p.Start(), t0)
	}
}

func TestValidate(t *testing.T) {
	long := strings.Repeat("x", 300)
	tests := []struct {
		name string
		cfg  Config
		want []string // "path: fragment"
	}{
		{"no machines", Config{}, []string{"machines: no machines"}},
		{"bad interval", Config{Interval: -time.Second, Machines: []Machine{{ID: "a", Line: "l", Kind: KindPump}}},
			[]string{"interval: interval -1s is out of range"}},
		{"everything wrong", Config{Machines: []Machine{
			{ID: "a", Line: "l", Kind: KindPump},
			{ID: "a", Line: "", Kind: "turbine"},
			{ID: "b/c", Line: long, Kind: KindMotor, Faults: []Fault{
				{Kind: FaultCavitation, Onset: -time.Second, Ramp: time.Minute},
				{Kind: "rust", Ramp: -time.Minute},
				{Kind: FaultCavitation},
			}},
		}}, []string{
			`machines[1].id: id "a" is already used by machines[0]`,
			"machines[1].line: line is empty",
			`machines[1].kind: kind "turbine" is not known; expected pump, spindle or motor`,
			`machines[2].id: id "b/c" contains '/'`,
			"machines[2].line: line is 300 bytes; expected at most 256",
			"machines[2].faults[0].kind: cavitation needs a pump, not a motor",
			"machines[2].faults[0].onset: onset -1s is negative",
			`machines[2].faults[1].kind: kind "rust" is not known`,
			"machines[2].faults[1].ramp: ramp -1m0s is not positive",
			"machines[2].faults[2].kind: cavitation needs a pump, not a motor",
			`machines[2].faults[2].kind: fault "cavitation" is already injected by faults[0]`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.SetDefaults()
			errs := config.Flatten(tt.cfg.Validate())
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(errs), len(tt.want), errs)
			}
			for i, err := range errs {
				var fe *config.FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("problem %d is %T, not a *config.FieldError", i, err)
				}
				if !strings.HasPrefix(err.Error(), tt.want[i]) {
					t.Errorf("problem %d:\n got %s\nwant %s...", i, err, tt.want[i])
				}
			}
			if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), "simulated plant: ") {
				t.Errorf("New = %v; want the problems", err)
			}
		})
	}
}

func TestSetDefaults(t *testing.T) {
	cfg := allKinds(Fault{Kind: FaultImbalance})
	cfg.SetDefaults()
	if cfg.Interval != DefaultInterval || cfg.Machines[0].Faults[0].Ramp != DefaultRamp {
		t.Errorf("defaults: interval %s, ramp %s", cfg.Interval, cfg.Machines[0].Faults[0].Ramp)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
}

func TestStepAllocs(t *testing.T) {
	p := mustNew(t, allKinds(Fault{Kind: FaultBearingWear}))
	i := 0
	buf := make([]byte, 0, 1024)
	allocs := testing.AllocsPerRun(100, func() {
		i++
		for _, s := range p.Step(t0.Add(time.Duration(i) * time.Second)) {
			buf = s.AppendJSON(buf[:0])
		}
	})
	if allocs != 0 {
		t.Errorf("Step and AppendJSON allocate %.1f times per step; want 0", allocs)
	}
}

func TestSignalsValue(t *testing.T) {
	s := Signals{Temperature: 1, VibrationRMS: 2, Current: 3, Pressure: 4, Speed: 5}
	for _, tc := range []struct {
		name string
		want float64
	}{
		{SignalTemperature, 1}, {SignalVibrationRMS, 2}, {SignalCurrent, 3}, {SignalPressure, 4}, {SignalSpeed, 5},
	} {
		if got := s.Value(tc.name); got != tc.want {
			t.Errorf("Value(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := s.Value("humidity"); !math.IsNaN(got) {
		t.Errorf("Value of an unknown signal = %v, want NaN", got)
	}
}
