package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// plan hands out pieces of the missing chunks in [cursor, hi) to background
// workers (Fill, prefetch, read-ahead). Its fields are guarded by f.mu.
type plan struct {
	cursor, hi int64
	piece      int64 // max chunks per piece
	workers    int   // goroutines working on the plan (see work)
	busy       int   // of those, the ones fetching a run now
	// follow makes the plan look first just past the read-ahead window of
	// the latest sequential Reader (see File.followAt): prefetch then
	// fetches what that reader wants next instead of what comes next in
	// file order, which it would only reach much later.
	follow bool
	// endGame lets a worker that finds nothing left to claim split the
	// in-flight run with the most unwritten chunks and fetch its tail (see
	// splitLocked), so every connection stays busy to the end.
	endGame bool
}

// claimNextLocked claims the next run of p at prio and reports its first
// chunk: missing chunks that are not in flight (or, for read-ahead, in
// flight in a Fill or prefetch run whose writer is not near them: see run),
// at most p.piece long. It looks just past a sequential reader's window
// first if p.follow, then from the cursor, which it advances; when that
// finds nothing and p.endGame is set, it splits a run instead. f.mu is
// held.
func (f *File) claimNextLocked(p *plan, prio priority) (r *run, first int64, ok bool) {
	c := f.newClaims(prio)
	defer c.done()
	if p.follow && f.followAt > 0 {
		// Near the reader the pieces are as small as read-ahead's, so
		// the reader's window reaches them whole instead of cutting
		// them; further on, plain pieces (a reader that catches up with
		// one takes its tail, see run).
		i := f.nextFreeLocked(c, f.followAt, p.hi)
		if i < p.hi {
			piece := p.piece
			if i < f.followAt+f.raWin {
				piece = min(piece, f.raPiece(f.raWin))
			}
			r = f.claimRunLocked(c, p, i, piece)
			return r, i, true
		}
	}
	if i := f.nextFreeLocked(c, p.cursor, p.hi); i < p.hi {
		r = f.claimRunLocked(c, p, i, p.piece)
		p.cursor = r.end
		return r, i, true
	}
	p.cursor = p.hi
	if p.endGame {
		return f.splitLocked(c, p)
	}
	return nil, 0, false
}

// nextFreeLocked returns the first chunk in [from, hi) that c may claim, or
// hi. f.mu is held.
func (f *File) nextFreeLocked(c *claims, from, hi int64) int64 {
	for i := from; i < hi; i++ {
		i = f.tab.present.nextClear(i, hi)
		if i >= hi || c.free(i) {
			return i
		}
	}
	return hi
}

// claimRunLocked claims chunk first, which c.free approved, and the free
// chunks after it, up to piece chunks and the end of p, as a new run of p.
// f.mu is held.
func (f *File) claimRunLocked(c *claims, p *plan, first, piece int64) *run {
	r := c.newRun(first, p)
	c.claim(first, r)
	for end := first + 1; end < p.hi && end-first < piece && c.free(end); end++ {
		c.claim(end, r)
	}
	return r
}

// splitLocked is the end game of a worker whose plan has nothing left to
// claim while other runs still have chunks their writers have not reached
// (typically the last long pieces of a Fill or prefetch, each on one
// connection, while the other connections have gone idle). It takes the
// back part of the run with the most such chunks, about half of them so
// both finish at about the same time, the way aria2c splits its largest
// segment. Only runs of the worker's priority or lower are split: a more
// urgent run is not slowed down by a cut. f.mu is held.
func (f *File) splitLocked(c *claims, p *plan) (r *run, first int64, ok bool) {
	var victim *run
	best := int64(0)
	for _, fl := range f.tab.flights {
		v := fl.run
		if v == nil || v.prio < c.prio {
			continue
		}
		if k := f.splitSize(v); k > best {
			victim, best = v, k
		}
	}
	if victim == nil {
		return nil, 0, false
	}
	end := victim.end
	first = end - min(best, p.piece)
	for i := first; i < end; i++ {
		// Only chunks the victim still holds can change hands; anything
		// else means the run is not what its fields say (a defence: a
		// failed run is shortened when it fails, see endRunLocked).
		if fl := f.tab.flight(i); fl == nil || fl.run != victim {
			return nil, 0, false
		}
	}
	c.cut(victim, first)
	r = c.newRun(first, p)
	for i := first; i < end; i++ {
		c.claim(i, r)
	}
	return r, first, true
}

// splitSize is how many chunks a split would take from the end of run v:
// half of those after the chunk its writer is in (rounded up, as the writer
// is part-way through its chunk), but never the near ones (see nearChunks).
// f.mu is held.
func (f *File) splitSize(v *run) int64 {
	rest := v.end - v.writing - 1
	if v.streaming(f.stalledAfter) {
		rest -= nearChunks
	}
	return max(0, min((v.end-v.writing)/2, rest))
}

