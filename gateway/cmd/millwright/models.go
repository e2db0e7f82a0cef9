package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/millwright-io/millwright/models/eval"
	"github.com/millwright-io/millwright/models/rul"
)

const modelsUsage = `usage: millwright models COMMAND [flags]

Commands:
  train --config FILE --machine ID   train one machine's model from its history in InfluxDB
  eval --dataset skab|nab|cmapss --dir DIR [flags]
                                     run a benchmark's published protocol and print its table
  subscribe --federation F --hub-key HEX [flags]
                                     follow a federation: write each new global model once its hash,
                                     the hub's signature and (with --ledger or --fabric) its lineage check
                                     pass; with --channel C, only the versions released on C
  pull --hub-key HEX [flags] F@VERSION
                                     write one global model of a federation (VERSION: rN or latest),
                                     checked the same way
  approve MODEL@VERSION --reason TEXT [--reject] --key FILE --name NAME (--ledger DIR | --fabric FILE)
                                     record a person's approval (or rejection) of a version in the ledger
  release MODEL@VERSION --channel NAME --key FILE --name NAME (--ledger DIR | --fabric FILE)
                                     record its release on a channel; the latest decision must approve it
  restore F@VERSION --file FILE --hub URL
                                     hand the hub back the model of a signed-off version that it deleted

Run 'millwright models COMMAND -h' for a command's flags.
`

func cmdModels(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, modelsUsage)
		return 2
	}
	switch args[0] {
	case "train":
		return cmdModelsTrain(ctx, args[1:], stdout, stderr)
	case "eval":
		return cmdModelsEval(ctx, args[1:], stdout, stderr)
	case "subscribe":
		return cmdModelsSubscribe(ctx, args[1:], stdout, stderr)
	case "pull":
		return cmdModelsPull(ctx, args[1:], stdout, stderr)
	case "approve":
		return cmdModelsApprove(ctx, args[1:], stdout, stderr)
	case "release":
		return cmdModelsRelease(ctx, args[1:], stdout, stderr)
	case "restore":
		return cmdModelsRestore(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, modelsUsage)
		return 0
	}
	fmt.Fprintf(stderr, "millwright models: unknown command %q, expected train, eval, subscribe, pull, approve, release or restore\n\n%s", args[0], modelsUsage)
	return 2
}

const evalUsage = `usage: millwright models eval --dataset skab|nab|cmapss --dir DIR [flags]

Runs a benchmark's published protocol on DIR and prints a table next to the published numbers.
  skab    DIR holds SKAB's *.csv files (searched recursively; files without labels are skipped).
          Per file the detector, scaler and threshold learn from the first 400 rows and predict
          the rest; point-wise F1/FAR/MAR over all test rows and the changepoint (NAB-style)
          score with 60 s windows right of each changepoint, three profiles.
  nab     DIR is laid out like the NAB repository: data/**/*.csv and labels/combined_windows.json.
          Per file the detector learns from the probationary 15 %%; NAB's windows, scaled
          sigmoid, three profiles, normalized against the null and perfect detectors.
  cmapss  DIR holds train_SUBSET.txt, test_SUBSET.txt and RUL_SUBSET.txt. The RUL regressor
          learns from the training engines; RMSE and the PHM08 score at each test engine's last
          cycle, RUL capped at 125.

Flags:
`

