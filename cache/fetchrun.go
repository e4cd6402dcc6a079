package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// fetchRun fetches the chunks of r, which the caller claimed from first on,
// with one Source.Fetch on ctx. If release is nil it first waits for a Pool
// slot at r.prio; either way it gives the slot back when done. Every chunk
// of the run is resolved: the complete ones by the committer, the rest here
// with the error. A run cut short (see run) ends without error once its
// writer reaches the cut.
func (s *scheduler) fetchRun(ctx context.Context, r *run, first int64, release func()) error {
	if rc := s.demandContext(ctx, r); rc != nil {
		ctx = rc
	}
	if release == nil {
		slotCtx, rel, err := s.pool.admit(ctx, r.prio)
		if err != nil {
			err = s.classify(ctx, err)
			s.mu.Lock()
			s.endRunLocked(r, first, err)
			s.mu.Unlock()
			return err
		}
		ctx, release = slotCtx, rel
	}
	defer release()

	// Ask only for what is still ours: the run may have been cut while it
	// waited for its slot.
	s.mu.Lock()
	end := r.end
	s.mu.Unlock()
	off, n := s.lay.runBytes(first, end)
	_, chunkEnd := s.lay.bounds(first)
	// started is the deadline the latest Source.Fetch began with.
	var started waitDeadline
	fetch := func(w *runWriter) error {
		if s.st.degraded() {
			return s.st.uncached()
		}
		started = deadlineOf(ctx)
		s.requests.Add(1)
		s.active.Add(1)
		defer s.active.Add(-1)
		// A run counts as streaming from its request on, so the first
		// bytes of a healthy one are waited for (see run.near).
		r.moved.Store(time.Now().UnixNano())
		r.startPass(w.off)
		s.log.Debug("fetch", "dir", s.st.dir, "off", w.off, "len", w.end-w.off, "why", r.prio)
		from := w.off
		err := s.src.Fetch(ctx, w.off, w.end-w.off, w)
		s.log.Debug("fetched", "dir", s.st.dir, "off", from, "len", w.off-from, "err", err)
		return err
	}
	var (
		w   *runWriter
		err error
	)
	if r.blocks[1] > r.blocks[0] {
		// A demand run fetching part of its one chunk (see run.blocks).
		ps, _ := s.lay.blockBounds(first, r.blocks[0])
		_, pe := s.lay.blockBounds(first, r.blocks[1]-1)
		w = s.newRunWriter(r, first, ps, pe, pe)
		w.part = true
		if err = fetch(w); err == nil {
			if w.off == w.end {
				// Once block fetches have brought every block of the
				// chunk, it is recorded like a chunk fetched whole: a file
				// read to its end by small reads is cached, not fetched
				// again. The record's checksums are taken from the data
				// file, which the committer syncs before it commits.
				s.mu.Lock()
				whole := s.tab.blocksPresent(first, 0, s.lay.blocks(first))
				s.mu.Unlock()
				if whole {
					if rec, rerr := s.recordFromData(first); rerr == nil {
						s.mu.Lock()
						wrote := s.tab.wrote(first)
						s.mu.Unlock()
						if wrote {
							s.st.com.add(first, rec)
							return nil
						}
					}
				}
				s.mu.Lock()
				s.tab.endPart(first)
				s.mu.Unlock()
				return nil
			}
			err = fmt.Errorf("cache: source wrote %d of %d bytes at offset %d", w.off-w.start, w.end-w.start, w.start)
		} else if errors.Is(err, errStopped) {
			// Its reader is gone: the blocks written stay, the rest is
			// not fetched.
			s.mu.Lock()
			s.tab.endPart(first)
			s.mu.Unlock()
			return nil
		}
	} else if r.prio == prioDemand && end-first == 1 && r.head > off && r.head < off+n {
		// A demand read of one missing chunk, starting past the chunk's
		// first block: fetch from the read's block to the chunk's end,
		// then the head of the chunk, so the read waits for its own
		// bytes only, not for the ones before them. Demand runs are
		// never cut or split, so the two passes have the chunk to
		// themselves.
		tail := s.newRunWriter(r, first, r.head, off+n, off+n)
		tail.hold = true
		w = tail
		if err = fetch(tail); err == nil && tail.next == first+1 {
			w = s.newRunWriter(r, first, off, r.head, r.head)
			w.tail = tail.held
			err = fetch(w)
		}
	} else {
		w = s.newRunWriter(r, first, off, off+n, chunkEnd)
		err = fetch(w)
	}
	if errors.Is(err, errStopped) {
		// Its reader is gone (see run.stopAt): the chunks from w.next on
		// are missing again, the blocks written of w.next kept, and a
		// reader still waiting on them looks again.
		err = errAbandoned
	}
	// Once the writer stopped, only chunks after w.next can still be
	// stolen, so r.end is read again when failing the rest.
	s.mu.Lock()
	runEnd := r.end
	s.mu.Unlock()
	if w.cut && w.next == runEnd {
		// Every chunk left in the run was written; whatever the Source
		// made of errCut is no failure.
		err = nil
	}
	if err == nil && w.next < runEnd {
		err = fmt.Errorf("cache: source wrote %d of %d bytes at offset %d", w.off-w.start, w.end-w.start, w.start)
	}
	if err != nil {
		err = s.classify(ctx, err)
		if s.outlived(r, started, err) {
			// The fetch gave up at a deadline some reader waiting on
			// the run is past: that reader claims the chunks again.
			err = errAbandoned
		}
		from := w.next
		if w.hold {
			// The tail pass of a rotated fetch keeps its chunk's record
			// until the head is written: nothing of that chunk reached
			// the committer, whatever w.next says.
			from = first
		}
		s.mu.Lock()
		s.endRunLocked(r, from, err)
		s.mu.Unlock()
	}
	return err
}

