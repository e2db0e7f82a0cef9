// Package alarmlog keeps a gateway's runtime alarm log, every alarm message the scorer emits, in one file per period, and records a digest of each closed period in the ledger.
//
// # Files
//
// The log lives in one directory. The period being written is <from>.jsonl, one JSON
// alarm message (score.AlarmMessage, as published) per line, fsynced line by line. At the
// end of a period, and when the gateway stops, the file is closed: renamed to
// <from>_<to>.pending. Its digest, an alarm_digest record with the period, the number of
// alarms raised and the SHA-256 of the file, is then recorded, and the file renamed to
// <from>_<to>.jsonl: the file an auditor checks against the record (Digest recomputes
// it). Times are UTC, written as Stamp.
//
// Periods are aligned to multiples of Period in UTC (midnight for 24h). A period starts when
// the gateway starts or at the boundary, and ends at the boundary or when the gateway
// stops, so every moment the gateway ran is covered by exactly one digest, and a gap between
// two digests is a time it did not run. A file left open by a crash is closed at the next
// start with the time of its last write as its end. A digest whose recording failed
// stays pending and is retried at the next boundary and at the next start; with a recorder
// that takes ids (the outbox), a digest recorded before a crash is not recorded twice.
//
// Every file is bounded (MaxBytes); a message beyond it is dropped and counted. The newest
// Keep digested files are kept.
//
// Open reads back the last message of each machine (Last), so the scorer knows which
// alarms the previous run left raised. It reads the newest files first, at most
// lastScanBytes of them.
package alarmlog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/internal/metricreg"
	"github.com/millwright-io/millwright/ledger"
	"github.com/millwright-io/millwright/models/score"
)

// Config configures the alarm log.
type Config struct {
	// Dir holds the log's files (the gateway's default: <state_dir>/alarms).
	Dir string `yaml:"dir"`
	// Period is how often a digest is recorded (default 24h, at least 1m).
	Period time.Duration `yaml:"period"`
	// MaxBytes bounds one period's file (default 16MiB); messages beyond it are dropped
	// and counted.
	MaxBytes config.ByteSize `yaml:"max_bytes"`
	// Keep is how many digested files are kept (default 400).
	Keep int `yaml:"keep"`
}

// SetDefaults fills the zero fields but Dir.
func (c *Config) SetDefaults() {
	if c.Period == 0 {
		c.Period = 24 * time.Hour
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 16 << 20
	}
	if c.Keep == 0 {
		c.Keep = 400
	}
}

// Validate reports every problem at once, with paths relative to the alarm log's block.
func (c Config) Validate() error {
	var p config.Problems
	if c.Dir == "" {
		p.Addf("dir", "missing, expected a directory")
	}
	if c.Period < time.Minute {
		p.Addf("period", "%v is shorter than 1m", c.Period)
	}
	if c.MaxBytes < 4096 {
		p.Addf("max_bytes", "%v is below 4KiB", c.MaxBytes)
	}
	if c.Keep < 1 {
		p.Addf("keep", "%d, expected at least 1", c.Keep)
	}
	return p.Err()
}

// Options are the log's dependencies; every field may be nil.
type Options struct {
	// Recorder returns where digests are recorded, nil while there is none.
	Recorder   func() ledger.Recorder
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Log is the alarm log. Append is safe for concurrent use; Run is called once.
type Log struct {
	cfg  Config
	opts Options
	log  *slog.Logger
	now  func() time.Time
	m    *metrics

	mu   sync.Mutex
	f    *os.File
	from time.Time // start of the open period
	size int64
	full bool // a message of this period was dropped

	last []score.AlarmMessage // per machine, the last message logged before Open
}

const (
	// Stamp is how file names write times.
	Stamp         = "20060102T150405.000000000Z"
	openSuffix    = ".jsonl"
	pendingSuffix = ".pending"
)

// Open opens the log in cfg.Dir (creating it) and starts a period. A file a crash left
// open is closed (its digest is recorded by Run).
func Open(cfg Config, opts Options) (*Log, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("alarm log: %w", err)
	}
	l := &Log{cfg: cfg, opts: opts, log: opts.Logger, now: opts.Now}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.now == nil {
		l.now = time.Now
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	var err error
	if l.m, err = newMetrics(reg); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("alarm log: %w", err)
	}
	names, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("alarm log: %w", err)
	}
	for _, d := range names {
		from, ok := openFrom(d.Name())
		if !ok {
			continue
		}
		fi, err := d.Info()
		if err != nil {
			return nil, fmt.Errorf("alarm log: %w", err)
		}
		to := later(fi.ModTime().UTC(), from)
		if err := l.closeFile(from, to); err != nil {
			return nil, err
		}
		l.log.Warn("alarm log left open by a crash closed at its last write", "from", from, "to", to)
	}
	l.last = l.readLast()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.openPeriod(l.now().UTC()); err != nil {
		return nil, err
	}
	return l, nil
}

// Last returns the last message of each factory's machine logged before Open, in any order.
func (l *Log) Last() []score.AlarmMessage { return slices.Clone(l.last) }

