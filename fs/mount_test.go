package fs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"rangefs/cache"
	"rangefs/cache/cachetest"
	"rangefs/fetch/fetchtest/content"
)

const chunk = 64 << 10

// patternSeed seeds the content of every test file (package content).
const patternSeed = 1

// pattern returns the test file's bytes [off, off+n).
func pattern(off, n int64) []byte { return content.Bytes(off, n, patternSeed) }

// newSource returns the fake remote file of size bytes of the pattern. It
// writes 32 KiB at a time, and a full Started channel does not hold a fetch.
func newSource(size int64) *cachetest.Source {
	s := cachetest.NewSource(size, patternSeed)
	s.WriteSize = 32 << 10
	s.StartedNoWait = true
	return s
}

type testMount struct {
	dir   string // the mount point
	path  string // the file in it
	file  *cache.File
	src   *cachetest.Source
	srv   *Server
	cdir  string
	clean func()
}

// mountPattern mounts one pattern file of the given size backed by src, with
// its cache in cacheDir. Everything is undone by t.Cleanup (or by unmount()).
func mountPattern(t *testing.T, src *cachetest.Source, cacheDir string, opts Options, copts cache.Options) *testMount {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping a real mount: /dev/fuse is not available here (%v)", err)
	}
	if copts.ReadAheadMax == 0 {
		copts.ReadAheadMax = 4 * chunk
	}
	f, err := cache.Open(cacheDir, cache.Meta{Size: src.Size(), ChunkSize: chunk, ETag: `"v1"`, URL: "http://test/file.bin"}, src, copts)
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
			src.Hold(nil)
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
	src := newSource(3*chunk*16 + 1234) // a short last chunk
	m := mountPattern(t, src, t.TempDir(), Options{}, cache.Options{})
	got, err := os.ReadFile(m.path)
	if err != nil {
		t.Fatal(err)
	}
	if sum(got) != sum(pattern(0, src.Size())) {
		t.Fatalf("sha256 of the mounted file differs from the source (read %d bytes of %d)", len(got), src.Size())
	}
	fi, err := os.Stat(m.path)
	if err != nil || fi.Size() != src.Size() || fi.Mode().Perm() != 0o444 {
		t.Errorf("stat: %v %v", fi, err)
	}
}

func TestParallelRandomReads(t *testing.T) {
	src := newSource(200 * chunk)
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
				off := r.Int64N(src.Size() - int64(len(buf)))
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
	src := newSource(1000 * chunk)
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
	if got := src.Bytes(); got > 3*chunk {
		t.Errorf("a 4 KiB read fetched %d bytes, more than 3 chunks (%d)", got, 3*chunk)
	}
}

func TestRemountServesFromCache(t *testing.T) {
	cacheDir := t.TempDir()
	src := newSource(40*chunk + 7)
	m := mountPattern(t, src, cacheDir, Options{}, cache.Options{})
	if _, err := os.ReadFile(m.path); err != nil {
		t.Fatal(err)
	}
	m.clean()

	src2 := newSource(src.Size())
	m2 := mountPattern(t, src2, cacheDir, Options{}, cache.Options{})
	got, err := os.ReadFile(m2.path)
	if err != nil {
		t.Fatal(err)
	}
	if sum(got) != sum(pattern(0, src.Size())) {
		t.Fatal("wrong bytes after remount")
	}
	if n := src2.NCalls(); n != 0 {
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
	src := newSource(300*chunk + 99)
	m := mountPattern(t, src, t.TempDir(), Options{}, cache.Options{})
	m.file.StartPrefetch()
	waitComplete(t, m.file, 30*time.Second)
	before := src.NCalls()
	got, err := os.ReadFile(m.path)
	if err != nil || sum(got) != sum(pattern(0, src.Size())) {
		t.Fatalf("read after prefetch: %v", err)
	}
	if src.NCalls() != before {
		t.Errorf("reading a prefetched file fetched again")
	}
	if src.Bytes() != src.Size() {
		t.Errorf("prefetch fetched %d bytes for a %d-byte file", src.Bytes(), src.Size())
	}
}

// While the prefetcher holds every connection it may take, a demand read
// still gets one at once: the prefetch fetches are held until the demand
// read is done, so the test would time out if demand had to wait for them.
func TestDemandOvertakesBusyPrefetch(t *testing.T) {
	src := newSource(400 * chunk)
	src.Started = make(chan cachetest.Call, 100)
	gate := make(chan struct{})
	src.Hold(gate)
	m := mountPattern(t, src, t.TempDir(), Options{OpTimeout: 20 * time.Second}, cache.Options{Pool: cache.NewPool(4)})
	m.file.StartPrefetch()
	select {
	case <-src.Started: // prefetch is fetching (and blocked)
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
		case c := <-src.Started:
			off := c.Off
			t.Logf("fetch started at chunk %d", off/chunk)
			if far-2*chunk < off && off <= far {
				src.Hold(nil)
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
	src := newSource(chunk)
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
	src := newSource(10 * chunk)
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
	src := newSource(100 * chunk)
	src.Started = make(chan cachetest.Call, 10)
	gate := make(chan struct{})
	src.Hold(gate)
	m := mountPattern(t, src, t.TempDir(), Options{OpTimeout: time.Minute}, cache.Options{ReadAheadMax: chunk})
	dd := exec.Command("dd", "if="+m.path, "of=/dev/null", "bs=4096", "count=1", "skip=160", "iflag=direct")
	if err := dd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-src.Started:
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
	calls := src.NCalls()
	src.Hold(nil)
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
	if src.NCalls() != calls {
		t.Errorf("the interrupted fetch was started again (%d fetches, then %d)", calls, src.NCalls())
	}
}

// With a server that stops answering, an uncached read fails with EIO within
// the op timeout while stat and cached reads answer at once.
func TestOutageReadsFailWithinOpTimeout(t *testing.T) {
	src := newSource(100 * chunk)
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
	src.Hold(make(chan struct{})) // the server goes silent

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
