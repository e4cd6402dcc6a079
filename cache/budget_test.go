package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"rangefs/cache/cachetest"
)

// sampleAllocated samples what root takes on disk every 5 ms until stop is
// called, which returns the peak.
func sampleAllocated(root string) (stop func() int64) {
	sample := cachetest.SamplePeak(root, 5*time.Millisecond)
	return func() int64 { peak, _ := sample(); return peak }
}

func newBudgetT(t testing.TB, root string, o BudgetOptions) *Budget {
	t.Helper()
	b, err := NewBudget(root, o)
	if err != nil {
		t.Fatalf("NewBudget: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func openUnder(t testing.TB, b *Budget, name string, size int64, o Options) (*File, *cachetest.Source) {
	t.Helper()
	return openUnderMeta(t, b, name, testMeta(size), o)
}

// openUnderMeta is openUnder for an object described by m.
func openUnderMeta(t testing.TB, b *Budget, name string, m Meta, o Options) (*File, *cachetest.Source) {
	t.Helper()
	src := newFake(m.Size)
	m.URL = "https://example.test/" + name
	o.Budget, o.Root = b, b.Root()
	return openT(t, filepath.Join(b.Root(), name), m, src, o), src
}

func (f *File) presentChunks(first, end int64) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for i := first; i < end; i++ {
		if f.tab.present.get(i) {
			n++
		}
	}
	return n
}

// The data under the root never takes more than the limit plus one chunk
// per connection, however much is read, and every byte read is right.
func TestBudgetCapHoldsOnDisk(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	const limit = 2 << 20
	b := newBudgetT(t, root, BudgetOptions{MaxSize: limit})
	pool := NewPool(8)
	f, _ := openUnder(t, b, "a", 16<<20, Options{Pool: pool})
	stop := sampleAllocated(root)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 100<<10)
			for pass := range 2 {
				for off := int64(g) * 4 << 20; off < int64(g+1)*4<<20; off += int64(len(buf)) {
					n, err := f.ReadAt(context.Background(), buf, off)
					if err != nil && err != io.EOF {
						t.Errorf("pass %d ReadAt(%d): %v", pass, off, err)
						return
					}
					if !bytes.Equal(buf[:n], want(off, int64(n))) {
						t.Errorf("pass %d ReadAt(%d): wrong bytes", pass, off)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	settle(t, f)
	peak := stop()
	bound := int64(limit + 8*testChunk)
	t.Logf("peak allocated %d, bound %d, cached %d", peak, bound, f.Stats().BytesPresent)
	if peak > bound {
		t.Fatalf("allocated under the root peaked at %d bytes, over the bound %d", peak, bound)
	}
	if got := f.Stats().BytesPresent; got > limit {
		t.Fatalf("cached %d bytes, over the limit %d", got, limit)
	}
	if u, err := b.Usage(); err != nil || u.Used > limit || u.Evictions == 0 {
		t.Fatalf("usage %+v, %v: want used <= %d and evictions", u, err, limit)
	}
	if n := RootEvictions(root); n < 1 {
		t.Fatalf("RootEvictions(root) = %d after evictions", n)
	}
}

// scanRun reads a hot region of A twice, then all of a much larger B once.
func scanRun(t *testing.T, promote time.Duration) (hotLeft int64) {
	root := filepath.Join(t.TempDir(), "root")
	const limit = 2 << 20 // 32 chunks
	b := newBudgetT(t, root, BudgetOptions{MaxSize: limit, PromoteAfter: promote})
	a, _ := openUnder(t, b, "a", 4<<20, Options{})
	bf, _ := openUnder(t, b, "b", 16<<20, Options{})
	const hot = 8 // chunks: 512 KiB
	for range 2 {
		for i := range int64(hot) {
			if err := readChunk(t, a, i); err != nil {
				t.Fatal(err)
			}
		}
		settle(t, a) // a read during the fetch is the same access
	}
	// The scan, one chunk at a time, settling every 8 chunks. Eviction
	// never takes a chunk in flight: while the committer lags behind the
	// scan its chunks are not evictable yet, and with enough of them the
	// hot chunks are the only candidates left. With at most 8 uncommitted,
	// at least 16 of the 24 scan chunks the cache holds beside the hot ones
	// are evictable, more than the quarter of the limit that keeps
	// probation first: the policy under test is the order among evictable
	// chunks.
	for i := range bf.lay.chunks {
		if err := readChunk(t, bf, i); err != nil {
			t.Fatal(err)
		}
		if i%8 == 7 {
			settle(t, bf)
		}
	}
	settle(t, bf)
	return a.presentChunks(0, hot)
}

// Scan resistance: a hot region read twice survives one read of a file
// eight times the cache; with promotion made impossible (the second read
// comes too soon), the same scan flushes it, so the policy is what keeps it.
func TestBudgetScanResistance(t *testing.T) {
	if left := scanRun(t, time.Nanosecond); left != 8 {
		t.Fatalf("hot region: %d of 8 chunks left after the scan", left)
	}
	if left := scanRun(t, time.Hour); left != 0 {
		t.Fatalf("without promotion, %d of 8 hot chunks survived the scan (want the scan to flush them)", left)
	}
}

// A file pinned whole keeps every chunk and stays verified; once
// everything is pinned, reads of another file are served uncached, exactly,
// and nothing passes the cap.
func TestBudgetPinnedNeverEvicted(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	const limit = 1 << 20
	b := newBudgetT(t, root, BudgetOptions{MaxSize: limit})
	a, _ := openUnder(t, b, "a", limit, Options{})
	readAll(t, a, testChunk)
	settle(t, a)
	if err := a.Verify(context.Background()); err != nil || !a.AllVerified() {
		t.Fatalf("a not verified: %v", err)
	}
	a.PinAll()
	if u, err := b.Usage(); err != nil || u.Pinned != limit {
		t.Fatalf("usage with a pinned whole: %+v, %v; want %d bytes pinned", u, err, int64(limit))
	}
	stop := sampleAllocated(root)
	bf, bsrc := openUnder(t, b, "b", 4<<20, Options{})
	readAll(t, bf, 96<<10)
	peak := stop()
	if !a.AllVerified() || a.presentChunks(0, a.lay.chunks) != a.lay.chunks {
		t.Fatal("a pinned file lost chunks")
	}
	if n := bf.presentChunks(0, bf.lay.chunks); n != 0 {
		t.Fatalf("b cached %d chunks with no room", n)
	}
	if bsrc.NCalls() == 0 {
		t.Fatal("b was not fetched")
	}
	if peak > limit+8*testChunk {
		t.Fatalf("allocated peaked at %d with everything pinned", peak)
	}
	a.UnpinAll()
	readAll(t, bf, 96<<10)
	settle(t, bf)
	if bf.presentChunks(0, bf.lay.chunks) == 0 || a.AllVerified() {
		t.Fatal("after UnpinAll, b should cache by evicting a")
	}
}

// A closed object is removed whole when room is needed; records go before
// holes, so what the index still records after evictions is all there.
func TestBudgetClosedObjectRemovedAndIndexExact(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	const limit = 1 << 20
	b := newBudgetT(t, root, BudgetOptions{MaxSize: limit})
	a, _ := openUnder(t, b, "a", limit, Options{})
	readAll(t, a, testChunk)
	settle(t, a)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	bf, _ := openUnder(t, b, "b", 3<<20, Options{})
	readAll(t, bf, testChunk)
	settle(t, bf)
	if _, err := os.Stat(filepath.Join(root, "a")); !os.IsNotExist(err) {
		t.Fatalf("closed object a not removed: %v", err)
	}
	present := bf.Stats().Present
	if err := bf.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopen without a budget: every record must match its bytes.
	f2 := openT(t, filepath.Join(root, "b"), bf.Meta(), newFake(3<<20), Options{})
	if got := f2.Stats().Present; got != present || got == 0 {
		t.Fatalf("reopened with %d records, had %d", got, present)
	}
	if err := f2.Verify(context.Background()); err != nil {
		t.Fatalf("a record outlived its chunk's bytes: %v", err)
	}
}

// Two Budgets (as two processes would) share a root and its cap.
func TestBudgetSharedRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	const limit = 2 << 20
	b1 := newBudgetT(t, root, BudgetOptions{MaxSize: limit})
	b2 := newBudgetT(t, root, BudgetOptions{MaxSize: limit})
	f1, _ := openUnder(t, b1, "a", 8<<20, Options{})
	f2, _ := openUnder(t, b2, "b", 8<<20, Options{})
	stop := sampleAllocated(root)
	var wg sync.WaitGroup
	for _, f := range []*File{f1, f2} {
		wg.Add(1)
		go func() { defer wg.Done(); readAll(t, f, 80<<10) }()
	}
	wg.Wait()
	settle(t, f1)
	settle(t, f2)
	peak := stop()
	if peak > limit+16*testChunk {
		t.Fatalf("two processes' data peaked at %d, over %d", peak, limit+16*testChunk)
	}
	if s := f1.Stats().BytesPresent + f2.Stats().BytesPresent; s > limit {
		t.Fatalf("together cached %d, over %d", s, limit)
	}
}

// A Budget that died without Close (its lock gone) has its slab and holds
// reclaimed by the next one that runs short.
func TestBudgetDeadProcessReclaimed(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	const limit = 1 << 20
	dead, err := NewBudget(root, BudgetOptions{MaxSize: limit})
	if err != nil {
		t.Fatal(err)
	}
	if !dead.take(limit) {
		t.Fatal("could not reserve the whole limit")
	}
	dead.procLock.Close() // its flock goes, as at a SIGKILL
	b := newBudgetT(t, root, BudgetOptions{MaxSize: limit})
	f, _ := openUnder(t, b, "a", 2<<20, Options{})
	readAll(t, f, testChunk)
	settle(t, f)
	if f.Stats().Present == 0 {
		t.Fatal("the dead process's reservation was never reclaimed: nothing cached")
	}
}

// Use stamps persist across Close and Open: a protected chunk is still
// protected after a reopen.
func TestBudgetUsePersists(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	b := newBudgetT(t, root, BudgetOptions{MaxSize: 8 << 20, PromoteAfter: time.Nanosecond})
	a, _ := openUnder(t, b, "a", 1<<20, Options{})
	for range 2 {
		readChunk(t, a, 3)
		settle(t, a) // a read during the fetch is the same access
	}
	a.Close()
	a2, _ := openUnder(t, b, "a", 1<<20, Options{})
	a2.mu.Lock()
	u := a2.bud.use[3]
	a2.mu.Unlock()
	if u&useHot == 0 {
		t.Fatalf("chunk 3's use %#x lost its protection across a reopen", u)
	}
}

// A cold chunk of an open file fetched only in part (small random reads
// brought some of its 64 KiB blocks) is evicted like a full one when room is
// needed: its blocks record goes first, then its hole is punched, and a
// later read of those bytes fetches them again, right.
func TestBudgetEvictsPartlyFetchedChunks(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	const chunk = 1 << 20
	const limit = 4 * chunk
	b := newBudgetT(t, root, BudgetOptions{MaxSize: limit, PromoteAfter: time.Hour})
	a, asrc := openUnderMeta(t, b, "a", bigMeta(8*chunk), Options{})
	r := a.NewReader()
	buf := make([]byte, 4096)
	readA := func(i int64) {
		t.Helper()
		off := i*chunk + 5*blockSize + 100
		if _, err := r.ReadAt(bg, buf, off); err != nil || !bytes.Equal(buf, want(off, int64(len(buf)))) {
			t.Fatalf("read of a's chunk %d: %v", i, err)
		}
	}
	for i := range int64(4) {
		readA(i)
	}
	settle(t, a)
	if st := a.Stats(); st.Present != 0 {
		t.Fatalf("a: %d chunks present, want none (fetched in part only)", st.Present)
	}
	calls := asrc.NCalls()
	bf, _ := openUnderMeta(t, b, "b", bigMeta(8*chunk), Options{})
	readAll(t, bf, chunk)
	settle(t, bf)
	a.mu.Lock()
	var charged, partly int
	for i := range int64(4) {
		if a.bud.charged.get(i) {
			charged++
		}
		if a.tab.blocks[i] != nil {
			partly++
		}
	}
	a.mu.Unlock()
	if charged != 0 || partly != 0 {
		t.Fatalf("after a read of b twice the cache: %d of a's 4 partly fetched chunks still charged, %d still recorded", charged, partly)
	}
	fi, err := os.Stat(filepath.Join(root, "a", dataName))
	if err != nil {
		t.Fatal(err)
	}
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks; blocks != 0 {
		t.Fatalf("a's data file still holds %d sectors after its chunks were evicted", blocks)
	}
	if bf.Stats().Present == 0 {
		t.Fatal("b cached nothing")
	}
	for i := range int64(4) {
		readA(i)
	}
	if asrc.NCalls() == calls {
		t.Fatal("a's evicted blocks were served without a fetch")
	}
}

// storedUse reads chunk i's use stamp from f's index as it is on disk now
// (0: none saved).
func storedUse(t testing.TB, f *File, i int64) uint32 {
	t.Helper()
	var u uint32
	err := f.st.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketUse); b != nil {
			if v := b.Get(chunkKey(i)); len(v) == 4 {
				u = binary.BigEndian.Uint32(v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Use stamps are saved in batches while a file is open, so a process that
// dies without closing it (here: its index and its budget's lock let go,
// nothing saved, as at a SIGKILL) leaves the recency it had at the last
// batch: a chunk read twice is still protected when the next process
// opens the object.
func TestBudgetUseSurvivesCrash(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	o := BudgetOptions{MaxSize: 8 << 20, PromoteAfter: time.Nanosecond, UseFlushEvery: 20 * time.Millisecond}
	dead, err := NewBudget(root, o)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := openUnder(t, dead, "a", 1<<20, Options{})
	for range 2 {
		readChunk(t, a, 3)
		settle(t, a) // a read during the fetch is the same access
	}
	a.mu.Lock()
	hot := a.bud.use[3]&useHot != 0
	a.mu.Unlock()
	if !hot {
		t.Fatal("chunk 3 read twice is not protected")
	}
	waitFor(t, "chunk 3's protection saved while open", func() bool { return storedUse(t, a, 3)&useHot != 0 })
	// The crash: nothing more is written for a or its budget.
	a.bud = nil
	dead.mu.Lock()
	clear(dead.files)
	dead.closed = true
	dead.mu.Unlock()
	dead.stopFlusher()
	a.st.db.Close()
	dead.procLock.Close()

	b := newBudgetT(t, root, o)
	a2, _ := openUnder(t, b, "a", 1<<20, Options{})
	a2.mu.Lock()
	u := a2.bud.use[3]
	a2.mu.Unlock()
	if u&useHot == 0 {
		t.Fatalf("chunk 3's use %#x lost its protection across a crash", u)
	}
}

// Read-ahead never outgrows the cap: a sequential read of a file four times
// the budget fetches each byte once. With a window as large as the budget,
// each read-ahead chunk is the coldest when the next arrives, and is evicted
// before the reader gets to it, so it is fetched again.
func TestBudgetReadAheadFitsTheCap(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	const limit = 16 * testChunk
	b := newBudgetT(t, root, BudgetOptions{MaxSize: limit})
	const size = 4 * limit
	f, src := openUnder(t, b, "a", size, Options{Pool: NewPool(8)})
	r := f.NewReader()
	defer r.Close()
	buf := make([]byte, 32<<10)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n, err := r.ReadAt(context.Background(), buf, off)
		if err != nil && err != io.EOF {
			t.Fatalf("ReadAt(%d): %v", off, err)
		}
		if !bytes.Equal(buf[:n], want(off, int64(n))) {
			t.Fatalf("ReadAt(%d): wrong bytes", off)
		}
		// Settling every 4 chunks read (the window's most): chunks
		// waiting for their commit cannot be evicted (SEMANTICS §6), and
		// a committer that lags far enough behind (GOMAXPROCS=1 under
		// load) leaves no room to make, so a read is served uncached and
		// its bytes are fetched twice. That is the policy's limit, not
		// read-ahead evicted before it was read, which is what this
		// test is about.
		if end := off + int64(len(buf)); end%(4*testChunk) == 0 {
			settle(t, f)
		}
	}
	settle(t, f)
	fetched := src.Bytes()
	t.Logf("fetched %d bytes for a %d-byte file through a %d-byte cap", fetched, int64(size), int64(limit))
	if fetched > size {
		t.Fatalf("fetched %d bytes for a %d-byte file read once: read-ahead was evicted before it was read", fetched, int64(size))
	}
}

// syncGate is a dataFile whose Syncs wait while the gate is shut, so a test
// can hold chunks written but not yet committed.
type syncGate struct {
	dataFile
	open chan struct{}
}

func (g *syncGate) Sync() error {
	<-g.open
	return g.dataFile.Sync()
}

// Punch is the real data file's, so the budget can punch holes through it.
func (g *syncGate) Punch(off, n int64) error {
	return g.dataFile.(interface{ Punch(off, n int64) error }).Punch(off, n)
}

// Chunks written but still waiting for their group commit when the File
// closes are committed, sealed and served right at the next open. The
// budget's detach at Close punches the holes of chunks charged but not
// present: it once ran before the committer's last round, so such chunks
// were punched, then recorded and sealed as verified, and the next open
// served their zeros (seen as a 1 GiB warm cat with the wrong CRC).
func TestCloseCommitsBeforeBudgetPunches(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	b := newBudgetT(t, root, BudgetOptions{MaxSize: 64 << 20})
	gate := &syncGate{open: make(chan struct{})}
	a, _ := openUnder(t, b, "a", 8*testChunk, Options{wrapData: func(d dataFile) dataFile {
		gate.dataFile = d
		return gate
	}})
	for i := int64(0); i < 4; i++ {
		if err := readChunk(t, a, i); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	// Close has stopped the writers and gone on to what comes next; the
	// committer's round is still waiting on the gate.
	time.Sleep(200 * time.Millisecond)
	close(gate.open)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close never returned")
	}
	a2, src := openUnder(t, b, "a", 8*testChunk, Options{})
	for i := int64(0); i < 4; i++ {
		if err := readChunk(t, a2, i); err != nil {
			t.Fatalf("chunk %d after the reopen: %v", i, err)
		}
	}
	if n := src.NCalls(); n != 0 {
		t.Errorf("the reopen fetched %d ranges; the 4 chunks committed at Close should be there", n)
	}
}
