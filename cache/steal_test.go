package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"rangefs/cache/cachetest"
)

// flightsOf returns the flights of chunks [first, end) now (nil where none).
func flightsOf(f *File, first, end int64) []*flight {
	f.mu.Lock()
	defer f.mu.Unlock()
	fls := make([]*flight, 0, end-first)
	for i := first; i < end; i++ {
		fls = append(fls, f.tab.flights[i])
	}
	return fls
}

func resolved(fl *flight) bool {
	select {
	case <-fl.done:
		return true
	default:
		return false
	}
}

// readRange reads [off, off+n) of f at demand priority, bounded in time,
// and checks the bytes.
func readRange(t *testing.T, f *File, off, n int64) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	buf := make([]byte, n)
	got, err := f.ReadAt(ctx, buf, off)
	if err == io.EOF && off+int64(got) == f.Meta().Size {
		err = nil
	}
	if err == nil && !bytes.Equal(buf[:got], want(off, int64(got))) {
		err = fmt.Errorf("read at %d: wrong bytes", off)
	}
	return err
}

// With one prefetch connection the whole file is one run; the demand read
// for its last chunk must fetch that chunk itself while the prefetch fetch
// is still blocked (a read that waits on the run deadlocks here, and the
// bounded read fails), and the prefetch must then finish the rest without
// fetching any chunk a second time.
func TestDemandStealsEndOfBlockedPrefetchRun(t *testing.T) {
	size := int64(7*testChunk + 999) // 8 chunks, the last one short
	src := newCountingFake(size)
	release := make(chan struct{})
	src.Gate = func(off, n int64) <-chan struct{} {
		if off == 0 {
			return release
		}
		return nil
	}
	src.Started = make(chan cachetest.Call, 16)
	// NewPool(2) leaves prefetch one connection, so it claims all 8 chunks
	// as one run.
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(2)})
	f.StartPrefetch()
	if c := recv(t, src.Started, "prefetch fetch"); c != (cachetest.Call{Off: 0, N: size}) {
		t.Fatalf("prefetch fetch %v, want the whole file as one run", c)
	}
	before := flightsOf(f, 0, 8)
	for i, fl := range before {
		if fl == nil {
			t.Fatalf("chunk %d not in flight in the prefetch run", i)
		}
	}

	if err := readRange(t, f, 7*testChunk, 999); err != nil {
		t.Fatalf("demand read of the run's last chunk: %v", err)
	}
	if c := recv(t, src.Started, "demand fetch"); c != (cachetest.Call{Off: 7 * testChunk, N: 999}) {
		t.Fatalf("demand fetch %v, want only the stolen chunk", c)
	}
	// The stolen chunk kept its flight (anyone waiting on it was woken by
	// the demand fetch); the rest still belongs to the blocked prefetch.
	// The read may return before the chunk is committed: wait for that.
	recv(t, before[7].done, "commit of the stolen chunk")
	if !resolved(before[7]) || before[7].err != nil {
		t.Fatalf("flight of the stolen chunk: resolved %v, err %v", resolved(before[7]), before[7].err)
	}
	for i, fl := range before[:7] {
		if resolved(fl) {
			t.Fatalf("chunk %d resolved while its prefetch fetch is blocked", i)
		}
	}

	close(release)
	waitFor(t, "prefetch to complete", func() bool { st := f.Stats(); return st.Present == st.Chunks })
	// The last chunk may be committed before its Write returned to the
	// Source, which counts the bytes only then.
	settle(t, f)
	checkOnce(t, src, f)
	if got := fmt.Sprint(sortedCalls(src)); got != fmt.Sprint([]cachetest.Call{{Off: 0, N: size}, {Off: 7 * testChunk, N: 999}}) {
		t.Fatalf("fetches %v, want the cut prefetch run and the demand chunk only", got)
	}
	if got := fileBytes(t, f.DataPath()); !bytes.Equal(got, want(0, size)) {
		t.Fatal("data file differs from the pattern")
	}
	if st := f.Stats(); st.Verified != st.Chunks || !f.AllVerified() {
		t.Fatalf("after the fill: %+v, AllVerified %v", st, f.AllVerified())
	}
}

