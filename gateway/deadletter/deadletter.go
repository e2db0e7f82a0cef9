// Package deadletter keeps the input the gateway could not store, so that nothing is dropped silently.
//
// Every dead letter is appended as one JSON line to a file in the state directory, counted
// in millwright_dead_letters_total{component,name,class} and logged: the first of each
// (name, class) at once, then at most one line per interval with the number suppressed, so a
// flood of bad input cannot flood the log. The file is bounded: when it reaches MaxBytes it
// is rotated to a single ".1" file, and the letters so overwritten are counted.
package deadletter

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/config"
)

// Config configures the dead-letter store.
type Config struct {
	// Dir holds deadletters.jsonl; the gateway sets <state_dir>/deadletters when empty.
	Dir string `yaml:"dir"`
	// MaxBytes bounds the live file; at this size it is rotated to deadletters.jsonl.1.
	MaxBytes config.ByteSize `yaml:"max_bytes"`
	// MaxPayloadBytes is how much of a rejected payload is kept.
	MaxPayloadBytes config.ByteSize `yaml:"max_payload_bytes"`
	// LogInterval is the least time between two log lines of one (name, class).
	LogInterval time.Duration `yaml:"log_interval"`
}

// SetDefaults sets the defaults.
func (c *Config) SetDefaults() {
	c.MaxBytes = 64 << 20
	c.MaxPayloadBytes = 1 << 10
	c.LogInterval = 10 * time.Second
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var p config.Problems
	if c.Dir == "" {
		p.Addf("dir", "must be set")
	}
	if c.MaxBytes < 4<<10 {
		p.Addf("max_bytes", "%s is too small; expected at least 4KiB", c.MaxBytes)
	}
	if c.MaxPayloadBytes < 0 || c.MaxPayloadBytes > c.MaxBytes/4 {
		p.Addf("max_payload_bytes", "%s is out of range; expected 0 to a quarter of max_bytes", c.MaxPayloadBytes)
	}
	if c.LogInterval < 0 {
		p.Addf("log_interval", "%s is negative", c.LogInterval)
	}
	return p.Err()
}

// FileName is the name of the live dead-letter file inside Config.Dir.
const FileName = "deadletters.jsonl"

// Store is a bounded, append-only dead-letter file. It implements connectors.DeadLetters.
type Store struct {
	cfg  Config
	log  *slog.Logger
	path string

	total       *prometheus.CounterVec
	overwritten prometheus.Counter
	writeErrors prometheus.Counter

	mu       sync.Mutex
	f        *os.File
	size     int64
	inFile   int64 // letters in the live file, counted as overwritten when .1 is replaced
	inOld    int64 // letters in the .1 file
	lastLog  map[logKey]time.Time
	suppress map[logKey]int
}

type logKey struct{ name, class string }

