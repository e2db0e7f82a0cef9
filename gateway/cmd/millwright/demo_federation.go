package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/millwright-io/millwright/connectors/influxdb"
	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/federation"
	"github.com/millwright-io/millwright/gateway"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/models/autoencoder"
	"github.com/millwright-io/millwright/models/store"
	"github.com/millwright-io/millwright/models/train"
)

// Federation step layout.
const (
	demoFedName     = "pumps"
	demoFedHistory  = 10 * time.Minute // history of each pump of the two extra factories
	demoFedWindow   = 12 * time.Minute // training window of a federated round
	demoFedDeadline = 3 * time.Minute  // how long the step waits for its rounds
	// demoFedSampleCap caps a factory's weight in the secure sum (secagg sample_cap):
	// near the windows a demo factory trains on in a round (about 2,500 per pump),
	// so the mean is weighted by them at good precision.
	demoFedSampleCap = 10000
)

// demoFederationResult is what step 5 read back from the hub's API and the ledgers.
type demoFederationResult struct {
	Members         []string                 // the factories (NATS users), factory one first
	Rounds          []federation.RoundReport // the training rounds from GET /api/v1/federations, in round order
	Final           *federation.RoundReport  // the final evaluation round, from the same
	HubAccepted     int                      // messages the hub accepted (its /metrics): 5 per member and round with secure aggregation
	HubSecAggFailed int                      // secure-aggregation rounds the hub abandoned (its /metrics)
	HubRounds       []ledger.FederatedRound  // FederatedRound records in the hub's ledger
	HubEvaluations  []ledger.Evaluation      // the federated evaluations of the global models in the hub's ledger
	LocalTrainings  map[string][]string      // per member: the global models its LocalTraining records continued
	Pulled          string                   // the OEM pull's output
	PullCode        int
	Verified        string // `millwright audit verify` of the pulled file against the hub's ledger
	VerifyCode      int
	// SignedOff is `millwright audit verify` of the pulled file once an OEM engineer has
	// approved and released it (models approve, models release) after the hub stopped.
	SignedOff string
}

// demoFactory is one factory gateway of step 5.
type demoFactory struct {
	name, stateDir, password string
	machines                 []sim.Machine // pumps whose history trains the shared model
	key                      ed25519.PublicKey
}

