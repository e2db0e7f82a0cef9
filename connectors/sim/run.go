package sim

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Publisher sends one message. connectors/mqtt's Publisher implements it: Publish blocks
// while its window of unacknowledged messages is full and returns ctx's error if ctx ends
// first; done, when not nil, is called exactly once, from any goroutine, with nil once the
// message is delivered or with the error. Publish must not keep payload after done is
// called.
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte, done func(error)) error
}

// RunOptions configure a Runner.
type RunOptions struct {
	// Topic names the topic of a sample; required. For example
	//
	//	func(s sim.Sample) string { return "plant/" + s.Line + "/" + s.Machine + "/telemetry" }
	Topic func(Sample) string
	// Interval between steps (default the plant's Interval). The Runner steps at most once
	// per interval: a slow publisher delays the next steps, it never makes them bunch up
	// beyond the interval's rate.
	Interval time.Duration
	// Start is the time of the first sample (default the wall clock when Run starts); step n
	// is at Start + n*Interval, so the samples do not depend on scheduling jitter.
	Start time.Time
	// Steps stops the Runner after that many steps (0: until ctx ends).
	Steps int
}

// Stats counts what a Runner did. Published counts messages handed to the publisher;
// Delivered and Failed count those the publisher settled, so Published - Delivered - Failed
// are still in flight.
type Stats struct {
	Steps     int64
	Published int64
	Delivered int64
	Failed    int64
}

// Runner publishes every machine's sample of a plant, once per interval, as JSON objects of
// signals (see Sample.AppendJSON).
type Runner struct {
	plant *Plant
	pub   Publisher
	opts  RunOptions

	counts
}

// NewRunner checks opts and returns a Runner. It does no I/O.
func NewRunner(plant *Plant, pub Publisher, opts RunOptions) (*Runner, error) {
	switch {
	case plant == nil:
		return nil, errors.New("simulated plant runner: no plant")
	case pub == nil:
		return nil, errors.New("simulated plant runner: no publisher")
	case opts.Topic == nil:
		return nil, errors.New("simulated plant runner: no topic function")
	case opts.Interval < 0:
		return nil, fmt.Errorf("simulated plant runner: interval %s is negative; expected 0 (the plant's) or more", opts.Interval)
	case opts.Steps < 0:
		return nil, fmt.Errorf("simulated plant runner: steps %d is negative; expected 0 (no limit) or more", opts.Steps)
	}
	if opts.Interval == 0 {
		opts.Interval = plant.cfg.Interval
	}
	return &Runner{plant: plant, pub: pub, opts: opts}, nil
}

// Run steps the plant and publishes its samples until ctx ends (it then returns nil) or
// Steps steps are published (it returns nil without waiting for the deliveries: flush the
// publisher for that). It returns an error only when the publisher fails in another way than
// by ctx ending. Run must not be called concurrently with itself.
func (r *Runner) Run(ctx context.Context) error {
	start := r.opts.Start
	if start.IsZero() {
		start = time.Now()
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop() // armed by Reset below; since Go 1.23 a stopped timer needs no draining
	for n := 0; r.opts.Steps == 0 || n < r.opts.Steps; n++ {
		at := start.Add(time.Duration(n) * r.opts.Interval)
		if wait := time.Until(at); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return nil
		}
		for _, s := range r.plant.Step(at) {
			// paho keeps the payload until the message is settled: one buffer per message.
			payload := s.AppendJSON(make([]byte, 0, 160))
			if err := r.pub.Publish(ctx, r.opts.Topic(s), payload, r.settle); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("simulated plant: publish %s: %w", s.Machine, err)
			}
			r.published.Add(1)
		}
		r.steps.Add(1)
	}
	return nil
}

// counts are a runner's Stats.
type counts struct {
	steps, published, delivered, failed atomic.Int64
}

// settle is the done callback of a publish.
func (c *counts) settle(err error) {
	if err != nil {
		c.failed.Add(1)
	} else {
		c.delivered.Add(1)
	}
}

// Stats returns the counts so far. It is safe to call while Run runs.
func (c *counts) Stats() Stats {
	return Stats{Steps: c.steps.Load(), Published: c.published.Load(), Delivered: c.delivered.Load(), Failed: c.failed.Load()}
}
