package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/millwright-io/millwright/internal/servicetest"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/ledger/audit"
	"github.com/millwright-io/millwright/ledger/audit/audittest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

func TestMain(m *testing.M) { os.Exit(servicetest.RunWithLeakCheck(m)) }

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run go test -update to accept):\n%s", name, got)
	}
}

func ids(recs []ledger.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Header.ID)
	}
	slices.Sort(out)
	return out
}

func TestParseModelRef(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "pump@3", want: "pump@3"},
		{in: "org@pump@1.2.0", want: "org@pump@1.2.0"},
		{in: "pump", err: `MODEL@VERSION: "pump" has no "@version"`},
		{in: "@3", err: `MODEL@VERSION: "@3" has no model before "@"`},
		{in: "pump@", err: `MODEL@VERSION: "pump@" has no version after "@"`},
		{in: "pu mp@3", err: `MODEL@VERSION: "pu mp@3" is not a model version`},
		{in: "pump@-3", err: `is not a model version`},
	}
	for _, tt := range tests {
		got, err := audit.ParseModelRef(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseModelRef(%q) = %v, %v; want error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("ParseModelRef(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestLineage(t *testing.T) {
	f := audittest.New(t)
	l := f.Open(t)
	tree, err := audit.Lineage(context.Background(), l, audittest.Model)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(tree.Records()), ids([]ledger.Record{f.Round, f.TrainA, f.TrainB, f.SnapA, f.SnapB}); !reflect.DeepEqual(got, want) {
		t.Errorf("lineage records = %v, want %v", got, want)
	}
	if got := tree.Root; got.Ref != audittest.Model || len(got.Parents) != 2 || len(got.Parents[0].Datasets) != 1 ||
		got.Parents[0].Datasets[0].Header.ID != f.SnapA.Header.ID || got.Parents[1].Datasets[0].Header.ID != f.SnapB.Header.ID {
		t.Errorf("tree shape is wrong: %+v", got)
	}
	var buf bytes.Buffer
	if err := tree.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	golden(t, "lineage.golden", buf.Bytes())

	if _, err := audit.Lineage(context.Background(), l, ledger.ModelRef{Model: "pump-anomaly", Version: "9"}); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("lineage of an unknown version = %v, want ErrNotFound", err)
	}
}

func TestVerifyArtifact(t *testing.T) {
	ctx := context.Background()
	f := audittest.New(t)
	l := f.Open(t)
	opts := audit.Options{Keys: f.Keys, Chain: audit.LocalChain(f.Dir)}

	res, err := audit.VerifyArtifact(ctx, l, f.Artifact, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || len(res.Problems) != 0 {
		t.Fatalf("released artifact not verified: %s", res.Verdict)
	}
	wantVerdict := "VERIFIED: artifact sha256:" + audittest.Hash(audittest.Artifact)[:12] + " is model pump-anomaly@2, released by Alice Martin (oem) on stable at 2026-03-02T11:00:00Z; 9 records, all signatures valid, chain intact (11 entries, head "
	if !strings.HasPrefix(res.Verdict, wantVerdict) {
		t.Errorf("verdict = %q, want prefix %q", res.Verdict, wantVerdict)
	}
	if got, want := ids(res.Named), ids([]ledger.Record{f.Round, f.Eval, f.Approval, f.Release, f.Deploy}); !reflect.DeepEqual(got, want) {
		t.Errorf("named = %v, want %v", got, want)
	}

	t.Run("modified artifact", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "modified.bin")
		if err := os.WriteFile(p, append(slices.Clone(audittest.Artifact), ' '), 0o600); err != nil {
			t.Fatal(err)
		}
		res, err := audit.VerifyArtifact(ctx, l, p, opts)
		if err != nil {
			t.Fatal(err)
		}
		if res.OK || !strings.Contains(res.Verdict, "no record names this artifact") {
			t.Errorf("verdict = %q", res.Verdict)
		}
	})
	t.Run("unknown signer", func(t *testing.T) {
		var lines []string
		for _, name := range []string{"gw-a", "gw-b", "alice"} { // not the hub
			s := f.Signers[name]
			lines = append(lines, audit.FormatKey(audit.Key{Name: s.Actor().Name, Org: s.Actor().Org, Public: s.Public()}))
		}
		keys, err := audit.ParseKeyring([]byte(strings.Join(lines, "\n")))
		if err != nil {
			t.Fatal(err)
		}
		res, err := audit.VerifyArtifact(ctx, l, f.Artifact, audit.Options{Keys: keys, Chain: opts.Chain})
		if err != nil {
			t.Fatal(err)
		}
		if res.OK || !strings.Contains(res.Verdict, "unknown actor: key "+f.Signers["hub"].Actor().KeyID[:12]+" claimed by hub (oem) is not in the keyring") ||
			!strings.Contains(res.Verdict, "2 failed their check") {
			t.Errorf("verdict = %q", res.Verdict)
		}
	})
	t.Run("actor mismatch", func(t *testing.T) {
		s := f.Signers["alice"]
		keys, err := audit.ParseKeyring([]byte(strings.Join([]string{
			audit.FormatKey(audit.Key{Name: "Bob", Org: "oem", Public: s.Public()}),
			audit.FormatKey(audit.Key{Name: "hub", Org: "oem", Public: f.Signers["hub"].Public()}),
			audit.FormatKey(audit.Key{Name: "gw-a", Org: "factory-a", Public: f.Signers["gw-a"].Public()}),
			audit.FormatKey(audit.Key{Name: "gw-b", Org: "factory-b", Public: f.Signers["gw-b"].Public()}),
		}, "\n")))
		if err != nil {
			t.Fatal(err)
		}
		res, err := audit.VerifyArtifact(ctx, l, f.Artifact, audit.Options{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		if res.OK || !strings.Contains(res.Verdict, "signed with the key of Bob (oem) but names Alice Martin (oem)") {
			t.Errorf("verdict = %q", res.Verdict)
		}
	})
	t.Run("flipped byte", func(t *testing.T) {
		g := audittest.New(t)
		gl := g.Open(t) // indexed before the damage
		g.FlipByte(t, g.Entry(g.TrainB))
		res, err := audit.VerifyArtifact(ctx, gl, g.Artifact, audit.Options{Keys: g.Keys, Chain: audit.LocalChain(g.Dir)})
		if err != nil {
			t.Fatal(err)
		}
		if res.OK || !strings.Contains(res.Verdict, "chain broken: local ledger "+g.Dir+": ledger entry 3 at offset") ||
			!strings.Contains(res.Verdict, "(the entry was altered)") {
			t.Errorf("verdict = %q", res.Verdict)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		if _, err := audit.VerifyArtifact(ctx, l, filepath.Join(t.TempDir(), "nope"), opts); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err = %v, want ErrNotExist", err)
		}
	})
}

func TestReport(t *testing.T) {
	ctx := context.Background()
	f := audittest.New(t)
	l := f.Open(t)
	opts := audit.Options{Keys: f.Keys, Chain: audit.LocalChain(f.Dir)}
	for _, format := range audit.ReportFormats {
		t.Run(format, func(t *testing.T) {
			out, err := audit.Report(ctx, l, audittest.Model, format, opts)
			if err != nil {
				t.Fatal(err)
			}
			s := string(out)
			for _, want := range []string{
				"Art. 10(2)", "Annex IV §2(d)", "Art. 12", "Art. 19", "Art. 17(1)(d)", // sections' articles
				"site-a", "site-b", "614880", "518400", // data governance
				"fedavg", "pumps-eu", "1.5", // training and aggregation, DP
				"f1", "0.93", "approved", "stable", "1-a", // evaluation, approvals, deployment
				audittest.Hash(audittest.Artifact),
			} {
				if !strings.Contains(s, want) {
					t.Errorf("report has no %q", want)
				}
			}
			if strings.Contains(s, audittest.Hash([]byte("alarm log b"))[:12]) {
				t.Error("report holds the alarm digest of site b, which does not run the model")
			}
			switch format {
			case audit.FormatHTML:
				if strings.Contains(s, "<script") {
					t.Error("html report holds a live <script> from a record")
				}
				if !strings.Contains(s, "&lt;script&gt;") {
					t.Error("html report lost the escaped hostile string")
				}
			case audit.FormatMarkdown:
				if strings.Contains(s, "<script") {
					t.Error("markdown report holds raw HTML from a record")
				}
			case audit.FormatJSON:
				var ev audit.Evidence
				if err := json.Unmarshal(out, &ev); err != nil {
					t.Fatal(err)
				}
				if ev.Integrity.Records != 10 || ev.Integrity.Valid != 10 || ev.Integrity.Chain == nil || ev.Integrity.Chain.Entries != 11 ||
					len(ev.Data) != 2 || ev.Data[0].BadQuality != 15 || ev.DPEpsilonTotal != 1.5 || len(ev.AlarmDigests) != 1 ||
					!strings.HasPrefix(ev.IntendedPurpose, "early warning of bearing wear") {
					t.Errorf("evidence = %+v", ev)
				}
			}
			golden(t, "report."+format, out)
		})
	}
	if _, err := audit.Report(ctx, l, audittest.Model, "pdf", opts); err == nil || !strings.Contains(err.Error(), `report format "pdf" is not supported, expected one of md, html, json`) {
		t.Errorf("unknown format: %v", err)
	}
	if _, err := audit.Report(ctx, l, ledger.ModelRef{Model: "x", Version: "1"}, "md", opts); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("unknown model: %v", err)
	}
}

func TestExportPROV(t *testing.T) {
	f := audittest.New(t)
	out, err := audit.Export(context.Background(), f.Open(t), audittest.Model, audit.FormatPROV)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "export.prov.json", out)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatal(err)
	}
	doc := map[string]map[string]map[string]any{}
	for k, v := range raw {
		if k == "prefix" {
			continue
		}
		var m map[string]map[string]any
		if err := json.Unmarshal(v, &m); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		doc[k] = m
	}
	type rel struct{ kind, a, b string }
	var got []rel
	for _, kind := range []string{"wasDerivedFrom", "used", "wasGeneratedBy", "wasAssociatedWith", "wasAttributedTo"} {
		keys := map[string][2]string{"wasDerivedFrom": {"prov:generatedEntity", "prov:usedEntity"}, "used": {"prov:activity", "prov:entity"},
			"wasGeneratedBy": {"prov:entity", "prov:activity"}, "wasAssociatedWith": {"prov:activity", "prov:agent"},
			"wasAttributedTo": {"prov:entity", "prov:agent"}}[kind]
		for _, r := range doc[kind] {
			got = append(got, rel{kind, r[keys[0]].(string), r[keys[1]].(string)})
		}
	}
	act := func(r ledger.Record) string { return "record:" + strings.ReplaceAll(r.Header.ID, "@", "%40") }
	agent := func(name string) string { return "actor:" + f.Signers[name].Actor().KeyID }
	want := []rel{
		{"wasDerivedFrom", "model:pump-anomaly%402", "model:pump-anomaly%401-a"},
		{"wasDerivedFrom", "model:pump-anomaly%402", "model:pump-anomaly%401-b"},
		{"wasDerivedFrom", "model:pump-anomaly%401-a", "dataset:" + f.SnapA.Header.ID},
		{"wasDerivedFrom", "model:pump-anomaly%401-b", "dataset:" + f.SnapB.Header.ID},
		{"used", act(f.Round), "model:pump-anomaly%401-a"},
		{"used", act(f.Round), "model:pump-anomaly%401-b"},
		{"used", act(f.TrainA), "dataset:" + f.SnapA.Header.ID},
		{"used", act(f.TrainB), "dataset:" + f.SnapB.Header.ID},
		{"wasGeneratedBy", "model:pump-anomaly%402", act(f.Round)},
		{"wasGeneratedBy", "model:pump-anomaly%401-a", act(f.TrainA)},
		{"wasGeneratedBy", "model:pump-anomaly%401-b", act(f.TrainB)},
		{"wasAssociatedWith", act(f.Round), agent("hub")},
		{"wasAssociatedWith", act(f.TrainA), agent("gw-a")},
		{"wasAssociatedWith", act(f.TrainB), agent("gw-b")},
		{"wasAttributedTo", "dataset:" + f.SnapA.Header.ID, agent("gw-a")},
		{"wasAttributedTo", "dataset:" + f.SnapB.Header.ID, agent("gw-b")},
	}
	cmp := func(a, b rel) int { return strings.Compare(a.kind+" "+a.a+" "+a.b, b.kind+" "+b.a+" "+b.b) }
	slices.SortFunc(got, cmp)
	slices.SortFunc(want, cmp)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("relations:\n got %v\nwant %v", got, want)
	}
	// Every relation names declared elements.
	for _, r := range got {
		for _, id := range []string{r.a, r.b} {
			if doc["entity"][id] == nil && doc["activity"][id] == nil && doc["agent"][id] == nil {
				t.Errorf("%s names %s, which is not declared", r.kind, id)
			}
		}
	}
}

