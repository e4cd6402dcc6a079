package cache

import "errors"

// readAhead asks for the win chunks after byte from (win 0 stops read-ahead
// claims after a seek). Workers already running pick up the new target.
func (s *scheduler) readAhead(r *Reader, from, win int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if win == 0 {
		r.ra.hi = r.ra.cursor
		if s.followBy == r {
			s.followAt, s.followBy = 0, nil
		}
		return
	}
	if r.closed.Load() || s.closed.Load() || s.st.degraded.Load() || s.stale.Load() != nil || from >= s.lay.size {
		return
	}
	// The window starts at the first chunk after the one holding the last
	// byte read (that one is already present or in flight).
	first := (from + s.lay.chunk - 1) / s.lay.chunk
	hi := min(first+win, s.lay.chunks)
	if first >= hi {
		return
	}
	// Prefetch works just past the window (see plan.follow).
	s.followAt, s.followBy = hi, r
	if r.ra.cursor >= r.ra.hi {
		r.ra.cursor = first
		r.ra.hi = hi
	} else {
		r.ra.hi = max(r.ra.hi, hi)
	}
	r.ra.piece = s.raPiece(win)
	if hi == s.lay.chunks {
		// At the end of the file pieces are single chunks, so the last
		// ones end about together instead of one piece apart while the
		// other connections sit idle.
		r.ra.piece = 1
	}
	// One worker per piece there is to claim, besides those already
	// fetching (they claim again only when their run is done), up to one
	// per Pool connection; several sequential readers share the Pool, as
	// it grants requests of one priority in arrival order. Counting only
	// what can be claimed matters: a worker with nothing to do still
	// queues for a Pool slot, and a queued read-ahead request makes a
	// background fetch yield its connection.
	r.ra.cursor = s.tab.present.nextClear(r.ra.cursor, r.ra.hi)
	todo := int64(0)
	for i := r.ra.cursor; i < r.ra.hi; i++ {
		if s.claimableLocked(prioReadAhead, i) {
			todo++
		}
	}
	pieces := (todo + r.ra.piece - 1) / r.ra.piece
	for r.ra.workers < s.pool.capacity && int64(r.ra.workers-r.ra.busy) < pieces {
		if !s.goJobLocked(func() { s.readAheadWorker(r) }) {
			return
		}
		r.ra.workers++
	}
}

// raPiece is the size in chunks of the pieces a read-ahead window of win
// chunks is fetched in: the window spread over every connection of the
// Pool, so one sequential reader keeps them all streaming (a Pool
// connection is the unit of bandwidth when the server caps each one).
func (s *scheduler) raPiece(win int64) int64 {
	return min(s.maxReq, max(1, (win+int64(s.pool.capacity)-1)/int64(s.pool.capacity)))
}

func (s *scheduler) readAheadWorker(r *Reader) {
	err := s.work(s.ctx, prioReadAhead, &r.ra)
	if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrStale) {
		// The demand read that wants these bytes will meet (and report)
		// the error itself.
		s.log.Debug("read-ahead failed", "dir", s.st.dir, "err", err)
	}
}
