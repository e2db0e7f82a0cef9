package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/federation/natsbus"
	"github.com/millwright-io/millwright/gateway"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/atomicfile"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
)

// modelsClientFlags are the flags `models subscribe` and `models pull` share: where the
// hub's NATS is, the subscriber's credentials, the hub's key and the output directory.
type modelsClientFlags struct {
	url, user, password, ca, domain, hubKey, out string
	// The lineage check: a model is written only once a ledger record signed by a key in
	// keys names its hash (a FederatedRound from the hub), waiting up to lineageWait for it.
	ledger, fabric, org, keys string
	lineageWait               time.Duration
	// fourEyes refuses a release its approver made (audit.Options.FourEyes).
	fourEyes bool
}

func (f *modelsClientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "nats", "nats://127.0.0.1:4222", "NATS URL of the hub (or of the local leaf node)")
	fs.StringVar(&f.user, "user", "", "NATS user (the factory or OEM name)")
	fs.StringVar(&f.password, "password", "", "NATS password as env:NAME or file:/path")
	fs.StringVar(&f.ca, "ca", "", "CA bundle that signs the hub's TLS certificate (turns TLS on)")
	fs.StringVar(&f.domain, "domain", "", "the hub's JetStream domain, through a leaf node")
	fs.StringVar(&f.hubKey, "hub-key", "", "the hub's ed25519 public key, 64 hex digits (required)")
	fs.StringVar(&f.out, "out", ".", "directory the models are written to")
	fs.StringVar(&f.ledger, "ledger", "", "check each model's lineage in this local ledger directory (the hub's) before writing it")
	fs.StringVar(&f.fabric, "fabric", "", "check each model's lineage on Fabric (client config or .fabric/env) before writing it")
	fs.StringVar(&f.org, "org", "auditor", "organisation of the --fabric env file")
	fs.StringVar(&f.keys, "keys", "", "keyring of the signers trusted for the lineage check (required with --ledger or --fabric)")
	fs.DurationVar(&f.lineageWait, "lineage-wait", 30*time.Second, "how long to wait for the hub's round record to reach the ledger")
	fs.BoolVar(&f.fourEyes, "four-eyes", false, "with the lineage check: a model released by the person who approved it (no second person) fails it")
}

// lineageCheck is the optional check that the ledger attests a model before it is written.
type lineageCheck struct {
	l    auditLedger
	opts audit.Options
	wait time.Duration
	// reopen opens the ledger again to see records added since (a local ledger is read
	// once when opened); nil when the backend answers live (Fabric).
	reopen func() (auditLedger, error)
}

// close closes the ledger; nil-safe, for when there is no check.
func (c *lineageCheck) close() {
	if c != nil {
		_ = c.l.Close()
	}
}

