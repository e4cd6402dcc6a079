package cache

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Budget bounds the bytes that every object under one cache root keeps on
// disk (Options.Budget). One Budget serves every File of a process under
// that root; processes sharing the root share its ledger (see ledger).
//
// The promise: a chunk's bytes are reserved before the first of them is
// written (runWriter, at each chunk's start), out of a slab the process took
// from the ledger, so the data files under the root never hold more than
// the limit, plus what the index and ledger files take. When the
// reservation does not fit, the budget evicts; when nothing can be evicted
// (every chunk is pinned, or held by another process), the chunk is not
// stored: the read is served straight from the network into the reader's
// buffer, and the log says so once.
//
// Eviction order (segmented LRU in the manner of 2Q): a chunk fetched and
// read once is on probation; a chunk read again, at least promoteAfter after
// it was first read, is protected. Probation chunks go first, oldest first
// (a sequential scan larger than the cache evicts its own chunks), then
// protected ones and closed objects, least recently used first, compared
// by their last use across every object; when probation is down to a
// quarter of the limit, everything is in one LRU order. A chunk fetched by
// read-ahead or prefetch and not read yet counts as on probation, read at
// its fetch. A closed object is removed whole. Pinned chunks are never
// evicted: chunks a read is serving, chunks in flight, and every chunk of a
// file pinned whole (File.PinAll, for FUSE passthrough).
type Budget struct {
	root         string
	max          int64 // 0: no size limit
	minFree      int64 // bytes to leave free on the root's file system
	minFreePct   float64
	log          *slog.Logger
	promoteAfter uint32 // seconds
	me           string // ledger key: pid-nonce
	procLock     *os.File

	mu           sync.Mutex // taken before any File.mu, never under one
	files        map[*fileBudget]struct{}
	slab         int64 // reserved in the ledger, not charged to a chunk yet
	noRoomLogged bool
	closed       bool
	evictions    *atomic.Int64 // the process's count for root (rootEvictions)

	flushEvery time.Duration
	flushKick  chan struct{} // a file has useFlushStamps unsaved stamps
	flushStop  chan struct{} // closed by stopFlusher
	flushDone  chan struct{} // closed when the flusher has returned
	stopOnce   sync.Once
}

// BudgetOptions configure NewBudget.
type BudgetOptions struct {
	MaxSize int64 // bytes under the root; 0: no limit
	// MinFree is how much the root's file system keeps free, in bytes;
	// MinFreePercent, if MinFree is 0, the same as a share of its size.
	MinFree        int64
	MinFreePercent float64
	Logger         *slog.Logger
	// PromoteAfter is how long after its first read a chunk must be read
	// again to be protected; default 2 s. Tests set it.
	PromoteAfter time.Duration
	// UseFlushEvery is how often the use stamps that changed are saved to
	// the objects' indexes while they are open (and the ledger brought up
	// to date); default 30 s. They are also saved once useFlushStamps of
	// them changed, and all of them at each close. Tests shorten it.
	UseFlushEvery time.Duration
}

const (
	// slabMax bounds the bytes a process reserves in the ledger at a time
	// beyond its current chunk.
	slabMax        = 8 << 20
	defaultPromote = 2 * time.Second
	// Use stamps are saved every defaultUseFlush (BudgetOptions), or
	// sooner once useFlushStamps of one file's changed.
	defaultUseFlush = 30 * time.Second
	useFlushStamps  = 1 << 16
	useHot          = 1 << 31 // protected
	useUnread       = 1 << 30 // fetched ahead, not read yet
	useStampMask    = useUnread - 1
	useEpochSeconds = 1735689600 // 2025-01-01T00:00:00Z; stamps count seconds from it
)

// BudgetUsage is a snapshot of a root's use (Budget.Usage).
type BudgetUsage struct {
	Used, Limit int64 // bytes; Limit 0: none
	Objects     int
	// Evictions counts the chunks and objects this process evicted under
	// the root since it began (across every Budget it opened for it).
	Evictions int64
	// MinFree is the free space kept on the root's file system, in bytes
	// (MinFreePercent of its size, when that is how it was given).
	MinFree        int64
	MinFreePercent float64
	// Pinned is the bytes of this process's cached chunks that cannot be
	// evicted now: being read, in flight, or of a file pinned whole.
	Pinned int64
}

// rootEvictions holds each root's eviction count for this process, so that
// it runs on from one Budget of the root to the next (a mount's files may
// all close and open again).
var rootEvictions sync.Map // clean root → *atomic.Int64