// demandContext gives demand run r, if it has a deadline, the ctx that ends
// there (see deadline.go), a child of ctx; nil for any other run.
func (s *scheduler) demandContext(ctx context.Context, r *run) *runContext {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.prio != prioDemand || !r.deadline.bounded {
		return nil
	}
	r.ctx = newRunContext(ctx, r.deadline)
	return r.ctx
}

// outlived reports whether err, which ended demand run r's fetch that began
// with deadline started, should abandon the run rather than fail it: a
// reader with a later deadline waits on it.
func (s *scheduler) outlived(r *run, started waitDeadline, err error) bool {
	if r.prio != prioDemand || errors.Is(err, errAbandoned) || errors.Is(err, ErrStale) || errors.Is(err, ErrClosed) || isDiskError(err) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return r.outlived(started)
}

// endRunLocked fails the chunks of r from chunk from on and shortens r to
// end there, so a failed run is never split or stolen from later (its
// finished chunks stay in flight until the committer resolves them, and an
// end-game split that found the run through them would take chunks that are
// no longer its). s.mu is held.
func (s *scheduler) endRunLocked(r *run, from int64, err error) {
	s.failRunLocked(from, r.end, err)
	r.end = min(r.end, from)
}

// newRunWriter returns a writer for run r that starts at byte off of chunk
// first (a block boundary), may write up to end, and treats chunkEnd as the
// end of its first chunk.
func (s *scheduler) newRunWriter(r *run, first, off, end, chunkEnd int64) *runWriter {
	return &runWriter{s: s, r: r, start: off, off: off, end: end, next: first, chunkEnd: chunkEnd,
		blockEnd: min(off+blockSize, chunkEnd), rec: make([]byte, 0, 4*s.lay.blocks(first))}
}

// runWriter is the io.Writer a Source streams one run of chunks into. Each
// Write goes straight to the sparse file at the right offset through the
// Source's own buffer (no copy, nothing that grows with the run), updates
// the checksum of the current block, and hands every completed chunk to the
// committer at once, so waiters on the first chunk of a 16 MiB run wake long
// before the run ends. Between chunks it checks whether the run was cut
// short or should yield its connection (see advance). It is used by one
// goroutine at a time.
type runWriter struct {
	s        *scheduler
	r        *run
	start    int64  // file offset of the first byte
	off      int64  // file offset of the next byte
	end      int64  // end of the bytes this writer may still write
	next     int64  // chunk being written; chunks before it are with the committer
	chunkEnd int64  // end offset of chunk next
	blockEnd int64  // end offset of the checksum block being written
	crc      uint32 // CRC-32C of that block so far
	rec      []byte // chunk next's record so far: the CRCs of its finished blocks
	cut      bool   // the run ended early at end
	part     bool   // the run fetches blocks of its chunk (run.blocks): no record, no commit
	charged  int64  // 1 + the chunk last charged to the budget; 0: none

	// A rotated fetch (see fetchRun) writes a chunk in two passes: the
	// first (hold) keeps the record of the chunk's tail in held instead
	// of committing it; the second writes the head and commits its
	// record followed by tail.
	hold       bool
	held, tail []byte
}

var errOverrun = errors.New("cache: source wrote more bytes than requested")

