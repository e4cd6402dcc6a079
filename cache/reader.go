package cache

import (
	"context"
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

	ra plan // guarded by File.mu; the scheduler's (see scheduler.readAhead)
}

// NewReader returns a Reader for one open file handle.
func (f *File) NewReader() *Reader { return &Reader{f: f} }

// Close ends the Reader: it claims no more read-ahead (the pieces already
// being fetched finish), the prefetcher stops following its window, and
// later reads return ErrClosed. It is idempotent and returns nil.
func (r *Reader) Close() error {
	r.closed.Store(true)
	// As after a seek: no window, nothing more to claim.
	r.f.sched.readAhead(r, 0, 0)
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
				r.window = min(2*r.window, r.f.sched.raWin)
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
		r.f.sched.readAhead(r, from, win)
		if win > 0 {
			r.f.st.willNeed(from, win*r.f.lay.chunk)
		}
	}
	return r.f.ReadAt(ctx, p, off)
}
