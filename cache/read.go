package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// maxEnsureRounds bounds how often one read goes around "claim, wait,
// re-check". A round only repeats when a chunk changed state under it (a
// bad checksum dropped it, or the job that claimed it was stopped), so a
// healthy read needs one or two; the bound turns a livelock bug into an
// error instead of a hang.
const maxEnsureRounds = 64

// ReadAt reads len(p) bytes at off at demand priority. Missing chunks are
// fetched (adjacent ones with one request; a chunk already being fetched is
// waited for, never fetched twice, unless a background fetch (read-ahead,
// Fill, prefetch) has not reached it yet: then the read takes it over and
// the background fetch stops short of it). Waiting honours ctx: cancelling it
// returns ctx.Err() at once while the shared fetch goes on for others.
// It returns io.EOF with n < len(p) at the end of the file. It returns only
// bytes of committed chunks whose 64 KiB blocks it reads were checked
// against their CRCs this session, or bytes that a fetch in progress has
// already written into the data file from a validated answer (see ensure).
// After a
// Source reported a remote change every call fails with ErrStale.
// Safe for concurrent use.
func (f *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return f.readAt(ctx, p, off, readShape{})
}

// readAt is ReadAt, fetching missing bytes in the given shape.
func (f *File) readAt(ctx context.Context, p []byte, off int64, shape readShape) (int, error) {
	n, _, err := f.readAtHeld(ctx, p, off, shape, false)
	return n, err
}

// readAtHeld is readAt. With hold, when the bytes are readable from the data
// file and not in p already, it may instead return them as a Held, which
// keeps the read's chunks pinned until its Release; p is then untouched.
func (f *File) readAtHeld(ctx context.Context, p []byte, off int64, shape readShape, hold bool) (int, *Held, error) {
	if off < 0 {
		return 0, nil, fmt.Errorf("cache: negative offset %d", off)
	}
	if err := f.sched.usable(); err != nil {
		return 0, nil, err
	}
	if len(p) == 0 {
		return 0, nil, nil
	}
	n := f.lay.clamp(off, int64(len(p)))
	if n == 0 {
		return 0, nil, io.EOF
	}
	// The chunks served are pinned until their bytes are copied out, so
	// they are never evicted under the read (see chunkTable).
	first, last := f.lay.span(off, n)
	if err := f.enterPinned(first, last); err != nil {
		return 0, nil, err
	}
	start := time.Now()
	hit := f.presentAll(first, last)
	var h *Held
	got, err := f.read(ctx, p[:n], off, shape, hold, &h)
	f.countRead(start, got, hit)
	if h != nil {
		h.first, h.last = first, last
	} else {
		f.leavePinned(first, last)
	}
	if err == nil && int(n) < len(p) {
		err = io.EOF
	}
	return got, h, err
}

// Held is bytes of a File that a read found in its data file and left
// there: n bytes at off, pinned (never evicted, and the store kept open)
// until Release. It lets the caller hand the kernel the data file's own
// pages (a splice) instead of copying them out and back in.
type Held struct {
	f           *File
	fd          uintptr
	off         int64
	n           int
	first, last int64
	released    atomic.Bool
}

// Fd gives the data file's descriptor and the bytes' place in it, valid
// until Release.
func (h *Held) Fd() (fd uintptr, off int64, n int) { return h.fd, h.off, h.n }

// Len is the number of bytes held.
func (h *Held) Len() int { return h.n }

// ReadTo copies the bytes held into p, which must hold Len bytes: for a
// caller that could not use Fd after all.
func (h *Held) ReadTo(p []byte) error {
	return h.f.st.readAt(p[:h.n], h.off)
}

// Release unpins the bytes. It is idempotent; Fd is invalid after it.
func (h *Held) Release() {
	if h.released.CompareAndSwap(false, true) {
		h.f.leavePinned(h.first, h.last)
	}
}

