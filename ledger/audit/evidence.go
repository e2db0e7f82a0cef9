package audit

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/millwright-io/millwright/ledger"
)

// Section is one part of the evidence pack and the EU AI Act (Regulation (EU) 2024/1689)
// provisions it serves.
type Section struct {
	Key      string   `json:"key"`
	Title    string   `json:"title"`
	Articles []string `json:"articles"`
}

// Sections lists the parts of the evidence pack, in report order. The mapping says which
// provision the records contribute evidence to; it is not a conformity assessment.
var Sections = []Section{
	{"purpose", "Identification and intended purpose", []string{"Art. 11", "Annex IV §1(a)"}},
	{"versions", "Version history", []string{"Art. 11", "Annex IV §1(a)", "Annex IV §6"}},
	{"data", "Data governance per site", []string{"Art. 10(2)", "Annex IV §2(d)"}},
	{"training", "Training and aggregation", []string{"Art. 11", "Annex IV §2(a)-(b)"}},
	{"evaluation", "Evaluation", []string{"Art. 15(3)", "Art. 17(1)(d)", "Annex IV §2(g)"}},
	{"approvals", "Approvals and releases", []string{"Art. 17(1)(d)", "Annex IV §2(g)"}},
	{"deployments", "Deployments and rollbacks", []string{"Art. 12", "Art. 19", "Annex IV §6"}},
	{"alarms", "Runtime alarm log digests", []string{"Art. 12(2)", "Art. 19", "Art. 72"}},
	{"integrity", "Integrity of the records", []string{"Art. 12(1)", "Art. 19"}},
}

// Entry is the header of a record as a report shows it.
type Entry struct {
	ID        string      `json:"id"`
	Hash      string      `json:"hash"`
	Type      ledger.Type `json:"type"`
	Time      time.Time   `json:"time"`
	Site      string      `json:"site"`
	Gateway   string      `json:"gateway,omitempty"`
	Actor     string      `json:"actor"` // name (org)
	KeyID     string      `json:"key_id"`
	Firmware  string      `json:"firmware_version,omitempty"`
	Signature string      `json:"signature"` // "valid", "not checked", or why it failed
	// AppendedAt is when the ledger appended the record, give or take AppendTolerance, on
	// a ledger that vouches for it (ledger.AppendTimes: Fabric); zero elsewhere. Unlike
	// Time, its signer did not choose it.
	AppendedAt      time.Time `json:"appended_at,omitzero"`
	AppendTolerance string    `json:"append_tolerance,omitempty"`
}

// Row types pair a record's header with its body.
type (
	VersionRow struct {
		Record       Entry             `json:"record"`
		Version      ledger.ModelRef   `json:"version"`
		ArtifactHash string            `json:"artifact_hash"`
		Parents      []ledger.ModelRef `json:"parents"`
	}
	SnapshotRow struct {
		Record Entry `json:"record"`
		ledger.DatasetSnapshot
		BadQuality int64 `json:"bad_quality"`
		Uncertain  int64 `json:"uncertain"`
	}
	SiteData struct {
		Site       string        `json:"site"`
		Snapshots  []SnapshotRow `json:"snapshots"`
		Rows       int64         `json:"rows"`
		BadQuality int64         `json:"bad_quality"`
		Uncertain  int64         `json:"uncertain"`
	}
	TrainingRow struct {
		Record Entry `json:"record"`
		ledger.LocalTraining
	}
	RoundRow struct {
		Record Entry `json:"record"`
		ledger.FederatedRound
	}
	EvaluationRow struct {
		Record Entry `json:"record"`
		ledger.Evaluation
	}
	ApprovalRow struct {
		Record Entry `json:"record"`
		ledger.Approval
	}
	ReleaseRow struct {
		Record Entry `json:"record"`
		ledger.Release
	}
	DeploymentRow struct {
		Record Entry `json:"record"`
		ledger.Deployment
	}
	RollbackRow struct {
		Record Entry `json:"record"`
		ledger.Rollback
	}
	DigestRow struct {
		Record Entry `json:"record"`
		ledger.AlarmDigest
	}
)

// Integrity summarises the checks of the records in an evidence pack.
type Integrity struct {
	Records    int          `json:"records"`
	Checked    bool         `json:"signatures_checked"`
	Valid      int          `json:"signatures_valid"`
	Problems   []string     `json:"problems"`
	Chain      *ChainStatus `json:"chain,omitempty"`
	ChainError string       `json:"chain_error,omitempty"`
}

