package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeAlarmBroker is an alarm publisher whose connection the test controls. Like
// connectors/mqtt's Publisher it settles every message from another goroutine, with an
// error when the connection is down or lost.
type fakeAlarmBroker struct {
	mu       sync.Mutex
	up       bool
	refuse   bool // connection attempts fail
	loseNext int  // publishes that lose the connection before the broker acknowledges them
	got      []string
}

func (f *fakeAlarmBroker) Connect(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse {
		return errors.New("connection refused")
	}
	f.up = true
	return nil
}

func (f *fakeAlarmBroker) Connected() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.up
}

func (f *fakeAlarmBroker) Publish(_ context.Context, _ string, payload []byte, done func(error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var err error
	switch {
	case !f.up:
		err = errors.New("not connected")
	case f.loseNext > 0:
		f.loseNext--
		f.up, err = false, errors.New("connection lost before the acknowledgement")
	default:
		f.got = append(f.got, string(payload))
	}
	go done(err)
	return nil
}

func (f *fakeAlarmBroker) Close() {}

func (f *fakeAlarmBroker) set(fn func(*fakeAlarmBroker)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeAlarmBroker) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got)
}

// settled records each message's done result.
type settled struct {
	mu  sync.Mutex
	err map[string]error
}

func (s *settled) done(msg string) func(error) {
	return func(err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.err == nil {
			s.err = map[string]error{}
		}
		if _, twice := s.err[msg]; twice {
			panic("alarm " + msg + " settled twice")
		}
		s.err[msg] = err
	}
}

func (s *settled) get(msg string) (error, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	err, ok := s.err[msg]
	return err, ok
}

// runFakeOutbox runs an outbox of capacity messages on a fake broker until the test ends.
func runFakeOutbox(t *testing.T, capacity int, broker *fakeAlarmBroker) (*alarmOutbox, func()) {
	t.Helper()
	o, err := newOutbox("tcp://broker:1883", capacity, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	o.pub = broker
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = o.Run(ctx); close(stopped) }()
	return o, func() { cancel(); <-stopped }
}

// TestAlarmOutboxPublishesInOrderAfterReconnecting: alarms raised while the broker is
// unreachable wait in the queue and are published in order once the outbox has connected
// (with backoff); a connection lost later is connected again, and the message whose
// acknowledgement was lost is sent again before the next. The connection shows in
// millwright_connection_up{kind="alarms",name="mqtt"} and in the status.
func TestAlarmOutboxPublishesInOrderAfterReconnecting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		broker := &fakeAlarmBroker{refuse: true}
		o, stop := runFakeOutbox(t, 10, broker)
		defer stop()
		var s settled
		for _, m := range []string{"raised 1", "cleared 1", "raised 2"} {
			if err := o.Publish(context.Background(), "millwright/acme/pump-1/alarm", []byte(m), s.done(m)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(10 * time.Minute) // the broker is down for 10 minutes
		synctest.Wait()
		if st := o.Status(); st.Connected || st.Queued != 3 || len(broker.received()) != 0 {
			t.Errorf("broker down: status %+v, received %q; want 3 queued, none received", st, broker.received())
		}
		if up, errs := testutil.ToFloat64(o.up), testutil.ToFloat64(o.connectErr); up != 0 || errs < 5 {
			t.Errorf("broker down: connection_up %v, connect errors %v; want 0 and retries with backoff", up, errs)
		}

		broker.set(func(f *fakeAlarmBroker) { f.refuse = false })
		time.Sleep(2 * time.Minute) // more than the longest backoff
		synctest.Wait()
		if got, want := broker.received(), []string{"raised 1", "cleared 1", "raised 2"}; !slices.Equal(got, want) {
			t.Errorf("broker back: received %q; want %q", got, want)
		}
		for _, m := range []string{"raised 1", "cleared 1", "raised 2"} {
			if err, ok := s.get(m); !ok || err != nil {
				t.Errorf("%q settled %v (%v); want acknowledged", m, ok, err)
			}
		}
		if st := o.Status(); !st.Connected || st.Queued != 0 || st.Published != 3 || testutil.ToFloat64(o.up) != 1 {
			t.Errorf("broker back: status %+v, connection_up %v; want connected, 3 published", st, testutil.ToFloat64(o.up))
		}

		// The connection is lost while "cleared 2" waits for its acknowledgement.
		broker.set(func(f *fakeAlarmBroker) { f.loseNext = 1 })
		for _, m := range []string{"cleared 2", "raised 3"} {
			_ = o.Publish(context.Background(), "millwright/acme/pump-1/alarm", []byte(m), s.done(m))
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if got, want := broker.received(), []string{"raised 1", "cleared 1", "raised 2", "cleared 2", "raised 3"}; !slices.Equal(got, want) {
			t.Errorf("after a lost connection: received %q; want %q", got, want)
		}
		// The broker's connection-lost callback wakes an idle outbox to reconnect.
		broker.set(func(f *fakeAlarmBroker) { f.up = false })
		o.lost(errors.New("EOF"))
		synctest.Wait()
		if !broker.Connected() || !o.Status().Connected {
			t.Errorf("after the connection-lost callback: broker connected %v, status %+v; want connected again", broker.Connected(), o.Status())
		}
	})
}

// TestAlarmOutboxDropsTheOldestWhenFull: the queue holds at most its capacity; beyond it the
// oldest message is dropped, counted and settled with an error, so the newest state of
// each machine is what a subscriber sees last. Messages still queued when the gateway
// stops are counted as dropped too.
func TestAlarmOutboxDropsTheOldestWhenFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		broker := &fakeAlarmBroker{refuse: true}
		o, stop := runFakeOutbox(t, 2, broker)
		var s settled
		for i := range 3 {
			m := fmt.Sprint("alarm ", i)
			_ = o.Publish(context.Background(), "millwright/acme/pump-1/alarm", []byte(m), s.done(m))
		}
		synctest.Wait()
		if err, _ := s.get("alarm 0"); !errors.Is(err, errAlarmDropped) {
			t.Errorf("the oldest alarm settled with %v; want %v", err, errAlarmDropped)
		}
		if st, n := o.Status(), testutil.ToFloat64(o.dropped); st.Dropped != 1 || st.Queued != 2 || n != 1 {
			t.Errorf("status %+v, dropped_total %v; want 1 dropped, 2 queued", st, n)
		}
		broker.set(func(f *fakeAlarmBroker) { f.refuse = false })
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if got, want := broker.received(), []string{"alarm 1", "alarm 2"}; !slices.Equal(got, want) {
			t.Errorf("received %q; want %q", got, want)
		}

		broker.set(func(f *fakeAlarmBroker) { f.up, f.refuse = false, true })
		_ = o.Publish(context.Background(), "millwright/acme/pump-1/alarm", []byte("alarm 3"), s.done("alarm 3"))
		synctest.Wait()
		stop()
		if err, _ := s.get("alarm 3"); !errors.Is(err, errAlarmStopped) {
			t.Errorf("an alarm queued at stop settled with %v; want %v", err, errAlarmStopped)
		}
		if st := o.Status(); st.Dropped != 2 || st.Queued != 0 {
			t.Errorf("after stop: status %+v; want 2 dropped, none queued", st)
		}
	})
}
