package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Reader reads a File for one open file handle and fetches what the
// handle's program reads, plus read-ahead earned by the bytes it consumed.
//
// Its reads are sorted into sequential streams (at most maxStreams: a
// player reads audio and video at two offsets). A read continues a stream
// when it starts near where the stream's last read ended: slightly behind
// (the kernel issues a handle's reads in parallel, and they arrive out of
// order) or ahead by less than the stream's window (a forward skip reuses
// it). Any other read is a seek: it starts a new stream, and the read-ahead
// the most recently used stream had claimed but not yet received is
// cancelled (the program that seeks is most likely the one that just read).
//
// A stream's window is 0 on its first read, raStart once a second read
// continued it, and doubles each time the stream has consumed a whole
// window since it last grew, if one of its reads found its bytes missing
// meanwhile (the window did not keep ahead of it), up to the File's
// read-ahead cap: a program that reads slower than the connections bring
// keeps a small window. Read-ahead is
// the smaller of the window and what the stream has consumed, so a program
// that reads 200 KiB gets at most 200 KiB more, however the kernel's own
// read-ahead ramps its READs.
//
// What a read fetches on demand follows: while a stream's read-ahead is
// below one chunk, a read fetches the aligned 64 KiB blocks it touches (and
// the read-ahead after them, within the chunk), not whole chunks. From one
// chunk on, a read still fetches its blocks, and the stream's lead of
// blocks past its end is fetched ahead (leadStart at first; it doubles
// while the stream spends most of its time waiting for those bytes, see
// leadRead), at read-ahead priority: a program that reads slower than a
// connection brings (a decoder) has at most its lead fetched and unread
// when it stops. Once the lead reaches a chunk, reads fetch whole chunks,
// the read-ahead window being fetched in pieces in parallel, one per Pool
// connection at most, at read-ahead priority (the caller never waits for
// it). After at least randomSeeks seeks with an
// average under randomAvg bytes read per stream the handle is random (the
// way gcsfuse detects it): a new stream then earns no read-ahead until it
// has consumed raStart.
//
// A Reader is safe for concurrent use and valid until Close or its File's
// Close. Close it when the handle is released, so read-ahead and prefetch
// stop following it.
type Reader struct {
	f *File

	mu      sync.Mutex // guards the four fields below
	streams []*stream
	reads   uint64 // reads so far: the streams' clock
	seeks   int64  // reads that started a stream after the first
	read    int64  // bytes read by the handle
	// closed is set by Close, before it clears the read-ahead plans under
	// f.mu, so a readAhead that comes later sees it and claims nothing.
	closed atomic.Bool
	limit  atomic.Int64 // LimitReadAhead's end; 0 for none
}

const (
	// raStart is a stream's first read-ahead window, as in mountpoint-s3:
	// a 1 MiB request plus one 128 KiB kernel READ.
	raStart = 1<<20 + 128<<10
	// maxStreams is how many sequential streams a Reader follows at once.
	maxStreams = 4
	// randomSeeks and randomAvg make a handle random (see Reader).
	randomSeeks = 2
	randomAvg   = 8 << 20
	// leadStart is a stream's first lead (see Reader): one block. A
	// reader whose reads are larger, or that reads faster than the
	// blocks come, soon doubles it; one that reads slower leaves no more
	// than a block fetched and unread when it stops.
	leadStart = 64 << 10
	// behind is how far before a stream's end a read still continues it:
	// the largest FUSE READ, so reads the kernel sent in parallel may
	// arrive in any order.
	behind = 1 << 20
)

// stream is one sequential run of a Reader's reads. Its fields are guarded
// by Reader.mu, but ra, which is set when the stream is made and never
// changes: the plan it points at is the scheduler's, guarded by File.mu
// like every plan.
type stream struct {
	next     int64  // where the stream's furthest read ended
	consumed int64  // bytes its reads asked for
	window   int64  // read-ahead window in bytes (see Reader)
	grown    int64  // consumed when window last grew
	waited   bool   // a read with a window > 0 found its bytes missing since window last grew
	used     uint64 // Reader.reads at its latest read
	// lead is how far past the stream's end blocks are fetched ahead
	// while it is under a chunk (see Reader). leadAt and leadSince are
	// consumed and the time when lead last changed (or its first read),
	// leadWaited how long its reads waited since for their bytes (see
	// leadRead).
	lead, leadAt int64
	leadSince    time.Time
	leadWaited   time.Duration
	ra           *plan // the stream's read-ahead (see scheduler.readAhead)
}

