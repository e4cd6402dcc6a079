package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"rangefs/cache"
	"rangefs/fetch/fetchtest/content"
)

const chunk = 64 << 10

// patternSeed seeds the content of every test file (package content).
const patternSeed = 1

// pattern returns the test file's bytes [off, off+n).
func pattern(off, n int64) []byte { return content.Bytes(off, n, patternSeed) }

// fakeSource serves the pattern in-process and counts what it is asked for.
// gate, when set, holds every Fetch until it is closed or the fetch's ctx ends.
type fakeSource struct {
	size    int64
	calls   atomic.Int64
	bytes   atomic.Int64
	started chan int64    // receives each Fetch's offset, if not nil (non-blocking send)
	delay   time.Duration // slows every Fetch, so a prefetch takes a while
	gateMu  sync.Mutex
	gate    chan struct{}
}

func (s *fakeSource) setGate(g chan struct{}) { s.gateMu.Lock(); s.gate = g; s.gateMu.Unlock() }

func (s *fakeSource) Fetch(ctx context.Context, off, n int64, w io.Writer) error {
	s.calls.Add(1)
	if s.started != nil {
		select {
		case s.started <- off:
		default:
		}
	}
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.gateMu.Lock()
	g := s.gate
	s.gateMu.Unlock()
	if g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if off < 0 || off+n > s.size {
		return errors.New("fake source: range out of bounds")
	}
	for n > 0 {
		k := min(n, 32<<10)
		if _, err := w.Write(pattern(off, k)); err != nil {
			return err
		}
		s.bytes.Add(k)
		off, n = off+k, n-k
	}
	return nil
}

type testMount struct {
	dir   string // the mount point
	path  string // the file in it
	file  *cache.File
	src   *fakeSource
	srv   *Server
	cdir  string
	clean func()
}

// mountPattern mounts one pattern file of the given size backed by src, with
// its cache in cacheDir. Everything is undone by t.Cleanup (or by unmount()).
func mountPattern(t *testing.T, src *fakeSource, cacheDir string, opts Options, copts cache.Options) *testMount {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping a real mount: /dev/fuse is not available here (%v)", err)
	}
	if copts.ReadAheadMax == 0 {
		copts.ReadAheadMax = 4 * chunk
	}
	f, err := cache.Open(cacheDir, cache.Meta{Size: src.size, ChunkSize: chunk, ETag: `"v1"`, URL: "http://test/file.bin"}, src, copts)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	srv, err := Mount(dir, Static([]Entry{{Name: "file.bin", File: CacheFile(f, time.Time{})}}, time.Time{}), opts)
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	m := &testMount{dir: dir, path: filepath.Join(dir, "file.bin"), file: f, src: src, srv: srv, cdir: cacheDir}
	var once sync.Once
	m.clean = func() {
		once.Do(func() {
			if src.gate != nil {
				src.setGate(nil)
			}
			f.Close()
			unmountWait(t, srv)
		})
	}
	t.Cleanup(m.clean)
	return m
}

