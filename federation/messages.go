package federation

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/millwright-io/millwright/internal/f32le"
	"github.com/millwright-io/millwright/models"
)

// ErrMalformed is returned (wrapped) for every message that fails strict decoding.
var ErrMalformed = errors.New("federation: malformed message")

// ErrBadSignature is returned (wrapped) when a message's signature does not verify.
var ErrBadSignature = errors.New("federation: bad signature")

// Wire versions. A decoder refuses every other version.
const (
	updateMagic = "MWU1"
	modelMagic  = "MWG1"
	// StateVersion is the version of RoundState.
	StateVersion = 1
)

// Signature domains: a signature over one kind of message is never valid for another.
const (
	updateDomain = "millwright/federation/update/v1\x00"
	modelDomain  = "millwright/federation/model/v1\x00"
)

// Limits of decoded messages.
const (
	MaxParams   = 1 << 24 // parameters of a model
	maxHeader   = 1 << 20 // bytes of a model's JSON header
	maxNameLen  = 64
	maxMetrics  = 32
	maxPayload  = 4*MaxParams + 1024
	nonceLen    = 16
	sigOverhead = ed25519.PublicKeySize + ed25519.SignatureSize
	// MaxModelBytes bounds a global model's wire form: magic, header length, header,
	// parameter count, parameters, key and signature. A transport refuses a larger object
	// before reading it.
	MaxModelBytes = 12 + maxHeader + 4*MaxParams + sigOverhead
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// CheckName reports whether s can name a federation or a participant.
func CheckName(s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("%q is not a valid name; expected %s", s, nameRE)
	}
	return nil
}

// checkMetric reports whether v can be metric k's value: finite and within float32's
// range, since the hub combines metrics as it combines parameters (a larger value would
// become an infinity there).
func checkMetric(k string, v float64) error {
	if math.IsNaN(v) || math.Abs(v) > math.MaxFloat32 {
		return fmt.Errorf("metric %q is %v; expected a finite number within ±%g", k, v, math.MaxFloat32)
	}
	return nil
}

// checkMetrics reports the first reason DecodeUpdate would refuse metrics: too many of
// them, a name that is not a valid name, or a value checkMetric refuses. A gateway checks
// its trainer's metrics with it before it sends them, so that a bad metric is its own
// error, not a malformed update the hub drops with the model update it came with.
func checkMetrics(metrics map[string]float64) error {
	if len(metrics) > maxMetrics {
		return fmt.Errorf("%d metrics; expected at most %d", len(metrics), maxMetrics)
	}
	for _, k := range slices.Sorted(maps.Keys(metrics)) {
		if err := CheckName(k); err != nil {
			return fmt.Errorf("metric name: %w", err)
		}
		if err := checkMetric(k, metrics[k]); err != nil {
			return err
		}
	}
	return nil
}

// Kinds of Update.
const (
	KindDelta  uint8 = 0
	KindSecAgg uint8 = 1
	// KindEvaluation carries only metrics about the round's global model, judged without
	// training, in a final evaluation round (PhaseEvaluate); its payload is empty.
	KindEvaluation uint8 = 2
)

// Update is one gateway's signed contribution to a round.
type Update struct {
	Federation  string
	Round       uint64 // the round it is sent for
	BaseRound   uint64 // the round whose global model it was trained from (≤ Round)
	Participant string
	Nonce       [nonceLen]byte
	Kind        uint8 // KindDelta, KindSecAgg or KindEvaluation
	Samples     uint64
	Metrics     map[string]float64
	// Payload is the delta encoded by package compress (KindDelta), or a message of package
	// secagg (KindSecAgg: the signature authenticates it, as secagg requires).
	Payload []byte
	// Key is the sender's ed25519 public key; Sig its signature over everything above.
	Key ed25519.PublicKey
	Sig []byte

	id string // cached by DecodeUpdate
}

type writer struct{ b []byte }