// NewReader returns a Reader for one open file handle.
func (f *File) NewReader() *Reader { return &Reader{f: f} }

// Close ends the Reader: it claims no more read-ahead, the fetches made for
// it stop at their next block boundary past what its reads asked for (the
// blocks written stay: a program that opens, reads and closes over and over
// finds them at its next open, and fetches only the rest), the prefetcher
// stops following it, and later reads return ErrClosed. It is idempotent
// and returns nil.
func (r *Reader) Close() error {
	r.closed.Store(true)
	r.mu.Lock()
	plans := make([]*plan, len(r.streams))
	for i, st := range r.streams {
		plans[i] = st.ra
	}
	r.mu.Unlock()
	r.f.sched.stopRuns(r, plans)
	return nil
}

// LimitReadAhead tells the Reader that its handle will read little or
// nothing past byte end: read-ahead, and the extra bytes a small read
// fetches, stop at the chunk holding end, however much the handle's
// streams have earned. A read past end is served as usual, on demand. An
// archive member's inflater uses it: it reads the compressed stream
// sequentially, which earns a large window, but needs the stream only to
// where the member ends. end <= 0 removes the limit. Safe for concurrent
// use; it applies from the next read.
func (r *Reader) LimitReadAhead(end int64) { r.limit.Store(max(0, end)) }

// ReadAt is File.ReadAt plus stream detection and read-ahead. After Close it
// returns ErrClosed.
func (r *Reader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, _, err := r.readAt(ctx, p, off, false)
	return n, err
}

// ReadHeld is ReadAt, but bytes that are readable from the data file may be
// returned as a Held instead of being copied into p (then p is untouched
// and n is h.Len()). The caller must Release h.
func (r *Reader) ReadHeld(ctx context.Context, p []byte, off int64) (n int, h *Held, err error) {
	return r.readAt(ctx, p, off, true)
}

func (r *Reader) readAt(ctx context.Context, p []byte, off int64, hold bool) (int, *Held, error) {
	if len(p) == 0 || off < 0 {
		n, err := r.f.ReadAt(ctx, p, off)
		return n, nil, err
	}
	if r.closed.Load() {
		return 0, nil, ErrClosed
	}
	// A read whose chunks are not all there yet shows the window did not
	// keep ahead of its stream, which may then grow (see track).
	first, last := r.f.lay.span(off, r.f.lay.clamp(off, int64(len(p))))
	missing := !r.f.presentAll(first, last)
	st, from, ra, lead, cancel := r.track(off, int64(len(p)), missing)
	for _, c := range cancel {
		r.f.sched.stopReadAhead(c)
	}
	chunk := r.f.lay.chunk
	win := ra / chunk
	if end := r.limit.Load(); end > 0 {
		// The handle said it reads little past end: earn nothing beyond.
		ra = min(ra, max(0, end-from))
		win = min(ra/chunk, max(0, (end+chunk-1)/chunk-(from+chunk-1)/chunk))
	}
	shape := readShape{owner: r}
	switch {
	case ra < chunk:
		// Not yet a chunk of read-ahead earned: fetch the blocks the read
		// touches, and ra bytes after them within their chunk.
		shape.blocks, shape.extra = true, ra/2
	case lead < chunk:
		// A chunk earned, but the stream has not shown that it outruns
		// a lead of blocks: fetch the read's blocks, and ahead the
		// blocks up to lead past the stream's end. Once it outran a
		// lead of half a chunk, read-ahead is in whole chunks.
		shape.blocks = true
		var waited bool
		shape.waited = &waited
		r.f.sched.aheadBlocks(r, from, from+lead)
		start := time.Now()
		n, h, err := r.f.readAtHeld(ctx, p, off, shape, hold)
		r.leadRead(st, start, waited)
		return n, h, err
	case win > 0:
		r.f.sched.readAhead(st.ra, &r.closed, from, win)
		r.f.willNeed(from, win*chunk)
	}
	return r.f.readAtHeld(ctx, p, off, shape, hold)
}