// A demand read in the middle of a blocked prefetch run takes what it needs;
// the chunks after it become missing at once (their flights end with
// errAbandoned, so nobody is left waiting on a fetch that will not come) and
// the prefetch fetches them later with a new request.
func TestStolenChunksReturnToThePlan(t *testing.T) {
	size := int64(8 * testChunk)
	src := newCountingFake(size)
	release := make(chan struct{})
	src.Gate = func(off, n int64) <-chan struct{} {
		if off == 0 {
			return release
		}
		return nil
	}
	src.Started = make(chan cachetest.Call, 16)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(2)})
	f.StartPrefetch()
	recv(t, src.Started, "prefetch fetch")
	before := flightsOf(f, 0, 8)

	// Chunks 3 and 4.
	if err := readRange(t, f, 3*testChunk+100, testChunk); err != nil {
		t.Fatal(err)
	}
	if c := recv(t, src.Started, "demand fetch"); c != (cachetest.Call{Off: 3 * testChunk, N: 2 * testChunk}) {
		t.Fatalf("demand fetch %v, want chunks 3-4 in one request", c)
	}
	for i := 3; i < 5; i++ {
		recv(t, before[i].done, "commit of a stolen chunk")
		if !resolved(before[i]) || before[i].err != nil {
			t.Fatalf("chunk %d (stolen and fetched): resolved %v err %v", i, resolved(before[i]), before[i].err)
		}
	}
	for i := 5; i < 8; i++ {
		if !resolved(before[i]) || !errors.Is(before[i].err, errAbandoned) {
			t.Fatalf("chunk %d (given back): resolved %v err %v, want errAbandoned", i, resolved(before[i]), before[i].err)
		}
	}
	for i, fl := range flightsOf(f, 5, 8) {
		if fl != nil {
			t.Fatalf("chunk %d still in flight after being given back", 5+i)
		}
	}
	for i := range 3 {
		if resolved(before[i]) {
			t.Fatalf("chunk %d resolved while its prefetch fetch is blocked", i)
		}
	}

	close(release)
	waitFor(t, "prefetch to complete", func() bool { st := f.Stats(); return st.Present == st.Chunks })
	// The last chunk may be committed before its Write returned to the
	// Source, which counts the bytes only then.
	settle(t, f)
	checkOnce(t, src, f)
	wantCalls := []cachetest.Call{{Off: 0, N: size}, {Off: 3 * testChunk, N: 2 * testChunk}, {Off: 5 * testChunk, N: 3 * testChunk}}
	if got := fmt.Sprint(sortedCalls(src)); got != fmt.Sprint(wantCalls) {
		t.Fatalf("fetches %v, want %v", got, wantCalls)
	}
	if got := fileBytes(t, f.DataPath()); !bytes.Equal(got, want(0, size)) {
		t.Fatal("data file differs from the pattern")
	}
}

