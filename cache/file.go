package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Source is where missing bytes come from; *fetch.Object implements it.
//
// Fetch writes exactly the n bytes at [off, off+n) of one pinned version of
// the remote file to w, in order, and returns nil only if all n were written.
// On error w may have received a prefix. An error whose chain has a
// RemoteChanged() bool method returning true means the remote file is no
// longer the pinned version. Fetch must be safe for concurrent use.
type Source interface {
	Fetch(ctx context.Context, off, n int64, w io.Writer) error
}

// Meta identifies the cached version of a remote object. Open compares every
// field except Date and URL with what the cache directory holds, and keeps
// the cached bytes only when they are proven to be of this version (see
// provenSame); otherwise it discards them.
type Meta struct {
	Size         int64
	ChunkSize    int64  // power of two, 64 KiB..64 MiB
	ETag         string // strong ETag as sent, or ""
	WeakETag     string // the ETag as sent when it is not strong (W/"…"), or ""
	LastModified string // as sent, or ""
	// Date is the server's Date header on the answer that gave the
	// validators, or "". It is stored when the cache is created and
	// tells whether LastModified can prove the version (see provenSame).
	Date string
	URL  string // secret-free, informational only
	// Source names what the bytes are of, such as a hash of the URL's
	// identity, when the cache's place does not already say it (a get's
	// partial download lives beside its output, whatever the URL). A cache
	// whose stored Source differs is discarded; one stored without a
	// Source, or opened without one, is not compared.
	Source string
}

// Options tune a File. The zero value is usable.
type Options struct {
	Pool         *Pool // nil: a private NewPool(8)
	MaxRequest   int64 // max bytes of adjacent missing chunks in one Source.Fetch; default 16 MiB
	ReadAheadMax int64 // cap of a Reader's read-ahead window; default 32 MiB (see readAheadWindow)
	// Scrub ignores a clean close's seal (see seal.go): every block is
	// checked on first use, and Verify checks the whole cache.
	Scrub  bool
	Logger *slog.Logger // nil: discard
	// Root, if set, is the cache root that holds dir (one directory per
	// object, as a mount's --cache-dir). Open creates it 0700 if missing
	// and refuses one that is not a directory, not ours, or writable by
	// group or others, like dir itself. A symlink to such a root is
	// followed (the user may keep the cache on another disk); dir, inside
	// it, never is.
	Root string
	// Budget, if set, bounds the bytes of every object under its root,
	// which must be the directory holding dir (see Budget).
	Budget *Budget
	// Limits, if set and Budget is not, gives the File the process's
	// Budget of Root (opened with these options by the first File that
	// asks, closed with the last).
	Limits *BudgetOptions

	// wrapData lets tests put a fault injector between the cache and its
	// data file.
	wrapData func(dataFile) dataFile
	// onWait, if set, is called by a read just before it blocks on chunks
	// others are fetching, so tests can count waiters without sleeping.
	onWait func()
	// stalledAfter, if set, replaces defaultStalledAfter, so tests can make
	// every run count as streaming, or none.
	stalledAfter time.Duration
}

// minReadAheadPiece is the least a read-ahead piece should carry when the
// window is full, so that with small chunks a request still moves enough
// bytes to make its round trip worth it.
const minReadAheadPiece = 1 << 20

// readAheadWindow returns the largest read-ahead window in chunks: two
// pieces per Pool connection, each of at least one chunk and
// minReadAheadPiece, so every connection can be streaming a piece of the
// window while the next pieces are already waiting to be claimed. It is
// capped by ReadAheadMax (raMax bytes).
func readAheadWindow(raMax, chunk int64, connections int) int64 {
	piece := max(1, minReadAheadPiece/chunk)
	return max(1, min(raMax/chunk, 2*int64(connections)*piece))
}

// Stats is a snapshot of a File's state.
type Stats struct {
	Size, ChunkSize int64
	Chunks, Present int64 // chunk counts
	// Verified counts the present chunks whose checksum was written or
	// checked this session. Verified == Chunks means the data file is the
	// whole object and safe to hand out as it is (see AllVerified).
	Verified     int64
	BytesPresent int64
	BytesFetched int64 // bytes received from the Source this session
	Requests     int64 // Source.Fetch calls this session
	Active       int   // Source.Fetch calls in progress now
}

