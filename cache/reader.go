package cache

import (
	"context"
	"errors"
	"sync"
)

// maxReadAheadWorkers bounds the concurrent read-ahead fetches of one
// Reader, so a few sequential readers cannot take the whole Pool.
const maxReadAheadWorkers = 4

// Reader reads a File for one open file handle and adds read-ahead for
// sequential access: a read that starts where the previous one ended is
// sequential; the window starts at one chunk, doubles with each sequential
// read up to ReadAheadMax, and drops to nothing on a seek (a read that
// lands neither at the previous end nor within the window around it). Read-ahead chunks
// are fetched in the background at read-ahead priority; the caller never
// waits for them. A Reader is safe for concurrent use (the kernel may issue
// reads of one handle in parallel) and valid until its File is closed.
type Reader struct {
	f *File

	mu     sync.Mutex
	next   int64 // offset where the previous read ended
	window int64 // read-ahead window in chunks; 0 after a seek

	ra plan // guarded by f.mu
}

// NewReader returns a Reader for one open file handle.
func (f *File) NewReader() *Reader { return &Reader{f: f} }

// ReadAt is File.ReadAt plus sequential detection and read-ahead.
func (r *Reader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if len(p) > 0 && off >= 0 {
		end := off + int64(len(p))
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
				r.window = min(2*r.window, r.f.raMax)
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
		return
	}
	if f.closed || f.degraded.Load() || f.stale.Load() != nil || from >= f.lay.size {
		return
	}
	// The window starts at the first chunk after the one holding the last
	// byte read (that one is already present or in flight).
	first := (from + f.lay.chunk - 1) / f.lay.chunk
	hi := min(first+win, f.lay.chunks)
	if first >= hi {
		return
	}
	if r.ra.cursor >= r.ra.hi {
		r.ra.cursor = first
		r.ra.hi = hi
	} else {
		r.ra.hi = max(r.ra.hi, hi)
	}
	// Pieces split the window between up to maxReadAheadWorkers
	// connections; a small window is a single piece.
	r.ra.piece = min(f.maxReq, max(1, (win+maxReadAheadWorkers-1)/maxReadAheadWorkers))
	want := min(maxReadAheadWorkers, (r.ra.hi-r.ra.cursor+r.ra.piece-1)/r.ra.piece)
	for int64(r.ra.workers) < want {
		if !f.goJobLocked(r.readAheadWorker) {
			return
		}
		r.ra.workers++
	}
}

func (r *Reader) readAheadWorker() {
	f := r.f
	err := f.work(f.ctx, prioReadAhead, &r.ra)
	if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrStale) {
		// The demand read that wants these bytes will meet (and report)
		// the error itself.
		f.log.Debug("read-ahead failed", "dir", f.dir, "err", err)
	}
}
