package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"rangefs/cache/cachetest"
)

var bg = context.Background()

func TestFullReadMatchesPattern(t *testing.T) {
	for _, size := range []int64{1, 100, testChunk, testChunk + 1, 5*testChunk + 12345} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			src := newFake(size)
			f := openT(t, cacheDir(t), testMeta(size), src, Options{})
			readAll(t, f, 10007) // unaligned steps cross chunk boundaries
			settle(t, f)
			st := f.Stats()
			if st.Present != st.Chunks || st.BytesPresent != size {
				t.Fatalf("after full read: %+v", st)
			}
			if st.BytesFetched != size {
				t.Fatalf("fetched %d bytes for a %d-byte file", st.BytesFetched, size)
			}
			calls := src.NCalls()
			readAll(t, f, 65536)
			if src.NCalls() != calls {
				t.Fatalf("second read fetched again: %d -> %d calls", calls, src.NCalls())
			}
			if got := fileBytes(t, f.DataPath()); !bytes.Equal(got, want(0, size)) {
				t.Fatal("data file differs from the pattern")
			}
		})
	}
}

func TestReadAtEdges(t *testing.T) {
	size := int64(3*testChunk + 10)
	f := openT(t, cacheDir(t), testMeta(size), newFake(size), Options{})
	buf := make([]byte, 100)
	if n, err := f.ReadAt(bg, buf, size-10); n != 10 || err != io.EOF || !bytes.Equal(buf[:10], want(size-10, 10)) {
		t.Fatalf("read across EOF: n=%d err=%v", n, err)
	}
	if n, err := f.ReadAt(bg, buf, size); n != 0 || err != io.EOF {
		t.Fatalf("read at EOF: n=%d err=%v", n, err)
	}
	if n, err := f.ReadAt(bg, buf, size+5); n != 0 || err != io.EOF {
		t.Fatalf("read past EOF: n=%d err=%v", n, err)
	}
	if n, err := f.ReadAt(bg, buf[:0], 0); n != 0 || err != nil {
		t.Fatalf("empty read: n=%d err=%v", n, err)
	}
	if _, err := f.ReadAt(bg, buf, -1); err == nil {
		t.Fatal("negative offset accepted")
	}

	empty := openT(t, cacheDir(t), testMeta(0), newFake(0), Options{})
	if n, err := empty.ReadAt(bg, buf, 0); n != 0 || err != io.EOF {
		t.Fatalf("empty file read: n=%d err=%v", n, err)
	}
	if err := empty.Fill(bg); err != nil {
		t.Fatalf("Fill of empty file: %v", err)
	}
	if st := empty.Stats(); st.Chunks != 0 || st.Present != 0 {
		t.Fatalf("empty file stats %+v", st)
	}
}

func TestOpenRejectsBadMeta(t *testing.T) {
	for _, m := range []Meta{
		{Size: 10, ChunkSize: 0},
		{Size: 10, ChunkSize: 32 << 10},
		{Size: 10, ChunkSize: 128 << 20},
		{Size: 10, ChunkSize: 3 << 16},
		{Size: -1, ChunkSize: testChunk},
		{Size: 1 << 62, ChunkSize: testChunk},
	} {
		if f, err := Open(cacheDir(t), m, newFake(10), Options{}); err == nil {
			f.Close()
			t.Errorf("Open accepted %+v", m)
		}
	}
}

