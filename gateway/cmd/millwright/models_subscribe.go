package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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

// lineage opens the ledger the flags name, or returns nil when there is none to check.
func (f *modelsClientFlags) lineage() (*lineageCheck, error) {
	if f.ledger == "" && f.fabric == "" {
		if f.keys != "" {
			return nil, errors.New("--keys is for the lineage check: give --ledger DIR or --fabric FILE too")
		}
		return nil, nil
	}
	if f.ledger != "" && f.fabric != "" {
		return nil, errors.New("--ledger and --fabric: give one ledger to check lineage in")
	}
	if f.keys == "" {
		return nil, errors.New("--keys FILE is required with --ledger or --fabric: the round record's signature is checked against it")
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

// verify waits until the ledger attests the model with hash (a signed record naming it,
// its evidence's signatures valid, the chain intact), polling until c.wait has passed; the
// last verdict is the error. A local ledger is reopened on each attempt to see new records.
func (c *lineageCheck) verify(ctx context.Context, name, hash string) (audit.Result, error) {
	opts := c.opts
	opts.Digest = func(string) (string, error) { return hash, nil }
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
	for i := len(recs) - 1; i >= 0; i-- {
		body, err := recs[i].DecodeBody()
		if r, is := body.(ledger.Release); err == nil && is && r.Channel == channel {
			return recs[i], r, true, nil
		}
	}
	return rec, rel, false, nil
}

// dial checks the flags and connects.
func (f *modelsClientFlags) dial(ctx context.Context, log *slog.Logger) (*natsbus.Bus, ed25519.PublicKey, error) {
	key, err := federation.ParsePublicKey(f.hubKey)
	if err != nil {
		return nil, nil, fmt.Errorf("--hub-key: %w", err)
	}
	c := natsbus.ClientConfig{URL: f.url, User: f.user, Domain: f.domain}
	if f.password != "" {
		if err := c.Password.DecodeScalar(f.password); err != nil {
			return nil, nil, fmt.Errorf("--password: %w", err)
		}
	}
	if f.ca != "" {
		c.TLS = config.TLS{Enabled: true, CAFile: f.ca}
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	bus, err := natsbus.Dial(ctx, c, log)
	return bus, key, err
}

// writeModel verifies nothing more (FetchModel did) and writes the model's signed bytes as
// OUT/FED@VERSION.mwg and OUT/FED.latest ("VERSION SHA256"), each atomically.
func writeModel(out string, g *federation.GlobalModel, data []byte, hash string, latest bool) (string, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	name := filepath.Join(out, g.Header.Federation+"@"+g.Header.Version()+".mwg")
	if err := atomicfile.WriteFile(name, data, 0o644, true); err != nil {
		return "", err
	}
	if latest {
		line := g.Header.Version() + " " + hash + "\n"
		if err := atomicfile.WriteFile(filepath.Join(out, g.Header.Federation+".latest"), []byte(line), 0o644, true); err != nil {
			return "", err
		}
	}
	return name, nil
}

// fetched is a model fetchAndWrite wrote: where, the model, and what its round's ledger
// record says of the round (empty without a lineage check).
type fetched struct {
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

// fetchAndWrite downloads and checks the model stored under hash (its hash and the hub's
// signature, and its lineage when lc is set) and writes it.
func fetchAndWrite(ctx context.Context, bus *natsbus.Bus, fed, hash string, key ed25519.PublicKey, out string, latest bool, lc *lineageCheck) (fetched, error) {
	g, err := federation.FetchModel(ctx, bus, fed, hash, key)
	if err != nil {
		return fetched{}, err
	}
	f := fetched{model: g}
	if lc != nil {
		res, err := lc.verify(ctx, fed+"@"+g.Header.Version(), hash)
		if err != nil {
			return f, err
		}
		f.metrics = roundMetricsOf(res)
	}
	f.path, err = writeModel(out, g, g.Raw, hash, latest)
	return f, err
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

Follows federation F on the hub's NATS and writes each new global model as OUT/F@rN.mwg,
and OUT/F.latest ("rN SHA256"), once its SHA-256, the hub's signature and, with --ledger or
--fabric, the hub's round record in the ledger are checked. A model that fails a check is
not written. Runs until interrupted.

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
	if *fed == "" {
		fmt.Fprint(stderr, "millwright models subscribe: --federation is required: the federation to follow\n")
		return 2
	}
	if err := federation.CheckName(*fed); err != nil {
		fmt.Fprintf(stderr, "millwright models subscribe: --federation: %v\n", err)
		return 2
	}
	if *channel != "" {
		if err := federation.CheckName(*channel); err != nil {
			fmt.Fprintf(stderr, "millwright models subscribe: --channel: %v\n", err)
			return 2
		}
	}
	if *channel != "" && (cf.ledger == "" && cf.fabric == "" || *poll <= 0) {
		fmt.Fprint(stderr, "millwright models subscribe: --channel needs --ledger DIR or --fabric FILE (the releases are read there) and a positive --poll\n")
		return 2
	}
	lc, err := cf.lineage()
	if err != nil {
		fmt.Fprintf(stderr, "millwright models subscribe: %v\n", err)
		return 1
	}
	defer lc.close()
	log := newLogger(stderr, gateway.LogConfig{Level: "warn"})
	bus, key, err := cf.dial(ctx, log)
	if err != nil {
		fmt.Fprintf(stderr, "millwright models subscribe: %v\n", err)
		return 1
	}
	defer func() { _ = bus.Close() }()
	if *channel != "" {
		followChannel(ctx, bus, key, *fed, *channel, *poll, cf.out, lc, stdout, stderr)
		return 0
	}
	// The watcher hands the newest state over (capacity 1, older ones replaced): a slow
	// download skips to the latest model, which is what a subscriber wants.
	latest := make(chan federation.RoundState, 1)
	werr := make(chan error, 1)
	go func() {
		werr <- bus.WatchRound(ctx, *fed, func(b []byte) {
			st, err := federation.DecodeRoundState(b)
			if err != nil {
				log.Warn("round state refused", "err", err)
				return
			}
			select {
			case <-latest:
			default:
			}
			latest <- st
		})
	}()
	have := ""
	for {
		select {
		case <-ctx.Done():
			<-werr
			return 0
		case err := <-werr:
			if ctx.Err() != nil {
				return 0
			}
			fmt.Fprintf(stderr, "millwright models subscribe: %v\n", err)
			return 1
		case st := <-latest:
			if st.Global == have || st.GlobalRound == 0 {
				continue // nothing new, or only the untrained initial model
			}
			for attempt := 0; ; attempt++ {
				f, err := fetchAndWrite(ctx, bus, *fed, st.Global, key, cf.out, true, lc)
				if err == nil {
					have = st.Global
					fmt.Fprintf(stdout, "%s@%s sha256 %s from %d participants%s -> %s\n", *fed, f.model.Header.Version(), st.Global,
						len(f.model.Header.Participants), f.roundMetrics(), f.path)
					break
				}
				if ctx.Err() != nil || attempt == 4 {
					fmt.Fprintf(stderr, "millwright models subscribe: %s: %v\n", st.Global, err)
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}
	}
}

// followChannel writes the version each new latest release of fed on channel names,
// checked as subscribe checks a model, and OUT/FED.CHANNEL, reading the ledger every poll
// until ctx ends. A version it cannot fetch or check is reported and tried again at the
// next poll.
func followChannel(ctx context.Context, bus *natsbus.Bus, key ed25519.PublicKey, fed, channel string, poll time.Duration, out string,
	lc *lineageCheck, stdout, stderr io.Writer) {
	have, lastErr := "", ""
	for {
		rec, rel, ok, err := lc.release(ctx, fed, channel)
		if ok && rel.ArtifactHash != have {
			var f fetched
			if f, err = fetchAndWrite(ctx, bus, fed, rel.ArtifactHash, key, out, false, lc); err == nil {
				line := rel.Version + " " + rel.ArtifactHash + "\n"
				err = atomicfile.WriteFile(filepath.Join(out, fed+"."+channel), []byte(line), 0o644, true)
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
		if err != nil && ctx.Err() == nil && err.Error() != lastErr {
			fmt.Fprintf(stderr, "millwright models subscribe: %s on %s: %v (tried again every %v)\n", fed, channel, err, poll)
		}
		lastErr = ""
		if err != nil {
			lastErr = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(poll):
		}
	}
}

const pullUsage = `usage: millwright models pull --hub-key HEX [flags] F@VERSION

Writes one global model of federation F (VERSION: rN, or latest) as OUT/F@rN.mwg, checked as
subscribe checks it. A version the hub no longer keeps (keep_models) is reported as such.

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
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "millwright models pull: %d arguments %q; expected one, FEDERATION@VERSION (VERSION: rN or latest)\n", len(pos), pos)
		return 2
	}
	fed, version, found := strings.Cut(pos[0], "@")
	if !found || federation.CheckName(fed) != nil || version == "" {
		fmt.Fprintf(stderr, "millwright models pull: %q is not FEDERATION@VERSION (VERSION: rN or latest)\n", pos[0])
		return 2
	}
	lc, err := cf.lineage()
	if err != nil {
		fmt.Fprintf(stderr, "millwright models pull: %v\n", err)
		return 1
	}
	defer lc.close()
	bus, key, err := cf.dial(ctx, newLogger(stderr, gateway.LogConfig{Level: "warn"}))
	if err != nil {
		fmt.Fprintf(stderr, "millwright models pull: %v\n", err)
		return 1
	}
	defer func() { _ = bus.Close() }()
	var hash string
	if version == "latest" {
		b, err := bus.GetRound(ctx, fed)
		if err == nil {
			var st federation.RoundState
			if st, err = federation.DecodeRoundState(b); err == nil {
				hash = st.Global
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "millwright models pull: %s: %v\n", fed, err)
			return 1
		}
	} else if hash, err = bus.GetVersion(ctx, fed, version); err != nil {
		fmt.Fprintf(stderr, "millwright models pull: %s@%s: %v\n", fed, version, err)
		return 1
	}
	f, err := fetchAndWrite(ctx, bus, fed, hash, key, cf.out, false, lc)
	if errors.Is(err, federation.ErrNotFound) && version != "latest" {
		fmt.Fprintf(stderr, "millwright models pull: %s@%s (sha256 %s) is no longer stored: the hub keeps only the latest rounds' models (keep_models); the ledger still records its hash\n", fed, version, hash)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "millwright models pull: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s@%s sha256 %s%s -> %s\n", fed, f.model.Header.Version(), hash, f.roundMetrics(), f.path)
	return 0
}
