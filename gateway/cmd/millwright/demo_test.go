package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/connectors/sim"
	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
)

func defaultDemoOptions() demoOptions {
	return demoOptions{
		mqttURL: "tcp://127.0.0.1:1883", influxURL: "http://127.0.0.1:8086", db: "millwright",
		httpAddr: "127.0.0.1:9273", history: 30 * time.Minute, duration: 45 * time.Second,
		rate: 5, machines: 4, opcuaMachines: 2, sparkplugMachines: 1, seed: 1, logLevel: "error",
		federation: true, fedRounds: 2,
	}
}

func TestDemoOptionsValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*demoOptions)
		want   []string // fragments of the error; none: valid
	}{
		{name: "defaults", change: func(*demoOptions) {}},
		{name: "smallest", change: func(o *demoOptions) {
			o.machines, o.opcuaMachines, o.sparkplugMachines, o.history, o.duration, o.rate = 2, 0, 0, 2*time.Minute, demoFaultAfter+10*time.Second, 1
		}},
		{name: "rate", change: func(o *demoOptions) { o.rate = 0 }, want: []string{"-rate 0 is out of range"}},
		{name: "one machine", change: func(o *demoOptions) { o.machines = 1 }, want: []string{"-machines 1 is out of range; expected 2 to 40"}},
		{name: "opcua", change: func(o *demoOptions) { o.opcuaMachines = 3 }, want: []string{"-opcua 3 is out of range"}},
		{name: "sparkplug", change: func(o *demoOptions) { o.sparkplugMachines = 3 }, want: []string{"-sparkplug 3 is out of range"}},
		{name: "history", change: func(o *demoOptions) { o.history = time.Minute }, want: []string{"-history 1m0s is out of range"}},
		{name: "duration", change: func(o *demoOptions) { o.duration = 5 * time.Second }, want: []string{"-duration 5s is too short"}},
		{name: "federation rounds", change: func(o *demoOptions) { o.fedRounds = 4 }, want: []string{"-federation-rounds 4 is out of range; expected 1 to 3"}},
		{name: "no federation", change: func(o *demoOptions) { o.federation, o.fedRounds = false, 0 }},
		{name: "log level", change: func(o *demoOptions) { o.logLevel = "loud" }, want: []string{`-log-level "loud" is not a level`}},
		{name: "every problem at once", change: func(o *demoOptions) { o.rate, o.machines, o.opcuaMachines = 99, 0, -1 },
			want: []string{"-rate 99", "-machines 0", "-opcua -1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := defaultDemoOptions()
			tt.change(&o)
			err := o.validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("validate accepted %+v", o)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestDemoConfig checks the gateway configurations the demo builds: both phases pass the
// gateway's own validation, and the models phase trains every MQTT machine on the plant's
// sample grid.
func TestDemoConfig(t *testing.T) {
	o := defaultDemoOptions()
	o.stateDir = t.TempDir()
	d := &demo{o: o, factory: "demo-1", interval: 200 * time.Millisecond,
		mqttMs: demoMQTTMachines(o.machines, false), uaMs: demoOPCUAMachines(o.opcuaMachines), spMs: demoSparkplugMachines(o.sparkplugMachines),
		uaURL: "opc.tcp://127.0.0.1:4841"}
	plain, err := d.config(false)
	if err != nil {
		t.Fatal(err)
	}
	if plain.Models.Enabled || len(plain.Sources) != 3 || plain.Sources[0].MQTT == nil || plain.Sources[1].OPCUA == nil || plain.Sources[2].Sparkplug == nil {
		t.Errorf("ingest phase: models %v, sources %+v; want no models, MQTT, OPC-UA and Sparkplug sources", plain.Models.Enabled, plain.Sources)
	}
	cfg, err := d.config(true)
	if err != nil {
		t.Fatal(err)
	}
	tc := cfg.Models.Train
	if want := []string{"pump-1", "pump-2", "spindle-1", "motor-1"}; !slices.Equal(tc.Machines, want) {
		t.Errorf("trained machines %v, want %v", tc.Machines, want)
	}
	if tc.Features.Step != d.interval || tc.Window < o.history || tc.MinRows > int(o.history/d.interval) {
		t.Errorf("training step %s, window %s, min_rows %d: want the plant's interval %s and room for %s of history",
			tc.Features.Step, tc.Window, tc.MinRows, d.interval, o.history)
	}
	if cfg.Models.MQTT == nil || cfg.Ledger.Backend != "local" || cfg.Models.Dir != filepath.Join(o.stateDir, "models") {
		t.Errorf("models phase: alarms %+v, ledger %q, dir %q", cfg.Models.MQTT, cfg.Ledger.Backend, cfg.Models.Dir)
	}
	if faulty := demoMQTTMachines(4, true); len(faulty[1].Faults) != 1 || len(faulty[0].Faults)+len(faulty[2].Faults)+len(faulty[3].Faults) != 0 {
		t.Errorf("the live plant must inject exactly one fault, into pump-2: %+v", faulty)
	}
}

// TestDemoFactoryConfig checks the configurations of step 5's factory gateways: the
// history phase has no federation, the federated phase joins "pumps" with the factory's
// pumps as its NATS user and pins the other members' identity keys (not its own), and
// both read only the factory's own MQTT topics.
func TestDemoFactoryConfig(t *testing.T) {
	o := defaultDemoOptions()
	d := &demo{o: o, factory: "demo-1", interval: 200 * time.Millisecond}
	member := func(name string, seed byte) *demoFactory {
		return &demoFactory{name: name, key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)).Public().(ed25519.PublicKey)}
	}
	f := member("demo-1-f2", 2)
	f.stateDir, f.password, f.machines = t.TempDir(), "pw", []sim.Machine{
		{ID: "pump-1", Line: "line-1", Kind: sim.KindPump}, {ID: "pump-2", Line: "line-1", Kind: sim.KindPump}}
	members := []*demoFactory{member("demo-1", 1), f, member("demo-1-f3", 3)}
	arch := "{kind: autoencoder, version: 1, inputs: 50, layers: [8, 3, 8], activation: tanh, params: 917}"
	for _, federated := range []bool{false, true} {
		var joined []*demoFactory
		if federated {
			joined = members
		}
		cfg, err := d.factoryConfig(f, "127.0.0.1:4222", strings.Repeat("ab", 32), arch, joined)
		if err != nil {
			t.Fatalf("federated %v: %v", federated, err)
		}
		if cfg.Gateway.Factory != f.name || len(cfg.Sources) != 1 || cfg.Sources[0].MQTT == nil ||
			cfg.Sources[0].MQTT.Topics[0].Pattern != "demo/demo-1-f2/{line}/{machine}/telemetry" {
			t.Errorf("federated %v: factory %q, sources %+v; want one MQTT source on the factory's own topics", federated, cfg.Gateway.Factory, cfg.Sources)
		}
		fc := cfg.Federation
		if fc.Enabled != federated {
			t.Errorf("federation enabled %v, want %v", fc.Enabled, federated)
		}
		if federated && (fc.NATS.User != f.name || len(fc.Federations) != 1 || fc.Federations[0].Name != demoFedName ||
			!slices.Equal(fc.Federations[0].Machines, []string{"pump-1", "pump-2"}) || fc.Federations[0].Architecture.Inputs != 50) {
			t.Errorf("federation block %+v", fc)
		}
		var peers []string
		for _, p := range fc.Peers {
			peers = append(peers, p.Name)
			if i := slices.IndexFunc(members, func(m *demoFactory) bool { return m.name == p.Name }); i < 0 || !members[i].key.Equal(p.Key.PublicKey) {
				t.Errorf("peer %s pinned with key %x, not the member's", p.Name, p.Key.PublicKey)
			}
		}
		if want := map[bool][]string{true: {"demo-1", "demo-1-f3"}}[federated]; !slices.Equal(peers, want) {
			t.Errorf("federated %v: peers %v, want %v", federated, peers, want)
		}
		if cfg.Models.Train.Features.Step != d.interval {
			t.Errorf("feature step %s, want the plant's interval %s (the shared model's windows)", cfg.Models.Train.Features.Step, d.interval)
		}
	}
}

// TestPromSum reads samples out of a Prometheus text exposition like the hub's /metrics.
func TestPromSum(t *testing.T) {
	const text = `# HELP millwright_federation_updates_total Update messages handled by the hub.
# TYPE millwright_federation_updates_total counter
millwright_federation_updates_total{result="accepted"} 30
millwright_federation_updates_total{result="redelivered"} 2
millwright_federation_updates_total_other{result="accepted"} 7
millwright_federation_secagg_failures_total{reason="quorum"} 1
millwright_federation_secagg_failures_total{reason="unmask"} 0.5
millwright_up 1
`
	tests := []struct {
		name   string
		metric string
		match  []string
		want   float64
		ok     bool
	}{
		{"one series", "millwright_federation_updates_total", []string{`result="accepted"`}, 30, true},
		{"every series", "millwright_federation_updates_total", nil, 32, true},
		{"summed over a label", "millwright_federation_secagg_failures_total", nil, 1.5, true},
		{"no labels", "millwright_up", nil, 1, true},
		{"no matching label", "millwright_federation_updates_total", []string{`result="rejected"`}, 0, false},
		{"a label value is not a prefix", "millwright_federation_updates_total", []string{`result="accept"`}, 0, false},
		{"absent", "millwright_nothing", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, ok := promSum(text, tt.metric, tt.match...); got != tt.want || ok != tt.ok {
				t.Errorf("promSum = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestIntegrationDemo runs a short demo against the real Mosquitto and InfluxDB and checks
// its outcomes against the systems themselves: every published point is in InfluxDB (for
// both sources), a model per machine, an alarm on the faulty machine only (over MQTT, on the
// API and in InfluxDB), and the ledger's records verified, also by `millwright audit verify`.
func TestIntegrationDemo(t *testing.T) {
	servicetest.Require(t, "Mosquitto and InfluxDB")
	influx := servicetest.InfluxURL()
	o := defaultDemoOptions()
	o.mqttURL, o.influxURL, o.db = servicetest.MQTTURL(), influx, servicetest.Database(t, influx)
	o.httpAddr = fmt.Sprintf("127.0.0.1:%d", servicetest.FreePort(t))
	o.stateDir = t.TempDir()
	o.machines = 3
	o.history = 15 * time.Minute

	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := runDemo(ctx, o, &out, &errOut)
	t.Logf("demo output:\n%s\nstderr:\n%s", out.String(), errOut.String())
	if err != nil {
		t.Fatal(err)
	}

	// 1. Points: the demo's Flux counts agree with InfluxQL.
	stored, err := servicetest.Count(influx, o.db, fmt.Sprintf(`SELECT count("value") FROM "telemetry" WHERE "factory" = '%s'`, res.Factory))
	if err != nil {
		t.Fatal(err)
	}
	if res.BySource["mqtt"] != res.Expected || res.BySource["opcua"] == 0 || res.BySource["sparkplug"] == 0 {
		t.Errorf("stored by source %v, want all %d MQTT points and some OPC-UA and Sparkplug points", res.BySource, res.Expected)
	}
	if readBack := res.Expected + res.BySource["opcua"] + res.BySource["sparkplug"]; stored < readBack {
		t.Errorf("InfluxQL counts %d points of %s, fewer than the %d the demo read back", stored, res.Factory, readBack)
	}

	// 2. A model per MQTT machine.
	if len(res.Models) != o.machines {
		t.Fatalf("%d models, want %d: %+v", len(res.Models), o.machines, res.Models)
	}

	// 3. The alarm: the faulty machine only, on MQTT, on the API and in InfluxDB.
	if len(res.Raised) == 0 {
		t.Fatal("no alarm received over MQTT")
	}
	for _, m := range res.Raised {
		if m.Machine != res.Faulty || m.Score <= m.Threshold || m.ModelVersion != res.Models[res.Faulty].Version {
			t.Errorf("alarm %+v: want %s above its threshold with model %s", m, res.Faulty, res.Models[res.Faulty].Version)
		}
	}
	for _, s := range res.States {
		if s.Active != (s.Machine == res.Faulty) || s.Windows == 0 {
			t.Errorf("API state %+v: want scored windows, active only on %s", s, res.Faulty)
		}
	}
	alarmQuery := func(machine string) string {
		return fmt.Sprintf(`SELECT count("value_bool") FROM "anomaly" WHERE "machine" = '%s' AND "signal" = 'alarm' AND "value_bool" = true`, machine)
	}
	if n := servicetest.WaitCount(t, influx, o.db, alarmQuery(res.Faulty), 1, 30*time.Second); n < 1 {
		t.Errorf("%s: no anomaly point with the alarm raised in InfluxDB", res.Faulty)
	}
	for m := range res.Models {
		if n, err := servicetest.Count(influx, o.db, alarmQuery(m)); m != res.Faulty && (err != nil || n != 0) {
			t.Errorf("%s (healthy): %d anomaly points with the alarm raised in InfluxDB (%v)", m, n, err)
		}
	}

	// 4. Lineage: four records per model, the artifact verified, also by the command line.
	for _, typ := range []ledger.Type{ledger.TypeDatasetSnapshot, ledger.TypeLocalTraining, ledger.TypeEvaluation, ledger.TypeDeployment} {
		if res.Records[typ] != o.machines {
			t.Errorf("%d %s records, want %d", res.Records[typ], typ, o.machines)
		}
	}
	// The alarm log's digest, recorded when the gateway stopped, matches its file and counts
	// the faulty machine's alarm.
	if res.Records[ledger.TypeAlarmDigest] != 1 || res.AlarmsDigested < 1 {
		t.Errorf("%d alarm_digest records counting %d alarms, want 1 counting at least 1", res.Records[ledger.TypeAlarmDigest], res.AlarmsDigested)
	}
	if !res.Verified.OK || res.Lineage < 2 {
		t.Errorf("verification %+v, lineage of %d records", res.Verified, res.Lineage)
	}
	var vout, verr bytes.Buffer
	ledgerDir, keys := filepath.Join(o.stateDir, "ledger"), filepath.Join(o.stateDir, "trusted-keys.txt")
	if code := cmdAudit(ctx, []string{"verify", res.Verified.Path, "--ledger", ledgerDir, "--keys", keys}, &vout, &verr); code != 0 || !strings.HasPrefix(vout.String(), "VERIFIED") {
		t.Errorf("millwright audit verify: exit %d\n%s%s", code, vout.String(), verr.String())
	}

	// 5. Federation: every round aggregated with all three factories under secure
	// aggregation (the hub recorded each round as such in its ledger, and its /metrics
	// counted the five phases' messages of every member and round), the hub's ledger holds
	// a FederatedRound per round naming its model, each gateway's ledger a LocalTraining
	// continued from a round's global model, and the OEM pull was attested.
	fr := res.Federation
	if fr == nil {
		t.Fatal("step 5 did not run")
	}
	if len(fr.Rounds) != o.fedRounds || len(fr.HubRounds) != o.fedRounds {
		t.Fatalf("%d rounds on the API, %d FederatedRound records; want %d", len(fr.Rounds), len(fr.HubRounds), o.fedRounds)
	}
	for i, r := range fr.Rounds {
		used := slices.Clone(r.Used)
		slices.Sort(used)
		members := slices.Clone(fr.Members)
		slices.Sort(members)
		if r.Outcome != "aggregated" || !slices.Equal(used, members) || r.Bytes == 0 || len(r.Model) != 64 {
			t.Errorf("round %+v: want aggregated from %v with update bytes and a model", r, fr.Members)
		}
		if h := fr.HubRounds[i]; h.OutputHash != r.Model || len(h.Participants) != len(fr.Members) || len(h.InputUpdates) != len(fr.Members) {
			t.Errorf("FederatedRound %+v does not match round %d of the API (model %s, %d participants)", h, r.Round, r.Model, len(r.Used))
		}
		if h := fr.HubRounds[i]; h.Aggregation != "fedprox+secagg" {
			t.Errorf("FederatedRound %d: aggregation %q; want fedprox+secagg (a round with secure aggregation)", h.Round, h.Aggregation)
		}
		// The two rates the hub asked for under the mask (secagg.metrics), as means of rates.
		if m := r.Metrics; len(m) != 4 || !(m["false_alarm_rate"] >= 0 && m["false_alarm_rate"] <= 1) || !(m["detection_rate"] >= 0 && m["detection_rate"] <= 1) ||
			!(m["global_detection_rate"] >= 0 && m["global_detection_rate"] <= 1) {
			t.Errorf("round %d metrics %v; want false_alarm_rate, detection_rate and their global_ pair in [0, 1]", r.Round, m)
		}
	}
	// Each global model was evaluated by the factories that trained from it, the last one
	// in the final evaluation round (r0, the seeded initial model, is not recorded).
	if f := fr.Final; f == nil || f.Outcome != "evaluated" || f.Round != uint64(o.fedRounds+1) || len(f.Used) != len(fr.Members) ||
		f.Model != fr.Rounds[o.fedRounds-1].Model {
		t.Errorf("final evaluation round %+v; want round %d evaluating the last model with every factory", f, o.fedRounds+1)
	}
	if len(fr.HubEvaluations) != o.fedRounds {
		t.Errorf("%d evaluation records in the hub's ledger; want %d", len(fr.HubEvaluations), o.fedRounds)
	}
	for i, ev := range fr.HubEvaluations {
		if ev.Version != fmt.Sprintf("r%d", i+1) || ev.ArtifactHash != fr.Rounds[i].Model || !(ev.Metrics["detection_rate"] >= 0 && ev.Metrics["detection_rate"] <= 1) ||
			!strings.Contains(ev.Criteria, "detection_rate ≥ 0.9") || strings.Contains(ev.Criteria, "final evaluation round") != (i == o.fedRounds-1) {
			t.Errorf("evaluation %+v; want r%d (%s) with its detection rate and the acceptance bounds, the last in the final round", ev, i+1, fr.Rounds[i].Model)
		}
	}
	// advertise, share, mask, check and unmask: one message each per member and round,
	// the final evaluation round included.
	if want := 5 * len(fr.Members) * (o.fedRounds + 1); fr.HubAccepted != want || fr.HubSecAggFailed != 0 {
		t.Errorf("the hub accepted %d messages with %d secure-aggregation failures; want %d (5 phases x %d members x %d rounds) and none",
			fr.HubAccepted, fr.HubSecAggFailed, want, len(fr.Members), o.fedRounds+1)
	}
	for _, m := range fr.Members {
		want := fmt.Sprintf("from pumps@r%d", o.fedRounds)
		if !slices.ContainsFunc(fr.LocalTrainings[m], func(s string) bool { return strings.HasSuffix(s, want) }) {
			t.Errorf("%s: LocalTraining records %v; want one continued %s", m, fr.LocalTrainings[m], want)
		}
	}
	last := fr.Rounds[len(fr.Rounds)-1].Model
	if fr.PullCode != 0 || !strings.Contains(fr.Pulled, last) {
		t.Errorf("OEM pull: exit %d: %s; want the last model %s", fr.PullCode, fr.Pulled, last)
	}
	if !strings.HasPrefix(fr.SignedOff, "VERIFIED") || !strings.Contains(fr.SignedOff, ", released by QA lead ("+hubOrg+") on stable") {
		t.Errorf("audit verify of the pulled model after the sign-off: %s", fr.SignedOff)
	}
	if fr.VerifyCode != 0 || !strings.HasPrefix(fr.Verified, "VERIFIED") {
		t.Errorf("audit verify of the pulled model: exit %d: %s", fr.VerifyCode, fr.Verified)
	}
	t.Logf("demo wall time %s, alarm %s after the onset", res.Wall, res.FirstWarn)
}
