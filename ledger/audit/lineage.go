package audit

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/millwright-io/millwright/ledger"
)

// ParseModelRef parses MODEL@VERSION. The version is what follows the last "@" (model
// names may contain "@"); both parts must be identifiers as the ledger schema defines them.
func ParseModelRef(s string) (ledger.ModelRef, error) {
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return ledger.ModelRef{}, fmt.Errorf("MODEL@VERSION: %q has no \"@version\"", s)
	}
	m := ledger.ModelRef{Model: s[:i], Version: s[i+1:]}
	switch {
	case m.Model == "":
		return ledger.ModelRef{}, fmt.Errorf("MODEL@VERSION: %q has no model before \"@\"", s)
	case m.Version == "":
		return ledger.ModelRef{}, fmt.Errorf("MODEL@VERSION: %q has no version after \"@\"", s)
	case !validName(m.Model) || !validName(m.Version):
		return ledger.ModelRef{}, fmt.Errorf("MODEL@VERSION: %q is not a model version, expected identifiers of A-Z a-z 0-9 _ . : / + - on both sides of \"@\"", s)
	}
	return m, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !ok && i > 0 {
			ok = strings.ContainsRune("_.:@/+-", c)
		}
		if !ok {
			return false
		}
	}
	return true
}

// short returns the first 12 characters of a hash or id, enough to tell records apart in
// text and to search for them.
func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// Node is one model version in a lineage tree.
type Node struct {
	Ref ledger.ModelRef
	// Producers are the records that produced the version (normally one); empty when the
	// version is named as a parent but not in the ledger.
	Producers []ledger.Record
	Parents   []*Node         // versions it was derived from, in the order the producer names them
	Datasets  []ledger.Record // dataset_snapshot records its producers name and the ledger holds
	// MissingDatasets are the snapshot ids its producers name but the ledger does not hold.
	MissingDatasets []string
}

// Tree is the provenance DAG of a model version, from the version down to the dataset
// snapshots. A version reached along two paths is one Node.
type Tree struct {
	Root    *Node
	Lineage ledger.Lineage
}

// Lineage returns the provenance tree of ref. An error wraps ledger.ErrNotFound when no
// record produced ref.
func Lineage(ctx context.Context, q ledger.Querier, ref ledger.ModelRef) (Tree, error) {
	lin, err := q.Lineage(ctx, ref)
	if err != nil {
		return Tree{}, fmt.Errorf("lineage of %s: %w", ref, err)
	}
	nodes := map[ledger.ModelRef]*Node{}
	node := func(m ledger.ModelRef) *Node {
		n, ok := nodes[m]
		if !ok {
			n = &Node{Ref: m}
			nodes[m] = n
		}
		return n
	}
	datasets := map[string]ledger.Record{}
	for _, d := range lin.Datasets {
		datasets[d.Header.ID] = d
	}
	for _, rec := range lin.Versions {
		body, err := rec.DecodeBody()
		if err != nil {
			return Tree{}, fmt.Errorf("lineage of %s: record %s: %w", ref, rec.Header.ID, err)
		}
		p, ok := body.(ledger.Producer)
		if !ok {
			return Tree{}, fmt.Errorf("lineage of %s: record %s is a %s, expected a record producing a model version", ref, rec.Header.ID, rec.Header.Type)
		}
		v, parents, ids := p.Produces()
		n := node(v)
		n.Producers = append(n.Producers, rec)
		for _, pr := range parents {
			n.Parents = append(n.Parents, node(pr))
		}
		for _, id := range ids {
			if d, ok := datasets[id]; ok {
				n.Datasets = append(n.Datasets, d)
			} else {
				n.MissingDatasets = append(n.MissingDatasets, id)
			}
		}
	}
	return Tree{Root: node(ref), Lineage: lin}, nil
}

// Records returns every record of the tree: the producing records, then the dataset
// snapshots, each once, in the order the backend returned them.
func (t Tree) Records() []ledger.Record {
	out := append([]ledger.Record(nil), t.Lineage.Versions...)
	return append(out, t.Lineage.Datasets...)
}

