package federation

import (
	"math"
	"slices"
	"testing"

	"github.com/millwright-io/millwright/federation/dp"
	"github.com/millwright-io/millwright/federation/secagg"
)

// FuzzSecAggRecord feeds a restarted hub's decoder of an interrupted round's record (the
// roster, request and signatures it had published) arbitrary bytes: it never panics,
// and every contributor it returns is a client id of the round.
func FuzzSecAggRecord(f *testing.F) {
	p := secagg.Params{Round: 3, Clients: 3, Threshold: 2, Dim: 4, Range: 8, FracBits: 16}
	f.Add(secagg.Marshal(3, &secagg.Roster{Keys: []secagg.AdvertiseKeys{{From: 1}, {From: 2}}}),
		secagg.Marshal(3, &secagg.UnmaskRequest{Survivors: []uint32{1, 2}, Dropped: []uint32{3}}),
		secagg.Marshal(3, &secagg.SurvivorSigs{Sigs: []secagg.SurvivorSig{{From: 1}, {From: 2}}}), uint8(4))
	f.Add([]byte{}, []byte{6, 2}, []byte{9, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1}, uint8(3))
	f.Fuzz(func(t *testing.T, roster, request, sigs []byte, closed uint8) {
		sa := &SecAggState{Params: p, IDs: map[string]uint32{"a": 1, "b": 2, "c": 3}, Roster: roster, Request: request,
			Signatures: sigs, Bundles: map[string][]byte{"a": nil, "b": nil}}
		got, err := secaggContributors(sa, int(closed)%(len(secaggPhases)+1))
		if err != nil {
			return
		}
		for _, set := range got {
			for id := range set {
				if id < 1 || id > secagg.MaxClients {
					t.Fatalf("contributor %d", id)
				}
			}
		}
	})
}

// TestMetricMeansRefusesImplausibleSums: a metric's unmasked sums give its mean unless no
// survivor had it, or no honest survivors could have produced them (the weights sum to
// more than one per survivor, or the mean lies beyond ±range): a gateway that masks a
// forged pair cannot make the hub report any mean it likes.
func TestMetricMeansRefusesImplausibleSums(t *testing.T) {
	sa := &SecAggState{Params: secagg.Params{Range: 8}, Metrics: []string{"far", "absent", "heavy", "wide", "edge"}}
	means, implausible := sa.metricMeans([]float32{
		0.3, 2, // far: 0.15
		0, 0, // absent: no survivor had it
		3, 5, // heavy: weights of 5 from 3 survivors
		100, 1, // wide: a mean of 100, beyond ±8
		-24, 3, // edge: a mean of -8, on the range
	}, 3)
	if len(means) != 2 || means["far"] != 0.15 || means["edge"] != -8 || !slices.Equal(implausible, []string{"heavy", "wide"}) {
		t.Fatalf("means %v, implausible %v; want far 0.15 and edge -8, heavy and wide left out", means, implausible)
	}
}

// Without DP a gateway masks a metric as its weighted value and weight only if the value
// lies within ±range: one beyond it, ±Inf or NaN (which would reach the fixed-point
// encoding unclipped) is 0, 0, as if it lacked the metric.
func TestMaskedMetricsOutsideRangeLeftOut(t *testing.T) {
	sa := &SecAggState{Metrics: []string{"in", "edge", "wide", "inf", "nan"}}
	sa.Params.Range = 8
	metrics := map[string]float64{"in": 0.5, "edge": -8, "wide": 9, "inf": math.Inf(1), "nan": math.NaN()}
	if in := sa.maskedInput(nil, 10, metrics, nil); !slices.Equal(in, []float32{0.5, 1, -8, 1, 0, 0, 0, 0, 0, 0}) {
		t.Errorf("masked metrics %v; want in and edge with weight 1, the others 0, 0", in)
	}
}

// With DP a gateway's masked metrics are clipped into [0, MetricBound] with weight 1, and
// with MetricNoise each gets noise of that standard deviation; a metric it lacks is 0 with
// weight 0, and with MetricNoise its share of the noise all the same: the hub unmasks that
// sum too.
func TestMaskedMetricsClippedAndNoised(t *testing.T) {
	sa := &SecAggState{Metrics: []string{"global_far", "global_missing"}, MetricBound: 1, SampleCap: 0}
	sa.Params.Range = 8
	noise, err := dp.NewNoise(nil)
	if err != nil {
		t.Fatal(err)
	}
	metrics := map[string]float64{"global_far": 1.7}
	if in := sa.maskedInput(nil, 10, metrics, noise); !slices.Equal(in, []float32{1, 1, 0, 0}) {
		t.Fatalf("clipped, no noise: %v; want [1 1 0 0]", in)
	}
	sa.MetricNoise = 0.5
	const draws = 20000
	var s, s2, m, m2 float64
	for range draws {
		in := sa.maskedInput(nil, 10, metrics, noise)
		if in[1] != 1 || in[3] != 0 {
			t.Fatalf("noised: %v; want weight 1, and 0 for the missing metric", in)
		}
		x, y := float64(in[0])-1, float64(in[2])
		s, s2, m, m2 = s+x, s2+x*x, m+y, m2+y*y
	}
	for _, c := range []struct {
		what  string
		s, s2 float64
	}{{"the clipped value", s, s2}, {"the missing metric", m, m2}} {
		mean, std := c.s/draws, math.Sqrt(c.s2/draws-(c.s/draws)*(c.s/draws))
		if math.Abs(mean) > 0.02 || math.Abs(std-0.5) > 0.02 {
			t.Errorf("noise on %s: mean %.4f, std %.4f; want 0 and 0.5", c.what, mean, std)
		}
	}
}
