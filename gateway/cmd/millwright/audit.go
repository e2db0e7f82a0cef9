package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/fabric"
	"github.com/millwright-io/millwright/ledger/local"
	"github.com/millwright-io/millwright/models/store"
)

const auditUsage = `usage: millwright audit COMMAND ARG (--ledger DIR | --fabric FILE [--org ORG]) [--keys FILE] [flags]

Commands:
  lineage MODEL@VERSION                       the provenance DAG of a model version, down to the dataset snapshots
  verify FILE                                 is FILE a model version the ledger attests? (hash, signatures, chain)
  report MODEL@VERSION --format md|html|json  the evidence pack, mapped to EU AI Act articles
  export MODEL@VERSION --format prov|openlineage
                                              the lineage as W3C PROV-JSON or OpenLineage 2-0-2 run events (JSON Lines)

Flags:
  --ledger DIR   directory of the local ledger (holding ledger.jsonl)
  --fabric FILE  read the Fabric ledger instead: FILE is a client config (YAML: endpoint,
                 tls_ca, msp_id, cert, key, channel, chaincode) or the env file
                 deploy/fabric/network.sh writes (.fabric/env), with --org choosing the
                 organisation whose client identity is used (default auditor)
  --org ORG      organisation of the --fabric env file (default auditor)
  --keys FILE    trusted keys, one "NAME ORG BASE64-ED25519-PUBLIC-KEY [records=TYPE,...]
                 [channels=NAME,...] [models=NAME,...] [revoked=RFC3339]" per line
                 (# comments); verify and report check every signature against it and
                 report an unknown signer, a record of a type (a release on a channel, a
                 sign-off of a model) its key may not sign, or a key used after its
                 revocation; required by verify, optional for report
  --format F     report or export format
  --out FILE     write the report or export to FILE instead of standard output
  --four-eyes    verify: a release signed by the key of the approval it rests on (the
                 approver releasing it too) fails verification

Exit status: 0 ok (verified), 1 verification failed or not found, 2 usage.
`

// maxKeyringFile bounds the keyring file the command reads.
const maxKeyringFile = 1 << 20

// auditFlags are the flags of every audit command.
type auditFlags struct {
	ledger, fabric, org, keys, format, out string
	fourEyes                               bool
}

func cmdAudit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return 2
	}
	sub := args[0]
	switch sub {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, auditUsage)
		return 0
	case "lineage", "verify", "report", "export":
	default:
		fmt.Fprintf(stderr, "millwright audit: unknown command %q, expected lineage, verify, report or export\n\n%s", sub, auditUsage)
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "millwright audit %s: %s\n\n%s", sub, fmt.Sprintf(format, a...), auditUsage)
		return 2
	}
	fs := flag.NewFlagSet("audit "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f auditFlags
	fs.StringVar(&f.ledger, "ledger", "", "local ledger directory")
	fs.StringVar(&f.fabric, "fabric", "", "Fabric client config or env file")
	fs.StringVar(&f.org, "org", "auditor", "organisation of the Fabric env file")
	fs.StringVar(&f.keys, "keys", "", "keyring file")
	fs.StringVar(&f.format, "format", "", "output format")
	fs.StringVar(&f.out, "out", "", "output file")
	fs.BoolVar(&f.fourEyes, "four-eyes", false, "verify: a release by the approver fails")
	pos, err := parseInterspersed(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, auditUsage)
		return 0
	}
	if err != nil {
		return usageErr("%v", err)
	}
	argName := map[string]string{"lineage": "MODEL@VERSION", "verify": "FILE", "report": "MODEL@VERSION", "export": "MODEL@VERSION"}[sub]
	if len(pos) != 1 {
		return usageErr("%d arguments %q, expected one %s", len(pos), pos, argName)
	}
	if (f.ledger == "") == (f.fabric == "") {
		return usageErr("one of --ledger DIR (the local ledger directory) or --fabric FILE (a Fabric client config or env file) is required")
	}
	var formats []string
	switch sub {
	case "report":
		formats = audit.ReportFormats
	case "export":
		formats = audit.ExportFormats
	}
	if formats != nil && !slices.Contains(formats, f.format) {
		if f.format == "" {
			return usageErr("--format is required, expected one of %s", strings.Join(formats, ", "))
		}
		return usageErr("--format %q is not supported, expected one of %s", f.format, strings.Join(formats, ", "))
	}
	if formats == nil && (f.format != "" || f.out != "") {
		return usageErr("--format and --out are for report and export")
	}
	if f.fourEyes && sub != "verify" {
		return usageErr("--four-eyes is for verify")
	}
	if sub == "verify" && f.keys == "" {
		return usageErr("--keys FILE is required: signatures are verified against the keys it lists")
	}
	var ref ledger.ModelRef
	if argName == "MODEL@VERSION" {
		if ref, err = audit.ParseModelRef(pos[0]); err != nil {
			return usageErr("%v", err)
		}
	}

	fail := func(err error) int {
		fmt.Fprintf(stderr, "millwright audit %s: %v\n", sub, err)
		return 1
	}
	opts := audit.Options{Now: time.Now, FourEyes: f.fourEyes}
	if f.keys != "" {
		if opts.Keys, err = loadKeyring(f.keys); err != nil {
			return fail(err)
		}
	}
	var l auditLedger
	if f.fabric != "" {
		// The channel's integrity is the network's (endorsement, ordering): no chain to walk.
		l, err = openFabric(f.fabric, f.org)
	} else {
		opts.Chain = audit.LocalChain(f.ledger)
		l, err = openLedger(f.ledger)
	}
	if err != nil {
		if errors.Is(err, local.ErrTampered) {
			fmt.Fprintf(stdout, "NOT VERIFIED: the ledger fails verification: %v\n", err)
			return 1
		}
		return fail(err)
	}
	defer l.Close()

	switch sub {
	case "lineage":
		tree, err := audit.Lineage(ctx, l, ref)
		if err != nil {
			return fail(err)
		}
		if err := tree.WriteText(stdout); err != nil {
			return fail(err)
		}
		return 0
	case "verify":
		opts.Digest = artifactDigest
		res, err := audit.VerifyArtifact(ctx, l, pos[0], opts)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, res.Verdict)
		for _, c := range res.Checked {
			status := "ok  "
			if c.Err != nil {
				status = "FAIL"
			}
			h := c.Record.Header
			fmt.Fprintf(stdout, "  %s %-16s %s %s by %s (%s)\n", status, h.Type, h.ID, h.Time.Format(time.RFC3339), h.Actor.Name, h.Actor.Org)
		}
		for _, p := range res.Problems {
			fmt.Fprintf(stdout, "  problem: %s\n", p)
		}
		if !res.OK {
			return 1
		}
		return 0
	}
	var out []byte
	if sub == "report" {
		out, err = audit.Report(ctx, l, ref, f.format, opts)
	} else {
		out, err = audit.Export(ctx, l, ref, f.format)
	}
	if err != nil {
		return fail(err)
	}
	if f.out == "" {
		_, err = stdout.Write(out)
	} else if err = os.WriteFile(f.out, out, 0o644); err == nil {
		fmt.Fprintf(stderr, "millwright audit %s: wrote %s (%d bytes)\n", sub, f.out, len(out))
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

// auditLedger is a ledger backend the audit reads: the local ledger or a Fabric client.
type auditLedger interface {
	ledger.Querier
	Close() error
}

// openFabric opens a Fabric client from a YAML client config or, for any other file, from
// the env file deploy/fabric/network.sh writes, as organisation org.
func openFabric(path, org string, opts ...fabric.Option) (*fabric.Client, error) {
	cfg, err := fabricConfig(path, org)
	if err != nil {
		return nil, err
	}
	return fabric.Open(cfg, opts...)
}

// fabricConfig reads the Fabric client configuration path names: a client config (YAML)
// or the env file deploy/fabric/network.sh writes, with org choosing its organisation.
func fabricConfig(path, org string) (fabric.Config, error) {
	var cfg fabric.Config
	if ext := filepath.Ext(path); ext == ".yaml" || ext == ".yml" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("--fabric: %w", err)
		}
		if cfg, err = fabric.LoadConfig(b); err != nil {
			return cfg, fmt.Errorf("--fabric %s: %w", path, err)
		}
		return cfg, nil
	}
	env, err := fabric.ParseEnvFile(path)
	if err != nil {
		return cfg, fmt.Errorf("--fabric: %w", err)
	}
	if cfg, err = fabric.ConfigFromEnv(org, func(k string) string { return env[k] }); err != nil {
		return cfg, fmt.Errorf("--fabric %s --org %s: %w", path, org, err)
	}
	return cfg, nil
}

