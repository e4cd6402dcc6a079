package cache

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"rangefs/cache/cachetest"
)

// When a Fill worker has nothing left to claim while another run still has
// chunks its writer has not reached, it splits that run and fetches the
// back half itself, so both connections work to the end.
func TestFillEndGameSplitsSlowRun(t *testing.T) {
	size := int64(8 * testChunk)
	src := newCountingFake(size)
	src.WriteSize = testChunk
	slow, bPaused := make(chan struct{}), make(chan struct{})
	// Fill's two pieces are chunks 0-3 (A) and 4-7 (B). B stops after
	// its first chunk, so its writer is in chunk 5; A starts only then,
	// so where the split falls does not depend on timing.
	src.Gate = func(off, n int64) <-chan struct{} {
		if off == 0 {
			return bPaused
		}
		return nil
	}
	src.Pause = func(off, done int64) <-chan struct{} {
		if off == 4*testChunk && done == testChunk {
			close(bPaused)
			return slow
		}
		return nil
	}
	src.Started = make(chan cachetest.Call, 16)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(2), MaxRequest: 4 * testChunk, stalledAfter: time.Hour})
	errc := make(chan error, 1)
	go func() { errc <- f.Fill(bg) }()
	first := map[cachetest.Call]bool{recv(t, src.Started, "fill fetch"): true, recv(t, src.Started, "fill fetch"): true}
	if !first[cachetest.Call{Off: 0, N: 4 * testChunk}] || !first[cachetest.Call{Off: 4 * testChunk, N: 4 * testChunk}] {
		t.Fatalf("first fetches %v, want chunks 0-3 and 4-7", first)
	}
	// B is in chunk 5 with 6 and 7 to go; 6 is near, so A takes 7.
	if c := recv(t, src.Started, "split fetch"); c != (cachetest.Call{Off: 7 * testChunk, N: testChunk}) {
		t.Fatalf("split fetch %v, want chunk 7", c)
	}
	waitFor(t, "chunk 7", func() bool { return verifiedRange(f, 7, 8) })
	close(slow)
	if err := recv(t, errc, "Fill"); err != nil {
		t.Fatal(err)
	}
	checkOnce(t, src, f)
	if got := fileBytes(t, f.DataPath()); !bytes.Equal(got, want(0, size)) {
		t.Fatal("data file differs from the pattern")
	}
	if n := src.NCalls(); n != 3 {
		t.Fatalf("%d fetches, want 3: %v", n, src.Calls())
	}
}

// A stalled run is split too, its near chunk included, and split again by
// the next idle worker, until only the chunk its writer is stuck in is left.
func TestFillEndGameSplitsStalledRun(t *testing.T) {
	size := int64(8 * testChunk)
	src := newCountingFake(size)
	src.WriteSize = testChunk
	stuck, bPaused := make(chan struct{}), make(chan struct{})
	src.Gate = func(off, n int64) <-chan struct{} {
		if off == 0 {
			return bPaused
		}
		return nil
	}
	src.Pause = func(off, done int64) <-chan struct{} {
		if off == 4*testChunk && done == testChunk {
			close(bPaused)
			return stuck
		}
		return nil
	}
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(2), MaxRequest: 4 * testChunk, stalledAfter: time.Nanosecond})
	errc := make(chan error, 1)
	go func() { errc <- f.Fill(bg) }()
	// B is stuck in chunk 5 with 6 and 7 to go, neither near as B is
	// not streaming: A takes half of what B has left, 7, then half again,
	// 6, and everything but chunk 5 arrives while B is stuck.
	waitFor(t, "every chunk but the stuck one", func() bool { return verifiedRange(f, 0, 5) && verifiedRange(f, 6, 8) })
	close(stuck)
	if err := recv(t, errc, "Fill"); err != nil {
		t.Fatal(err)
	}
	checkOnce(t, src, f)
	want := []cachetest.Call{{Off: 0, N: 4 * testChunk}, {Off: 4 * testChunk, N: 4 * testChunk}, {Off: 6 * testChunk, N: testChunk}, {Off: 7 * testChunk, N: testChunk}}
	if got := fmt.Sprint(sortedCalls(src)); got != fmt.Sprint(want) {
		t.Fatalf("fetches %v, want %v", got, want)
	}
}

