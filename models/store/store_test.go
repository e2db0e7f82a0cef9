package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/ensemble"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/modeltest"
	"github.com/millwright-io/millwright/models/pca"
	"github.com/millwright-io/millwright/models/threshold"
)

// artifact builds an artifact for machine with a detector fitted on signals×window inputs.
func artifact(t testing.TB, machine string, det models.Persistent, signals, window int, seed uint64) *Artifact {
	t.Helper()
	if err := det.Fit(context.Background(), modeltest.Latent(2000, signals*window, seed)); err != nil {
		t.Fatal(err)
	}
	fc := features.DefaultConfig()
	fc.WindowSize = window
	names := make([]string, signals)
	for i := range names {
		names[i] = "s" + string(rune('a'+i))
	}
	sc := features.Scaler{Signals: names, Median: make([]float64, signals), Scale: slices.Repeat([]float64{1}, signals), Constant: make([]bool, signals)}
	alarm := threshold.AlarmConfig{}
	alarm.SetDefaults()
	a := &Artifact{
		Machine: machine, CreatedAt: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), CodeVersion: "test",
		Features: fc, Scaler: sc, Threshold: threshold.Threshold{Method: threshold.MethodPOT, Value: 2.5, N: 400},
		Alarm: alarm,
		Training: Training{
			From: time.Date(2026, 4, 30, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC),
			Signals:  []features.SignalStats{{Signal: "sa", Samples: 86400, BadQuality: 3}},
			GridRows: 86400, Windows: 86391, HyperParameters: map[string]string{"detector": det.Kind()},
			Metrics: map[string]float64{"false_alarm_rate": 0.001},
		},
	}
	if err := a.SetDetector(det); err != nil {
		t.Fatal(err)
	}
	return a
}

func newAE(seed uint64) models.Persistent {
	d, _ := autoencoder.New(autoencoder.Config{Seed: seed, Epochs: 2})
	return d
}

func newPCA() models.Persistent {
	d, _ := pca.New(pca.Config{})
	return d
}

func TestRoundTrip(t *testing.T) {
	for _, det := range []models.Persistent{newAE(1), newPCA()} {
		t.Run(det.Kind(), func(t *testing.T) {
			a := artifact(t, "pump-1", det, 4, 5, 1)
			data, id, err := Encode(a)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Decode("mem", data)
			if err != nil {
				t.Fatal(err)
			}
			if m.ID != id || len(id) != 64 {
				t.Errorf("id %s, decoded %s", id, m.ID)
			}
			y := modeltest.Latent(20, 20, 9)
			want, got := make([]float64, 20), make([]float64, 20)
			_ = det.Score(y, want)
			if err := m.Detector.Score(y, got); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(want, got) {
				t.Errorf("loaded detector scores %v; saved %v", got, want)
			}
			again, id2, _ := Encode(m.Artifact)
			if id2 != id || !bytes.Equal(again, data) {
				t.Error("re-encoding a loaded artifact changed it")
			}
			if p, ok := m.Detector.(models.Parametric); ok && !p.Architecture().Equal(*m.Artifact.Detector.Architecture) {
				t.Error("architecture lost")
			}
		})
	}
}

func TestCorruption(t *testing.T) {
	a := artifact(t, "pump-1", newAE(1), 4, 5, 1)
	good, _, err := Encode(a)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(old, new string) []byte { return bytes.Replace(good, []byte(old), []byte(new), 1) }
	idx := bytes.Index(good, []byte(`"params":[`)) + 12
	bitrot := slices.Clone(good)
	bitrot[idx] ^= 0x01
	tests := []struct {
		name     string
		data     []byte
		sentinel error
		msg      string
	}{
		{"empty", nil, ErrCorrupt, "not a model artifact"},
		{"truncated", good[:len(good)/2], ErrCorrupt, "not a model artifact"},
		{"bit flip in the parameters", bitrot, ErrCorrupt, ""},
		{"wrong schema", flip(`"schema":1`, `"schema":2`), ErrVersion, "schema version 2; this build reads version 1"},
		{"wrong format", flip(`"format":"millwright-model"`, `"format":"other"`), ErrCorrupt, "format"},
		{"edited threshold", flip(`"value":2.5`, `"value":9.5`), ErrCorrupt, "content hash"},
		{"unknown field", flip(`{"format"`, `{"extra":1,"format"`), ErrCorrupt, "unknown field"},
		{"trailing garbage", append(slices.Clone(good), "{}"...), ErrCorrupt, "trailing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode("/models/pump-1/x.model.json", tc.data)
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("error %v; want %v", err, tc.sentinel)
			}
			if !strings.HasPrefix(err.Error(), "/models/pump-1/x.model.json: ") || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not name the file and %q", err, tc.msg)
			}
		})
	}
	// A consistent hash over an inconsistent artifact is caught by validation.
	bad := *a
	bad.Scaler.Scale = []float64{1, 0, 1, 1}
	if _, _, err := Encode(&bad); err == nil {
		t.Error("an artifact with a zero scale was encoded")
	}
	bad = *a
	bad.Features.WindowSize = 6 // the detector takes 4×5 inputs
	data, _, err := Encode(&bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode("f", data); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "does not fit the features") {
		t.Errorf("detector/feature mismatch: %v", err)
	}
}