// federate is step 5: an embedded hub and three factory gateways (the demo's gateway and
// two more, each with its own pumps' history) train one shared autoencoder.
func (d *demo) federate(ctx context.Context, g *runningGateway) error {
	o := d.o
	begin := time.Now()
	res := &demoFederationResult{LocalTrainings: map[string][]string{}}
	d.res.Federation = res

	// The shared layout: the width of the feature windows of the demo's own pump model.
	dir, err := store.OpenDir(g.cfg.Models.Dir)
	if err != nil {
		return err
	}
	sm, _, err := dir.Current("pump-1")
	if err != nil || sm == nil {
		return fmt.Errorf("no pump-1 model to take the feature layout from: %v", err)
	}
	tm := train.FromStore(sm)
	ae, err := autoencoder.New(autoencoder.Config{Inputs: len(tm.Signals()) * tm.Features().WindowSize, Layers: []int{8, 3, 8}})
	if err != nil {
		return err
	}
	arch := ae.Architecture()
	archYAML := fmt.Sprintf("{kind: %s, version: %d, inputs: %d, layers: [8, 3, 8], activation: %s, params: %d}",
		arch.Kind, arch.Version, arch.Inputs, arch.Activation, arch.Params)

	// The factories: the demo's gateway (its state, identity and history; pump-1 only, as
	// pump-2 carries the fault of step 3) and two more with two healthy pumps each.
	root := filepath.Join(o.stateDir, "federation")
	facs := []*demoFactory{{name: d.factory, stateDir: o.stateDir, machines: d.mqttMs[:1]}}
	for i := 2; i <= 3; i++ {
		name := fmt.Sprintf("%s-f%d", d.factory, i)
		facs = append(facs, &demoFactory{name: name, stateDir: filepath.Join(root, name), machines: []sim.Machine{
			{ID: "pump-1", Line: "line-1", Kind: sim.KindPump}, {ID: "pump-2", Line: "line-1", Kind: sim.KindPump}}})
	}
	hubDir := filepath.Join(root, "hub")
	for _, f := range facs {
		if err := os.MkdirAll(f.stateDir, 0o700); err != nil {
			return err
		}
		k, err := ledger.LoadOrCreateKey(filepath.Join(f.stateDir, "identity.key"))
		if err != nil {
			return err
		}
		f.key = k.Public().(ed25519.PublicKey)
		f.password = rand.Text()
		res.Members = append(res.Members, f.name)
	}
	if err := os.MkdirAll(hubDir, 0o700); err != nil {
		return err
	}
	hubKey, err := ledger.LoadOrCreateKey(filepath.Join(hubDir, "hub.key"))
	if err != nil {
		return err
	}
	hubPub := hubKey.Public().(ed25519.PublicKey)

	// The hub: `millwright hub` in this process, with its own embedded NATS and ledger.
	natsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return err
	}
	// The two people who sign the model off: the hub takes their records (signoff.keys).
	signoffKeys := filepath.Join(root, "signoff-keys.txt")
	if err := d.signers(signoffKeys); err != nil {
		return err
	}
	var hub strings.Builder
	fmt.Fprintf(&hub, "state_dir: %q\nlog: {level: %s}\nhttp: {listen: %q}\nsignoff: {keys: %q}\nnats:\n  embedded:\n    listen: %q\n    factories:\n",
		hubDir, o.logLevel, httpAddr, signoffKeys, natsAddr)
	for _, f := range facs {
		fmt.Fprintf(&hub, "      - {name: %s, password: %q, federations: [%s]}\n", f.name, f.password, demoFedName)
	}
	fmt.Fprintf(&hub, "federations:\n  - name: %s\n    members:\n", demoFedName)
	for _, f := range facs {
		fmt.Fprintf(&hub, "      - {name: %s, key: %s}\n", f.name, hex.EncodeToString(f.key))
	}
	fmt.Fprintf(&hub, `    architecture: %s
    rounds: %d
    final_evaluation: true
    quorum: %d
    round_timeout: 2m
    strategy: {name: fedprox, proximal_mu: 0.01}
    secagg: {enabled: true, sample_cap: %d, metrics: [false_alarm_rate, detection_rate, global_false_alarm_rate, global_detection_rate]}
    acceptance: {false_alarm_rate: {max: 0.3}, detection_rate: {min: 0.9}}
`, archYAML, o.fedRounds, len(facs), demoFedSampleCap)
	hubPath := filepath.Join(root, "hub.yaml")
	if err := os.WriteFile(hubPath, []byte(hub.String()), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "\n5. Federation between factories: hub %s (in this process: embedded NATS at nats://%s, ledger %s)\n",
		"http://"+httpAddr+"/api/v1/federations", natsAddr, relPath(o.stateDir, filepath.Join(hubDir, "ledger")))
	fmt.Fprintf(d.out, "   federation %q: %d factories, autoencoder %d inputs -> [8 3 8], %d parameters; %d rounds of fedprox with secure aggregation,\n",
		demoFedName, len(facs), arch.Inputs, arch.Params, o.fedRounds)
	fmt.Fprintf(d.out, "   then a final round in which the factories judge the last model without training (final_evaluation)\n")
	fmt.Fprintf(d.out, "   each gateway pins the other factories' identity keys (federation.peers): the hub cannot stand in for a member or invent one\n")

	// The two extra factories' history: their pumps publish it over MQTT to their own
	// gateway, which stores it in InfluxDB like step 1.
	if err := d.factoryHistory(ctx, facs[1:]); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   raw data never leaves a factory: each gateway trains on its own InfluxDB history and sends the hub only\n")
	fmt.Fprintf(d.out, "   signed parameter updates (in this demo the three share one InfluxDB, apart by factory tag; the hub cannot read it)\n")

	var wg sync.WaitGroup
	defer wg.Wait()
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	// The hub prints its key and NATS address (printed above) to stdout and logs at the
	// demo's -log-level to standard error.
	hubDone := make(chan int, 1)
	wg.Add(1)
	go func() { defer wg.Done(); hubDone <- cmdHub(fctx, []string{"--config", hubPath}, io.Discard, d.errOut) }()
	gws := make([]*runningGateway, len(facs))
	defer func() {
		for _, r := range gws {
			if r != nil {
				_ = r.stop()
			}
		}
	}()
	for i, f := range facs {
		cfg, err := d.factoryConfig(f, natsAddr, hex.EncodeToString(hubPub), archYAML, facs)
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		if gws[i], err = d.startConfigured(fctx, cfg); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}

	if err := d.watchRounds(ctx, httpAddr, res, len(facs), hubDone); err != nil {
		return err
	}
	if err := d.hubLearned(httpAddr, res); err != nil {
		return err
	}

	// An OEM pulls the latest global model; the pull checks its lineage in the hub's ledger.
	keysFile := filepath.Join(root, "hub-keys.txt")
	if err := os.WriteFile(keysFile, []byte(audit.FormatKey(audit.Key{Name: "hub", Org: hubOrg, Public: hubPub})+"\n"), 0o644); err != nil {
		return err
	}
	pwFile := filepath.Join(root, "oem.password")
	if err := os.WriteFile(pwFile, []byte(facs[0].password), 0o600); err != nil {
		return err
	}
	oemDir := filepath.Join(root, "oem")
	args := []string{"--nats", "nats://" + natsAddr, "--user", facs[0].name, "--password", "file:" + pwFile,
		"--hub-key", hex.EncodeToString(hubPub), "--out", oemDir, "--ledger", filepath.Join(hubDir, "ledger"), "--keys", keysFile,
		"--lineage-wait", "15s", demoFedName + "@latest"}
	var pullOut bytes.Buffer
	res.PullCode = cmdModelsPull(ctx, args, &pullOut, &pullOut)
	res.Pulled = strings.TrimSpace(pullOut.String())
	fmt.Fprintf(d.out, "   an OEM (here with %s's NATS credentials) pulls the latest global model, checking its lineage:\n", facs[0].name)
	fmt.Fprintf(d.out, "   millwright models pull %s@latest --ledger %s --keys %s --out %s:\n", demoFedName,
		relPath(o.stateDir, filepath.Join(hubDir, "ledger")), relPath(o.stateDir, keysFile), relPath(o.stateDir, oemDir))
	for _, line := range strings.Split(res.Pulled, "\n") {
		fmt.Fprintf(d.out, "     %s\n", line)
	}
	if res.PullCode != 0 {
		return fmt.Errorf("the OEM pull failed (exit %d)", res.PullCode)
	}
	fmt.Fprintf(d.out, "     exit 0: written only after the hub's ledger attested it (a FederatedRound signed by a key in the keyring\n")
	fmt.Fprintf(d.out, "     names its sha256; a model without one is refused and not written)\n")
	pulled, err := filepath.Glob(filepath.Join(oemDir, "*.mwg"))
	if err != nil || len(pulled) != 1 {
		return fmt.Errorf("the OEM pull wrote %v, want one model (%v)", pulled, err)
	}
	var verOut bytes.Buffer
	res.VerifyCode = cmdAudit(ctx, []string{"verify", pulled[0], "--ledger", filepath.Join(hubDir, "ledger"), "--keys", keysFile}, &verOut, &verOut)
	res.Verified = strings.TrimSpace(verOut.String())
	fmt.Fprintf(d.out, "   millwright audit verify %s --ledger %s --keys %s:\n", relPath(o.stateDir, pulled[0]),
		relPath(o.stateDir, filepath.Join(hubDir, "ledger")), relPath(o.stateDir, keysFile))
	for _, line := range strings.Split(res.Verified, "\n") {
		fmt.Fprintf(d.out, "     %s\n", line)
	}

	if err := d.signOff(ctx, hubDir, "http://"+httpAddr, keysFile, pulled[0], res); err != nil {
		return err
	}

	// Stop the gateways and the hub (their outboxes drain), then read the ledgers.
	for _, r := range gws {
		if err := r.stop(); err != nil {
			return err
		}
	}
	stop()
	if code := <-hubDone; code != 0 {
		return fmt.Errorf("the hub exited %d (its log is on standard error)", code)
	}
	if err := d.readFederationLedgers(ctx, facs, hubDir, res); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   => %d rounds across %d factories in %.1fs; what the factories sent the hub: %d bytes of secure-aggregation messages\n",
		len(res.Rounds), len(facs), time.Since(begin).Seconds(), totalBytes(res.Rounds))
	return nil
}

