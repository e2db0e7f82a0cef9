package ledger

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
)

// Body is the typed content of a record. Every body type of this package implements it.
type Body interface {
	// Type is the record type the body belongs to.
	Type() Type
	// Validate reports every problem of the body at once, with paths relative to it.
	Validate() error
}

// ModelRef names one model version. A version's artifact SHA-256 is its identity
// everywhere; Model and Version are how people name it.
type ModelRef struct {
	Model   string `json:"model"`
	Version string `json:"version"`
}

func (m ModelRef) String() string { return m.Model + "@" + m.Version }

func (m ModelRef) check(p *config.Problems, path string) {
	checkName(p, config.Join(path, "model"), m.Model)
	checkName(p, config.Join(path, "version"), m.Version)
}

// Producer is implemented by the bodies that bring a model version into being (local
// training, federated round): they name it and the versions it was derived from, which
// makes model versions a DAG like W3C PROV wasDerivedFrom.
type Producer interface {
	Produces() (version ModelRef, parents []ModelRef, datasets []string)
}

// Subject is implemented by the bodies that are about one model version.
type Subject interface {
	About() ModelRef
}

// SignalWindow is the data window of one signal in a dataset snapshot.
type SignalWindow struct {
	Signal     string    `json:"signal"` // factory/line/machine/signal
	From       time.Time `json:"from"`
	To         time.Time `json:"to"`
	Rows       int64     `json:"rows"`
	BadQuality int64     `json:"bad_quality"` // rows whose quality was Bad
	Uncertain  int64     `json:"uncertain"`   // rows whose quality was Uncertain
}

// DatasetSnapshot attests which data a training used, without the data: per signal, the
// window, the row count and the quality statistics, plus the SHA-256 of the snapshot's
// metadata document.
type DatasetSnapshot struct {
	Windows      []SignalWindow `json:"windows"`
	Rows         int64          `json:"rows"`
	MetadataHash string         `json:"metadata_hash"`
}

// LocalTraining attests a model version trained at one site.
type LocalTraining struct {
	ModelRef
	ArtifactHash string             `json:"artifact_hash"`
	Parents      []ModelRef         `json:"parents"`
	Datasets     []string           `json:"datasets"` // ids of dataset_snapshot records
	HyperParams  map[string]any     `json:"hyper_params"`
	Metrics      map[string]float64 `json:"metrics"`
	CodeVersion  string             `json:"code_version"`
}

// DPBudget is the differential-privacy budget a round spent.
type DPBudget struct {
	Epsilon float64 `json:"epsilon"`
	Delta   float64 `json:"delta"`
}

