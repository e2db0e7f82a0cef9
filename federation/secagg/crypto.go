package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/big"
)

// prime is the Mersenne prime 2^521 − 1: the field of the Shamir shares, large enough for
// a 32-byte seed or X25519 private key.
var prime = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 521), big.NewInt(1))

// shareLen is the size of one encoded share (a field element, big-endian).
const shareLen = 66

// split shares the 32-byte secret among ids with threshold t: any t shares reconstruct
// it, fewer reveal nothing. Coefficients are drawn from rnd.
func split(secret [32]byte, t int, ids []uint32, rnd func([]byte) error) (map[uint32][shareLen]byte, error) {
	coef := make([]*big.Int, t)
	coef[0] = new(big.Int).SetBytes(secret[:])
	buf := make([]byte, shareLen+16) // 16 extra bytes make the reduction mod p nearly uniform
	for i := 1; i < t; i++ {
		if err := rnd(buf); err != nil {
			return nil, err
		}
		coef[i] = new(big.Int).Mod(new(big.Int).SetBytes(buf), prime)
	}
	out := make(map[uint32][shareLen]byte, len(ids))
	for _, id := range ids {
		x := big.NewInt(int64(id))
		y := new(big.Int)
		for i := t - 1; i >= 0; i-- { // Horner
			y.Mul(y, x).Add(y, coef[i]).Mod(y, prime)
		}
		var s [shareLen]byte
		y.FillBytes(s[:])
		out[id] = s
	}
	return out, nil
}

// combine reconstructs a 32-byte secret from shares (id → share) by Lagrange
// interpolation at 0. The caller passes at least t shares; all of them are used.
func combine(shares map[uint32][shareLen]byte) ([32]byte, error) {
	var secret [32]byte
	ids := make([]*big.Int, 0, len(shares))
	ys := make([]*big.Int, 0, len(shares))
	for id, s := range shares {
		y := new(big.Int).SetBytes(s[:])
		if y.Cmp(prime) >= 0 {
			return secret, invalid("share of client %d is not a field element", id)
		}
		ids = append(ids, big.NewInt(int64(id)))
		ys = append(ys, y)
	}
	acc := new(big.Int)
	for i := range ids {
		num, den := big.NewInt(1), big.NewInt(1)
		for j := range ids {
			if i == j {
				continue
			}
			num.Mul(num, ids[j]).Mod(num, prime)
			d := new(big.Int).Sub(ids[j], ids[i])
			den.Mul(den, d).Mod(den, prime)
		}
		l := new(big.Int).ModInverse(den, prime)
		if l == nil {
			return secret, invalid("duplicate share ids")
		}
		l.Mul(l, num).Mul(l, ys[i])
		acc.Add(acc, l).Mod(acc, prime)
	}
	if acc.BitLen() > 256 {
		return secret, invalid("shares do not reconstruct a 32-byte secret (inconsistent shares)")
	}
	acc.FillBytes(secret[:])
	return secret, nil
}

// derive returns a 32-byte key for purpose from a shared secret, bound to the round and
// the pair of clients (a, b), so that no key is ever used twice.
func derive(secret []byte, round uint64, purpose string, a, b uint32) []byte {
	salt := binary.BigEndian.AppendUint64([]byte("millwright secagg v1 round "), round)
	info := fmt.Sprintf("%s %d %d", purpose, a, b)
	k, err := hkdf.Key(sha256.New, secret, salt, info, 32)
	if err != nil {
		panic("secagg: hkdf: " + err.Error()) // only for lengths we never ask for
	}
	return k
}

// pairSeed is the pairwise mask seed of clients u and v, computed by either of them
// from its private and the other's public mask key.
func pairSeed(priv *ecdh.PrivateKey, pub []byte, round uint64, u, v uint32) ([]byte, error) {
	s, err := agree(priv, pub)
	if err != nil {
		return nil, err
	}
	return derive(s, round, "mask", min(u, v), max(u, v)), nil
}

// agree is X25519 key agreement with a public key from the wire.
func agree(priv *ecdh.PrivateKey, pub []byte) ([]byte, error) {
	pk, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, invalid("public key: %v", err)
	}
	s, err := priv.ECDH(pk)
	if err != nil {
		return nil, invalid("key agreement: %v", err)
	}
	return s, nil
}

// expander expands seeds into masks with AES-256-CTR (zero IV: every key is used for one
// stream only), reusing its buffer.
type expander struct{ buf []byte }

// add adds sign·PRG(seed) to out element-wise in Z_{2^32} (sign is +1 or −1).
func (e *expander) add(out []uint32, seed []byte, sign int) {
	if cap(e.buf) < 4*len(out) {
		e.buf = make([]byte, 4*len(out))
	}
	buf := e.buf[:4*len(out)]
	clear(buf)
	block, err := aes.NewCipher(seed)
	if err != nil {
		panic("secagg: aes: " + err.Error()) // seeds are always 32 bytes
	}
	var iv [aes.BlockSize]byte
	cipher.NewCTR(block, iv[:]).XORKeyStream(buf, buf)
	if sign > 0 {
		for i := range out {
			out[i] += binary.LittleEndian.Uint32(buf[4*i:])
		}
	} else {
		for i := range out {
			out[i] -= binary.LittleEndian.Uint32(buf[4*i:])
		}
	}
}

// shareAEAD is the AEAD that encrypts the shares from one client to another.
func shareAEAD(priv *ecdh.PrivateKey, pub []byte, round uint64, from, to uint32) (cipher.AEAD, error) {
	s, err := agree(priv, pub)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(derive(s, round, "share", from, to))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
