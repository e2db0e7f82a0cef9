package dp

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/internal/configtest"
)

func seed(b byte) *bytes.Reader { return bytes.NewReader(bytes.Repeat([]byte{b}, 32)) }

func TestClip(t *testing.T) {
	v := []float32{3, 4}
	if n := Clip(v, 1); n != 5 || math.Abs(float64(v[0])-0.6) > 1e-7 || math.Abs(float64(v[1])-0.8) > 1e-7 {
		t.Errorf("clip to 1: norm %v, v %v", n, v)
	}
	w := []float32{0.3, 0.4}
	if Clip(w, 1); w[0] != 0.3 || w[1] != 0.4 {
		t.Errorf("a short vector was changed: %v", w)
	}
}

func TestNoiseIsSeededAndGaussian(t *testing.T) {
	n1, _ := NewNoise(seed(1))
	n2, _ := NewNoise(seed(1))
	n3, _ := NewNoise(seed(2))
	a, b, c := make([]float32, 100000), make([]float32, 100000), make([]float32, 100000)
	n1.Add(a, 2)
	n2.Add(b, 2)
	n3.Add(c, 2)
	if !slicesEqual(a, b) || slicesEqual(a, c) {
		t.Fatal("noise is not determined by its seed")
	}
	var s, s2 float64
	for _, x := range a {
		s += float64(x)
		s2 += float64(x) * float64(x)
	}
	mean, std := s/float64(len(a)), math.Sqrt(s2/float64(len(a))-(s/float64(len(a)))*(s/float64(len(a))))
	if math.Abs(mean) > 0.03 || math.Abs(std-2) > 0.03 {
		t.Errorf("mean %.4f std %.4f; want 0 and 2", mean, std)
	}
	if _, err := NewNoise(bytes.NewReader(make([]byte, 5))); err == nil {
		t.Error("a short seed was accepted")
	}
	if _, err := NewNoise(nil); err != nil {
		t.Errorf("crypto/rand: %v", err)
	}
}

// TestMeanIsClippedAndNoisedAsARound: the private mean clips every value into
// [0, metric_bound] and adds, to each metric's sum, noise of σ·bound·√m: the Gaussian
// mechanism a round applies to updates clipped to that norm.
func TestMeanIsClippedAndNoisedAsARound(t *testing.T) {
	cfg := Config{NoiseMultiplier: 2, MetricBound: 1}
	rows := [][]float64{{0.2, -3}, {0.4, 0.5}, {7, math.NaN()}, {0.6, 0.5}} // clipped: {0.2, 0}, {0.4, 0.5}, {1, 0}, {0.6, 0.5}
	n, _ := NewNoise(seed(3))
	const draws = 20000
	var s, s2 [2]float64
	for range draws {
		mean, std := n.Mean(rows, cfg)
		if want := 2 * math.Sqrt(2) / 4; math.Abs(std-want) > 1e-12 {
			t.Fatalf("noise std on the mean %v, want σ·bound·√m/k = %v", std, want)
		}
		for j, v := range mean {
			if v < 0 || v > 1 {
				t.Fatalf("mean %v is outside [0, 1]", mean)
			}
			s[j] += v
			s2[j] += v * v
		}
	}
	// Without the clamp the noised mean is N(0.55, 0.707²) and N(0.25, 0.707²); clamped
	// into [0, 1], its expectation and spread are those of the clamped normal.
	for j, mu := range []float64{0.55, 0.25} {
		wantMean, wantStd := clampedNormal(mu, 2*math.Sqrt(2)/4)
		mean := s[j] / draws
		std := math.Sqrt(s2[j]/draws - mean*mean)
		if math.Abs(mean-wantMean) > 0.01 || math.Abs(std-wantStd) > 0.01 {
			t.Errorf("metric %d: mean %.4f std %.4f over %d draws; want %.4f and %.4f", j, mean, std, draws, wantMean, wantStd)
		}
	}
	// Without noise (a σ so small it does not show) the mean is the clipped values' mean.
	exact, _ := n.Mean(rows, Config{NoiseMultiplier: 1e-12, MetricBound: 1})
	if math.Abs(exact[0]-0.55) > 1e-6 || math.Abs(exact[1]-0.25) > 1e-6 {
		t.Errorf("mean without noise %v, want [0.55 0.25]", exact)
	}
}

// clampedNormal returns the mean and standard deviation of N(mu, sd²) clamped into
// [0, 1], by numerical integration.
func clampedNormal(mu, sd float64) (float64, float64) {
	var m, m2 float64
	const steps = 200000
	lo, hi := mu-10*sd, mu+10*sd
	dx := (hi - lo) / steps
	for i := range steps {
		x := lo + (float64(i)+0.5)*dx
		p := math.Exp(-(x-mu)*(x-mu)/(2*sd*sd)) / (sd * math.Sqrt(2*math.Pi)) * dx
		c := min(max(x, 0), 1)
		m += c * p
		m2 += c * c * p
	}
	return m, math.Sqrt(m2 - m*m)
}