// Evidence is the evidence pack of one model version, as Report renders it.
type Evidence struct {
	Model        ledger.ModelRef `json:"model"`
	ArtifactHash string          `json:"artifact_sha256"`
	Generated    *time.Time      `json:"generated,omitempty"`
	// IntendedPurpose is the text after "Intended purpose:" on a line of an approval's
	// reason or a release's notes (the first found); "" when none states it.
	IntendedPurpose string          `json:"intended_purpose"`
	Sections        []Section       `json:"sections"`
	Versions        []VersionRow    `json:"versions"`
	Data            []SiteData      `json:"data_governance"`
	Trainings       []TrainingRow   `json:"local_trainings"`
	Rounds          []RoundRow      `json:"federated_rounds"`
	DPEpsilonTotal  float64         `json:"dp_epsilon_total"` // sum over the rounds (basic composition: an upper bound)
	RoundsWithoutDP int             `json:"rounds_without_dp"`
	Evaluations     []EvaluationRow `json:"evaluations"`
	Approvals       []ApprovalRow   `json:"approvals"`
	Releases        []ReleaseRow    `json:"releases"`
	Deployments     []DeploymentRow `json:"deployments"`
	Rollbacks       []RollbackRow   `json:"rollbacks"`
	AlarmDigests    []DigestRow     `json:"alarm_digests"`
	Missing         []string        `json:"missing"` // ancestors and snapshots named but not in the ledger
	Integrity       Integrity       `json:"integrity"`
}

// Collect gathers the evidence pack of ref: its lineage, every record about it, rollbacks
// from it, and the alarm digests of the sites it was deployed to that end after its first
// deployment there. An error wraps ledger.ErrNotFound when no record produced ref.
func Collect(ctx context.Context, q ledger.Querier, ref ledger.ModelRef, opts Options) (Evidence, error) {
	tree, err := Lineage(ctx, q, ref)
	if err != nil {
		return Evidence{}, err
	}
	ev := Evidence{Model: ref, Sections: Sections, Missing: tree.Lineage.Missing}
	if opts.Now != nil {
		t := opts.Now().UTC()
		ev.Generated = &t
	}
	about, err := q.Query(ctx, ledger.Query{Model: ref})
	if err != nil {
		return Evidence{}, fmt.Errorf("evidence of %s: %w", ref, err)
	}
	rollbacks, err := q.Query(ctx, ledger.Query{Type: ledger.TypeRollback, Model: ledger.ModelRef{Model: ref.Model}})
	if err != nil {
		return Evidence{}, fmt.Errorf("evidence of %s: %w", ref, err)
	}
	seen := map[string]bool{}
	var recs []ledger.Record
	add := func(rs ...ledger.Record) {
		for _, r := range rs {
			if !seen[r.Header.ID] {
				seen[r.Header.ID] = true
				recs = append(recs, r)
			}
		}
	}
	add(tree.Records()...)
	add(about...)
	for _, r := range rollbacks {
		if b, err := r.DecodeBody(); err == nil && b.(ledger.Rollback).FromVersion == ref.Version {
			add(r)
		}
	}
	// Alarm digests of the sites running ref, from its first deployment there on.
	deployedAt := map[string]time.Time{}
	for _, r := range recs {
		if r.Header.Type != ledger.TypeDeployment {
			continue
		}
		if t, ok := deployedAt[r.Header.Site]; !ok || r.Header.Time.Before(t) {
			deployedAt[r.Header.Site] = r.Header.Time
		}
	}
	for _, site := range slices.Sorted(maps.Keys(deployedAt)) {
		digests, err := q.Query(ctx, ledger.Query{Type: ledger.TypeAlarmDigest, Site: site})
		if err != nil {
			return Evidence{}, fmt.Errorf("evidence of %s: alarm digests of %s: %w", ref, site, err)
		}
		for _, r := range digests {
			if b, err := r.DecodeBody(); err == nil && b.(ledger.AlarmDigest).To.After(deployedAt[site]) {
				add(r)
			}
		}
	}

	ev.Integrity.Records = len(recs)
	ev.Integrity.Checked = opts.Keys != nil
	before := map[string]After{} // what each record came after (restOn, appendedOn)
	restOn(before, ref, about)
	appended, err := appendedOn(ctx, q, before, recs)
	if err != nil {
		return Evidence{}, fmt.Errorf("evidence of %s: %w", ref, err)
	}
	sites := map[string]*SiteData{}
	var siteOrder []string
	for _, rec := range recs {
		e, err := entry(rec, opts.Keys, before[rec.Header.ID], appended[rec.Header.ID])
		if err != nil {
			return Evidence{}, fmt.Errorf("evidence of %s: %w", ref, err)
		}
		if e.Signature == "valid" {
			ev.Integrity.Valid++
		} else if opts.Keys != nil {
			ev.Integrity.Problems = append(ev.Integrity.Problems, fmt.Sprintf("%s record %s: %s", rec.Header.Type, rec.Header.ID, e.Signature))
		}
		body, err := rec.DecodeBody()
		if err != nil {
			return Evidence{}, fmt.Errorf("evidence of %s: record %s: %w", ref, rec.Header.ID, err)
		}
		if p, ok := body.(ledger.Producer); ok {
			v, parents, _ := p.Produces()
			_, h, _ := ledger.ArtifactOf(body)
			ev.Versions = append(ev.Versions, VersionRow{Record: e, Version: v, ArtifactHash: h, Parents: parents})
			if v == ref && ev.ArtifactHash == "" {
				ev.ArtifactHash = h
			}
		}
		switch b := body.(type) {
		case ledger.DatasetSnapshot:
			row := SnapshotRow{Record: e, DatasetSnapshot: b}
			for _, w := range b.Windows {
				row.BadQuality += w.BadQuality
				row.Uncertain += w.Uncertain
			}
			sd, ok := sites[e.Site]
			if !ok {
				sd = &SiteData{Site: e.Site}
				sites[e.Site] = sd
				siteOrder = append(siteOrder, e.Site)
			}
			sd.Snapshots = append(sd.Snapshots, row)
			sd.Rows += b.Rows
			sd.BadQuality += row.BadQuality
			sd.Uncertain += row.Uncertain
		case ledger.LocalTraining:
			ev.Trainings = append(ev.Trainings, TrainingRow{e, b})
		case ledger.FederatedRound:
			ev.Rounds = append(ev.Rounds, RoundRow{e, b})
			if b.DP != nil {
				ev.DPEpsilonTotal += b.DP.Epsilon
			} else {
				ev.RoundsWithoutDP++
			}
		case ledger.Evaluation:
			ev.Evaluations = append(ev.Evaluations, EvaluationRow{e, b})
		case ledger.Approval:
			ev.Approvals = append(ev.Approvals, ApprovalRow{e, b})
			if ev.IntendedPurpose == "" {
				ev.IntendedPurpose = intendedPurpose(b.Reason)
			}
		case ledger.Release:
			ev.Releases = append(ev.Releases, ReleaseRow{e, b})
			if ev.IntendedPurpose == "" {
				ev.IntendedPurpose = intendedPurpose(b.Notes)
			}
		case ledger.Deployment:
			ev.Deployments = append(ev.Deployments, DeploymentRow{e, b})
		case ledger.Rollback:
			ev.Rollbacks = append(ev.Rollbacks, RollbackRow{e, b})
		case ledger.AlarmDigest:
			ev.AlarmDigests = append(ev.AlarmDigests, DigestRow{e, b})
		}
	}
	for _, s := range siteOrder {
		ev.Data = append(ev.Data, *sites[s])
	}
	if opts.Chain != nil {
		st, err := opts.Chain.VerifyChain(ctx)
		ev.Integrity.Chain = &st
		if err != nil {
			ev.Integrity.ChainError = err.Error()
		}
	}
	return ev, nil
}