// work is the loop of one background worker: take a Pool slot at prio, then
// claim a piece of p (taking the slot first means no chunk sits claimed in a
// queue while a demand read could fetch it), fetch it, repeat until p has
// nothing left. Fetches run on ctx. The caller counted the worker in
// p.workers; work uncounts it under f.mu at the moment it decides to stop,
// so whoever extends the plan under f.mu either sees the worker still
// counted (and it will claim the new chunks) or gone (and starts another).
func (f *File) work(ctx context.Context, prio priority, p *plan) error {
	for {
		slotCtx, release, err := f.pool.admit(ctx, prio)
		if err != nil {
			f.mu.Lock()
			p.workers--
			f.mu.Unlock()
			return f.classify(ctx, err)
		}
		f.mu.Lock()
		if f.closed.Load() {
			p.workers--
			f.mu.Unlock()
			release()
			return ErrClosed
		}
		r, first, ok := f.claimNextLocked(p, prio)
		if !ok {
			p.workers--
		} else {
			p.busy++
		}
		f.mu.Unlock()
		if !ok {
			release()
			return nil
		}
		err = f.fetchRun(slotCtx, r, first, release)
		f.mu.Lock()
		p.busy--
		if err != nil {
			p.workers--
		}
		f.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// Fill fetches every missing chunk at bulk priority, splitting the missing
// runs into pieces so every Pool connection is busy (pieces of at most
// MaxRequest; at the end, a connection with nothing left splits the
// longest remaining piece, see splitLocked), and returns nil when the file
// is complete. It returns the
// first error that stops a piece (cancelling the other pieces), ctx.Err()
// when ctx ends, or an error wrapping ErrStale. It does not re-verify chunks
// that were present at Open; call Verify for that. Safe for concurrent use.
func (f *File) Fill(ctx context.Context) error {
	if err := f.enter(); err != nil {
		return err
	}
	defer f.wg.Done()
	return f.fill(ctx, prioBulk, f.pool.capacity)
}

// StartPrefetch starts filling the file in the background at the lowest
// priority, until it is complete and every chunk is verified (chunks from
// earlier sessions are checked against their CRCs once the file is
// complete), or the File is closed. Prefetch leaves part
// of the Pool to demand reads and yields to queued ones; it fills the file
// from just past the window of the latest sequential Reader, if any, so
// what it fetches is what that reader wants next; after a failure it backs
// off and tries again. Calling it again while it runs does nothing.
func (f *File) StartPrefetch() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.prefetching {
		return
	}
	if f.goJobLocked(f.prefetch) {
		f.prefetching = true
	}
}

func (f *File) prefetch() {
	conns := max(1, f.pool.capacity-reserveFor(f.pool.capacity))
	backoff := time.Second
	for {
		err := f.fill(f.ctx, prioPrefetch, conns)
		if err == nil {
			// Complete: check what earlier sessions left, so every chunk
			// is verified and the file can be handed to the kernel
			// (FUSE passthrough). A corrupt chunk is dropped by Verify
			// and fetched again by the next round.
			err = f.Verify(f.ctx)
			if err == nil {
				f.log.Debug("prefetch complete and verified", "dir", f.st.dir)
				return
			}
			if errors.Is(err, ErrCorrupt) {
				f.log.Warn("cached chunks failed their checksum; fetching them again", "dir", f.st.dir, "err", err)
				continue
			}
		}
		switch {
		case f.ctx.Err() != nil, errors.Is(err, ErrClosed), errors.Is(err, ErrStale), isDiskError(err):
			return
		}
		f.log.Warn("prefetch failed; will retry", "dir", f.st.dir, "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-f.ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// fill is Fill and prefetch: rounds of conns workers over the whole file,
// then a wait for chunks others were fetching, until nothing is missing.
// The calling goroutine must be counted in f.wg.
func (f *File) fill(ctx context.Context, prio priority, conns int) error {
	for {
		if err := f.usable(); err != nil {
			return err
		}
		if f.st.degraded.Load() {
			return fmt.Errorf("cache: cannot fill %s: %w", f.st.dir, errUncached)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		f.mu.Lock()
		missing := f.lay.chunks - f.tab.nPresent
		f.mu.Unlock()
		if missing == 0 {
			return nil
		}
		if err := f.fillRound(ctx, prio, conns, missing); err != nil {
			return err
		}
		if err := f.awaitInflight(ctx); err != nil {
			return err
		}
	}
}

// fillRound runs conns workers over every missing chunk once. Fetches run
// on a child of the File's ctx that ends early when ctx ends or a worker
// fails.
func (f *File) fillRound(ctx context.Context, prio priority, conns int, missing int64) error {
	// piece = min(MaxRequest, max(chunk, remaining/connections)), in whole
	// chunks (rounded up, so conns pieces cover everything).
	piece := min(f.maxReq, max(1, (missing+int64(conns)-1)/int64(conns)))
	p := &plan{hi: f.lay.chunks, piece: piece, follow: prio == prioPrefetch, endGame: true}

	runCtx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()

	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	f.mu.Lock()
	for range conns {
		wg.Add(1)
		p.workers++
		started := f.goJobLocked(func() {
			defer wg.Done()
			if err := f.work(runCtx, prio, p); err != nil && !errors.Is(err, errAbandoned) {
				errOnce.Do(func() { firstErr = err; cancel() })
			}
		})
		if !started {
			p.workers--
			wg.Done()
			f.mu.Unlock()
			wg.Wait()
			return ErrClosed
		}
	}
	f.mu.Unlock()
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// awaitInflight waits for every chunk currently in flight (fetched by
// demand reads or read-ahead while the round ran). Their errors are not
// ours to report: a chunk that failed is still missing, and the next round
// claims it and meets the error itself.
func (f *File) awaitInflight(ctx context.Context) error {
	f.mu.Lock()
	waits := make([]*flight, 0, len(f.tab.flights))
	for _, fl := range f.tab.flights {
		waits = append(waits, fl)
	}
	f.mu.Unlock()
	for _, fl := range waits {
		select {
		case <-fl.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