// The two people who sign the demo's model off (four eyes), with their key files and
// their duties: the engineer approves, the QA lead releases, on stable.
var demoSigners = []struct {
	name, key        string
	records          ledger.Type
	channels, models []string
}{{"OEM engineer", "oem-engineer.key", ledger.TypeApproval, nil, []string{demoFedName}}, {"QA lead", "qa-lead.key", ledger.TypeRelease, []string{"stable"}, nil}}

// people returns the demo signers with their key files and duties.
func (d *demo) people() []signerKey {
	var out []signerKey
	for _, s := range demoSigners {
		out = append(out, signerKey{name: s.name, file: filepath.Join(d.o.stateDir, s.key), records: []ledger.Type{s.records}, channels: s.channels, models: s.models})
	}
	return out
}

// signers creates the demo signers' keys (if missing) and writes their keyring to file.
func (d *demo) signers(file string) error {
	for _, p := range d.people() {
		if _, err := ledger.LoadOrCreateKey(p.file); err != nil {
			return err
		}
	}
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		return err
	}
	return addKeys(file, file, hubOrg, d.people()...)
}

// signOff has an OEM engineer approve the pulled model in the hub's ledger and a QA lead
// release it (four eyes), each with a key of their own, through the running hub's API
// (hubURL: the hub holds its local ledger; its signoff.keys lists them), and verifies the
// file again with --four-eyes: the verdict now names the release.
func (d *demo) signOff(ctx context.Context, hubDir, hubURL, keysFile, file string, res *demoFederationResult) error {
	o := d.o
	ledgerDir := filepath.Join(hubDir, "ledger")
	ref := strings.TrimSuffix(filepath.Base(file), ".mwg") // models pull writes FED@VERSION.mwg
	who := func(i int) []string {
		return []string{"--key", filepath.Join(o.stateDir, demoSigners[i].key), "--name", demoSigners[i].name, "--org", hubOrg,
			"--ledger", ledgerDir, "--hub", hubURL}
	}
	// The hub's evaluation of the version, from the final round, is the evidence the
	// decision rests on: wait until its outbox has anchored it.
	version := strings.TrimPrefix(ref, demoFedName+"@")
	for deadline := time.Now().Add(15 * time.Second); ; {
		evals, err := ledgerRecords(ctx, ledgerDir, ledger.TypeEvaluation)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(evals, func(r ledger.Record) bool {
			b, err := r.DecodeBody()
			ev, ok := b.(ledger.Evaluation)
			return err == nil && ok && ev.Version == version
		}) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the hub's ledger has no evaluation of %s", ref)
		}
		sleep(ctx, 100*time.Millisecond)
	}
	fmt.Fprintf(d.out, "   the pulled model is signed off by two people (four eyes) through the running hub, each with a key of their own\n"+
		"   that the keyrings let sign only their duty (records=approval models=%s; records=release channels=stable):\n", demoFedName)
	for _, args := range [][]string{
		append([]string{ref, "--reason", "rounds' false-alarm and detection rates meet the acceptance criteria", "--file", file}, who(0)...),
		append([]string{ref, "--channel", "stable"}, who(1)...),
	} {
		var out bytes.Buffer
		cmd, run := "approve", cmdModelsApprove
		if slices.Contains(args, "--channel") {
			cmd, run = "release", cmdModelsRelease
		}
		code := run(ctx, args, &out, &out)
		fmt.Fprintf(d.out, "   millwright models %s %s %s ...:\n", cmd, ref, args[1])
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			fmt.Fprintf(d.out, "     %s\n", strings.ReplaceAll(line, o.stateDir, "<state>"))
		}
		if code != 0 {
			return fmt.Errorf("models %s %s: exit %d", cmd, ref, code)
		}
	}
	if err := addKeys(keysFile, keysFile, hubOrg, d.people()...); err != nil {
		return err
	}
	var out bytes.Buffer
	code := cmdAudit(ctx, []string{"verify", file, "--ledger", ledgerDir, "--keys", keysFile, "--four-eyes"}, &out, &out)
	res.SignedOff = strings.TrimSpace(out.String())
	fmt.Fprintf(d.out, "   millwright audit verify %s --four-eyes (their keys added to %s):\n     %s\n", relPath(o.stateDir, file),
		relPath(o.stateDir, keysFile), strings.SplitN(res.SignedOff, "\n", 2)[0])
	if code != 0 {
		return fmt.Errorf("audit verify after the sign-off: exit %d", code)
	}
	return nil
}

