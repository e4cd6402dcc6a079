package cache

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"rangefs/cache/cachetest"
)

// bigMeta is testMeta with 1 MiB chunks (16 blocks each).
func bigMeta(size int64) Meta {
	m := testMeta(size)
	m.ChunkSize = 1 << 20
	return m
}

// readWant reads [off, off+n) through r, within 10 s, and fails t unless it
// gets the file's bytes there; src's fetches are in the message.
func readWant(t *testing.T, r *Reader, src *cachetest.Source, off, n int64) {
	t.Helper()
	buf := make([]byte, n)
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	if _, err := r.ReadAt(ctx, buf, off); err != nil || !bytes.Equal(buf, want(off, n)) {
		t.Fatalf("read [%d, +%d): %v; fetches %v", off, n, err, src.Calls())
	}
}

// pauseWhen makes every fetch of src for which at(off, done) holds, before
// its next Write, send its offset and bytes done on paused and wait until
// release is closed.
func pauseWhen(src *cachetest.Source, at func(off, done int64) bool) (paused chan cachetest.Call, release chan struct{}) {
	paused, release = make(chan cachetest.Call, 16), make(chan struct{})
	src.Pause = func(off, done int64) <-chan struct{} {
		if at(off, done) {
			paused <- cachetest.Call{Off: off, N: done}
			return release
		}
		return nil
	}
	return paused, release
}

// A small read through a Reader fetches the aligned 64 KiB block it
// touches, not its chunk; a read across a chunk boundary starts at its own
// block in each chunk; the blocks are served again without a fetch.
func TestReaderFetchesBlocks(t *testing.T) {
	const chunk = 1 << 20
	size := int64(8 * chunk)
	src := newFake(size)
	f := openT(t, cacheDir(t), bigMeta(size), src, Options{})
	r := f.NewReader()
	read := func(off, n int64) { t.Helper(); readWant(t, r, src, off, n) }
	read(3*chunk+5*blockSize+100, 4096) // block 5 of chunk 3
	read(6*chunk-100, 200)              // the last block of chunk 5, the first of chunk 6
	read(3*chunk+5*blockSize, 10)       // block 5 again: no fetch
	got := fmt.Sprint(sortedCalls(src))
	wantCalls := fmt.Sprint([]cachetest.Call{{Off: 3*chunk + 5*blockSize, N: blockSize}, {Off: 6*chunk - blockSize, N: blockSize}, {Off: 6 * chunk, N: blockSize}})
	if got != wantCalls {
		t.Fatalf("fetches %s, want %s", got, wantCalls)
	}
	if st := f.Stats(); st.Present != 0 {
		t.Fatalf("%d chunks present, want none (fetched in part only)", st.Present)
	}
	// A whole-chunk read of a chunk fetched in part fetches it whole, and
	// it is recorded.
	if err := readChunk(t, f, 3); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "chunk 3 recorded", func() bool { return verifiedRange(f, 3, 4) })
	f.Close()
}

// A sequential reader grows back to whole chunks: once a stream consumed a
// chunk, its reads fetch whole chunks and read ahead, and no byte is wrong.
func TestReaderGrowsToChunks(t *testing.T) {
	const chunk = 1 << 20
	size := int64(16 * chunk)
	f, r, src := slowSourceReader(t, size)
	buf := make([]byte, 128<<10)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := r.ReadAt(bg, buf, off); err != nil || !bytes.Equal(buf, want(off, int64(len(buf)))) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	// Chunk 0 was read in blocks, before the stream had consumed a chunk.
	waitFor(t, "chunks 1-15 present", func() bool { return verifiedRange(f, 1, 16) })
	// A chunk may be committed before its Write returned to the Source,
	// which counts the bytes only then.
	settle(t, f)
	calls := src.Calls()
	whole := wholeChunkFetches(calls, chunk)
	// Chunk 0 in about 4 fetches of blocks, the next 2 or 3 chunks in up
	// to two dozen more while the lead grows (under -race it grows
	// later), then whole chunks: a lead that never grew would take over
	// a hundred.
	if whole == 0 || len(calls) > 40 {
		t.Fatalf("%d fetches, %d of whole chunks: %v", len(calls), whole, calls)
	}
	// Every block exactly once: the blocks chunk 0 was read in were not
	// fetched again, nor was a chunk read ahead fetched twice.
	for u := int64(0); u < size/blockSize; u++ {
		if got := src.Received(u); got != blockSize {
			t.Errorf("block %d: received %d bytes, want %d", u, got, blockSize)
		}
	}
	f.Close()
}

