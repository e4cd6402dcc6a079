package cache

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"syscall"
	"testing"
)

// A read whose bytes lie in the first part of an in-flight chunk returns
// them as soon as the fetch has written them, while the rest of the chunk is
// still held back in the Source; the chunk is recorded as present only once
// the whole of it arrived and was committed.
func TestWaiterServedFromWrittenBytes(t *testing.T) {
	size := int64(4 * testChunk)
	src := newFake(size)
	src.WriteSize = 4096
	release := make(chan struct{})
	src.Pause = func(off, done int64) <-chan struct{} {
		if done == 8192 {
			return release // hold the fetch after its first 8 KiB
		}
		return nil
	}
	waiting := make(chan struct{}, 8)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{onWait: func() { waiting <- struct{}{} }})

	off := int64(testChunk) // chunk 1
	buf := make([]byte, 4096)
	errA := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(bg, buf, off+4096)
		errA <- err
	}()
	if err := recv(t, errA, "read of written bytes while the fetch is held"); err != nil {
		t.Fatalf("read of written bytes: %v", err)
	}
	if !bytes.Equal(buf, want(off+4096, 4096)) {
		t.Fatal("bytes served from an in-flight chunk differ from the source")
	}
	if f.tab.present.get(1) {
		t.Fatal("chunk 1 present while its fetch is held mid-chunk")
	}
	fl := flightsOf(f, 1, 2)[0]
	if fl == nil || resolved(fl) {
		t.Fatal("chunk 1 not in flight while its fetch is held")
	}

	// Bytes the fetch has not written yet are waited for.
	errB := make(chan error, 1)
	bufB := make([]byte, 4096)
	go func() {
		_, err := f.ReadAt(bg, bufB, off+8192)
		errB <- err
	}()
	recv(t, waiting, "reader of unwritten bytes waiting")
	select {
	case err := <-errB:
		t.Fatalf("read of unwritten bytes returned (%v) while the fetch was held", err)
	default:
	}
	close(release)
	if err := recv(t, errB, "reader of unwritten bytes"); err != nil || !bytes.Equal(bufB, want(off+8192, 4096)) {
		t.Fatalf("read of later bytes: %v", err)
	}
	settle(t, f)
	if st := f.Stats(); st.Present != 1 || !f.tab.present.get(1) || st.Verified != 1 {
		t.Fatalf("after the fetch: %+v, want chunk 1 present and verified", st)
	}
	if n := src.NCalls(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}

// A read of a chunk whose fetch has not written anything yet waits, as
// before, and a cancelled wait returns at once.
func TestWaiterOnUnstartedFetchWaits(t *testing.T) {
	size := int64(2 * testChunk)
	src := newFake(size)
	release := make(chan struct{})
	src.Gate = func(off, n int64) <-chan struct{} { return release }
	waiting := make(chan struct{}, 8)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{onWait: func() { waiting <- struct{}{} }})

	ctx, cancel := context.WithCancel(bg)
	errA := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(ctx, make([]byte, 10), 5)
		errA <- err
	}()
	recv(t, waiting, "reader waiting")
	select {
	case err := <-errA:
		t.Fatalf("read returned (%v) before any byte was written", err)
	default:
	}
	cancel()
	if err := recv(t, errA, "cancelled reader"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled reader: %v", err)
	}
	close(release)
	buf := make([]byte, 10)
	if _, err := f.ReadAt(bg, buf, 5); err != nil || !bytes.Equal(buf, want(5, 10)) {
		t.Fatalf("read after release: %v", err)
	}
}

// junkWriteData scribbles junk over the bytes of one failing WriteAt (as a
// disk that fails part-way may leave them) and reports EIO.
type junkWriteData struct {
	dataFile
	mu   sync.Mutex
	at   int64 // the WriteAt covering this offset fails
	hits int
}

func (d *junkWriteData) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off <= d.at && d.at < off+int64(len(p)) {
		d.hits++
		junk := bytes.Repeat([]byte{0xA5}, len(p))
		d.dataFile.WriteAt(junk, off)
		return 0, syscall.EIO
	}
	return d.dataFile.WriteAt(p, off)
}

// Bytes whose WriteAt failed are never served from the data file, even to a
// reader waiting on them in the middle of the chunk: the reader gets the
// right bytes (from the network, the cache having stopped) or an error.
func TestFailedWriteNeverVisible(t *testing.T) {
	size := int64(2 * testChunk)
	src := newFake(size)
	src.WriteSize = 4096
	bad := int64(3 * 4096)
	var jd *junkWriteData
	f := openT(t, cacheDir(t), testMeta(size), src, Options{wrapData: func(d dataFile) dataFile {
		jd = &junkWriteData{dataFile: d, at: bad}
		return jd
	}})
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(bg, buf, bad); err != nil {
		t.Fatalf("read over a failed write: %v", err)
	}
	if !bytes.Equal(buf, want(bad, 4096)) {
		t.Fatal("read served the bytes of a failed write")
	}
	jd.mu.Lock()
	hits := jd.hits
	jd.mu.Unlock()
	if hits != 1 {
		t.Fatalf("the failing write happened %d times, want 1", hits)
	}
	settle(t, f)
	if f.tab.present.get(0) {
		t.Fatal("chunk with a failed write marked present")
	}
}
