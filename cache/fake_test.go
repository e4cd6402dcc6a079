package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"rangefs/fetch/fetchtest/content"
	"rangefs/fetch/fetchtest/testsync"
)

// patternSeed seeds the content of every fake remote file (package content).
const patternSeed = 1

// want returns the fake remote file's bytes [off, off+n).
func want(off, n int64) []byte { return content.Bytes(off, n, patternSeed) }

// changedErr is what a Source returns when the remote file changed.
type changedErr struct{}

func (changedErr) Error() string       { return "fake: remote changed" }
func (changedErr) RemoteChanged() bool { return true }

// fetchCall records one Fetch.
type fetchCall struct{ off, n int64 }

// fakeSource serves the pattern with fault switches. All fields after mu are
// guarded by it; set them before use or under mu.
type fakeSource struct {
	size      int64
	writeSize int // bytes per Write call; default 64 KiB

	mu        sync.Mutex
	calls     []fetchCall
	bytes     int64
	active    int
	maxActive int
	failN     int   // fail this many next calls (before writing anything)
	changed   bool  // fail every call with a RemoteChanged error
	partial   int64 // if > 0: write this many bytes of the next call, then fail
	// gate, if set, returns a channel the call waits on before writing
	// (nil: no wait). It is called without mu held.
	gate func(off, n int64) <-chan struct{}
	// started, if set, receives every call as it begins.
	started chan fetchCall
	// pause, if set, is called (without mu) before each Write after the
	// first, with the call's offset and the bytes written so far; a
	// non-nil channel is waited on.
	pause func(off, done int64) <-chan struct{}
	// rate, if > 0, paces every call to rate bytes/s, as a server that
	// caps each connection does (one call is one connection).
	rate int64
	// downUntil, if set, makes the remote unreachable until then: Fetch
	// retries the way fetch.Client does with RetryUntilDeadline, every
	// outageRetry, until the ctx deadline if there is one (giving up when
	// less than outageRetry is left), else for outageAttempts attempts.
	downUntil time.Time
	attempts  int // attempts that met the outage
	// answered, if set, is called (without mu) with each call's ctx once
	// it passed its gate, as a fetch.Client calls Options.OnLoad for an
	// answer.
	answered func(ctx context.Context)
	// perChunk, if not nil, counts the bytes the cache accepted, per
	// chunk of testChunk bytes: a chunk fetched twice shows up as more
	// than its length. (Benchmarks leave it nil.)
	perChunk map[int64]int64
}

func newFake(size int64) *fakeSource { return &fakeSource{size: size} }

var errInjected = errors.New("fake: injected failure")

func (s *fakeSource) Fetch(ctx context.Context, off, n int64, w io.Writer) error {
	s.mu.Lock()
	s.calls = append(s.calls, fetchCall{off, n})
	s.active++
	s.maxActive = max(s.maxActive, s.active)
	fail := s.failN > 0
	if fail {
		s.failN--
	}
	changed := s.changed
	partial := s.partial
	s.partial = 0
	gate, started, pause, answered, rate := s.gate, s.started, s.pause, s.answered, s.rate
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
	}()
	if started != nil {
		started <- fetchCall{off, n}
	}
	if err := s.outage(ctx); err != nil {
		return err
	}
	if gate != nil {
		if ch := gate(off, n); ch != nil {
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if answered != nil {
		answered(ctx)
	}
	switch {
	case fail:
		return errInjected
	case changed:
		return fmt.Errorf("fake: %w", changedErr{})
	case off < 0 || n < 0 || off+n > s.size:
		return fmt.Errorf("fake: range %d+%d outside size %d", off, n, s.size)
	}
	ws := int64(s.writeSize)
	if ws == 0 {
		ws = 64 << 10
	}
	limit := n
	if partial > 0 {
		limit = min(partial, n)
	}
	begun := time.Now()
	buf := make([]byte, min(ws, limit))
	for done := int64(0); done < limit; {
		if err := ctx.Err(); err != nil {
			return err
		}

		if pause != nil && done > 0 {
			if ch := pause(off, done); ch != nil {
				select {
				case <-ch:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		k := min(ws, limit-done)
		content.Fill(buf[:k], off+done, patternSeed)
		m, err := w.Write(buf[:k])
		s.mu.Lock()
		s.bytes += int64(m)
		s.count(off+done, int64(m))
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("fake: write: %w", err)
		}
		done += k
		if rate > 0 {
			due := begun.Add(time.Duration(done * int64(time.Second) / rate))
			t := time.NewTimer(time.Until(due))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
	}
	if partial > 0 {
		return errInjected
	}
	return nil
}

const (
	outageRetry    = 10 * time.Millisecond
	outageAttempts = 3
)

var errOutage = errors.New("fake: connection refused")

// outage waits out s.downUntil as a retrying client would (see downUntil),
// and returns the error it gives up with.
func (s *fakeSource) outage(ctx context.Context) error {
	deadline, bounded := ctx.Deadline()
	for n := 1; ; n++ {
		s.mu.Lock()
		down := time.Now().Before(s.downUntil)
		if down {
			s.attempts++
		}
		s.mu.Unlock()
		if !down {
			return nil
		}
		switch {
		case bounded && time.Until(deadline) < outageRetry:
			return fmt.Errorf("giving up at the deadline after %d attempts: %w", n, errOutage)
		case !bounded && n >= outageAttempts:
			return fmt.Errorf("giving up after %d attempts: %w", n, errOutage)
		}
		t := time.NewTimer(outageRetry)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// newCountingFake is newFake with perChunk counting on.
func newCountingFake(size int64) *fakeSource {
	s := newFake(size)
	s.perChunk = make(map[int64]int64)
	return s
}

// count adds the n accepted bytes at off to perChunk, if counting. s.mu is
// held.
func (s *fakeSource) count(off, n int64) {
	if s.perChunk == nil {
		return
	}
	for n > 0 {
		i := off / testChunk
		k := min(n, (i+1)*testChunk-off)
		s.perChunk[i] += k
		off, n = off+k, n-k
	}
}

// checkOnce fails t unless every chunk of f was received exactly once:
// all its bytes, and none twice.
func (s *fakeSource) checkOnce(t testing.TB, f *File) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perChunk == nil {
		t.Fatal("checkOnce needs a source from newCountingFake")
	}
	for i := range f.lay.chunks {
		if got, want := s.perChunk[i], f.lay.chunkLen(i); got != want {
			t.Errorf("chunk %d: received %d bytes from the source, want exactly %d", i, got, want)
		}
	}
	if len(s.perChunk) != int(f.lay.chunks) {
		t.Errorf("bytes received for %d chunks, file has %d", len(s.perChunk), f.lay.chunks)
	}
}

func (s *fakeSource) nCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func (s *fakeSource) callList() []fetchCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fetchCall(nil), s.calls...)
}

func (s *fakeSource) set(fn func(s *fakeSource)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s)
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