// After two seeks with little read per stream the handle is random: a new
// stream earns no read-ahead, so each read fetches its own block only.
func TestRandomHandleReadsNoAhead(t *testing.T) {
	const chunk = 1 << 20
	size := int64(64 * chunk)
	src := newFake(size)
	f := openT(t, cacheDir(t), bigMeta(size), src, Options{})
	r := f.NewReader()
	buf := make([]byte, blockSize)
	for k, off := range []int64{40 * chunk, 10 * chunk, 30 * chunk, 50 * chunk} {
		for j := int64(0); j < 3; j++ { // three sequential block reads
			o := off + j*blockSize
			if _, err := r.ReadAt(bg, buf, o); err != nil || !bytes.Equal(buf, want(o, blockSize)) {
				t.Fatalf("read %d at %d: %v", k, o, err)
			}
		}
	}
	if r.seeks != 3 {
		t.Fatalf("%d seeks, want 3", r.seeks)
	}
	// The first two streams, before the handle turned random: the second
	// read earned 128 KiB ahead (what the stream had read) and fetched
	// half of it with its block, so the third read fetched nothing. The
	// last two: one block per read.
	wantCalls := fmt.Sprint([]cachetest.Call{
		{Off: 10 * chunk, N: blockSize}, {Off: 10*chunk + blockSize, N: 2 * blockSize},
		{Off: 30 * chunk, N: blockSize}, {Off: 30*chunk + blockSize, N: blockSize}, {Off: 30*chunk + 2*blockSize, N: blockSize},
		{Off: 40 * chunk, N: blockSize}, {Off: 40*chunk + blockSize, N: 2 * blockSize},
		{Off: 50 * chunk, N: blockSize}, {Off: 50*chunk + blockSize, N: blockSize}, {Off: 50*chunk + 2*blockSize, N: blockSize},
	})
	if got := fmt.Sprint(sortedCalls(src)); got != wantCalls {
		t.Fatalf("fetches %s, want %s", got, wantCalls)
	}
	f.Close()
}

// A seek cancels the read-ahead its stream claimed and has not received:
// the runs end after the chunk they are in, and the rest is never fetched.
func TestSeekCancelsReadAhead(t *testing.T) {
	size := int64(32 * testChunk)
	src := newCountingFake(size)
	release := make(chan struct{})
	src.Gate = func(off, n int64) <-chan struct{} {
		if off == 2*testChunk || off == 4*testChunk {
			return release
		}
		return nil
	}
	src.Started = make(chan cachetest.Call, 16)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{Pool: NewPool(2), ReadAheadMax: 4 * testChunk})
	r := f.NewReader()
	// Chunks 0-1 read twice: four chunks consumed, chunks 2-5 ahead, in
	// two runs of 2.
	buf := make([]byte, 2*testChunk)
	for range 2 {
		if _, err := r.ReadAt(bg, buf, 0); err != nil || !bytes.Equal(buf, want(0, 2*testChunk)) {
			t.Fatalf("read: %v", err)
		}
	}
	got := map[cachetest.Call]bool{}
	for len(got) < 2 {
		if c := recv(t, src.Started, "read-ahead fetch"); c.Off >= 2*testChunk {
			got[c] = true
		}
	}
	if !got[cachetest.Call{Off: 2 * testChunk, N: 2 * testChunk}] || !got[cachetest.Call{Off: 4 * testChunk, N: 2 * testChunk}] {
		t.Fatalf("read-ahead fetches %v, want chunks 2-3 and 4-5", got)
	}
	errc := make(chan error, 1)
	go func() { // a seek; its read waits for a connection
		buf := make([]byte, 4096)
		_, err := r.ReadAt(bg, buf, 20*testChunk)
		if err == nil && !bytes.Equal(buf, want(20*testChunk, 4096)) {
			err = fmt.Errorf("wrong bytes")
		}
		errc <- err
	}()
	waitFor(t, "the seek to cancel", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.tab.flight(3) == nil && f.tab.flight(5) == nil
	})
	close(release)
	if err := recv(t, errc, "the read after the seek"); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range src.Started {
		}
	}()
	waitFor(t, "chunks 2 and 4", func() bool { return verifiedRange(f, 2, 3) && verifiedRange(f, 4, 5) })
	f.Close()
	close(src.Started)
	if src.Received(3) != 0 || src.Received(5) != 0 {
		t.Fatalf("cancelled read-ahead was fetched: chunk 3 %d bytes, chunk 5 %d", src.Received(3), src.Received(5))
	}
}

