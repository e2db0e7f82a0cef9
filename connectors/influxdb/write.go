package influxdb

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"

	influxhttp "github.com/influxdata/influxdb-client-go/v2/api/http"

	"github.com/millwright-io/millwright/gateway/telemetry"
)

// shard is one writer of a Write: it encodes its share of the batch into requests of at most
// BatchPoints lines and sends them in order. Its buffers are reused from Write to Write, so a
// steady stream of writes allocates per request, not per point.
type shard struct {
	s *Sink

	idx      []int32 // batch indices of the shard's points, in batch order
	buf      []byte  // the current request's lines
	offs     []int   // offs[k] is where line k starts in buf; one more entry marks the end
	members  []int32 // members[k] is the batch index of line k
	lines    []int32 // 0..len(members)-1, the first request's line set
	scratch  []byte  // the body of a request whose lines are not contiguous in buf
	gz       *gzip.Writer
	gzbuf    bytes.Buffer
	rejected []rejection
}

// rejection is a refused point of the batch.
type rejection struct {
	index  int32
	class  string
	reason string
}

// run writes the shard's points of pts. It returns nil when every point is stored or
// rejected (sh.rejected), else the error that stopped it.
func (sh *shard) run(ctx context.Context, c *conn, pts []telemetry.Point) error {
	sh.rejected = sh.rejected[:0]
	limit := sh.s.cfg.BatchPoints
	for i := 0; i < len(sh.idx); {
		sh.buf, sh.offs, sh.members = sh.buf[:0], sh.offs[:0], sh.members[:0]
		for ; i < len(sh.idx) && len(sh.members) < limit; i++ {
			j := sh.idx[i]
			start := len(sh.buf)
			var err error
			if sh.buf, err = sh.s.enc.Append(sh.buf, &pts[j]); err != nil {
				pe := err.(*PointError)
				sh.rejected = append(sh.rejected, rejection{index: j, class: pe.Class, reason: pe.Reason})
				continue
			}
			sh.offs = append(sh.offs, start)
			sh.members = append(sh.members, j)
		}
		if len(sh.members) == 0 {
			continue
		}
		sh.offs = append(sh.offs, len(sh.buf))
		sh.lines = sh.lines[:0]
		for k := range sh.members {
			sh.lines = append(sh.lines, int32(k))
		}
		if err := sh.send(ctx, c, pts, sh.lines); err != nil {
			return err
		}
	}
	return nil
}

// send writes the request made of lines (ascending line numbers) and settles every line:
// stored, or rejected with the server's reason. Other failures are returned.
func (sh *shard) send(ctx context.Context, c *conn, pts []telemetry.Point, lines []int32) error {
	he, err := sh.s.post(ctx, c, sh, sh.body(lines))
	if err != nil || he == nil {
		return err
	}
	switch he.StatusCode {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return sh.refused(ctx, c, pts, lines, he)
	case http.StatusRequestEntityTooLarge:
		if len(lines) == 1 {
			sh.reject(lines[0], ClassTooLarge, "the point alone is larger than InfluxDB accepts in a request (413 Request Entity Too Large)")
			return nil
		}
		return sh.split(ctx, c, pts, lines)
	}
	return sh.s.statusError("write", he)
}

// split writes the two halves of lines one after the other.
func (sh *shard) split(ctx context.Context, c *conn, pts []telemetry.Point, lines []int32) error {
	mid := len(lines) / 2
	if err := sh.send(ctx, c, pts, lines[:mid]); err != nil {
		return err
	}
	return sh.send(ctx, c, pts, lines[mid:])
}

// Markers of a 400 or 422 that is about single points rather than the whole request.
const (
	markUnparsable = "unable to parse"
	markPartial    = "partial write"
	markConflict   = "field type conflict"
)

var (
	// InfluxDB ends the reason with " dropped=N"; 2.x may append " for database: ...".
	droppedRE  = regexp.MustCompile(`\s*\bdropped=(\d+)`)
	conflictRE = regexp.MustCompile(`field type conflict: input field "(.*?)" on measurement "(.*?)" is type (\w+), already exists as type (\w+)`)
)

