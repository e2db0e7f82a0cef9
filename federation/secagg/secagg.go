// Package secagg sums model updates so that the hub learns the sum but no single update
// (pairwise masking after Bonawitz et al. 2017, "Practical Secure Aggregation for
// Privacy-Preserving Machine Learning", with the dropout recovery of Bell et al. 2020).
//
// Threat model. Trusted: each client's own randomness and keys. The server is honest but
// curious: it relays every message and follows the protocol, but tries to learn
// individual inputs from what it sees. Guarantee: the server, even together with fewer
// than t clients, learns nothing about the inputs of the honest clients beyond their sum
// (and that of the colluders). Verified: every message is decoded strictly (fuzzed); a
// client checks that the roster holds at least t distinct clients, that each share it
// receives is authenticated (AES-GCM under a key only the sender and it can derive) and
// addressed to it, and it answers the unmasking request once, refusing one that names a
// client as both survivor and dropout (which would give the server that client's
// self-mask and pairwise-mask seeds, hence its input) or has fewer than t survivors. The
// server checks every reconstructed mask key against the public key its owner advertised.
// Not provided here: authentication of the advertised public keys (the round protocol
// must sign AdvertiseKeys with the client's ed25519 identity key, or a server could stand
// in for clients), and the consistency round of the actively secure variant, so a
// malicious server that tells different clients different survivor sets is not detected.
// A Byzantine client can corrupt the sum (with its input or bad shares); secagg hides
// inputs, it does not validate them, so robust aggregation is impossible on masked
// inputs. What leaks: the sum, the participants, who dropped out, and message sizes.
//
// Inputs are float32 vectors, clipped to ±Range and encoded in fixed point with FracBits
// fractional bits as elements of Z_{2^32}; Params.Validate ensures a sum of N clipped
// inputs cannot wrap around. The protocol is modelled as pure state machines (Client,
// Server) exchanging messages; the transport is someone else's.
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
	return pr.Err()
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
	MaxClients = 1 << 10
	MaxDim     = 1 << 26
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

// encode writes x, clipped to ±Range, in fixed point into out (elements of Z_{2^32}).
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
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}
