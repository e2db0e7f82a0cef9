package sim_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/millwright-io/millwright/connectors/sim"
)

// fakePublisher records what it is given and settles every message at once, failing those
// whose topic contains fail.
type fakePublisher struct {
	mu   sync.Mutex
	msgs []message
	fail string
	err  error // returned by Publish when set
}

type message struct {
	topic   string
	payload string
	at      time.Time
}

func (f *fakePublisher) Publish(ctx context.Context, topic string, payload []byte, done func(error)) error {
	if f.err != nil {
		return f.err
	}
	f.mu.Lock()
	f.msgs = append(f.msgs, message{topic, string(payload), time.Now()})
	f.mu.Unlock()
	var err error
	if f.fail != "" && strings.Contains(topic, f.fail) {
		err = errors.New("refused")
	}
	go done(err)
	return nil
}

func topic(s sim.Sample) string { return "plant/" + s.Line + "/" + s.Machine + "/telemetry" }

func TestRunnerPacesAndCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub := &fakePublisher{fail: "motor"}
		start := time.Now().Add(time.Second)
		r, err := sim.NewRunner(plantOfAllKinds(t), pub, sim.RunOptions{Topic: topic, Interval: 100 * time.Millisecond, Start: start, Steps: 50})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Run(t.Context()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got, want := r.Stats(), (sim.Stats{Steps: 50, Published: 150, Delivered: 100, Failed: 50}); got != want {
			t.Errorf("stats %+v, want %+v", got, want)
		}
		if len(pub.msgs) != 150 {
			t.Fatalf("%d messages, want 150", len(pub.msgs))
		}
		for i, m := range pub.msgs {
			step := i / 3
			want := start.Add(time.Duration(step) * 100 * time.Millisecond)
			if !m.at.Equal(want) {
				t.Fatalf("message %d published at %s, want %s (one step per interval)", i, m.at, want)
			}
			if !strings.Contains(m.payload, fmt.Sprintf(`"ts":%d,`, want.UnixMilli())) {
				t.Fatalf("message %d: %s does not carry the step's time", i, m.payload)
			}
		}
		if pub.msgs[4].topic != "plant/line-1/spindle-1/telemetry" {
			t.Errorf("topic %q", pub.msgs[4].topic)
		}
	})
}

func TestRunnerStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub := &fakePublisher{}
		r, err := sim.NewRunner(plantOfAllKinds(t), pub, sim.RunOptions{Topic: topic})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second+time.Millisecond)
		defer cancel()
		if err := r.Run(ctx); err != nil {
			t.Fatalf("Run = %v; want nil once ctx ends", err)
		}
		synctest.Wait()
		if got := r.Stats(); got.Steps != 11 || got.Published != 33 || got.Delivered != 33 {
			t.Errorf("stats %+v after 10s at the plant's 1s interval; want 11 steps", got)
		}
	})
}

func TestRunnerPublishError(t *testing.T) {
	pub := &fakePublisher{err: errors.New("not connected")}
	r, err := sim.NewRunner(plantOfAllKinds(t), pub, sim.RunOptions{Topic: topic, Start: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "publish pump-1: not connected") {
		t.Errorf("Run = %v; want the publisher's error", err)
	}
}

func TestNewRunnerErrors(t *testing.T) {
	p := plantOfAllKinds(t)
	pub := &fakePublisher{}
	for _, tc := range []struct {
		name  string
		plant *sim.Plant
		pub   sim.Publisher
		opts  sim.RunOptions
		want  string
	}{
		{"no plant", nil, pub, sim.RunOptions{Topic: topic}, "no plant"},
		{"no publisher", p, nil, sim.RunOptions{Topic: topic}, "no publisher"},
		{"no topic", p, pub, sim.RunOptions{}, "no topic function"},
		{"negative interval", p, pub, sim.RunOptions{Topic: topic, Interval: -1}, "interval -1ns is negative"},
		{"negative steps", p, pub, sim.RunOptions{Topic: topic, Steps: -1}, "steps -1 is negative"},
	} {
		if _, err := sim.NewRunner(tc.plant, tc.pub, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewRunner = %v; want %q", tc.name, err, tc.want)
		}
	}
}
