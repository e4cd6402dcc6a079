package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"rangefs/cache/cachetest"
)

// readCountingData counts the bytes read from the data file.
type readCountingData struct {
	dataFile
	mu    sync.Mutex
	bytes int64
}

func (d *readCountingData) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	d.bytes += int64(len(p))
	d.mu.Unlock()
	return d.dataFile.ReadAt(p, off)
}

func (d *readCountingData) read() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bytes
}

// blockMeta is a Meta whose chunks hold four checksum blocks; the last
// chunk ends 1000 bytes short.
func blockMeta(chunks int64) Meta {
	m := testMeta(chunks*4*blockSize - 1000) // the last block is short
	m.ChunkSize = 4 * blockSize
	return m
}

// After a restart a small read checks only the block it touches: one block
// is read for the check (not the chunk), and the chunk is not counted as
// verified until all its blocks were checked.
func TestSmallReadChecksOnlyItsBlock(t *testing.T) {
	m := blockMeta(3)
	dir := cacheDir(t)
	fillAndClose(t, dir, m)
	unseal(t, dir) // as after a crash: a clean close would vouch for every block
	src := newFake(m.Size)
	var rd *readCountingData
	f := openT(t, dir, m, src, Options{wrapData: func(d dataFile) dataFile {
		rd = &readCountingData{dataFile: d}
		return rd
	}})
	off := m.ChunkSize + 2*blockSize + 100 // chunk 1, block 2
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(bg, buf, off); err != nil || !bytes.Equal(buf, want(off, 4096)) {
		t.Fatalf("warm read: %v", err)
	}
	if got := rd.read(); got != blockSize+4096 {
		t.Fatalf("a 4 KiB read after a restart read %d bytes of the data file, want one block and the read (%d)", got, blockSize+4096)
	}
	if st := f.Stats(); st.Verified != 0 || st.Present != 3 {
		t.Fatalf("after one block was checked: %+v, want 3 present and none verified whole", st)
	}
	// The same block again: no second check.
	if _, err := f.ReadAt(bg, buf, off+4096); err != nil || !bytes.Equal(buf, want(off+4096, 4096)) {
		t.Fatalf("second warm read: %v", err)
	}
	if got := rd.read(); got != blockSize+2*4096 {
		t.Fatalf("a read of a checked block read %d bytes in all, want no new check", got)
	}
	// Reading the whole chunk checks its other three blocks and counts
	// the chunk verified, reading each byte of the chunk once: the blocks
	// are checked in the read's own buffer.
	before := rd.read()
	if err := readChunk(t, f, 1); err != nil {
		t.Fatal(err)
	}
	if got := rd.read() - before; got != m.ChunkSize {
		t.Fatalf("reading an unverified chunk read %d bytes of the data file, want the chunk once (%d)", got, m.ChunkSize)
	}
	if st := f.Stats(); st.Verified != 1 {
		t.Fatalf("after reading chunk 1 whole: %+v, want it verified", st)
	}
	if src.NCalls() != 0 {
		t.Fatalf("%d fetches, want none", src.NCalls())
	}
	if err := f.Verify(bg); err != nil || !f.AllVerified() {
		t.Fatalf("Verify: %v (all verified %v)", err, f.AllVerified())
	}
}

// A flipped byte in one block is caught by the first read of that block:
// the chunk is dropped and refetched, and the bad byte is never served.
// Reads of the chunk's good blocks before that are served from the cache.
func TestFlippedByteInOneBlockNeverServed(t *testing.T) {
	m := blockMeta(3)
	dir := cacheDir(t)
	fillAndClose(t, dir, m)
	bad := m.ChunkSize + 3*blockSize + 77 // chunk 1, block 3
	flipByte(t, filepath.Join(dir, dataName), bad)
	// Chunk 2, block 1: checked inside the buffer of a whole-chunk read.
	flipByte(t, filepath.Join(dir, dataName), 2*m.ChunkSize+blockSize+5)

	src := newFake(m.Size)
	f := openT(t, dir, m, src, Options{})
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(bg, buf, m.ChunkSize); err != nil || !bytes.Equal(buf, want(m.ChunkSize, 4096)) {
		t.Fatalf("read of a good block of the damaged chunk: %v", err)
	}
	if src.NCalls() != 0 {
		t.Fatal("a good block was fetched again")
	}
	if _, err := f.ReadAt(bg, buf, bad-10); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, want(bad-10, 4096)) {
		t.Fatal("served the flipped byte")
	}
	// Chunk 1 is fetched again, from the read's block on, then its head
	// (which the read did not wait for).
	settle(t, f)
	calls := src.Calls()
	if err := readChunk(t, f, 2); err != nil { // readChunk compares the bytes
		t.Fatal(err)
	}
	if got := src.Calls(); len(got) != len(calls)+1 || got[len(calls)].Off != 2*m.ChunkSize {
		t.Fatalf("calls after reading the damaged chunk 2 whole: %v, want one more, of chunk 2", got)
	}
	bad0 := m.ChunkSize + 3*blockSize
	if len(calls) != 2 || calls[0] != (cachetest.Call{Off: bad0, N: m.ChunkSize - 3*blockSize}) ||
		calls[1] != (cachetest.Call{Off: m.ChunkSize, N: 3 * blockSize}) {
		t.Fatalf("calls = %v, want chunk 1 fetched from block 3, then its head", calls)
	}
	if err := f.Verify(bg); err != nil {
		t.Fatalf("Verify after the refetch: %v", err)
	}
	readAll(t, f, 50000)
	if got := fileBytes(t, f.DataPath()); !bytes.Equal(got, want(0, m.Size)) {
		t.Fatal("data file differs from the source after the refetch")
	}
}

