package train

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

// Querier runs one Flux query and calls fn with each record's values in order. It is what
// *influxdb.Querier provides; tests use a fake. Each call must be bounded by its own timeout.
type Querier interface {
	Query(ctx context.Context, flux string, fn func(values map[string]any) error) error
}

// History is one machine's numeric samples over a time range, as points (factory, machine,
// signal, source time, value as a float, quality), each signal's points in time order.
type History struct {
	Factory, Machine string
	From, To         time.Time
	Points           []telemetry.Point
}

// Signals returns the names of the signals that have samples, sorted.
func (h *History) Signals() []string {
	seen := map[string]bool{}
	var names []string
	for i := range h.Points {
		if s := h.Points[i].Signal; !seen[s] {
			seen[s] = true
			names = append(names, s)
		}
	}
	sort.Strings(names)
	return names
}

// HistoryQuery says which history to read and how to cut it into narrow queries.
type HistoryQuery struct {
	Bucket      string // "database" or "database/rp" on InfluxDB 1.8
	Measurement string
	Factory     string // "" matches any factory
	Machine     string
	From, To    time.Time
	// Chunk is the time span of one query (InfluxDB 1.8's Flux is slow and memory-hungry on
	// wide queries, so one query covers one machine over one chunk).
	Chunk time.Duration
	// ChunkTimeout bounds each query.
	ChunkTimeout time.Duration
}

// ReadHistory reads one machine's numeric samples and their quality, chunk by chunk, each
// query bounded by q.ChunkTimeout. progress, when not nil, is called after each chunk with
// the chunks done and the total.
func ReadHistory(ctx context.Context, qr Querier, q HistoryQuery, progress func(done, total int)) (*History, error) {
	if !q.To.After(q.From) {
		return nil, fmt.Errorf("read history of %s: empty range %s to %s", q.Machine, q.From.Format(time.RFC3339), q.To.Format(time.RFC3339))
	}
	if q.Chunk <= 0 {
		return nil, fmt.Errorf("read history of %s: chunk %s is not positive", q.Machine, q.Chunk)
	}
	h := &History{Factory: q.Factory, Machine: q.Machine, From: q.From, To: q.To}
	total := int((q.To.Sub(q.From) + q.Chunk - 1) / q.Chunk)
	// A sample's value and quality are two fields of one line, which Flux returns as two
	// tables: they are joined by signal and time.
	type key struct {
		signal string
		t      int64
	}
	for i := range total {
		from := q.From.Add(time.Duration(i) * q.Chunk)
		to := from.Add(q.Chunk)
		if to.After(q.To) {
			to = q.To
		}
		values := map[key]float64{}
		quality := map[key]telemetry.Level{}
		cctx, cancel := context.WithTimeout(ctx, q.ChunkTimeout)
		err := qr.Query(cctx, fluxChunk(q, from, to), func(v map[string]any) error {
			sig, _ := v["signal"].(string)
			t, ok := v["_time"].(time.Time)
			// InfluxDB 1.8's Flux includes range's stop; chunks are [from, to).
			if sig == "" || !ok || !t.Before(to) {
				return nil
			}
			k := key{sig, t.UnixNano()}
			switch f, _ := v["_field"].(string); f {
			case "quality":
				s, _ := v["_value"].(string)
				if l, ok := telemetry.ParseLevel(s); ok {
					quality[k] = l
				}
			default:
				if x, ok := number(v["_value"]); ok {
					values[k] = x
				}
			}
			return nil
		})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("read history of %s, %s to %s: %w", q.Machine, from.Format(time.RFC3339), to.Format(time.RFC3339), err)
		}
		start := len(h.Points)
		for k, x := range values {
			h.Points = append(h.Points, telemetry.Point{
				Factory: q.Factory, Machine: q.Machine, Signal: k.signal, SourceTime: k.t,
				Value: telemetry.Float(x), Quality: telemetry.Quality{Level: quality[k]},
			})
		}
		chunk := h.Points[start:]
		sort.Slice(chunk, func(a, b int) bool {
			if chunk[a].Signal != chunk[b].Signal {
				return chunk[a].Signal < chunk[b].Signal
			}
			return chunk[a].SourceTime < chunk[b].SourceTime
		})
		if progress != nil {
			progress(i+1, total)
		}
	}
	return h, nil
}

// number converts a Flux value of a numeric field to float64.
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// fluxChunk is the query of one machine over [from, to): the numeric value fields and the
// quality field, nothing else, so the query stays narrow.
func fluxChunk(q HistoryQuery, from, to time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "from(bucket: %s)\n", fluxString(q.Bucket))
	fmt.Fprintf(&b, "  |> range(start: %s, stop: %s)\n", from.UTC().Format(time.RFC3339Nano), to.UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(&b, "  |> filter(fn: (r) => r._measurement == %s and r.machine == %s", fluxString(q.Measurement), fluxString(q.Machine))
	if q.Factory != "" {
		fmt.Fprintf(&b, " and r.factory == %s", fluxString(q.Factory))
	}
	b.WriteString(`)
  |> filter(fn: (r) => r._field == "value" or r._field == "value_int" or r._field == "value_bool" or r._field == "quality")
  |> keep(columns: ["_time", "_value", "_field", "signal"])
`)
	return b.String()
}

// fluxString quotes s as a Flux string literal.
func fluxString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`, "${", `\${`)
	return `"` + r.Replace(s) + `"`
}
