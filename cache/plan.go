package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// plan hands out pieces of the missing chunks in [cursor, hi) to background
// workers (Fill, prefetch, read-ahead). Its fields are guarded by s.mu.
type plan struct {
	cursor, hi int64
	piece      int64 // max chunks per piece
	workers    int   // goroutines working on the plan (see work)
	busy       int   // of those, the ones fetching a run now
	// follow makes the plan look first just past the read-ahead window of
	// the latest sequential Reader (see scheduler.followAt): prefetch then
	// fetches what that reader wants next instead of what comes next in
	// file order, which it would only reach much later.
	follow bool
	// endGame lets a worker that finds nothing left to claim split the
	// in-flight run with the most unwritten chunks and fetch its tail (see
	// splitLocked), so every connection stays busy to the end.
	endGame bool
}

// claimNextLocked claims the next run of p at prio and reports its first
// chunk: missing chunks that are not in flight (or, for read-ahead, in
// flight in a Fill or prefetch run whose writer is not near them: see run),
// at most p.piece long. It looks just past a sequential reader's window
// first if p.follow, then from the cursor, which it advances; when that
// finds nothing and p.endGame is set, it splits a run instead. s.mu is
// held.
func (s *scheduler) claimNextLocked(p *plan, prio priority) (r *run, first int64, ok bool) {
	c := s.newClaims(prio)
	defer c.done()
	if p.follow && s.followAt > 0 {
		// Near the reader the pieces are as small as read-ahead's, so
		// the reader's window reaches them whole instead of cutting
		// them; further on, plain pieces (a reader that catches up with
		// one takes its tail, see run).
		i := s.nextFreeLocked(c, s.followAt, p.hi)
		if i < p.hi {
			piece := p.piece
			if i < s.followAt+s.raWin {
				piece = min(piece, s.raPiece(s.raWin))
			}
			r = s.claimRunLocked(c, p, i, piece)
			return r, i, true
		}
	}
	if i := s.nextFreeLocked(c, p.cursor, p.hi); i < p.hi {
		r = s.claimRunLocked(c, p, i, p.piece)
		p.cursor = r.end
		return r, i, true
	}
	p.cursor = p.hi
	if p.endGame {
		return s.splitLocked(c, p)
	}
	return nil, 0, false
}

// nextFreeLocked returns the first chunk in [from, hi) that c may claim, or
// hi. s.mu is held.
func (s *scheduler) nextFreeLocked(c *claims, from, hi int64) int64 {
	for i := from; i < hi; i++ {
		i = s.tab.present.nextClear(i, hi)
		if i >= hi || c.free(i) {
			return i
		}
	}
	return hi
}

// claimRunLocked claims chunk first, which c.free approved, and the free
// chunks after it, up to piece chunks and the end of p, as a new run of p.
// s.mu is held.
func (s *scheduler) claimRunLocked(c *claims, p *plan, first, piece int64) *run {
	r := c.newRun(first, p)
	c.claim(first, r)
	for end := first + 1; end < p.hi && end-first < piece && c.free(end); end++ {
		c.claim(end, r)
	}
	return r
}

// splitLocked is the end game of a worker whose plan has nothing left to
// claim while other runs still have chunks their writers have not reached
// (typically the last long pieces of a Fill or prefetch, each on one
// connection, while the other connections have gone idle). It takes the
// back part of the run with the most such chunks, about half of them so
// both finish at about the same time, the way aria2c splits its largest
// segment. Only runs of the worker's priority or lower are split: a more
// urgent run is not slowed down by a cut. s.mu is held.
func (s *scheduler) splitLocked(c *claims, p *plan) (r *run, first int64, ok bool) {
	var victim *run
	best := int64(0)
	for _, fl := range s.tab.flights {
		v := fl.run
		if v == nil || v.prio < c.prio {
			continue
		}
		if k := s.splitSize(v); k > best {
			victim, best = v, k
		}
	}
	if victim == nil {
		return nil, 0, false
	}
	end := victim.end
	first = end - min(best, p.piece)
	for i := first; i < end; i++ {
		// Only chunks the victim still holds can change hands; anything
		// else means the run is not what its fields say (a defence: a
		// failed run is shortened when it fails, see endRunLocked).
		if fl := s.tab.flight(i); fl == nil || fl.run != victim {
			return nil, 0, false
		}
	}
	c.cut(victim, first)
	r = c.newRun(first, p)
	for i := first; i < end; i++ {
		c.claim(i, r)
	}
	return r, first, true
}

// splitSize is how many chunks a split would take from the end of run v:
// half of those after the chunk its writer is in (rounded up, as the writer
// is part-way through its chunk), but never the near ones (see nearChunks).
// s.mu is held.
func (s *scheduler) splitSize(v *run) int64 {
	rest := v.end - v.writing - 1
	if v.streaming(s.stalledAfter) {
		rest -= nearChunks
	}
	return max(0, min((v.end-v.writing)/2, rest))
}