func TestReopenWithoutRefetch(t *testing.T) {
	size := int64(20*testChunk + 7)
	dir := cacheDir(t)
	m := testMeta(size)
	f, err := Open(dir, m, newFake(size), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Fill(bg); err != nil {
		t.Fatalf("Fill: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	src := newFake(size)
	f2 := openT(t, dir, m, src, Options{})
	if d := f2.Discarded(); d != "" {
		t.Fatalf("reopen discarded: %s", d)
	}
	if st := f2.Stats(); st.Present != st.Chunks {
		t.Fatalf("reopen: %d of %d chunks present", st.Present, st.Chunks)
	}
	readAll(t, f2, 50000)
	r := f2.NewReader()
	buf := make([]byte, 4096)
	for off := int64(0); off < size; off += 4096 {
		if _, err := r.ReadAt(bg, buf, off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
	}
	if err := f2.Verify(bg); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if n := src.NCalls(); n != 0 {
		t.Fatalf("reopened cache made %d Source calls, want 0", n)
	}
}

// fillAndClose creates a complete cache for m in dir.
func fillAndClose(t *testing.T, dir string, m Meta) {
	t.Helper()
	f, err := Open(dir, m, newFake(m.Size), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Fill(bg); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// A cache stored with one Source is discarded when opened with another,
// though every validator matches; one stored without a Source is kept.
func TestMetaSourceMismatchDiscards(t *testing.T) {
	for _, tc := range []struct {
		stored, now string
		discard     bool
	}{{"a", "b", true}, {"a", "a", false}, {"", "b", false}, {"a", "", false}} {
		dir := cacheDir(t)
		m := testMeta(8 * testChunk)
		m.Source = tc.stored
		fillAndClose(t, dir, m)
		m.Source = tc.now
		f := openT(t, dir, m, newFake(m.Size), Options{})
		if got := f.Discarded() != ""; got != tc.discard {
			t.Errorf("stored source %q, opened with %q: discarded %q, want discarded=%v", tc.stored, tc.now, f.Discarded(), tc.discard)
		}
		f.Close()
	}
}

func TestMetaMismatchDiscards(t *testing.T) {
	base := testMeta(8 * testChunk)
	tests := []struct {
		name   string
		change func(m *Meta)
		patch  func(t *testing.T, dir string)
		word   string
	}{
		{name: "etag", change: func(m *Meta) { m.ETag = `"v2"` }, word: "ETag"},
		{name: "last-modified", change: func(m *Meta) { m.LastModified = "Tue, 03 Jan 2006 15:04:05 GMT" }, word: "Last-Modified"},
		{name: "size", change: func(m *Meta) { m.Size += 1000 }, word: "size"},
		{name: "chunk size", change: func(m *Meta) { m.ChunkSize *= 2 }, word: "chunk size"},
		{name: "format version", patch: func(t *testing.T, dir string) {
			db, err := bolt.Open(filepath.Join(dir, indexName), 0o600, &bolt.Options{Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(func(tx *bolt.Tx) error {
				var v [8]byte
				binary.BigEndian.PutUint64(v[:], formatVersion+1)
				return tx.Bucket(bucketMeta).Put(keyFormat, v[:])
			}); err != nil {
				t.Fatal(err)
			}
		}, word: "format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := cacheDir(t)
			fillAndClose(t, dir, base)
			m := base
			if tc.change != nil {
				tc.change(&m)
			}
			if tc.patch != nil {
				tc.patch(t, dir)
			}
			src := newFake(m.Size)
			f := openT(t, dir, m, src, Options{})
			if !strings.Contains(f.Discarded(), tc.word) {
				t.Fatalf("Discarded() = %q, want it to mention %q", f.Discarded(), tc.word)
			}
			if st := f.Stats(); st.Present != 0 {
				t.Fatalf("%d chunks present after discard", st.Present)
			}
			readAll(t, f, 100000)
			if src.NCalls() == 0 {
				t.Fatal("nothing refetched after discard")
			}
			if got, _ := os.Stat(f.DataPath()); got.Size() != m.Size {
				t.Fatalf("data file size %d, want %d", got.Size(), m.Size)
			}
		})
	}
}

func TestRecordWithoutDataRefetched(t *testing.T) {
	m := testMeta(8 * testChunk)
	t.Run("data truncated", func(t *testing.T) {
		dir := cacheDir(t)
		fillAndClose(t, dir, m)
		if err := os.Truncate(filepath.Join(dir, dataName), 3*testChunk+testChunk/2); err != nil {
			t.Fatal(err)
		}
		src := newFake(m.Size)
		f := openT(t, dir, m, src, Options{})
		if st := f.Stats(); st.Present != 3 {
			t.Fatalf("present = %d after truncating data to 3.5 chunks, want 3", st.Present)
		}
		readAll(t, f, 30000)
		settle(t, f)
		if st := f.Stats(); st.BytesFetched != m.Size-3*testChunk {
			t.Fatalf("fetched %d bytes, want %d", st.BytesFetched, m.Size-3*testChunk)
		}
	})
	t.Run("data removed", func(t *testing.T) {
		dir := cacheDir(t)
		fillAndClose(t, dir, m)
		if err := os.Remove(filepath.Join(dir, dataName)); err != nil {
			t.Fatal(err)
		}
		src := newFake(m.Size)
		f := openT(t, dir, m, src, Options{})
		if st := f.Stats(); st.Present != 0 {
			t.Fatalf("present = %d with the data file removed", st.Present)
		}
		readAll(t, f, 30000)
		settle(t, f)
		if st := f.Stats(); st.BytesFetched != m.Size {
			t.Fatalf("fetched %d bytes, want %d", st.BytesFetched, m.Size)
		}
	})
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b := make([]byte, 1)
	if _, err := fh.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := fh.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestBadChecksumRefetchedNeverServed(t *testing.T) {
	m := testMeta(8 * testChunk)
	dir := cacheDir(t)
	fillAndClose(t, dir, m)
	flipByte(t, filepath.Join(dir, dataName), 2*testChunk+100)
	flipByte(t, filepath.Join(dir, dataName), 5*testChunk+testChunk-1)

	src := newFake(m.Size)
	f := openT(t, dir, m, src, Options{})
	if st := f.Stats(); st.Present != 8 {
		t.Fatalf("present = %d at open, want 8 (checks are lazy)", st.Present)
	}
	// A small read inside the bad chunk must get the pattern, refetched.
	buf := make([]byte, 10)
	if _, err := f.ReadAt(bg, buf, 2*testChunk+95); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, want(2*testChunk+95, 10)) {
		t.Fatal("served bytes of a chunk with a bad checksum")
	}
	if calls := src.Calls(); len(calls) != 1 || calls[0] != (cachetest.Call{Off: 2 * testChunk, N: testChunk}) {
		t.Fatalf("calls = %v, want one fetch of chunk 2", calls)
	}
	settle(t, f) // the read may return before chunk 2 is committed again
	err := f.Verify(bg)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "1 chunks") {
		t.Fatalf("Verify = %v, want ErrCorrupt for 1 chunk", err)
	}
	if st := f.Stats(); st.Present != 7 {
		t.Fatalf("present = %d after Verify dropped one, want 7", st.Present)
	}
	readAll(t, f, 20000)
	if n := src.NCalls(); n != 2 {
		t.Fatalf("%d Source calls, want 2 (the two bad chunks)", n)
	}
	if err := f.Verify(bg); err != nil {
		t.Fatalf("second Verify: %v", err)
	}
}

func TestCorruptIndexMovedAsideAndRebuilt(t *testing.T) {
	for _, garbage := range [][]byte{[]byte("not a database"), bytes.Repeat(want(0, 4096), 4)} {
		t.Run(fmt.Sprint(len(garbage)), func(t *testing.T) {
			m := testMeta(4*testChunk + 1)
			dir := cacheDir(t)
			fillAndClose(t, dir, m)
			if err := os.WriteFile(filepath.Join(dir, indexName), garbage, 0o600); err != nil {
				t.Fatal(err)
			}
			src := newFake(m.Size)
			f, err := Open(dir, m, src, Options{})
			if err != nil {
				t.Fatalf("Open with a garbage index: %v", err)
			}
			if !strings.Contains(f.Discarded(), "unreadable") {
				t.Fatalf("Discarded() = %q", f.Discarded())
			}
			moved, _ := filepath.Glob(filepath.Join(dir, indexName+".corrupt-*"))
			if len(moved) != 1 || !bytes.Equal(fileBytes(t, moved[0]), garbage) {
				t.Fatalf("moved-aside index: %v", moved)
			}
			if st := f.Stats(); st.Present != 0 {
				t.Fatalf("present = %d with a rebuilt index", st.Present)
			}
			readAll(t, f, 40000)
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			// The rebuilt index is a normal one: no crash loop, no refetch.
			src2 := newFake(m.Size)
			f2 := openT(t, dir, m, src2, Options{})
			if f2.Discarded() != "" || f2.Stats().Present != f2.Stats().Chunks {
				t.Fatalf("second open: discarded %q, stats %+v", f2.Discarded(), f2.Stats())
			}
			readAll(t, f2, 40000)
			if src2.NCalls() != 0 {
				t.Fatal("second open refetched")
			}
		})
	}
}

func TestSingleFlight64Readers(t *testing.T) {
	size := int64(4 * testChunk)
	src := newFake(size)
	release := make(chan struct{})
	src.Gate = func(off, n int64) <-chan struct{} { return release }
	waiting := make(chan struct{}, 64)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{onWait: func() { waiting <- struct{}{} }})

	errs := make(chan error, 64)
	for g := range 64 {
		go func() {
			off := int64(testChunk + g*100)
			buf := make([]byte, 1000)
			_, err := f.ReadAt(bg, buf, off)
			if err == nil && !bytes.Equal(buf, want(off, 1000)) {
				err = fmt.Errorf("reader %d: wrong bytes", g)
			}
			errs <- err
		}()
	}
	for range 64 {
		recv(t, waiting, "64 readers waiting")
	}
	close(release)
	for range 64 {
		if err := recv(t, errs, "readers"); err != nil {
			t.Fatal(err)
		}
	}
	if calls := src.Calls(); len(calls) != 1 || calls[0] != (cachetest.Call{Off: testChunk, N: testChunk}) {
		t.Fatalf("calls = %v, want exactly one fetch of chunk 1", calls)
	}
}

func sortedCalls(src *cachetest.Source) []cachetest.Call {
	c := src.Calls()
	sort.Slice(c, func(i, j int) bool { return c[i].Off < c[j].Off })
	return c
}

func TestCoalescing(t *testing.T) {
	size := int64(10 * testChunk)
	wantRuns := []cachetest.Call{{Off: 0, N: 4 * testChunk}, {Off: 4 * testChunk, N: 4 * testChunk}, {Off: 8 * testChunk, N: 2 * testChunk}}
	t.Run("fill", func(t *testing.T) {
		src := newFake(size)
		// One connection: with more, a worker that runs out of pieces
		// splits another's run (the end game), and where it splits
		// depends on timing.
		f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(1), MaxRequest: 4 * testChunk})
		if err := f.Fill(bg); err != nil {
			t.Fatal(err)
		}
		if got := sortedCalls(src); fmt.Sprint(got) != fmt.Sprint(wantRuns) {
			t.Fatalf("fetches %v, want %v", got, wantRuns)
		}
		readAll(t, f, 70000)
	})
	t.Run("demand", func(t *testing.T) {
		src := newFake(size)
		f := openT(t, cacheDir(t), testMeta(size), src, Options{MaxRequest: 4 * testChunk})
		buf := make([]byte, size)
		if _, err := f.ReadAt(bg, buf, 0); err != nil || !bytes.Equal(buf, want(0, size)) {
			t.Fatalf("ReadAt: %v", err)
		}
		if got := sortedCalls(src); fmt.Sprint(got) != fmt.Sprint(wantRuns) {
			t.Fatalf("fetches %v, want %v", got, wantRuns)
		}
	})
	t.Run("around present chunks", func(t *testing.T) {
		src := newFake(size)
		f := openT(t, cacheDir(t), testMeta(size), src, Options{MaxRequest: 4 * testChunk})
		for _, i := range []int64{2, 5} {
			if err := readChunk(t, f, i); err != nil {
				t.Fatal(err)
			}
		}
		src.ResetCalls()
		buf := make([]byte, size)
		if _, err := f.ReadAt(bg, buf, 0); err != nil || !bytes.Equal(buf, want(0, size)) {
			t.Fatalf("ReadAt: %v", err)
		}
		runs := []cachetest.Call{{Off: 0, N: 2 * testChunk}, {Off: 3 * testChunk, N: 2 * testChunk}, {Off: 6 * testChunk, N: 4 * testChunk}}
		if got := sortedCalls(src); fmt.Sprint(got) != fmt.Sprint(runs) {
			t.Fatalf("fetches %v, want %v", got, runs)
		}
	})
}

func TestCancelledWaiterReturnsWhileFetchGoesOn(t *testing.T) {
	size := int64(2 * testChunk)
	src := newFake(size)
	release := make(chan struct{})
	src.Gate = func(off, n int64) <-chan struct{} { return release }
	waiting := make(chan struct{}, 2)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{onWait: func() { waiting <- struct{}{} }})

	ctxA, cancelA := context.WithCancel(bg)
	errA := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(ctxA, make([]byte, 10), 0)
		errA <- err
	}()
	recv(t, waiting, "reader A waiting")
	errB := make(chan error, 1)
	bufB := make([]byte, 100)
	go func() {
		_, err := f.ReadAt(bg, bufB, 50)
		errB <- err
	}()
	recv(t, waiting, "reader B waiting")

	cancelA()
	if err := recv(t, errA, "cancelled reader"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled reader got %v", err)
	}
	select {
	case err := <-errB:
		t.Fatalf("reader B returned (%v) before the fetch was released", err)
	default:
	}
	close(release)
	if err := recv(t, errB, "reader B"); err != nil || !bytes.Equal(bufB, want(50, 100)) {
		t.Fatalf("reader B: %v", err)
	}
	if n := src.NCalls(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	settle(t, f)
	if st := f.Stats(); st.Present != 1 {
		t.Fatalf("present = %d, want 1 (the shared fetch completed)", st.Present)
	}
}

func TestPoolLimitAcrossFiles(t *testing.T) {
	const limit = 3
	size := int64(24 * testChunk)
	src := newFake(size)
	barrier := make(chan struct{})
	var mu sync.Mutex // guards started
	started := 0
	src.Gate = func(off, n int64) <-chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		started++
		if started == limit {
			close(barrier)
		}
		return barrier
	}
	pool := NewPool(limit)
	o := Options{Pool: pool, MaxRequest: testChunk}
	fa := openT(t, cacheDir(t), testMeta(size), src, o)
	fb := openT(t, cacheDir(t), testMeta(size), src, o)
	ctx, cancel := context.WithTimeout(bg, 20*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- fa.Fill(ctx) }()
	go func() { errs <- fb.Fill(ctx) }()
	for range 2 {
		if err := recv(t, errs, "Fill"); err != nil {
			t.Fatal(err)
		}
	}
	maxActive := src.MaxActive()
	if maxActive != limit {
		t.Fatalf("max concurrent fetches %d, want exactly the pool limit %d", maxActive, limit)
	}
	if _, seen := pool.stats(); seen > limit {
		t.Fatalf("pool handed out %d slots, limit %d", seen, limit)
	}
	readAll(t, fa, 100000)
	readAll(t, fb, 100000)
}

func TestPrefetchLeavesRoomForDemand(t *testing.T) {
	size := int64(16 * testChunk)
	src := newFake(size)
	release := make(chan struct{})
	demandOff := int64(15 * testChunk)
	src.Gate = func(off, n int64) <-chan struct{} {
		if off < demandOff {
			return release
		}
		return nil
	}
	src.Started = make(chan cachetest.Call, 64)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(4), MaxRequest: testChunk})
	f.StartPrefetch()
	f.StartPrefetch() // a second call must not start a second prefetcher
	for range 3 {
		if c := recv(t, src.Started, "prefetch fetches"); c.Off >= demandOff {
			t.Fatalf("prefetch fetched the demand chunk first: %v", c)
		}
	}
	// Prefetch now holds 3 of 4 slots and may take no more; a demand read
	// must get the last one while every prefetch fetch is still blocked.
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	buf := make([]byte, testChunk)
	if _, err := f.ReadAt(ctx, buf, demandOff); err != nil {
		t.Fatalf("demand read while prefetch saturated: %v", err)
	}
	if !bytes.Equal(buf, want(demandOff, testChunk)) {
		t.Fatal("demand read: wrong bytes")
	}
	if c := recv(t, src.Started, "demand fetch"); c.Off != demandOff {
		t.Fatalf("4th fetch was %v, want the demand chunk", c)
	}
	close(release)
	go func() {
		for range src.Started {
		}
	}()
	waitFor(t, "prefetch to complete", func() bool { st := f.Stats(); return st.Present == st.Chunks })
	if got := fileBytes(t, f.DataPath()); !bytes.Equal(got, want(0, size)) {
		t.Fatal("prefetched data differs from the pattern")
	}
	f.Close()
	close(src.Started)
}

