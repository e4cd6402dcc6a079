package cache

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// A run is a range of adjacent chunks claimed together and filled, in
// order, by one Source.Fetch (a demand run of one chunk may take two, tail
// first, see fetchRun). Background runs (read-ahead, Fill, prefetch)
// may be long, up to MaxRequest, so a read that needs a chunk near the end
// of one would wait for the whole stream to reach it. Instead a read of
// better priority steals the chunks the run's writer has not reached: the
// run is cut short before them (its writer stops at the new end, the chunks
// it finished are committed as usual) and the read fetches them itself.
//
// A thief leaves a streaming run the chunk right after the one being
// written when waiting is as fast (see nearChunks and keepsNear). A
// background worker that has run out of work splits the longest run the
// same way, taking its back half (the end game, see splitLocked).
//
// The writer and the thieves agree through s.mu: the writer moves on to the
// next chunk only under s.mu and only while that chunk is still before end;
// a thief takes only chunks after the one being written. So no chunk is ever
// written by two fetches, and a cut never leaves a run empty.
type run struct {
	prio priority
	// plan is the background plan that claimed the run, nil for a demand
	// read. Stolen chunks the thief does not need go back to it.
	plan *plan
	// end is one past the last chunk of the run. It only shrinks.
	// Guarded by s.mu.
	end int64
	// writing is the chunk the writer is in, or will start with. Chunks
	// after it and before end may be stolen. Guarded by s.mu.
	writing int64
	// moved is when the run's fetch last delivered bytes (or started),
	// in Unix nanoseconds; 0 before it started. See streaming.
	moved atomic.Int64

	// deadline is the latest deadline of the demand reads waiting on the
	// run (unbounded for background runs), and ctx, once the fetch began,
	// the ctx that ends there (see deadline.go). Guarded by s.mu.
	deadline waitDeadline
	ctx      *runContext

	// head, if above the run's first byte, is where a demand run of one
	// chunk starts its fetch: the block holding the byte its read wants
	// first (see fetchRun). Set when the run is claimed, then read-only.
	head int64
	// blocks, if not empty, are the blocks [blocks[0], blocks[1]) of the
	// run's one chunk that a demand run fetching it in part asks for (see
	// readShape): they become present block by block and the chunk
	// missing again at the end, with no record. Set when the run is
	// claimed, then read-only.
	blocks [2]int64

	// owner is the Reader whose read claimed a demand run, nil otherwise;
	// need is where the bytes that read asked for end. Set when the run is
	// claimed, then read-only.
	owner *Reader
	need  int64
	// stopAt, once above 0, stops the writer at the first block boundary
	// at or past it, whatever chunk it is in: the reader it fetches for is
	// gone (see Reader.Close). The blocks written by then stay, as blocks
	// fetched in part (see chunkTable.wroteBlocks).
	stopAt atomic.Int64

	// pmu guards from, written and advanced: the progress a reader may
	// serve from before the run's chunks are committed (see wrote and
	// reached).
	pmu sync.Mutex
	// [from, written) is the file range the writer has successfully
	// written into the data file in its current pass (empty before the
	// first write). written only grows within a pass. [prevFrom, prevTo)
	// is what the previous pass wrote, if any.
	from, written    int64
	prevFrom, prevTo int64
	// advanced, if not nil, is closed (and cleared) the next time written
	// grows. Waiters create it, so a run nobody waits on allocates nothing.
	advanced chan struct{}
}

// startPass records that the writer starts writing at file offset off, in
// order from there (a rotated fetch writes a chunk's tail first, then its
// head). What the previous pass wrote stays readable.
func (r *run) startPass(off int64) {
	r.pmu.Lock()
	r.prevFrom, r.prevTo = r.from, r.written
	r.from, r.written = off, off
	r.pmu.Unlock()
}