// Read-ahead steals from prefetch too: a sequential reader's window lands in
// a blocked prefetch run past its first chunk, and read-ahead fetches those
// chunks itself while the prefetch stays blocked. It leaves the chunk right
// after the one being written to a streaming run (its writer gets there
// within about a chunk's time), but takes it from a stalled one.
func TestReadAheadStealsFromPrefetch(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stalled  time.Duration    // Options.stalledAfter
		stolen   []cachetest.Call // read-ahead's fetches
		notReady int64            // a stolen chunk that must not be present before the prefetch is released
	}{
		// The blocked prefetch counts as streaming: chunk 3 is near.
		{"streaming", time.Hour, []cachetest.Call{{Off: 4 * testChunk, N: testChunk}}, 3},
		// It counts as stalled at once: chunk 3 goes too, then chunk 4
		// (the read-ahead grows by a chunk per chunk consumed).
		{"stalled", time.Nanosecond, []cachetest.Call{{Off: 3 * testChunk, N: testChunk}, {Off: 4 * testChunk, N: testChunk}}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := int64(12 * testChunk)
			src := newCountingFake(size)
			f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(2), ReadAheadMax: 4 * testChunk, stalledAfter: tc.stalled})
			for i := range int64(2) {
				if err := readChunk(t, f, i); err != nil {
					t.Fatal(err)
				}
			}
			release := make(chan struct{})
			src.Set(func(s *cachetest.Source) {
				s.Gate = func(off, n int64) <-chan struct{} {
					if off == 2*testChunk {
						return release
					}
					return nil
				}
				s.Started = make(chan cachetest.Call, 16)
			})
			f.StartPrefetch()
			if c := recv(t, src.Started, "prefetch fetch"); c != (cachetest.Call{Off: 2 * testChunk, N: 10 * testChunk}) {
				t.Fatalf("prefetch fetch %v, want chunks 2-11 as one run", c)
			}
			// Four chunks consumed in chunk 0 grow the read-ahead to 4
			// chunks: 1..4, of which 1 is present and 2 is the
			// prefetch's current chunk (never stealable).
			r := f.NewReader()
			buf := make([]byte, testChunk)
			got := map[cachetest.Call]bool{}
			for k := range 4 {
				if _, err := r.ReadAt(bg, buf, 0); err != nil || !bytes.Equal(buf, want(0, testChunk)) {
					t.Fatalf("read at 0: %v", err)
				}
				if k == 2 && len(tc.stolen) == 2 {
					// Chunk 3 is stolen before the window grows on.
					got[recv(t, src.Started, "read-ahead fetch")] = true
				}
			}
			for len(got) < len(tc.stolen) {
				got[recv(t, src.Started, "read-ahead fetch")] = true
			}
			for _, c := range tc.stolen {
				if !got[c] {
					t.Fatalf("read-ahead fetches %v, want %v", got, tc.stolen)
				}
			}
			last := tc.stolen[len(tc.stolen)-1]
			waitFor(t, "read-ahead", func() bool { return verifiedRange(f, last.Off/testChunk, (last.Off+last.N)/testChunk) })
			if f.tab.present.get(2) || (tc.notReady >= 0 && f.tab.present.get(tc.notReady)) {
				t.Fatal("a chunk of the blocked prefetch is present")
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
			// The prefetch wrote up to the cut and then fetched what
			// read-ahead gave back: just past the reader's window (chunk
			// 5) first, in pieces as small as read-ahead's (see
			// plan.follow), then the rest in one piece.
			wantCalls := append([]cachetest.Call{{Off: 0, N: testChunk}, {Off: testChunk, N: testChunk}, {Off: 2 * testChunk, N: 10 * testChunk}}, tc.stolen...)
			wantCalls = append(wantCalls, cachetest.Call{Off: 5 * testChunk, N: 2 * testChunk}, cachetest.Call{Off: 7 * testChunk, N: 2 * testChunk}, cachetest.Call{Off: 9 * testChunk, N: 3 * testChunk})
			if got := fmt.Sprint(sortedCalls(src)); got != fmt.Sprint(wantCalls) {
				t.Fatalf("fetches %v, want %v", got, wantCalls)
			}
		})
	}
}

