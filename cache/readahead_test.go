package cache

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"rangefs/cache/cachetest"
)

func TestReadAheadWindow(t *testing.T) {
	for _, tc := range []struct {
		raMax, chunk int64
		conns        int
		want         int64 // chunks
	}{
		{32 << 20, 1 << 20, 8, 16},   // two 1-chunk pieces per connection
		{32 << 20, 1 << 20, 16, 32},  // -j 16 reaches the default cap
		{32 << 20, 1 << 20, 32, 32},  // and stops there
		{8 << 20, 1 << 20, 8, 8},     // a smaller cap wins
		{32 << 20, 64 << 10, 8, 256}, // small chunks: pieces of 1 MiB, 16 MiB in all
		{32 << 20, 4 << 20, 8, 8},    // big chunks: capped, in whole chunks
		{1 << 20, 4 << 20, 8, 1},     // a cap below one chunk still reads one ahead
		{32 << 20, 1 << 20, 1, 2},
	} {
		if got := readAheadWindow(tc.raMax, tc.chunk, tc.conns); got != tc.want {
			t.Errorf("readAheadWindow(%d, %d, %d) = %d, want %d", tc.raMax, tc.chunk, tc.conns, got, tc.want)
		}
	}
}

// checkAtMostOnce fails t if any chunk was received more than once.
func checkAtMostOnce(t testing.TB, s *cachetest.Source, f *File) {
	t.Helper()
	for i := range f.lay.chunks {
		if got := s.Received(i); got > f.lay.chunkLen(i) {
			t.Errorf("chunk %d: received %d bytes, more than its %d", i, got, f.lay.chunkLen(i))
		}
	}
}

// readClaimed reads 4 KiB at off through r, checks the bytes, and waits
// until read-ahead has claimed its whole window, so which pieces the next
// read finds claimed does not depend on how fast the workers are.
func readClaimed(t *testing.T, r *Reader, off int64) { t.Helper(); readClaimedN(t, r, off, 4096) }

func readClaimedN(t *testing.T, r *Reader, off, n int64) {
	t.Helper()
	buf := make([]byte, n)
	if _, err := r.ReadAt(bg, buf, off); err != nil || !bytes.Equal(buf, want(off, n)) {
		t.Fatalf("read at %d: %v", off, err)
	}
	f := r.f
	waitFor(t, "read-ahead claims", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, st := range r.streams {
			for i := st.ra.cursor; i < st.ra.hi; i++ {
				if f.tab.flight(i) == nil && !f.tab.present.get(i) {
					return false
				}
			}
		}
		return true
	})
}

// consumeAt reads the chunk at off through r k times. Read-ahead grows with
// the bytes a stream consumed, and a re-read continues the stream, so its
// read-ahead reaches k chunks past the chunk (1, 2, ... k after each read
// but the first) without the reader needing the chunks after it.
func consumeAt(t *testing.T, r *Reader, off int64, k int) {
	t.Helper()
	for range k {
		readClaimedN(t, r, off, testChunk)
	}
}

// One sequential reader spreads its read-ahead window over every Pool
// connection: with every read-ahead fetch held, the Pool fills up
// although the reader itself has only asked for chunk 0.
func TestSequentialReaderUsesEveryConnection(t *testing.T) {
	const conns = 8
	size := int64(40 * testChunk)
	src := newCountingFake(size)
	release := make(chan struct{})
	src.Gate = func(off, n int64) <-chan struct{} {
		if off >= testChunk {
			return release
		}
		return nil
	}
	pool := NewPool(conns)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: pool, ReadAheadMax: 2 * conns * testChunk})
	r := f.NewReader()
	// Sixteen chunks consumed at chunk 0 earn 16 chunks of read-ahead:
	// chunks 1-16. (The reads do not wait for the claims: those that are
	// fetched are held.)
	buf := make([]byte, testChunk)
	for range 16 {
		if _, err := r.ReadAt(bg, buf, 0); err != nil || !bytes.Equal(buf, want(0, testChunk)) {
			t.Fatalf("read at 0: %v", err)
		}
	}
	waitFor(t, "read-ahead on every connection", func() bool { a, _ := pool.stats(); return a == conns })
	close(release)
	waitFor(t, "the window", func() bool { return verifiedRange(f, 1, 17) })
	f.Close()
	checkAtMostOnce(t, src, f)
	for i := int64(17); i < f.lay.chunks; i++ {
		if src.Received(i) != 0 {
			t.Fatalf("chunk %d, past the window, was fetched", i)
		}
	}
	if _, seen := pool.stats(); seen > conns {
		t.Fatalf("%d fetches at once, limit %d", seen, conns)
	}
}