// promSum sums the samples of the metric name in a Prometheus text exposition whose labels
// include every one of match (`label="value"`); ok is false when there is no such sample.
func promSum(text, name string, match ...string) (sum float64, ok bool) {
	for _, line := range strings.Split(text, "\n") {
		series, value, found := strings.Cut(line, " ")
		if !found || strings.HasPrefix(line, "#") {
			continue
		}
		metric, labels, _ := strings.Cut(series, "{")
		if metric != name {
			continue
		}
		pairs := strings.Split(strings.TrimSuffix(labels, "}"), ",")
		if slices.ContainsFunc(match, func(m string) bool { return !slices.Contains(pairs, m) }) {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			sum, ok = sum+v, true
		}
	}
	return sum, ok
}

func totalBytes(rs []federation.RoundReport) int {
	n := 0
	for _, r := range rs {
		n += r.Bytes
	}
	return n
}

// factoryConfig is the configuration of a factory gateway of step 5: its MQTT source, the
// shared InfluxDB and the federation block, enabled when members (the federation's
// factories) are given: the gateway then pins the other members' identity keys (peers), so
// that in a round with secure aggregation the hub cannot stand in for one of them.
func (d *demo) factoryConfig(f *demoFactory, natsAddr, hubKey, archYAML string, members []*demoFactory) (gateway.Config, error) {
	o := d.o
	ids := make([]string, len(f.machines))
	for i, m := range f.machines {
		ids[i] = m.ID
	}
	var peers []string
	for _, m := range members {
		if m != f {
			peers = append(peers, fmt.Sprintf("{name: %s, key: %s}", m.name, hex.EncodeToString(m.key)))
		}
	}
	rows := int(demoFedHistory / d.interval)
	doc := fmt.Sprintf(`
gateway: {factory: %s, state_dir: %q, http: {listen: ""}, log: {level: %s}}
sources:
%ssinks:
  - name: influx
    influxdb: {url: %q, bucket: %q, flush_interval: 200ms}
models:
  train: {window: %s, min_rows: %d, chunk: %s, features: {step: %s}, autoencoder: {epochs: 5}}
federation:
  enabled: %t
  nats: {url: "nats://%s", user: %s, password: %q}
  hub_key: %s
  peers: [%s]
  federations:
    - {name: %s, machines: [%s], architecture: %s}
`, f.name, f.stateDir, o.logLevel, demoMQTTSource(o.mqttURL, "millwright-demo-fed-"+f.name, f.name), o.influxURL, o.db,
		demoFedWindow, rows/2, demoFedWindow, d.interval, len(members) > 0, natsAddr, f.name, f.password, hubKey,
		strings.Join(peers, ", "), demoFedName, strings.Join(ids, ", "), archYAML)
	return gateway.Parse([]byte(doc))
}