// willNeed asks the kernel to read the present chunks of [off, off+n) of
// the data file into the page cache ahead (see osData.WillNeed), but for
// those fetched this session. A chunk not present is a hole or being
// fetched: advising a hole makes the kernel allocate and zero pages that
// the fetch then writes over, at a cost larger than the advice could save
// (a cold uncapped cat through the mount spent 6.5% of the daemon's CPU
// reading holes in, and more writing into the small pages that left). A
// fresh chunk's pages are in the page cache already, from its fetch; its
// advice would only walk them (another 4.8%, as a sequential reader
// advises each chunk of its window again at every read).
func (f *File) willNeed(off, n int64) {
	first, end := f.lay.span(off, n)
	advisable := func(i int64) bool { return f.tab.present.get(i) && !f.tab.fresh.get(i) }
	for i := first; i < end; i++ {
		if !advisable(i) {
			continue
		}
		j := i + 1
		for j < end && advisable(j) {
			j++
		}
		s, _ := f.lay.bounds(i)
		_, e := f.lay.bounds(j - 1)
		s = max(s, off)
		f.st.willNeed(s, min(e, off+n)-s)
		i = j
	}
}

// read fills p (already clamped to the file) from the cache, fetching what
// is missing; after a disk failure it falls back to the network.
// With hold, bytes readable from the data file may be left there as *held
// (see readAtHeld).
func (f *File) read(ctx context.Context, p []byte, off int64, shape readShape, hold bool, held **Held) (int, error) {
	if !f.st.degraded() {
		filled, err := f.ensure(ctx, p, off, prioDemand, shape)
		if err == nil && filled {
			return len(p), nil
		}
		if err == nil && hold {
			if fd, ok := f.st.dataFd(); ok {
				*held = &Held{f: f, fd: fd, off: off, n: len(p)}
				return len(p), nil
			}
		}
		if err == nil {
			err = f.st.readAt(p, off)
			if err == nil {
				return len(p), nil
			}
			f.st.degrade(&diskError{op: "read data", err: err})
		} else if !isDiskError(err) {
			return 0, err
		}
	}
	return f.readUncached(ctx, p, off)
}

