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
	"time"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/dirlock"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/fabric"
	"github.com/millwright-io/millwright/ledger/local"
	"github.com/millwright-io/millwright/ledger/signoff"
)

const approveUsage = `usage: millwright models approve MODEL@VERSION --reason TEXT [--reject] --key FILE --name NAME
         (--ledger DIR [--hub URL] | --fabric FILE) [flags]

Records a person's decision about a model version in the ledger: an approval, or with
--reject a rejection, with its reason, signed with the person's own key. The version must
have been produced by a record the ledger holds (a federated round or a local training);
the decision names that record's artifact hash. With --file, the artifact in hand must be
that artifact. The latest decision about a version is the one that stands: 'models release'
needs it to be an approval. A local ledger that a running hub writes takes the record
through the hub's HTTP API (--hub URL; the hub's signoff.keys must list the person's key).
With --hub and --file, an approval (or a release) also hands the hub the model file, which
it stores again if retention (keep_models) had deleted it, so subscribers can fetch it.

Flags:
`

const releaseUsage = `usage: millwright models release MODEL@VERSION --channel NAME [--notes TEXT] --key FILE --name NAME
         (--ledger DIR [--hub URL] | --fabric FILE) [flags]

Records that a person released a model version on a channel (such as stable), signed with
the person's own key. The latest decision about the version in the ledger must approve it
('models approve'), and be a second person's (four eyes): the approver may release it too
only with --sole-approver, which the records show ('audit verify --four-eyes' and 'models
subscribe --four-eyes' refuse such a release). 'millwright audit verify FILE' then names
the release.

Flags:
`

// signoffFlags are the flags approve and release share: who signs, and which ledger.
type signoffFlags struct {
	key, name, org, site, outbox string
	ledger, fabric, hub, file    string
	hubTLS                       config.TLS // of an https:// --hub
	wait                         time.Duration
}

func (f *signoffFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.key, "key", "", "the person's ed25519 key file; created (mode 0600) if missing, once the decision has passed its checks (required)")
	fs.StringVar(&f.name, "name", "", "the person's name, as the auditors' keyring lists it (required)")
	fs.StringVar(&f.org, "org", "oem", "the person's organisation; with --fabric, the organisation of the env file, whose MSP id the records carry")
	fs.StringVar(&f.site, "site", "", "the site the records are made at (default: the organisation)")
	fs.StringVar(&f.outbox, "outbox", "", "the person's ledger outbox directory, which keeps the chain of their records (default: KEY.outbox)")
	fs.StringVar(&f.ledger, "ledger", "", "the local ledger directory to record in (no other process may be writing it), or with --hub to read")
	fs.StringVar(&f.hub, "hub", "", "record through the HTTP API of the running hub that writes --ledger (its signoff.keys must list the person's key)")
	registerHubTLS(fs, &f.hubTLS)
	fs.StringVar(&f.fabric, "fabric", "", "record on Fabric: a client config or the .fabric/env file")
	fs.StringVar(&f.file, "file", "", "the artifact the person examined: it must be the version's")
	fs.DurationVar(&f.wait, "wait", time.Minute, "how long to wait for the ledger to take the record")
}

// registerHubTLS registers the flags of an https:// --hub's TLS settings into tc.
func registerHubTLS(fs *flag.FlagSet, tc *config.TLS) {
	fs.StringVar(&tc.CAFile, "hub-ca", "", "with an https:// --hub, the PEM CA bundle that signs the hub's certificate (default: the system's roots)")
	fs.StringVar(&tc.CertFile, "hub-cert", "", "with an https:// --hub whose http.tls has client_ca_file, the person's client certificate (PEM)")
	fs.StringVar(&tc.KeyFile, "hub-key", "", "the key of --hub-cert (PEM)")
}

func cmdModelsApprove(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f signoffFlags
	var reason string
	var reject bool
	return runSignoff(ctx, "approve", approveUsage, args, stdout, stderr, &f, func(fs *flag.FlagSet) {
		fs.StringVar(&reason, "reason", "", "what the decision rests on: acceptance criteria, evaluation, intended purpose (required)")
		fs.BoolVar(&reject, "reject", false, "record a rejection instead of an approval")
	}, func(v signoff.Version, file string, _ ed25519.PublicKey) (ledger.Body, string, error) {
		b, err := v.Approval(!reject, reason, file)
		return b, b.Decision, err
	})
}