func slicesEqual(a, b []float32) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPrivatizeDistributedNoiseSumsToCentral(t *testing.T) {
	cfg := Config{Enabled: true, EpsilonLimit: 1, Noise: NoiseDistributed}
	cfg.SetDefaults()
	cfg.NoiseMultiplier, cfg.ClipNorm = 2, 0.5
	const clients, d = 16, 20000
	sum := make([]float64, d)
	for c := range clients {
		n, _ := NewNoise(seed(byte(c)))
		v := make([]float32, d)
		v[0] = 100 // clipped to 0.5
		if norm := n.Privatize(v, cfg, clients); norm != 100 {
			t.Fatalf("norm before clipping %v", norm)
		}
		for i, x := range v {
			sum[i] += float64(x)
		}
	}
	var s2 float64
	for _, x := range sum[1:] {
		s2 += x * x
	}
	std := math.Sqrt(s2 / float64(d-1))
	if want := cfg.NoiseMultiplier * cfg.ClipNorm; math.Abs(std-want) > 0.03*want {
		t.Errorf("noise of the sum has std %.4f, want σC = %.4f", std, want)
	}
	if math.Abs(sum[0]-clients*0.5) > 5 {
		t.Errorf("clipped signal sum %.3f, want ≈ %v", sum[0], clients*0.5)
	}
}