// Open opens (creating) the store.
func Open(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	path := filepath.Join(cfg.Dir, FileName)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	s := &Store{
		cfg: cfg, log: log, path: path, f: f, size: st.Size(),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_dead_letters_total",
			Help: "Input that could not be stored (undecodable payloads, points a sink refused), by component, connector name and reason class.",
		}, []string{"component", "name", "class"}),
		overwritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_dead_letters_overwritten_total",
			Help: "Dead letters deleted from disk by rotation of the bounded dead-letter file.",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millwright_dead_letters_write_errors_total",
			Help: "Dead letters that were counted and logged but could not be written to the file.",
		}),
		lastLog:  map[logKey]time.Time{},
		suppress: map[logKey]int{},
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.total, s.overwritten, s.writeErrors} {
			if err := reg.Register(c); err != nil {
				f.Close()
				return nil, fmt.Errorf("dead letters: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Path returns the live file's path.
func (s *Store) Path() string { return s.path }

// record is the JSON form of one dead letter.
type record struct {
	Time      time.Time    `json:"time"`
	Component string       `json:"component"`
	Name      string       `json:"name"`
	Class     string       `json:"class"`
	Reason    string       `json:"reason"`
	Origin    string       `json:"origin,omitempty"`
	Payload   string       `json:"payload,omitempty"`
	Truncated int          `json:"payload_truncated_bytes,omitempty"`
	Point     *pointRecord `json:"point,omitempty"`
}

type pointRecord struct {
	Factory    string `json:"factory,omitempty"`
	Line       string `json:"line,omitempty"`
	Machine    string `json:"machine,omitempty"`
	Signal     string `json:"signal,omitempty"`
	SourceTime int64  `json:"source_time_ns,omitempty"`
	ServerTime int64  `json:"server_time_ns,omitempty"`
	Kind       string `json:"kind"`
	Value      string `json:"value"`
	Quality    string `json:"quality"`
	Code       uint32 `json:"status_code,omitempty"`
}

// Put counts, logs (rate-limited) and appends one dead letter. It never fails: a letter that
// cannot be written is still counted and logged, and the write error is counted.
func (s *Store) Put(_ context.Context, dl connectors.DeadLetter) {
	if dl.Time.IsZero() {
		dl.Time = time.Now()
	}
	class := connectors.SanitizeClass(dl.Class)
	s.total.WithLabelValues(dl.Component, dl.Name, class).Inc()

	rec := record{Time: dl.Time.UTC(), Component: dl.Component, Name: dl.Name, Class: class, Reason: dl.Reason, Origin: dl.Origin}
	if n := int(s.cfg.MaxPayloadBytes); len(dl.Payload) > 0 {
		p := dl.Payload
		if len(p) > n {
			rec.Truncated = len(p) - n
			p = p[:n]
		}
		if utf8.Valid(p) {
			rec.Payload = string(p)
		} else {
			rec.Payload = fmt.Sprintf("%q", p)
		}
	}
	if p := dl.Point; p != nil {
		rec.Point = &pointRecord{
			Factory: p.Factory, Line: p.Line, Machine: p.Machine, Signal: p.Signal,
			SourceTime: p.SourceTime, ServerTime: p.ServerTime,
			Kind: p.Value.Kind.String(), Value: p.Value.String(),
			Quality: p.Quality.Level.String(), Code: p.Quality.Code,
		}
	}
	line, err := json.Marshal(rec)
	if err != nil { // cannot happen for this type; count it rather than panic
		s.writeErrors.Inc()
		return
	}
	line = append(line, '\n')

	s.mu.Lock()
	defer s.mu.Unlock()
	s.logLocked(dl, class)
	if err := s.appendLocked(line); err != nil {
		s.writeErrors.Inc()
		s.log.Error("cannot write dead letter", "path", s.path, "err", err)
	}
}

func (s *Store) logLocked(dl connectors.DeadLetter, class string) {
	k := logKey{dl.Name, class}
	now := time.Now()
	if last, ok := s.lastLog[k]; ok && now.Sub(last) < s.cfg.LogInterval {
		s.suppress[k]++
		return
	}
	s.lastLog[k] = now
	attrs := []any{"kind", dl.Component, "connector", dl.Name, "class", class, "reason", dl.Reason}
	if dl.Origin != "" {
		attrs = append(attrs, "origin", dl.Origin)
	}
	if n := s.suppress[k]; n > 0 {
		attrs = append(attrs, "suppressed_since_last", n)
		delete(s.suppress, k)
	}
	attrs = append(attrs, "file", s.path)
	s.log.Warn("dead letter", attrs...)
}

func (s *Store) appendLocked(line []byte) error {
	if s.f == nil {
		return os.ErrClosed
	}
	if s.size+int64(len(line)) > int64(s.cfg.MaxBytes) && s.size > 0 {
		if err := s.rotateLocked(); err != nil {
			return err
		}
	}
	n, err := s.f.Write(line)
	s.size += int64(n)
	if err == nil {
		s.inFile++
	}
	return err
}

func (s *Store) rotateLocked() error {
	if err := s.f.Close(); err != nil {
		return err
	}
	s.f = nil
	if err := os.Rename(s.path, s.path+".1"); err != nil {
		return err
	}
	s.overwritten.Add(float64(s.inOld))
	s.inOld, s.inFile = s.inFile, 0
	f, err := os.OpenFile(s.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	s.f, s.size = f, 0
	return nil
}

// Close closes the file. Put after Close counts and logs but writes nothing.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