func TestSecondOpenFailsLockedNamingPID(t *testing.T) {
	dir := cacheDir(t)
	m := testMeta(2 * testChunk)
	f := openT(t, dir, m, newFake(m.Size), Options{})
	start := time.Now()
	f2, err := Open(dir, m, newFake(m.Size), Options{})
	if err == nil {
		f2.Close()
		t.Fatal("second Open of a cache in use succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if want := fmt.Sprintf("in use by rangefs pid %d", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name the holder (%q)", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second Open took %v to fail", d)
	}
	if _, _, err := Inspect(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("Inspect of a cache in use: %v, want ErrLocked", err)
	}
	if err := readChunk(t, f, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, st, err := Inspect(dir)
	if err != nil {
		t.Fatalf("Inspect after Close: %v", err)
	}
	if got.Size != m.Size || got.ETag != m.ETag || got.URL != m.URL || st.Present != 1 || st.Chunks != 2 || st.BytesPresent != testChunk {
		t.Fatalf("Inspect = %+v %+v", got, st)
	}
}

func TestStaleAfterRemoteChanged(t *testing.T) {
	size := int64(4 * testChunk)
	src := newFake(size)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{})
	if err := readChunk(t, f, 0); err != nil {
		t.Fatal(err)
	}
	src.Set(func(s *cachetest.Source) { s.Changed = true })
	_, err := f.ReadAt(bg, make([]byte, 10), 2*testChunk)
	if !errors.Is(err, ErrStale) || !IsRemoteChanged(err) {
		t.Fatalf("read after remote change: %v, want ErrStale", err)
	}
	src.Set(func(s *cachetest.Source) { s.Changed = false })
	// Even cached chunks are refused now: the handle is bound to a version.
	if _, err := f.ReadAt(bg, make([]byte, 10), 0); !errors.Is(err, ErrStale) {
		t.Fatalf("cached read after stale: %v", err)
	}
	if _, err := f.NewReader().ReadAt(bg, make([]byte, 10), 0); !errors.Is(err, ErrStale) {
		t.Fatalf("Reader read after stale: %v", err)
	}
	if err := f.Fill(bg); !errors.Is(err, ErrStale) {
		t.Fatalf("Fill after stale: %v", err)
	}
	if IsRemoteChanged(cachetest.ErrInjected) || IsRemoteChanged(nil) {
		t.Fatal("IsRemoteChanged true for an ordinary error")
	}
}

func TestPartialChunkNeverPresent(t *testing.T) {
	m := testMeta(4 * testChunk)
	dir := cacheDir(t)
	src := newFake(m.Size)
	src.Partial = testChunk + testChunk/2 // chunk 0 complete, chunk 1 half
	f, err := Open(dir, m, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(bg, make([]byte, 2*testChunk), 0); !errors.Is(err, cachetest.ErrInjected) {
		t.Fatalf("read with a failing fetch: %v", err)
	}
	settle(t, f)
	if st := f.Stats(); st.Present != 1 || !f.tab.present.get(0) || f.tab.present.get(1) {
		t.Fatalf("after a fetch failed mid-chunk 1: present %d (chunk0 %v chunk1 %v), want only chunk 0",
			st.Present, f.tab.present.get(0), f.tab.present.get(1))
	}
	// A later read retries and succeeds.
	if err := readChunk(t, f, 1); err != nil {
		t.Fatalf("retry: %v", err)
	}
	src.Set(func(s *cachetest.Source) { s.Partial = testChunk / 3 })
	if err := readChunk(t, f, 3); !errors.Is(err, cachetest.ErrInjected) {
		t.Fatalf("single-chunk partial fetch: %v", err)
	}
	if f.tab.present.get(3) {
		t.Fatal("a chunk whose fetch failed half-way is marked present")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, st, err := Inspect(dir); err != nil || st.Present != 2 {
		t.Fatalf("index after close: %+v %v, want chunks 0 and 1", st, err)
	}
	f2 := openT(t, dir, m, newFake(m.Size), Options{})
	if err := f2.Verify(bg); err != nil {
		t.Fatal(err)
	}
	readAll(t, f2, 33333)
}

func TestFetchErrorLeavesChunksMissing(t *testing.T) {
	size := int64(3 * testChunk)
	src := newFake(size)
	src.FailN = 1
	f := openT(t, cacheDir(t), testMeta(size), src, Options{})
	if err := readChunk(t, f, 1); !errors.Is(err, cachetest.ErrInjected) {
		t.Fatalf("first read: %v, want the injected error", err)
	}
	if f.Stats().Present != 0 {
		t.Fatal("failed chunk marked present")
	}
	if err := readChunk(t, f, 1); err != nil {
		t.Fatalf("retry: %v", err)
	}
}

func TestFill(t *testing.T) {
	size := int64(40*testChunk + 99)
	t.Run("complete", func(t *testing.T) {
		src := newFake(size)
		f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(4), MaxRequest: 4 * testChunk})
		if err := f.Fill(bg); err != nil {
			t.Fatal(err)
		}
		if st := f.Stats(); st.Present != st.Chunks || st.BytesFetched != size {
			t.Fatalf("after Fill: %+v", st)
		}
		// 41 chunks over 4 connections: pieces of min(4, ceil(41/4)) = 4
		// chunks, 11 of them, and more only where an idle worker split a
		// run at the end (the end game), never a longer one.
		calls := src.Calls()
		if len(calls) < 11 {
			t.Fatalf("%d fetches, want at least 11", len(calls))
		}
		for _, c := range calls {
			if c.N > 4*testChunk {
				t.Fatalf("fetch %v longer than MaxRequest", c)
			}
		}
		if got := fileBytes(t, f.DataPath()); !bytes.Equal(got, want(0, size)) {
			t.Fatal("filled data differs")
		}
		if err := f.Verify(bg); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("permanent error", func(t *testing.T) {
		src := newFake(size)
		src.FailN = 1 << 30
		f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(4)})
		if err := f.Fill(bg); !errors.Is(err, cachetest.ErrInjected) {
			t.Fatalf("Fill: %v, want the injected error", err)
		}
		if f.Stats().Present != 0 {
			t.Fatal("chunks present after failed fetches")
		}
		src.Set(func(s *cachetest.Source) { s.FailN = 0 })
		if err := f.Fill(bg); err != nil {
			t.Fatalf("second Fill: %v", err)
		}
		readAll(t, f, 1<<20)
	})
	t.Run("ctx cancel", func(t *testing.T) {
		src := newFake(size)
		release := make(chan struct{})
		defer close(release)
		src.Gate = func(off, n int64) <-chan struct{} { return release }
		src.Started = make(chan cachetest.Call, 64)
		f := openT(t, cacheDir(t), testMeta(size), src, Options{})
		ctx, cancel := context.WithCancel(bg)
		errc := make(chan error, 1)
		go func() { errc <- f.Fill(ctx) }()
		recv(t, src.Started, "a fill fetch")
		cancel()
		if err := recv(t, errc, "Fill to return"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Fill after cancel: %v", err)
		}
	})
}

// Read-ahead grows with the bytes a stream consumed, not with its reads:
// nothing on a first read, then at most what the stream has read so far;
// a seek cancels what the stream had claimed.
func TestReaderReadAhead(t *testing.T) {
	size := int64(32 * testChunk)
	src := newFake(size)
	release := make(chan struct{})
	src.Gate = func(off, n int64) <-chan struct{} {
		if off >= testChunk && off < 20*testChunk {
			return release // read-ahead stays blocked
		}
		return nil
	}
	f := openT(t, cacheDir(t), testMeta(size), src, Options{ReadAheadMax: 4 * testChunk})
	r := f.NewReader()
	read := func(off, n int64) {
		t.Helper()
		buf := make([]byte, n)
		if _, err := r.ReadAt(bg, buf, off); err != nil || !bytes.Equal(buf, want(off, n)) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	planned := func(i int) (cursor, hi int64) {
		f.mu.Lock()
		defer f.mu.Unlock()
		return r.streams[i].ra.cursor, r.streams[i].ra.hi
	}
	read(0, 4096)
	if _, hi := planned(0); hi != 0 {
		t.Fatalf("a first read planned read-ahead up to chunk %d", hi)
	}
	read(4096, testChunk-4096) // consumed one chunk: one chunk ahead
	if _, hi := planned(0); hi != 2 {
		t.Fatalf("read-ahead up to chunk %d after one chunk read, want 2", hi)
	}
	// A seek: the stream's read-ahead is cancelled.
	read(20*testChunk, testChunk)
	if c, hi := planned(0); c != hi {
		t.Fatalf("after a seek the old stream still plans [%d, %d)", c, hi)
	}
	if len(r.streams) != 2 || r.seeks != 1 {
		t.Fatalf("%d streams, %d seeks; want 2 and 1", len(r.streams), r.seeks)
	}
	close(release)
	read(21*testChunk, testChunk)
	waitFor(t, "read-ahead of chunk 22", func() bool { return f.tab.present.get(22) })
	f.Close()
	if f.tab.present.get(25) {
		t.Fatal("read-ahead ran past what the stream consumed")
	}
}

func TestCloseCancelsAndIsIdempotent(t *testing.T) {
	size := int64(4 * testChunk)
	src := newFake(size)
	never := make(chan struct{})
	src.Gate = func(off, n int64) <-chan struct{} { return never }
	waiting := make(chan struct{}, 1)
	f, err := Open(cacheDir(t), testMeta(size), src, Options{onWait: func() { waiting <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(bg, make([]byte, 10), 0)
		errc <- err
	}()
	recv(t, waiting, "reader waiting")
	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	if err := recv(t, closed, "Close with a fetch in flight"); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, errc, "reader"); !errors.Is(err, ErrClosed) {
		t.Fatalf("reader during Close: %v, want ErrClosed", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := f.ReadAt(bg, make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadAt after Close: %v", err)
	}
	if err := f.Fill(bg); !errors.Is(err, ErrClosed) {
		t.Fatalf("Fill after Close: %v", err)
	}
	if err := f.Verify(bg); !errors.Is(err, ErrClosed) {
		t.Fatalf("Verify after Close: %v", err)
	}
	f.StartPrefetch() // must not panic or start anything
	if _, err := os.Stat(filepath.Join(filepath.Dir(f.DataPath()), ownerName)); !os.IsNotExist(err) {
		t.Fatalf("owner file left after Close: %v", err)
	}
}

func TestDirName(t *testing.T) {
	a, b := DirName("https://h/x"), DirName("https://h/y")
	if len(a) != 32 || a == b || a != DirName("https://h/x") || strings.Trim(a, "0123456789abcdef") != "" {
		t.Fatalf("DirName: %q %q", a, b)
	}
}

// makeIndex writes an index for m in dir with records for chunks [0, n)
// (checksums of the pattern, data file left sparse), as a cache with many
// chunks looks after a crash that lost the data page cache.
func makeIndex(t testing.TB, dir string, m Meta, n int64) {
	t.Helper()
	f, err := Open(dir, m, newFake(m.Size), Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	db, err := bolt.Open(filepath.Join(dir, indexName), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChunks)
		b.FillPercent = 1
		l := newLayout(m.Size, m.ChunkSize)
		for i := range n {
			// One (wrong) CRC per block, as format 2 records hold.
			v := make([]byte, 4*l.blocks(i))
			for k := 0; k < len(v); k += 4 {
				binary.BigEndian.PutUint32(v[k:], uint32(i+int64(k))*2654435761)
			}
			if err := b.Put(chunkKey(i), v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestOpen100kRecords(t *testing.T) {
	const n = 100_000
	m := testMeta(n * testChunk)
	dir := cacheDir(t)
	makeIndex(t, dir, m, n)
	src := newFake(m.Size)
	f := openT(t, dir, m, src, Options{})
	if st := f.Stats(); st.Present != n {
		t.Fatalf("present = %d, want %d", st.Present, n)
	}
	if src.NCalls() != 0 {
		t.Fatal("Open fetched")
	}
	// The records do not match the (sparse, zero) data: first use detects
	// it and refetches.
	if err := readChunk(t, f, 777); err != nil {
		t.Fatal(err)
	}
	if calls := src.Calls(); len(calls) != 1 || calls[0].Off != 777*testChunk {
		t.Fatalf("calls %v, want one refetch of chunk 777", calls)
	}
}

func TestReaderOutOfOrderIsNotASeek(t *testing.T) {
	size := int64(32 * testChunk)
	f := openT(t, cacheDir(t), testMeta(size), newFake(size), Options{ReadAheadMax: 8 * testChunk})
	r := f.NewReader()
	buf := make([]byte, testChunk/2)
	read := func(off int64) {
		t.Helper()
		if _, err := r.ReadAt(bg, buf, off); err != nil || !bytes.Equal(buf, want(off, int64(len(buf)))) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	read(0)
	read(testChunk / 2)
	h := int64(testChunk / 2)
	read(3 * h) // the kernel's next two reads arrive swapped
	read(2 * h)
	read(4 * h)
	if len(r.streams) != 1 || r.seeks != 0 || r.streams[0].consumed != 5*h {
		t.Fatalf("%d streams, %d seeks, consumed %d; want one stream of %d bytes and no seek", len(r.streams), r.seeks, r.streams[0].consumed, 5*h)
	}
}

func TestDamagedIndexPageRebuilt(t *testing.T) {
	const n = 20_000
	m := testMeta(n * testChunk)
	dir := cacheDir(t)
	makeIndex(t, dir, m, n)
	path := filepath.Join(dir, indexName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// Smash pages in the middle (the meta pages at the start stay valid,
	// so bbolt opens the file and only the cursor meets the damage).
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := bytes.Repeat([]byte{0xa5}, int(fi.Size()/2))
	if _, err := fh.WriteAt(junk, fi.Size()/4); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	src := newFake(m.Size)
	f := openT(t, dir, m, src, Options{})
	if !strings.Contains(f.Discarded(), "unreadable") || f.Stats().Present != 0 {
		t.Fatalf("damaged index: discarded %q, present %d", f.Discarded(), f.Stats().Present)
	}
	if err := readChunk(t, f, 12345); err != nil {
		t.Fatal(err)
	}
}

// Stats.Verified and AllVerified count only chunks checked this session.
func TestVerifiedCount(t *testing.T) {
	size := int64(5*testChunk + 10)
	dir := cacheDir(t)
	m := testMeta(size)
	src := newFake(size)
	f := openT(t, dir, m, src, Options{})
	if f.AllVerified() {
		t.Fatal("empty cache reported all verified")
	}
	if err := readChunk(t, f, 2); err != nil {
		t.Fatal(err)
	}
	settle(t, f)
	if st := f.Stats(); st.Verified != 1 || st.Present != 1 {
		t.Fatalf("after one read: %+v", st)
	}
	if err := f.Fill(bg); err != nil {
		t.Fatal(err)
	}
	if st := f.Stats(); st.Verified != 6 || !f.AllVerified() {
		t.Fatalf("after Fill: %+v", st)
	}
	f.Close()

	// Reopened, everything is present but nothing verified yet; one bad
	// chunk is dropped by Verify and the count follows.
	flipByte(t, f.DataPath(), 4*testChunk+5)
	f2 := openT(t, dir, m, src, Options{})
	if st := f2.Stats(); st.Present != 6 || st.Verified != 0 || f2.AllVerified() {
		t.Fatalf("after reopen: %+v", st)
	}
	if err := readChunk(t, f2, 0); err != nil {
		t.Fatal(err)
	}
	if st := f2.Stats(); st.Verified != 1 {
		t.Fatalf("after reading chunk 0: %+v", st)
	}
	if err := f2.Verify(bg); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify: %v, want ErrCorrupt", err)
	}
	if st := f2.Stats(); st.Present != 5 || st.Verified != 5 || f2.AllVerified() {
		t.Fatalf("after Verify dropped a chunk: %+v", st)
	}
	if err := f2.Fill(bg); err != nil {
		t.Fatal(err)
	}
	if st := f2.Stats(); st.Verified != 6 || !f2.AllVerified() {
		t.Fatalf("after refill: %+v", st)
	}

	empty := openT(t, cacheDir(t), testMeta(0), newFake(0), Options{})
	if !empty.AllVerified() {
		t.Fatal("an empty file is complete")
	}
}

// Prefetch of a complete cache from an earlier session verifies it (so the
// file can be passed through to the kernel) without fetching; a chunk that
// fails its checksum is fetched again.
func TestPrefetchVerifiesCompleteCache(t *testing.T) {
	size := int64(12*testChunk + 99)
	dir := cacheDir(t)
	m := testMeta(size)
	fillAndClose(t, dir, m)
	flipByte(t, filepath.Join(dir, dataName), 7*testChunk+3)

	src := newCountingFake(size)
	f := openT(t, dir, m, src, Options{})
	if f.AllVerified() {
		t.Fatal("a reopened cache claims to be verified before any check")
	}
	f.StartPrefetch()
	waitFor(t, "prefetch to verify the whole file", f.AllVerified)
	calls := src.Calls()
	if len(calls) != 1 || calls[0].Off != 7*testChunk || calls[0].N != testChunk {
		t.Errorf("prefetch fetched %v, want only the corrupted chunk 7", calls)
	}
	readAll(t, f, 65536)
}