// lastScanBytes bounds how much of the log Open reads back for Last (so start-up time is
// bounded whatever max_bytes and keep are): a machine whose last message is older than
// the newest lastScanBytes of the log is not in Last.
const lastScanBytes = 64 << 20

// readLast reads the period files, newest first, for the last message of each machine.
// Only Open calls it, before any period is open and before Run renames pending files.
// A file that cannot be read is logged and skipped.
func (l *Log) readLast() []score.AlarmMessage {
	var names []string
	for _, pattern := range []string{"*" + openSuffix, "*" + pendingSuffix} {
		m, _ := filepath.Glob(filepath.Join(l.cfg.Dir, pattern))
		names = append(names, m...)
	}
	// Names start with the period's start, written in fixed width: newest last.
	slices.SortFunc(names, func(a, b string) int { return strings.Compare(filepath.Base(a), filepath.Base(b)) })
	type key struct {
		Factory string `json:"factory"`
		Machine string `json:"machine"`
	}
	found := map[key]bool{}
	var out []score.AlarmMessage
	budget := int64(lastScanBytes)
	for i := len(names) - 1; i >= 0; i-- {
		if budget <= 0 {
			l.log.Warn("alarm log read back only in part: alarms last logged in older files are not restored",
				"read_bytes", lastScanBytes, "before", filepath.Base(names[i+1]))
			break
		}
		b, err := readAtMost(names[i], budget)
		if err != nil {
			l.log.Warn("cannot read an alarm log file back", "file", filepath.Base(names[i]), "err", err)
			continue
		}
		budget -= int64(len(b))
		// Lines newest first: a machine's first line that decodes is its last message. Only
		// the machine is decoded, and the whole message only for the first line of each.
		for rest := b; len(rest) > 0; {
			j := bytes.LastIndexByte(rest[:len(rest)-1], '\n')
			line := rest[j+1:]
			rest = rest[:j+1]
			var k key
			if json.Unmarshal(line, &k) != nil || k.Machine == "" || found[k] {
				continue
			}
			var m score.AlarmMessage
			if json.Unmarshal(line, &m) == nil {
				found[k] = true
				out = append(out, m)
			}
		}
	}
	return out
}

// readAtMost reads the file at path, or its last n bytes when it is longer (the first,
// partial line then fails to decode and is skipped).
func readAtMost(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(0, fi.Size()-n)
	b := make([]byte, fi.Size()-off)
	_, err = f.ReadAt(b, off)
	return b, err
}

// openFrom parses the start of an open period's file name.
func openFrom(name string) (time.Time, bool) {
	s, ok := strings.CutSuffix(name, openSuffix)
	if !ok || strings.Contains(s, "_") {
		return time.Time{}, false
	}
	t, err := time.Parse(Stamp, s)
	return t, err == nil
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// closedName is the name of the file of period [from, to) with suffix.
func closedName(from, to time.Time, suffix string) string {
	return from.Format(Stamp) + "_" + to.Format(Stamp) + suffix
}

// openPeriod starts the period that begins at from. l.mu is held.
func (l *Log) openPeriod(from time.Time) error {
	f, err := os.OpenFile(filepath.Join(l.cfg.Dir, from.Format(Stamp)+openSuffix), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("alarm log: %w", err)
	}
	l.f, l.from, l.size, l.full = f, from, 0, false
	return nil
}

// closeFile renames the open file of the period from to a pending one ending at to.
func (l *Log) closeFile(from, to time.Time) error {
	old := filepath.Join(l.cfg.Dir, from.Format(Stamp)+openSuffix)
	if err := os.Rename(old, filepath.Join(l.cfg.Dir, closedName(from, to, pendingSuffix))); err != nil {
		return fmt.Errorf("alarm log: close %s: %w", old, err)
	}
	return nil
}

// Append logs msg in the open period. It returns an error when the message could not be
// written; a message beyond the period's MaxBytes is dropped and counted.
func (l *Log) Append(msg score.AlarmMessage) error {
	line, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		l.m.dropped.Inc()
		return errors.New("alarm log closed")
	}
	if l.size+int64(len(line)) > int64(l.cfg.MaxBytes) {
		l.m.dropped.Inc()
		if !l.full {
			l.full = true
			l.log.Warn("alarm log full for this period: alarm messages are dropped until the next", "max_bytes", l.cfg.MaxBytes, "from", l.from)
		}
		return nil
	}
	if _, err := l.f.Write(line); err != nil {
		l.m.errors.Inc()
		return fmt.Errorf("alarm log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		l.m.errors.Inc()
		return fmt.Errorf("alarm log: %w", err)
	}
	l.size += int64(len(line))
	l.m.messages.Inc()
	return nil
}

// Run records the digests of the periods closed before it started, then closes each
// period at its boundary and records its digest, until ctx ends: it then closes the open
// period at that moment, records its digest and returns.
func (l *Log) Run(ctx context.Context) error {
	l.digestPending(ctx)
	for {
		l.mu.Lock()
		boundary := l.from.Truncate(l.cfg.Period).Add(l.cfg.Period)
		l.mu.Unlock()
		t := time.NewTimer(boundary.Sub(l.now()))
		select {
		case <-ctx.Done():
			t.Stop()
			err := l.rotate(l.now().UTC(), false)
			// Recorded into the outbox, which anchors it at the next start if not now; a
			// recorder that must first ask its backend gets stopTimeout.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
			l.digestPending(sctx)
			cancel()
			return err
		case <-t.C:
		}
		if err := l.rotate(boundary, true); err != nil {
			return err
		}
		l.digestPending(ctx)
	}
}

// stopTimeout bounds the digest Run records when it stops.
const stopTimeout = 10 * time.Second

// rotate closes the open period at to and, when next is set, opens the one starting there.
func (l *Log) rotate(to time.Time, next bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("alarm log: %w", err)
	}
	l.f = nil
	if err := l.closeFile(l.from, later(to, l.from)); err != nil {
		return err
	}
	if next {
		return l.openPeriod(to)
	}
	return nil
}