// When every Pool slot is busy, a background fetch gives its slot to a
// queued demand read at its next chunk boundary instead of streaming the
// rest of its run first. Here the prefetch fetch would block after its
// third chunk until the demand read returned, so a prefetch that does not
// yield deadlocks the test (bounded: the read times out).
func TestBusyPrefetchYieldsSlotToQueuedDemand(t *testing.T) {
	size := int64(8 * testChunk)
	src := newCountingFake(size)
	src.WriteSize = testChunk
	resume, afterB, gateA := make(chan struct{}), make(chan struct{}), make(chan struct{})
	paused := make(chan struct{}) // closed when the prefetch waits on resume
	src.Gate = func(off, n int64) <-chan struct{} {
		if off == 6*testChunk {
			return gateA
		}
		return nil
	}
	src.Pause = func(off, done int64) <-chan struct{} {
		switch {
		case off != 0:
			return nil
		case done == testChunk:
			close(paused)
			return resume
		case done == 3*testChunk:
			return afterB
		}
		return nil
	}
	src.Started = make(chan cachetest.Call, 16)
	pool := NewPool(2)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: pool})
	f.StartPrefetch()
	recv(t, src.Started, "prefetch fetch")
	// Chunk 0 is written, and the prefetch has passed its end (it waits
	// before writing chunk 1), before anyone queues, so the yield must come
	// at the end of chunk 1. (Waiting for chunk 0 to be present is not
	// enough: the boundary check comes just after.)
	recv(t, paused, "the prefetch to pause in chunk 1")
	waitFor(t, "chunk 0", func() bool { return f.tab.present.get(0) })

	// Reader A takes the second slot and keeps it.
	errA := make(chan error, 1)
	go func() { errA <- readRange(t, f, 6*testChunk, testChunk) }()
	if c := recv(t, src.Started, "reader A's fetch"); c != (cachetest.Call{Off: 6 * testChunk, N: testChunk}) {
		t.Fatalf("reader A's fetch %v", c)
	}
	// Reader B finds no slot and queues.
	errB := make(chan error, 1)
	go func() { errB <- readRange(t, f, 7*testChunk, testChunk) }()
	waitFor(t, "reader B to queue for a slot", func() bool { return queued(pool, prioDemand) == 1 })

	close(resume)
	if err := recv(t, errB, "reader B"); err != nil {
		t.Fatalf("reader B: %v", err)
	}
	close(afterB)
	close(gateA)
	if err := recv(t, errA, "reader A"); err != nil {
		t.Fatalf("reader A: %v", err)
	}
	waitFor(t, "prefetch to complete", func() bool { st := f.Stats(); return st.Present == st.Chunks })
	// The last chunk may be committed before its Write returned to the
	// Source, which counts the bytes only then.
	settle(t, f)
	checkOnce(t, src, f)
	// The prefetch wrote chunks 0-1, yielded, and fetched 2-5 later.
	wantCalls := []cachetest.Call{{Off: 0, N: size}, {Off: 2 * testChunk, N: 4 * testChunk}, {Off: 6 * testChunk, N: testChunk}, {Off: 7 * testChunk, N: testChunk}}
	if got := fmt.Sprint(sortedCalls(src)); got != fmt.Sprint(wantCalls) {
		t.Fatalf("fetches %v, want %v", got, wantCalls)
	}
}

// Many readers, sequential Readers with read-ahead and the prefetcher all
// race over one file whose Source is slow enough for runs to overlap and be
// stolen from. Every read must return the right bytes, and no chunk may
// ever be received twice.
func TestStealingUnderConcurrencyFetchesEachChunkOnce(t *testing.T) {
	size := int64(48*testChunk + 123)
	src := newCountingFake(size)
	src.WriteSize = 16 << 10
	src.Pause = func(off, done int64) <-chan struct{} {
		time.Sleep(100 * time.Microsecond)
		return nil
	}
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(4), MaxRequest: 8 * testChunk, ReadAheadMax: 4 * testChunk})
	f.StartPrefetch()

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 15 {
				off := rng.Int64N(size)
				n := 1 + rng.Int64N(3*testChunk)
				if err := readRange(t, f, off, n); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for g := range 2 {
		wg.Go(func() {
			r := f.NewReader()
			buf := make([]byte, 32<<10)
			for off := int64(g) * 20 * testChunk; off < size; off += int64(len(buf)) {
				ctx, cancel := context.WithTimeout(bg, 10*time.Second)
				n, err := r.ReadAt(ctx, buf, off)
				cancel()
				if err == io.EOF && off+int64(n) == size {
					err = nil
				}
				if err == nil && !bytes.Equal(buf[:n], want(off, int64(n))) {
					err = fmt.Errorf("sequential read at %d: wrong bytes", off)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, "prefetch to complete", func() bool { st := f.Stats(); return st.Present == st.Chunks })
	// Let the last read-ahead and prefetch workers wind down before
	// counting: Close waits for them.
	f.Close()
	checkOnce(t, src, f)
	if got := fileBytes(t, f.DataPath()); !bytes.Equal(got, want(0, size)) {
		t.Fatal("data file differs from the pattern")
	}
}