// leadRead files a read of stream st made with a lead, which began at
// start: waited reports that it had to wait for its bytes, be they asked
// for ahead or, past the lead, by the read itself (a program that skips
// forward past its lead outran it as much as one that reads every byte).
// Each time the stream has consumed its lead since the lead last changed,
// the lead doubles if the stream spent over 3/4 of the time since then
// waiting: it reads faster than the lead brings its bytes. A reader that
// waits now and then (a decoder whose kernel sends two READs at once)
// keeps its lead, and what it leaves unread at a close stays small.
func (r *Reader) leadRead(st *stream, start time.Time, waited bool) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if st.leadSince.IsZero() {
		st.leadSince, st.leadAt = start, st.consumed
	}
	if waited {
		st.leadWaited += now.Sub(start)
	}
	if st.consumed-st.leadAt < st.lead {
		return
	}
	if 4*st.leadWaited > 3*now.Sub(st.leadSince) {
		st.lead *= 2
	}
	st.leadAt, st.leadSince, st.leadWaited = st.consumed, now, 0
}

// track files the read [off, off+n) under its stream, and returns the
// stream, where its read-ahead starts (its end), the read-ahead it has
// earned in bytes, its lead, and the plans of the streams whose read-ahead
// a seek cancels.
func (r *Reader) track(off, n int64, missing bool) (st *stream, from, earned, lead int64, cancel []*plan) {
	end := off + n
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads++
	r.read += n
	var mru *stream
	for _, s := range r.streams {
		if mru == nil || s.used > mru.used {
			mru = s
		}
		if st == nil && off >= s.next-max(s.window, behind) && off <= s.next+s.window {
			st = s
		}
	}
	if st != nil {
		st.consumed += n
		st.next = max(st.next, end)
		switch {
		case st.window == 0:
			st.window = min(raStart, r.f.sched.raWin*r.f.lay.chunk)
			st.grown = st.consumed
		case st.consumed-st.grown >= st.window && st.waited:
			st.window = min(2*st.window, r.f.sched.raWin*r.f.lay.chunk)
			st.grown = st.consumed
			st.waited = false
		}
		if missing && st.window > 0 {
			st.waited = true
		}
	} else {
		if len(r.streams) > 0 {
			r.seeks++
			cancel = append(cancel, mru.ra)
			// The seeking stream starts again from nothing should it
			// come back.
			mru.window, mru.consumed, mru.grown = 0, 0, 0
			mru.lead, mru.leadAt, mru.leadSince, mru.leadWaited = leadStart, 0, time.Time{}, 0
		}
		st = &stream{next: end, consumed: n, lead: leadStart, ra: &plan{}}
		if len(r.streams) == maxStreams {
			lru := 0
			for i, s := range r.streams {
				if s.used < r.streams[lru].used {
					lru = i
				}
			}
			if r.streams[lru] != mru {
				cancel = append(cancel, r.streams[lru].ra)
			}
			r.streams[lru] = st
		} else {
			r.streams = append(r.streams, st)
		}
	}
	st.used = r.reads
	earned = min(st.window, st.consumed)
	if r.seeks >= randomSeeks && r.read/r.seeks < randomAvg && st.consumed < raStart {
		earned = 0
	}
	return st, st.next, earned, st.lead, cancel
}

// readShape says how a demand read fetches what is missing: whole chunks
// (the zero value), or, with blocks, only the 64 KiB blocks it touches plus
// extra bytes after them within their chunk.
type readShape struct {
	blocks bool
	extra  int64
	// owner is the Reader the read came through, nil for File.ReadAt: the
	// demand runs it claims stop when that Reader closes (see run.stopAt).
	owner *Reader
	// waited, if not nil, is set when the read blocked on bytes not yet
	// written.
	waited *bool
}
