package autoencoder

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/millwright-io/millwright/models"
)

// Adam's constants.
const (
	adamBeta1 = 0.9
	adamBeta2 = 0.999
	adamEps   = 1e-8
	// minImprovement is the relative decrease of the validation loss that counts as progress.
	minImprovement = 1e-4
)

// trainer holds the buffers of one Fit; it runs on the calling goroutine only.
type trainer struct {
	d      *Detector
	w      []float64 // current weights
	grad   []float64
	m, v   []float64
	start  []float64 // w_start for the proximal term; nil without one
	acts   [][]float64
	deltas [][]float64
	step   int
	huber  float64 // δ of the huber loss; 0 for mse
}

// Fit trains the network on train's rows. When parameters were set before (SetParams, or an
// earlier Fit on the same width), training continues from them; otherwise it starts from a
// seeded Glorot (tanh) or He (relu) initialisation. It runs on the calling goroutine only.
// On error (including ctx's) the detector is unchanged.
func (d *Detector) Fit(ctx context.Context, train models.Matrix) error {
	if err := train.Check(2); err != nil {
		return fmt.Errorf("autoencoder: fit: %w", err)
	}
	if err := models.CheckFinite("train", train.Data); err != nil {
		return fmt.Errorf("autoencoder: fit: %w", err)
	}
	if d.cfg.Inputs > 0 && train.Cols != d.cfg.Inputs {
		return fmt.Errorf("autoencoder: fit: train has %d columns; the configuration says %d inputs", train.Cols, d.cfg.Inputs)
	}
	work := &Detector{cfg: d.cfg}
	if err := work.setShape(train.Cols); err != nil {
		return fmt.Errorf("autoencoder: fit: %w", err)
	}
	rng := rand.New(rand.NewPCG(d.cfg.Seed, 0x6d696c6c77726967))
	t := &trainer{d: work}
	if d.cfg.Loss == LossHuber {
		t.huber = d.cfg.HuberDelta
	}
	warm := d.params != nil && d.arch.Equal(work.arch)
	if warm {
		t.w = slices.Clone(d.w)
		if d.cfg.ProxMu > 0 {
			t.start = slices.Clone(d.w)
		}
	} else {
		t.w = make([]float64, work.arch.Params)
		work.net.init(t.w, rng, train)
	}
	n := len(t.w)
	t.grad, t.m, t.v = make([]float64, n), make([]float64, n), make([]float64, n)
	t.acts, t.deltas = newActs(work.net), newActs(work.net)

	rows := train.Rows
	nVal := int(math.Floor(max(0, d.cfg.ValidationFraction) * float64(rows)))
	if rows-nVal < 1 {
		nVal = 0
	}
	nTrain := rows - nVal
	idx := make([]int, nTrain)
	for i := range idx {
		idx[i] = i
	}
	perEpoch := nTrain
	if d.cfg.MaxRows > 0 && perEpoch > d.cfg.MaxRows {
		perEpoch = d.cfg.MaxRows
	}
	val := train.Slice(nTrain, rows)
	if nVal == 0 {
		val = train.Slice(0, nTrain)
	}

	rep := Report{TrainRows: perEpoch, ValidationRows: nVal, WarmStart: warm}
	best := slices.Clone(t.w)
	bestLoss := t.loss(val)
	stale := 0
	for epoch := 1; epoch <= d.cfg.Epochs; epoch++ {
		rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		var sum float64
		for b := 0; b < perEpoch; b += d.cfg.BatchSize {
			if err := ctx.Err(); err != nil {
				return err
			}
			batch := idx[b:min(b+d.cfg.BatchSize, perEpoch)]
			sum += t.batch(train, batch)
		}
		rep.Epochs = epoch
		vl := t.loss(val)
		if math.IsNaN(vl) || math.IsInf(vl, 0) {
			break // diverged: keep the best weights so far
		}
		if vl < bestLoss*(1-minImprovement) || epoch == 1 && vl <= bestLoss {
			bestLoss, stale = vl, 0
			copy(best, t.w)
			rep.BestEpoch, rep.TrainLoss, rep.ValidationLoss = epoch, sum/float64(perEpoch), vl
		} else if stale++; stale >= d.cfg.Patience {
			break
		}
	}
	if rep.BestEpoch == 0 {
		rep.ValidationLoss = bestLoss
	}
	p := make([]float32, len(best))
	for i, v := range best {
		p[i] = float32(v)
	}
	work.install(p)
	work.report = rep
	work.cfg.Inputs = d.cfg.Inputs
	*d = *work
	return nil
}

// loss returns the mean over rows of the mean training loss (Config.Loss) of the
// reconstruction with the current weights.
func (t *trainer) loss(x models.Matrix) float64 {
	if x.Rows == 0 {
		return 0
	}
	var s float64
	for i := range x.Rows {
		row := x.Row(i)
		y := t.d.forward(t.w, row, t.acts)
		for j, v := range y {
			l, _ := t.elementLoss(v - row[j])
			s += l
		}
	}
	return s / float64(x.Rows*x.Cols)
}

// elementLoss returns the training loss of one reconstruction error e and its derivative
// divided by 2 (so that for mse it is e itself): e² and e, or with huber δ, beyond |e| > δ,
// 2δ|e| − δ² and δ·sign(e).
func (t *trainer) elementLoss(e float64) (loss, half float64) {
	if d := t.huber; d > 0 && math.Abs(e) > d {
		return 2*d*math.Abs(e) - d*d, math.Copysign(d, e)
	}
	return e * e, e
}

// batch takes one Adam step on the rows batch of x and returns the sum of their losses.
func (t *trainer) batch(x models.Matrix, batch []int) float64 {
	d := t.d
	clear(t.grad)
	L := len(t.deltas) - 1
	var total float64
	scale := 2 / float64(x.Cols*len(batch))
	for _, i := range batch {
		row := x.Row(i)
		y := d.forward(t.w, row, t.acts)
		dl := t.deltas[L]
		var s float64
		for j, v := range y {
			l, g := t.elementLoss(v - row[j])
			s += l
			dl[j] = scale * g
		}
		total += s / float64(x.Cols)
		d.net.backward(t.w, t.acts, t.deltas, t.grad)
	}
	if t.start != nil {
		mu2 := 2 * d.cfg.ProxMu
		for i, w := range t.w {
			t.grad[i] += mu2 * (w - t.start[i])
		}
	}
	t.step++
	lr := d.cfg.LearningRate * math.Sqrt(1-math.Pow(adamBeta2, float64(t.step))) / (1 - math.Pow(adamBeta1, float64(t.step)))
	for i, g := range t.grad {
		m := adamBeta1*t.m[i] + (1-adamBeta1)*g
		v := adamBeta2*t.v[i] + (1-adamBeta2)*g*g
		t.m[i], t.v[i] = m, v
		t.w[i] -= lr * m / (math.Sqrt(v) + adamEps)
	}
	return total
}