// WriteText renders the tree as indented text: each version with the record that produced
// it, its parents indented below it, and the dataset snapshots at the leaves. A version
// already shown is referred to, not repeated.
func (t Tree) WriteText(w io.Writer) error {
	var b strings.Builder
	shown := map[ledger.ModelRef]bool{}
	var walk func(n *Node, depth int)
	walk = func(n *Node, depth int) {
		ind := strings.Repeat("  ", depth)
		if shown[n.Ref] {
			fmt.Fprintf(&b, "%s%s (shown above)\n", ind, n.Ref)
			return
		}
		shown[n.Ref] = true
		if len(n.Producers) == 0 {
			fmt.Fprintf(&b, "%s%s MISSING: named as a parent, no record in the ledger produced it\n", ind, n.Ref)
			return
		}
		for _, rec := range n.Producers {
			fmt.Fprintf(&b, "%s%s  %s\n", ind, n.Ref, describe(rec))
			fmt.Fprintf(&b, "%s    %s\n", ind, header(rec))
		}
		for _, d := range n.Datasets {
			fmt.Fprintf(&b, "%s  %s\n", ind, describe(d))
			fmt.Fprintf(&b, "%s      %s\n", ind, header(d))
		}
		for _, id := range n.MissingDatasets {
			fmt.Fprintf(&b, "%s  dataset_snapshot %s MISSING: named, not in the ledger\n", ind, id)
		}
		for _, p := range n.Parents {
			walk(p, depth+1)
		}
	}
	walk(t.Root, 0)
	fmt.Fprintf(&b, "%d record(s): %d version record(s), %d dataset snapshot(s)", len(t.Lineage.Versions)+len(t.Lineage.Datasets), len(t.Lineage.Versions), len(t.Lineage.Datasets))
	if len(t.Lineage.Missing) > 0 {
		fmt.Fprintf(&b, "; %d named but missing: %s", len(t.Lineage.Missing), strings.Join(t.Lineage.Missing, ", "))
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// header describes who recorded rec, where and when.
func header(rec ledger.Record) string {
	h := rec.Header
	s := fmt.Sprintf("site %s", h.Site)
	if h.Gateway != "" {
		s += " gateway " + h.Gateway
	}
	s += fmt.Sprintf(", %s, by %s (%s), record %s", h.Time.Format(time.RFC3339), h.Actor.Name, h.Actor.Org, h.ID)
	if h.FirmwareVersion != "" {
		s += ", firmware " + h.FirmwareVersion
	}
	return s
}

// describe summarises rec's type and body on one line.
func describe(rec ledger.Record) string {
	body, err := rec.DecodeBody()
	if err != nil {
		return fmt.Sprintf("%s (undecodable body: %v)", rec.Header.Type, err)
	}
	switch b := body.(type) {
	case ledger.DatasetSnapshot:
		from, to := snapshotSpan(b)
		var bad, unc int64
		for _, w := range b.Windows {
			bad += w.BadQuality
			unc += w.Uncertain
		}
		return fmt.Sprintf("dataset_snapshot: %d signal(s), %d rows (%d bad, %d uncertain), %s .. %s, metadata sha256:%s",
			len(b.Windows), b.Rows, bad, unc, from.Format(time.RFC3339), to.Format(time.RFC3339), short(b.MetadataHash))
	case ledger.LocalTraining:
		return fmt.Sprintf("local_training: artifact sha256:%s, code %s", short(b.ArtifactHash), b.CodeVersion)
	case ledger.FederatedRound:
		s := fmt.Sprintf("federated_round: %s round %d, %s of %d participant(s) (%s)", b.Federation, b.Round, b.Aggregation,
			len(b.Participants), strings.Join(b.Participants, ", "))
		if b.DP != nil {
			s += fmt.Sprintf(", DP epsilon %g delta %g", b.DP.Epsilon, b.DP.Delta)
		}
		if b.Metrics != nil {
			s += ", metrics " + FormatMetrics(b.Metrics)
		}
		return s + ", artifact sha256:" + short(b.OutputHash)
	case ledger.Evaluation:
		return fmt.Sprintf("evaluation: passed=%t, %s", b.Passed, FormatMetrics(b.Metrics))
	case ledger.Approval:
		return fmt.Sprintf("approval: %s", b.Decision)
	case ledger.Release:
		return fmt.Sprintf("release: channel %s", b.Channel)
	case ledger.Deployment:
		return fmt.Sprintf("deployment: previous %q", b.Previous)
	case ledger.Rollback:
		return fmt.Sprintf("rollback: %s -> %s", b.FromVersion, b.ToVersion)
	case ledger.AlarmDigest:
		return fmt.Sprintf("alarm_digest: %d alarm(s)", b.Count)
	}
	return string(rec.Header.Type)
}

// snapshotSpan returns the earliest start and the latest end of a snapshot's windows.
func snapshotSpan(b ledger.DatasetSnapshot) (from, to time.Time) {
	for i, w := range b.Windows {
		if i == 0 || w.From.Before(from) {
			from = w.From
		}
		if i == 0 || w.To.After(to) {
			to = w.To
		}
	}
	return from, to
}