// FederatedRound attests one aggregation of a federation: who took part with which
// update, how they were aggregated, and the model version that came out.
type FederatedRound struct {
	Federation   string     `json:"federation"`
	Round        int64      `json:"round"`
	Participants []string   `json:"participants"`  // sites
	Aggregation  string     `json:"aggregation"`   // e.g. fedavg, trimmed_mean
	DP           *DPBudget  `json:"dp,omitempty"`  // nil when no differential privacy was applied
	InputUpdates []string   `json:"input_updates"` // SHA-256 of each participant's update
	Output       ModelRef   `json:"output"`
	OutputHash   string     `json:"output_hash"`
	Parents      []ModelRef `json:"parents"`
	// Metrics are the round's metrics: the weighted mean, over the participants, of the
	// quality each reported of its own model after the round's training (such as
	// false_alarm_rate). Omitted when the round had none, or had differential privacy
	// (the metrics carry no noise).
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// Evaluation attests how a model version was evaluated.
type Evaluation struct {
	ModelRef
	ArtifactHash string             `json:"artifact_hash"`
	Datasets     []string           `json:"datasets"`
	Metrics      map[string]float64 `json:"metrics"`
	Criteria     string             `json:"criteria"`
	Passed       bool               `json:"passed"`
}

// Approval attests a person's decision about a model version.
type Approval struct {
	ModelRef
	ArtifactHash string `json:"artifact_hash"`
	Decision     string `json:"decision"` // approved or rejected
	Reason       string `json:"reason"`
}

// Release attests that a model version was published on a channel.
type Release struct {
	ModelRef
	ArtifactHash string `json:"artifact_hash"`
	Channel      string `json:"channel"`
	Notes        string `json:"notes"`
}

// Deployment attests that a gateway started running a model version.
type Deployment struct {
	ModelRef
	ArtifactHash string `json:"artifact_hash"`
	Previous     string `json:"previous"` // version that ran before, "" if none
}

// Rollback attests that a gateway went back from one version to another.
type Rollback struct {
	Model       string `json:"model"`
	FromVersion string `json:"from_version"`
	ToVersion   string `json:"to_version"`
	Reason      string `json:"reason"`
}

// AlarmDigest attests the runtime alarm log of a period: how many alarms and the SHA-256
// of the log itself.
type AlarmDigest struct {
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Count   int64     `json:"count"`
	LogHash string    `json:"log_hash"`
}

// Type implementations.
func (DatasetSnapshot) Type() Type { return TypeDatasetSnapshot }
func (LocalTraining) Type() Type   { return TypeLocalTraining }
func (FederatedRound) Type() Type  { return TypeFederatedRound }
func (Evaluation) Type() Type      { return TypeEvaluation }
func (Approval) Type() Type        { return TypeApproval }
func (Release) Type() Type         { return TypeRelease }
func (Deployment) Type() Type      { return TypeDeployment }
func (Rollback) Type() Type        { return TypeRollback }
func (AlarmDigest) Type() Type     { return TypeAlarmDigest }

// Produces implements Producer.
func (b LocalTraining) Produces() (ModelRef, []ModelRef, []string) {
	return b.ModelRef, b.Parents, b.Datasets
}

// Produces implements Producer.
func (b FederatedRound) Produces() (ModelRef, []ModelRef, []string) {
	return b.Output, b.Parents, nil
}

// About implementations.
func (b LocalTraining) About() ModelRef  { return b.ModelRef }
func (b FederatedRound) About() ModelRef { return b.Output }
func (b Evaluation) About() ModelRef     { return b.ModelRef }
func (b Approval) About() ModelRef       { return b.ModelRef }
func (b Release) About() ModelRef        { return b.ModelRef }
func (b Deployment) About() ModelRef     { return b.ModelRef }
func (b Rollback) About() ModelRef       { return ModelRef{Model: b.Model, Version: b.ToVersion} }

// ArtifactOf returns the model version and the artifact hash a body names, if it names
// one: the version a training or round produced, or the one an evaluation, approval,
// release or deployment is about.
func ArtifactOf(body Body) (ModelRef, string, bool) {
	switch b := body.(type) {
	case LocalTraining:
		return b.ModelRef, b.ArtifactHash, true
	case FederatedRound:
		return b.Output, b.OutputHash, true
	case Evaluation:
		return b.ModelRef, b.ArtifactHash, true
	case Approval:
		return b.ModelRef, b.ArtifactHash, true
	case Release:
		return b.ModelRef, b.ArtifactHash, true
	case Deployment:
		return b.ModelRef, b.ArtifactHash, true
	}
	return ModelRef{}, "", false
}

var bodyFactories = map[Type]reflect.Type{
	TypeDatasetSnapshot: reflect.TypeFor[DatasetSnapshot](),
	TypeLocalTraining:   reflect.TypeFor[LocalTraining](),
	TypeFederatedRound:  reflect.TypeFor[FederatedRound](),
	TypeEvaluation:      reflect.TypeFor[Evaluation](),
	TypeApproval:        reflect.TypeFor[Approval](),
	TypeRelease:         reflect.TypeFor[Release](),
	TypeDeployment:      reflect.TypeFor[Deployment](),
	TypeRollback:        reflect.TypeFor[Rollback](),
	TypeAlarmDigest:     reflect.TypeFor[AlarmDigest](),
}

// DecodeBody decodes the body of a record of type t strictly, as DecodeRecord does, and
// validates it. Paths in errors are relative to the body.
func DecodeBody(t Type, b []byte) (Body, error) {
	rt, ok := bodyFactories[t]
	if !ok {
		return nil, fmt.Errorf("cannot decode the body of unknown record type %q", t)
	}
	var p config.Problems
	if !checkJSON(&p, "", b, rt) {
		return nil, p.Err()
	}
	v := reflect.New(rt)
	if err := json.Unmarshal(b, v.Interface()); err != nil { // checkJSON accepted the values: cannot fail
		return nil, err
	}
	body := v.Elem().Interface().(Body)
	p.Nest("", body.Validate())
	if err := p.Err(); err != nil {
		return nil, err
	}
	return body, nil
}

// DecodeBody decodes the record's body strictly and validates it.
func (r Record) DecodeBody() (Body, error) { return DecodeBody(r.Header.Type, r.Body) }

func checkCount(p *config.Problems, path string, v int64) {
	if v < 0 {
		p.Addf(path, "%d is negative, expected a count", v)
	}
}

func checkWindow(p *config.Problems, path string, from, to time.Time) {
	if from.IsZero() {
		p.Addf(config.Join(path, "from"), "missing, expected RFC 3339 UTC")
	}
	if to.IsZero() {
		p.Addf(config.Join(path, "to"), "missing, expected RFC 3339 UTC")
	}
	if !from.IsZero() && !to.IsZero() && to.Before(from) {
		p.Addf(config.Join(path, "to"), "%s is before from (%s)", to.Format(time.RFC3339Nano), from.Format(time.RFC3339Nano))
	}
}

func checkHashes(p *config.Problems, path string, hs []string, min int) {
	if len(hs) < min {
		p.Addf(path, "has %d entries, expected at least %d", len(hs), min)
	}
	for i, h := range hs {
		checkHash(p, config.Index(path, i), h)
	}
}

func checkIDs(p *config.Problems, path string, ids []string) {
	for i, id := range ids {
		if !uuidRE.MatchString(id) {
			p.Addf(config.Index(path, i), "%q is not a record id, expected a lower-case UUID", id)
		}
	}
}

func checkParents(p *config.Problems, path string, self ModelRef, parents []ModelRef) {
	for i, m := range parents {
		m.check(p, config.Index(path, i))
		if m == self {
			p.Addf(config.Index(path, i), "%s is the version itself, expected an earlier version", m)
		}
	}
}

func checkMetrics(p *config.Problems, path string, m map[string]float64) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !nameRE.MatchString(k) {
			p.Addf(config.Join(path, k), "is not a metric name, expected an identifier")
		}
	}
}