// entry returns the report header of rec, with its signature checked against keys, for
// a record that came after after (Keyring.CheckAfter) and was appended when appended says
// (zero: the ledger does not say).
func entry(rec ledger.Record, keys *Keyring, after After, appended ledger.Appended) (Entry, error) {
	h, err := ledger.Hash(rec)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{ID: rec.Header.ID, Hash: h, Type: rec.Header.Type, Time: rec.Header.Time, Site: rec.Header.Site,
		Gateway: rec.Header.Gateway, Actor: rec.Header.Actor.Name + " (" + rec.Header.Actor.Org + ")",
		KeyID: rec.Header.Actor.KeyID, Firmware: rec.Header.FirmwareVersion, Signature: "not checked"}
	if !appended.At.IsZero() {
		e.AppendedAt, e.AppendTolerance = appended.At.UTC(), appended.Tolerance.String()
	}
	if keys != nil {
		e.Signature = "valid"
		if err := keys.CheckAfter(rec, after); err != nil {
			switch {
			case errors.Is(err, ledger.ErrUnknownActor):
				e.Signature = "unknown signer: " + err.Error()
			default:
				e.Signature = "INVALID: " + err.Error()
			}
		}
	}
	return e, nil
}

// intendedPurpose returns the text after "Intended purpose:" (any case) on a line of s.
func intendedPurpose(s string) string {
	const p = "intended purpose:"
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimSpace(line)
		if len(line) >= len(p) && strings.EqualFold(line[:len(p)], p) {
			return strings.TrimSpace(line[len(p):])
		}
	}
	return ""
}

// FormatMetrics renders metrics sorted by name, "k=v, ..." ("no metrics" when empty).
func FormatMetrics(m map[string]float64) string { return formatSorted(m, "no metrics") }

// formatParams renders hyper-parameters sorted by name.
func formatParams(m map[string]any) string { return formatSorted(m, "none recorded") }

// formatSorted renders m as "k=v, ..." sorted by key (%v, which is %g for floats), or none
// when m is empty.
func formatSorted[V any](m map[string]V, none string) string {
	if len(m) == 0 {
		return none
	}
	s := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		s = append(s, fmt.Sprintf("%s=%v", k, m[k]))
	}
	return strings.Join(s, ", ")
}