// refused settles lines after InfluxDB answered 400 or 422 with msg. It isolates exactly the
// points InfluxDB refuses and writes the others again (rewriting a stored point is
// idempotent):
//
//   - a message about no point ("database is required") fails the request;
//   - a single line is rejected with the message (unless it says nothing was dropped);
//   - "partial write ... dropped=N" with N equal to the number of lines rejects them all;
//   - lines the message quotes as unparsable, and lines that carry the field and type a
//     "field type conflict" names, are suspects: the other lines are written, then the
//     suspects on their own, which settles them by the rules above;
//   - otherwise the request is bisected.
func (sh *shard) refused(ctx context.Context, c *conn, pts []telemetry.Point, lines []int32, he *influxhttp.Error) error {
	msg := serverMessage(he)
	if !strings.Contains(msg, markUnparsable) && !strings.Contains(msg, markPartial) && !strings.Contains(msg, markConflict) {
		we := sh.s.statusError("write", he)
		we.Hint = "InfluxDB refused the request as a whole, not single points: check org and bucket"
		return we
	}
	class, reason := refusalClass(msg), "InfluxDB refused the point: "+cleanMessage(msg)
	partial, n := strings.Contains(msg, markPartial), dropped(msg)
	if len(lines) == 1 {
		if !(partial && n == 0) { // "partial write ... dropped=0": this line was stored
			sh.reject(lines[0], class, reason)
		}
		return nil
	}
	if partial && n == len(lines) {
		for _, k := range lines {
			sh.reject(k, class, reason)
		}
		return nil
	}
	unparsable := sh.unparsable(msg, lines)
	if !partial && len(unparsable) == len(lines) {
		// Nothing was stored (1.8 answers "partial write" when some lines parsed), and the
		// server quoted every line.
		for _, k := range lines {
			sh.reject(k, ClassUnparsable, "InfluxDB could not parse the point: "+unparsable[k])
		}
		return nil
	}
	suspect := sh.conflicting(msg, pts, lines)
	for k := range unparsable {
		suspect[k] = true
	}
	if len(suspect) > 0 && len(suspect) < len(lines) {
		rest := make([]int32, 0, len(lines)-len(suspect))
		sus := make([]int32, 0, len(suspect))
		for _, k := range lines {
			if suspect[k] {
				sus = append(sus, k)
			} else {
				rest = append(rest, k)
			}
		}
		if err := sh.send(ctx, c, pts, rest); err != nil {
			return err
		}
		return sh.send(ctx, c, pts, sus)
	}
	return sh.split(ctx, c, pts, lines)
}

// conflicting returns the lines whose point has the field and type a "field type conflict"
// message names.
func (sh *shard) conflicting(msg string, pts []telemetry.Point, lines []int32) map[int32]bool {
	out := make(map[int32]bool)
	m := conflictRE.FindStringSubmatch(msg)
	if m == nil || m[2] != sh.s.cfg.Measurement {
		return out
	}
	field, typ := m[1], m[3]
	for _, k := range lines {
		if hasField(&pts[sh.members[k]], field, typ) {
			out[k] = true
		}
	}
	return out
}

// hasField reports whether the layout gives p the field with InfluxDB type typ.
func hasField(p *telemetry.Point, field, typ string) bool {
	switch field {
	case fieldFloat:
		return typ == "float" && p.Value.Kind == telemetry.KindFloat
	case fieldInt:
		return typ == "integer" && p.Value.Kind == telemetry.KindInt
	case fieldBool:
		return typ == "boolean" && p.Value.Kind == telemetry.KindBool
	case fieldString:
		return typ == "string" && p.Value.Kind == telemetry.KindString
	case fieldQuality:
		return typ == "string"
	case fieldStatus:
		return typ == "integer" && p.Quality.Code != 0
	case fieldServerTime:
		return typ == "integer" && p.SourceTime != 0 && p.ServerTime != 0
	}
	return false
}

// unparsable returns the lines msg quotes as "unable to parse '<line>': <reason>", with the
// reason. InfluxDB 1.8 sends the message in a header, where line breaks became spaces, so a
// line holding a line break is not found here (bisection finds it).
func (sh *shard) unparsable(msg string, lines []int32) map[int32]string {
	const marker = markUnparsable + " '"
	if !strings.Contains(msg, marker) {
		return nil
	}
	byText := make(map[string][]int32, len(lines))
	for _, k := range lines {
		t := string(sh.line(k))
		byText[t] = append(byText[t], k)
	}
	out := make(map[int32]string)
	for rest := msg; ; {
		i := strings.Index(rest, marker)
		if i < 0 {
			break
		}
		rest = rest[i+len(marker):]
		seg := rest
		if j := strings.Index(seg, marker); j >= 0 {
			seg = seg[:j]
		}
		// The quoted line ends at one of the "': " in seg; try them in order.
		for off := 0; ; {
			j := strings.Index(seg[off:], "': ")
			if j < 0 {
				break
			}
			if ks, ok := byText[seg[:off+j]]; ok {
				reason := cleanMessage(seg[off+j+3:])
				for _, k := range ks {
					out[k] = reason
				}
				break
			}
			off += j + 3
		}
	}
	return out
}

