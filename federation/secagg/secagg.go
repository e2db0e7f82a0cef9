// Package secagg sums model updates so that the server learns the sum but no single update
// (pairwise masking after Bonawitz et al. 2017, "Practical Secure Aggregation for
// Privacy-Preserving Machine Learning", with its consistency check against a malicious
// server and the dropout recovery of Bell et al. 2020).
//
// Threat model. Trusted: each client's own randomness and keys, and the clients' ed25519
// identity keys (Identities), which must come from a source the server does not control.
// The server relays every message and may deviate from the protocol to learn individual
// inputs (malicious), possibly together with c colluding clients. Guarantee: as long as
// c < t and 2t > N + c (the default threshold of two thirds allows c < N/3), the server
// learns nothing about the inputs of the honest clients beyond the sum of at least t
// inputs (and what the colluders know). What stops it:
//   - every client signs its advertised keys, and checks every roster entry's signature:
//     the server can neither stand in for a client nor add fake ones to reach t;
//   - shares travel AES-GCM encrypted under a key only their sender and receiver derive,
//     bound to the round and the pair, and each share names both;
//   - the consistency check: each survivor signs the survivor set it was shown
//     (SignSurvivors) and reveals shares only when the relayed signatures hold at least
//     t distinct survivors' signatures over that same set and none that fails (Unmask,
//     ErrInconsistent otherwise). Honest clients sign once, so two different sets cannot
//     both gather t signatures: the server cannot get the self-mask shares of a client
//     from some clients (as a survivor) and its mask-key shares from others (as a
//     dropout), which together would unmask its input;
//   - a client answers each step once, and refuses a request that names a client as both
//     survivor and dropout, lists itself as a dropout, has fewer than t survivors, or does
//     not match the clients that shared keys with it;
//   - the server checks every reconstructed mask key against its owner's advertised key.
//
// What the server can still do: abort any round (withhold or drop messages), decide who
// is in the roster and the survivor set (within those checks; a client it declares
// dropped after receiving its masked input stays hidden behind its self mask), and learn
// the sum over the survivor set it declares. Verified: every message is decoded strictly
// (fuzzed). Not provided: validation of inputs: a Byzantine client can corrupt the sum
// (with its input or bad shares); secagg hides inputs, it does not check them, so robust
// aggregation is impossible on masked inputs. What leaks: the sum, the participants, who
// dropped out, and message sizes.
//
// Inputs are vectors of finite float32 (MaskInput refuses NaN and ±Inf), clipped to ±Range
// and encoded in fixed point with FracBits fractional bits as elements of Z_{2^32};
// Params.Validate ensures a sum of N clipped inputs cannot wrap around. The protocol is
// modelled as pure state machines (Client, Server) exchanging messages; the transport is
// someone else's. Every close of the Server is a deterministic function of the messages
// accepted before it, so a server can be rebuilt after a crash by replaying a durable log
// of them.
package secagg

import (
	"errors"
	"fmt"
	"math"

	"github.com/millwright-io/millwright/gateway/config"
)

// Params are the public parameters of one aggregation, identical at the server and every
// client.
type Params struct {
	// Round identifies the aggregation; keys derived for one round are useless in another.
	Round uint64
	// Clients is the number of clients N, with ids 1..N.
	Clients int
	// Threshold is t: the least number of clients whose inputs are summed and whose
	// shares unmask the sum. It must exceed Clients/2. Up to N−t clients may drop out.
	Threshold int
	// Dim is the length of every input vector.
	Dim int
	// Range clips every input element to [−Range, Range].
	Range float64
	// FracBits is the number of fractional bits of the fixed-point encoding: each input
	// is rounded to a multiple of 2^−FracBits.
	FracBits int
}

// Config is a federation's secure-aggregation setting, from which the hub derives each
// round's Params. Decode it with config.Decode after SetDefaults, then call Validate.
type Config struct {
	// Enabled turns secure aggregation on. Default false.
	Enabled bool `yaml:"enabled"`
	// Threshold is t as a fraction of a round's clients, rounded up, in (0.5, 1]: up to
	// (1 − Threshold)·N clients may drop out, and the server must corrupt ⌈Threshold·N⌉
	// clients to see an individual input. Default 0.67.
	Threshold float64 `yaml:"threshold"`
	// Range clips every update element to [−Range, Range] before encoding. Default 8.
	Range float64 `yaml:"range"`
	// FracBits is the fixed-point precision: 2^−FracBits per element. Default 16.
	FracBits int `yaml:"frac_bits"`
	// SampleCap, when positive, weighs each update by w = min(samples, SampleCap)/SampleCap
	// inside the masked sum: a gateway masks w·update and w (one extra element), and the
	// hub divides the unmasked sums, a sample-weighted mean. The hub then learns the sum of
	// the weights (the capped sample counts of the survivors), no single one. Every w·update
	// is quantized to 2^−FracBits like an update, so a gateway with far fewer samples than
	// the cap loses relative precision: set it near the largest gateway's count. Needs
	// Range ≥ 1; ignored when differential privacy is on (its sensitivity analysis needs
	// equal weights). Default 0: every update weighs the same.
	SampleCap uint64 `yaml:"sample_cap"`
	// Metrics names gateway metrics (such as false_alarm_rate) summed under the mask
	// beside the update, two elements each (w·value and w, or 0 and 0 from a gateway that
	// has no such metric or one outside ±Range), so that the hub learns their weighted mean
	// over the survivors and no gateway's value. Default none. The federation's
	// configuration checks the names (package federation). With differential privacy they
	// are masked only in the final evaluation round, clipped and noised (package
	// federation, SecAggState).
	Metrics []string `yaml:"metrics"`
}