func TestExportOpenLineage(t *testing.T) {
	f := audittest.New(t)
	out, err := audit.Export(context.Background(), f.Open(t), audittest.Model, audit.FormatOpenLineage)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "export.openlineage.jsonl", out)
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d events, want 3 (two trainings, one round)", len(lines))
	}
	wantRuns := map[string]string{f.Round.Header.ID: "federation/pumps-eu", f.TrainA.Header.ID: "train/pump-anomaly", f.TrainB.Header.ID: "train/pump-anomaly"}
	for _, line := range lines {
		var ev struct {
			EventType, EventTime, Producer, SchemaURL string
			Run                                       struct {
				RunID  string
				Facets map[string]map[string]any
			}
			Job             struct{ Namespace, Name string }
			Inputs, Outputs []struct{ Namespace, Name string }
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.EventType != "COMPLETE" || ev.EventTime == "" || ev.Producer == "" || !strings.Contains(ev.SchemaURL, "2-0-2") ||
			wantRuns[ev.Run.RunID] != ev.Job.Name || len(ev.Outputs) != 1 || len(ev.Inputs) == 0 {
			t.Errorf("event %s", line)
		}
		facet := ev.Run.Facets["millwright_record"]
		if facet["_producer"] == nil || facet["_schemaURL"] == nil || facet["recordId"] != ev.Run.RunID {
			t.Errorf("record facet %v", facet)
		}
	}
	if _, err := audit.Export(context.Background(), f.Open(t), audittest.Model, "dot"); err == nil || !strings.Contains(err.Error(), "expected one of prov, openlineage") {
		t.Errorf("unknown format: %v", err)
	}
}