// watchRounds polls the hub's API until the configured rounds have closed, printing each
// round's report as the hub gives it.
func (d *demo) watchRounds(ctx context.Context, httpAddr string, res *demoFederationResult, members int, hubDone <-chan int) error {
	start := time.Now()
	var mu float64
	for deadline := start.Add(demoFedDeadline); ; {
		var list []federationStatus
		if err := getJSON("http://"+httpAddr+"/api/v1/federations", &list); err == nil && len(list) == 1 {
			if st := list[0].State; st != nil {
				mu = st.ProximalMu
			}
			if lr := list[0].LastRound; lr != nil && lr.Round > uint64(d.o.fedRounds) {
				res.Final = lr
				far, det := lr.Metrics[federation.GlobalMetricPrefix+"false_alarm_rate"], lr.Metrics[federation.GlobalMetricPrefix+"detection_rate"]
				fmt.Fprintf(d.out, "   %5.1fs  round %d %s: %d/%d factories judged %s@r%d on their held-out data without training;\n",
					time.Since(start).Seconds(), lr.Round, lr.Outcome, len(lr.Used), members, demoFedName, d.o.fedRounds)
				fmt.Fprintf(d.out, "            the hub learned only the masked sums: false alarm rate %.3f, detection rate %.3f\n", far, det)
				return nil
			}
			if lr := list[0].LastRound; lr != nil && (len(res.Rounds) == 0 || res.Rounds[len(res.Rounds)-1].Round != lr.Round) {
				res.Rounds = append(res.Rounds, *lr)
				used := slices.Clone(lr.Used)
				slices.Sort(used)
				fmt.Fprintf(d.out, "   %5.1fs  round %d %s: %d/%d participants (%s), proximal mu %g (the hub's strategy term)\n",
					time.Since(start).Seconds(), lr.Round, lr.Outcome, len(lr.Used), members, strings.Join(used, ", "), mu)
				fmt.Fprintf(d.out, "            %d bytes received in the 5 secure-aggregation phases (signed keys, encrypted shares, masked updates\n", lr.Bytes)
				fmt.Fprintf(d.out, "            of 4 bytes a parameter, survivor signatures, unmasking shares); global model sha256 %.16s…\n", lr.Model)
				far, ok1 := lr.Metrics["false_alarm_rate"]
				det, ok2 := lr.Metrics["detection_rate"]
				if ok1 && ok2 {
					fmt.Fprintf(d.out, "            the factories' models after the round's training, on their held-out data (a weighted mean\n")
					fmt.Fprintf(d.out, "            the hub learned only as a masked sum): false alarm rate %.3f, detection rate %.3f\n", far, det)
				}
				for _, r := range lr.Rejected {
					fmt.Fprintf(d.out, "            rejected: %+v\n", r)
				}
			}
		}
		select {
		case code := <-hubDone:
			return fmt.Errorf("the hub exited %d (its log is on standard error)", code)
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d of %d rounds and the final evaluation closed within %s (rerun with -log-level info to see the hub's and gateways' logs)", len(res.Rounds), d.o.fedRounds, demoFedDeadline)
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

// hubLearned reads the hub's /metrics after the rounds (the secure-aggregation messages it
// accepted, the rounds it abandoned) and says what the hub learned.
func (d *demo) hubLearned(httpAddr string, res *demoFederationResult) error {
	text, err := getText("http://" + httpAddr + "/metrics")
	if err != nil {
		return fmt.Errorf("the hub's metrics: %w", err)
	}
	accepted, ok := promSum(text, "millwright_federation_updates_total", `result="accepted"`)
	failed, ok2 := promSum(text, "millwright_federation_secagg_failures_total")
	if !ok || !ok2 {
		return errors.New("the hub's /metrics has no millwright_federation_updates_total or millwright_federation_secagg_failures_total")
	}
	res.HubAccepted, res.HubSecAggFailed = int(accepted), int(failed)
	n := len(res.Members)
	fmt.Fprintf(d.out, "   what the hub learned: only the sum of each round's %d updates, each weighted by its training windows (capped at %d),\n", n, demoFedSampleCap)
	fmt.Fprintf(d.out, "   the same weighted sums of the two rates above and of the global model's two rates (judged by each factory on its\n")
	fmt.Fprintf(d.out, "   data before training from it), and the sum of the weights; never one factory's update, rate or count.\n")
	fmt.Fprintf(d.out, "   Every upload was masked, and the masks cancel only in the sum\n")
	fmt.Fprintf(d.out, "   (hub /metrics: %d messages accepted over %d rounds of 5 phases; %d secure-aggregation failures)\n",
		res.HubAccepted, len(res.Rounds)+1, res.HubSecAggFailed)
	return nil
}

// readFederationLedgers reads the hub's FederatedRound records and each gateway's
// LocalTraining records continued from a global model of the federation, and prints them.
func (d *demo) readFederationLedgers(ctx context.Context, facs []*demoFactory, hubDir string, res *demoFederationResult) error {
	recs, err := ledgerRecords(ctx, filepath.Join(hubDir, "ledger"), ledger.TypeFederatedRound)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   hub ledger: %d FederatedRound records\n", len(recs))
	for _, r := range recs {
		var fr ledger.FederatedRound
		if err := json.Unmarshal(r.Body, &fr); err != nil {
			return err
		}
		res.HubRounds = append(res.HubRounds, fr)
		fmt.Fprintf(d.out, "     %s@r%d  aggregation %s  participants %s  %d input updates  output %s@%s sha256 %.16s…\n",
			fr.Federation, fr.Round, fr.Aggregation, strings.Join(fr.Participants, ", "), len(fr.InputUpdates), fr.Output.Model, fr.Output.Version, fr.OutputHash)
	}
	evals, err := ledgerRecords(ctx, filepath.Join(hubDir, "ledger"), ledger.TypeEvaluation)
	if err != nil {
		return err
	}
	for _, r := range evals {
		var ev ledger.Evaluation
		if err := json.Unmarshal(r.Body, &ev); err != nil {
			return err
		}
		res.HubEvaluations = append(res.HubEvaluations, ev)
		verdict := "met"
		if !ev.Passed {
			verdict = "NOT met"
		}
		by := "by the factories that trained from it"
		if strings.Contains(ev.Criteria, "final evaluation round") {
			by = "in the final evaluation round"
		}
		fmt.Fprintf(d.out, "     evaluation of %s %s: false alarm rate %.3f, detection rate %.3f; acceptance bounds %s\n",
			ev.ModelRef, by, ev.Metrics["false_alarm_rate"], ev.Metrics["detection_rate"], verdict)
	}
	prefix := demoFedName + "@r"
	for _, f := range facs {
		recs, err := ledgerRecords(ctx, filepath.Join(f.stateDir, "ledger"), ledger.TypeLocalTraining)
		if err != nil {
			return err
		}
		var from []string
		for _, r := range recs {
			var lt ledger.LocalTraining
			if err := json.Unmarshal(r.Body, &lt); err != nil {
				return err
			}
			// The trainer names the global model a training continued in its hyper-parameters.
			if ws, _ := lt.HyperParams["warm_start"].(string); strings.HasPrefix(ws, prefix) {
				from = append(from, strings.TrimPrefix(lt.Model, "anomaly.")+" from "+ws)
			}
		}
		res.LocalTrainings[f.name] = from
		fmt.Fprintf(d.out, "   %s ledger: %d LocalTraining records continued from a global model: %s\n", f.name, len(from), orNone(strings.Join(from, ", ")))
	}
	return nil
}

// ledgerRecords returns the records of typ in the local ledger at dir.
func ledgerRecords(ctx context.Context, dir string, typ ledger.Type) ([]ledger.Record, error) {
	l, err := openLedger(dir)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	return l.Query(ctx, ledger.Query{Type: typ})
}

// factoryHistory has each factory's pumps publish demoFedHistory of history over MQTT to
// the factory's own gateway (without its federation block) and waits until InfluxDB holds
// every point.
func (d *demo) factoryHistory(ctx context.Context, facs []*demoFactory) error {
	start := time.Now()
	since := start.Truncate(d.interval).Add(-demoFedHistory)
	steps := int(demoFedHistory / d.interval)
	var published int64
	var expected, stored int64
	for i, f := range facs {
		cfg, err := d.factoryConfig(f, "127.0.0.1:4222", strings.Repeat("0", 64), "{}", nil)
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		g, err := d.startConfigured(ctx, cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		plant, err := sim.New(sim.Config{Seed: d.o.seed + uint64(i) + 1, Interval: d.interval, Machines: f.machines})
		if err != nil {
			_ = g.stop()
			return err
		}
		runner, err := sim.NewRunner(plant, d.pub, sim.RunOptions{Start: since, Steps: steps, Topic: func(s sim.Sample) string {
			return "demo/" + f.name + "/" + s.Line + "/" + s.Machine + "/telemetry"
		}})
		if err == nil {
			err = runner.Run(ctx)
		}
		if err == nil {
			err = d.pub.Flush(ctx)
		}
		if err == nil {
			published += runner.Stats().Published
			var want int64
			for _, m := range f.machines {
				want += int64(steps * len(m.Kind.Signals()))
			}
			expected += want
			var n int64
			n, err = d.waitStored(ctx, g, f, since, want)
			stored += n
		}
		if serr := g.stop(); err == nil {
			err = serr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	names := make([]string, len(facs))
	for i, f := range facs {
		names[i] = f.name
	}
	fmt.Fprintf(d.out, "   %5.1fs  %s: %s of history of 2 pumps each, %d MQTT messages to their own gateways, %d of %d points in InfluxDB\n",
		time.Since(start).Seconds(), strings.Join(names, " and "), demoFedHistory, published, stored, expected)
	return nil
}

// waitStored waits (60 s at most) until InfluxDB holds want points of f's machines since
// since and returns the count.
func (d *demo) waitStored(ctx context.Context, g *runningGateway, f *demoFactory, since time.Time, want int64) (int64, error) {
	q, err := influxdb.NewQuerier(*g.cfg.Sinks[0].InfluxDB)
	if err != nil {
		return 0, err
	}
	defer q.Close()
	for deadline := time.Now().Add(60 * time.Second); ; {
		stored, err := countPoints(ctx, q, d.o.db, f.name, since, f.machines)
		if n := sumPoints(stored, f.machines); err == nil && n >= want {
			return n, nil
		}
		if err := g.failed(); err != nil {
			return 0, err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return sumPoints(stored, f.machines), fmt.Errorf("%d of %d points arrived in InfluxDB within 60s (%v)", sumPoints(stored, f.machines), want, err)
		}
		sleep(ctx, 500*time.Millisecond)
	}
}

// startConfigured starts a gateway built from cfg and waits until its sources connect:
// the machines publish with clean sessions, so nothing may be published before the
// gateway listens.
func (d *demo) startConfigured(ctx context.Context, cfg gateway.Config) (*runningGateway, error) {
	g, err := gateway.New(cfg, d.log)
	if err != nil {
		return nil, err
	}
	gctx, cancel := context.WithCancel(ctx)
	r := &runningGateway{Gateway: g, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- g.Run(gctx) }()
	for deadline := time.Now().Add(30 * time.Second); metricSum(g.Registry(), "millwright_connection_up", map[string]string{"kind": "source"}) < float64(len(cfg.Sources)); {
		if err := r.failed(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = r.stop()
			return nil, errors.New("the gateway's sources did not connect within 30s")
		}
		sleep(ctx, 100*time.Millisecond)
	}
	return r, nil
}

// freeAddr returns a free loopback TCP address.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
