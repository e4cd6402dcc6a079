package cache

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// scheduler decides which chunks are fetched, when and by whom: demand runs
// for reads (claimForRead), read-ahead for sequential Readers (readAhead),
// Fill and prefetch (plan, work), stealing and the end game (run, claims),
// all within the budget of the Pool. It asks the chunk table what is
// missing and tells it what was claimed and written; the bytes go through
// the store (its runWriter writes the data file by store.writeAt and hands
// finished chunks to the committer), and it never opens the index.
//
// Its lock is the File's (mu): a claim changes a chunk's state and a run
// together. It also owns the lifetime of everything that may touch the
// store: jobs are counted in wg, and close cancels ctx and waits for them.
type scheduler struct {
	mu  *sync.Mutex // File.mu; guards the fields marked so, the table, runs and plans
	tab *chunkTable
	st  *store
	lay layout
	log *slog.Logger
	src Source
	url string // secret-free, for the log

	pool   *Pool
	maxReq int64 // chunks per Source.Fetch
	raWin  int64 // largest read-ahead window, in chunks
	// stalledAfter: a run silent this long is not streaming (see run).
	stalledAfter time.Duration
	// charge, if set, reserves a chunk's bytes in the budget before its
	// first byte is written (see Budget); false: no room.
	charge func(i int64) bool
	// verify is File.Verify: prefetch's last step.
	verify func(ctx context.Context) error

	// ctx governs every fetch; close cancels it. Fetches never run on a
	// caller's ctx because other readers may be waiting on them (a demand
	// run has a child of it, see deadline.go).
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts everything that may touch the store: fetch jobs,
	// background workers and File calls in progress. close waits for it.
	// Add is only called under mu with closed false (see enterLocked).
	wg sync.WaitGroup
	// closed is set, under mu, when close begins: enterLocked reads it
	// under mu (so wg.Add never races close's Wait); usable reads it
	// without.
	closed atomic.Bool
	stale  atomic.Pointer[error] // set once: the error every later read returns

	prefetching bool // guarded by mu
	// followAt is the chunk just past the window of followBy, the
	// read-ahead plan of a sequential Reader stream (0: none), where
	// prefetch looks first. Guarded by mu.
	followAt int64
	followBy *plan

	bytesFetched atomic.Int64 // bytes received from the Source
	requests     atomic.Int64 // Source.Fetch calls
	active       atomic.Int64 // Source.Fetch calls in progress
}

func newScheduler(mu *sync.Mutex, tab *chunkTable, st *store, log *slog.Logger, src Source, o Options, m Meta, verify func(context.Context) error) *scheduler {
	s := &scheduler{
		mu: mu, tab: tab, st: st, lay: tab.lay, log: log, src: src, url: m.URL,
		pool:         o.Pool,
		maxReq:       max(1, o.MaxRequest/m.ChunkSize),
		stalledAfter: o.stalledAfter,
		verify:       verify,
	}
	if s.pool == nil {
		s.pool = NewPool(defaultConnections)
	}
	if o.MaxRequest <= 0 {
		s.maxReq = max(1, defaultMaxRequest/m.ChunkSize)
	}
	if s.stalledAfter <= 0 {
		s.stalledAfter = defaultStalledAfter
	}
	raMax := o.ReadAheadMax
	if raMax <= 0 {
		raMax = defaultReadAheadMax
	}
	if o.Budget != nil && o.Budget.Limit() > 0 {
		// Read-ahead not yet read is the coldest data under a cap: a
		// window near the cap's size would evict its own chunks before
		// the reader gets to them, and fetch them again.
		raMax = min(raMax, o.Budget.Limit()/budgetReadAheadShare)
	}
	s.raWin = readAheadWindow(raMax, m.ChunkSize, s.pool.capacity)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// enterLocked registers an operation that touches the store, so close
// waits for it. It fails once close has begun. mu is held.
func (s *scheduler) enterLocked() error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.wg.Add(1)
	return nil
}

// close stops claiming, cancels every fetch and waits for every job and
// call in progress.
func (s *scheduler) close() {
	s.mu.Lock()
	s.closed.Store(true)
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// usable returns the error every read must fail with now, if any.
func (s *scheduler) usable() error {
	if s.closed.Load() {
		return ErrClosed
	}
	if p := s.stale.Load(); p != nil {
		return *p
	}
	return nil
}

// markStale records that the remote changed. The first cause wins.
func (s *scheduler) markStale(cause error) error {
	err := staleError(cause)
	if s.stale.CompareAndSwap(nil, &err) {
		s.log.Warn("remote file changed; cached handle is stale", "url", s.url, "err", cause)
	}
	return *s.stale.Load()
}

// goJobLocked runs fn on a new goroutine counted by s.wg, unless Close has begun.
// s.mu is held.
func (s *scheduler) goJobLocked(fn func()) bool {
	if s.enterLocked() != nil {
		return false
	}
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return true
}

// startRunLocked fetches run r, claimed from chunk first on, on a new job
// (see fetchRun), or, once Close has begun, fails its chunks with
// ErrClosed and returns false. s.mu is held.
func (s *scheduler) startRunLocked(r *run, first int64) bool {
	if !s.goJobLocked(func() { _ = s.fetchRun(s.ctx, r, first, nil) }) {
		s.failRunLocked(first, r.end, ErrClosed)
		return false
	}
	return true
}

// failRunLocked ends the flights of chunks [first, end) with err.
// s.mu is held.
func (s *scheduler) failRunLocked(first, end int64, err error) {
	for i := first; i < end; i++ {
		s.tab.fail(i, err)
	}
}

// classify turns a fetch error into what waiters should see. ctx is the
// context the fetch ran on.
func (s *scheduler) classify(ctx context.Context, err error) error {
	switch {
	case isDiskError(err):
		return err
	case IsRemoteChanged(err):
		return s.markStale(err)
	case s.ctx.Err() != nil:
		return ErrClosed
	case ctx.Err() != nil:
		// The job that claimed the chunks was stopped, not the chunks
		// failed: a waiter may claim them itself.
		return errAbandoned
	}
	return err
}