// Prefetch starts just past a sequential reader's window, in pieces as
// small as read-ahead's, not at the start of the file.
func TestPrefetchFollowsSequentialReader(t *testing.T) {
	size := int64(64 * testChunk)
	src := newCountingFake(size)
	// Four connections, of which prefetch may use three; a window of 4
	// chunks over 4 connections is read in 1-chunk pieces.
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(4), ReadAheadMax: 4 * testChunk})
	r := f.NewReader()
	// Four chunks consumed at chunk 20: chunks 21-24 are read ahead and
	// prefetch should follow at 25.
	consumeAt(t, r, 20*testChunk, 4)
	waitFor(t, "read-ahead of chunks 21-24", func() bool { return verifiedRange(f, 21, 25) })

	release := make(chan struct{})
	src.Set(func(s *cachetest.Source) {
		s.Gate = func(off, n int64) <-chan struct{} { return release }
		s.Started = make(chan cachetest.Call, 64)
	})
	f.StartPrefetch()
	got := map[cachetest.Call]bool{}
	for range 3 {
		got[recv(t, src.Started, "prefetch fetch")] = true
	}
	for i := int64(25); i < 28; i++ {
		if c := (cachetest.Call{Off: i * testChunk, N: testChunk}); !got[c] {
			t.Fatalf("first prefetch fetches %v, want chunks 25, 26 and 27, one each", got)
		}
	}
	close(release)
	go func() {
		for range src.Started {
		}
	}()
	waitFor(t, "prefetch to complete", func() bool { st := f.Stats(); return st.Present == st.Chunks })
	f.Close()
	close(src.Started)
	checkOnce(t, src, f)
}

// A read that needs the chunk right after the one a streaming read-ahead
// run is writing waits for that run instead of cutting it: the reader needs
// the chunk being written first anyway. From a prefetch run it takes the
// same chunk: a random read should not wait behind a background stream.
func TestNearChunk(t *testing.T) {
	t.Run("read-ahead run keeps it", func(t *testing.T) {
		size := int64(16 * testChunk)
		src := newCountingFake(size)
		hold := make(chan struct{})
		src.Gate = func(off, n int64) <-chan struct{} {
			if off == 4*testChunk {
				return hold
			}
			return nil
		}
		src.Started = make(chan cachetest.Call, 16)
		waiting := make(chan struct{}, 4)
		// Two connections and a window of 4 chunks: pieces of 2.
		f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(2), ReadAheadMax: 4 * testChunk,
			stalledAfter: time.Hour, onWait: func() { waiting <- struct{}{} }})
		r := f.NewReader()
		// Chunks 0-1 read twice: 4 chunks consumed, so 4 chunks ahead,
		// chunks 2-5 in pieces of 2.
		readClaimedN(t, r, 0, 2*testChunk)
		readClaimedN(t, r, 0, 2*testChunk)
		for {
			if c := recv(t, src.Started, "read-ahead of chunks 4-5"); c == (cachetest.Call{Off: 4 * testChunk, N: 2 * testChunk}) {
				break
			}
		}
		for len(waiting) > 0 {
			<-waiting
		}
		errc := make(chan error, 1)
		go func() { errc <- readRange(t, f, 5*testChunk, 4096) }()
		recv(t, waiting, "the read of chunk 5 to wait")
		close(hold)
		if err := recv(t, errc, "the read of chunk 5"); err != nil {
			t.Fatal(err)
		}
		f.Close()
		checkAtMostOnce(t, src, f)
		for _, c := range src.Calls() {
			if c.Off == 5*testChunk {
				t.Fatalf("chunk 5 fetched on its own (%v): the read-ahead run was cut", c)
			}
		}
	})
	t.Run("prefetch run gives it up", func(t *testing.T) {
		size := int64(8 * testChunk)
		src := newCountingFake(size)
		hold := make(chan struct{})
		src.Gate = func(off, n int64) <-chan struct{} {
			if off == 0 {
				return hold
			}
			return nil
		}
		src.Started = make(chan cachetest.Call, 16)
		f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(2), stalledAfter: time.Hour})
		f.StartPrefetch()
		if c := recv(t, src.Started, "prefetch fetch"); c != (cachetest.Call{Off: 0, N: size}) {
			t.Fatalf("prefetch fetch %v, want the whole file as one run", c)
		}
		// The prefetch is blocked on chunk 0; this read must not wait.
		if err := readRange(t, f, testChunk, 4096); err != nil {
			t.Fatal(err)
		}
		if c := recv(t, src.Started, "demand fetch"); c != (cachetest.Call{Off: testChunk, N: testChunk}) {
			t.Fatalf("demand fetch %v, want chunk 1", c)
		}
		close(hold)
		go func() {
			for range src.Started {
			}
		}()
		waitFor(t, "prefetch to complete", func() bool { st := f.Stats(); return st.Present == st.Chunks })
		f.Close()
		close(src.Started)
		checkOnce(t, src, f)
	})
}

