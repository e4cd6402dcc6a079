package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
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
}

// Options tune a File. The zero value is usable.
type Options struct {
	Pool         *Pool        // nil: a private NewPool(8)
	MaxRequest   int64        // max bytes of adjacent missing chunks in one Source.Fetch; default 16 MiB
	ReadAheadMax int64        // cap of a Reader's read-ahead window; default 32 MiB (see readAheadWindow)
	Logger       *slog.Logger // nil: discard
	// Root, if set, is the cache root that holds dir (one directory per
	// object, as a mount's --cache-dir). Open creates it 0700 if missing
	// and refuses one that is not a directory, not ours, or writable by
	// group or others, like dir itself. A symlink to such a root is
	// followed (the user may keep the cache on another disk); dir, inside
	// it, never is.
	Root string

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
	defaultConnections  = 8

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
	dir       string
	dataPath  string
	discarded string
	src       Source
	pool      *Pool
	maxReq    int64 // chunks per Source.Fetch
	raWin     int64 // largest read-ahead window, in chunks
	log       *slog.Logger
	onWait    func()
	// stalledAfter: a run silent this long is not streaming (see run).
	stalledAfter time.Duration

	db   *bolt.DB
	data dataFile
	com  *committer

	// ctx governs every fetch; Close cancels it. Fetches never run on a
	// caller's ctx because other readers may be waiting on them.
	ctx    context.Context
	cancel context.CancelFunc

	// wg counts everything that may touch data or db: fetch jobs,
	// background workers and calls in progress. Close waits for it. Add is
	// only called under mu with closed false (see enter).
	wg sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	present  bitset            // chunk is in data and recorded in index.db (writes under mu)
	verified bitset            // present chunk's checksum was written or checked this session (writes under mu)
	inflight map[int64]*flight // chunks being fetched or verified
	// blockOK holds, for each present chunk that is verified only in
	// part this session, which of its blocks were checked (bit b of word
	// b/64). A chunk leaves it when it is verified whole or dropped; it
	// holds at most maxPartlyVerified chunks.
	blockOK      map[int64][]uint64
	nPresent     int64
	nVerified    int64 // present chunks with their verified bit set
	bytesPresent int64
	prefetching  bool
	// followAt is the chunk just past the read-ahead window of the
	// sequential Reader followBy (0: none), where prefetch looks first.
	followAt int64
	followBy *Reader

	closedFlag   atomic.Bool
	stale        atomic.Pointer[error] // set once: the error every later read returns
	degraded     atomic.Bool           // the data disk failed: no more caching
	bytesFetched atomic.Int64
	requests     atomic.Int64
	active       atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

// flight is the single-flight record of one chunk that is being fetched or
// verified. Waiters block on done; err is written before done is closed and
// read only after. A stolen chunk keeps its flight when it moves to the
// thief's run, so its waiters never notice.
type flight struct {
	done chan struct{}
	err  error
	run  *run // the run fetching the chunk; nil while verifying. Guarded by f.mu.
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
	if err := writeOwner(dir); err != nil {
		return nil, fmt.Errorf("cache: write owner file: %w", err)
	}
	dataPath := filepath.Join(dir, dataName)
	if err := refuseLink(dataPath); err != nil {
		return nil, err
	}
	df, err := openFileNoFollow(dataPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cache: open data file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			df.Close()
		}
	}()
	fi, err := df.Stat()
	if err != nil {
		return nil, err
	}
	dataLen := fi.Size()

	f := &File{
		meta:         m,
		lay:          newLayout(m.Size, m.ChunkSize),
		dir:          dir,
		dataPath:     dataPath,
		src:          src,
		pool:         o.Pool,
		maxReq:       max(1, o.MaxRequest/m.ChunkSize),
		log:          o.Logger,
		onWait:       o.onWait,
		stalledAfter: o.stalledAfter,
		db:           db,
		inflight:     make(map[int64]*flight),
		blockOK:      make(map[int64][]uint64),
	}
	if f.pool == nil {
		f.pool = NewPool(defaultConnections)
	}
	if o.MaxRequest <= 0 {
		f.maxReq = max(1, defaultMaxRequest/m.ChunkSize)
	}
	if f.stalledAfter <= 0 {
		f.stalledAfter = defaultStalledAfter
	}
	raMax := o.ReadAheadMax
	if raMax <= 0 {
		raMax = defaultReadAheadMax
	}
	f.raWin = readAheadWindow(raMax, m.ChunkSize, f.pool.limit)
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	f.present = newBitset(f.lay.chunks)
	f.verified = newBitset(f.lay.chunks)

	// Decide whether what is on disk belongs to m. Discarding happens in
	// the index first, then in the data file, so a crash in between leaves
	// an index that under-reports.
	var sm storedMeta
	var hasMeta bool
	if err := guarded(func() error {
		return db.View(func(tx *bolt.Tx) error { sm, hasMeta = readMeta(tx); return nil })
	}); err != nil {
		return nil, err
	}
	switch {
	case moved != "":
		f.discarded = fmt.Sprintf("cache index was unreadable; moved aside to %s and rebuilt", filepath.Base(moved))
	case hasMeta:
		f.discarded = metaMismatch(sm, m)
	}
	if !hasMeta || f.discarded != "" {
		if err := db.Update(func(tx *bolt.Tx) error { return writeMeta(tx, m) }); err != nil {
			return nil, fmt.Errorf("cache: write index: %w", err)
		}
		if dataLen > 0 {
			nf, err := replaceData(df, dataPath)
			if err != nil {
				return nil, fmt.Errorf("cache: discard data: %w", err)
			}
			df, dataLen = nf, 0
		}
	}
	if f.discarded != "" {
		f.log.Info("discarded old cache", "dir", dir, "reason", f.discarded)
	}
	if err := f.loadChunks(dataLen); err != nil {
		return nil, err
	}
	if dataLen != m.Size {
		if err := df.Truncate(m.Size); err != nil {
			return nil, fmt.Errorf("cache: size data file: %w", err)
		}
	}

	f.data = osData{df}
	if o.wrapData != nil {
		f.data = o.wrapData(f.data)
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.com = newCommitter(f)
	go f.com.run()
	ok = true
	return f, nil
}

// replaceData discards the old data file df at path by unlinking it and
// creating an empty one in its place, and returns the new one; df is closed.
// The old file is never truncated or written: a handle another process still
// holds on it (a FUSE passthrough open outlives the daemon that gave it)
// keeps reading the version it was given, never zeros or the next version.
// Its blocks are freed when the last such handle closes.
func replaceData(df *os.File, path string) (*os.File, error) {
	df.Close()
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return openFileNoFollow(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
}

// loadChunks fills the present bitset from the chunks bucket with one cursor
// pass. Checksums are not read here (they are checked when a chunk is first
// served), so a cache with many chunks opens at once. Records that cannot be
// right, because the data file does not reach their chunk or the key is out
// of range, are deleted before anything is served.
func (f *File) loadChunks(dataLen int64) error {
	var drop [][]byte
	err := guarded(func() error {
		return f.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketChunks).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				i := int64(-1)
				if len(k) == 8 {
					i = int64(binary.BigEndian.Uint64(k))
				}
				if i < 0 || i >= f.lay.chunks || int64(len(v)) != 4*f.lay.blocks(i) {
					drop = append(drop, append([]byte(nil), k...))
					continue
				}
				if _, end := f.lay.bounds(i); end > dataLen {
					drop = append(drop, append([]byte(nil), k...))
					continue
				}
				f.present.set(i)
				f.nPresent++
				f.bytesPresent += f.lay.chunkLen(i)
			}
			return nil
		})
	})
	if err != nil || len(drop) == 0 {
		return err
	}
	f.log.Info("dropping index records without data", "dir", f.dir, "records", len(drop))
	return f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChunks)
		for _, k := range drop {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Meta returns the Meta the File was opened with.
func (f *File) Meta() Meta { return f.meta }

// Discarded returns why Open threw away an old cache in the directory, or ""
// if nothing was discarded.
func (f *File) Discarded() string { return f.discarded }

// DataPath returns the path of the sparse data file. Its bytes are valid
// only where Stats says chunks are present; once Present == Chunks and
// Verify returned nil, it is the whole object.
func (f *File) DataPath() string { return f.dataPath }

// Stats returns a snapshot of the File's counters.
func (f *File) Stats() Stats {
	f.mu.Lock()
	s := Stats{
		Size:         f.lay.size,
		ChunkSize:    f.lay.chunk,
		Chunks:       f.lay.chunks,
		Present:      f.nPresent,
		Verified:     f.nVerified,
		BytesPresent: f.bytesPresent,
	}
	f.mu.Unlock()
	s.BytesFetched = f.bytesFetched.Load()
	s.Requests = f.requests.Load()
	s.Active = int(f.active.Load())
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
	return f.nVerified == f.lay.chunks
}

// Close cancels fetches, waits for workers and calls in progress, commits
// the chunks already written, and closes the index and data file. It is
// idempotent; later calls return the first call's result.
func (f *File) Close() error {
	f.closeOnce.Do(func() {
		f.mu.Lock()
		f.closed = true
		f.mu.Unlock()
		f.closedFlag.Store(true)
		f.cancel()
		f.wg.Wait()
		f.com.stop()
		errs := []error{}
		if err := os.Remove(filepath.Join(f.dir, ownerName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		errs = append(errs, f.db.Close(), f.data.Close())
		f.closeErr = errors.Join(errs...)
	})
	return f.closeErr
}

// enterLocked registers an operation that touches data or db, so Close
// waits for it. It fails once Close has begun. f.mu must be held.
func (f *File) enterLocked() error {
	if f.closed {
		return ErrClosed
	}
	f.wg.Add(1)
	return nil
}

func (f *File) enter() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.enterLocked()
}

// usable returns the error every read must fail with now, if any.
func (f *File) usable() error {
	if f.closedFlag.Load() {
		return ErrClosed
	}
	if p := f.stale.Load(); p != nil {
		return *p
	}
	return nil
}

// markStale records that the remote changed. The first cause wins.
func (f *File) markStale(cause error) error {
	err := staleError(cause)
	if f.stale.CompareAndSwap(nil, &err) {
		f.log.Warn("remote file changed; cached handle is stale", "url", f.meta.URL, "err", cause)
	}
	return *f.stale.Load()
}

// degrade stops caching after a disk failure. Reads keep working from the
// network (and from chunks already committed); it logs once.
func (f *File) degrade(err error) {
	if f.degraded.CompareAndSwap(false, true) {
		f.log.Error("cache disk failed; serving uncached from now on", "dir", f.dir, "err", err)
	}
}

// resolveLocked ends the flight of chunk i with err and wakes its waiters.
// f.mu is held.
func (f *File) resolveLocked(i int64, err error) {
	fl := f.inflight[i]
	if fl == nil {
		return
	}
	delete(f.inflight, i)
	fl.err = err
	close(fl.done)
}

// markPresentLocked flips chunk i to present and verified. f.mu is held.
func (f *File) markPresentLocked(i int64) {
	if !f.present.get(i) {
		f.present.set(i)
		f.nPresent++
		f.bytesPresent += f.lay.chunkLen(i)
	}
	f.markVerifiedLocked(i)
}

// markVerifiedLocked records that present chunk i matches its checksum.
// f.mu is held.
func (f *File) markVerifiedLocked(i int64) {
	if !f.verified.get(i) {
		f.verified.set(i)
		f.nVerified++
	}
	delete(f.blockOK, i)
}

// blocksVerifiedLocked reports whether blocks [b0, b1) of present chunk i
// were checked this session (all of them are once the chunk is verified).
// f.mu is held.
func (f *File) blocksVerifiedLocked(i, b0, b1 int64) bool {
	if f.verified.get(i) {
		return true
	}
	ok := f.blockOK[i]
	if ok == nil {
		return false
	}
	for b := b0; b < b1; b++ {
		if ok[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

// markBlocksVerifiedLocked records that blocks [b0, b1) of present chunk i
// match their checksums, and marks the chunk verified once all do. f.mu is
// held.
func (f *File) markBlocksVerifiedLocked(i, b0, b1 int64) {
	if f.verified.get(i) {
		return
	}
	nb := f.lay.blocks(i)
	ok := f.blockOK[i]
	if ok == nil {
		if len(f.blockOK) >= maxPartlyVerified {
			// Forgetting which blocks were checked only means checking
			// them again; it keeps this map from growing with the file.
			clear(f.blockOK)
		}
		ok = make([]uint64, (nb+63)/64)
		f.blockOK[i] = ok
	}
	for b := b0; b < b1; b++ {
		ok[b/64] |= 1 << (b % 64)
	}
	for b := int64(0); b < nb; b++ {
		if ok[b/64]&(1<<(b%64)) == 0 {
			return
		}
	}
	f.markVerifiedLocked(i)
}

// dropLocked forgets chunk i in memory. f.mu is held.
func (f *File) dropLocked(i int64) {
	if f.present.get(i) {
		f.present.clear(i)
		f.nPresent--
		f.bytesPresent -= f.lay.chunkLen(i)
	}
	if f.verified.get(i) {
		f.verified.clear(i)
		f.nVerified--
	}
	delete(f.blockOK, i)
}
