package natsbus

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestPurgesTakeTheClosedRoundOnly checks the deletion's plan against random update
// streams: members publish in turn, each its rounds in order, and one member in any
// order, some of its messages naming no round; the hub reads the stream up to a random point while
// round r is open. Whatever the interleaving, the purges delete every message of round r
// or earlier that the hub read, none it did not read, and no later round's message of a
// member that sends in order, the disorderly member's neither when it is not the one
// sending it.
func TestPurgesTakeTheClosedRoundOnly(t *testing.T) {
	type msg struct {
		seq     uint64
		subject string
		round   uint64
	}
	r := rand.New(rand.NewPCG(7, 7))
	for trial := range 3000 {
		members := 1 + r.IntN(5)
		round := uint64(1 + r.IntN(4))
		next := make([]uint64, members) // each orderly member's current round
		for i := range next {
			next[i] = uint64(r.IntN(int(round) + 1))
		}
		var stream []msg
		for seq := uint64(1); seq <= uint64(2+r.IntN(30)); seq++ {
			m := r.IntN(members + 1) // members is the disorderly one
			subject := fmt.Sprintf("mw.upd.f.m%d", m)
			var rd uint64
			switch {
			case m == members:
				rd = uint64(r.IntN(int(round) + 3)) // 0: no round header
			default:
				next[m] += uint64(r.IntN(2)) // the same round again, or the next
				rd = next[m]
			}
			stream = append(stream, msg{seq, subject, rd})
		}
		read := r.IntN(len(stream) + 1) // the hub read the first read messages
		seen := &roundSeqs{subjects: map[string]uint64{}}
		for _, m := range stream[:read] {
			seen.see(round, m.round, m.subject, m.seq)
		}
		deleted := map[uint64]bool{}
		for _, p := range seen.purges() {
			for _, m := range stream {
				if m.seq < p.before && (p.subject == "" || p.subject == m.subject) {
					deleted[m.seq] = true
				}
			}
		}
		hasRound := false
		for _, m := range stream[:read] {
			hasRound = hasRound || m.round == round
		}
		for i, m := range stream {
			orderly := m.subject != fmt.Sprintf("mw.upd.f.m%d", members)
			switch {
			case i >= read && deleted[m.seq]:
				t.Fatalf("trial %d: message %+v, which the hub did not read, deleted; stream %v, read %d", trial, m, stream, read)
			case m.round > round && orderly && deleted[m.seq]:
				t.Fatalf("trial %d: message %+v of a later round deleted; stream %v, read %d", trial, m, stream, read)
			case i < read && m.round <= round && hasRound && orderly && !deleted[m.seq]:
				t.Fatalf("trial %d: message %+v of round %d or before, read, kept; stream %v, read %d", trial, m, round, stream, read)
			}
		}
	}
}