func evictionCounter(root string) *atomic.Int64 {
	v, _ := rootEvictions.LoadOrStore(filepath.Clean(root), new(atomic.Int64))
	return v.(*atomic.Int64)
}

// RootEvictions returns how many chunks and objects this process evicted
// under root since it began.
func RootEvictions(root string) int64 { return evictionCounter(root).Load() }

// Evictions returns RootEvictions of every root this process evicted under.
func Evictions() map[string]int64 {
	out := map[string]int64{}
	rootEvictions.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

// NewBudget opens the budget of root (created 0700 if missing). It reads
// the ledger (one small file): the root is scanned only when there is no
// ledger yet. Close it after every File that uses it.
func NewBudget(root string, o BudgetOptions) (*Budget, error) {
	if o.MaxSize < 0 || o.MinFree < 0 || o.MinFreePercent < 0 || o.MinFreePercent >= 100 {
		return nil, fmt.Errorf("cache budget: bad limits (max %d, min free %d / %.1f%%)", o.MaxSize, o.MinFree, o.MinFreePercent)
	}
	if err := prepareRoot(root); err != nil {
		return nil, err
	}
	b := &Budget{root: root, max: o.MaxSize, minFree: o.MinFree, minFreePct: o.MinFreePercent,
		log: o.Logger, files: map[*fileBudget]struct{}{}, evictions: evictionCounter(root)}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	pa := o.PromoteAfter
	if pa == 0 {
		pa = defaultPromote
	}
	b.promoteAfter = uint32(pa / time.Second)
	b.flushEvery = o.UseFlushEvery
	if b.flushEvery <= 0 {
		b.flushEvery = defaultUseFlush
	}
	var nonce [6]byte
	rand.Read(nonce[:])
	b.me = strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(nonce[:])
	if err := os.MkdirAll(filepath.Join(root, budgetDirName, procsDirName), 0o700); err != nil {
		return nil, fmt.Errorf("cache budget: %w", err)
	}
	lf, err := openFileNoFollow(filepath.Join(root, budgetDirName, procsDirName, b.me), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cache budget: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("cache budget: lock: %w", err)
	}
	b.procLock = lf
	err = withLedger(root, func(l *ledger) error {
		reclaimDead(root, l, b.me)
		l.Procs[b.me] = &ledgerProc{PID: os.Getpid()}
		return nil
	})
	if err != nil {
		lf.Close()
		os.Remove(lf.Name())
		return nil, err
	}
	b.flushKick = make(chan struct{}, 1)
	b.flushStop = make(chan struct{})
	b.flushDone = make(chan struct{})
	go b.flusher()
	return b, nil
}

// flusher saves the use stamps that changed, every flushEvery and when a
// file has many unsaved ones (flushKick), so that a process killed without
// a Close loses at most that much of its recency. On each tick it also
// writes this process's numbers into the ledger.
func (b *Budget) flusher() {
	defer close(b.flushDone)
	t := time.NewTicker(b.flushEvery)
	defer t.Stop()
	for {
		tick := false
		select {
		case <-b.flushStop:
			return
		case <-b.flushKick:
		case <-t.C:
			tick = true
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return
		}
		fbs := make([]*fileBudget, 0, len(b.files))
		for fb := range b.files {
			fbs = append(fbs, fb)
		}
		if tick {
			if err := withLedger(b.root, func(l *ledger) error { b.syncLocked(l); return nil }); err != nil {
				b.log.Debug("cache budget: ledger update", "root", b.root, "err", err)
			}
		}
		b.mu.Unlock()
		for _, fb := range fbs {
			fb.flushUse()
		}
	}
}

// stopFlusher stops the flusher and waits for it (b.mu not held).
func (b *Budget) stopFlusher() {
	b.stopOnce.Do(func() { close(b.flushStop) })
	<-b.flushDone
}

// Root returns the cache root the budget bounds.
func (b *Budget) Root() string { return b.root }

// Limit returns the size limit (0: none).
func (b *Budget) Limit() int64 { return b.max }

// Close gives the process's unused reservation back and releases its lock.
// Files using the Budget should be closed first.
func (b *Budget) Close() error {
	b.stopFlusher()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	err := withLedger(b.root, func(l *ledger) error {
		b.syncLocked(l)
		delete(l.Procs, b.me)
		return nil
	})
	b.slab = 0
	os.Remove(b.procLock.Name())
	b.procLock.Close()
	return err
}

// Usage reports the root's use as the ledger has it now.
func (b *Budget) Usage() (BudgetUsage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	u := BudgetUsage{Limit: b.max, Evictions: b.evictions.Load(), MinFree: b.minFree, MinFreePercent: b.minFreePct}
	if u.MinFree == 0 && u.MinFreePercent > 0 {
		var st syscall.Statfs_t
		if syscall.Statfs(b.root, &st) == nil {
			u.MinFree = int64(u.MinFreePercent / 100 * float64(int64(st.Blocks)*int64(st.Bsize)))
		}
	}
	for fb := range b.files {
		u.Pinned += fb.pinnedBytes()
	}
	err := withLedger(b.root, func(l *ledger) error {
		b.syncLocked(l)
		u.Used, u.Objects = l.total(), len(l.Objects)
		return nil
	})
	return u, err
}

// pinnedBytes returns the bytes of fb's charged chunks that eviction may not
// take now.
func (fb *fileBudget) pinnedBytes() int64 {
	f := fb.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if fb.pinAll > 0 {
		return fb.chargedBytes
	}
	var n int64
	for i := range f.tab.flights {
		if fb.charged.get(i) {
			n += f.lay.chunkLen(i)
		}
	}
	for i, c := range f.tab.pins {
		if c > 0 && f.tab.flights[i] == nil && fb.charged.get(i) {
			n += f.lay.chunkLen(i)
		}
	}
	return n
}

func nowStamp() uint32 { return uint32(time.Now().Unix()-useEpochSeconds) & useStampMask }

// syncLocked writes this process's numbers into l: each open object's
// charged bytes and last use, and the slab. b.mu is held.
func (b *Budget) syncLocked(l *ledger) {
	for fb := range b.files {
		fb.f.mu.Lock()
		bytes, last := fb.chargedBytes, fb.lastUse
		fb.f.mu.Unlock()
		o := l.object(fb.name)
		o.URL, o.Size, o.Bytes, o.Holder = fb.f.meta.URL, fb.f.meta.Size, bytes, b.me
		if last != 0 {
			o.LastUse = int64(last) + useEpochSeconds
		}
	}
	l.Procs[b.me] = &ledgerProc{PID: os.Getpid(), Slab: b.slab, Limit: b.max}
}

// overLocked returns by how much reserving want more bytes would pass the
// limits, given the ledger total.
func (b *Budget) overLocked(total, want int64) int64 {
	over := int64(-1)
	if b.max > 0 {
		over = total + want - b.max
	}
	if b.minFree > 0 || b.minFreePct > 0 {
		var st syscall.Statfs_t
		if syscall.Statfs(b.root, &st) == nil {
			avail := int64(st.Bavail) * int64(st.Bsize)
			keep := b.minFree
			if keep == 0 {
				keep = int64(b.minFreePct / 100 * float64(int64(st.Blocks)*int64(st.Bsize)))
			}
			// Slabs are reserved but not written yet: they will take
			// their share of the free space.
			over = max(over, keep-(avail-b.slab-want))
		}
	}
	return over
}

// take reserves n bytes for a chunk about to be written, evicting to make
// room, and reports whether it could.
func (b *Budget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	if b.slab >= n {
		b.slab -= n
		return true
	}
	// The slab: a sixteenth of the limit, at most slabMax (without a size
	// limit, slabMax), so the ledger is locked once per several chunks.
	want := n + slabMax
	if b.max > 0 {
		want = n + min(slabMax, max(b.max/16, n))
		want = min(want, max(n, b.max/8))
	}
	for attempt := range 6 {
		var over int64
		var closed []closedObject
		err := withLedger(b.root, func(l *ledger) error {
			if attempt > 0 {
				reclaimDead(b.root, l, b.me)
			}
			b.syncLocked(l)
			if over = b.overLocked(l.total(), want); over <= 0 {
				b.slab += want
				l.Procs[b.me].Slab = b.slab
				return nil
			}
			closed = closedObjects(l, b)
			return nil
		})
		if err != nil {
			b.noRoomOnce(err.Error())
			return false
		}
		if over <= 0 {
			b.slab -= n
			return true
		}
		if want > n {
			// Try without the slab before evicting for it.
			want = n
			continue
		}
		if b.evictLocked(over, closed) == 0 && attempt > 1 {
			break
		}
	}
	b.noRoomOnce("nothing can be evicted: every cached chunk is pinned or held by another process")
	return false
}

func (b *Budget) noRoomOnce(why string) {
	if !b.noRoomLogged {
		b.noRoomLogged = true
		b.log.Warn("cache budget full; serving reads uncached until room is made", "root", b.root, "reason", why)
	}
}

// closedObject is an object no process holds open, as the ledger has it.
type closedObject struct {
	name    string
	bytes   int64
	lastUse int64
}

func closedObjects(l *ledger, b *Budget) []closedObject {
	mine := map[string]bool{}
	for fb := range b.files {
		mine[fb.name] = true
	}
	var out []closedObject
	for name, o := range l.Objects {
		if o.Holder == "" && !mine[name] {
			out = append(out, closedObject{name, o.Bytes, o.LastUse})
		}
	}
	return out
}

// candidate is one thing eviction may take: a chunk of an open File, or a
// closed object (fb nil).
type candidate struct {
	fb    *fileBudget
	i     int64
	name  string
	bytes int64
	hot   bool
	stamp uint32
}

// evictLocked frees at least need bytes if it can (a little more, so the
// next reservations find room) and returns how many it freed. b.mu is held.
func (b *Budget) evictLocked(need int64, closed []closedObject) int64 {
	target := need
	if b.max > 0 {
		target = max(need, min(b.max/32, slabMax))
	}
	var cands []candidate
	var probation int64
	for fb := range b.files {
		f := fb.f
		f.mu.Lock()
		if fb.pinAll == 0 {
			for i := range f.lay.chunks {
				// Charged and not in flight: recorded, or fetched in part
				// (some blocks in the data file, no record), or left by a
				// failed fetch. The whole chunk is charged in every case.
				if !fb.charged.get(i) || f.tab.flights[i] != nil || f.tab.pins[i] > 0 {
					continue
				}
				u := fb.use[i]
				c := candidate{fb: fb, i: i, bytes: f.lay.chunkLen(i), hot: u&useHot != 0, stamp: u & useStampMask}
				if !c.hot {
					probation += c.bytes
				}
				cands = append(cands, c)
			}
		}
		f.mu.Unlock()
	}
	for _, o := range closed {
		s := max(0, o.lastUse-useEpochSeconds)
		cands = append(cands, candidate{name: o.name, bytes: o.bytes, hot: true, stamp: uint32(s) & useStampMask})
	}
	oneOrder := b.max > 0 && probation < b.max/4
	slices.SortStableFunc(cands, func(x, y candidate) int {
		if !oneOrder && x.hot != y.hot {
			if !x.hot {
				return -1
			}
			return 1
		}
		return int(int64(x.stamp) - int64(y.stamp))
	})
	var freed int64
	byFile := map[*fileBudget][]int64{}
	var planned int64
	for _, c := range cands {
		if planned >= target {
			break
		}
		if c.fb == nil {
			n, err := removeClosed(b.root, c.name, b.me)
			if err != nil {
				b.log.Warn("cache budget: could not remove object", "dir", c.name, "err", err)
				continue
			}
			b.evictions.Add(1)
			freed += n
			planned += n
			continue
		}
		byFile[c.fb] = append(byFile[c.fb], c.i)
		planned += c.bytes
	}
	for fb, is := range byFile {
		freed += fb.evict(is)
	}
	return freed
}

// removeClosed removes the object name, which the ledger says nobody holds,
// and returns the bytes its ledger entry counted. Its index lock is taken
// first (someone may have opened it since), the directory is renamed aside
// so no Open finds it half-removed, then removed; the ledger entry goes
// last.
func removeClosed(root, name, me string) (int64, error) {
	dir := filepath.Join(root, name)
	var n int64
	err := withLedger(root, func(l *ledger) error {
		o := l.Objects[name]
		if o == nil || (o.Holder != "" && o.Holder != me) {
			return errors.New("in use")
		}
		n = o.Bytes
		if err := removeObjectDir(dir); err != nil {
			return err
		}
		delete(l.Objects, name)
		return nil
	})
	return n, err
}

// removeObjectDir removes one object's cache directory, unless a process
// holds its index.
func removeObjectDir(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	db, _, err := openIndexTimeout(dir, 50*time.Millisecond)
	if err != nil {
		return err
	}
	gone := fmt.Sprintf("%s.removing-%d", dir, os.Getpid())
	rerr := os.Rename(dir, gone)
	db.Close()
	if rerr != nil {
		return rerr
	}
	return os.RemoveAll(gone)
}

// fileBudget is one File's part in its Budget: which chunks are charged (may
// have blocks on disk), their use stamps, and whole-file pins. Guarded by
// File.mu.
type fileBudget struct {
	b            *Budget
	f            *File
	name         string
	charged      bitset
	chargedBytes int64
	use          []uint32 // stamp (seconds from useEpochSeconds) | useHot | useUnread
	lastUse      uint32
	pinAll       int
	unsaved      bitset // chunks whose use changed since it was last saved
	nUnsaved     int

	// saveMu orders the flusher's saves with detach's: once gone is set
	// (detach), the flusher writes nothing more to the index.
	saveMu sync.Mutex
	gone   bool
}

// stampLocked sets chunk i's use to u, to be saved with the next batch.
// File.mu is held.
func (fb *fileBudget) stampLocked(i int64, u uint32) {
	if fb.use[i] == u {
		return
	}
	fb.use[i] = u
	if fb.unsaved.get(i) {
		return
	}
	fb.unsaved.set(i)
	if fb.nUnsaved++; fb.nUnsaved == useFlushStamps {
		select {
		case fb.b.flushKick <- struct{}{}:
		default:
		}
	}
}

// flushUse saves the use stamps that changed since the last save, in one
// index commit.
func (fb *fileBudget) flushUse() {
	fb.saveMu.Lock()
	defer fb.saveMu.Unlock()
	f := fb.f
	if fb.gone || f.st.degraded() {
		return
	}
	f.mu.Lock()
	if fb.nUnsaved == 0 {
		f.mu.Unlock()
		return
	}
	is := make([]int64, 0, fb.nUnsaved)
	us := make([]uint32, 0, fb.nUnsaved)
	for w := range fb.unsaved {
		for word := fb.unsaved[w].Load(); word != 0; word &= word - 1 {
			i := int64(w)*64 + int64(bits.TrailingZeros64(word))
			is = append(is, i)
			us = append(us, fb.use[i])
		}
		fb.unsaved[w].Store(0)
	}
	fb.nUnsaved = 0
	f.mu.Unlock()
	if err := f.st.putUse(is, us); err != nil {
		// Lost stamps only make eviction's order coarser; they are
		// saved again at close.
		f.log.Debug("cache budget: saving use stamps", "dir", f.st.dir, "err", err)
	}
}

// attach registers f with b: its recorded chunks are charged, their use
// stamps loaded. crashed says the previous holder did not close the cache:
// the holes of every chunk not recorded are punched first, so bytes written
// but never committed are not left on disk uncounted.
func (b *Budget) attach(f *File, dir string, crashed bool) (*fileBudget, error) {
	if filepath.Clean(filepath.Dir(dir)) != filepath.Clean(b.root) {
		return nil, fmt.Errorf("cache budget: %s is not directly under the budget's root %s", dir, b.root)
	}
	fb := &fileBudget{b: b, f: f, name: filepath.Base(dir), charged: newBitset(f.lay.chunks), use: make([]uint32, f.lay.chunks),
		unsaved: newBitset(f.lay.chunks)}
	if crashed {
		for i := int64(0); i < f.lay.chunks; {
			j := f.tab.present.nextClear(i, f.lay.chunks)
			if j >= f.lay.chunks {
				break
			}
			k := j
			for k < f.lay.chunks && !f.tab.present.get(k) {
				k++
			}
			s, _ := f.lay.bounds(j)
			_, e := f.lay.bounds(k - 1)
			if err := f.st.punch(s, e-s); err != nil {
				f.log.Warn("cache budget: could not punch unrecorded chunks", "dir", dir, "err", err)
				break
			}
			i = k
		}
	}
	if err := f.st.loadUse(fb.use); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errors.New("cache budget: closed")
	}
	var last int64
	err := withLedger(b.root, func(l *ledger) error {
		if o := l.Objects[fb.name]; o != nil {
			if o.Holder != "" && o.Holder != b.me && procAlive(b.root, o.Holder) {
				// Its index lock says otherwise; the ledger is behind.
				f.log.Debug("cache budget: ledger named another holder", "dir", dir)
			}
			last = o.LastUse
		}
		def := uint32(max(0, last-useEpochSeconds)) & useStampMask
		if last == 0 {
			def = nowStamp()
		}
		f.mu.Lock()
		for i := range f.lay.chunks {
			if f.tab.present.get(i) {
				fb.charged.set(i)
				fb.chargedBytes += f.lay.chunkLen(i)
				if fb.use[i] == 0 {
					fb.use[i] = def
				}
			}
		}
		fb.lastUse = def
		f.mu.Unlock()
		b.files[fb] = struct{}{}
		b.syncLocked(l)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return fb, nil
}

// detach ends f's part in the budget at Close, after every writer stopped:
// chunks charged but not recorded (a failed fetch) get their holes punched,
// the use stamps are saved, and the object is left to the ledger as closed.
func (fb *fileBudget) detach() error {
	f := fb.f
	var errs []error
	f.mu.Lock()
	for i := range f.lay.chunks {
		if fb.charged.get(i) && !f.tab.present.get(i) {
			s, e := f.lay.bounds(i)
			if err := f.st.punch(s, e-s); err == nil {
				fb.charged.clear(i)
				fb.chargedBytes -= e - s
			}
		}
	}
	use := slices.Clone(fb.use)
	f.mu.Unlock()
	fb.saveMu.Lock()
	fb.gone = true
	fb.saveMu.Unlock()
	if !f.st.degraded() {
		errs = append(errs, f.st.saveUse(use, f.tab.present))
	}
	b := fb.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		delete(b.files, fb)
		return errors.Join(errs...)
	}
	errs = append(errs, withLedger(b.root, func(l *ledger) error {
		b.syncLocked(l)
		delete(b.files, fb)
		l.object(fb.name).Holder = ""
		return nil
	}))
	return errors.Join(errs...)
}

// charge is runWriter's reservation of chunk i before its first byte is
// written. A chunk already charged costs nothing.
func (fb *fileBudget) charge(i int64) bool {
	f := fb.f
	f.mu.Lock()
	done := fb.charged.get(i)
	f.mu.Unlock()
	if done {
		return true
	}
	n := f.lay.chunkLen(i)
	if !fb.b.take(n) {
		return false
	}
	now := nowStamp()
	f.mu.Lock()
	again := fb.charged.get(i)
	if !again {
		fb.charged.set(i)
		fb.chargedBytes += n
		// Fetched for a reader serving it now: read once. Fetched ahead:
		// not read yet (its first read does not count as a second).
		u := now
		if f.tab.pins[i] == 0 {
			u |= useUnread
		}
		fb.stampLocked(i, u)
	}
	f.mu.Unlock()
	if again {
		// Charged meanwhile (cannot happen with one writer per chunk;
		// given back all the same, outside File.mu).
		fb.b.mu.Lock()
		fb.b.slab += n
		fb.b.mu.Unlock()
	}
	return true
}

// touchLocked records a read of chunks [first, end). File.mu is held.
func (fb *fileBudget) touchLocked(first, end int64) {
	now := nowStamp()
	fb.lastUse = now
	for i := first; i < end; i++ {
		if !fb.charged.get(i) {
			// Not on disk yet: its charge will stamp it.
			continue
		}
		if fb.f.tab.flights[i] != nil && !fb.f.tab.servable(i) && !fb.f.tab.present.get(i) {
			// In flight. Fetched ahead (charged unread), this read is
			// its first; fetched for this read, its charge stamps it.
			if fb.use[i]&useUnread != 0 {
				fb.stampLocked(i, now)
			}
			continue
		}
		// Recorded, or fetched in part (its blocks count as one chunk).
		u := fb.use[i]
		switch {
		case u&useUnread != 0:
			fb.stampLocked(i, now)
		case u&useHot != 0:
			fb.stampLocked(i, now|useHot)
		case now-u&useStampMask >= fb.b.promoteAfter:
			fb.stampLocked(i, now|useHot)
		}
	}
}

// evict evicts what it can of chunks is (record deleted, then hole punched)
// and returns the bytes freed.
func (fb *fileBudget) evict(is []int64) int64 {
	f := fb.f
	f.mu.Lock()
	took := is[:0]
	for _, i := range is {
		if fb.pinAll == 0 && f.tab.beginEvict(i) {
			took = append(took, i)
		}
	}
	f.mu.Unlock()
	if len(took) == 0 {
		return 0
	}
	err := f.st.deleteRecords(took)
	punched := make([]bool, len(took))
	if err == nil {
		for n, i := range took {
			s, e := f.lay.bounds(i)
			punched[n] = f.st.punch(s, e-s) == nil
		}
	} else {
		f.log.Warn("cache budget: could not delete records", "dir", f.st.dir, "err", err)
	}
	var freed int64
	f.mu.Lock()
	for n, i := range took {
		f.tab.finishEvict(i)
		if punched[n] {
			fb.charged.clear(i)
			n := f.lay.chunkLen(i)
			fb.chargedBytes -= n
			freed += n
		}
	}
	f.mu.Unlock()
	fb.b.evictions.Add(int64(len(took)))
	return freed
}