func TestDirKeepsPreviousOnBadLoad(t *testing.T) {
	d, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Current("pump-1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("current of a machine without models: %v", err)
	}
	first, err := d.Save(artifact(t, "pump-1", newPCA(), 3, 4, 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Promote("pump-1", first); err != nil {
		t.Fatal(err)
	}
	second, err := d.Save(artifact(t, "pump-1", newPCA(), 3, 4, 2))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Promote("pump-1", second); err != nil {
		t.Fatal(err)
	}
	if h, _ := d.Head("pump-1"); h != (Head{Current: second, Previous: first}) {
		t.Fatalf("head %+v", h)
	}
	m, fellBack, err := d.Current("pump-1")
	if err != nil || fellBack || m.ID != second {
		t.Fatalf("current: %v %v %v", m, fellBack, err)
	}
	// Damage the current file: the previous model is served with the error.
	path := d.Path("pump-1", second)
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(path, data[:len(data)-20], 0o640); err != nil {
		t.Fatal(err)
	}
	m, fellBack, err = d.Current("pump-1")
	if m == nil || m.ID != first || !fellBack || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("after damage: model %v, fell back %v, err %v; want the first model and an error naming %s", m, fellBack, err, path)
	}
	// A damaged model cannot be promoted; rollback swaps back.
	if err := d.Promote("pump-1", second); err == nil {
		t.Error("a damaged model was promoted")
	}
	if err := d.Rollback("pump-1"); err != nil {
		t.Fatal(err)
	}
	if m, fellBack, err := d.Current("pump-1"); err != nil || fellBack || m.ID != first {
		t.Errorf("after rollback: %v %v %v", m, fellBack, err)
	}
	if ms, _ := d.Machines(); !slices.Equal(ms, []string{"pump-1"}) {
		t.Errorf("machines %v", ms)
	}
	// A file copied under another machine's name is refused.
	other := filepath.Join(filepath.Dir(filepath.Dir(path)), "pump-2")
	_ = os.MkdirAll(other, 0o750)
	src, _ := os.ReadFile(d.Path("pump-1", first))
	_ = os.WriteFile(filepath.Join(other, first+Ext), src, 0o640)
	if _, err := d.Load("pump-2", first); err == nil || !strings.Contains(err.Error(), `for machine "pump-1"`) {
		t.Errorf("a model of another machine loaded: %v", err)
	}
	for _, bad := range []string{"", "..", "a/b", ".hidden"} {
		if _, err := d.Head(bad); err == nil {
			t.Errorf("machine %q accepted", bad)
		}
	}
}

func FuzzLoad(f *testing.F) {
	for _, det := range []models.Persistent{newAE(1), newPCA()} {
		data, _, err := Encode(artifact(f, "m", det, 2, 3, 1))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	e, _ := ensemble.New(ensemble.Config{}, newPCA(), newAE(1))
	data, _, err := Encode(artifact(f, "m", e, 2, 3, 1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(`{"format":"millwright-model","schema":1,"sha256":"","artifact":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode("fuzz", data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		// Whatever loads scores a window of its features without failing.
		x := models.NewMatrix(1, len(m.Artifact.Scaler.Signals)*m.Artifact.Features.WindowSize)
		if err := m.Detector.Score(x, make([]float64, 1)); err != nil {
			t.Fatalf("a loaded model cannot score: %v", err)
		}
	})
}

// BenchmarkDefaultModel reports the artifact size and load time of the default detectors
// for 10 signals × 10-step windows.
func BenchmarkDefaultModel(b *testing.B) {
	for _, det := range []models.Persistent{newAE(1), newPCA()} {
		b.Run(det.Kind(), func(b *testing.B) {
			data, _, err := Encode(artifact(b, "m", det, 10, 10, 1))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode("m", data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "file-bytes")
		})
	}
}

// IsModelFile recognises exactly what Encode writes, so `millwright audit verify` hashes a
// model file's body (its identity) and any other file as a whole.
func TestIsModelFile(t *testing.T) {
	data, _, err := Encode(artifact(t, "pump-1", newPCA(), 4, 5, 1))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, tt := range map[string]struct {
		content []byte
		want    bool
	}{
		"model":        {data, true},
		"pretty":       {append([]byte("{\n  "), data[1:]...), false},
		"other json":   {[]byte(`{"format":"something-else"}`), false},
		"short":        {[]byte(`{"form`), false},
		"empty":        {nil, false},
		"not existing": {nil, false},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if name != "not existing" {
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if got := IsModelFile(path); got != tt.want {
			t.Errorf("%s: IsModelFile = %v, want %v", name, got, tt.want)
		}
	}
}
