package main

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"rangefs/cache"
	"rangefs/fetch"
	"rangefs/fs"
)

// objects opens the caches of tree files on first use and closes them when
// idle, so a tree of 10,000 files holds descriptors only for the files in
// use and a few recently used: a cache is closed idleClose after its last
// reader closed, or at once when more than maxIdle caches are idle (oldest
// first).
//
// A slot is one cache directory (one remote identity). When a file is
// opened in a version other than the one its slot holds (a listing or a
// probe showed a new ETag, size or mtime), the old cache is closed and its
// readers answer ESTALE from then on: one directory cannot hold two versions.
//
// Safe for concurrent use. Lock order: slot.mu, then objects.mu.
// Protects (mu): slots, idle, every slot's users, elem and idleGen, closed.
type objects struct {
	c        *mountConfig
	pool     *cache.Pool
	log      *slog.Logger
	maxIdle  int
	idleTime time.Duration

	mu     sync.Mutex
	slots  map[string]*slot
	idle   *list.List // of *slot with no users, least recently used first
	closed bool
}

const (
	defaultMaxIdle   = 32
	defaultIdleClose = 30 * time.Second
)

func newObjects(c *mountConfig, pool *cache.Pool, log *slog.Logger) *objects {
	return &objects{c: c, pool: pool, log: log, maxIdle: defaultMaxIdle, idleTime: defaultIdleClose,
		slots: map[string]*slot{}, idle: list.New()}
}

// slot is one cache directory. Protects (mu): file, version, gen.
type slot struct {
	dir string

	mu      sync.Mutex
	file    *cache.File  // open, or nil
	version string       // the Meta file was opened with
	gen     *atomic.Bool // set when file is closed for a newer version
	owner   *treeFile    // the file that opened it, for the SHA256 check

	last atomic.Pointer[cache.File] // the latest file, open or closed, for Stats

	// guarded by objects.mu
	users   int
	elem    *list.Element
	idleGen int
}

// errSuperseded is what readers of an old version get once a newer one
// was opened: ESTALE, as for any remote change.
var errSuperseded = fmt.Errorf("%w: a newer version of the file was opened", cache.ErrStale)

// open returns a reader of f's cache for the version o, probed at rawURL.
func (t *objects) open(f *treeFile, o *fetch.Object, rawURL string) (fs.Reader, error) {
	id := cacheIdentity(o, rawURL, t.c.VolatileQuery)
	meta := metaOf(t.c, o)
	version := meta.ETag + "\x00" + meta.WeakETag + "\x00" + meta.LastModified + "\x00" + strconv.FormatInt(meta.Size, 10)
	dir := filepath.Join(t.c.CacheDir, cache.DirName(id))

	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, cache.ErrClosed
	}
	s := t.slots[dir]
	if s == nil {
		s = &slot{dir: dir}
		t.slots[dir] = s
	}
	t.useLocked(s)
	t.mu.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file != nil && s.version != version {
		s.gen.Store(true)
		t.log.Info("a newer version of a file was opened; readers of the old one get ESTALE", "url", o.URL())
		if err := s.file.Close(); err != nil {
			t.log.Warn("closing cache", "url", o.URL(), "err", err)
		}
		s.file = nil
	}
	if s.file == nil {
		cf, err := cache.Open(dir, meta, o, cache.Options{Pool: t.pool, Logger: t.log, Root: t.c.CacheDir, Limits: t.c.Budget.limits(t.log)})
		if err != nil {
			t.release(s)
			return nil, fmt.Errorf("%s: %w", o.URL(), err)
		}
		if why := cf.Discarded(); why != "" {
			t.log.Info("discarded cached data", "url", o.URL(), "why", why)
		}
		s.file, s.version, s.gen, s.owner = cf, version, new(atomic.Bool), f
		s.last.Store(cf)
		if !t.c.NoPrefetch {
			cf.StartPrefetch()
		}
	}
	f.slot.Store(s)
	return &treeReader{Reader: fs.NewCacheReader(s.file), file: s.file, gen: s.gen, s: s, t: t, f: f, obj: o}, nil
}