// Blocks of a chunk fetched in part are not fetched again by a later read
// whose blocks begin or end with them: each block of the chunk is received
// once, however the reads overlap what came before.
func TestPartReadsFetchOnlyMissingBlocks(t *testing.T) {
	const chunk = 1 << 20
	size := int64(8 * chunk)
	src := newCountingFake(size)
	f := openT(t, cacheDir(t), bigMeta(size), src, Options{})
	r := f.NewReader()
	read := func(off, n int64) { t.Helper(); readWant(t, r, src, off, n) }
	base := int64(3 * chunk)
	read(base+blockSize+100, 4096)          // block 1
	read(base+4*blockSize, 4096)            // block 4, a seek
	read(base+blockSize+8192, 3*blockSize)  // blocks 1-4: only 2 and 3 are missing
	read(base+6*blockSize-10, blockSize+20) // blocks 5-6, the end of the 3rd read's stream
	settle(t, f)
	for b := int64(0); b < chunk/blockSize; b++ {
		u := (base / blockSize) + b
		if got := src.Received(u); got > blockSize {
			t.Errorf("block %d of chunk 3: received %d bytes, want at most %d; fetches %v", b, got, blockSize, src.Calls())
		}
	}
	f.Close()
}

// Closing a Reader stops the fetches made for it inside the chunk they are
// in: a read-ahead run stops at its next block boundary, the blocks it wrote
// stay and are not fetched again, and the rest of the chunk and the chunks
// after it are not fetched.
func TestReaderCloseStopsItsFetchesMidChunk(t *testing.T) {
	const chunk = 1 << 20
	size := int64(16 * chunk)
	// The reader reads up to end; only fetches from end on, which it never
	// waits for, are paused. How soon its lead of blocks (see Reader)
	// grows to whole chunks depends on how the machine keeps up, and by end
	// it reads ahead in whole chunks past end, whatever the machine: at
	// 2 MiB, on a loaded one, its last lead could still have taken the
	// chunk after in part, and no read-ahead fetch came.
	const end = 12 * chunk
	src := newCountingFake(size)
	src.Delay = 20 * time.Millisecond
	paused, release := pauseWhen(src, func(off, done int64) bool { return off >= end && done == 2*blockSize })
	// One chunk per fetch, so a fetch from before end, unpaused, never
	// runs on past it.
	f := openT(t, cacheDir(t), bigMeta(size), src, Options{MaxRequest: chunk})
	r := f.NewReader()
	buf := make([]byte, 128<<10)
	for off := int64(0); off < end; off += int64(len(buf)) {
		if _, err := r.ReadAt(bg, buf, off); err != nil || !bytes.Equal(buf, want(off, int64(len(buf)))) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	first := recv(t, paused, "a read-ahead fetch past the reads")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	settle(t, f)
	var ahead int64
	for u := int64(end / blockSize); u < size/blockSize; u++ {
		ahead += src.Received(u)
	}
	// Each read-ahead fetch wrote at most 2 blocks before its pause and
	// one more after it.
	started := 0
	for _, c := range src.Calls() {
		if c.Off >= end {
			started++
		}
	}
	if ahead > int64(started)*3*blockSize {
		t.Fatalf("%d bytes past the reads fetched by %d read-ahead fetches (first at %d), want at most %d: %v",
			ahead, started, first.Off, started*3*blockSize, src.Calls())
	}
	// The blocks written are served, the rest fetched once.
	r2 := f.NewReader()
	defer r2.Close()
	whole := make([]byte, chunk)
	off := first.Off - first.Off%chunk
	if _, err := r2.ReadAt(bg, whole, off); err != nil || !bytes.Equal(whole, want(off, chunk)) {
		t.Fatalf("read of chunk at %d after the stop: %v", off, err)
	}
	settle(t, f)
	for u := off / blockSize; u < (off+chunk)/blockSize; u++ {
		if got := src.Received(u); got != blockSize {
			t.Errorf("block %d: received %d bytes, want %d; fetches %v", u, got, blockSize, src.Calls())
		}
	}
	f.Close()
}

// Closing a Reader stops a demand run that fetches blocks in part at the
// first block boundary past the bytes its read asked for: the block being
// written then is kept, the extra blocks after it are not fetched.
func TestReaderCloseStopsItsPartFetch(t *testing.T) {
	const chunk = 1 << 20
	size := int64(8 * chunk)
	src := newCountingFake(size)
	paused, release := pauseWhen(src, func(off, done int64) bool { return off <= 3*blockSize && off+done == 6*blockSize })
	f := openT(t, cacheDir(t), bigMeta(size), src, Options{})
	r := f.NewReader()
	readWant(t, r, src, 0, blockSize)
	readWant(t, r, src, blockSize, blockSize)     // blocks 1-2: block 1 and half the 128 KiB earned
	readWant(t, r, src, 2*blockSize, 4*blockSize) // blocks 3-5 and 3 blocks of extra: 3-8
	recv(t, paused, "the part fetch, once blocks 3-5 are written")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	settle(t, f)
	if got := src.Received(6); got != blockSize {
		t.Errorf("block 6, the one being written at the stop: received %d bytes, want %d", got, blockSize)
	}
	if got := src.Received(7) + src.Received(8); got != 0 {
		t.Errorf("blocks 7-8, extra past the stop: received %d bytes, want 0; fetches %v", got, src.Calls())
	}
	n := src.NCalls()
	r2 := f.NewReader()
	defer r2.Close()
	readWant(t, r2, src, 6*blockSize, blockSize)
	if src.NCalls() != n {
		t.Errorf("block 6 fetched again: %v", src.Calls())
	}
	f.Close()
}

// A stream that has earned a chunk of read-ahead but reads slower than the
// Source brings its bytes (a decoder) is fetched only a lead of blocks
// ahead, not whole chunks: when it closes, what was fetched past its last
// read is at most the first lead, not the chunk or two a whole-chunk
// read-ahead had fetched by then.
func TestSlowReaderLeavesOnlyItsLeadUnread(t *testing.T) {
	const chunk = 1 << 20
	size := int64(16 * chunk)
	src := newCountingFake(size)
	f := openT(t, cacheDir(t), bigMeta(size), src, Options{})
	r := f.NewReader()
	end := int64(3*chunk + 256<<10)
	for off := int64(0); off < end; off += blockSize {
		readWant(t, r, src, off, blockSize)
		// The reader takes its time: every fetch is done before its
		// next read, and its reads are no larger than the lead.
		settle(t, f)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	settle(t, f)
	var past int64
	for u := end / blockSize; u < size/blockSize; u++ {
		past += src.Received(u)
	}
	if past > leadStart {
		t.Fatalf("%d bytes fetched past the last read at %d, want at most the lead, %d; fetches %v", past, end, int64(leadStart), src.Calls())
	}
	f.Close()
}

// A stream that skips forward past its lead of blocks, and waits for each
// read (a program reading every member header of a zip), outran the lead as
// much as one that reads every byte: its lead grows, and from a chunk on it
// reads ahead in whole chunks, not in a block fetch for each read plus a
// lead block it skips.
func TestSkippingReaderGrowsToChunks(t *testing.T) {
	const chunk = 1 << 20
	size := int64(16 * chunk)
	f, r, src := slowSourceReader(t, size)
	// Two reads in a row make the stream (a skip before that is a seek),
	// then one block in every two.
	offs := []int64{0, blockSize}
	for off := int64(4 * blockSize); off < size; off += 2 * blockSize {
		offs = append(offs, off)
	}
	for _, off := range offs {
		readWant(t, r, src, off, blockSize)
	}
	r.Close()
	settle(t, f)
	calls := src.Calls()
	whole := wholeChunkFetches(calls, chunk)
	// The first 2 MiB in blocks, until the stream has consumed a chunk,
	// then a few dozen fetches while its lead grows, then whole chunks.
	// A lead that never grew takes two fetches per read: 127 reads.
	if whole == 0 || len(calls) > 100 {
		t.Fatalf("%d fetches, %d of whole chunks: %v", len(calls), whole, calls)
	}
	f.Close()
}

// wholeChunkFetches counts the fetches of calls that asked for a whole
// chunk or more.
func wholeChunkFetches(calls []cachetest.Call, chunk int64) int {
	n := 0
	for _, c := range calls {
		if c.N >= chunk {
			n++
		}
	}
	return n
}

// slowSourceReader opens a File of size bytes on a counting Source whose
// every fetch takes 50 ms, and a Reader of it: a reader that reads on at
// once spends nearly all its time waiting, outruns its lead of blocks (see
// Reader) and reads ahead in chunks, also on a loaded machine.
func slowSourceReader(t *testing.T, size int64) (*File, *Reader, *cachetest.Source) {
	t.Helper()
	src := newCountingFake(size)
	src.Delay = 50 * time.Millisecond
	f := openT(t, cacheDir(t), bigMeta(size), src, Options{})
	return f, f.NewReader(), src
}
