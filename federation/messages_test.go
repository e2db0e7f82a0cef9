package federation_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/aggregate"
	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/federation/secagg"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/models"
)

func sampleUpdate() *federation.Update {
	u := &federation.Update{Federation: fedName, Round: 7, BaseRound: 6, Participant: "g1", Samples: 1234,
		Metrics: map[string]float64{"loss": 0.25, "f1": 0.9}, Payload: []byte{1, 2, 3, 4, 5}}
	u.Nonce[3] = 9
	u.Sign(gatewayKey(1))
	return u
}

func TestUpdateRoundTripAndTamper(t *testing.T) {
	b := sampleUpdate().Marshal()
	u, err := federation.DecodeUpdate(b)
	if err != nil {
		t.Fatal(err)
	}
	if u.Round != 7 || u.BaseRound != 6 || u.Participant != "g1" || u.Samples != 1234 || u.Metrics["f1"] != 0.9 || !bytes.Equal(u.Payload, []byte{1, 2, 3, 4, 5}) {
		t.Fatalf("decoded %+v", u)
	}
	if !bytes.Equal(u.Marshal(), b) {
		t.Fatal("re-encoding differs")
	}
	if u.ID() != federation.HashHex(b) { // computed in the signature check's pass
		t.Fatalf("ID %s, want the SHA-256 of the wire form %s", u.ID(), federation.HashHex(b))
	}
	// Every single-bit change is caught, by the decoder or the signature.
	for i := range len(b) {
		c := bytes.Clone(b)
		c[i] ^= 0x10
		if _, err := federation.DecodeUpdate(c); err == nil {
			t.Fatalf("bit flip at byte %d accepted", i)
		}
	}
	if _, err := federation.DecodeUpdate(append(bytes.Clone(b), 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
}

func TestEvaluationCarriesNoPayload(t *testing.T) {
	u := sampleUpdate()
	u.Kind = federation.KindEvaluation
	u.Sign(gatewayKey(1))
	if _, err := federation.DecodeUpdate(u.Marshal()); !errors.Is(err, federation.ErrMalformed) || !strings.Contains(err.Error(), "an evaluation carries no payload") {
		t.Errorf("an evaluation with a payload gave %v; want malformed", err)
	}
	u.Payload = nil
	u.Sign(gatewayKey(1))
	if got, err := federation.DecodeUpdate(u.Marshal()); err != nil || got.Kind != federation.KindEvaluation || got.Metrics["f1"] != 0.9 {
		t.Errorf("an evaluation decoded as %+v (%v)", got, err)
	}
}

func FuzzDecodeUpdate(f *testing.F) {
	f.Add(sampleUpdate().Marshal())
	u := sampleUpdate()
	u.Metrics = nil
	u.Sign(gatewayKey(2))
	f.Add(u.Marshal())
	f.Add([]byte("MWU1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := federation.DecodeUpdate(b)
		if err != nil {
			if !errors.Is(err, federation.ErrMalformed) && !errors.Is(err, federation.ErrBadSignature) {
				t.Fatalf("error not typed: %v", err)
			}
			return
		}
		if !bytes.Equal(u.Marshal(), b) {
			t.Fatal("accepted a non-canonical encoding")
		}
	})
}

func sampleModel(t testing.TB) []byte {
	g := federation.GlobalModel{Header: federation.ModelHeader{Federation: fedName, Round: 3,
		Architecture: models.Architecture{Kind: "linear", Version: 1, Params: 3}, Created: time.Unix(0, 0).UTC()},
		Params: []float32{1, -2, 3.5}}
	b, err := g.SignedBytes(hubKey())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestModelNonFinite: a model with a NaN or infinite parameter is malformed, and the
// largest finite and the smallest subnormal values are not. The hub does not sign such a
// model; one is made by writing the value over a signed model's parameter (decoding
// refuses it before it checks the signature).
func TestModelNonFinite(t *testing.T) {
	for _, c := range []struct {
		v  float32
		ok bool
	}{
		{float32(math.NaN()), false}, {float32(math.Inf(1)), false}, {float32(math.Inf(-1)), false},
		{math.Float32frombits(0xffc00001), false}, // a negative NaN with payload
		{math.MaxFloat32, true}, {-math.MaxFloat32, true}, {math.SmallestNonzeroFloat32, true}, {0, true},
	} {
		g := federation.GlobalModel{Header: federation.ModelHeader{Federation: fedName, Round: 3,
			Architecture: models.Architecture{Kind: "linear", Version: 1, Params: 3}, Created: time.Unix(0, 0).UTC()},
			Params: []float32{1, c.v, 3.5}}
		b, err := g.SignedBytes(hubKey())
		if !c.ok {
			if err == nil {
				t.Errorf("parameter %v: signed", c.v)
			}
			g.Params[1] = 2
			if b, err = g.SignedBytes(hubKey()); err != nil {
				t.Fatal(err)
			}
			// The parameters end where the key and the signature begin.
			at := len(b) - ed25519.PublicKeySize - ed25519.SignatureSize - 2*4
			binary.LittleEndian.PutUint32(b[at:], math.Float32bits(c.v))
		} else if err != nil {
			t.Fatal(err)
		}
		_, err = federation.DecodeModel(b, nil)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, federation.ErrMalformed)) {
			t.Errorf("parameter %v: %v", c.v, err)
		}
	}
}

func FuzzDecodeModel(f *testing.F) {
	f.Add(sampleModel(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := federation.DecodeModel(b, hubKey().Public().(ed25519.PublicKey))
		if err != nil {
			return
		}
		if len(g.Params) != g.Header.Architecture.Params {
			t.Fatal("parameter count not checked")
		}
	})
}

func TestModelSignature(t *testing.T) {
	signer := federation.GlobalModel{Header: federation.ModelHeader{Federation: fedName, Round: 3,
		Architecture: models.Architecture{Kind: "linear", Version: 1, Params: 3}}, Params: []float32{1, -2, 3.5}}
	b, err := signer.SignedBytes(hubKey())
	if err != nil {
		t.Fatal(err)
	}
	if signer.Hash() != federation.HashHex(b) { // computed in the signature's pass
		t.Fatalf("signed: Hash %s, want the SHA-256 of the wire form %s", signer.Hash(), federation.HashHex(b))
	}
	g, err := federation.DecodeModel(b, hubKey().Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if g.Hash() != federation.HashHex(b) { // computed in the signature check's pass
		t.Fatalf("Hash %s, want the SHA-256 of the wire form %s", g.Hash(), federation.HashHex(b))
	}
	if _, err := federation.DecodeModel(b, gatewayKey(0).Public().(ed25519.PublicKey)); !errors.Is(err, federation.ErrBadSignature) {
		t.Fatalf("other key: %v", err)
	}
	c := bytes.Clone(b)
	c[len(c)-100] ^= 1 // a parameter
	if _, err := federation.DecodeModel(c, nil); !errors.Is(err, federation.ErrBadSignature) {
		t.Fatalf("tampered parameter: %v", err)
	}
}

func TestFederationConfigValidate(t *testing.T) {
	fc := fedConfig(3, 10)
	fc.Name = "Bad Name"
	fc.Members = append(fc.Members, federation.Member{Name: "g0"})
	fc.Quorum = 9
	fc.Strategy = aggregate.Strategy{Name: aggregate.Median}
	fc.DP = dp.Config{Enabled: true, EpsilonLimit: 5, Noise: dp.NoiseDistributed}
	fc.MaxStaleness, fc.KeepModels = 3, 3
	fc.InitScale = 1e39 // beyond float32
	fc.SetDefaults()
	err := fc.Validate()
	paths := map[string]bool{}
	for _, e := range config.Flatten(err) {
		var fe *config.FieldError
		if errors.As(e, &fe) {
			paths[fe.Path] = true
		}
	}
	for _, want := range []string{"name", "members[3].name", "members[3].key", "quorum", "keep_models", "dp.noise", "strategy.name", "init_scale"} {
		if !paths[want] {
			t.Errorf("no problem at %s; got %v", want, err)
		}
	}
	good := fedConfig(3, 10)
	good.SetDefaults()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Bad Name", "keep_models: 3 is not above max_staleness 3; expected at least 4", "init_scale: 1e+39; expected a positive number up to 3.4028234663852886e+38"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if good.KeepModels != federation.DefaultKeepModels {
		t.Errorf("keep_models defaults to %d, want %d", good.KeepModels, federation.DefaultKeepModels)
	}
}

func TestSecAggMetricsConfig(t *testing.T) {
	for _, c := range []struct {
		name    string
		secagg  secagg.Config
		dp      bool
		problem []string // what the error says; nil: valid
	}{
		{"valid", secagg.Config{Enabled: true, Metrics: []string{"false_alarm_rate", "loss"}}, false, nil},
		{"without secagg", secagg.Config{Metrics: []string{"loss"}}, false, []string{"secagg.metrics: is set but secagg is not enabled"}},
		{"with dp", secagg.Config{Enabled: true, Metrics: []string{"loss"}}, true,
			[]string{"secagg.metrics: with dp are masked, clipped and noised in the final evaluation round only", "expected final_evaluation true"}},
		{"bad names", secagg.Config{Enabled: true, Metrics: []string{"loss", "loss", "Bad Name"}}, false,
			[]string{`secagg.metrics[1]: "loss" appears twice`, `secagg.metrics[2]: "Bad Name" is not a valid name`}},
		{"range", secagg.Config{Enabled: true, Range: 0.5, Metrics: []string{"loss"}}, false, []string{"secagg.range: 0.5 with metrics"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fc := fedConfig(3, 10)
			fc.SecAgg = c.secagg
			if c.dp {
				fc.DP = dp.Config{Enabled: true, EpsilonLimit: 5}
			}
			fc.SetDefaults()
			wantProblems(t, fc.Validate(), c.problem)
		})
	}
}

// TestDPConfigRefusesWhatTheNoiseDoesNotCover: the configuration refuses, with DP, what
// would make a round cost more privacy than the budget charges: a sampling rate below 1
// (the hub publishes who took part, so sampling does not amplify privacy), outlier
// rejection (one gateway could move the sum by more than the clip norm), and distributed
// noise shares that secure aggregation would clip to ±range (sized for the fewest
// survivors, 3 of 3 or 4 by default: the secagg threshold).
func TestDPConfigRefusesWhatTheNoiseDoesNotCover(t *testing.T) {
	minCosine := -0.1
	for _, c := range []struct {
		name    string
		edit    func(*federation.FederationConfig)
		problem []string // what the error says; nil: valid
	}{
		{"valid", func(*federation.FederationConfig) {}, nil},
		{"sampling rate below 1", func(fc *federation.FederationConfig) { fc.DP.SamplingRate = 0.5 },
			[]string{"dp.sampling_rate: 0.5 is not supported: the hub publishes who took part", "expected 1, or leave it unset"}},
		{"sampling rate 1", func(fc *federation.FederationConfig) { fc.DP.SamplingRate = 1 }, nil},
		{"rejection by norm", func(fc *federation.FederationConfig) { fc.Strategy.Reject.NormRatio = 2 },
			[]string{"strategy.reject.norm_ratio: 2 cannot be combined with dp.enabled", "more than dp.clip_norm"}},
		{"rejection by cosine", func(fc *federation.FederationConfig) { fc.Strategy.Reject.MinCosine = &minCosine },
			[]string{"strategy.reject.min_cosine: -0.1 cannot be combined with dp.enabled"}},
		{"rejection without dp", func(fc *federation.FederationConfig) {
			fc.DP.Enabled = false
			fc.Strategy.Reject.NormRatio, fc.Strategy.Reject.MinCosine = 2, &minCosine
		}, nil},
		{"distributed shares within range", func(fc *federation.FederationConfig) {
			fc.SecAgg.Enabled, fc.DP.Noise, fc.DP.ClipNorm, fc.DP.NoiseMultiplier = true, dp.NoiseDistributed, 1, 2
		}, nil},
		{"distributed shares beyond range", func(fc *federation.FederationConfig) {
			fc.SecAgg.Enabled, fc.DP.Noise, fc.DP.ClipNorm, fc.DP.NoiseMultiplier = true, dp.NoiseDistributed, 4, 4
		}, []string{"dp.noise_multiplier: 4 with dp.noise distributed and secagg.range 8: a gateway's update element (up to dp.clip_norm 4)",
			"noise share (9.24, sized for 3 survivors", "reaches 59.4", "expected secagg.range ≥ 59.5, or dp.noise_multiplier ≤ 0.288"}},
		{"central noise beyond range", func(fc *federation.FederationConfig) {
			fc.SecAgg.Enabled, fc.DP.ClipNorm, fc.DP.NoiseMultiplier = true, 4, 4 // the hub adds it after unmasking
		}, nil},
		{"clip norm at range", func(fc *federation.FederationConfig) {
			fc.SecAgg.Enabled, fc.SecAgg.Range, fc.DP.Noise, fc.DP.ClipNorm, fc.DP.NoiseMultiplier = true, 2, dp.NoiseDistributed, 2, 0.1
		}, []string{"reaches 2.69", "expected secagg.range ≥ 2.7"}},
		{"shares sized for the quorum", func(fc *federation.FederationConfig) { // 1 + 6·2.2/√3 > 8 ≥ 1 + 6·2.2/√4
			fc.Members = fedConfig(4, 10).Members
			fc.SecAgg.Enabled, fc.DP.Noise, fc.DP.NoiseMultiplier, fc.Quorum = true, dp.NoiseDistributed, 2.2, 4
		}, nil},
		{"shares sized for the threshold", func(fc *federation.FederationConfig) {
			fc.Members = fedConfig(4, 10).Members
			fc.SecAgg.Enabled, fc.DP.Noise, fc.DP.NoiseMultiplier = true, dp.NoiseDistributed, 2.2
		}, []string{"sized for 3 survivors", "or dp.noise_multiplier ≤ 2.02"}},
		{"final evaluation metric shares beyond range", func(fc *federation.FederationConfig) {
			fc.SecAgg = secagg.Config{Enabled: true, Metrics: []string{federation.GlobalMetricPrefix + "false_alarm_rate"}}
			fc.Rounds, fc.FinalEvaluation = 1, true
			fc.DP.Noise, fc.DP.ClipNorm, fc.DP.NoiseMultiplier = dp.NoiseDistributed, 0.1, 4
		}, []string{"a gateway's final evaluation metric element (up to dp.metric_bound 1)", "noise share (2.31, sized for 3 survivors", "expected secagg.range ≥ 14.9, or dp.noise_multiplier ≤ 2.02"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fc := fedConfig(3, 10)
			fc.DP = dp.Config{Enabled: true, EpsilonLimit: 5}
			c.edit(&fc)
			fc.SetDefaults()
			wantProblems(t, fc.Validate(), c.problem)
		})
	}
}

func TestAcceptanceConfig(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	fc := fedConfig(3, 10)
	fc.Acceptance = map[string]federation.Bound{
		"false_alarm_rate":      {Max: f(0.05)},
		"detection_rate":        {Min: f(0.9), Max: f(0.8)},
		"separation":            {},
		"global_detection_rate": {Min: f(0.9)},
		"loss":                  {Max: f(math.Inf(1))},
	}
	fc.SetDefaults()
	err := fc.Validate()
	for _, want := range []string{"acceptance.detection_rate: min 0.9 is above max 0.8", "acceptance.separation: has neither min nor max",
		`acceptance.global_detection_rate: is not a metric name the gateways report (such as false_alarm_rate, without "global_")`,
		"acceptance.loss: bounds must be finite numbers"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), "acceptance.false_alarm_rate") {
		t.Errorf("a valid bound reported: %v", err)
	}
}

