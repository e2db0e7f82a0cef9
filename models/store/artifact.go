// Package store keeps model artifacts: versioned, self-describing, content-hashed files written atomically.
//
// An artifact file is one JSON object:
//
//	{"format":"millwright-model","schema":1,"sha256":"<hex>","artifact":{...}}
//
// where sha256 is the SHA-256 of the compact JSON encoding of "artifact" and is the model's
// identity everywhere (federation, ledger, downloads). Loading decodes strictly, checks the
// format, the schema version, the hash, every shape and value, and restores the detector;
// any failure is an error that names the file and the problem. Dir keeps, per machine, a
// current and a previous model so that a gateway whose new model fails to load keeps the
// previous one.
package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/ensemble"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/threshold"
)

// Format is the value of an artifact file's "format" field.
const Format = "millwright-model"

// SchemaVersion is the artifact schema this build writes and reads.
const SchemaVersion = 1

// MaxFileBytes bounds an artifact file; larger files are refused before decoding.
const MaxFileBytes = 32 << 20

// ErrCorrupt is wrapped by every load error caused by the file's content (as opposed to
// the file system).
var ErrCorrupt = errors.New("corrupt model artifact")

// ErrVersion is wrapped by the load error of an artifact of another schema version.
var ErrVersion = errors.New("unsupported model artifact schema")

// Artifact is everything needed to score a machine's windows and explain the model.
type Artifact struct {
	Machine     string    `json:"machine"`
	CreatedAt   time.Time `json:"created_at"`
	CodeVersion string    `json:"code_version"`
	// Features configures alignment and windowing; Scaler holds the signals (column order)
	// and their statistics; Dropped lists signals left out for low coverage.
	Features features.Config `json:"features"`
	Scaler   features.Scaler `json:"scaler"`
	Dropped  []string        `json:"dropped,omitempty"`
	Detector Detector        `json:"detector"`
	// Threshold on the detector's score, and how alarms are debounced.
	Threshold threshold.Threshold   `json:"threshold"`
	Alarm     threshold.AlarmConfig `json:"alarm"`
	Training  Training              `json:"training"`
}

// Detector is the saved detector: its kind, its parameter layout when it is Parametric,
// and its state as MarshalState wrote it.
type Detector struct {
	Kind         string               `json:"kind"`
	Architecture *models.Architecture `json:"architecture,omitempty"`
	State        json.RawMessage      `json:"state"`
}

// Training is the training metadata.
type Training struct {
	From time.Time `json:"from"` // the data window asked for
	To   time.Time `json:"to"`
	// Signals holds per signal its data window (first/last usable sample), sample,
	// bad-quality, invalid, filled and missing counts.
	Signals        []features.SignalStats `json:"signals"`
	GridRows       int                    `json:"grid_rows"`
	IncompleteRows int                    `json:"incomplete_rows"`
	Windows        int                    `json:"windows"`
	TrainWindows   int                    `json:"train_windows"`
	ValidWindows   int                    `json:"validation_windows"`
	// HyperParameters are the settings not already in the detector's state (free form).
	HyperParameters map[string]string `json:"hyper_parameters,omitempty"`
	// Metrics of the training (validation loss, false-alarm rate, ...).
	Metrics  map[string]float64 `json:"metrics,omitempty"`
	Duration time.Duration      `json:"duration"`
}

// SetDetector stores d's kind, architecture (when Parametric) and state.
func (a *Artifact) SetDetector(d models.Persistent) error {
	st, err := d.MarshalState()
	if err != nil {
		return err
	}
	a.Detector = Detector{Kind: d.Kind(), State: st}
	if p, ok := d.(models.Parametric); ok {
		arch := p.Architecture()
		a.Detector.Architecture = &arch
	}
	return nil
}

// Model is a loaded artifact with its restored detector.
type Model struct {
	ID       string // hex SHA-256 of the artifact
	Artifact *Artifact
	Detector models.Persistent
}

type envelope struct {
	Format   string          `json:"format"`
	Schema   int             `json:"schema"`
	SHA256   string          `json:"sha256"`
	Artifact json.RawMessage `json:"artifact"`
}