// A cache written by format 1 (one CRC per chunk) is discarded at Open,
// never read with the new record layout.
func TestFormat1CacheDiscarded(t *testing.T) {
	m := testMeta(3 * testChunk)
	dir := cacheDir(t)
	fillAndClose(t, dir, m)
	db, err := bolt.Open(filepath.Join(dir, indexName), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite the index as format 1 wrote it: version 1 and a whole-chunk
	// CRC per record (for a one-block chunk, the same 4 bytes).
	if err := db.Update(func(tx *bolt.Tx) error {
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], 1)
		if err := tx.Bucket(bucketMeta).Put(keyFormat, v[:]); err != nil {
			return err
		}
		for i := range int64(3) {
			var c [4]byte
			binary.BigEndian.PutUint32(c[:], crc32.Checksum(want(i*testChunk, testChunk), castagnoli))
			if err := tx.Bucket(bucketChunks).Put(chunkKey(i), c[:]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, _, err := Inspect(dir); err == nil || !strings.Contains(err.Error(), "format 1") {
		t.Fatalf("Inspect of a format 1 cache: %v, want it named", err)
	}
	src := newFake(m.Size)
	f := openT(t, dir, m, src, Options{})
	if d := f.Discarded(); !strings.Contains(d, "cache format 1, want 2") {
		t.Fatalf("Discarded() = %q, want the old format named", d)
	}
	if st := f.Stats(); st.Present != 0 {
		t.Fatalf("present = %d after discarding, want 0", st.Present)
	}
	readAll(t, f, 30000)
	if n := src.NCalls(); n == 0 {
		t.Fatal("nothing fetched after the discard")
	}
	if errors.Is(f.Verify(bg), ErrCorrupt) {
		t.Fatal("Verify found bad chunks after the refetch")
	}
}

// A record whose length is not one CRC per block is dropped at Open.
func TestRecordOfWrongLengthDropped(t *testing.T) {
	m := blockMeta(2)
	dir := cacheDir(t)
	fillAndClose(t, dir, m)
	db, err := bolt.Open(filepath.Join(dir, indexName), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChunks).Put(chunkKey(1), []byte{1, 2, 3, 4})
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	src := newFake(m.Size)
	f := openT(t, dir, m, src, Options{})
	if st := f.Stats(); st.Present != 1 || f.tab.present.get(1) {
		t.Fatalf("present = %d (chunk 1 %v), want only chunk 0", st.Present, f.tab.present.get(1))
	}
	readAll(t, f, 40000)
}

// A demand read of a missing chunk past its first block fetches from the
// read's block to the chunk's end first, then the chunk's head, so the read
// returns before the head arrives. A read of the head meanwhile waits for
// the head (the tail pass wrote past it, but not its bytes), and the chunk
// is committed with its blocks' checksums in order.
func TestRotatedFetchServesTailFirst(t *testing.T) {
	m := blockMeta(3)
	dir := cacheDir(t)
	src := newFake(m.Size)
	src.WriteSize = 4096
	releaseHead := make(chan struct{})
	src.Gate = func(off, n int64) <-chan struct{} {
		if off == m.ChunkSize {
			return releaseHead // hold the head pass of chunk 1
		}
		return nil
	}
	waiting := make(chan struct{}, 8)
	f, err := Open(dir, m, src, Options{onWait: func() { waiting <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	off := m.ChunkSize + 2*blockSize + 300 // chunk 1, block 2
	buf := make([]byte, 4096)
	errA := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(bg, buf, off)
		errA <- err
	}()
	recv(t, waiting, "reader of block 2 waiting")
	if err := recv(t, errA, "reader of block 2 while the head is held"); err != nil || !bytes.Equal(buf, want(off, 4096)) {
		t.Fatalf("read of block 2: %v", err)
	}
	if f.tab.present.get(1) {
		t.Fatal("chunk 1 present before its head arrived")
	}

	bufB := make([]byte, 4096)
	errB := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(bg, bufB, m.ChunkSize+100)
		errB <- err
	}()
	recv(t, waiting, "reader of the head waiting")
	select {
	case err := <-errB:
		t.Fatalf("read of the head returned (%v) before the head was written", err)
	default:
	}
	close(releaseHead)
	if err := recv(t, errB, "reader of the head"); err != nil || !bytes.Equal(bufB, want(m.ChunkSize+100, 4096)) {
		t.Fatalf("read of the head: %v", err)
	}
	settle(t, f)
	if !f.tab.present.get(1) {
		t.Fatal("chunk 1 not present after both passes")
	}
	want := []cachetest.Call{{Off: m.ChunkSize + 2*blockSize, N: 2 * blockSize}, {Off: m.ChunkSize, N: 2 * blockSize}}
	if calls := src.Calls(); len(calls) != 2 || calls[0] != want[0] || calls[1] != want[1] {
		t.Fatalf("calls = %v, want %v", calls, want)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// After a restart the record's checksums match the blocks in order.
	f2 := openT(t, dir, m, newFake(m.Size), Options{})
	if st := f2.Stats(); st.Present != 1 {
		t.Fatalf("present after reopen = %d, want 1", st.Present)
	}
	if err := f2.Verify(bg); err != nil {
		t.Fatalf("Verify after reopen: %v", err)
	}
	if err := readChunk(t, f2, 1); err != nil {
		t.Fatal(err)
	}
}

// When the head pass of a rotated fetch fails, the chunk stays missing and
// a later read fetches it again.
func TestRotatedFetchHeadFailureLeavesChunkMissing(t *testing.T) {
	m := blockMeta(2)
	src := newFake(m.Size)
	var once sync.Once
	src.Gate = func(off, n int64) <-chan struct{} {
		if off == 3*blockSize {
			// The tail pass has begun; the next call is the head pass,
			// which breaks off half-way.
			once.Do(func() { src.Set(func(s *cachetest.Source) { s.Partial = blockSize / 2 }) })
		}
		return nil
	}
	f := openT(t, cacheDir(t), m, src, Options{})
	off := int64(3*blockSize + 10)
	buf := make([]byte, 100)
	if _, err := f.ReadAt(bg, buf, off); err != nil || !bytes.Equal(buf, want(off, 100)) {
		t.Fatalf("read of the tail: %v", err)
	}
	settle(t, f)
	if f.tab.present.get(0) {
		t.Fatal("chunk 0 present although its head pass failed")
	}
	if err := readChunk(t, f, 0); err != nil {
		t.Fatalf("read after the failure: %v", err)
	}
	settle(t, f)
	if !f.tab.present.get(0) {
		t.Fatal("chunk 0 not present after the refetch")
	}
}

// A Source may fail after delivering every byte. When that happens to the
// tail pass of a rotated fetch, the chunk (whose record waits for the head
// pass) is failed, not left in flight for ever.
func TestRotatedFetchTailErrorAfterAllBytesResolvesChunk(t *testing.T) {
	m := blockMeta(2)
	src := newFake(m.Size)
	src.Set(func(s *cachetest.Source) { s.Partial = 1 << 40 }) // the next call writes all, then fails
	f := openT(t, cacheDir(t), m, src, Options{})
	off := int64(3*blockSize + 10)
	buf := make([]byte, 100)
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	if n, err := f.ReadAt(ctx, buf, off); err == nil && !bytes.Equal(buf[:n], want(off, int64(n))) {
		t.Fatal("wrong bytes")
	}
	settle(t, f) // hangs (and fails) if the chunk's flight is never resolved
	if f.tab.present.get(0) {
		t.Fatal("chunk 0 present although its fetch failed")
	}
	if err := readChunk(t, f, 0); err != nil {
		t.Fatalf("read after the failure: %v", err)
	}
}