// SetDefaults fills in every field left at its zero value.
func (c *Config) SetDefaults() {
	if c.Threshold == 0 {
		c.Threshold = 0.67
	}
	if c.Range == 0 {
		c.Range = 8
	}
	if c.FracBits == 0 {
		c.FracBits = 16
	}
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var pr config.Problems
	if !(c.Threshold > 0.5 && c.Threshold <= 1) {
		pr.Addf("threshold", "%v is out of range; expected (0.5, 1]", c.Threshold)
	}
	if !(c.Range > 0) || math.IsInf(c.Range, 0) {
		pr.Addf("range", "%v must be a positive finite number", c.Range)
	}
	if c.FracBits < 0 || c.FracBits > 24 {
		pr.Addf("frac_bits", "%d is out of range; expected 0 to 24", c.FracBits)
	}
	if c.SampleCap > MaxSampleCap {
		pr.Addf("sample_cap", "%d is out of range; expected 0 to %d", c.SampleCap, uint64(MaxSampleCap))
	}
	if c.SampleCap > 0 && c.Range < 1 {
		pr.Addf("range", "%v with sample_cap: the weight element (up to 1) needs range ≥ 1", c.Range)
	}
	return pr.Err()
}

// Weight is the weight of an update trained on samples rows when updates are weighted
// with cap (Config.SampleCap > 0): min(samples, cap)/cap, in (0, 1] for samples ≥ 1.
func Weight(samples int, cap uint64) float32 {
	return float32(float64(min(uint64(max(samples, 1)), cap)) / float64(cap))
}

// Params returns the parameters of one round with the given number of clients and
// vector length, or an error if they do not fit (too many clients for Range and
// FracBits without overflow, for instance).
func (c Config) Params(round uint64, clients, dim int) (Params, error) {
	p := Params{Round: round, Clients: clients, Dim: dim, Range: c.Range, FracBits: c.FracBits,
		Threshold: int(math.Ceil(c.Threshold * float64(clients)))}
	if p.Threshold <= clients/2 {
		p.Threshold = clients/2 + 1
	}
	if err := p.Validate(); err != nil {
		return Params{}, fmt.Errorf("secagg: round %d with %d clients: %w", round, clients, err)
	}
	return p, nil
}

// Limits of Params.
const (
	MaxClients   = 1 << 10
	MaxDim       = 1 << 26
	MaxSampleCap = 1 << 40
)

// Validate reports every problem of the parameters at once.
func (p Params) Validate() error {
	var pr config.Problems
	if p.Clients < 2 || p.Clients > MaxClients {
		pr.Addf("clients", "%d is out of range; expected 2 to %d", p.Clients, MaxClients)
	}
	if p.Threshold <= p.Clients/2 || p.Threshold > p.Clients {
		pr.Addf("threshold", "%d is out of range; expected more than half of clients (%d) and at most %d", p.Threshold, p.Clients, p.Clients)
	}
	if p.Dim < 1 || p.Dim > MaxDim {
		pr.Addf("dim", "%d is out of range; expected 1 to %d", p.Dim, MaxDim)
	}
	if p.FracBits < 0 || p.FracBits > 24 {
		pr.Addf("frac_bits", "%d is out of range; expected 0 to 24", p.FracBits)
	}
	if !(p.Range > 0) || math.IsInf(p.Range, 0) {
		pr.Addf("range", "%v must be a positive finite number", p.Range)
	} else if bound := float64(p.Clients) * (p.Range*math.Ldexp(1, p.FracBits) + 1); bound >= 1<<31 {
		pr.Addf("range", "%v with frac_bits %d and %d clients can overflow the 32-bit sum (%.3g ≥ 2^31); lower range or frac_bits",
			p.Range, p.FracBits, p.Clients, bound)
	}
	return pr.Err()
}

// checkFinite refuses an input with a NaN or infinite element, naming the first: clipping
// leaves NaN as it is, and its fixed-point encoding is implementation-defined.
func checkFinite(x []float32) error {
	for i, v := range x {
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("secagg: input element %d is %v; expected a finite number", i, v)
		}
	}
	return nil
}

// encode writes x (finite: checkFinite), clipped to ±Range, in fixed point into out
// (elements of Z_{2^32}).
func (p Params) encode(out []uint32, x []float32) {
	scale := math.Ldexp(1, p.FracBits)
	for i, v := range x {
		f := max(-p.Range, min(p.Range, float64(v)))
		out[i] = uint32(int32(math.Round(f * scale)))
	}
}

// decode turns a sum in Z_{2^32} back into floats.
func (p Params) decode(sum []uint32) []float32 {
	scale := math.Ldexp(1, -p.FracBits)
	out := make([]float32, len(sum))
	for i, v := range sum {
		out[i] = float32(float64(int32(v)) * scale)
	}
	return out
}

// Errors the state machines return (wrapped, with details).
var (
	// ErrTooFewClients: fewer than t clients are left at some stage; the round cannot
	// complete and must be restarted with fresh keys.
	ErrTooFewClients = errors.New("secagg: fewer clients than the threshold")
	// ErrRefused: a client refuses a request that would reveal its input.
	ErrRefused = errors.New("secagg: request refused")
	// ErrPhase: a call out of the protocol's order.
	ErrPhase = errors.New("secagg: wrong phase")
	// ErrInvalid: a message that is malformed, unexpected or fails authentication.
	ErrInvalid = errors.New("secagg: invalid message")
	// ErrInconsistent: the consistency round failed: a survivor-set signature does not
	// verify over the set the receiver holds (the server showed clients different sets,
	// or relayed a forgery), or fewer than t clients signed it. No share is revealed.
	ErrInconsistent = errors.New("secagg: survivor sets inconsistent")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}