func cmdModelsRelease(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f signoffFlags
	var channel, notes string
	var sole bool
	return runSignoff(ctx, "release", releaseUsage, args, stdout, stderr, &f, func(fs *flag.FlagSet) {
		fs.StringVar(&channel, "channel", "", "the channel the version is released on, such as stable (required)")
		fs.StringVar(&notes, "notes", "", "release notes")
		fs.BoolVar(&sole, "sole-approver", false, "the person who approved the version releases it too (no second person)")
	}, func(v signoff.Version, file string, key ed25519.PublicKey) (ledger.Body, string, error) {
		if channel == "" {
			return nil, "", errors.New("--channel is required: the channel the version is released on, such as stable")
		}
		if err := checkChannel(channel); err != nil {
			return nil, "", err
		}
		b, err := v.Release(signoff.ReleaseRequest{Channel: channel, Notes: notes, File: file, KeyID: ledger.KeyID(key), Sole: sole})
		if errors.Is(err, signoff.ErrSameApprover) {
			err = fmt.Errorf("%w; a second person releases it, or --sole-approver records that the approver did", err)
		}
		return b, "released on " + channel, err
	})
}

// runSignoff runs approve or release: it parses the shared flags and the command's own
// (extra), finds the version in the ledger, builds the body (build, given the artifact's
// digest and the person's public key, returns it and what was done), records it through the person's outbox and waits for the ledger to take it.
func runSignoff(ctx context.Context, cmd, usage string, args []string, stdout, stderr io.Writer, f *signoffFlags,
	extra func(*flag.FlagSet), build func(signoff.Version, string, ed25519.PublicKey) (ledger.Body, string, error)) int {
	fs := flag.NewFlagSet("models "+cmd, flag.ContinueOnError)
	f.register(fs)
	extra(fs)
	pos, printUsage, help, err := parseCommand(fs, usage, args, stdout)
	if help {
		return 0
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "millwright models %s: %s\n", cmd, fmt.Sprintf(format, a...))
		if code == 2 {
			fmt.Fprintln(stderr)
			printUsage(stderr)
		}
		return code
	}
	if err != nil {
		return fail(2, "%v", err)
	}
	if len(pos) != 1 {
		return fail(2, "%d arguments %q, expected one MODEL@VERSION", len(pos), pos)
	}
	ref, err := audit.ParseModelRef(pos[0])
	if err != nil {
		return fail(2, "%v", err)
	}
	switch {
	case f.key == "" || f.name == "":
		return fail(2, "--key FILE and --name NAME are required: the decision is signed by a person")
	case (f.ledger == "") == (f.fabric == ""):
		return fail(2, "one of --ledger DIR (a local ledger) or --fabric FILE (a Fabric client config or env file) is required")
	case f.hub != "" && f.ledger == "":
		return fail(2, "--hub URL needs --ledger DIR: the hub's local ledger, read to find the version")
	}
	if err := f.record(ctx, ref, build, stdout); err != nil {
		return fail(1, "%v", err)
	}
	return 0
}