// wrote records that the writer has successfully written the run's bytes
// up to file offset off in its current pass, and wakes the readers waiting
// for progress.
func (r *run) wrote(off int64) {
	r.pmu.Lock()
	r.written = off
	ch := r.advanced
	r.advanced = nil
	r.pmu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// reached reports whether the bytes [start, need) are written (within what
// the current or the previous pass wrote); if not, it returns a channel that
// is closed at the next progress.
func (r *run) reached(start, need int64) (bool, <-chan struct{}) {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	if (r.from <= start && r.written >= need) || (r.prevFrom <= start && r.prevTo >= need) {
		return true, nil
	}
	if r.advanced == nil {
		r.advanced = make(chan struct{})
	}
	return false, r.advanced
}

// defaultStalledAfter is how long a run may go without receiving a byte
// and still count as streaming. A healthy fetch writes every few
// milliseconds; one that has been silent this long is stalled or retrying,
// and its near chunks are no longer worth waiting for.
const defaultStalledAfter = time.Second

// streaming reports whether r's fetch has started and delivered bytes
// within the last stalledAfter.
func (r *run) streaming(stalledAfter time.Duration) bool {
	t := r.moved.Load()
	return t != 0 && time.Since(time.Unix(0, t)) < stalledAfter
}

// near reports whether chunk i of r is one its writer will reach within
// about a chunk's time (see nearChunks). s.mu is held.
func (s *scheduler) near(r *run, i int64) bool {
	return i <= r.writing+nearChunks && r.streaming(s.stalledAfter)
}

// nearChunks is how many chunks after the one a streaming run's writer is
// in stay with the run when a thief comes (for the thieves keepsNear names):
// its writer reaches them within about a chunk's time, and taking them
// would cost the run its connection (the Source drops it at the cut) and
// the thief a request that brings them little or no sooner. A sequential
// reader's kernel reads land right behind its read-ahead runs all the
// time; without this rule many of them cut one and fetched a single chunk
// on a fresh connection, for nothing.
const nearChunks = 1

// errCut is what a runWriter returns once its run was cut short: the Source
// stops there (dropping its connection), and fetchRun treats the fetch as a
// success because every chunk still in the run was written.
var errCut = errors.New("cache: run cut short for a more urgent read")

// errStopped is what a runWriter returns when its run is stopped inside a
// chunk (see run.stopAt): the Source stops there, and the chunks from the
// one being written on are abandoned, so a reader still waiting on them
// looks again, finds the blocks written and fetches what is missing.
var errStopped = errors.New("cache: run stopped: its reader is gone")

// mayStealFrom reports whether a request at prio may take chunks from r.
// Demand steals from every background run, read-ahead from Fill and
// prefetch; Fill and prefetch take nothing (they would only shuffle work
// between themselves).
func mayStealFrom(prio priority, r *run) bool {
	return r != nil && prio <= prioReadAhead && r.prio > prio
}

// claims is one pass of claiming chunks under s.mu, by a request at prio.
// Chunks stolen from other runs are held in taken until the pass either
// gives them to one of its own runs (keeping their flights, so whoever waits
// on them simply goes on waiting) or, in done, hands them back as missing.
// A claims value lives only while s.mu is held; done must run before s.mu is
// released.
type claims struct {
	s     *scheduler
	prio  priority
	taken map[int64]takenChunk
}

// takenChunk is a chunk cut out of a run and not yet given to a new one.
type takenChunk struct {
	fl   *flight
	from *plan // the victim's plan, or nil
}

func (s *scheduler) newClaims(prio priority) *claims { return &claims{s: s, prio: prio} }

// free reports whether the pass may claim chunk i: it is missing and not in
// flight, or in flight in a run this pass may steal from whose writer has not
// reached it. In the latter case the run is cut before i at once, and i and
// the rest of that run's chunks wait in c.taken.
func (c *claims) free(i int64) bool {
	s := c.s
	if !s.claimableLocked(c.prio, i) {
		return false
	}
	if fl := s.tab.flight(i); fl != nil {
		c.cut(fl.run, i)
	}
	return true
}

// claimableLocked reports whether a request at prio may claim chunk i now:
// it is missing and not in flight, or in flight in a run prio may steal
// from whose writer has not reached it and is not near it. s.mu is held.
func (s *scheduler) claimableLocked(prio priority, i int64) bool {
	fl := s.tab.flight(i)
	if fl == nil {
		return !s.tab.present.get(i)
	}
	r := fl.run
	return mayStealFrom(prio, r) && i > r.writing && !(s.near(r, i) && keepsNear(prio, r))
}

// keepsNear reports whether a request at prio leaves the near chunks of r
// (see nearChunks) to r. Read-ahead does: nobody waits for its chunks yet,
// so a cut would buy nothing. So does a read from a read-ahead run: the
// reader whose kernel asks for the chunk after the one being written is
// waiting for that one too, in order, so taking the next gains it nothing.
// A demand read from a Fill or prefetch run does not: it may be a random
// read, and a request of its own, on a connection prefetch leaves free,
// brings the chunk about half a chunk's time sooner on average.
func keepsNear(prio priority, r *run) bool {
	return prio == prioReadAhead || r.prio == prioReadAhead
}

// cut ends r before chunk i (r.writing < i <= r.end) and moves the flights
// of the chunks after the cut to c.taken.
func (c *claims) cut(r *run, i int64) {
	if i < r.end && c.taken == nil {
		c.taken = make(map[int64]takenChunk, r.end-i)
	}
	for k := i; k < r.end; k++ {
		c.taken[k] = takenChunk{fl: c.s.tab.detach(k), from: r.plan}
	}
	r.end = i
}

// claim adds chunk i, which free just approved, to r and returns its flight.
// A stolen chunk keeps its flight; any other gets a new one.
func (c *claims) claim(i int64, r *run) *flight {
	var stolen *flight
	if t, found := c.taken[i]; found {
		delete(c.taken, i)
		stolen = t.fl
	}
	fl := c.s.tab.claimBy(i, r, stolen)
	r.end = max(r.end, i+1)
	return fl
}

// done gives every stolen chunk the pass did not claim back: it is missing
// again, its waiters wake with errAbandoned (they look again and find the
// chunk missing or in a new flight), and the victim's plan is rewound so a
// background worker claims it again later.
func (c *claims) done() {
	for k, t := range c.taken {
		abandon(t.fl)
		if t.from != nil {
			t.from.cursor = min(t.from.cursor, k)
		}
	}
	c.taken = nil
}

// newRun starts a run at chunk first for a pass of c.
func (c *claims) newRun(first int64, p *plan) *run {
	return &run{prio: c.prio, plan: p, end: first, writing: first}
}

// cutSelfLocked ends r before chunk i (r.writing < i <= r.end) because its
// writer gives up its connection to a more urgent request. The chunks after
// the cut become missing again, as in claims.done. s.mu is held.
func (s *scheduler) cutSelfLocked(r *run, i int64) {
	c := s.newClaims(r.prio)
	c.cut(r, i)
	c.done()
}