const (
	minChunkSize = 64 << 10
	maxChunkSize = 64 << 20
	// maxChunks bounds the in-memory bitsets (two bits per chunk, 32 MiB at
	// the limit); a larger file needs a larger chunk size.
	maxChunks = 1 << 27

	defaultMaxRequest = 16 << 20
	// defaultReadAheadMax lets the window reach two 1 MiB pieces per
	// connection up to -j 16 (readAheadWindow); below that the window is
	// set by the connection count. A large window costs no memory (it is
	// fetched into the sparse file), and after a seek read-ahead claims
	// nothing more, so at most the pieces already in flight are wasted.
	defaultReadAheadMax = 32 << 20
	// budgetReadAheadShare: under a cache size cap, read-ahead windows are
	// at most this fraction of the cap (at least one chunk).
	budgetReadAheadShare = 4
	defaultConnections   = 8

	// maxPartlyVerified bounds blockOK (a few MiB at most).
	maxPartlyVerified = 1 << 16
)

// File is one cached remote object: a sparse data file, its bbolt index and
// the scheduler that fills it from a Source. It is safe for concurrent use
// and valid until Close; after Close, reads, Fill and Verify return
// ErrClosed, StartPrefetch does nothing, and Meta, Discarded, DataPath,
// Stats and AllVerified still answer.
type File struct {
	meta      Meta
	lay       layout
	discarded string
	log       *slog.Logger
	onWait    func()

	// mu guards tab, and the scheduler's runs and plans (as scheduler.mu):
	// claiming a chunk changes both.
	mu    sync.Mutex
	tab   *chunkTable // every chunk's state (see chunkTable)
	st    *store      // the data file, the index and the committer
	sched *scheduler  // who fetches what, when
	bud   *fileBudget // nil without Options.Budget
	// sharedBud is the process's Budget this File holds (Options.Limits).
	sharedBud *Budget

	closeOnce sync.Once
	closeErr  error
}

