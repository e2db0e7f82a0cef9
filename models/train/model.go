package train

import (
	"fmt"
	"time"

	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/ensemble"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/pca"
	"github.com/millwright-io/millwright/models/store"
)

// Model is one machine's trained model, ready to score: its artifact (models/store) and
// restored detector. A Model is immutable once built; its Detector is used by one scorer
// goroutine at a time.
type Model struct {
	Machine   string
	Version   string // the training's UTC time, 20060102T150405Z, for people and the ledger
	Hash      string // the artifact's SHA-256, its identity
	Artifact  *store.Artifact
	Detector  models.Detector
	Threshold float64
}

// FromStore wraps a loaded artifact.
func FromStore(sm *store.Model) *Model {
	a := sm.Artifact
	return &Model{Machine: a.Machine, Version: versionOf(a.CreatedAt), Hash: sm.ID, Artifact: a,
		Detector: sm.Detector, Threshold: a.Threshold.Value}
}

// StoreCurrent returns a Options.Current that reads a machine's current model from dir:
// the current artifact, or the previous one when the current fails to load (as the scorer
// would run it), or nil when there is none.
func StoreCurrent(dir *store.Dir) func(machine string) *Model {
	return func(machine string) *Model {
		if sm, _, _ := dir.Current(machine); sm != nil {
			return FromStore(sm)
		}
		return nil
	}
}

func versionOf(t time.Time) string { return t.UTC().Format("20060102T150405Z") }

// Signals returns the signals the model scores, in column order.
func (m *Model) Signals() []string { return m.Artifact.Scaler.Signals }

// Features returns the model's feature settings.
func (m *Model) Features() features.Config { return m.Artifact.Features }

// Metrics returns the training's metrics.
func (m *Model) Metrics() map[string]float64 { return m.Artifact.Training.Metrics }

// newDetector returns an unfitted detector of cfg.Detector for rows of windows of signals
// signals.
func newDetector(cfg Config, signals int) (models.Detector, error) {
	switch cfg.Detector {
	case pca.Kind:
		return pca.New(cfg.PCA)
	case autoencoder.Kind:
		ac := cfg.Autoencoder
		ac.Seed = cfg.Seed
		if ac.Signals == 0 {
			ac.Signals = signals // the width of one grid row, for a convolutional first layer
		}
		return autoencoder.New(ac)
	case ensemble.Kind:
		return ensemble.NewDefault(ensemble.Config{Signals: signals, Threshold: cfg.Threshold}, cfg.Seed)
	}
	return nil, fmt.Errorf("detector %q is not pca, autoencoder or ensemble", cfg.Detector)
}

// ScoreGrid scores every complete window of g with the model (g's columns are matched to
// the model's signals by name). It returns an error when g lacks one of them.
func (m *Model) ScoreGrid(g *features.Grid) ([]float64, error) {
	win, _, err := features.Apply(m.Features(), g, &m.Artifact.Scaler)
	if err != nil {
		return nil, err
	}
	out := make([]float64, win.Rows)
	if win.Rows == 0 {
		return out, nil
	}
	if err := m.Detector.Score(win, out); err != nil {
		return nil, fmt.Errorf("model of %s: %w", m.Machine, err)
	}
	return out, nil
}