func cmdModelsEval(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("models eval", flag.ContinueOnError)
	dataset := fs.String("dataset", "", "benchmark format: skab, nab or cmapss (required)")
	dir := fs.String("dir", "", "directory holding the benchmark's files (required)")
	detector := fs.String("detector", "pca", "anomaly detector for skab and nab: "+strings.Join(eval.Setups(), ", "))
	subset := fs.String("subset", "FD001", "C-MAPSS subset (FD001 … FD004); FD002 and FD004 normalize per operating condition")
	model := fs.String("model", rul.ModelMLP, "C-MAPSS regressor: mlp or ridge")
	seed := fs.Uint64("seed", 1, "C-MAPSS regressor seed")
	perFile := fs.Bool("per-file", false, "skab: also print each file's confusion counts")
	window := fs.Int("window", 0, "skab, nab: rows per detector window (0: the detector setup's)")
	factor := fs.Float64("threshold-factor", 0, "skab, nab: multiplier of the fitted threshold (0: the detector setup's)")
	tuneOn := fs.String("tune-on", "", "skab: choose window, threshold factor and alarm on these experiment folders (comma-separated, e.g. valve1) and report on the rest, or \""+eval.TuneLOGO+"\" to hold out each folder in turn")
	if code, ok := parseOnlyFlags(fs, evalUsage, args, stdout, stderr); !ok {
		return code
	}
	var problems []string
	switch *dataset {
	case "skab", "nab", "cmapss":
	case "":
		problems = append(problems, "--dataset is required: skab, nab or cmapss")
	default:
		problems = append(problems, fmt.Sprintf("--dataset %q is not known; expected skab, nab or cmapss", *dataset))
	}
	if *dir == "" {
		problems = append(problems, "--dir is required")
	}
	setup, err := eval.LookupSetup(*detector)
	if err != nil {
		problems = append(problems, "--"+err.Error())
	}
	if *window < 0 {
		problems = append(problems, fmt.Sprintf("--window %d is negative; expected 0 (the setup's) or a row count", *window))
	} else if *window > 0 {
		setup.Window = *window
		setup.Description += fmt.Sprintf("; window overridden to %d rows", *window)
	}
	if *factor < 0 {
		problems = append(problems, fmt.Sprintf("--threshold-factor %v is negative; expected 0 (the setup's) or a positive multiplier", *factor))
	} else if *factor > 0 {
		setup.ThresholdFactor = *factor
		setup.Description += fmt.Sprintf("; threshold factor overridden to %v", *factor)
	}
	if *tuneOn != "" && *dataset != "skab" {
		problems = append(problems, fmt.Sprintf("--tune-on is for --dataset skab, not %q", *dataset))
	}
	// Conditions stays 0 so that RunCMAPSS picks it from the subset; a copy is validated.
	rc := rul.Config{Model: *model, Seed: *seed}
	check := rc
	check.SetDefaults()
	if err := check.Validate(); err != nil {
		problems = append(problems, "--"+err.Error())
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(stderr, "millwright models eval: %s\n", p)
		}
		fmt.Fprintln(stderr, "run 'millwright models eval -h' for the flags")
		return 2
	}
	if *tuneOn != "" {
		files, err := eval.ReadSKABDir(*dir)
		if err == nil {
			var res *eval.SKABTuneResult
			if res, err = eval.TuneSKAB(ctx, files, setup, eval.DefaultSKABGrid(), *tuneOn); err == nil {
				err = eval.PrintSKABTune(stdout, res, setup, *dir)
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "millwright models eval: %v\n", err)
			return 1
		}
		return 0
	}
	if err := runEval(ctx, *dataset, *dir, setup, *subset, rc, *perFile, stdout); err != nil {
		fmt.Fprintf(stderr, "millwright models eval: %v\n", err)
		return 1
	}
	return 0
}

func runEval(ctx context.Context, dataset, dir string, setup eval.Setup, subset string, rc rul.Config, perFile bool, stdout io.Writer) error {
	switch dataset {
	case "skab":
		files, err := eval.ReadSKABDir(dir)
		if err != nil {
			return err
		}
		res, err := eval.RunSKAB(ctx, files, setup.SKABConfig(), setup.New)
		if err != nil {
			return err
		}
		if err := eval.PrintSKAB(stdout, res, setup, dir); err != nil {
			return err
		}
		if perFile {
			fmt.Fprintln(stdout)
			for _, f := range res.Files {
				c := f.Confusion
				fmt.Fprintf(stdout, "%-20s threshold %10.4g  TP %4d  TN %4d  FP %4d  FN %4d\n", f.Name, f.Threshold, c.TP, c.TN, c.FP, c.FN)
			}
		}
		return nil
	case "nab":
		files, err := eval.ReadNABDir(dir)
		if err != nil {
			return err
		}
		res, err := eval.RunNAB(ctx, files, setup)
		if err != nil {
			return err
		}
		return eval.PrintNAB(stdout, res, setup, dir)
	default:
		d, err := eval.ReadCMAPSSDir(dir, strings.ToUpper(subset))
		if err != nil {
			return err
		}
		res, err := eval.RunCMAPSS(ctx, d, rc)
		if err != nil {
			return err
		}
		return eval.PrintCMAPSS(stdout, res, dir)
	}
}