// Open opens or creates the cache for the object m in dir and returns a File
// serving it from src. See the package contract for the directory rules. The
// caller must Close the File.
func Open(dir string, m Meta, src Source, o Options) (*File, error) {
	if err := validateMeta(m); err != nil {
		return nil, err
	}
	if src == nil {
		return nil, errors.New("cache: nil Source")
	}
	if o.Root != "" {
		if err := prepareRoot(o.Root); err != nil {
			return nil, err
		}
	}
	if err := prepareDir(dir, true); err != nil {
		return nil, err
	}
	if o.Budget == nil && o.Limits != nil {
		b, err := acquireBudget(o.Root, *o.Limits)
		if err != nil {
			return nil, err
		}
		o.Budget = b
		f, err := Open(dir, m, src, o)
		if err != nil {
			releaseBudget(b)
			return nil, err
		}
		f.sharedBud = b
		return f, nil
	}
	db, moved, err := openIndex(dir, nil)
	if err != nil {
		return nil, err
	}
	f, err := openWithIndex(dir, m, src, o, db, moved)
	var ce *corruptionError
	if err != nil && moved == "" && errors.As(err, &ce) {
		// bbolt opened the file but its pages were damaged: start over
		// with a fresh index, once.
		db.Close()
		db, moved, err = openIndex(dir, err)
		if err != nil {
			return nil, err
		}
		f, err = openWithIndex(dir, m, src, o, db, moved)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	openFiles.Store(f, new(readCounters))
	return f, nil
}

func validateMeta(m Meta) error {
	if m.ChunkSize < minChunkSize || m.ChunkSize > maxChunkSize || m.ChunkSize&(m.ChunkSize-1) != 0 {
		return fmt.Errorf("cache: chunk size %d is not a power of two in 64 KiB..64 MiB", m.ChunkSize)
	}
	if m.Size < 0 {
		return fmt.Errorf("cache: negative size %d", m.Size)
	}
	if n := newLayout(m.Size, m.ChunkSize).chunks; n > maxChunks {
		return fmt.Errorf("cache: %d chunks of %d bytes is too many; use a larger chunk size", n, m.ChunkSize)
	}
	return nil
}

// openWithIndex finishes Open once the index is locked. On error the caller
// closes db.
func openWithIndex(dir string, m Meta, src Source, o Options, db *bolt.DB, moved string) (*File, error) {
	f := &File{
		meta:   m,
		lay:    newLayout(m.Size, m.ChunkSize),
		log:    o.Logger,
		onWait: o.onWait,
		tab:    newChunkTable(newLayout(m.Size, m.ChunkSize)),
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	_, ownerErr := os.Lstat(filepath.Join(dir, ownerName)) // left behind: its holder died
	st, discarded, err := openStore(dir, m, f.lay, f.log, db, moved, o.wrapData, f.tab.load, f.durable)
	if err != nil {
		return nil, err
	}
	f.st, f.discarded = st, discarded
	if st.sealed != nil && !o.Scrub {
		// A clean close vouched for these chunks (see seal.go).
		for i := range f.lay.chunks {
			if f.tab.present.get(i) && st.sealed[i/64]&(1<<(i%64)) != 0 {
				f.tab.markVerified(i)
			}
		}
		st.sealed = nil
	}
	st.seal = func() bitset { return f.tab.verified }
	if o.Budget != nil {
		if f.bud, err = o.Budget.attach(f, dir, ownerErr == nil); err != nil {
			st.data.Close()
			return nil, err
		}
	}
	f.sched = newScheduler(&f.mu, f.tab, st, f.log, src, o, m, f.Verify)
	if f.bud != nil {
		f.sched.charge = f.bud.charge
	}
	st.start()
	return f, nil
}

// Meta returns the Meta the File was opened with.
func (f *File) Meta() Meta { return f.meta }

// Discarded returns why Open threw away an old cache in the directory, or ""
// if nothing was discarded.
func (f *File) Discarded() string { return f.discarded }

// DataPath returns the path of the sparse data file. Its bytes are valid
// only where Stats says chunks are present; once Present == Chunks and
// Verify returned nil, it is the whole object.
func (f *File) DataPath() string { return f.st.dataPath }

// Stats returns a snapshot of the File's counters.
func (f *File) Stats() Stats {
	f.mu.Lock()
	s := Stats{
		Size:         f.lay.size,
		ChunkSize:    f.lay.chunk,
		Chunks:       f.lay.chunks,
		Present:      f.tab.nPresent,
		Verified:     f.tab.nVerified,
		BytesPresent: f.tab.bytesPresent,
	}
	f.mu.Unlock()
	s.BytesFetched = f.sched.bytesFetched.Load()
	s.Requests = f.sched.requests.Load()
	s.Active = int(f.sched.active.Load())
	return s
}

// AllVerified reports whether every chunk is present and was verified this
// session (written by this process, or its checksum checked): the data file
// at DataPath then holds exactly the object, and stays so until Close, so a
// caller may serve it directly. It is a cheap check (one counter under the
// File's lock), meant to be called on every open. Safe for concurrent use.
func (f *File) AllVerified() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tab.nVerified == f.lay.chunks
}

// Close cancels fetches, waits for workers and calls in progress, commits
// the chunks already written, and closes the index and data file. It is
// idempotent; later calls return the first call's result.
func (f *File) Close() error {
	f.closeOnce.Do(func() {
		openFiles.Delete(f)
		f.sched.close()
		// The writers are done: commit what they left before the budget
		// punches the holes of chunks charged but not present, or it
		// would punch chunks written whole and still waiting for their
		// group commit, which the store's close then records and seals
		// (TestCloseCommitsBeforeBudgetPunches).
		f.st.com.stop()
		var berr error
		if f.bud != nil {
			berr = f.bud.detach()
		}
		f.closeErr = errors.Join(f.st.close(), berr)
		if f.sharedBud != nil {
			f.closeErr = errors.Join(f.closeErr, releaseBudget(f.sharedBud))
		}
	})
	return f.closeErr
}

// enterPinned is enter for a read that serves chunks [first, end): they are
// pinned until leavePinned.
func (f *File) enterPinned(first, end int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.sched.enterLocked(); err != nil {
		return err
	}
	f.tab.pin(first, end)
	if f.bud != nil {
		f.bud.touchLocked(first, end)
	}
	return nil
}

// leavePinned ends what enterPinned began.
func (f *File) leavePinned(first, end int64) {
	f.mu.Lock()
	f.tab.unpin(first, end)
	f.mu.Unlock()
	f.sched.wg.Done()
}

// enter registers a call that touches the store, so Close waits for it;
// the caller ends it with f.sched.wg.Done.
func (f *File) enter() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sched.enterLocked()
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
	defer f.sched.wg.Done()
	return f.sched.fill(ctx, prioBulk, f.sched.pool.capacity)
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
	if f.bud != nil && f.bud.b.max > 0 && f.lay.size > f.bud.b.max/2 {
		// It would only evict what readers fetched.
		return
	}
	f.sched.startPrefetch()
}

// PinAll pins every chunk of the file until UnpinAll: the budget evicts
// none of them (FUSE passthrough: the kernel reads the data file itself, and
// a punched hole would read as zeros). Check AllVerified after PinAll to
// know the whole file is there and stays. Calls nest. Without a budget it
// does nothing.
func (f *File) PinAll() {
	if f.bud != nil {
		f.mu.Lock()
		f.bud.pinAll++
		f.mu.Unlock()
	}
}

// UnpinAll undoes one PinAll.
func (f *File) UnpinAll() {
	if f.bud != nil {
		f.mu.Lock()
		if f.bud.pinAll > 0 {
			f.bud.pinAll--
		}
		f.mu.Unlock()
	}
}

// durable is the committer's report of a round (see committer): the chunks
// of batch are committed, or, if err is not nil, failed with it.
func (f *File) durable(batch []commitRec, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range batch {
		if err == nil {
			f.tab.commit(r.i)
		} else {
			f.tab.fail(r.i, err)
		}
	}
}