func (w *runWriter) Write(p []byte) (int, error) {
	s := w.s
	if s.st.degraded() {
		// Another write failed: stop feeding a failing disk.
		return 0, s.st.uncached()
	}
	w.r.moved.Store(time.Now().UnixNano())
	written := 0
	for len(p) > 0 {
		if w.off >= w.end {
			s.bytesFetched.Add(int64(written))
			if w.cut {
				return written, errCut
			}
			return written, errOverrun
		}
		if s.charge != nil && w.charged != w.next+1 {
			if !s.charge(w.next) {
				s.bytesFetched.Add(int64(written))
				return written, errNoRoom
			}
			w.charged = w.next + 1
		}
		k := min(int64(len(p)), w.blockEnd-w.off)
		if err := s.st.writeAt(p[:k], w.off); err != nil {
			s.bytesFetched.Add(int64(written))
			return written, err
		}
		w.crc = crc32.Update(w.crc, castagnoli, p[:k])
		w.off += k
		// Only bytes the data file accepted become visible to waiting
		// readers (see File.ensure).
		w.r.wrote(w.off)
		written += int(k)
		p = p[k:]
		if w.off < w.blockEnd {
			continue
		}
		w.rec = binary.BigEndian.AppendUint32(w.rec, w.crc)
		w.crc = 0
		if w.stopped() {
			s.bytesFetched.Add(int64(written))
			return written, errStopped
		}
		if w.part {
			// The block is servable now; the chunk gets no record.
			cs, _ := s.lay.bounds(w.next)
			b := (w.off - 1 - cs) / blockSize
			s.mu.Lock()
			s.tab.wroteBlocks(w.next, b, b+1)
			s.mu.Unlock()
			w.blockEnd = min(w.off+blockSize, w.chunkEnd)
			continue
		}
		if w.off == w.chunkEnd {
			if w.hold {
				w.held = w.rec
			} else {
				// The chunk is servable now; the committer owns the
				// record from here on.
				s.mu.Lock()
				s.tab.wrote(w.next)
				s.mu.Unlock()
				s.st.com.add(w.next, append(w.rec, w.tail...))
			}
			w.rec = nil
			w.next++
			if w.off < w.end && !w.advance() {
				w.cut = true
				w.end = w.off
			}
			if w.off < w.end {
				w.rec = make([]byte, 0, 4*s.lay.blocks(w.next))
			}
			w.chunkEnd = min(w.chunkEnd+s.lay.chunk, w.end)
		}
		w.blockEnd = min(w.off+blockSize, w.chunkEnd)
	}
	s.bytesFetched.Add(int64(written))
	return written, nil
}

// stopped reports whether the writer, at a block boundary, stops here (see
// run.stopAt). The blocks of the current chunk it wrote, the one just
// finished included, are recorded as fetched in part first, unless the
// chunk is complete (then the chunk's end
// commits it as usual, and advance ends the run). A rotated fetch is never
// stopped: its passes depend on each other.
func (w *runWriter) stopped() bool {
	at := w.r.stopAt.Load()
	if at == 0 || w.off < at || w.off >= w.end || w.off == w.chunkEnd || w.hold || w.tail != nil {
		return false
	}
	s := w.s
	cs, _ := s.lay.bounds(w.next)
	b0, b1 := (max(w.start, cs)-cs)/blockSize, (w.off-cs)/blockSize
	s.mu.Lock()
	s.tab.wroteBlocks(w.next, b0, b1)
	s.mu.Unlock()
	w.end = w.off
	return true
}

// advance moves the writer on to chunk w.next, at a chunk boundary. It
// reports false when the run ends here instead: a more urgent read stole
// the rest, or a background run gives its connection to a more urgent
// request waiting for a Pool slot (see Pool.shouldYield), so that request
// waits for one chunk at most, however long the run.
func (w *runWriter) advance() bool {
	s, r := w.s, w.r
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.next >= r.end {
		return false
	}
	if at := r.stopAt.Load(); at > 0 && w.off >= at {
		s.cutSelfLocked(r, w.next)
		return false
	}
	// Asked under s.mu so the number of chunks left is exact; the Pool's
	// lock nests inside s.mu here and nowhere the other way round.
	if r.prio > prioDemand && s.pool.shouldYield(r.prio, r.end-w.next) {
		s.cutSelfLocked(r, w.next)
		return false
	}
	r.writing = w.next
	return true
}

// sliceWriter fills a caller's buffer; it is the uncached data path.
type sliceWriter struct {
	p []byte
	n int
}

func (w *sliceWriter) Write(p []byte) (int, error) {
	if len(p) > len(w.p)-w.n {
		return 0, errOverrun
	}
	w.n += copy(w.p[w.n:], p)
	return len(p), nil
}

// fetchDirect reads [off, off+len(p)) from the Source straight into p at
// demand priority, bypassing the cache (used after a disk failure). It runs
// on the caller's ctx, since nobody else waits for these bytes, and ends
// early if the File is closed.
func (s *scheduler) fetchDirect(ctx context.Context, p []byte, off int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()

	ctx, release, err := s.pool.admit(ctx, prioDemand)
	if err != nil {
		return s.directErr(err)
	}
	defer release()
	w := &sliceWriter{p: p}
	s.requests.Add(1)
	s.active.Add(1)
	err = s.src.Fetch(ctx, off, int64(len(p)), w)
	s.active.Add(-1)
	s.bytesFetched.Add(int64(w.n))
	if err == nil && w.n != len(p) {
		err = fmt.Errorf("cache: source wrote %d of %d bytes at offset %d", w.n, len(p), off)
	}
	if err != nil {
		return s.directErr(err)
	}
	return nil
}

func (s *scheduler) directErr(err error) error {
	switch {
	case IsRemoteChanged(err):
		return s.markStale(err)
	case s.ctx.Err() != nil:
		return ErrClosed
	}
	return err
}

// recordFromData is chunk i's index record (one CRC-32C per block) computed
// from the bytes in the data file.
func (s *scheduler) recordFromData(i int64) ([]byte, error) {
	nb := s.lay.blocks(i)
	rec := make([]byte, 0, 4*nb)
	for b := range nb {
		c, err := s.st.blockCRC(i, b)
		if err != nil {
			return nil, err
		}
		rec = binary.BigEndian.AppendUint32(rec, c)
	}
	return rec, nil
}