// record finds ref in the ledger the flags name, builds the body and records it, signed by
// the person, and says so on stdout once the ledger has taken it.
func (f *signoffFlags) record(ctx context.Context, ref ledger.ModelRef, build func(signoff.Version, string, ed25519.PublicKey) (ledger.Body, string, error), stdout io.Writer) error {
	// A person without a key gets one, saved once the decision has passed its checks.
	key, err := ledger.LoadKey(f.key)
	created := errors.Is(err, os.ErrNotExist)
	if created {
		_, key, err = ed25519.GenerateKey(nil)
	}
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	org := f.org
	var cfg fabric.Config
	if f.fabric != "" {
		if cfg, err = fabricConfig(f.fabric, f.org); err != nil {
			return err
		}
		org = cfg.MSPID // the chaincode takes records whose actor org is the client's MSP id
	}
	signer, err := ledger.NewSigner(key, f.name, org)
	if err != nil {
		return fmt.Errorf("--name, --org: %w", err)
	}
	// The ledger the version is found in, and the backend the person's outbox anchors in:
	// one and the same, but for a hub's ledger, read here and written through the hub.
	var backend interface {
		ledger.Querier
		Close() error
	}
	var anchor ledger.Backend
	var hub *hubLedger
	where := "the Fabric channel " + cfg.Channel
	switch {
	case f.fabric != "":
		backend, err = fabric.Open(cfg, fabric.WithActors(signer))
	case f.hub != "":
		where = "the local ledger " + f.ledger + " through the hub " + f.hub
		if hub, err = newHubLedger(f.hub, f.hubTLS); err == nil {
			anchor = hub
			backend, err = openLedger(f.ledger)
		}
	default:
		where = "the local ledger " + f.ledger
		backend, err = openLedgerForWriting(f.ledger, signer)
	}
	if err != nil {
		return err
	}
	defer backend.Close()
	if anchor == nil {
		anchor = backend
	}

	v, err := signoff.Find(ctx, backend, ref)
	if err != nil {
		return err
	}
	// The evidence the decision rests on: the version's evaluations.
	for _, rec := range v.About {
		if b, err := rec.DecodeBody(); err == nil {
			if ev, ok := b.(ledger.Evaluation); ok {
				verdict := "passed"
				if !ev.Passed {
					verdict = "FAILED"
				}
				fmt.Fprintf(stdout, "evaluation of %s by %s (%s) at %s: %s; criteria %s\n", ref, rec.Header.Actor.Name, rec.Header.Actor.Org,
					rec.Header.Time.Format(time.RFC3339), audit.FormatMetrics(ev.Metrics), verdict)
			}
		}
	}
	file := ""
	if f.file != "" {
		if file, err = artifactDigest(f.file); err != nil {
			return fmt.Errorf("--file: %w", err)
		}
	}
	body, what, err := build(v, file, signer.Public())
	if err != nil {
		return err
	}
	if created {
		if err := ledger.SaveKey(f.key, key); err != nil {
			return fmt.Errorf("--key: %w", err)
		}
		fmt.Fprintf(stdout, "created key %s; give the auditors this line for their keyring:\n  %s\n"+
			"(ending it with records=%s lets this key sign %s records only, and with models=%s sign off %s only)\n", f.key,
			audit.FormatKey(audit.Key{Name: f.name, Org: org, Public: signer.Public()}), body.Type(), body.Type(), ref.Model, ref.Model)
	}
	site := f.site
	if site == "" {
		site = org
	}
	dir := f.outbox
	if dir == "" {
		dir = f.key + ".outbox"
	}
	ob, err := ledger.Open(ledger.Config{Dir: dir, Site: site}, signer, anchor)
	if err != nil {
		return err
	}
	defer ob.Close()
	rec, err := ob.Record(ctx, body)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, f.wait)
	defer cancel()
	if err := ob.Drain(wctx); err != nil {
		return fmt.Errorf("%s %s: %w (a record still queued waits in %s: the next approve or release sends it)", ref, what, err, dir)
	}
	fmt.Fprintf(stdout, "%s %s by %s (%s): sha256 %s, record %s in %s\n", ref, what, f.name, org, v.Artifact, rec.Header.ID, where)
	if produced, _ := v.Producer.DecodeBody(); hub != nil && f.file != "" && signsOff(body) {
		if _, federated := produced.(ledger.FederatedRound); federated { // a model of the hub's
			f.handBack(ctx, hub, ref, stdout)
		}
	}
	return nil
}

// signsOff says whether body approves or releases a version: the hub then keeps its model.
func signsOff(body ledger.Body) bool {
	switch b := body.(type) {
	case ledger.Approval:
		return b.Decision == signoff.Approved
	case ledger.Release:
		return true
	}
	return false
}

// handBack gives the hub the model file in hand (--file) of ref, which it stores again if
// retention (keep_models) deleted it, so that subscribers can fetch the version. The
// decision is recorded either way; a failure is only reported.
func (f *signoffFlags) handBack(ctx context.Context, hub *hubLedger, ref ledger.ModelRef, stdout io.Writer) {
	data, err := os.ReadFile(f.file)
	if err == nil {
		var restored bool
		if restored, err = hub.restore(ctx, ref, data); err == nil && restored {
			fmt.Fprintf(stdout, "the hub no longer stored the model of %s (keep_models): it stored it again from %s, so subscribers can fetch it\n", ref, f.file)
		}
	}
	if err != nil {
		fmt.Fprintf(stdout, "the hub did not take back the model file %s: %v (the decision is recorded)\n", f.file, err)
	}
}

// openLedgerForWriting opens an existing local ledger to record in, verifying records
// against signer's key. Like openLedger it does not create a ledger where there is none.
func openLedgerForWriting(dir string, signer *ledger.Signer) (*local.Ledger, error) {
	if _, err := os.Stat(filepath.Join(dir, local.FileName)); err != nil {
		return nil, fmt.Errorf("--ledger %s: expected a local ledger directory holding %s: %w", dir, local.FileName, err)
	}
	l, err := local.Open(dir, local.WithKeyring(ledger.NewKeyring(signer.Public())))
	if errors.Is(err, dirlock.ErrLocked) {
		return nil, fmt.Errorf("--ledger %s: %w; record through the running hub (--hub URL), stop the hub or gateway that writes it, or record on Fabric", dir, err)
	}
	return l, err
}
