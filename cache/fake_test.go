package cache

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"rangefs/cache/cachetest"
	"rangefs/fetch/fetchtest/content"
	"rangefs/fetch/fetchtest/testsync"
)

// patternSeed seeds the content of every fake remote file (package content).
const patternSeed = 1

// want returns the fake remote file's bytes [off, off+n).
func want(off, n int64) []byte { return content.Bytes(off, n, patternSeed) }

// newFake returns the fake remote file of size bytes of the pattern.
func newFake(size int64) *cachetest.Source { return cachetest.NewSource(size, patternSeed) }

// newCountingFake is newFake with per-chunk counting on (chunks of
// testChunk bytes).
func newCountingFake(size int64) *cachetest.Source {
	s := newFake(size)
	s.CountChunk = testChunk
	return s
}

// checkOnce fails t unless every chunk of f was received exactly once:
// all its bytes, and none twice.
func checkOnce(t testing.TB, s *cachetest.Source, f *File) {
	t.Helper()
	if s.CountChunk != testChunk {
		t.Fatal("checkOnce needs a source from newCountingFake")
	}
	for i := range f.lay.chunks {
		if got, want := s.Received(i), f.lay.chunkLen(i); got != want {
			t.Errorf("chunk %d: received %d bytes from the source, want exactly %d", i, got, want)
		}
	}
	if n := s.ChunksReceived(); n != int(f.lay.chunks) {
		t.Errorf("bytes received for %d chunks, file has %d", n, f.lay.chunks)
	}
}

const testChunk = 64 << 10

func testMeta(size int64) Meta {
	return Meta{Size: size, ChunkSize: testChunk, ETag: `"v1"`, LastModified: "Mon, 02 Jan 2006 15:04:05 GMT", URL: "https://example.test/f"}
}

// cacheDir returns a fresh cache directory path (not yet created).
func cacheDir(t testing.TB) string {
	return filepath.Join(t.TempDir(), "c")
}

// openT opens a cache and closes it at test end.
func openT(t testing.TB, dir string, m Meta, src Source, o Options) *File {
	t.Helper()
	f, err := Open(dir, m, src, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// readAll reads the whole file with ReadAt in pieces of step bytes and
// checks it against the pattern.
func readAll(t testing.TB, f *File, step int) {
	t.Helper()
	size := f.Meta().Size
	buf := make([]byte, step)
	for off := int64(0); off < size; off += int64(step) {
		n, err := f.ReadAt(context.Background(), buf, off)
		if err != nil && !(err == io.EOF && off+int64(n) == size) {
			t.Fatalf("ReadAt(%d): n=%d err=%v", off, n, err)
		}
		if !bytes.Equal(buf[:n], want(off, int64(n))) {
			t.Fatalf("ReadAt(%d): bytes differ from the pattern", off)
		}
	}
}

// readChunk reads chunk i of f and checks it.
func readChunk(t testing.TB, f *File, i int64) error {
	t.Helper()
	s, e := f.lay.bounds(i)
	buf := make([]byte, e-s)
	n, err := f.ReadAt(context.Background(), buf, s)
	if err != nil && err != io.EOF {
		return err
	}
	if !bytes.Equal(buf[:n], want(s, e-s)) {
		t.Fatalf("chunk %d: bytes differ from the pattern", i)
	}
	return nil
}

// waitFor polls cond (bounded: 10 s) for conditions that have no event to
// wait on, such as a background prefetch finishing.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testsync.WaitFor(t, 10*time.Second, what, cond)
}

// recv waits (bounded) for a value on ch.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// faultyData wraps a dataFile and fails writes and/or syncs on demand.
type faultyData struct {
	dataFile
	mu       sync.Mutex
	writeErr error // returned by WriteAt once budget is exhausted
	budget   int64 // bytes WriteAt may still write before failing; < 0: unlimited
	syncErr  error // returned by Sync when set
	// syncFails, if > 0, makes that many next Syncs fail with EIO (after
	// which they succeed again); syncHook, if set, runs at the start of
	// every Sync, without mu.
	syncFails int
	syncHook  func()
}

func (d *faultyData) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.budget >= 0 && int64(len(p)) > d.budget {
		return 0, d.writeErr
	}
	if d.budget >= 0 {
		d.budget -= int64(len(p))
	}
	return d.dataFile.WriteAt(p, off)
}

func (d *faultyData) Sync() error {
	d.mu.Lock()
	hook := d.syncHook
	d.mu.Unlock()
	if hook != nil {
		hook()
	}
	d.mu.Lock()
	err := d.syncErr
	if d.syncFails > 0 {
		d.syncFails--
		err = syscall.EIO
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	return d.dataFile.Sync()
}

// fileBytes returns the contents of path.
func fileBytes(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// settle waits (bounded) until no chunk of f is in flight and no Source
// call is running. A read may return as soon as its bytes are written,
// before their chunk is synced and committed and before the fetch's last
// Write has returned (see File.ensure), so a test that looks at what was
// recorded or counted waits for both first.
func settle(t testing.TB, f *File) {
	t.Helper()
	waitFor(t, "in-flight chunks to settle", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.tab.flights) == 0 && f.sched.active.Load() == 0
	})
}

// verifiedRange reports whether every chunk in [first, end) is committed
// and verified (what the tests call ready: written chunks not yet committed
// do not count).
func verifiedRange(f *File, first, end int64) bool {
	for i := first; i < end; i++ {
		if !f.tab.present.get(i) || !f.tab.verified.get(i) {
			return false
		}
	}
	return true
}