// When a sequential reader's window reaches the end of the file, the rest
// is read ahead in single chunks, so the last fetches end about together.
func TestReadAheadEndsInSingleChunks(t *testing.T) {
	size := int64(12 * testChunk)
	src := newCountingFake(size)
	// Four connections and a window of 8 chunks: pieces of 2, except at
	// the end of the file.
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(4), ReadAheadMax: 8 * testChunk})
	r := f.NewReader()
	// Eight chunks consumed at chunk 4: the read-ahead grows to 8 chunks,
	// the last window covering chunks 5-12, past the end.
	consumeAt(t, r, 4*testChunk, 8)
	waitFor(t, "the window", func() bool { return verifiedRange(f, 5, 12) })
	f.Close()
	checkAtMostOnce(t, src, f)
	var tail []cachetest.Call
	for _, c := range sortedCalls(src) {
		if c.Off >= 9*testChunk {
			tail = append(tail, c)
		}
	}
	if want := []cachetest.Call{{Off: 9 * testChunk, N: testChunk}, {Off: 10 * testChunk, N: testChunk}, {Off: 11 * testChunk, N: testChunk}}; fmt.Sprint(tail) != fmt.Sprint(want) {
		t.Fatalf("fetches of the last chunks %v, want %v", tail, want)
	}
}

// Once its Reader is closed (the FUSE handle was released), prefetch no
// longer follows a sequential reader's window: it starts from the first
// missing chunk, and the closed Reader refuses reads.
func TestPrefetchStopsFollowingClosedReader(t *testing.T) {
	size := int64(64 * testChunk)
	src := newCountingFake(size)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(4), ReadAheadMax: 4 * testChunk})
	r := f.NewReader()
	buf := make([]byte, 4096)
	consumeAt(t, r, 20*testChunk, 4)
	waitFor(t, "read-ahead of chunks 21-24", func() bool { return verifiedRange(f, 21, 25) })
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(bg, buf, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after Close: %v, want ErrClosed", err)
	}

	release := make(chan struct{})
	src.Set(func(s *cachetest.Source) {
		s.Gate = func(off, n int64) <-chan struct{} { return release }
		s.Started = make(chan cachetest.Call, 64)
	})
	f.StartPrefetch()
	// Prefetch may use three of the four connections.
	var got []cachetest.Call
	fromStart := false
	for range 3 {
		c := recv(t, src.Started, "prefetch fetch")
		got = append(got, c)
		fromStart = fromStart || c.Off == 0
	}
	if !fromStart {
		t.Fatalf("first prefetch fetches %v, want one at chunk 0: prefetch still follows the closed reader", got)
	}
	close(release)
	go func() {
		for range src.Started {
		}
	}()
	waitFor(t, "prefetch to complete", func() bool { st := f.Stats(); return st.Present == st.Chunks })
	f.Close()
	close(src.Started)
	checkOnce(t, src, f)
}

// A Reader told where its handle stops reading (LimitReadAhead) fetches
// no chunk past the one holding that end, however large the window its
// sequential reads earned; without the limit the same reads fetch far
// past it. Reads past the end are still served.
func TestLimitReadAheadStopsAtEnd(t *testing.T) {
	size := int64(40 * testChunk)
	end := int64(10*testChunk + testChunk/2)
	for _, limited := range []bool{true, false} {
		src := newCountingFake(size)
		f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(4), ReadAheadMax: 16 * testChunk})
		r := f.NewReader()
		if limited {
			r.LimitReadAhead(end)
		}
		buf := make([]byte, 64<<10)
		for off := int64(0); off < end; off += int64(len(buf)) {
			n := min(int64(len(buf)), end-off)
			if _, err := r.ReadAt(bg, buf[:n], off); err != nil || !bytes.Equal(buf[:n], want(off, n)) {
				t.Fatalf("read at %d: %v", off, err)
			}
		}
		last := (end + testChunk - 1) / testChunk // chunks [0, last) hold the reads
		if limited {
			waitFor(t, "the chunks read", func() bool { return verifiedRange(f, 0, last) })
			r.mu.Lock()
			streams := append([]*stream(nil), r.streams...)
			r.mu.Unlock()
			f.sched.mu.Lock()
			for _, st := range streams {
				if st.ra.hi > last {
					t.Errorf("read-ahead claims chunks up to %d, past the limit's chunk %d", st.ra.hi, last-1)
				}
			}
			f.sched.mu.Unlock()
		} else {
			waitFor(t, "read-ahead past the reads", func() bool { return src.Received(last) > 0 })
		}
		r.Close()
		f.Close()
		past := int64(0)
		for i := last; i < f.lay.chunks; i++ {
			past += src.Received(i)
		}
		if limited && past != 0 {
			t.Errorf("with the limit at %d, %d bytes past its chunk were fetched", end, past)
		}
	}
	// A read past the limit is served, on demand.
	src := newCountingFake(size)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{})
	r := f.NewReader()
	r.LimitReadAhead(testChunk)
	buf := make([]byte, 1000)
	if _, err := r.ReadAt(bg, buf, 20*testChunk); err != nil || !bytes.Equal(buf, want(20*testChunk, 1000)) {
		t.Fatalf("read past the limit: %v", err)
	}
}