// Encode returns the artifact file's bytes and the artifact's identity.
func Encode(a *Artifact) (data []byte, id string, err error) {
	if err := a.validate(); err != nil {
		return nil, "", fmt.Errorf("model artifact: %w", err)
	}
	body, err := json.Marshal(a)
	if err != nil {
		return nil, "", fmt.Errorf("model artifact: %w", err)
	}
	sum := sha256.Sum256(body)
	id = hex.EncodeToString(sum[:])
	var buf bytes.Buffer
	fmt.Fprintf(&buf, `{"format":%q,"schema":%d,"sha256":%q,"artifact":`, Format, SchemaVersion, id)
	buf.Write(body)
	buf.WriteString("}\n")
	return buf.Bytes(), id, nil
}

// Decode parses an artifact file's bytes; name (the file's path) prefixes every error.
// Errors about the content wrap ErrCorrupt, or ErrVersion for another schema version.
func Decode(name string, data []byte) (*Model, error) {
	fail := func(sentinel error, format string, args ...any) error {
		return fmt.Errorf("%s: %w: %s", name, sentinel, fmt.Sprintf(format, args...))
	}
	if len(data) > MaxFileBytes {
		return nil, fail(ErrCorrupt, "%d bytes; expected at most %d", len(data), MaxFileBytes)
	}
	var env envelope
	if err := models.DecodeJSON(data, &env); err != nil {
		return nil, fail(ErrCorrupt, "not a model artifact: %v", err)
	}
	if env.Format != Format {
		return nil, fail(ErrCorrupt, "format %q; expected %q", env.Format, Format)
	}
	if env.Schema != SchemaVersion {
		return nil, fail(ErrVersion, "schema version %d; this build reads version %d", env.Schema, SchemaVersion)
	}
	if len(env.Artifact) == 0 || string(env.Artifact) == "null" {
		return nil, fail(ErrCorrupt, "no artifact")
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, env.Artifact); err != nil {
		return nil, fail(ErrCorrupt, "artifact: %v", err)
	}
	sum := sha256.Sum256(compact.Bytes())
	id := hex.EncodeToString(sum[:])
	if id != env.SHA256 {
		return nil, fail(ErrCorrupt, "content hash is %s but the file says %q: the file was modified or damaged", id, env.SHA256)
	}
	var a Artifact
	if err := models.DecodeJSON(env.Artifact, &a); err != nil {
		return nil, fail(ErrCorrupt, "artifact: %v", err)
	}
	if err := a.validate(); err != nil {
		return nil, fail(ErrCorrupt, "%v", err)
	}
	d, err := ensemble.Restore(a.Detector.Kind, a.Detector.State)
	if err != nil {
		return nil, fail(ErrCorrupt, "detector: %v", err)
	}
	if a.Detector.Architecture != nil {
		p, ok := d.(models.Parametric)
		if !ok {
			return nil, fail(ErrCorrupt, "detector %s has an architecture but no parameter vector", a.Detector.Kind)
		}
		if got := p.Architecture(); !got.Equal(*a.Detector.Architecture) {
			return nil, fail(ErrCorrupt, "detector architecture %+v does not match its state's %+v", *a.Detector.Architecture, got)
		}
	}
	// The detector must take the windows the features produce.
	probe := models.NewMatrix(1, len(a.Scaler.Signals)*a.Features.WindowSize)
	if err := d.Score(probe, make([]float64, 1)); err != nil {
		return nil, fail(ErrCorrupt, "detector does not fit the features (%d signals × window %d): %v", len(a.Scaler.Signals), a.Features.WindowSize, err)
	}
	return &Model{ID: id, Artifact: &a, Detector: d}, nil
}

func (a *Artifact) validate() error {
	if err := checkMachine(a.Machine); err != nil {
		return err
	}
	cfg := a.Features
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("features: %w", err)
	}
	if err := a.Scaler.Validate(); err != nil {
		return fmt.Errorf("scaler: %w", err)
	}
	if a.Detector.Kind == "" || len(a.Detector.State) == 0 {
		return errors.New("detector: no kind or no state")
	}
	if v := a.Threshold.Value; math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("threshold: value %v; expected a finite number", v)
	}
	if err := a.Alarm.Validate(); err != nil {
		return fmt.Errorf("alarm: %w", err)
	}
	return nil
}

// modelFilePrefix is how every file Encode writes begins.
var modelFilePrefix = []byte(`{"format":"` + Format + `"`)

// IsModelFile reports whether the file at path begins as a model file written by this
// package does. It reads only the beginning; LoadFile checks the rest.
func IsModelFile(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, len(modelFilePrefix))
	_, err = io.ReadFull(f, head)
	return err == nil && bytes.Equal(head, modelFilePrefix)
}
