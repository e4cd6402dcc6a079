package cache

import (
	"errors"
	"sync/atomic"
)

// stopReadAhead cancels a stream's read-ahead plan ra at a seek away from
// it: it claims nothing more (see endPlanLocked), and its runs end after
// the chunk their writers are in (the chunks they had not reached are
// missing again): read-ahead claimed but never consumed is not fetched.
func (s *scheduler) stopReadAhead(ra *plan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[*run]bool{}
	for _, fl := range s.tab.flights {
		v := fl.run
		if v == nil || v.plan != ra || seen[v] {
			continue
		}
		seen[v] = true
		if v.writing+1 < v.end {
			s.cutSelfLocked(v, v.writing+1)
		}
	}
	s.endPlanLocked(ra)
}

// endPlanLocked makes read-ahead plan ra claim nothing more, and prefetch
// stop following it. s.mu is held.
func (s *scheduler) endPlanLocked(ra *plan) {
	ra.hi = ra.cursor
	if s.followBy == ra {
		s.followAt, s.followBy = 0, nil
	}
}

// stopRuns stops what Reader r, which is closing, had set going: the
// read-ahead plans of its streams claim nothing more (endPlanLocked), the
// runs reading ahead for them stop at the next block boundary, and its
// demand runs at the first one past the bytes their read asked for (see
// run.stopAt). What was written stays; what the reader will never ask for
// is not fetched. Another reader waiting on those chunks looks again.
func (s *scheduler) stopRuns(r *Reader, plans []*plan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ours := map[*plan]bool{}
	for _, p := range plans {
		s.endPlanLocked(p)
		ours[p] = true
	}
	stopped := map[*run]bool{}
	for _, fl := range s.tab.flights {
		v := fl.run
		switch {
		case v == nil:
		case v.plan != nil && ours[v.plan]:
			v.stopAt.CompareAndSwap(0, 1)
			stopped[v] = true
		case v.owner == r:
			v.stopAt.CompareAndSwap(0, max(1, v.need))
			stopped[v] = true
		}
	}
	if len(stopped) > 0 {
		s.log.Debug("reader closed: stopping its fetches", "dir", s.st.dir, "runs", len(stopped))
	}
}

// readAhead asks for the win (> 0) chunks after byte from in a stream's
// read-ahead plan r; closed is its Reader's (see Reader.Close). Workers
// already running pick up the new target.
func (s *scheduler) readAhead(r *plan, closed *atomic.Bool, from, win int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if closed.Load() || s.closed.Load() || s.st.degraded() || s.stale.Load() != nil || from >= s.lay.size {
		return
	}
	// The window starts at the first chunk after the one holding the last
	// byte read (that one is already present or in flight) and takes the
	// chunks that end within win chunks of from: a chunk mostly past
	// that waits for the next read, so what is fetched ahead of the
	// reader never exceeds what it earned.
	first := (from + s.lay.chunk - 1) / s.lay.chunk
	reach := from + win*s.lay.chunk
	hi := reach / s.lay.chunk
	if reach >= s.lay.size {
		hi = s.lay.chunks
	}
	if first >= hi {
		return
	}
	// Prefetch works just past the window (see plan.follow).
	s.followAt, s.followBy = hi, r
	if r.cursor >= r.hi {
		r.cursor = first
		r.hi = hi
	} else {
		r.hi = max(r.hi, hi)
	}
	r.piece = s.raPiece(win)
	if hi == s.lay.chunks {
		// At the end of the file pieces are single chunks, so the last
		// ones end about together instead of one piece apart while the
		// other connections sit idle.
		r.piece = 1
	}
	// One worker per piece there is to claim, besides those already
	// fetching (they claim again only when their run is done), up to one
	// per Pool connection; several sequential readers share the Pool, as
	// it grants requests of one priority in arrival order. Counting only
	// what can be claimed matters: a worker with nothing to do still
	// queues for a Pool slot, and a queued read-ahead request makes a
	// background fetch yield its connection.
	r.cursor = s.tab.present.nextClear(r.cursor, r.hi)
	todo := int64(0)
	for i := r.cursor; i < r.hi; i++ {
		if s.claimableLocked(prioReadAhead, i) {
			todo++
		}
	}
	pieces := (todo + r.piece - 1) / r.piece
	for r.workers < s.pool.capacity && int64(r.workers-r.busy) < pieces {
		if !s.goJobLocked(func() { s.readAheadWorker(r) }) {
			return
		}
		r.workers++
	}
}

// raPiece is the size in chunks of the pieces a read-ahead window of win
// chunks is fetched in: the window spread over every connection of the
// Pool, so one sequential reader keeps them all streaming (a Pool
// connection is the unit of bandwidth when the server caps each one).
func (s *scheduler) raPiece(win int64) int64 {
	return min(s.maxReq, max(1, (win+int64(s.pool.capacity)-1)/int64(s.pool.capacity)))
}

func (s *scheduler) readAheadWorker(p *plan) {
	err := s.work(s.ctx, prioReadAhead, p)
	if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrStale) {
		// The demand read that wants these bytes will meet (and report)
		// the error itself.
		s.log.Debug("read-ahead failed", "dir", s.st.dir, "err", err)
	}
}

// aheadBlocks fetches, at read-ahead priority, the missing 64 KiB blocks of
// [from, end) that no run is fetching yet, for a stream of Reader owner
// whose read-ahead is still a lead of a few blocks (see Reader): one run
// per chunk, a part run (see run.blocks) but where the span covers the
// whole chunk. Nobody waits for them; the reader's next reads find them
// written or in flight. They stop at their next block boundary when owner
// closes (see stopRuns: their need is from).
func (s *scheduler) aheadBlocks(owner *Reader, from, end int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	end = min(end, s.lay.size)
	if owner.closed.Load() || s.closed.Load() || s.st.degraded() || s.stale.Load() != nil || from >= end {
		return
	}
	c := s.newClaims(prioReadAhead)
	defer c.done()
	first, last := s.lay.span(from, end-from)
	for i := first; i < last; i++ {
		if s.tab.present.get(i) || s.tab.flight(i) != nil {
			continue
		}
		b0, b1 := s.partOf(i, from, end, readShape{blocks: true})
		if b0 == b1 && b0 > 0 {
			continue // every block of the span is there
		}
		r := c.newRun(i, nil)
		r.owner, r.need = owner, from
		if b1 > b0 {
			r.blocks = [2]int64{b0, b1}
		}
		c.claim(i, r)
		if !s.startRunLocked(r, i) {
			return
		}
	}
}
