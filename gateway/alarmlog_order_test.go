package gateway

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/models/alarmlog"
	"github.com/millwright-io/millwright/models/score"
)

// TestAlarmLogOutlivesScorer: the gateway runs the scorer and the alarm log with runThen, so
// an alarm the scorer publishes while it stops is written into the period the log closes
// after it. The stand-in scorer waits (up to half a second) for the log to close its period
// before publishing: with the two stopped together, the log has closed and refuses it.
func TestAlarmLogOutlivesScorer(t *testing.T) {
	dir := t.TempDir()
	l, err := alarmlog.Open(alarmlog.Config{Dir: dir}, alarmlog.Options{Recorder: func() ledger.Recorder { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	closed := func() bool {
		names, _ := filepath.Glob(filepath.Join(dir, "*_*"))
		return len(names) > 0
	}
	ctx, cancel := context.WithCancel(context.Background())
	grp, gctx := errgroup.WithContext(ctx)
	scorer := func(ctx context.Context) error {
		<-ctx.Done()
		for deadline := time.Now().Add(500 * time.Millisecond); !closed() && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		return l.Append(score.AlarmMessage{Factory: "acme", Machine: "pump-1", State: "raised", Time: time.Now()})
	}
	runThen(gctx, grp, scorer, l.Run)
	cancel()
	if err := grp.Wait(); err != nil {
		t.Fatalf("the alarm published while the scorer stopped: %v", err)
	}
	names, err := filepath.Glob(filepath.Join(dir, "*_*"))
	if err != nil || len(names) != 1 {
		t.Fatalf("closed periods %v (%v), want one", names, err)
	}
	b, err := os.ReadFile(names[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"state":"raised"`) {
		t.Errorf("the closed period %s holds %q, want the alarm", filepath.Base(names[0]), b)
	}
}
