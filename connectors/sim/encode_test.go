package sim_test

import (
	"math"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// plantOfAllKinds is one machine of each kind, the pump with a fault.
func plantOfAllKinds(t testing.TB) *sim.Plant {
	t.Helper()
	p, err := sim.New(sim.Config{Seed: 9, Machines: []sim.Machine{
		{ID: "pump-1", Line: "line-1", Kind: sim.KindPump, Faults: []sim.Fault{{Kind: sim.FaultCavitation, Ramp: time.Minute}}},
		{ID: "spindle-1", Line: "line-1", Kind: sim.KindSpindle},
		{ID: "motor-1", Line: "line-2", Kind: sim.KindMotor},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkPoints checks that pts are exactly the signals of s, as the MQTT source decodes them.
func checkPoints(t *testing.T, s sim.Sample, pts []telemetry.Point) {
	t.Helper()
	names := s.Kind.Signals()
	if len(pts) != len(names) {
		t.Fatalf("%s: %d points, want %d (%v)", s.Machine, len(pts), len(names), names)
	}
	for i, p := range pts {
		if p.Machine != s.Machine || p.Line != s.Line || p.Signal != names[i] {
			t.Errorf("point %d: line %q machine %q signal %q; want %q %q %q", i, p.Line, p.Machine, p.Signal, s.Line, s.Machine, names[i])
		}
		if want := s.Time.UnixMilli() * int64(time.Millisecond); p.SourceTime != want {
			t.Errorf("%s %s: source time %d, want %d", s.Machine, p.Signal, p.SourceTime, want)
		}
		if p.Value.Kind != telemetry.KindFloat {
			t.Fatalf("%s %s: value of kind %v, want a float", s.Machine, p.Signal, p.Value.Kind)
		}
		// Encoded with 1 to 4 decimals.
		if got, want := p.Value.Float(), s.Signals.Value(p.Signal); math.Abs(got-want) > 0.05+1e-9 {
			t.Errorf("%s %s: decoded %v, sample has %v", s.Machine, p.Signal, got, want)
		}
		if p.Quality.Level != telemetry.Good {
			t.Errorf("%s %s: quality %+v, want good", s.Machine, p.Signal, p.Quality)
		}
	}
}

// TestJSONDecodedByMQTT encodes samples and decodes them with the MQTT source's decoder.
func TestJSONDecodedByMQTT(t *testing.T) {
	dec, err := mqtt.NewDecoder(mqtt.Topic{Pattern: "plant/{line}/{machine}/telemetry"}, mqtt.DecoderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := plantOfAllKinds(t)
	start := time.Date(2026, 3, 1, 8, 0, 0, 123e6, time.UTC)
	var buf []byte
	var pts []telemetry.Point
	for i := range 500 {
		for _, s := range p.Step(start.Add(time.Duration(i) * 250 * time.Millisecond)) {
			buf = s.AppendJSON(buf[:0])
			pts, err = dec.Decode("plant/"+s.Line+"/"+s.Machine+"/telemetry", buf, 1, pts[:0])
			if err != nil {
				t.Fatalf("decode %s: %v", buf, err)
			}
			checkPoints(t, s, pts)
		}
	}
}

func TestAppendJSON(t *testing.T) {
	s := sim.Sample{
		Machine: "m", Kind: sim.KindPump, Time: time.UnixMilli(1700000000123),
		Signals: sim.Signals{Temperature: 41.23456, VibrationRMS: 1.81234, Current: 9.8765, Pressure: 4.01234, Speed: 2931.44},
	}
	want := `{"ts":1700000000123,"temperature":41.235,"vibration_rms":1.8123,"current":9.877,"pressure":4.0123,"speed":2931.4}`
	if got := string(s.AppendJSON([]byte("x"))); got != "x"+want {
		t.Errorf("got  %s\nwant x%s", got, want)
	}
	s.Kind = sim.KindMotor
	want = `{"ts":1700000000123,"temperature":41.235,"vibration_rms":1.8123,"current":9.877,"speed":2931.4}`
	if got := string(s.AppendJSON(nil)); got != want {
		t.Errorf("motor: got  %s\nwant %s", got, want)
	}
}

// BenchmarkStepEncode measures the simulator's throughput: Step of 100 machines plus the
// JSON encoding of every sample.
func BenchmarkStepEncode(b *testing.B) {
	cfg := sim.Config{Seed: 1}
	kinds := []sim.Kind{sim.KindPump, sim.KindSpindle, sim.KindMotor}
	for i := range 100 {
		m := sim.Machine{ID: "m-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Line: "l", Kind: kinds[i%3]}
		if i%10 == 0 {
			m.Faults = []sim.Fault{{Kind: sim.FaultBearingWear, Ramp: time.Hour}}
		}
		cfg.Machines = append(cfg.Machines, m)
	}
	p, err := sim.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Unix(1700000000, 0)
	buf := make([]byte, 0, 256)
	var bytes int
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for _, s := range p.Step(start.Add(time.Duration(i) * time.Second)) {
			buf = s.AppendJSON(buf[:0])
			bytes += len(buf)
		}
	}
	b.ReportMetric(float64(b.N*len(cfg.Machines))/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(bytes)/float64(b.N*len(cfg.Machines)), "bytes/sample")
}
