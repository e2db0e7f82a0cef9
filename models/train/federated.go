package train

import (
	"context"
	"errors"
	"fmt"

	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/store"
)

// WarmStart makes a training continue a Parametric model (a federation's global model)
// instead of starting from a fresh initialisation.
type WarmStart struct {
	// Architecture is the global model's layout; only the autoencoder is Parametric here.
	Architecture models.Architecture
	// Params is the global parameter vector (not modified).
	Params []float32
	// ProxMu is FedProx's μ: the local loss adds μ·‖w − Params‖².
	ProxMu float64
	// From names the starting model in the artifact and its lineage record, such as
	// "pumps@r12".
	From string
}

// ErrArchitecture is returned (wrapped) by TrainFrom when the machine's features do not
// fit the warm start's architecture.
var ErrArchitecture = errors.New("the machine's features do not match the model architecture")

// TrainFrom is Train continuing from start: the same history, features, threshold,
// validation against the current model, artifact store and lineage records, but the
// detector is the autoencoder of start's architecture with start's parameters, fitted
// further on this machine's windows. The fitted parameters are
// Result.Model.Detector.(models.Parametric).Params().
//
// Like Run's trainings, it trains on an OS thread of its own whose nice value is
// Config.Nice (the thread ends with it), so a federated round yields to ingest as the
// scheduled trainings do; it waits for a running training first (see Trainer).
func (t *Trainer) TrainFrom(ctx context.Context, machine string, start WarmStart, progress func(Progress)) (*Result, error) {
	var (
		res *Result
		err error
	)
	t.lowPriority(machine, func() { res, err = t.observe(ctx, machine, progress, &start) })
	return res, err
}

// EvaluateFrom judges start's model on machine's data without training from it, exactly
// as TrainFrom judges its warm start (Result.Start): the history a training reads, the
// scaler fitted on its fitting part, a threshold set on the first half of the held-out
// data and the model judged on the second. It records and installs nothing. Like
// TrainFrom it runs at Config.Nice, after any running training of the machine.
func (t *Trainer) EvaluateFrom(ctx context.Context, machine string, start WarmStart) (Quality, error) {
	var (
		q   Quality
		err error
	)
	t.lowPriority(machine, func() {
		var release func()
		if release, err = t.acquire(ctx, machine, KindFederated); err != nil {
			return
		}
		defer release()
		var hist *History
		if hist, err = t.history(ctx, machine, nil); err != nil {
			return
		}
		var p *prepared
		if p, err = t.prepare(hist, nil); err != nil {
			return
		}
		art := &store.Artifact{Machine: machine, Features: t.cfg.Features, Scaler: *p.prep.Scaler, Dropped: p.prep.Dropped}
		q, err = t.judgeStart(&Model{Machine: machine, Artifact: art}, &start, len(p.prep.Scaler.Signals), p.prep.Windows.Cols, p.calib, p.judge)
		if err != nil {
			err = fmt.Errorf("evaluate %s on %s: %w", start.From, machine, err)
		}
	})
	return q, err
}

// lowPriority runs fn on an OS thread of its own whose nice value is Config.Nice (the
// thread ends with it), so federated work yields to ingest.
func (t *Trainer) lowPriority(machine string, fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		release, perr := lowerPriority(t.cfg.Nice)
		defer release()
		if perr != nil {
			t.log.Debug("federated work runs at normal priority", "machine", machine, "err", perr)
		}
		fn()
	}()
	<-done
}

// detector returns the unfitted detector of a training on windows of cols columns built
// from signals signals: the configured one, or the warm start's.
func (t *Trainer) detector(signals, cols int, start *WarmStart) (models.Detector, error) {
	if start == nil {
		return newDetector(t.cfg, signals)
	}
	a := start.Architecture
	if a.Kind != autoencoder.Kind {
		return nil, fmt.Errorf("warm start from %s: detector kind %q; expected %q", start.From, a.Kind, autoencoder.Kind)
	}
	if a.Inputs != cols {
		return nil, fmt.Errorf("warm start from %s: the windows have %d features, the model %d inputs: %w", start.From, cols, a.Inputs, ErrArchitecture)
	}
	ac := t.cfg.Autoencoder
	ac.Seed = t.cfg.Seed
	ac.Inputs, ac.Layers, ac.Activation, ac.Kernel, ac.Signals = a.Inputs, a.Layers, a.Activation, a.Kernel, a.Channels
	ac.ProxMu = start.ProxMu
	d, err := autoencoder.New(ac)
	if err != nil {
		return nil, fmt.Errorf("warm start from %s: %w", start.From, err)
	}
	if got := d.Architecture(); !got.Equal(a) {
		return nil, fmt.Errorf("warm start from %s: the configured autoencoder has layout %+v, the model %+v: %w", start.From, got, a, ErrArchitecture)
	}
	if err := d.SetParams(start.Params); err != nil {
		return nil, fmt.Errorf("warm start from %s: %w", start.From, err)
	}
	return d, nil
}
