package buffer_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/metrictest"
)

// crashDirEnv tells the re-executed test binary to run as the crash child, in that
// directory.
const crashDirEnv = "MILLWRIGHT_BUFFER_CRASH_DIR"

const crashAppenders = 4

// crashBatch is record seq of appender g: three points that name both.
func crashBatch(g, seq int) telemetry.Batch {
	b := telemetry.Batch{Points: make([]telemetry.Point, 3)}
	for i := range b.Points {
		b.Points[i] = telemetry.Point{Machine: fmt.Sprintf("g%d", g), Signal: fmt.Sprintf("p%d", i), Value: telemetry.Int(int64(seq))}
	}
	return b
}

type crashRecord struct{ g, seq int }

func crashRecords(t *testing.T, b telemetry.Batch) []crashRecord {
	t.Helper()
	if b.Len()%3 != 0 {
		t.Fatalf("batch of %d points does not hold whole records", b.Len())
	}
	var out []crashRecord
	for i := 0; i < b.Len(); i += 3 {
		var g int
		if _, err := fmt.Sscanf(b.Points[i].Machine, "g%d", &g); err != nil {
			t.Fatalf("point %+v: %v", b.Points[i], err)
		}
		out = append(out, crashRecord{g, int(b.Points[i].Value.Int())})
	}
	return out
}

// TestCrashChild is not a test of its own: TestSurvivesKill9 runs it in a child process,
// which appends with fsync=batch from several goroutines and prints "A <appender> <seq>"
// after each Append returns, while a reader prints "C <records>" before committing that
// many records, until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process of TestSurvivesKill9")
	}
	cfg := buffer.Config{Dir: dir, SegmentBytes: 8 << 10, Fsync: buffer.FsyncBatch}
	cfg.SetDefaults()
	w, err := buffer.Open(cfg, []string{"audit", "sink"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, format, args...) // one write per line: atomic on a pipe
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // in case nobody kills us
	defer cancel()
	var wg sync.WaitGroup
	for g := range crashAppenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				if err := w.Append(ctx, crashBatch(g, seq)); err != nil {
					return
				}
				say("A %d %d\n", g, seq)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := w.Reader("sink")
		records := 0
		for {
			b, pos, err := r.Next(ctx, 99, 5*time.Millisecond)
			if err != nil {
				return
			}
			records += b.Len() / 3
			say("C %d\n", records)
			if err := r.Commit(pos); err != nil {
				return
			}
		}
	}()
	wg.Wait()
}

func TestSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := make([]int, crashAppenders) // highest acknowledged seq per appender
	for i := range acked {
		acked[i] = -1
	}
	acks, commits, lastIntent := 0, 0, 0
	parse := func(line string) {
		var a, b int
		switch {
		case len(line) > 0 && line[0] == 'A':
			if _, err := fmt.Sscanf(line, "A %d %d", &a, &b); err == nil {
				acked[a] = max(acked[a], b)
				acks++
			}
		case len(line) > 0 && line[0] == 'C':
			if _, err := fmt.Sscanf(line, "C %d", &a); err == nil {
				lastIntent = a
				commits++
			}
		}
	}
	// Run long enough for the sink's cursor to be persisted (every second) at least once.
	start := time.Now()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		parse(sc.Text())
		if acks >= 600 && commits >= 5 && time.Since(start) > 2500*time.Millisecond {
			break
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no deferred code, no Close
		t.Fatal(err)
	}
	for sc.Scan() { // what the child printed before it died was acknowledged too
		parse(sc.Text())
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != -1 {
		t.Fatalf("child ended with %v before it was killed; stderr:\n%s", err, stderr.String())
	}
	t.Logf("killed the child after %d acknowledged appends and %d commits", acks, commits)

	w, reg := openWAL(t, buffer.Config{Dir: dir, SegmentBytes: 8 << 10, MaxBytes: 1 << 30, Fsync: buffer.FsyncBatch,
		FsyncInterval: time.Second, Overflow: buffer.OverflowBlock}, "audit", "sink")
	t.Logf("after the crash: %+v, truncated %v bytes", w.Stats(), metrictest.Sum(t, reg, "millwright_buffer_truncated_bytes_total"))

	readAll := func(r *buffer.Reader) []crashRecord {
		var out []crashRecord
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			b, pos, err := r.Next(ctx, 3000, 0)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, crashRecords(t, b)...)
			if err := r.Commit(pos); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The audit reader never committed: it sees the whole log. Every acknowledged record
	// is there, each appender's records in order with none missing.
	log := readAll(w.Reader("audit"))
	next := make([]int, crashAppenders)
	for i, rec := range log {
		if rec.seq != next[rec.g] {
			t.Fatalf("record %d is appender %d's seq %d, want %d", i, rec.g, rec.seq, next[rec.g])
		}
		next[rec.g]++
	}
	for g := range crashAppenders {
		if next[g] <= acked[g] {
			t.Errorf("appender %d: %d records in the log, but seq %d was acknowledged", g, next[g], acked[g])
		}
	}
	// The sink resumes where its persisted cursor points: at a record boundary no later than
	// what it last meant to commit, so nothing it had not stored is skipped.
	sink := readAll(w.Reader("sink"))
	skipped := len(log) - len(sink)
	if skipped < 0 || !slices.Equal(sink, log[skipped:]) {
		t.Fatalf("the sink's %d records are not a suffix of the %d in the log", len(sink), len(log))
	}
	if skipped > lastIntent {
		t.Fatalf("the sink resumed after %d records, but had committed at most %d", skipped, lastIntent)
	}
	t.Logf("log of %d records; the sink resumed after %d (it had committed up to %d)", len(log), skipped, lastIntent)
}
