package aggregate

import (
	"os"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/gateway/config"
)

func TestSampleStrategyLoads(t *testing.T) {
	data, err := os.ReadFile("testdata/strategy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := DefaultStrategy()
	if err := config.Decode(data, &s); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if s.Name != TrimmedMean || s.Trim != 0.2 || s.Reject.MinCosine == nil || *s.Reject.MinCosine != -0.1 || s.ProximalMu != 0.01 || s.ServerMomentum != 0.5 {
		t.Errorf("decoded %+v", s)
	}
	if _, err := New(s); err != nil {
		t.Errorf("New: %v", err)
	}
}

func TestStrategyDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		lr   float64
	}{{FedAvg, 1}, {FedAdam, 0.01}, {FedYogi, 0.01}, {Krum, 1}} {
		s := Strategy{Name: tc.name}
		s.SetDefaults()
		if s.ServerLR != tc.lr {
			t.Errorf("%s: server_lr %v, want %v", tc.name, s.ServerLR, tc.lr)
		}
		if err := s.Validate(); err != nil {
			t.Errorf("%s defaults invalid: %v", tc.name, err)
		}
	}
}

func TestStrategyValidateReportsEveryProblem(t *testing.T) {
	bad := -2.0
	s := DefaultStrategy()
	s.Name = "fedmagic"
	s.ServerLR = -1
	s.Trim = 0.5
	s.Byzantine = -1
	s.Adam.Beta1 = 1
	s.Reject.NormRatio = 0.5
	s.Reject.MinCosine = &bad
	s.ClipNorm = -3
	err := s.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"name: \"fedmagic\"", "server_lr: -1", "trim: 0.5", "byzantine: -1", "adam.beta1: 1", "reject.norm_ratio: 0.5", "reject.min_cosine: -2", "clip_norm: -3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if n := len(config.Flatten(err)); n != 8 {
		t.Errorf("%d problems, want 8:\n%v", n, err)
	}
}

func TestStrategyDecodeIsStrict(t *testing.T) {
	s := DefaultStrategy()
	err := config.Decode([]byte("name: median\ntrimm: 0.1\n"), &s)
	if err == nil || !strings.Contains(err.Error(), "trimm") {
		t.Errorf("unknown key accepted: %v", err)
	}
}