func TestBudgetRefusesRoundPastLimit(t *testing.T) {
	cfg := Config{Enabled: true, NoiseMultiplier: 1, EpsilonLimit: 10}
	cfg.SetDefaults()
	b, err := NewBudget(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var last Report
	for {
		r, err := b.Spend()
		if err != nil {
			if !errors.Is(err, ErrBudgetExceeded) {
				t.Fatal(err)
			}
			for _, want := range []string{"ε to", "δ=1e-05", "limit ε=10"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
			break
		}
		if r.Epsilon <= last.Epsilon || r.Round != last.Round+1 || r.Epsilon > cfg.EpsilonLimit {
			t.Fatalf("report %v after %v", r, last)
		}
		last = r
	}
	// Refused rounds spend nothing.
	if s := b.Spent(); s.Round != last.Round || s.Epsilon != last.Epsilon {
		t.Errorf("spent %v after a refusal, want %v", s, last)
	}
	// σ=1, q=1, δ=1e-5: one round is the Gaussian mechanism; ε grows like √T.
	if last.Round < 3 || last.Round > 10 {
		t.Errorf("σ=1 allowed %d rounds within ε=10", last.Round)
	}
	// A restarted hub resumes from the persisted steps.
	b2, err := NewBudget(cfg, b.Steps()...)
	if err != nil {
		t.Fatal(err)
	}
	if b2.Spent() != b.Spent() {
		t.Errorf("restored budget %v, original %v", b2.Spent(), b.Spent())
	}
}

func TestPerRoundAndCumulative(t *testing.T) {
	cfg := Config{Enabled: true, NoiseMultiplier: 5, EpsilonLimit: 100}
	cfg.SetDefaults()
	b, _ := NewBudget(cfg)
	first, _ := b.Spend()
	if first.RoundEpsilon != first.Epsilon {
		t.Errorf("first round: round ε %v, cumulative %v", first.RoundEpsilon, first.Epsilon)
	}
	for range 98 {
		b.Spend()
	}
	r, _ := b.Spend()
	if r.RoundEpsilon != first.RoundEpsilon || r.Epsilon <= first.Epsilon || r.Epsilon >= 100*first.Epsilon {
		t.Errorf("after 100 rounds %v; first %v (RDP composes sublinearly)", r, first)
	}
}

func TestSampleConfigLoads(t *testing.T) {
	var c Config
	configtest.Load(t, "testdata/dp.yaml", &c)
	if !c.Enabled || c.NoiseMultiplier != 1.1 || c.Noise != NoiseDistributed || c.EpsilonLimit != 8 || c.MetricBound != 1 {
		t.Errorf("decoded %+v", c)
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	c := Config{Enabled: true, ClipNorm: -1, NoiseMultiplier: math.Inf(1), Noise: "local", SamplingRate: 2, Delta: 1}
	err := c.Validate()
	for _, want := range []string{"clip_norm: -1", "noise_multiplier: +Inf", `noise: "local"`, "sampling_rate: 2", "delta: 1", "epsilon_limit: 0", "metric_bound: 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if _, err := NewBudget(Config{}); err == nil {
		t.Error("budget from a zero config")
	}
}

// TestSamplingRateMustBeOne: the hub publishes every round's participants, so a sampling
// rate below 1 cannot amplify privacy; the configuration refuses it, saying why, and
// accepts 1 or nothing.
func TestSamplingRateMustBeOne(t *testing.T) {
	for _, q := range []float64{0, 1, 0.5, 1e-3, 2} {
		c := Config{Enabled: true, SamplingRate: q, EpsilonLimit: 8}
		c.SetDefaults()
		err := c.Validate()
		if q == 0 || q == 1 {
			if err != nil {
				t.Errorf("sampling_rate %v: %v", q, err)
			}
			continue
		}
		for _, want := range []string{fmt.Sprintf("sampling_rate: %v is not supported", q), "publishes who took part", "expected 1, or leave it unset"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("sampling_rate %v: error does not say %q: %v", q, want, err)
			}
		}
	}
}

// TestBudgetChargesTheGaussianMechanism: every round costs the Gaussian mechanism's ε
// (q = 1), the rounds a hub spent before a restart included, even if they were persisted
// at a sampling rate below 1.
func TestBudgetChargesTheGaussianMechanism(t *testing.T) {
	cfg := Config{Enabled: true, NoiseMultiplier: 2, EpsilonLimit: 100}
	cfg.SetDefaults()
	gaussian := func(rounds int) float64 {
		a, err := NewAccountant(Step{Q: 1, Sigma: 2, Count: rounds})
		if err != nil {
			t.Fatal(err)
		}
		eps, _ := a.Epsilon(cfg.Delta)
		return eps
	}
	b, err := NewBudget(cfg, Step{Q: 0.1, Sigma: 2, Count: 5})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Spent().Epsilon, gaussian(5); got != want {
		t.Errorf("5 restored rounds persisted at q=0.1 cost ε=%v; want the Gaussian mechanism's %v", got, want)
	}
	r, err := b.Spend()
	if err != nil {
		t.Fatal(err)
	}
	if r.RoundEpsilon != gaussian(1) || r.Epsilon != gaussian(6) {
		t.Errorf("round 6 costs ε=%v (cumulative %v); want the Gaussian mechanism's %v (%v)", r.RoundEpsilon, r.Epsilon, gaussian(1), gaussian(6))
	}
}

// The metrics' noise is a round's: σ·bound·√m on each sum from the hub, a 1/√n share of it
// from each of n clients with distributed noise, so that the shares add up to the same.
func TestMetricStd(t *testing.T) {
	c := Config{NoiseMultiplier: 1.5, MetricBound: 2, Noise: NoiseCentral}
	if got, want := c.MetricStd(3, 4), 1.5*2*math.Sqrt(3); math.Abs(got-want) > 1e-12 {
		t.Errorf("central: %v, want %v", got, want)
	}
	c.Noise = NoiseDistributed
	if got, want := c.MetricStd(3, 4), 1.5*2*math.Sqrt(3)/2; math.Abs(got-want) > 1e-12 {
		t.Errorf("distributed share of 4: %v, want %v", got, want)
	}
	if got := ClipMetric(math.NaN(), 2); got != 0 {
		t.Errorf("NaN clipped to %v, want 0", got)
	}
}

// A round charged at the noise its sum carried: more than σ costs less, less costs more,
// the same is Spend; a multiplier that is not positive and finite is refused, spending
// nothing. SharedMultiplier gives that multiplier for distributed shares: k shares sized
// for k clients (NoiseStd(k), MetricStd(m, k)) are σ itself, and more of them are more.
func TestSpendAtTheNoiseCarried(t *testing.T) {
	cfg := Config{Enabled: true, NoiseMultiplier: 2, Noise: NoiseDistributed, EpsilonLimit: 100}
	cfg.SetDefaults()
	round := func(sigma float64) Report {
		b, _ := NewBudget(cfg)
		r, err := b.SpendAt(sigma)
		if err != nil {
			t.Fatalf("SpendAt(%v): %v", sigma, err)
		}
		return r
	}
	b, _ := NewBudget(cfg)
	at, _ := b.Spend()
	if more, less := round(2.5), round(1.5); !(more.RoundEpsilon < at.RoundEpsilon && at.RoundEpsilon < less.RoundEpsilon) || round(2) != at {
		t.Errorf("round ε at σ 2.5, 2 and 1.5: %v, %v, %v; want decreasing in σ, and Spend's at 2", more.RoundEpsilon, at.RoundEpsilon, less.RoundEpsilon)
	}
	for _, bad := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		if _, err := b.SpendAt(bad); err == nil || !strings.Contains(err.Error(), "noise multiplier σ=") {
			t.Errorf("SpendAt(%v): %v; want a refusal naming the noise multiplier", bad, err)
		}
	}
	if s := b.Spent(); s.Round != 1 || s.Epsilon != at.Epsilon {
		t.Errorf("spent %v after the refusals, want %v", s, at)
	}

	const k = 3
	if got := SharedMultiplier(cfg.NoiseStd(k), k, cfg.ClipNorm); math.Abs(got-2) > 1e-12 {
		t.Errorf("%d shares sized for %d: σ %v, want 2", k, k, got)
	}
	if got, want := SharedMultiplier(cfg.NoiseStd(k), 5, cfg.ClipNorm), 2*math.Sqrt(5.0/3); math.Abs(got-want) > 1e-12 {
		t.Errorf("5 shares sized for %d: σ %v, want %v", k, got, want)
	}
	if got := SharedMultiplier(cfg.MetricStd(4, k), k, cfg.MetricSensitivity(4)); math.Abs(got-2) > 1e-12 {
		t.Errorf("%d metric shares sized for %d: σ %v, want 2", k, k, got)
	}
}
