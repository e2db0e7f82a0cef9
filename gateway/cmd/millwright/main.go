// Command millwright is the industrial IoT edge gateway: one binary with a subcommand per user.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"gopkg.in/yaml.v3"

	"github.com/millwright-io/millwright/gateway"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `millwright: industrial IoT edge gateway

Usage:
  millwright run --config FILE         run the gateway
  millwright config check FILE...      check configuration files (a gateway's or a hub's), reporting every problem
  millwright demo [flags]              a simulated plant end to end: ingest, training, an alarm, lineage
  millwright audit COMMAND ARG ...     lineage, verify, report, export: audit a model from the ledger
  millwright models train|eval ...     train a machine's model by hand; run a benchmark protocol
  millwright models subscribe|pull ... follow or download a federation's global models (OEMs)
  millwright models approve|release ...
                                       sign off a model version in the ledger: a person's approval, its release
  millwright hub --config FILE         run a federation hub (NATS JetStream, aggregation, signed models)
  millwright hub passwd < FILE         print the bcrypt hash of a factory's NATS password (first line of stdin)
  millwright hub permissions ...       print the NATS users and permissions of a hub on a NATS server of its own
  millwright version                   print the version

Run 'millwright COMMAND -h' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns the process exit code: 0 success, 1 failure, 2 usage.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stdout, stderr)
	case "config":
		if len(args) < 2 || args[1] != "check" {
			fmt.Fprint(stderr, "usage: millwright config check FILE...\n")
			return 2
		}
		return cmdConfigCheck(args[2:], stdout, stderr)
	case "models":
		return cmdModels(ctx, args[1:], stdout, stderr)
	case "audit":
		return cmdAudit(ctx, args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(ctx, args[1:], stdout, stderr)
	case "hub":
		return cmdHub(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "millwright %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "millwright: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

const runUsage = `usage: millwright run [--config FILE]

Runs the gateway of the configuration until interrupted (SIGINT or SIGTERM).

Flags:
`

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("config", "/etc/millwright/gateway.yaml", "configuration file")
	if code, ok := parseOnlyFlags(fs, runUsage, args, stdout, stderr); !ok {
		return code
	}
	cfg, err := gateway.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "millwright: invalid configuration %s\n", err)
		return 1
	}
	log := newLogger(stderr, cfg.Gateway.Log)
	log.Info("starting", "version", buildVersion(), "config", *path)
	g, err := gateway.New(cfg, log)
	if err != nil {
		log.Error("cannot build the gateway", "err", err)
		return 1
	}
	if err := g.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("gateway failed", "err", err)
		return 1
	}
	return 0
}

func cmdConfigCheck(files []string, stdout, stderr io.Writer) int {
	if len(files) == 0 {
		fmt.Fprint(stderr, "usage: millwright config check FILE...\n")
		return 2
	}
	code := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(stderr, "read configuration: %v\n", err)
			code = 1
			continue
		}
		if isHubConfig(data) {
			cfg, err := parseHubConfig(data)
			if err != nil {
				fmt.Fprintf(stderr, "%s:\n%v\n", f, err)
				code = 1
				continue
			}
			var names []string
			for _, fc := range cfg.Federations {
				names = append(names, fc.Name)
			}
			fmt.Fprintf(stdout, "%s: ok (hub, %d federation(s): %s)\n", f, len(names), strings.Join(names, ", "))
			continue
		}
		cfg, err := gateway.Parse(data)
		if err != nil {
			fmt.Fprintf(stderr, "%s:\n%v\n", f, err)
			code = 1
			continue
		}
		fmt.Fprintf(stdout, "%s: ok (factory %s, %d source(s), %d sink(s))\n", f, cfg.Gateway.Factory, len(cfg.Sources), len(cfg.Sinks))
	}
	return code
}

// isHubConfig reports whether data is a hub's configuration (millwright hub --config): its
// top level has federations, which a gateway's has not (it has federation). Anything that
// is not YAML is left to the gateway's decoder to report.
func isHubConfig(data []byte) bool {
	var top map[string]yaml.Node
	if yaml.Unmarshal(data, &top) != nil {
		return false
	}
	_, ok := top["federations"]
	return ok
}

func newLogger(w io.Writer, c gateway.LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
