package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/millwright-io/millwright/ledger"
)

// Export formats.
const (
	// FormatPROV is W3C PROV-JSON (W3C Member Submission, 30 April 2013,
	// https://www.w3.org/submissions/prov-json/): one document.
	FormatPROV = "prov"
	// FormatOpenLineage is OpenLineage RunEvents (spec 2-0-2,
	// https://openlineage.io/spec/2-0-2/OpenLineage.json): one COMPLETE event per local
	// training and federated round, one JSON object per line (JSON Lines), in ledger order.
	FormatOpenLineage = "openlineage"
)

// ExportFormats lists the formats Export accepts.
var ExportFormats = []string{FormatPROV, FormatOpenLineage}

// Namespaces of the identifiers exports use.
const (
	provNamespace = "https://millwright.io/ns/prov#"
	// Producer is the OpenLineage producer URI of these events.
	Producer = "https://github.com/millwright-io/millwright/ledger/audit"
	// openLineageSchema is the RunEvent schema the events follow.
	openLineageSchema = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
	// recordFacetSchema describes the custom run facet carrying the ledger record.
	recordFacetSchema = "https://github.com/millwright-io/millwright/blob/main/ledger/audit/export.go#MillwrightRecordRunFacet"
)

// Export writes the lineage of ref (see Lineage) in format. An error wraps
// ledger.ErrNotFound when no record produced ref.
func Export(ctx context.Context, q ledger.Querier, ref ledger.ModelRef, format string) ([]byte, error) {
	if !slices.Contains(ExportFormats, format) {
		return nil, fmt.Errorf("export format %q is not supported, expected one of %s", format, strings.Join(ExportFormats, ", "))
	}
	tree, err := Lineage(ctx, q, ref)
	if err != nil {
		return nil, err
	}
	if format == FormatPROV {
		return exportPROV(tree)
	}
	return exportOpenLineage(tree)
}