// useLocked counts a user of s, taking it off the idle list.
func (t *objects) useLocked(s *slot) {
	s.users++
	if s.elem != nil {
		t.idle.Remove(s.elem)
		s.elem = nil
	}
	s.idleGen++
}

// release uncounts a user; the last one puts s on the idle list, closing
// the oldest idle caches beyond maxIdle now and s after idleTime.
func (t *objects) release(s *slot) {
	t.mu.Lock()
	s.users--
	if s.users > 0 || t.closed {
		t.mu.Unlock()
		return
	}
	s.idleGen++
	gen := s.idleGen
	s.elem = t.idle.PushBack(s)
	var evict []*slot
	for t.idle.Len() > t.maxIdle {
		old := t.idle.Remove(t.idle.Front()).(*slot)
		old.elem = nil
		old.idleGen++
		evict = append(evict, old)
	}
	t.mu.Unlock()
	for _, old := range evict {
		t.closeSlot(old)
	}
	time.AfterFunc(t.idleTime, func() {
		t.mu.Lock()
		still := s.users == 0 && s.idleGen == gen && !t.closed
		if still {
			t.idle.Remove(s.elem)
			s.elem = nil
		}
		t.mu.Unlock()
		if still {
			t.closeSlot(s)
		}
	})
}

// closeSlot closes an idle slot's cache, checking a declared SHA256 first
// when the file is complete.
func (t *objects) closeSlot(s *slot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t.mu.Lock()
	inUse := s.users > 0
	t.mu.Unlock()
	if inUse || s.file == nil {
		return
	}
	if s.owner != nil {
		s.owner.sha.checkIfComplete(s.owner, s.file, t.log)
	}
	if err := s.file.Close(); err != nil {
		t.log.Warn("closing cache", "dir", s.dir, "err", err)
	}
	s.file = nil
}

// close closes every cache, open readers' included (their reads then fail
// at once, which is how a shutdown ends waiting reads). Later opens fail.
func (t *objects) close() {
	t.mu.Lock()
	t.closed = true
	slots := make([]*slot, 0, len(t.slots))
	for _, s := range t.slots {
		slots = append(slots, s)
	}
	t.mu.Unlock()
	for _, s := range slots {
		s.mu.Lock()
		if s.file != nil {
			if err := s.file.Close(); err != nil {
				t.log.Warn("closing cache", "dir", s.dir, "err", err)
			}
			s.file = nil
		}
		s.mu.Unlock()
	}
}

// openCount is the number of open caches (for tests).
func (t *objects) openCount() int {
	t.mu.Lock()
	slots := make([]*slot, 0, len(t.slots))
	for _, s := range t.slots {
		slots = append(slots, s)
	}
	t.mu.Unlock()
	n := 0
	for _, s := range slots {
		s.mu.Lock()
		if s.file != nil {
			n++
		}
		s.mu.Unlock()
	}
	return n
}

// treeReader is one open handle of a tree file.
type treeReader struct {
	fs.Reader
	file *cache.File
	gen  *atomic.Bool
	s    *slot
	t    *objects
	f    *treeFile
	obj  *fetch.Object
	once sync.Once
}

var (
	_ fs.Filling    = (*treeReader)(nil)
	_ fs.HeldReader = (*treeReader)(nil)
)

func (r *treeReader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, _, err := r.read(ctx, p, off, false)
	return n, err
}

// ReadHeld is ReadAt, leaving the bytes in the cache when it can (see
// fs.HeldReader).
func (r *treeReader) ReadHeld(ctx context.Context, p []byte, off int64) (int, *cache.Held, error) {
	return r.read(ctx, p, off, true)
}

