package store

import (
	"reflect"
	"testing"

	"github.com/millwright-io/millwright/internal/configtest"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/ensemble"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/pca"
	"github.com/millwright-io/millwright/models/threshold"
)

// detectorConfigs gathers the sections of testdata/detectors.yaml.
type detectorConfigs struct {
	Features    features.Config       `yaml:"features"`
	PCA         pca.Config            `yaml:"pca"`
	Autoencoder autoencoder.Config    `yaml:"autoencoder"`
	Threshold   threshold.Config      `yaml:"threshold"`
	Alarm       threshold.AlarmConfig `yaml:"alarm"`
	Ensemble    ensemble.Config       `yaml:"ensemble"`
}

// The sample documents the defaults: it decodes strictly, validates, and equals the
// defaults (with seed 1).
func TestSampleConfig(t *testing.T) {
	var got detectorConfigs
	configtest.DecodeFile(t, "testdata/detectors.yaml", &got)
	var want detectorConfigs
	want.Features.SetDefaults()
	want.PCA.SetDefaults()
	want.Autoencoder = autoencoder.Config{Seed: 1, Layers: []int{}}
	want.Autoencoder.SetDefaults()
	want.Threshold.SetDefaults()
	want.Alarm.SetDefaults()
	want.Ensemble = ensemble.Config{Seed: 1}
	want.Ensemble.SetDefaults()
	got.Ensemble.SetDefaults()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sample config\n%+v\ndiffers from the defaults\n%+v", got, want)
	}
	for name, err := range map[string]error{
		"features": got.Features.Validate(), "pca": got.PCA.Validate(), "autoencoder": got.Autoencoder.Validate(),
		"threshold": got.Threshold.Validate(), "alarm": got.Alarm.Validate(), "ensemble": got.Ensemble.Validate(),
	} {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