// lineage opens the ledger the flags name (resolve has checked the combination), or
// returns nil when there is none to check.
func (f *modelsClientFlags) lineage() (*lineageCheck, error) {
	if f.ledger == "" && f.fabric == "" {
		return nil, nil
	}
	keys, err := loadKeyring(f.keys)
	if err != nil {
		return nil, err
	}
	c := &lineageCheck{opts: audit.Options{Keys: keys, FourEyes: f.fourEyes}, wait: f.lineageWait}
	if f.fabric != "" {
		c.l, err = openFabric(f.fabric, f.org)
	} else {
		c.opts.Chain = audit.LocalChain(f.ledger)
		c.reopen = func() (auditLedger, error) { return openLedger(f.ledger) }
		c.l, err = c.reopen()
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// verify waits until the ledger attests that hash is model version ref (signed records
// naming it as ref and as no other version, their evidence's signatures valid, the chain
// intact), polling until c.wait has passed; the last verdict is the error. A local ledger
// is reopened on each attempt to see new records.
func (c *lineageCheck) verify(ctx context.Context, ref ledger.ModelRef, hash string) (audit.Result, error) {
	opts := c.opts
	opts.Digest = func(string) (string, error) { return hash, nil }
	opts.Model = &ref // a trusted signer's record of another version is no lineage of this one
	name := ref.String()
	deadline := time.Now().Add(c.wait)
	for {
		res, err := audit.VerifyArtifact(ctx, c.l, name, opts)
		if err == nil && res.OK {
			return res, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err == nil {
				err = errors.New(res.Verdict)
			}
			return res, fmt.Errorf("lineage of %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
		c.refresh()
	}
}

// refresh opens a local ledger again, to see the records added since it was opened.
func (c *lineageCheck) refresh() {
	if c.reopen != nil {
		if l, err := c.reopen(); err == nil {
			_ = c.l.Close()
			c.l = l
		}
	}
}

// release returns the latest release of federation fed's models on channel in the ledger;
// ok is false when there is none yet.
func (c *lineageCheck) release(ctx context.Context, fed, channel string) (rec ledger.Record, rel ledger.Release, ok bool, err error) {
	c.refresh()
	recs, err := c.l.Query(ctx, ledger.Query{Type: ledger.TypeRelease, Model: ledger.ModelRef{Model: fed}})
	if err != nil {
		return rec, rel, false, err
	}
	// The latest by the time the release says it was made: a query's order is not the
	// order of appending on every ledger (Fabric's walks its index of versions in
	// string order, r10 before r9, sorting by time only within each page).
	for _, r := range recs {
		body, err := r.DecodeBody()
		if b, is := body.(ledger.Release); err == nil && is && b.Channel == channel && (!ok || !r.Header.Time.Before(rec.Header.Time)) {
			rec, rel, ok = r, b, true
		}
	}
	return rec, rel, ok, nil
}

// resolve checks the flags the two commands share, reporting every problem at once, each
// naming the flag as spelled on the command line, its value and what was expected, and
// returns the connection's configuration and the hub's key. It reads the password (env:
// or file:) and does no other I/O.
func (f *modelsClientFlags) resolve() (natsbus.ClientConfig, ed25519.PublicKey, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	key, err := federation.ParsePublicKey(f.hubKey)
	switch {
	case f.hubKey == "":
		bad("--hub-key is required: the hub's ed25519 public key, 64 hex digits (the hub prints it when it starts)")
	case err != nil:
		bad("--hub-key: %v", err)
	}
	if f.url == "" {
		bad("--nats is empty; expected the URL of the hub's NATS or of the local leaf node, e.g. nats://127.0.0.1:4222")
	}
	c := natsbus.ClientConfig{URL: f.url, User: f.user, Domain: f.domain}
	if f.user != "" {
		if err := federation.CheckName(f.user); err != nil {
			bad("--user: %v", err)
		}
	}
	switch {
	case f.password != "" && f.user == "":
		bad("--password is given without --user; expected --user NAME, whose password it is")
	case f.password != "":
		if err := c.Password.DecodeScalar(f.password); err != nil {
			bad("--password: %v", err)
		}
	}
	if f.ca != "" {
		c.TLS = config.TLS{Enabled: true, CAFile: f.ca}
	}
	if f.out == "" {
		bad("--out is empty; expected the directory the models are written to")
	}
	errs = append(errs, f.checkLineage()...)
	c.SetDefaults()
	if len(errs) == 0 {
		errs = append(errs, c.Validate())
	}
	return c, key, errors.Join(errs...)
}

// checkLineage reports the lineage check's flags that do not fit together.
func (f *modelsClientFlags) checkLineage() []error {
	var errs []error
	checked := f.ledger != "" || f.fabric != ""
	switch {
	case f.ledger != "" && f.fabric != "":
		errs = append(errs, fmt.Errorf("--ledger %q and --fabric %q: expected one ledger to check lineage in", f.ledger, f.fabric))
	case !checked && f.keys != "":
		errs = append(errs, fmt.Errorf("--keys %q is for the lineage check; expected --ledger DIR or --fabric FILE with it", f.keys))
	case checked && f.keys == "":
		errs = append(errs, errors.New("--keys FILE is required with --ledger or --fabric: the round record's signature is checked against it"))
	}
	if !checked && f.fourEyes {
		errs = append(errs, errors.New("--four-eyes is for the lineage check; expected --ledger DIR or --fabric FILE with it"))
	}
	if f.lineageWait < 0 {
		errs = append(errs, fmt.Errorf("--lineage-wait %v is negative; expected how long to wait for the round record, 0 or more", f.lineageWait))
	}
	return errs
}

// checkOut makes sure models can be written in dir: it creates dir if need be, and a probe
// file in it, removed at once.
func checkOut(dir string) error {
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		var f *os.File
		if f, err = os.CreateTemp(dir, ".millwright-probe-*"); err == nil {
			_ = f.Close()
			err = os.Remove(f.Name())
		}
	}
	if err != nil {
		return fmt.Errorf("--out %s: models cannot be written there: %w", dir, err)
	}
	return nil
}

// modelSource is where the OEM commands read a federation's models (the hub's NATS, the
// hub's key, the optional lineage check) and where they write them (out).
type modelSource struct {
	bus            *natsbus.Bus
	key            ed25519.PublicKey
	fed, user, out string
	lc             *lineageCheck
}

// open does what both commands do once their flags are valid: it checks that --out can be
// written, opens the lineage check and connects to the hub.
func (f *modelsClientFlags) open(ctx context.Context, fed string, c natsbus.ClientConfig, key ed25519.PublicKey, log *slog.Logger) (*modelSource, error) {
	if err := checkOut(f.out); err != nil {
		return nil, err
	}
	lc, err := f.lineage()
	if err != nil {
		return nil, err
	}
	bus, err := natsbus.Dial(ctx, c, log)
	if err != nil {
		lc.close()
		return nil, err
	}
	return &modelSource{bus: bus, key: key, fed: fed, user: f.user, out: f.out, lc: lc}, nil
}

// close closes what open opened.
func (s *modelSource) close() {
	_ = s.bus.Close()
	s.lc.close()
}

// refusal is a model that must not be written, as trying again would not change: it is
// not the version it should be, it is not newer than the one written last, a file holds
// another model under its version, or the hub's signature on it does not check out.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// refuse returns a refusal of fmt.Errorf(format, args...).
func refuse(format string, args ...any) error { return &refusal{fmt.Errorf(format, args...)} }

// writeError is a file under --out that could not be written: a local problem that
// waiting does not fix, which ends the command.
type writeError struct{ err error }

func (w *writeError) Error() string { return w.err.Error() }
func (w *writeError) Unwrap() error { return w.err }

// versionOf is the name of round's model, as the hub gives it (rN).
func versionOf(round uint64) string { return federation.ModelHeader{Round: round}.Version() }

// parseVersion returns N of version rN, refusing any other spelling (r01, 3, r-1).
func parseVersion(v string) (uint64, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(v, "r"), 10, 64)
	if err != nil || versionOf(n) != v {
		return 0, fmt.Errorf("%q is not a version; expected rN, e.g. r12", v)
	}
	return n, nil
}

// fetched is a model the commands fetched (hash, always set) and wrote: where, the model,
// and what its round's ledger record says of the round (empty without a lineage check).
type fetched struct {
	hash    string
	path    string
	model   *federation.GlobalModel
	metrics map[string]float64 // the round's, from the FederatedRound that attests it
}

// roundMetrics is ", round metrics k=v, ..." for the printed line, or "" without metrics.
func (f fetched) roundMetrics() string {
	if len(f.metrics) == 0 {
		return ""
	}
	return ", round metrics " + audit.FormatMetrics(f.metrics)
}

// line is what subscribe and pull print for a model they wrote.
func (f fetched) line() string {
	h := f.model.Header
	return fmt.Sprintf("%s@%s sha256 %s from %d participants%s -> %s", h.Federation, h.Version(), f.hash, len(h.Participants), f.roundMetrics(), f.path)
}

// fetch downloads the model stored under hash, checks it (its hash, the hub's signature,
// the federation; that it is version want, unless want is ""; its lineage when there is a
// check) and writes it, and OUT/FED.latest when latest is set.
func (s *modelSource) fetch(ctx context.Context, hash, want string, latest bool) (fetched, error) {
	f := fetched{hash: hash}
	g, err := federation.FetchModel(ctx, s.bus, s.fed, hash, s.key)
	if errors.Is(err, federation.ErrBadSignature) || errors.Is(err, federation.ErrMalformed) {
		return f, &refusal{err}
	}
	if err != nil {
		return f, err
	}
	f.model = g
	if v := g.Header.Version(); want != "" && v != want {
		return f, refuse("the model sha256 %s is %s@%s, not %s@%s; not written", hash, s.fed, v, s.fed, want)
	}
	if s.lc != nil {
		res, err := s.lc.verify(ctx, ledger.ModelRef{Model: s.fed, Version: g.Header.Version()}, hash)
		if err != nil {
			return f, err
		}
		f.metrics = roundMetricsOf(res)
	}
	f.path, err = s.write(g, hash, latest)
	return f, err
}

// fetchVersion fetches version v (rN) through its version key, as fetch does; the hash
// it returns is empty when there is no such key (federation.ErrNotFound).
func (s *modelSource) fetchVersion(ctx context.Context, v string, latest bool) (fetched, error) {
	hash, err := s.bus.GetVersion(ctx, s.fed, v)
	if err != nil {
		return fetched{}, fmt.Errorf("%s@%s: %w", s.fed, v, s.explain(err, false))
	}
	return s.fetch(ctx, hash, v, latest)
}

// fetchLatest fetches the model the federation's round state names, which must be the
// version of the state's GlobalRound, as fetch does.
func (s *modelSource) fetchLatest(ctx context.Context) (fetched, error) {
	b, err := s.bus.GetRound(ctx, s.fed)
	if err != nil {
		return fetched{}, s.explain(err, true)
	}
	st, err := federation.DecodeRoundState(b)
	if err != nil {
		return fetched{}, fmt.Errorf("round state of %s: %w", s.fed, err)
	}
	return s.fetch(ctx, st.Global, versionOf(st.GlobalRound), false)
}

// explain says what err, from reading the federation's round state or versions, means
// when the hub refused the lookup (natsbus.ErrNotPermitted) or, with missing, found no
// such federation (federation.ErrNotFound): a typo in --federation, or a user the hub's
// factories list does not give the federation.
func (s *modelSource) explain(err error, missing bool) error {
	if !errors.Is(err, natsbus.ErrNotPermitted) && !(missing && errors.Is(err, federation.ErrNotFound)) {
		return err
	}
	who := fmt.Sprintf("user %q", s.user)
	if s.user == "" {
		who = "a connection without --user"
	}
	return fmt.Errorf("federation %q was not found on the hub, or %s may not read it (the hub's factories list gives each user its federations): %w", s.fed, who, err)
}

// write writes a checked model's signed bytes as OUT/FED@VERSION.mwg, unless that file
// holds them already, and OUT/FED.latest when latest is set, each atomically. A file of
// that version holding another model is never replaced: that is a refusal; a file that
// cannot be written is a writeError.
func (s *modelSource) write(g *federation.GlobalModel, hash string, latest bool) (string, error) {
	v := g.Header.Version()
	name := filepath.Join(s.out, s.fed+"@"+v+".mwg")
	old, err := os.ReadFile(name)
	switch {
	case err == nil && !bytes.Equal(old, g.Raw):
		return "", refuse("%s holds another model (sha256 %s) than the hub's %s@%s (sha256 %s); it is not replaced", name, federation.HashHex(old), s.fed, v, hash)
	case errors.Is(err, os.ErrNotExist):
		err = atomicfile.WriteFile(name, g.Raw, 0o644, true)
	}
	if err != nil {
		return "", &writeError{err}
	}
	if latest {
		if err := s.writeRef(latestRef, v, hash); err != nil {
			return "", err
		}
	}
	return name, nil
}

// writeRef writes OUT/FED.SUFFIX ("VERSION SHA256"), atomically; its error is a writeError.
func (s *modelSource) writeRef(suffix, version, hash string) error {
	if err := atomicfile.WriteFile(filepath.Join(s.out, s.fed+"."+suffix), []byte(version+" "+hash+"\n"), 0o644, true); err != nil {
		return &writeError{err}
	}
	return nil
}

// roundMetricsOf returns the metrics of the FederatedRound record a verification named
// (the round that produced the model); nil when it states none.
func roundMetricsOf(res audit.Result) map[string]float64 {
	for _, rec := range res.Named {
		body, err := rec.DecodeBody()
		if fr, ok := body.(ledger.FederatedRound); err == nil && ok {
			return fr.Metrics
		}
	}
	return nil
}

const subscribeUsage = `usage: millwright models subscribe --federation F --hub-key HEX [flags]

Follows federation F on the hub's NATS and writes each global model as OUT/F@rN.mwg, and
OUT/F.latest ("rN SHA256"), once its SHA-256, the hub's signature, its version and, with
--ledger or --fabric, the hub's round record in the ledger are checked. Versions are
written in order: on start, and whenever a round state skips some, the ones after
OUT/F.latest are fetched first; those the hub no longer stores (keep_models) are reported
and skipped. A model that fails a check is not written; one that may pass later (not
reachable, no round record yet) is tried again, waiting up to a minute in between. An
older model than OUT/F.latest, or another model under a version already written, is
refused. Runs until interrupted; exits 1 when a file under --out cannot be written.

With --channel C (and --ledger or --fabric) it follows the versions people released on
channel C instead ('millwright models release'): whenever the latest release on C names
another version, it writes that version, checked the same way (the release record's
signature included), and OUT/F.C ("rN SHA256").

Flags:
`

// cmdModelsSubscribe watches a federation and writes every new global model.
func cmdModelsSubscribe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("models subscribe", flag.ContinueOnError)
	fed := fs.String("federation", "", "federation to follow (required)")
	channel := fs.String("channel", "", "follow only the versions released on this channel, read from the ledger (needs --ledger or --fabric)")
	poll := fs.Duration("poll", 30*time.Second, "with --channel: how often the ledger is read for a new release")
	var cf modelsClientFlags
	cf.register(fs)
	if code, ok := parseOnlyFlags(fs, subscribeUsage, args, stdout, stderr); !ok {
		return code
	}
	c, key, err := checkSubscribeFlags(*fed, *channel, *poll, &cf)
	if err != nil {
		return usageError(fs, subscribeUsage, err, stderr)
	}
	log := newLogger(stderr, gateway.LogConfig{Level: "warn"})
	src, err := cf.open(ctx, *fed, c, key, log)
	if err == nil {
		defer src.close()
		if *channel != "" {
			err = followChannel(ctx, src, *channel, *poll, stdout, stderr)
		} else {
			err = followRounds(ctx, src, log, stdout, stderr)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "millwright models subscribe: %v\n", err)
		return 1
	}
	return 0
}

// checkSubscribeFlags checks subscribe's own flags, then the shared ones (resolve),
// reporting every problem at once.
func checkSubscribeFlags(fed, channel string, poll time.Duration, cf *modelsClientFlags) (natsbus.ClientConfig, ed25519.PublicKey, error) {
	var errs []error
	switch err := federation.CheckName(fed); {
	case fed == "":
		errs = append(errs, errors.New("--federation is required: the federation to follow"))
	case err != nil:
		errs = append(errs, fmt.Errorf("--federation: %w", err))
	}
	if channel != "" {
		if err := checkChannel(channel); err != nil {
			errs = append(errs, err)
		}
		if cf.ledger == "" && cf.fabric == "" {
			errs = append(errs, fmt.Errorf("--channel needs --ledger DIR or --fabric FILE: the releases on %q are read there", channel))
		}
	}
	if poll <= 0 {
		errs = append(errs, fmt.Errorf("--poll %v is not positive; expected how often --channel reads the ledger, e.g. 30s", poll))
	}
	c, key, err := cf.resolve()
	return c, key, errors.Join(append(errs, err)...)
}

// latestRef is the suffix of OUT/FED.latest, which names the newest round's model written
// (subscribe without --channel writes it and starts after it): no channel may be named so,
// or following it would write an older version there.
const latestRef = "latest"

// checkChannel checks a release channel's name as --channel gives it.
func checkChannel(channel string) error {
	if channel == latestRef {
		return fmt.Errorf("--channel %q is reserved: OUT/FED.latest names the newest round's model; expected another name, such as stable", channel)
	}
	if err := federation.CheckName(channel); err != nil {
		return fmt.Errorf("--channel: %w", err)
	}
	return nil
}

// followChannel writes the version each new latest release of the federation on channel
// names, checked as subscribe checks a model, and OUT/FED.CHANNEL, reading the ledger
// every poll until ctx ends. A version it cannot fetch or check is reported and tried
// again at the next poll; a file it cannot write ends it with that error.
func followChannel(ctx context.Context, src *modelSource, channel string, poll time.Duration, stdout, stderr io.Writer) error {
	have, lastErr := "", ""
	for {
		rec, rel, ok, err := src.lc.release(ctx, src.fed, channel)
		if ok && rel.ArtifactHash != have {
			var f fetched
			if f, err = src.fetch(ctx, rel.ArtifactHash, rel.Version, false); err == nil {
				err = src.writeRef(channel, rel.Version, rel.ArtifactHash)
			} else if errors.Is(err, federation.ErrNotFound) {
				err = fmt.Errorf("%s: the hub no longer stores its model (keep_models); whoever holds the file can hand it back (millwright models restore %s --file FILE --hub URL): %w",
					rel.ModelRef, rel.ModelRef, err)
			}
			if err == nil {
				have = rel.ArtifactHash
				fmt.Fprintf(stdout, "%s released on %s by %s (%s) at %s, sha256 %s%s -> %s\n", rel.ModelRef, channel, rec.Header.Actor.Name,
					rec.Header.Actor.Org, rec.Header.Time.Format(time.RFC3339), rel.ArtifactHash, f.roundMetrics(), f.path)
			}
		}
		if errors.As(err, new(*writeError)) {
			return err
		}
		if err != nil && ctx.Err() == nil && err.Error() != lastErr {
			fmt.Fprintf(stderr, "millwright models subscribe: %s on %s: %v (tried again every %v)\n", src.fed, channel, err, poll)
		}
		lastErr = ""
		if err != nil {
			lastErr = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

const pullUsage = `usage: millwright models pull --hub-key HEX [flags] F@VERSION

Writes one global model of federation F (VERSION: rN, or latest) as OUT/F@rN.mwg, checked as
subscribe checks it: the model must be version rN (for latest, the version the round state
names). A version the hub no longer keeps (keep_models) is reported as such; a file
OUT/F@rN.mwg holding another model is not replaced.

Flags:
`

// cmdModelsPull downloads one version (FED@rN, or FED@latest) of a federation's model.
func cmdModelsPull(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("models pull", flag.ContinueOnError)
	var cf modelsClientFlags
	cf.register(fs)
	pos, code, ok := parseFlags(fs, pullUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	fed, v, err := parsePullArg(pos)
	c, key, cerr := cf.resolve()
	if err := errors.Join(err, cerr); err != nil {
		return usageError(fs, pullUsage, err, stderr)
	}
	src, err := cf.open(ctx, fed, c, key, newLogger(stderr, gateway.LogConfig{Level: "warn"}))
	if err != nil {
		fmt.Fprintf(stderr, "millwright models pull: %v\n", err)
		return 1
	}
	defer src.close()
	var f fetched
	if v == "latest" {
		f, err = src.fetchLatest(ctx)
	} else {
		f, err = src.fetchVersion(ctx, v, false)
	}
	switch {
	case errors.Is(err, federation.ErrNotFound) && v != "latest" && f.hash != "":
		fmt.Fprintf(stderr, "millwright models pull: %s@%s (sha256 %s) is no longer stored: the hub keeps only the latest rounds' models (keep_models); the ledger still records its hash\n", fed, v, f.hash)
	case err != nil:
		fmt.Fprintf(stderr, "millwright models pull: %v\n", err)
	default:
		fmt.Fprintln(stdout, f.line())
		return 0
	}
	return 1
}

// parsePullArg returns the federation and the version of pull's one argument, FED@rN or
// FED@latest.
func parsePullArg(pos []string) (fed, version string, err error) {
	if len(pos) != 1 {
		return "", "", fmt.Errorf("%d arguments %q; expected one, FEDERATION@VERSION (VERSION: rN or latest)", len(pos), pos)
	}
	fed, version, found := strings.Cut(pos[0], "@")
	if version != "latest" {
		_, err = parseVersion(version)
	}
	if !found || federation.CheckName(fed) != nil || err != nil {
		return "", "", fmt.Errorf("%q is not FEDERATION@VERSION (VERSION: rN or latest)", pos[0])
	}
	return fed, version, nil
}