// Validate implements Body.
func (b DatasetSnapshot) Validate() error {
	var p config.Problems
	if len(b.Windows) == 0 {
		p.Addf("windows", "empty, expected at least one signal window")
	}
	var sum int64
	for i, w := range b.Windows {
		path := config.Index("windows", i)
		checkText(&p, config.Join(path, "signal"), w.Signal, true)
		checkWindow(&p, path, w.From, w.To)
		checkCount(&p, config.Join(path, "rows"), w.Rows)
		checkCount(&p, config.Join(path, "bad_quality"), w.BadQuality)
		checkCount(&p, config.Join(path, "uncertain"), w.Uncertain)
		if w.BadQuality+w.Uncertain > w.Rows {
			p.Addf(path, "bad_quality (%d) + uncertain (%d) exceed rows (%d)", w.BadQuality, w.Uncertain, w.Rows)
		}
		sum += w.Rows
	}
	checkCount(&p, "rows", b.Rows)
	if len(b.Windows) > 0 && sum != b.Rows {
		p.Addf("rows", "%d is not the sum of the windows' rows (%d)", b.Rows, sum)
	}
	checkHash(&p, "metadata_hash", b.MetadataHash)
	return p.Err()
}

// Validate implements Body.
func (b LocalTraining) Validate() error {
	var p config.Problems
	b.ModelRef.check(&p, "")
	checkHash(&p, "artifact_hash", b.ArtifactHash)
	checkParents(&p, "parents", b.ModelRef, b.Parents)
	checkIDs(&p, "datasets", b.Datasets)
	for _, k := range slices.Sorted(maps.Keys(b.HyperParams)) {
		switch v := b.HyperParams[k].(type) {
		case string, bool, float64:
		default:
			p.Addf(config.Join("hyper_params", k), "%v is not a scalar, expected a string, number or boolean", v)
		}
	}
	checkMetrics(&p, "metrics", b.Metrics)
	checkText(&p, "code_version", b.CodeVersion, true)
	return p.Err()
}

