package main

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/millwright-io/millwright/federation"
)

// roundsOnly is a federation.Transport that answers GetRound from a map (other methods
// are not used by the status).
type roundsOnly struct {
	federation.Transport
	states map[string][]byte
}

func (r roundsOnly) GetRound(_ context.Context, fed string) ([]byte, error) {
	if fed == "broken" {
		return nil, errors.New("nats: timeout")
	}
	b, ok := r.states[fed]
	if !ok {
		return nil, federation.ErrNotFound
	}
	return b, nil
}

// TestHubStatus: GET /api/v1/federations shows each federation's round state (or why it
// cannot be read) and its last closed round.
func TestHubStatus(t *testing.T) {
	open, _ := json.Marshal(federation.RoundState{Version: federation.StateVersion, Federation: "pumps", Round: 3, Phase: federation.PhaseOpen})
	tr := roundsOnly{states: map[string][]byte{"pumps": open, "garbled": []byte(`{"version": 9}`)}}
	var fcs []federation.FederationConfig
	for _, n := range []string{"pumps", "fresh", "garbled", "broken"} {
		fcs = append(fcs, federation.FederationConfig{Name: n})
	}
	st := newHubStatus(fcs, tr)
	st.onRound(federation.RoundReport{Federation: "pumps", Round: 2, Outcome: "aggregated", Model: "ab"})
	got := st.snapshot(context.Background())
	if len(got) != 4 {
		t.Fatalf("%d federations, want 4", len(got))
	}
	p := got[0]
	if p.State == nil || p.State.Round != 3 || p.LastRound == nil || p.LastRound.Round != 2 || p.LastRound.Outcome != "aggregated" || p.StateErr != "" {
		t.Errorf("pumps: %+v", p)
	}
	if f := got[1]; f.State != nil || f.LastRound != nil || f.StateErr != "" {
		t.Errorf("a federation without a round yet: %+v", f)
	}
	if g := got[2]; g.State != nil || g.StateErr == "" {
		t.Errorf("a malformed round state is not reported: %+v", g)
	}
	if b := got[3]; b.StateErr != "nats: timeout" {
		t.Errorf("a transport error is not reported: %+v", b)
	}
	if r := p.Recent; len(r) != 1 || r[0].Round != 2 || r[0].Model != "ab" {
		t.Errorf("pumps' recent rounds %+v; want round 2", r)
	}

	// The recent rounds are the last recentRounds, oldest first, with their metrics.
	for round := uint64(3); round <= 40; round++ {
		st.onRound(federation.RoundReport{Federation: "pumps", Round: round, Outcome: "aggregated", Used: []string{"a", "b"},
			Metrics: map[string]float64{"false_alarm_rate": float64(round) / 100}, Duration: time.Second})
	}
	r := st.snapshot(context.Background())[0].Recent
	if len(r) != recentRounds || r[0].Round != 40-recentRounds+1 || r[len(r)-1].Round != 40 || r[len(r)-1].Used != 2 ||
		r[len(r)-1].Metrics["false_alarm_rate"] != 0.4 || r[len(r)-1].Seconds != 1 {
		t.Errorf("recent rounds %+v; want rounds %d to 40 with their metrics", r, 40-recentRounds+1)
	}
}
