package federation

import (
	"slices"
	"testing"

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