// Validate implements Body.
func (b FederatedRound) Validate() error {
	var p config.Problems
	checkName(&p, "federation", b.Federation)
	if b.Round < 0 {
		p.Addf("round", "%d is negative, expected a round number", b.Round)
	}
	if len(b.Participants) == 0 {
		p.Addf("participants", "empty, expected at least one site")
	}
	for i, s := range b.Participants {
		checkName(&p, config.Index("participants", i), s)
	}
	checkName(&p, "aggregation", b.Aggregation)
	if b.DP != nil {
		if !(b.DP.Epsilon > 0) || math.IsInf(b.DP.Epsilon, 0) {
			p.Addf("dp.epsilon", "%v is not a privacy budget, expected a positive number", b.DP.Epsilon)
		}
		if b.DP.Delta < 0 || b.DP.Delta >= 1 {
			p.Addf("dp.delta", "%v is out of range, expected 0 <= delta < 1", b.DP.Delta)
		}
	}
	checkHashes(&p, "input_updates", b.InputUpdates, 1)
	b.Output.check(&p, "output")
	checkHash(&p, "output_hash", b.OutputHash)
	checkParents(&p, "parents", b.Output, b.Parents)
	checkMetrics(&p, "metrics", b.Metrics)
	return p.Err()
}

// Validate implements Body.
func (b Evaluation) Validate() error {
	var p config.Problems
	b.ModelRef.check(&p, "")
	checkHash(&p, "artifact_hash", b.ArtifactHash)
	checkIDs(&p, "datasets", b.Datasets)
	checkMetrics(&p, "metrics", b.Metrics)
	checkText(&p, "criteria", b.Criteria, false)
	return p.Err()
}

// Validate implements Body.
func (b Approval) Validate() error {
	var p config.Problems
	b.ModelRef.check(&p, "")
	checkHash(&p, "artifact_hash", b.ArtifactHash)
	if b.Decision != "approved" && b.Decision != "rejected" {
		p.Addf("decision", "%q is not a decision, expected approved or rejected", b.Decision)
	}
	checkText(&p, "reason", b.Reason, false)
	return p.Err()
}

// Validate implements Body.
func (b Release) Validate() error {
	var p config.Problems
	b.ModelRef.check(&p, "")
	checkHash(&p, "artifact_hash", b.ArtifactHash)
	checkName(&p, "channel", b.Channel)
	checkText(&p, "notes", b.Notes, false)
	return p.Err()
}

// Validate implements Body.
func (b Deployment) Validate() error {
	var p config.Problems
	b.ModelRef.check(&p, "")
	checkHash(&p, "artifact_hash", b.ArtifactHash)
	if b.Previous != "" {
		checkName(&p, "previous", b.Previous)
	}
	return p.Err()
}

// Validate implements Body.
func (b Rollback) Validate() error {
	var p config.Problems
	checkName(&p, "model", b.Model)
	checkName(&p, "from_version", b.FromVersion)
	checkName(&p, "to_version", b.ToVersion)
	if b.FromVersion != "" && b.FromVersion == b.ToVersion {
		p.Addf("to_version", "%q is from_version, expected another version", b.ToVersion)
	}
	checkText(&p, "reason", b.Reason, true)
	return p.Err()
}

// Validate implements Body.
func (b AlarmDigest) Validate() error {
	var p config.Problems
	checkWindow(&p, "", b.From, b.To)
	checkCount(&p, "count", b.Count)
	checkHash(&p, "log_hash", b.LogHash)
	return p.Err()
}
