package cache

// Claiming for demand reads: what one read waits for, steals, fetches and
// checks (see File.ensure).

// claimForRead looks once, under s.mu, at the chunks holding the bytes
// [off, end), except those already in readable: in-flight chunks are to be waited
// for, unless they sit in a run of lower priority whose writer has not
// reached them (then they are stolen, see run); present chunks not verified
// whole go into readable if the blocks the read touches were checked, else they
// are claimed for the caller to verify those blocks; missing and stolen
// ones are claimed and fetched in runs of adjacent chunks (at most maxReq
// each) by new jobs at prio. dl is the read's deadline: a demand run lasts
// until the latest deadline of the reads waiting on it (see deadline.go).
func (s *scheduler) claimForRead(off, end int64, readable *servable, prio priority, dl waitDeadline) (waits []chunkWait, verify []blockCheck, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, nil, ErrClosed
	}
	c := s.newClaims(prio)
	defer c.done()
	var (
		cur      *run
		runStart int64
	)
	flush := func() {
		if cur == nil {
			return
		}
		r, a := cur, runStart
		cur = nil
		if !s.goJobLocked(func() { _ = s.fetchRun(s.ctx, r, a, nil) }) {
			s.failRunLocked(a, r.end, ErrClosed)
		}
	}
	first, last := s.lay.span(off, end-off)
	for i := first; i < last; i++ {
		cs, ce := s.lay.bounds(i)
		start, need := max(cs, off), min(ce, end)
		if readable.has(i) {
			flush()
			continue
		}
		if fl := s.tab.flight(i); fl != nil && !c.free(i) {
			flush()
			if fl.run != nil && fl.run.prio == prioDemand {
				fl.run.extendDeadline(dl)
			}
			waits = append(waits, chunkWait{fl: fl, run: fl.run, chunk: i, start: start, need: need})
			continue
		}
		if s.tab.present.get(i) {
			flush()
			if !s.tab.verified.get(i) {
				// Only the blocks the read touches are checked.
				b0, b1 := s.lay.blockSpan(i, off, end)
				if s.tab.blocksVerified(i, b0, b1) {
					readable.mark(i)
				} else if s.tab.claimCheck(i) {
					verify = append(verify, blockCheck{i, b0, b1})
				}
			}
			continue
		}
		if cur != nil && i-runStart == s.maxReq {
			flush()
		}
		if cur == nil {
			cur, runStart = c.newRun(i, nil), i
			if prio == prioDemand {
				cur.deadline = dl
				// Should the run stay this one chunk, its fetch starts
				// at the block holding the read's first byte here.
				b0, _ := s.lay.blockSpan(i, off, end)
				cur.head = cs + b0*blockSize
			}
		}
		waits = append(waits, chunkWait{fl: c.claim(i, cur), run: cur, chunk: i, start: start, need: need})
	}
	flush()
	return waits, verify, nil
}
