package cache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Reader reads a File for one open file handle and adds read-ahead for
// sequential access: a read that starts where the previous one ended is
// sequential; the window starts at one chunk, doubles with each sequential
// read up to two pieces per Pool connection (at most ReadAheadMax, see
// readAheadWindow), and drops to nothing on a seek (a read that lands
// neither at the previous end nor within the window around it).
//
// Read-ahead chunks are fetched in the background at read-ahead priority;
// the caller never waits for them. The window is cut into pieces fetched in
// parallel, one per Pool connection at most, because when a server caps
// each connection (as most do, and the rate cap of a benchmark does) one
// stream cannot keep up with a reader that consumes at disk speed; the
// prefetcher, if running, works just past the window (see plan.follow). A
// Reader is safe for concurrent use (the kernel may issue reads of one
// handle in parallel) and valid until Close or its File's Close. Close it
// when the handle is released, so read-ahead and prefetch stop following it.
type Reader struct {
	f *File

	mu     sync.Mutex
	next   int64 // offset where the previous read ended
	window int64 // read-ahead window in chunks; 0 after a seek
	// closed is set by Close, before it clears the read-ahead plan under
	// f.mu, so a readAhead that comes later sees it and claims nothing.
	closed atomic.Bool

	ra plan // guarded by f.mu
}

// NewReader returns a Reader for one open file handle.
func (f *File) NewReader() *Reader { return &Reader{f: f} }

// Close ends the Reader: it claims no more read-ahead (the pieces already
// being fetched finish), the prefetcher stops following its window, and
// later reads return ErrClosed. It is idempotent and returns nil.
func (r *Reader) Close() error {
	r.closed.Store(true)
	// As after a seek: no window, nothing more to claim.
	r.readAhead(0, 0)
	return nil
}

// ReadAt is File.ReadAt plus sequential detection and read-ahead. After
// Close it returns ErrClosed.
func (r *Reader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if len(p) > 0 && off >= 0 {
		end := off + int64(len(p))
		if r.closed.Load() {
			return 0, ErrClosed
		}
		r.mu.Lock()
		// A read near the previous end, within the current window, is
		// not a seek: the kernel issues a handle's reads in parallel and
		// they can arrive slightly out of order. It keeps the window.
		slack := max(r.window, 1) * r.f.lay.chunk
		switch {
		case off == r.next:
			if r.window == 0 {
				r.window = 1
			} else {
				r.window = min(2*r.window, r.f.raWin)
			}
			r.next = end
		case r.window > 0 && off >= r.next-slack && off <= r.next+slack:
			r.next = max(r.next, end)
		default:
			r.window = 0
			r.next = end
		}
		win, from := r.window, r.next
		r.mu.Unlock()
		r.readAhead(from, win)
		if win > 0 {
			r.f.st.willNeed(from, win*r.f.lay.chunk)
		}
	}
	return r.f.ReadAt(ctx, p, off)
}

// readAhead asks for the win chunks after byte from (win 0 stops read-ahead
// claims after a seek). Workers already running pick up the new target.
func (r *Reader) readAhead(from, win int64) {
	f := r.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if win == 0 {
		r.ra.hi = r.ra.cursor
		if f.followBy == r {
			f.followAt, f.followBy = 0, nil
		}
		return
	}
	if r.closed.Load() || f.closed.Load() || f.st.degraded.Load() || f.stale.Load() != nil || from >= f.lay.size {
		return
	}
	// The window starts at the first chunk after the one holding the last
	// byte read (that one is already present or in flight).
	first := (from + f.lay.chunk - 1) / f.lay.chunk
	hi := min(first+win, f.lay.chunks)
	if first >= hi {
		return
	}
	// Prefetch works just past the window (see plan.follow).
	f.followAt, f.followBy = hi, r
	if r.ra.cursor >= r.ra.hi {
		r.ra.cursor = first
		r.ra.hi = hi
	} else {
		r.ra.hi = max(r.ra.hi, hi)
	}
	r.ra.piece = f.raPiece(win)
	if hi == f.lay.chunks {
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
	r.ra.cursor = f.tab.present.nextClear(r.ra.cursor, r.ra.hi)
	todo := int64(0)
	for i := r.ra.cursor; i < r.ra.hi; i++ {
		if f.claimableLocked(prioReadAhead, i) {
			todo++
		}
	}
	pieces := (todo + r.ra.piece - 1) / r.ra.piece
	for r.ra.workers < f.pool.capacity && int64(r.ra.workers-r.ra.busy) < pieces {
		if !f.goJobLocked(r.readAheadWorker) {
			return
		}
		r.ra.workers++
	}
}

// raPiece is the size in chunks of the pieces a read-ahead window of win
// chunks is fetched in: the window spread over every connection of the
// Pool, so one sequential reader keeps them all streaming (a Pool
// connection is the unit of bandwidth when the server caps each one).
func (f *File) raPiece(win int64) int64 {
	return min(f.maxReq, max(1, (win+int64(f.pool.capacity)-1)/int64(f.pool.capacity)))
}

func (r *Reader) readAheadWorker() {
	f := r.f
	err := f.work(f.ctx, prioReadAhead, &r.ra)
	if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrStale) {
		// The demand read that wants these bytes will meet (and report)
		// the error itself.
		f.log.Debug("read-ahead failed", "dir", f.st.dir, "err", err)
	}
}