// digestPending records the digest of every pending file, oldest first, and renames each
// recorded one; a failure leaves the file pending for the next attempt. Then it removes
// digested files beyond Keep.
func (l *Log) digestPending(ctx context.Context) {
	names, err := filepath.Glob(filepath.Join(l.cfg.Dir, "*"+pendingSuffix))
	if err != nil {
		return
	}
	slices.Sort(names)
	for _, path := range names {
		if err := l.digest(ctx, path); err != nil {
			l.m.digestErrors.Inc()
			l.log.Warn("alarm log digest not recorded; retried at the next period", "file", filepath.Base(path), "err", err)
		}
	}
	done, _ := filepath.Glob(filepath.Join(l.cfg.Dir, "*_*"+openSuffix))
	slices.Sort(done)
	for _, path := range done[:max(0, len(done)-l.cfg.Keep)] {
		if err := os.Remove(path); err != nil {
			l.log.Warn("cannot remove an old alarm log", "file", filepath.Base(path), "err", err)
		}
	}
}

// Digest returns the digest of a closed period's file: its period (from its name), the
// number of alarms raised in it and its SHA-256.
func Digest(path string) (ledger.AlarmDigest, error) {
	name := filepath.Base(path)
	name = strings.TrimSuffix(strings.TrimSuffix(name, pendingSuffix), openSuffix)
	f, t, ok := strings.Cut(name, "_")
	from, err1 := time.Parse(Stamp, f)
	to, err2 := time.Parse(Stamp, t)
	if !ok || err1 != nil || err2 != nil {
		return ledger.AlarmDigest{}, fmt.Errorf("alarm log %s: not a closed period's file", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ledger.AlarmDigest{}, err
	}
	d := ledger.AlarmDigest{From: from, To: to}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, len(b)+1)
	for sc.Scan() {
		var m struct {
			State string `json:"state"`
		}
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.State == "raised" {
			d.Count++
		}
	}
	sum := sha256.Sum256(b)
	d.LogHash = hex.EncodeToString(sum[:])
	return d, nil
}

// digest records the digest of one pending file and renames it.
func (l *Log) digest(ctx context.Context, path string) error {
	d, err := Digest(path)
	if err != nil {
		return err
	}
	var rec ledger.Recorder
	if l.opts.Recorder != nil {
		rec = l.opts.Recorder()
	}
	switch r := rec.(type) {
	case nil: // no ledger: the file is kept, without a record
	case ledger.IDRecorder:
		id := ledger.NameID(string(ledger.TypeAlarmDigest), d.From.Format(Stamp), d.To.Format(Stamp), d.LogHash)
		if _, done, err := r.Recorded(ctx, id); err != nil {
			return err
		} else if !done {
			if _, err := r.RecordAs(ctx, id, d); err != nil {
				return err
			}
		}
	default:
		if _, err := r.Record(ctx, d); err != nil {
			return err
		}
	}
	if rec != nil {
		l.m.digests.Inc()
		l.log.Info("alarm log digest recorded", "from", d.From, "to", d.To, "alarms", d.Count, "sha256", d.LogHash)
	}
	return os.Rename(path, strings.TrimSuffix(path, pendingSuffix)+openSuffix)
}

type metrics struct {
	messages, dropped, errors, digests, digestErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	var m metrics
	for _, c := range []struct {
		p          *prometheus.Counter
		name, help string
	}{
		{&m.messages, "millwright_alarm_log_messages_total", "Alarm messages written to the alarm log."},
		{&m.dropped, "millwright_alarm_log_dropped_total", "Alarm messages dropped: the period's file was full (alarm_log.max_bytes) or the log closed."},
		{&m.errors, "millwright_alarm_log_write_errors_total", "Alarm messages the alarm log failed to write."},
		{&m.digests, "millwright_alarm_log_digests_total", "Alarm log digests recorded in the ledger."},
		{&m.digestErrors, "millwright_alarm_log_digest_errors_total", "Alarm log digests not recorded (retried at the next period and at start)."},
	} {
		var err error
		if *c.p, err = metricreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: c.name, Help: c.help})); err != nil {
			return nil, err
		}
	}
	return &m, nil
}
