package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/millwright-io/millwright/federation"
)

// The wait before a model that failed is tried again doubles from firstRetry up to
// maxRetry.
const (
	firstRetry = time.Second
	maxRetry   = time.Minute
)

// roundFollower writes the models a federation's round states name, in round order and
// never going back: the round it wrote last (OUT/FED.latest) only grows, and the versions
// between it and a state's model are fetched first (backfill).
type roundFollower struct {
	src            *modelSource
	stdout, stderr io.Writer
	last           uint64 // the round of the model OUT/FED.latest names; 0 before any
	lastHash       string
	next           uint64 // the first round backfill has yet to deal with
}

// followRounds writes the models of src's federation as its round states name them until
// ctx ends (nil) or it cannot go on: the round state cannot be watched, OUT/FED.latest is
// not what subscribe writes, or a file under --out cannot be written.
func followRounds(ctx context.Context, src *modelSource, log *slog.Logger, stdout, stderr io.Writer) error {
	r, err := newRoundFollower(src, stdout, stderr)
	if err != nil {
		return err
	}
	// The watcher hands the newest state over (capacity 1, older ones replaced): a slow
	// download skips to the latest model, and backfill fetches the ones in between.
	states := make(chan federation.RoundState, 1)
	werr := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Go(func() {
		werr <- src.bus.WatchRound(wctx, src.fed, func(b []byte) {
			st, err := federation.DecodeRoundState(b)
			if err != nil {
				log.Warn("round state refused", "err", err)
				return
			}
			select {
			case <-states:
			default:
			}
			states <- st
		})
	})
	return r.run(ctx, states, werr)
}

// newRoundFollower returns a follower of src's federation that starts after the round
// OUT/FED.latest names (none when there is no such file).
func newRoundFollower(src *modelSource, stdout, stderr io.Writer) (*roundFollower, error) {
	r := &roundFollower{src: src, stdout: stdout, stderr: stderr, next: 1}
	name := filepath.Join(src.out, src.fed+".latest")
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	v, hash, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	round, err := parseVersion(v)
	if err != nil || len(hash) != 64 {
		return nil, fmt.Errorf("%s holds %q; expected \"rN SHA256\", as subscribe writes it", name, b)
	}
	r.last, r.lastHash, r.next = round, hash, round+1
	return r, nil
}

// run writes the model of each state received, trying one that fails again with a
// growing wait until it is written or a newer state replaces it, until ctx ends or the
// watch or a write fails. Each model refused is reported on stderr.
func (r *roundFollower) run(ctx context.Context, states <-chan federation.RoundState, werr <-chan error) error {
	var (
		pending *federation.RoundState // the state whose model is to be written; nil when none
		retry   <-chan time.Time
		wait    time.Duration
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-werr:
			if ctx.Err() != nil {
				return nil
			}
			return r.src.explain(err, true)
		case st := <-states:
			if !r.offer(st, pending) {
				continue
			}
			pending, retry, wait = &st, nil, firstRetry
		case <-retry:
		}
		err := r.advance(ctx, *pending)
		switch {
		case err == nil:
			pending, retry = nil, nil
		case ctx.Err() != nil:
			return nil
		case errors.As(err, new(*writeError)):
			return err
		case errors.As(err, new(*refusal)):
			r.report(err)
			pending, retry = nil, nil
		default:
			r.report(fmt.Errorf("%w (trying again in %v)", err, wait))
			retry = time.After(wait)
			wait = min(2*wait, maxRetry)
		}
	}
}

// offer says whether st names a model to write: not the untrained initial model, nor the
// one written last or already pending. A state naming an older model than the pending
// one does not replace it, and is reported.
func (r *roundFollower) offer(st federation.RoundState, pending *federation.RoundState) bool {
	switch {
	case st.GlobalRound == 0 || st.Global == r.lastHash:
		return false
	case pending == nil:
		return true
	case st.Global == pending.Global:
		return false
	case st.GlobalRound < pending.GlobalRound:
		r.report(refuse("the round state of round %d names %s@r%d (sha256 %s), older than %s@r%d, not written yet; it waits", st.Round,
			r.src.fed, st.GlobalRound, st.Global, r.src.fed, pending.GlobalRound))
		return false
	}
	return true
}

// advance writes the models of the rounds after the last written up to the one st names,
// which must be the version of st.GlobalRound and newer than the last written.
func (r *roundFollower) advance(ctx context.Context, st federation.RoundState) error {
	if st.GlobalRound <= r.last {
		return refuse("the round state of round %d names %s@r%d (sha256 %s), not newer than %s@r%d (sha256 %s), written already; not written",
			st.Round, r.src.fed, st.GlobalRound, st.Global, r.src.fed, r.last, r.lastHash)
	}
	if err := r.backfill(ctx, st.GlobalRound); err != nil {
		return err
	}
	f, err := r.src.fetch(ctx, st.Global, versionOf(st.GlobalRound), true)
	if err != nil {
		return fmt.Errorf("the round state of round %d names sha256 %s as %s@r%d: %w", st.Round, st.Global, r.src.fed, st.GlobalRound, err)
	}
	r.wrote(f)
	return nil
}

// backfill writes the models of the rounds from r.next up to upto (excluded), found
// through their version keys as pull finds them and checked the same way, in order. A
// version the hub no longer stores (keep_models) is reported and skipped, a refused one
// too, and one the hub never published (an abandoned round) is skipped; any other error
// stops it, and the next call starts again from that version.
func (r *roundFollower) backfill(ctx context.Context, upto uint64) error {
	var gone []uint64
	defer func() { r.reportGone(gone) }()
	for r.next = max(r.next, r.last+1); r.next < upto; r.next++ {
		f, err := r.src.fetchVersion(ctx, versionOf(r.next), true)
		switch {
		case err == nil:
			r.wrote(f)
		case errors.As(err, new(*refusal)):
			r.report(err)
		case errors.Is(err, federation.ErrNotFound) && f.hash == "":
			// No such version: its round produced no model (abandoned).
		case errors.Is(err, federation.ErrNotFound):
			gone = append(gone, r.next)
		default:
			return err
		}
	}
	return nil
}

// wrote records the model f as the last written, and prints it.
func (r *roundFollower) wrote(f fetched) {
	r.last, r.lastHash = f.model.Header.Round, f.hash
	fmt.Fprintln(r.stdout, f.line())
}

// report writes err on stderr.
func (r *roundFollower) report(err error) {
	fmt.Fprintf(r.stderr, "millwright models subscribe: %v\n", err)
}

// reportGone reports the rounds, in increasing order, whose models backfill found no longer
// stored, as ranges (r3-r7, r9).
func (r *roundFollower) reportGone(rounds []uint64) {
	if len(rounds) == 0 {
		return
	}
	var spans []string
	for i := 0; i < len(rounds); {
		j := i
		for j+1 < len(rounds) && rounds[j+1] == rounds[j]+1 {
			j++
		}
		span := versionOf(rounds[i])
		if j > i {
			span += "-" + versionOf(rounds[j])
		}
		spans = append(spans, span)
		i = j + 1
	}
	fmt.Fprintf(r.stderr, "millwright models subscribe: %s@%s: no longer stored on the hub (keep_models); skipped, the ledger still records their hashes\n",
		r.src.fed, strings.Join(spans, ", "))
}
