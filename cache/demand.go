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
// With shape.blocks, a missing chunk is fetched in part, by a demand run of
// its own (see run.blocks); blocks fetched so earlier go into readable.
func (s *scheduler) claimForRead(off, end int64, readable *servable, prio priority, dl waitDeadline, shape readShape) (waits []chunkWait, verify []blockCheck, err error) {
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
		s.startRunLocked(cur, runStart)
		cur = nil
	}
	first, last := s.lay.span(off, end-off)
	for i := first; i < last; i++ {
		cs, ce := s.lay.bounds(i)
		start, need := max(cs, off), min(ce, end)
		if readable.has(i) {
			flush()
			continue
		}
		if b0, b1 := s.lay.blockSpan(i, off, end); !s.tab.present.get(i) && s.tab.blocksPresent(i, b0, b1) {
			// Fetched in part earlier: the read's blocks are there.
			flush()
			readable.mark(i)
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
		if b0, b1 := s.partOf(i, off, end, shape); prio == prioDemand && b1 > b0 {
			flush()
			r := c.newRun(i, nil)
			r.deadline = dl
			r.blocks = [2]int64{b0, b1}
			r.owner, r.need = shape.owner, end
			// The read's blocks before b0 and from b1 on are there
			// already (see partOf): it waits for the run's bytes only.
			start, need = max(start, cs+b0*blockSize), min(need, cs+b1*blockSize)
			waits = append(waits, chunkWait{fl: c.claim(i, r), run: r, chunk: i, start: start, need: need})
			cur, runStart = r, i
			flush()
			continue
		}
		if cur != nil && i-runStart == s.maxReq {
			flush()
		}
		if cur == nil {
			cur, runStart = c.newRun(i, nil), i
			if prio == prioDemand {
				cur.deadline = dl
				cur.owner, cur.need = shape.owner, end
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

// partOf returns the blocks [b0, b1) of chunk i that a read of [off, end)
// in shape fetches, when it fetches the chunk in part; b0 == b1 when it
// fetches it whole (the blocks would be all of them). Blocks fetched in part
// before are never asked for again at either end of the span: a read whose
// shape is whole chunks then fetches the chunk's missing blocks.
func (s *scheduler) partOf(i, off, end int64, shape readShape) (b0, b1 int64) {
	nb := s.lay.blocks(i)
	var bEnd, bMax int64 // the read's blocks end at bEnd, its extra ones at bMax
	switch {
	case shape.blocks:
		_, ce := s.lay.bounds(i)
		b0, bEnd = s.lay.blockSpan(i, off, end)
		_, bMax = s.lay.blockSpan(i, off, min(ce, end+shape.extra))
	case s.tab.anyBlocks(i):
		// A whole-chunk read of a chunk fetched in part before fetches
		// the blocks still missing, the chunk being recorded once they
		// are all there.
		bEnd, bMax = nb, nb
	default:
		return 0, 0
	}
	// Blocks an earlier part fetch brought are not fetched again: the
	// read's own blocks lose those at either end, and the extra ones stop
	// at the first that is there.
	has := func(b int64) bool { return s.tab.blocksPresent(i, b, b+1) }
	for b0 < bEnd && has(b0) {
		b0++
	}
	for bEnd > b0 && has(bEnd-1) {
		bEnd--
	}
	b1 = bEnd
	for b1 < bMax && !has(b1) {
		b1++
	}
	if shape.blocks && b0 == 0 && b1 == nb {
		return 0, 0
	}
	return b0, b1
}