// unmountWait unmounts srv and waits, for 10 s at most, for its server to stop.
func unmountWait(t testing.TB, srv *Server) {
	t.Helper()
	if err := srv.Unmount(); err != nil {
		t.Errorf("unmount: %v", err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("server did not stop within 10 s of unmount")
	}
}

func sum(b []byte) [32]byte { return sha256.Sum256(b) }

func TestFullReadMatchesSource(t *testing.T) {
	src := &fakeSource{size: 3*chunk*16 + 1234} // a short last chunk
	m := mountPattern(t, src, t.TempDir(), Options{}, cache.Options{})
	got, err := os.ReadFile(m.path)
	if err != nil {
		t.Fatal(err)
	}
	if sum(got) != sum(pattern(0, src.size)) {
		t.Fatalf("sha256 of the mounted file differs from the source (read %d bytes of %d)", len(got), src.size)
	}
	fi, err := os.Stat(m.path)
	if err != nil || fi.Size() != src.size || fi.Mode().Perm() != 0o444 {
		t.Errorf("stat: %v %v", fi, err)
	}
}

func TestParallelRandomReads(t *testing.T) {
	src := &fakeSource{size: 200 * chunk}
	m := mountPattern(t, src, t.TempDir(), Options{}, cache.Options{Pool: cache.NewPool(4)})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			f, err := os.Open(m.path)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			buf := make([]byte, 10000)
			for range 40 {
				off := r.Int64N(src.size - int64(len(buf)))
				n, err := f.ReadAt(buf, off)
				if err != nil || !bytes.Equal(buf[:n], pattern(off, int64(len(buf)))) {
					errs <- errors.New("wrong bytes or error at a random offset")
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
}

func TestFarReadFetchesLittle(t *testing.T) {
	src := &fakeSource{size: 1000 * chunk}
	m := mountPattern(t, src, t.TempDir(), Options{}, cache.Options{ReadAheadMax: 4 * chunk})
	f, err := os.Open(m.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	off := int64(777*chunk + 1000)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, pattern(off, 4096)) {
		t.Fatal("wrong bytes")
	}
	// Two chunks (the kernel may round the read to span a boundary) plus the
	// read-ahead window's first step of one chunk.
	if got := src.bytes.Load(); got > 3*chunk {
		t.Errorf("a 4 KiB read fetched %d bytes, more than 3 chunks (%d)", got, 3*chunk)
	}
}

func TestRemountServesFromCache(t *testing.T) {
	cacheDir := t.TempDir()
	src := &fakeSource{size: 40*chunk + 7}
	m := mountPattern(t, src, cacheDir, Options{}, cache.Options{})
	if _, err := os.ReadFile(m.path); err != nil {
		t.Fatal(err)
	}
	m.clean()

	src2 := &fakeSource{size: src.size}
	m2 := mountPattern(t, src2, cacheDir, Options{}, cache.Options{})
	got, err := os.ReadFile(m2.path)
	if err != nil {
		t.Fatal(err)
	}
	if sum(got) != sum(pattern(0, src.size)) {
		t.Fatal("wrong bytes after remount")
	}
	if n := src2.calls.Load(); n != 0 {
		t.Errorf("re-reading a fully cached file after remount made %d fetches, want 0", n)
	}
}

// waitComplete waits, bounded, until every chunk of f is present.
func waitComplete(t *testing.T, f *cache.File, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for st := f.Stats(); st.Present < st.Chunks; st = f.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("prefetch did not complete within %v: %d of %d chunks", limit, st.Present, st.Chunks)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPrefetchFillsFileWithoutReads(t *testing.T) {
	src := &fakeSource{size: 300*chunk + 99}
	m := mountPattern(t, src, t.TempDir(), Options{}, cache.Options{})
	m.file.StartPrefetch()
	waitComplete(t, m.file, 30*time.Second)
	before := src.calls.Load()
	got, err := os.ReadFile(m.path)
	if err != nil || sum(got) != sum(pattern(0, src.size)) {
		t.Fatalf("read after prefetch: %v", err)
	}
	if src.calls.Load() != before {
		t.Errorf("reading a prefetched file fetched again")
	}
	if src.bytes.Load() != src.size {
		t.Errorf("prefetch fetched %d bytes for a %d-byte file", src.bytes.Load(), src.size)
	}
}

// While the prefetcher holds every connection it may take, a demand read
// still gets one at once: the prefetch fetches are held until the demand
// read is done, so the test would time out if demand had to wait for them.
func TestDemandOvertakesBusyPrefetch(t *testing.T) {
	src := &fakeSource{size: 400 * chunk, started: make(chan int64, 100)}
	gate := make(chan struct{})
	src.setGate(gate)
	m := mountPattern(t, src, t.TempDir(), Options{OpTimeout: 20 * time.Second}, cache.Options{Pool: cache.NewPool(4)})
	m.file.StartPrefetch()
	select {
	case <-src.started: // prefetch is fetching (and blocked)
	case <-time.After(10 * time.Second):
		t.Fatal("prefetch never started a fetch")
	}

	far := int64(350 * chunk)
	demand := make(chan error, 1)
	go func() {
		f, err := os.Open(m.path)
		if err != nil {
			demand <- err
			return
		}
		defer f.Close()
		buf := make([]byte, 4096)
		_, err = f.ReadAt(buf, far)
		if err == nil && !bytes.Equal(buf, pattern(far, 4096)) {
			err = errors.New("wrong bytes")
		}
		demand <- err
	}()
	// Release only the fetch that covers the demanded offset.
	deadline := time.After(15 * time.Second)
	for {
		select {
		case off := <-src.started:
			t.Logf("fetch started at chunk %d", off/chunk)
			if far-2*chunk < off && off <= far {
				src.setGate(nil)
				close(gate)
				if err := <-demand; err != nil {
					t.Fatal(err)
				}
				return
			}
		case err := <-demand:
			t.Fatalf("demand read finished before its fetch started: %v", err)
		case <-deadline:
			t.Fatal("no fetch for the demand read started while prefetch held its connections")
		}
	}
}

func TestWriteIsRefused(t *testing.T) {
	src := &fakeSource{size: chunk}
	m := mountPattern(t, src, t.TempDir(), Options{}, cache.Options{})
	for _, flag := range []int{os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC} {
		f, err := os.OpenFile(m.path, flag, 0)
		if err == nil {
			f.Close()
			t.Errorf("open with flags %#x succeeded", flag)
		} else if !errors.Is(err, syscall.EROFS) {
			t.Errorf("open with flags %#x: %v, want EROFS", flag, err)
		}
	}
	if err := os.WriteFile(filepath.Join(m.dir, "new"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("create: %v, want EROFS", err)
	}
}

func TestXattrs(t *testing.T) {
	src := &fakeSource{size: 10 * chunk}
	m := mountPattern(t, src, t.TempDir(), Options{}, cache.Options{})
	f, _ := os.Open(m.path)
	buf := make([]byte, 100)
	f.ReadAt(buf, 0)
	f.Close()
	get := func(name string) string {
		b := make([]byte, 256)
		n, err := syscall.Getxattr(m.path, "user.rangefs."+name, b)
		if err != nil {
			t.Fatalf("getxattr %s: %v", name, err)
		}
		return string(b[:n])
	}
	if got := get("url"); got != "http://test/file.bin" {
		t.Errorf("url = %q", got)
	}
	if got := get("etag"); got != `"v1"` {
		t.Errorf("etag = %q", got)
	}
	if got := get("size"); got != "655360" {
		t.Errorf("size = %q", got)
	}
	// A read may return before its chunk is committed: wait for the commit.
	st := m.file.Stats()
	for i := 0; i < 100 && st.Present < 1; i++ {
		time.Sleep(20 * time.Millisecond)
		st = m.file.Stats()
	}
	if got, want := get("chunks"), strconv.FormatInt(st.Present, 10)+"/10"; got != want || st.Present < 1 {
		t.Errorf("chunks = %q, want %q (at least one)", got, want)
	}
	n, err := syscall.Listxattr(m.path, make([]byte, 1024))
	if err != nil || n == 0 {
		t.Errorf("listxattr: %d %v", n, err)
	}
}

// A reader interrupted by a signal gets its wait ended; the fetch it started
// goes on, and the next reader gets the bytes without a second fetch.
func TestInterruptedReadLeavesFetchRunning(t *testing.T) {
	src := &fakeSource{size: 100 * chunk, started: make(chan int64, 10)}
	gate := make(chan struct{})
	src.setGate(gate)
	m := mountPattern(t, src, t.TempDir(), Options{OpTimeout: time.Minute}, cache.Options{ReadAheadMax: chunk})
	dd := exec.Command("dd", "if="+m.path, "of=/dev/null", "bs=4096", "count=1", "skip=160", "iflag=direct")
	if err := dd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-src.started:
	case <-time.After(10 * time.Second):
		dd.Process.Kill()
		dd.Wait()
		t.Fatal("the read never reached the source")
	}
	dd.Process.Signal(os.Interrupt)
	exited := make(chan error, 1)
	go func() { exited <- dd.Wait() }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		dd.Process.Kill()
		<-exited
		t.Fatal("an interrupted reader stayed blocked (op timeout is a minute)")
	}
	calls := src.calls.Load()
	src.setGate(nil)
	close(gate)
	f, err := os.Open(m.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 160*4096); err != nil || !bytes.Equal(buf, pattern(160*4096, 4096)) {
		t.Fatalf("read after the interrupt: %v", err)
	}
	if src.calls.Load() != calls {
		t.Errorf("the interrupted fetch was started again (%d fetches, then %d)", calls, src.calls.Load())
	}
}

// With a server that stops answering, an uncached read fails with EIO within
// the op timeout while stat and cached reads answer at once.
func TestOutageReadsFailWithinOpTimeout(t *testing.T) {
	src := &fakeSource{size: 100 * chunk}
	opTimeout := time.Second
	m := mountPattern(t, src, t.TempDir(), Options{OpTimeout: opTimeout}, cache.Options{ReadAheadMax: chunk})
	f, err := os.Open(m.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	src.setGate(make(chan struct{})) // the server goes silent

	start := time.Now()
	_, err = f.ReadAt(buf, 80*chunk)
	elapsed := time.Since(start)
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("uncached read during an outage: %v, want EIO", err)
	}
	// Bounded: the op timeout plus scheduling slack, far below a hang.
	if elapsed > opTimeout+5*time.Second {
		t.Errorf("uncached read took %v with a %v op timeout", elapsed, opTimeout)
	}
	if _, err := os.Stat(m.path); err != nil {
		t.Errorf("stat during outage: %v", err)
	}
	// O_DIRECT, so the read reaches the daemon instead of the kernel's page cache.
	d, err := os.OpenFile(m.path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	before := m.srv.reads.Load()
	if _, err := d.ReadAt(buf, 100); err != nil || !bytes.Equal(buf, pattern(100, 4096)) {
		t.Errorf("cached read during outage: %v", err)
	}
	if m.srv.reads.Load() == before {
		t.Error("the cached read never reached the daemon; the test proves nothing")
	}
}