// wantProblems checks a validation's err: nil when problems is nil, else saying each of them.
func wantProblems(t *testing.T, err error, problems []string) {
	t.Helper()
	if problems == nil {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, want := range problems {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
}

// TestConfigRefusesRoundsThatCannotRun: a configuration with which every round would be
// abandoned is refused, naming the setting: a default quorum (what krum or multi_krum
// needs, 2·byzantine + 3) above the participants per round, and secure aggregation with
// participants it cannot run with (fewer than 2, or as many as the 32-bit sum overflows
// for range and frac_bits). Before, both were accepted and the hub abandoned round after
// round (reason quorum, or params).
func TestConfigRefusesRoundsThatCannotRun(t *testing.T) {
	for _, c := range []struct {
		name    string
		edit    func(*federation.FederationConfig)
		problem []string // what the error says; nil: valid
	}{
		{"krum with enough members", func(fc *federation.FederationConfig) {
			fc.Members, fc.Strategy = fedConfig(5, 10).Members, aggregate.Strategy{Name: aggregate.Krum}
		}, nil},
		{"krum with too few members", func(fc *federation.FederationConfig) { fc.Strategy = aggregate.Strategy{Name: aggregate.Krum} },
			[]string{`strategy.name: "krum" needs 5 updates per round (2·byzantine + 3, byzantine 1), more than the 3 participants per round`, "expected at least 5 participants"}},
		{"multi_krum with too few participants", func(fc *federation.FederationConfig) {
			fc.Members, fc.Participants, fc.Strategy = fedConfig(6, 10).Members, 4, aggregate.Strategy{Name: aggregate.MultiKrum}
		}, []string{`strategy.name: "multi_krum" needs 5 updates per round`, "more than the 4 participants per round"}},
		{"secagg with one member", func(fc *federation.FederationConfig) {
			fc.Members, fc.SecAgg.Enabled = fedConfig(1, 10).Members, true
		}, []string{"secagg.enabled: true, but no round can run with 1 participants per round: clients: 1 is out of range; expected 2 to 1024"}},
		{"secagg sum overflows", func(fc *federation.FederationConfig) {
			fc.Members, fc.SecAgg.Enabled, fc.SecAgg.FracBits = fedConfig(20, 10).Members, true, 24
		}, []string{"secagg.enabled: true, but no round can run with 20 participants per round: range: 8 with frac_bits 24 and 20 clients can overflow the 32-bit sum"}},
		{"secagg with two members", func(fc *federation.FederationConfig) {
			fc.Members, fc.SecAgg.Enabled = fedConfig(2, 10).Members, true
		}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			fc := fedConfig(3, 10)
			c.edit(&fc)
			fc.SetDefaults()
			wantProblems(t, fc.Validate(), c.problem)
		})
	}
}