// dropped returns N of the last "dropped=N" in msg, or -1.
func dropped(msg string) int {
	all := droppedRE.FindAllStringSubmatch(msg, -1)
	if all == nil {
		return -1
	}
	n, err := strconv.Atoi(all[len(all)-1][1])
	if err != nil {
		return -1
	}
	return n
}

// refusalClass returns the rejection class of a point-level message.
func refusalClass(msg string) string {
	switch {
	case strings.Contains(msg, markConflict):
		return ClassTypeConflict
	case strings.Contains(msg, "retention policy"): // 1.8 "beyond", 2.x "outside"
		return ClassRetention
	case strings.Contains(msg, markUnparsable):
		return ClassUnparsable
	}
	return ClassRefused
}

// cleanMessage drops what is about the request rather than the point: the wrappers InfluxDB
// puts around the reason and the count of dropped points.
func cleanMessage(msg string) string {
	if loc := droppedRE.FindAllStringIndex(msg, -1); loc != nil {
		last := loc[len(loc)-1]
		msg = msg[:last[0]] + msg[last[1]:]
	}
	for _, prefix := range []string{"failure writing points to database: ", markPartial + ": "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return strings.TrimSpace(msg)
}

// reject records line k as refused.
func (sh *shard) reject(k int32, class, reason string) {
	sh.rejected = append(sh.rejected, rejection{index: sh.members[k], class: class, reason: reason})
}

// line returns line k without its '\n'.
func (sh *shard) line(k int32) []byte {
	return sh.buf[sh.offs[k] : sh.offs[k+1]-1]
}

// body returns the request body of lines: a slice of buf when they are contiguous, else
// a copy into scratch.
func (sh *shard) body(lines []int32) []byte {
	first, last := lines[0], lines[len(lines)-1]
	if int(last-first) == len(lines)-1 {
		return sh.buf[sh.offs[first]:sh.offs[last+1]]
	}
	sh.scratch = sh.scratch[:0]
	for _, k := range lines {
		sh.scratch = append(sh.scratch, sh.buf[sh.offs[k]:sh.offs[k+1]]...)
	}
	return sh.scratch
}

// compress gzips body into the shard's buffer.
func (sh *shard) compress(body []byte) []byte {
	sh.gzbuf.Reset()
	if sh.gz == nil {
		sh.gz, _ = gzip.NewWriterLevel(&sh.gzbuf, gzip.BestSpeed) // the level is valid
	} else {
		sh.gz.Reset(&sh.gzbuf)
	}
	_, _ = sh.gz.Write(body) // writes to a bytes.Buffer do not fail
	_ = sh.gz.Close()
	return sh.gzbuf.Bytes()
}

// requestBody is a request body in a shard's buffer. After detach it reads as empty: net/http
// may go on reading a body in the background after a response arrived early (a 413 before
// the body was read), and by then the shard reuses the buffer.
type requestBody struct {
	mu       sync.Mutex
	b        []byte
	detached bool
}

func (rb *requestBody) detach() {
	rb.mu.Lock()
	rb.detached = true
	rb.mu.Unlock()
}

// reader returns a new reader of the body (net/http asks for another one when it retries a
// request on a fresh connection).
func (rb *requestBody) reader() io.ReadCloser { return &bodyReader{src: rb} }

type bodyReader struct {
	src *requestBody
	off int
}

func (r *bodyReader) Read(p []byte) (int, error) {
	r.src.mu.Lock()
	defer r.src.mu.Unlock()
	if r.src.detached || r.off >= len(r.src.b) {
		return 0, io.EOF
	}
	n := copy(p, r.src.b[r.off:])
	r.off += n
	return n, nil
}

func (r *bodyReader) Close() error { return nil }