func (r *treeReader) read(ctx context.Context, p []byte, off int64, hold bool) (n int, h *cache.Held, err error) {
	if r.gen.Load() {
		return 0, nil, errSuperseded
	}
	if r.f.sha.failed() {
		return 0, nil, errSHA256Mismatch
	}
	if hr, ok := r.Reader.(fs.HeldReader); ok && hold {
		n, h, err = hr.ReadHeld(ctx, p, off)
	} else {
		n, err = r.Reader.ReadAt(ctx, p, off)
	}
	if err != nil && err != io.EOF {
		if r.gen.Load() {
			return 0, nil, errSuperseded
		}
		if errors.Is(err, cache.ErrStale) {
			r.f.reprobe(r.obj) // the next open learns the new version
		}
	}
	return n, h, err
}

// Filling is the cache's (see fs.Filling): a tree file not all cached is
// read with direct I/O like a file named on the command line.
func (r *treeReader) Filling() bool {
	f, ok := r.Reader.(fs.Filling)
	return ok && f.Filling()
}

func (r *treeReader) PassthroughPath() string {
	if r.gen.Load() || r.f.sha.failed() {
		return ""
	}
	return r.Reader.PassthroughPath()
}

func (r *treeReader) Close() error {
	r.once.Do(func() {
		if !r.gen.Load() && r.f.sha.pending() {
			if st := r.file.Stats(); st.Present == st.Chunks {
				r.t.checkSHA256(r.f, r.s)
			}
		}
		r.t.release(r.s)
	})
	return nil
}

// checkSHA256 checks f's declared digest in the background if its cache in
// s is open, holding the slot open meanwhile.
func (t *objects) checkSHA256(f *treeFile, s *slot) {
	t.mu.Lock()
	if t.closed || s.users == 0 && s.elem == nil {
		t.mu.Unlock()
		return // closed, or being closed: the check runs at the next open
	}
	t.useLocked(s)
	t.mu.Unlock()
	go func() {
		defer t.release(s)
		s.mu.Lock()
		cf := s.file
		s.mu.Unlock()
		if cf != nil {
			f.sha.checkIfComplete(f, cf, t.log)
		}
	}()
}

// errSHA256Mismatch fails every read of a file whose complete content does
// not match the digest its manifest declared.
var errSHA256Mismatch = errors.New("the file's content does not match the SHA256 its manifest declares")

// shaCheck is the state of a file's declared-SHA256 check: pending until
// the file is completely cached, then ok or mismatch. Safe for concurrent use.
type shaCheck struct {
	state atomic.Int32 // shaPending, shaRunning, shaOK, shaMismatch
	got   atomic.Pointer[string]
}

const (
	shaPending int32 = iota
	shaRunning
	shaOK
	shaMismatch
)

func (c *shaCheck) pending() bool { return c.state.Load() == shaPending }
func (c *shaCheck) failed() bool  { return c.state.Load() == shaMismatch }

func (c *shaCheck) String() string {
	switch c.state.Load() {
	case shaOK:
		return "ok"
	case shaMismatch:
		return "mismatch: the content's SHA256 is " + *c.got.Load()
	}
	return "pending (checked once the file is completely cached)"
}

// checkIfComplete hashes cf when it holds the whole file and the check has
// not run. cf must stay open meanwhile (the caller holds its slot).
func (c *shaCheck) checkIfComplete(f *treeFile, cf *cache.File, log *slog.Logger) {
	st := cf.Stats()
	if f.e.SHA256 == "" || st.Present != st.Chunks || !c.state.CompareAndSwap(shaPending, shaRunning) {
		return
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var off int64
	for off < st.Size {
		n, err := cf.ReadAt(context.Background(), buf, off)
		h.Write(buf[:n])
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			// Not a verdict on the content: try again next time.
			log.Warn("could not check the declared SHA256", "url", cf.Meta().URL, "err", err)
			c.state.Store(shaPending)
			return
		}
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got == f.e.SHA256 {
		c.state.Store(shaOK)
		return
	}
	c.got.Store(&got)
	c.state.Store(shaMismatch)
	log.Error("a file does not match the SHA256 its manifest declares; its reads fail with EIO",
		"url", cf.Meta().URL, "want", f.e.SHA256, "got", got)
}