func (w *writer) str(s string) {
	w.b = binary.BigEndian.AppendUint16(w.b, uint16(len(s)))
	w.b = append(w.b, s...)
}
func (w *writer) u64(v uint64)  { w.b = binary.BigEndian.AppendUint64(w.b, v) }
func (w *writer) f64(v float64) { w.u64(math.Float64bits(v)) }
func (w *writer) bytes32(p []byte) {
	w.b = binary.BigEndian.AppendUint32(w.b, uint32(len(p)))
	w.b = append(w.b, p...)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, a...)...)
	}
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.fail("%s: need %d bytes, %d left", what, n, len(r.b))
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) u64(what string) uint64 {
	p := r.take(8, what)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (r *reader) name(what string) string {
	p := r.take(2, what)
	if p == nil {
		return ""
	}
	n := int(binary.BigEndian.Uint16(p))
	if n > maxNameLen {
		r.fail("%s: length %d exceeds %d", what, n, maxNameLen)
		return ""
	}
	s := string(r.take(n, what))
	if r.err == nil {
		if err := CheckName(s); err != nil {
			r.fail("%s: %v", what, err)
		}
	}
	return s
}

// body encodes everything the signature covers, in a buffer with room for the key and
// the signature.
func (u *Update) body() []byte {
	return append(u.head(nil, 256+len(u.Payload)+sigOverhead), u.Payload...)
}

// head encodes the body up to the payload's bytes, in buf (its contents are replaced),
// grown to a capacity of at least size.
func (u *Update) head(buf []byte, size int) []byte {
	w := writer{b: slices.Grow(buf[:0], size)}
	w.b = append(w.b, updateMagic...)
	w.str(u.Federation)
	w.u64(u.Round)
	w.u64(u.BaseRound)
	w.str(u.Participant)
	w.b = append(w.b, u.Nonce[:]...)
	w.b = append(w.b, u.Kind)
	w.u64(u.Samples)
	keys := make([]string, 0, len(u.Metrics))
	for k := range u.Metrics {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	w.b = append(w.b, byte(len(keys)))
	for _, k := range keys {
		w.str(k)
		w.f64(u.Metrics[k])
	}
	w.b = binary.BigEndian.AppendUint32(w.b, uint32(len(u.Payload)))
	return w.b
}

// signed is what a signature covers: the message kind's domain and the SHA-256 of the
// message body (hashing once with SHA-256 is several times faster on large models than
// letting ed25519 hash the whole body with SHA-512, twice when signing).
func signed(domain string, body []byte) []byte {
	d := sha256.Sum256(body)
	return append([]byte(domain), d[:]...)
}

// signedAndID hashes a received message b (body, then key and signature) once and returns
// what its signature covers, as signed does, and the lower-case hex SHA-256 of all of b,
// its identity: one pass over a large model or update instead of two.
func signedAndID(domain string, b []byte) ([]byte, string) {
	body := len(b) - sigOverhead
	h := sha256.New()
	h.Write(b[:body])
	msg := h.Sum([]byte(domain)) // Sum leaves the state as it was: hashing continues
	h.Write(b[body:])
	return msg, hex.EncodeToString(h.Sum(nil))
}

// Sign sets Key and Sig with key over the update's fields. It hashes the body without
// building it: the payload (a whole model's delta) is not copied.
func (u *Update) Sign(key ed25519.PrivateKey) {
	h := sha256.New()
	h.Write(u.head(nil, 256))
	h.Write(u.Payload)
	u.Key = key.Public().(ed25519.PublicKey)
	u.Sig = ed25519.Sign(key, h.Sum([]byte(updateDomain)))
}

// sealed signs u as Sign does and returns its wire form, built in one buffer: the payload
// is written in place by appendPayload (compress.Append: a model-sized delta is encoded
// straight into the message, not encoded and then copied), and u.Payload is set to those
// bytes. It is built in buf (its contents are replaced; nil for a new buffer), and size
// bounds the payload's length, to size the buffer. An error is appendPayload's.
func (u *Update) sealed(buf []byte, key ed25519.PrivateKey, size int, appendPayload func([]byte) ([]byte, error)) ([]byte, error) {
	u.Payload = nil
	b := u.head(buf, 256+size+sigOverhead) // its payload length, 0, is set below
	at := len(b)
	b, err := appendPayload(b)
	if err != nil {
		return nil, err
	}
	if n := len(b) - at; n > maxPayload {
		return nil, fmt.Errorf("payload of %d bytes exceeds the limit %d", n, maxPayload)
	}
	b = slices.Grow(b, sigOverhead)
	binary.BigEndian.PutUint32(b[at-4:], uint32(len(b)-at))
	u.Payload = b[at:]
	u.Key = key.Public().(ed25519.PublicKey)
	u.Sig = ed25519.Sign(key, signed(updateDomain, b))
	b = append(b, u.Key...)
	return append(b, u.Sig...), nil
}

// Marshal returns the update's wire form (it must be signed).
func (u *Update) Marshal() []byte {
	b := u.body()
	b = append(b, u.Key...)
	return append(b, u.Sig...)
}

// ID is the SHA-256 of the wire form: what the ledger records as the input update.
func (u *Update) ID() string {
	if u.id != "" {
		return u.id
	}
	return HashHex(u.Marshal())
}

// DecodeUpdate decodes one update strictly (magic and version, name syntax, bounded
// lengths, finite metrics, no trailing bytes) and verifies its signature with the key it
// carries; whether that key belongs to the participant is the hub's check.
func DecodeUpdate(b []byte) (*Update, error) {
	if len(b) > maxPayload+4096 {
		return nil, fmt.Errorf("%w: %d bytes exceeds the limit %d", ErrMalformed, len(b), maxPayload+4096)
	}
	if len(b) < len(updateMagic)+sigOverhead {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrMalformed, len(b))
	}
	r := reader{b: b[:len(b)-sigOverhead]}
	if string(r.take(4, "magic")) != updateMagic {
		return nil, fmt.Errorf("%w: not an update of version 1", ErrMalformed)
	}
	u := &Update{}
	u.Federation = r.name("federation")
	u.Round = r.u64("round")
	u.BaseRound = r.u64("base round")
	u.Participant = r.name("participant")
	copy(u.Nonce[:], r.take(nonceLen, "nonce"))
	if k := r.take(1, "kind"); k != nil {
		if u.Kind = k[0]; u.Kind > KindEvaluation {
			r.fail("kind %d is unknown", u.Kind)
		}
	}
	u.Samples = r.u64("samples")
	if nm := r.take(1, "metrics"); nm != nil {
		n := int(nm[0])
		if n > maxMetrics {
			r.fail("metrics: %d exceeds %d", n, maxMetrics)
		}
		prev := ""
		for i := 0; i < n && r.err == nil; i++ {
			k := r.name("metric name")
			v := math.Float64frombits(r.u64("metric value"))
			if r.err != nil {
				break
			}
			if i > 0 && k <= prev {
				r.fail("metric names not strictly increasing at %q", k)
			}
			if err := checkMetric(k, v); err != nil {
				r.fail("%v", err)
			}
			if u.Metrics == nil {
				u.Metrics = map[string]float64{}
			}
			u.Metrics[k], prev = v, k
		}
	}
	if lp := r.take(4, "payload length"); lp != nil {
		n := binary.BigEndian.Uint32(lp)
		if n > maxPayload {
			r.fail("payload length %d exceeds %d", n, maxPayload)
		} else {
			u.Payload = r.take(int(n), "payload")
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes before the signature", len(r.b))
	}
	if r.err == nil && u.Kind == KindEvaluation && len(u.Payload) != 0 {
		r.fail("an evaluation carries no payload; it has %d bytes", len(u.Payload))
	}
	if r.err != nil {
		return nil, r.err
	}
	if u.BaseRound > u.Round {
		return nil, fmt.Errorf("%w: base round %d is after round %d", ErrMalformed, u.BaseRound, u.Round)
	}
	if u.Samples == 0 || u.Samples > 1<<40 {
		return nil, fmt.Errorf("%w: samples %d; expected 1..2^40", ErrMalformed, u.Samples)
	}
	tail := b[len(b)-sigOverhead:]
	u.Key = ed25519.PublicKey(append([]byte(nil), tail[:ed25519.PublicKeySize]...))
	u.Sig = append([]byte(nil), tail[ed25519.PublicKeySize:]...)
	msg, id := signedAndID(updateDomain, b)
	if !ed25519.Verify(u.Key, msg, u.Sig) {
		return nil, fmt.Errorf("%w: update of %s for %s round %d", ErrBadSignature, u.Participant, u.Federation, u.Round)
	}
	u.id = id
	return u, nil
}

// ModelHeader describes a global model.
type ModelHeader struct {
	Federation   string              `json:"federation"`
	Round        uint64              `json:"round"` // the round that produced it (0: initial model)
	Architecture models.Architecture `json:"architecture"`
	Parent       string              `json:"parent,omitempty"` // SHA-256 of the model it was aggregated from
	Created      time.Time           `json:"created"`
	Participants []string            `json:"participants,omitempty"`
}

// Version is how people name the model: the round that produced it.
func (h ModelHeader) Version() string { return fmt.Sprintf("r%d", h.Round) }

// GlobalModel is a published global model, signed by the hub.
type GlobalModel struct {
	Header ModelHeader
	Params []float32
	Key    ed25519.PublicKey
	Sig    []byte
	// Raw is the signed wire form the model was decoded from (set by DecodeModel), whose
	// SHA-256 is its identity.
	Raw []byte

	hash string // of Raw, set by DecodeModel
}

// Hash is the lower-case hex SHA-256 of the wire form the model was decoded from or signed
// into (empty for a model neither DecodeModel nor SignedBytes made): its identity, computed
// while verifying or signing it.
func (g *GlobalModel) Hash() string { return g.hash }

func (g *GlobalModel) body() ([]byte, error) {
	hj, err := json.Marshal(g.Header)
	if err != nil {
		return nil, err
	}
	// Room for the key and signature too: SignedBytes appends them without copying.
	w := writer{b: make([]byte, 0, 12+len(hj)+4*len(g.Params)+sigOverhead)}
	w.b = append(w.b, modelMagic...)
	w.bytes32(hj)
	w.b = binary.BigEndian.AppendUint32(w.b, uint32(len(g.Params)))
	start := len(w.b)
	w.b = w.b[:start+4*len(g.Params)]
	if i := f32le.Encode(w.b[start:], g.Params); i >= 0 {
		return nil, fmt.Errorf("parameter %d is %v; a model's parameters must be finite", i, g.Params[i])
	}
	return w.b, nil
}

// SignedBytes signs the model with the hub's key and returns its wire form, whose SHA-256
// is the model's identity (Hash): the body is hashed once, for the signature and for it.
func (g *GlobalModel) SignedBytes(key ed25519.PrivateKey) ([]byte, error) {
	b, err := g.body()
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(b)
	g.Key = key.Public().(ed25519.PublicKey)
	g.Sig = ed25519.Sign(key, h.Sum([]byte(modelDomain))) // as signed(modelDomain, b); hashing continues
	b = append(b, g.Key...)
	b = append(b, g.Sig...)
	h.Write(g.Key)
	h.Write(g.Sig)
	g.hash = hex.EncodeToString(h.Sum(nil))
	return b, nil
}

// DecodeModel decodes a global model strictly and verifies its signature against hubKey
// (any key when hubKey is nil: the caller must then check Key itself).
func DecodeModel(b []byte, hubKey ed25519.PublicKey) (*GlobalModel, error) {
	return decodeModel(b, hubKey, nil)
}

// decodeModel is DecodeModel, with the parameters decoded into params's storage when it
// has room for them.
func decodeModel(b []byte, hubKey ed25519.PublicKey, params []float32) (*GlobalModel, error) {
	if len(b) < len(modelMagic)+8+sigOverhead {
		return nil, fmt.Errorf("%w: model of %d bytes is too short", ErrMalformed, len(b))
	}
	r := reader{b: b[:len(b)-sigOverhead]}
	if string(r.take(4, "magic")) != modelMagic {
		return nil, fmt.Errorf("%w: not a global model of version 1", ErrMalformed)
	}
	g := &GlobalModel{}
	if lp := r.take(4, "header length"); lp != nil {
		n := binary.BigEndian.Uint32(lp)
		if n > maxHeader {
			r.fail("header length %d exceeds 1 MiB", n)
		} else if hj := r.take(int(n), "header"); hj != nil {
			if err := models.DecodeJSON(hj, &g.Header); err != nil {
				r.fail("header: %v", err)
			}
		}
	}
	var n uint32
	if lp := r.take(4, "parameter count"); lp != nil {
		n = binary.BigEndian.Uint32(lp)
	}
	if r.err == nil && (n > MaxParams || int(n)*4 != len(r.b)) {
		r.fail("parameter count %d does not match %d bytes (limit %d)", n, len(r.b), MaxParams)
	}
	if r.err != nil {
		return nil, r.err
	}
	g.Params = slices.Grow(params[:0], int(n))[:n]
	if i := f32le.Decode(g.Params, r.b); i >= 0 {
		return nil, fmt.Errorf("%w: parameter %d is %v", ErrMalformed, i, g.Params[i])
	}
	if err := CheckName(g.Header.Federation); err != nil {
		return nil, fmt.Errorf("%w: federation: %v", ErrMalformed, err)
	}
	if g.Header.Architecture.Params != int(n) {
		return nil, fmt.Errorf("%w: architecture says %d parameters, model has %d", ErrMalformed, g.Header.Architecture.Params, n)
	}
	tail := b[len(b)-sigOverhead:]
	g.Key = ed25519.PublicKey(append([]byte(nil), tail[:ed25519.PublicKeySize]...))
	g.Sig = append([]byte(nil), tail[ed25519.PublicKeySize:]...)
	if hubKey != nil && !hubKey.Equal(g.Key) {
		return nil, fmt.Errorf("%w: model signed by key %x, expected the hub's %x", ErrBadSignature, g.Key[:8], hubKey[:8])
	}
	msg, hash := signedAndID(modelDomain, b)
	if !ed25519.Verify(g.Key, msg, g.Sig) {
		return nil, fmt.Errorf("%w: global model of %s round %d", ErrBadSignature, g.Header.Federation, g.Header.Round)
	}
	g.Raw, g.hash = b, hash
	return g, nil
}

// HashHex returns the lower-case hex SHA-256 of b.
func HashHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
