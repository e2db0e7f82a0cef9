package federation_test

import (
	"context"
	"crypto/ed25519"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/autoencoder"
)

// nonIID returns rows of 8 signals driven by 2 latent factors through one shared mixing
// (the same machine type everywhere); each factory operates its machines in its own
// region of the latent space (non-IID), so its data alone covers a third of it.
func nonIID(factory, rows int, seed uint64) models.Matrix {
	r := rand.New(rand.NewPCG(seed, uint64(factory)))
	mix := [8][2]float64{{1, 0}, {0, 1}, {0.7, 0.7}, {0.7, -0.7}, {1, 0.3}, {-0.3, 1}, {0.5, 0.2}, {0.2, -0.5}}
	m := models.NewMatrix(rows, 8)
	center := [3][2]float64{{-1.5, -1}, {0, 1.5}, {1.5, -1}}[factory]
	for i := range rows {
		z := [2]float64{center[0] + 0.5*r.NormFloat64(), center[1] + 0.5*r.NormFloat64()}
		for j := range 8 {
			m.Data[i*8+j] = mix[j][0]*z[0] + mix[j][1]*z[1] + 0.05*r.NormFloat64()
		}
	}
	return m
}

func concat(ms ...models.Matrix) models.Matrix {
	out := models.Matrix{Cols: ms[0].Cols}
	for _, m := range ms {
		out.Rows += m.Rows
		out.Data = append(out.Data, m.Data...)
	}
	return out
}

func aeConfig(epochs int, seed uint64) autoencoder.Config {
	c := autoencoder.DefaultConfig()
	c.Inputs, c.Layers, c.Epochs, c.Seed, c.ValidationFraction = 8, []int{6, 2, 6}, epochs, seed, 0
	return c
}

// meanScore is the mean reconstruction error of d on x (lower: it models x better).
func meanScore(t testing.TB, d *autoencoder.Detector, x models.Matrix) float64 {
	out := make([]float64, x.Rows)
	if err := d.Score(x, out); err != nil {
		t.Fatal(err)
	}
	s := 0.0
	for _, v := range out {
		s += v
	}
	return s / float64(len(out))
}

// TestFederatedVersusLocalAndCentral trains the models autoencoder three ways on a non-IID
// split of synthetic data from three factories and compares the reconstruction error on
// every factory's held-out rows: each factory alone, all data centrally, and federated.
func TestFederatedVersusLocalAndCentral(t *testing.T) {
	const factories, rows, rounds = 3, 400, 30
	var train, test []models.Matrix
	for f := range factories {
		train = append(train, nonIID(f, rows, 1))
		test = append(test, nonIID(f, 200, 2))
	}
	all := concat(test...)
	ctx := context.Background()
	fit := func(x models.Matrix, epochs int) *autoencoder.Detector {
		d, err := autoencoder.New(aeConfig(epochs, 7))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Fit(ctx, x); err != nil {
			t.Fatal(err)
		}
		return d
	}
	local := 0.0
	for f := range factories {
		local += meanScore(t, fit(train[f], 60), all) / factories
	}
	central := meanScore(t, fit(concat(train...), 60), all)

	proto, _ := autoencoder.New(aeConfig(1, 7))
	if err := proto.Fit(ctx, train[0]); err != nil { // only to learn the layout
		t.Fatal(err)
	}
	e := newEnv(t, factories, false)
	fc := fedConfig(factories, proto.Architecture().Params)
	fc.Architecture = proto.Architecture()
	fc.Rounds = rounds
	h := startHub(t, e.hub, fc)
	for f := range factories {
		e.gateway(t, f, &aeWarmTrainer{data: train[f], cfg: aeConfig(10, uint64(10*f))})
	}
	var last federation.RoundReport
	for range rounds {
		last = h.next(t)
	}
	g, err := federation.FetchModel(ctx, e.hub, fedName, last.Model, hubKey().Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	fed, _ := autoencoder.New(aeConfig(1, 7))
	if err := fed.SetParams(g.Params); err != nil {
		t.Fatal(err)
	}
	federated := meanScore(t, fed, all)
	t.Logf("mean reconstruction error on all factories' held-out rows: local-only %.4f, central %.4f, federated (%d rounds × 10 epochs) %.4f",
		local, central, rounds, federated)
	if math.IsNaN(federated) || federated >= local {
		t.Fatalf("federated %.4f is not better than the average local-only model %.4f", federated, local)
	}
	if federated > 1.25*central {
		t.Fatalf("federated %.4f is more than 1.25 × the central model's %.4f", federated, central)
	}
}