// openLedger opens an existing local ledger; unlike local.Open it does not create one
// where there is none, since an auditor's typo should not look like an empty ledger.
func openLedger(dir string) (*local.Ledger, error) {
	path := filepath.Join(dir, local.FileName)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("--ledger %s: expected a local ledger directory holding %s: %w", dir, local.FileName, err)
	}
	return local.Open(dir, local.ReadOnly())
}

// signerKey is a person who signs records, and the file of their key.
// signerKey is a person's name, key file and, when set, the only record types the
// keyring lets the key sign and the only channels it may release on.
type signerKey struct {
	name, file       string
	records          []ledger.Type // the keyring line's records=, channels= and models= (none: any)
	channels, models []string
}

// addKeys writes to the keyring file dst the keyring base (a file) followed by the line of
// each person's key, of organisation org, read from their key file.
func addKeys(dst, base, org string, people ...signerKey) error {
	b, err := os.ReadFile(base)
	if err != nil {
		return err
	}
	for _, p := range people {
		k, err := ledger.LoadKey(p.file)
		if err != nil {
			return err
		}
		b = append(b, audit.FormatKey(audit.Key{Name: p.name, Org: org, Public: k.Public().(ed25519.PublicKey), Records: p.records, Channels: p.channels, Models: p.models})+"\n"...)
	}
	return os.WriteFile(dst, b, 0o644)
}

func loadKeyring(path string) (*audit.Keyring, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--keys: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxKeyringFile+1))
	if err != nil {
		return nil, fmt.Errorf("--keys %s: %w", path, err)
	}
	if len(b) > maxKeyringFile {
		return nil, fmt.Errorf("--keys %s: larger than %d bytes, expected a keyring file", path, maxKeyringFile)
	}
	k, err := audit.ParseKeyring(b)
	if err != nil {
		return nil, fmt.Errorf("--keys %s: %w", path, err)
	}
	return k, nil
}

// artifactDigest is the identity the ledger's records give an artifact file: for a model
// file of the gateway's store, the SHA-256 of its artifact body, checked by loading the file
// (a damaged model file is an error, not a different hash); for any other file, the
// SHA-256 of its bytes.
func artifactDigest(path string) (string, error) {
	if !store.IsModelFile(path) {
		return audit.HashFile(path)
	}
	m, err := store.LoadFile(path)
	if err != nil {
		return "", err
	}
	return m.ID, nil
}