// One queued demand read makes one background run give up its connection,
// not every run that reaches a chunk boundary before the slot changes
// hands: the others keep theirs and go on.
func TestOneQueuedReadYieldsOneRun(t *testing.T) {
	pool := NewPool(3)
	size := int64(12 * testChunk)
	src := newCountingFake(size)
	src.WriteSize = testChunk / 2
	hold := make(chan struct{})
	// Every Fill fetch stops half-way through its first chunk until the
	// demand read is queued, so all three reach the boundary after it.
	src.Pause = func(off, done int64) <-chan struct{} {
		if done == testChunk/2 {
			return hold
		}
		return nil
	}
	src.Started = make(chan cachetest.Call, 32)
	// Pieces of 2 chunks: a streaming run of 2 is never split (its
	// second chunk is near), so the only cut is the yield.
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: pool, MaxRequest: 2 * testChunk, stalledAfter: time.Hour})
	other := newFake(testChunk)
	g := openT(t, cacheDir(t), testMeta(testChunk), other, Options{Pool: pool})

	errc := make(chan error, 1)
	go func() { errc <- f.Fill(bg) }()
	for range 3 {
		recv(t, src.Started, "fill fetch")
	}
	readc := make(chan error, 1)
	go func() { readc <- readRange(t, g, 0, 4096) }()
	waitFor(t, "the demand read to queue", func() bool { return queued(pool, prioDemand) == 1 })
	close(hold)
	if err := recv(t, readc, "demand read"); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range src.Started {
		}
	}()
	if err := recv(t, errc, "Fill"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	close(src.Started)
	checkOnce(t, src, f)
	// Six pieces, plus the chunk the yielding run gave back.
	if n := src.NCalls(); n != 7 {
		t.Fatalf("%d fetches, want 7 (one run yielded): %v", n, sortedCalls(src))
	}
}

// Fill and prefetch splitting each other's runs at the end, read-ahead and
// random reads stealing from them, on a source slow enough for all of it
// to overlap: every read returns the right bytes and no chunk is ever
// received twice.
func TestEndGameUnderConcurrencyFetchesEachChunkOnce(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			size := int64(45*testChunk + 77)
			src := newCountingFake(size)
			src.WriteSize = 16 << 10
			src.Pause = func(off, done int64) <-chan struct{} {
				time.Sleep(50 * time.Microsecond)
				return nil
			}
			f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(4), MaxRequest: 8 * testChunk, ReadAheadMax: 4 * testChunk})
			f.StartPrefetch()
			errs := make(chan error, 8)
			done := make(chan struct{})
			go func() { errs <- f.Fill(bg); close(done) }()
			for g := range 3 {
				go func() {
					rng := rand.New(rand.NewPCG(uint64(round), uint64(g)))
					for range 10 {
						off := rng.Int64N(size)
						if err := readRange(t, f, off, 1+rng.Int64N(2*testChunk)); err != nil {
							errs <- err
							return
						}
					}
					errs <- nil
				}()
			}
			go func() {
				r := f.NewReader()
				buf := make([]byte, 48<<10)
				for off := int64(10 * testChunk); off < size; off += int64(len(buf)) {
					n, err := r.ReadAt(bg, buf, off)
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
				errs <- nil
			}()
			for range 5 {
				if err := recv(t, errs, "readers and Fill"); err != nil {
					t.Fatal(err)
				}
			}
			<-done
			f.Close()
			checkOnce(t, src, f)
			if got := fileBytes(t, f.DataPath()); !bytes.Equal(got, want(0, size)) {
				t.Fatal("data file differs from the pattern")
			}
		})
	}
}

// A run that failed part-way keeps its finished chunks in flight until the
// committer takes them; an idle worker looking for a run to split must not
// pick it up through them and claim chunks the run no longer holds (that
// was a nil-pointer crash, or a chunk fetched twice).
func TestEndGameNeverSplitsAFailedRun(t *testing.T) {
	size := int64(16 * testChunk)
	f := openT(t, cacheDir(t), testMeta(size), newFake(size), Options{})
	f.mu.Lock()
	defer f.mu.Unlock()
	p := &plan{hi: 16, piece: 8}
	r := &run{prio: prioBulk, plan: p, end: 16, writing: 3}
	f.tab.flights[0] = &flight{done: make(chan struct{}), run: r} // with the committer
	for i := int64(3); i < 16; i++ {
		f.tab.flights[i] = &flight{done: make(chan struct{}), run: r}
	}
	f.sched.endRunLocked(r, 3, cachetest.ErrInjected) // the fetch failed in chunk 3
	if r.end != 3 || len(f.tab.flights) != 1 {
		t.Fatalf("after the failure: end %d, %d flights; want end 3 and only chunk 0's", r.end, len(f.tab.flights))
	}
	if _, _, ok := f.sched.splitLocked(f.sched.newClaims(prioBulk), p); ok {
		t.Fatal("the end game split a run that had failed")
	}
	// The guard on its own: a run whose fields claim chunks it does not hold.
	r.end = 16
	if _, _, ok := f.sched.splitLocked(f.sched.newClaims(prioBulk), p); ok {
		t.Fatal("the end game took chunks that are not the victim's")
	}
	r.end = 3
	delete(f.tab.flights, 0)
}