// qname returns a PROV qualified name prefix:local whose local part holds only
// characters PROV-N allows unescaped ([A-Za-z0-9_.-]); any other byte is percent-encoded.
func qname(prefix, local string) string {
	var b strings.Builder
	b.WriteString(prefix)
	b.WriteByte(':')
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

type provDoc struct {
	Prefix            map[string]string         `json:"prefix"`
	Entity            map[string]map[string]any `json:"entity"`
	Activity          map[string]map[string]any `json:"activity"`
	Agent             map[string]map[string]any `json:"agent"`
	WasGeneratedBy    map[string]map[string]any `json:"wasGeneratedBy"`
	Used              map[string]map[string]any `json:"used"`
	WasDerivedFrom    map[string]map[string]any `json:"wasDerivedFrom"`
	WasAssociatedWith map[string]map[string]any `json:"wasAssociatedWith"`
	WasAttributedTo   map[string]map[string]any `json:"wasAttributedTo"`
}

func (d *provDoc) relation(m map[string]map[string]any, kind string, attrs map[string]any) {
	m[fmt.Sprintf("_:%s%d", kind, len(m)+1)] = attrs
}

func provTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// exportPROV maps a lineage to PROV: model versions and dataset snapshots are entities,
// the records producing versions (local training, federated round) are activities, the
// actors who signed records are agents. A version wasGeneratedBy its activity,
// wasDerivedFrom each parent (through the activity), the activity used the parents and
// the snapshots and wasAssociatedWith its signer; a snapshot wasAttributedTo its signer.
func exportPROV(t Tree) ([]byte, error) {
	d := provDoc{
		Prefix: map[string]string{"mw": provNamespace, "model": "urn:millwright:model:", "dataset": "urn:millwright:dataset:",
			"record": "urn:millwright:record:", "actor": "urn:millwright:key:"},
		Entity: map[string]map[string]any{}, Activity: map[string]map[string]any{}, Agent: map[string]map[string]any{},
		WasGeneratedBy: map[string]map[string]any{}, Used: map[string]map[string]any{}, WasDerivedFrom: map[string]map[string]any{},
		WasAssociatedWith: map[string]map[string]any{}, WasAttributedTo: map[string]map[string]any{},
	}
	agent := func(rec ledger.Record) string {
		a := rec.Header.Actor
		id := qname("actor", a.KeyID)
		d.Agent[id] = map[string]any{"prov:type": "prov:SoftwareAgent", "prov:label": a.Name, "mw:org": a.Org, "mw:keyId": a.KeyID}
		return id
	}
	model := func(m ledger.ModelRef) string {
		id := qname("model", m.String())
		if _, ok := d.Entity[id]; !ok {
			d.Entity[id] = map[string]any{"prov:type": "mw:ModelVersion", "prov:label": m.String(), "mw:model": m.Model, "mw:version": m.Version}
		}
		return id
	}
	for _, rec := range t.Lineage.Datasets {
		body, err := rec.DecodeBody()
		if err != nil {
			return nil, fmt.Errorf("export prov: record %s: %w", rec.Header.ID, err)
		}
		b := body.(ledger.DatasetSnapshot)
		from, to := snapshotSpan(b)
		id := qname("dataset", rec.Header.ID)
		d.Entity[id] = map[string]any{"prov:type": "mw:DatasetSnapshot", "mw:site": rec.Header.Site, "mw:rows": b.Rows,
			"mw:windows": len(b.Windows), "mw:from": provTime(from), "mw:to": provTime(to), "mw:metadataSha256": b.MetadataHash,
			"mw:record": rec.Header.ID}
		d.relation(d.WasAttributedTo, "att", map[string]any{"prov:entity": id, "prov:agent": agent(rec)})
	}
	for _, rec := range t.Lineage.Versions {
		body, err := rec.DecodeBody()
		if err != nil {
			return nil, fmt.Errorf("export prov: record %s: %w", rec.Header.ID, err)
		}
		v, parents, datasets := body.(ledger.Producer).Produces()
		_, artifact, _ := ledger.ArtifactOf(body)
		act := qname("record", rec.Header.ID)
		attrs := map[string]any{"prov:type": "mw:" + string(rec.Header.Type), "prov:endTime": provTime(rec.Header.Time),
			"mw:site": rec.Header.Site}
		if r, ok := body.(ledger.FederatedRound); ok {
			attrs["mw:federation"], attrs["mw:round"], attrs["mw:aggregation"] = r.Federation, r.Round, r.Aggregation
			attrs["mw:participants"] = strings.Join(r.Participants, " ")
			if r.DP != nil {
				attrs["mw:dpEpsilon"], attrs["mw:dpDelta"] = r.DP.Epsilon, r.DP.Delta
			}
		}
		if lt, ok := body.(ledger.LocalTraining); ok {
			attrs["mw:codeVersion"] = lt.CodeVersion
		}
		for k, v := range metricsOf(body) { // metric names are identifiers: valid in a QName
			attrs["mw:metric_"+k] = v
		}
		d.Activity[act] = attrs
		ent := model(v)
		d.Entity[ent]["mw:artifactSha256"] = artifact
		d.relation(d.WasGeneratedBy, "gen", map[string]any{"prov:entity": ent, "prov:activity": act, "prov:time": provTime(rec.Header.Time)})
		d.relation(d.WasAssociatedWith, "assoc", map[string]any{"prov:activity": act, "prov:agent": agent(rec)})
		for _, p := range parents {
			pe := model(p)
			d.relation(d.Used, "use", map[string]any{"prov:activity": act, "prov:entity": pe})
			d.relation(d.WasDerivedFrom, "der", map[string]any{"prov:generatedEntity": ent, "prov:usedEntity": pe, "prov:activity": act})
		}
		for _, id := range datasets {
			de := qname("dataset", id)
			if _, ok := d.Entity[de]; !ok { // named but not in the ledger
				d.Entity[de] = map[string]any{"prov:type": "mw:DatasetSnapshot", "mw:record": id, "mw:missing": true}
			}
			d.relation(d.Used, "use", map[string]any{"prov:activity": act, "prov:entity": de})
			d.relation(d.WasDerivedFrom, "der", map[string]any{"prov:generatedEntity": ent, "prov:usedEntity": de, "prov:activity": act})
		}
	}
	return marshalIndent(d)
}

func marshalIndent(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// OpenLineage RunEvent (spec 2-0-2), the fields this package writes.
type (
	olEvent struct {
		EventType string      `json:"eventType"`
		EventTime string      `json:"eventTime"`
		Run       olRun       `json:"run"`
		Job       olJob       `json:"job"`
		Inputs    []olDataset `json:"inputs"`
		Outputs   []olDataset `json:"outputs"`
		Producer  string      `json:"producer"`
		SchemaURL string      `json:"schemaURL"`
	}
	olRun struct {
		RunID  string         `json:"runId"`
		Facets map[string]any `json:"facets"`
	}
	olJob struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	}
	olDataset struct {
		Namespace string         `json:"namespace"`
		Name      string         `json:"name"`
		Facets    map[string]any `json:"facets,omitempty"`
	}
	// olRecordFacet is the custom run facet "millwright_record": the ledger record behind
	// the run.
	olRecordFacet struct {
		Producer  string   `json:"_producer"`
		SchemaURL string   `json:"_schemaURL"`
		RecordID  string   `json:"recordId"`
		Hash      string   `json:"recordSha256"`
		Type      string   `json:"type"`
		Site      string   `json:"site"`
		Gateway   string   `json:"gateway,omitempty"`
		Actor     string   `json:"actor"`
		Org       string   `json:"org"`
		KeyID     string   `json:"keyId"`
		Artifact  string   `json:"artifactSha256"`
		Code      string   `json:"codeVersion,omitempty"`
		Round     *int64   `json:"round,omitempty"`
		Agg       string   `json:"aggregation,omitempty"`
		Parts     []string `json:"participants,omitempty"`
		DPEpsilon *float64 `json:"dpEpsilon,omitempty"`
		DPDelta   *float64 `json:"dpDelta,omitempty"`
		// Metrics are a training's metrics, or a federated round's (the participants' mean).
		Metrics map[string]float64 `json:"metrics,omitempty"`
	}
)

// metricsOf returns the metrics a producing record states: a local training's, or a
// federated round's; nil for other records.
func metricsOf(body ledger.Body) map[string]float64 {
	switch b := body.(type) {
	case ledger.LocalTraining:
		return b.Metrics
	case ledger.FederatedRound:
		return b.Metrics
	}
	return nil
}

// exportOpenLineage writes one COMPLETE RunEvent per producing record of the lineage. The
// run id is the record id (a UUID); the job is "train/MODEL" in namespace
// "millwright://SITE" for a local training and "federation/FEDERATION" in
// "millwright://federation" for a round; model versions are datasets in namespace
// "millwright://models" named MODEL@VERSION, snapshots are datasets in
// "millwright://SITE" named "snapshot/ID".
func exportOpenLineage(t Tree) ([]byte, error) {
	site := map[string]string{}
	for _, d := range t.Lineage.Datasets {
		site[d.Header.ID] = d.Header.Site
	}
	modelDS := func(m ledger.ModelRef) olDataset {
		return olDataset{Namespace: "millwright://models", Name: m.String()}
	}
	var buf bytes.Buffer
	for _, rec := range t.Lineage.Versions {
		body, err := rec.DecodeBody()
		if err != nil {
			return nil, fmt.Errorf("export openlineage: record %s: %w", rec.Header.ID, err)
		}
		h, err := ledger.Hash(rec)
		if err != nil {
			return nil, err
		}
		v, parents, datasets := body.(ledger.Producer).Produces()
		_, artifact, _ := ledger.ArtifactOf(body)
		facet := olRecordFacet{Producer: Producer, SchemaURL: recordFacetSchema, RecordID: rec.Header.ID, Hash: h,
			Type: string(rec.Header.Type), Site: rec.Header.Site, Gateway: rec.Header.Gateway, Actor: rec.Header.Actor.Name,
			Org: rec.Header.Actor.Org, KeyID: rec.Header.Actor.KeyID, Artifact: artifact}
		ev := olEvent{EventType: "COMPLETE", EventTime: provTime(rec.Header.Time), Run: olRun{RunID: rec.Header.ID},
			Inputs: []olDataset{}, Outputs: []olDataset{modelDS(v)}, Producer: Producer, SchemaURL: openLineageSchema}
		facet.Metrics = metricsOf(body)
		switch b := body.(type) {
		case ledger.LocalTraining:
			ev.Job = olJob{Namespace: "millwright://" + rec.Header.Site, Name: "train/" + b.Model}
			facet.Code = b.CodeVersion
		case ledger.FederatedRound:
			ev.Job = olJob{Namespace: "millwright://federation", Name: "federation/" + b.Federation}
			facet.Round, facet.Agg, facet.Parts = &b.Round, b.Aggregation, b.Participants
			if b.DP != nil {
				facet.DPEpsilon, facet.DPDelta = &b.DP.Epsilon, &b.DP.Delta
			}
		}
		ev.Run.Facets = map[string]any{"millwright_record": facet}
		for _, p := range parents {
			ev.Inputs = append(ev.Inputs, modelDS(p))
		}
		for _, id := range datasets {
			ns := "millwright://unknown-site" // named but not in the ledger
			if s, ok := site[id]; ok {
				ns = "millwright://" + s
			}
			ev.Inputs = append(ev.Inputs, olDataset{Namespace: ns, Name: "snapshot/" + id})
		}
		line, err := json.Marshal(ev)
		if err != nil {
			return nil, err
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	return buf.Bytes(), nil
}