// ensure makes the bytes [off, off+len(p)) readable from the data file,
// fetching missing chunks at prio and verifying ones not yet checked this
// session. filled reports that p already holds those bytes: when the last
// round only had blocks to verify, p is read once and the blocks it holds
// whole are checked from p, so verified data is not read twice. The
// calling goroutine must be counted in the scheduler's wg.
//
// A chunk is readable when it is present and verified, when it is present
// and the blocks holding its part of [off, end) were checked against their
// CRCs this session (so a small read after a restart checks 64 KiB, not a
// whole chunk), or when it is in flight and its run's writer has already
// written its part of [off, end) (see chunkWait): those bytes came from a
// validated response of the pinned version, and are the very bytes that
// will be checksummed and committed, so a small read need not wait for the
// rest of its chunk, its fdatasync and its commit. Nothing is recorded as
// present any sooner.
//
// With shape.blocks, missing chunks are fetched in part: the blocks the read
// touches and shape.extra bytes after them (see readShape); blocks fetched
// so are servable once written (chunkTable.blocksPresent).
func (f *File) ensure(ctx context.Context, p []byte, off int64, prio priority, shape readShape) (filled bool, err error) {
	end := off + int64(len(p))
	first, last := f.lay.span(off, end-off)
	readable := servable{first: first, n: last - first}
	readyAll := func() bool {
		if readable.marks == nil {
			return f.tab.servableRange(first, last)
		}
		for i := first; i < last; i++ {
			if !readable.has(i) && !f.tab.servable(i) {
				return false
			}
		}
		return true
	}
	for round := 0; ; round++ {
		if readyAll() {
			return false, nil
		}
		if err := f.sched.usable(); err != nil {
			return false, err
		}
		if f.st.degraded() {
			return false, f.st.uncached()
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if round == maxEnsureRounds {
			return false, fmt.Errorf("cache: chunks %d..%d still not ready after %d rounds", first, last-1, round)
		}
		waits, verify, err := f.sched.claimForRead(off, end, &readable, prio, deadlineOf(ctx), shape)
		if err != nil {
			return false, err
		}
		// With nothing to wait for, every chunk of the span is ready or
		// held by this read for verification (nobody writes a present
		// chunk), so p can be read now and checked in place.
		var have []byte
		if len(waits) == 0 && len(verify) > 0 {
			if rerr := f.st.readAt(p, off); rerr == nil {
				have = p
			}
		}
		good := true
		for _, v := range verify {
			if f.verifyClaimed(v.chunk, v.b0, v.b1, have, off) {
				readable.mark(v.chunk)
			} else {
				good = false
			}
		}
		if have != nil && good {
			return true, nil
		}
		if f.onWait != nil && len(waits) > 0 {
			f.onWait()
		}
		for _, w := range waits {
			early, blocked, err := w.wait(ctx)
			if blocked && shape.waited != nil {
				*shape.waited = true
			}
			if err != nil {
				return false, err
			}
			if early {
				readable.mark(w.chunk)
				continue
			}
			if w.fl.err != nil && !errors.Is(w.fl.err, errAbandoned) {
				return false, w.fl.err
			}
		}
	}
}

// servable is the set of chunks of one read's span that may be served
// although they are not (yet) present and verified whole: the read's bytes
// in them were written by a fetch in progress (see chunkWait), or the
// blocks holding them were checked (see blockSpan). Either stays true: a
// byte of the data file is only ever rewritten with the same byte of the
// same version, and a checked block that was good stays good. It is owned
// by one ensure call; marks is allocated on the first mark.
type servable struct {
	first, n int64
	marks    []bool
}

func (s *servable) mark(i int64) {
	if s.marks == nil {
		s.marks = make([]bool, s.n)
	}
	s.marks[i-s.first] = true
}

func (s *servable) has(i int64) bool { return s.marks != nil && s.marks[i-s.first] }

// blockCheck asks for blocks [b0, b1) of chunk to be verified.
type blockCheck struct{ chunk, b0, b1 int64 }

// chunkWait is a read's wait for one in-flight chunk: for its flight to end,
// or for run (the run fetching the chunk when the read looked, nil while
// it is being verified) to have written up to need, the end of the read's
// bytes within the chunk.
//
// If the chunk is later stolen from run, run's writer never enters it, so
// run's progress can only pass need while the chunk is still run's; the
// waiter then simply waits for the flight (which the thief keeps).
type chunkWait struct {
	fl          *flight
	run         *run
	chunk       int64
	start, need int64 // the read's bytes in the chunk
}

// wait blocks until w's bytes are written (early true) or its flight ended
// (early false: the caller reads fl.err), or ctx is done. blocked reports
// that it had to wait: the bytes were not written when it looked.
func (w chunkWait) wait(ctx context.Context) (early, blocked bool, err error) {
	for {
		var progress <-chan struct{}
		if w.run != nil {
			var ok bool
			if ok, progress = w.run.reached(w.start, w.need); ok {
				return true, blocked, nil
			}
		}
		select {
		case <-w.fl.done:
			return false, blocked, nil
		default:
		}
		blocked = true
		select {
		case <-w.fl.done:
			return false, blocked, nil
		case <-progress:
		case <-ctx.Done():
			return false, blocked, ctx.Err()
		}
	}
}

// readUncached serves p at off without caching anything: chunks already
// present and verified come from the data file (if it still reads), the rest
// straight from the Source into p.
func (f *File) readUncached(ctx context.Context, p []byte, off int64) (int, error) {
	pos, end := off, off+int64(len(p))
	for pos < end {
		i := f.lay.chunkOf(pos)
		_, ce := f.lay.bounds(i)
		ce = min(ce, end)
		if f.tab.present.get(i) && f.tab.verified.get(i) {
			if err := f.st.readAt(p[pos-off:ce-off], pos); err == nil {
				pos = ce
				continue
			}
		}
		// Extend the network segment over the following chunks that
		// cannot be served locally.
		se := ce
		for se < end {
			j := f.lay.chunkOf(se)
			if f.tab.present.get(j) && f.tab.verified.get(j) {
				break
			}
			_, je := f.lay.bounds(j)
			se = min(je, end)
		}
		if err := f.sched.fetchDirect(ctx, p[pos-off:se-off], pos); err != nil {
			return int(pos - off), err
		}
		pos = se
	}
	return len(p), nil
}
