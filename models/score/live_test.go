package score

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

// TestFutureSampleDoesNotBlindScoring: one sample whose device clock is a day ahead (a
// glitching RTC, a mis-set PLC, milliseconds read as seconds) is refused and counted as
// future. Before, the watermark took its time: the grid was emitted a day ahead at once,
// every later, correctly stamped sample was late, no window was scored for a day and the
// bearing fault that followed raised no alarm.
func TestFutureSampleDoesNotBlindScoring(t *testing.T) {
	m := trainedModel(t)
	p := &fakePublisher{}
	// The gateway's clock: the end of the test's data (the samples are never ahead of it).
	now := func() time.Time { return start.Add(3 * time.Hour) }
	s := newSyncScorer(t, m, Options{Alarms: p, Now: now})
	data := pump(t)
	s.scoreAll(data[7200:7800])
	before := testutil.ToFloat64(s.m.windows)
	if before < 100 {
		t.Fatalf("only %v windows on healthy data", before)
	}
	// One sample of one signal, stamped a day ahead.
	bogus := data[7800][0]
	bogus.SourceTime += int64(24 * time.Hour)
	s.scoreAll([][]telemetry.Point{{bogus}})
	// The rest of the stream, correctly stamped: healthy, then the bearing wear.
	s.scoreAll(data[7801:10800])
	after := testutil.ToFloat64(s.m.windows)
	t.Logf("windows scored: %v before the bogus sample, %v after 50 more minutes of data", before, after)
	if after-before < 100 {
		t.Errorf("one sample stamped 24h ahead stopped scoring: %v windows in the 50 min after it (about 600 expected)", after-before)
	}
	if len(p.all()) == 0 {
		t.Errorf("the bearing fault after the bogus sample raised no alarm")
	}
	if got := testutil.ToFloat64(s.m.droppedSamples.WithLabelValues("pump-1", "future")); got != 1 {
		t.Errorf("millwright_scorer_dropped_samples_total{reason=future} is %v, want 1 (the bogus sample)", got)
	}
}

// TestAlarmSurvivesRestart: an alarm raised before the gateway restarts is restored from
// the alarm log. A fault still present after the restart is not raised a second time; once
// the machine is healthy the alarm is cleared. Before, the state was only in memory: a
// persisting fault was raised again without a clear, and a repaired machine's alarm was
// never cleared.
func TestAlarmSurvivesRestart(t *testing.T) {
	m := trainedModel(t)
	p := &fakePublisher{} // the MQTT subscriber's view and the alarm log, across every run
	data := pump(t)
	run := func(batches [][]telemetry.Point) {
		newSyncScorer(t, m, Options{Alarms: p, Log: p}).scoreAll(batches)
	}
	states := func() []string {
		var out []string
		for _, mm := range p.all() {
			out = append(out, mm.msg.State)
		}
		return out
	}
	// First run: the bearing wear raises the alarm.
	run(data[8000:10200])
	if got := states(); len(got) != 1 || got[0] != "raised" {
		t.Fatalf("first run published %v, want one raised", got)
	}
	// Second run: the fault is still there.
	run(data[10200:10800])
	if got := states(); len(got) != 1 {
		t.Fatalf("after a restart with the fault still present: %v, want the first raised only", got)
	}
	// Third run: the pump was repaired meanwhile: healthy data, stamped later.
	run(pumpPoints(t, 2, start.Add(5*time.Hour), 1200))
	got := states()
	t.Logf("published across the restarts: %v", got)
	if len(got) != 2 || got[1] != "cleared" {
		t.Errorf("after 20 min of healthy data following a restart: %v, want raised then cleared", got)
	}
}

// TestLiveSampleDropsCounted: samples the live feature path drops are counted in
// millwright_scorer_dropped_samples_total by machine and reason. Before, the aligner
// counted them in Stream.Stats, which the scorer never read, so a machine whose every
// sample was dropped as late looked merely quiet.
func TestLiveSampleDropsCounted(t *testing.T) {
	m := trainedModel(t)
	s := newSyncScorer(t, m, Options{})
	data := pump(t)
	s.scoreAll(data[7200:7300])
	// The same 100 seconds again: every sample is older than its row, which is out: late.
	s.scoreAll(data[7200:7300])
	var late int
	for _, sg := range s.machines["pump-1"].stream.Stats().Signals {
		late += sg.Late
	}
	if late == 0 {
		t.Fatal("the replayed samples were not late; the test is wrong")
	}
	if got := testutil.ToFloat64(s.m.droppedSamples.WithLabelValues("pump-1", "late")); got != float64(late) {
		t.Errorf("the aligner dropped %d late samples; millwright_scorer_dropped_samples_total{reason=late} counts %v", late, got)
	}
}