// work is the loop of one background worker: take a Pool slot at prio, then
// claim a piece of p (taking the slot first means no chunk sits claimed in a
// queue while a demand read could fetch it), fetch it, repeat until p has
// nothing left. Fetches run on ctx. The caller counted the worker in
// p.workers; work uncounts it under s.mu at the moment it decides to stop,
// so whoever extends the plan under s.mu either sees the worker still
// counted (and it will claim the new chunks) or gone (and starts another).
func (s *scheduler) work(ctx context.Context, prio priority, p *plan) error {
	for {
		slotCtx, release, err := s.pool.admit(ctx, prio)
		if err != nil {
			s.mu.Lock()
			p.workers--
			s.mu.Unlock()
			return s.classify(ctx, err)
		}
		s.mu.Lock()
		if s.closed.Load() {
			p.workers--
			s.mu.Unlock()
			release()
			return ErrClosed
		}
		r, first, ok := s.claimNextLocked(p, prio)
		if !ok {
			p.workers--
		} else {
			p.busy++
		}
		s.mu.Unlock()
		if !ok {
			release()
			return nil
		}
		err = s.fetchRun(slotCtx, r, first, release)
		s.mu.Lock()
		p.busy--
		if err != nil {
			p.workers--
		}
		s.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// startPrefetch is File.StartPrefetch.
func (s *scheduler) startPrefetch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prefetching {
		return
	}
	if s.goJobLocked(s.prefetch) {
		s.prefetching = true
	}
}

func (s *scheduler) prefetch() {
	conns := max(1, s.pool.capacity-reserveFor(s.pool.capacity))
	backoff := time.Second
	for {
		err := s.fill(s.ctx, prioPrefetch, conns)
		if err == nil {
			// Complete: check what earlier sessions left, so every chunk
			// is verified and the file can be handed to the kernel
			// (FUSE passthrough). A corrupt chunk is dropped by Verify
			// and fetched again by the next round.
			err = s.verify(s.ctx)
			if err == nil {
				s.log.Debug("prefetch complete and verified", "dir", s.st.dir)
				return
			}
			if errors.Is(err, ErrCorrupt) {
				s.log.Warn("cached chunks failed their checksum; fetching them again", "dir", s.st.dir, "err", err)
				continue
			}
		}
		switch {
		case s.ctx.Err() != nil, errors.Is(err, ErrClosed), errors.Is(err, ErrStale), isDiskError(err):
			return
		}
		s.log.Warn("prefetch failed; will retry", "dir", s.st.dir, "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// fill is Fill and prefetch: rounds of conns workers over the whole file,
// then a wait for chunks others were fetching, until nothing is missing.
// The calling goroutine must be counted in s.wg.
func (s *scheduler) fill(ctx context.Context, prio priority, conns int) error {
	for {
		if err := s.usable(); err != nil {
			return err
		}
		if s.st.degraded() {
			return fmt.Errorf("cache: cannot fill %s: %w", s.st.dir, s.st.uncached())
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		s.mu.Lock()
		missing := s.lay.chunks - s.tab.nPresent
		s.mu.Unlock()
		if missing == 0 {
			return nil
		}
		if err := s.fillRound(ctx, prio, conns, missing); err != nil {
			return err
		}
		if err := s.awaitInflight(ctx); err != nil {
			return err
		}
	}
}

// fillRound runs conns workers over every missing chunk once. Fetches run
// on a child of the File's ctx that ends early when ctx ends or a worker
// fails.
func (s *scheduler) fillRound(ctx context.Context, prio priority, conns int, missing int64) error {
	// piece = min(MaxRequest, max(chunk, remaining/connections)), in whole
	// chunks (rounded up, so conns pieces cover everything).
	piece := min(s.maxReq, max(1, (missing+int64(conns)-1)/int64(conns)))
	p := &plan{hi: s.lay.chunks, piece: piece, follow: prio == prioPrefetch, endGame: true}

	runCtx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()

	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	s.mu.Lock()
	for range conns {
		wg.Add(1)
		p.workers++
		started := s.goJobLocked(func() {
			defer wg.Done()
			if err := s.work(runCtx, prio, p); err != nil && !errors.Is(err, errAbandoned) {
				errOnce.Do(func() { firstErr = err; cancel() })
			}
		})
		if !started {
			p.workers--
			wg.Done()
			s.mu.Unlock()
			wg.Wait()
			return ErrClosed
		}
	}
	s.mu.Unlock()
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// awaitInflight waits for every chunk currently in flight (fetched by
// demand reads or read-ahead while the round ran). Their errors are not
// ours to report: a chunk that failed is still missing, and the next round
// claims it and meets the error itself.
func (s *scheduler) awaitInflight(ctx context.Context) error {
	s.mu.Lock()
	waits := make([]*flight, 0, len(s.tab.flights))
	for _, fl := range s.tab.flights {
		waits = append(waits, fl)
	}
	s.mu.Unlock()
	for _, fl := range waits {
		select {
		case <-fl.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
