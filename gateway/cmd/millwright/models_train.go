package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/millwright-io/millwright/gateway"
	"github.com/millwright-io/millwright/models/train"
)

const trainUsage = `usage: millwright models train --config FILE --machine ID

Trains one machine's model by hand from the history in the configuration's InfluxDB, and
installs it if it validates at least as well as the installed one.

Flags:
`

// cmdModelsTrain runs one training of one machine by hand (millwright models train), with a
// progress bar on stderr. It reads the history from the InfluxDB of the configuration and
// installs the model in the models directory if it validates at least as well as the one
// there. No ledger records are written: the ledger outbox belongs to the running gateway.
func cmdModelsTrain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("models train", flag.ContinueOnError)
	path := fs.String("config", "/etc/millwright/gateway.yaml", "configuration file")
	machine := fs.String("machine", "", "machine id to train (required)")
	if code, ok := parseOnlyFlags(fs, trainUsage, args, stdout, stderr); !ok {
		return code
	}
	if *machine == "" {
		fmt.Fprint(stderr, "millwright models train: --machine is required: the machine to train\n\n"+trainUsage)
		return 2
	}
	cfg, err := gateway.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "millwright: invalid configuration %s\n", err)
		return 1
	}
	log := newLogger(stderr, gateway.LogConfig{Level: "warn", Format: cfg.Gateway.Log.Format})
	tr, closeQ, err := gateway.Trainer(cfg, log, nil)
	if err != nil {
		fmt.Fprintf(stderr, "millwright: %v\n", err)
		return 1
	}
	defer closeQ()
	bar := &progressBar{w: stderr}
	res, err := tr.Train(ctx, *machine, bar.update)
	bar.finish()
	if err != nil {
		fmt.Fprintf(stderr, "millwright: training of %s failed: %v\n", *machine, err)
		return 1
	}
	m := res.Model
	fmt.Fprintf(stdout, "machine %s: model %s (%s) trained on %d rows, %d windows in %s\n", m.Machine, m.Version, m.Detector.Kind(), res.Rows, res.Windows, res.Duration.Round(1e6))
	fmt.Fprintf(stdout, "  threshold %.4g, held-out false-alarm rate %.4f, synthetic-fault detection %.3f, separation %.2f\n",
		m.Threshold, m.Metrics()["false_alarm_rate"], m.Metrics()["detection_rate"], m.Metrics()["separation"])
	if res.Swapped {
		fmt.Fprintf(stdout, "  installed in %s (sha256 %s): %s\n", cfg.Models.Dir, m.Hash, res.Reason)
	} else {
		fmt.Fprintf(stdout, "  not installed: %s\n", res.Reason)
	}
	return 0
}

// progressBar draws one line on a terminal: the stage and a bar of its share done.
type progressBar struct {
	w    io.Writer
	last string
}

func (p *progressBar) update(pr train.Progress) {
	const width = 30
	share := 1.0
	if pr.Total > 0 {
		share = float64(pr.Done) / float64(pr.Total)
	}
	n := int(share * width)
	line := fmt.Sprintf("\r%-8s [%s%s] %3.0f%%", pr.Stage, strings.Repeat("#", n), strings.Repeat(".", width-n), share*100)
	if pr.Stage == train.StageRead {
		line += fmt.Sprintf(" (%d/%d queries)", pr.Done, pr.Total)
	}
	if line != p.last {
		fmt.Fprint(p.w, line+"\033[K")
		p.last = line
	}
}

func (p *progressBar) finish() {
	if p.last != "" {
		fmt.Fprintln(p.w)
	}
}
