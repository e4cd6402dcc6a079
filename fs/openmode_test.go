package fs

import (
	"bytes"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"rangefs/cache"
)

// passthroughAvailable reports whether the kernel took FUSE passthrough for
// this mount; without it every open is an ordinary one and the mode tests
// below prove only that reads stay right.
func passthroughAvailable(t *testing.T, m *testMount) bool {
	t.Helper()
	if m.srv.server.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 || os.Geteuid() != 0 {
		t.Logf("kernel passthrough not available here; only the bytes are checked")
		return false
	}
	return true
}

// waitVerified waits, bounded, until f may be handed to the kernel.
func waitVerified(t *testing.T, f *cache.File, limit time.Duration) {
	t.Helper()
	waitComplete(t, f, limit)
	deadline := time.Now().Add(limit)
	for !f.AllVerified() {
		if time.Now().After(deadline) {
			t.Fatalf("file complete but not all verified after %v", limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readWhole reads the whole file through a new open and checks every byte.
func readWhole(t *testing.T, m *testMount, flag int) {
	t.Helper()
	f, err := os.OpenFile(m.path, os.O_RDONLY|flag, 0)
	if err != nil {
		t.Fatalf("open (flags %#x): %v", flag, err)
	}
	defer f.Close()
	got := make([]byte, m.src.Size())
	if flag&syscall.O_DIRECT != 0 {
		// A passed-through O_DIRECT read follows the data file's rules,
		// as on any local disk: the buffer must be aligned.
		aligned, err := syscall.Mmap(-1, 0, int(m.src.Size()+4095)&^4095, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Munmap(aligned)
		got = aligned
	}
	if n, err := f.ReadAt(got, 0); int64(n) != m.src.Size() || !bytes.Equal(got[:n], pattern(0, m.src.Size())) {
		t.Fatalf("read (flags %#x): %d of %d bytes, %v, or wrong bytes", flag, n, m.src.Size(), err)
	}
}

// servedByKernel reports whether reading the whole file through a new open
// reached the daemon not at all (so the kernel passed it through).
func servedByKernel(t *testing.T, m *testMount) bool {
	t.Helper()
	before := m.srv.reads.Load()
	readWhole(t, m, syscall.O_DIRECT)
	return m.srv.reads.Load() == before
}

// An ordinary handle held while the file becomes complete: later opens must
// still succeed (the kernel refuses a passthrough open beside an ordinary
// one), and once it is closed passthrough is offered again.
func TestOpenWhileOrdinaryHandleHeld(t *testing.T) {
	src := newSource(40*chunk + 3)
	m := mountPattern(t, src, t.TempDir(), Options{Passthrough: true}, cache.Options{})
	held, err := os.Open(m.path)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	buf := make([]byte, 4096)
	if _, err := held.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, pattern(0, 4096)) {
		t.Fatalf("first read: %v", err)
	}
	m.file.StartPrefetch()
	waitVerified(t, m.file, 30*time.Second)

	readWhole(t, m, 0)
	readWhole(t, m, syscall.O_DIRECT)
	off := int64(33 * chunk)
	if _, err := held.ReadAt(buf, off); err != nil || !bytes.Equal(buf, pattern(off, 4096)) {
		t.Fatalf("read of the held handle: %v", err)
	}
	if !passthroughAvailable(t, m) {
		return
	}
	held.Close()
	// The daemon hears of the close a little after the kernel.
	deadline := time.Now().Add(10 * time.Second)
	for !servedByKernel(t, m) {
		if time.Now().After(deadline) {
			t.Fatal("passthrough was never offered again after the ordinary handle closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The reverse order: a passthrough handle held, then more opens (plain and
// O_DIRECT) must be passthrough too, and read right bytes.
func TestOpenWhilePassthroughHandleHeld(t *testing.T) {
	src := newSource(40*chunk + 3)
	m := mountPattern(t, src, t.TempDir(), Options{Passthrough: true}, cache.Options{})
	m.file.StartPrefetch()
	waitVerified(t, m.file, 30*time.Second)
	before := m.srv.reads.Load()
	held, err := os.Open(m.path)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	buf := make([]byte, 4096)
	if _, err := held.ReadAt(buf, 5000); err != nil || !bytes.Equal(buf, pattern(5000, 4096)) {
		t.Fatalf("read of the held handle: %v", err)
	}
	pt := passthroughAvailable(t, m)
	if pt && m.srv.reads.Load() != before {
		t.Fatal("the first open of a verified file was not passed through")
	}
	readWhole(t, m, 0)
	readWhole(t, m, syscall.O_DIRECT)
	if pt && m.srv.reads.Load() != before {
		t.Errorf("opens beside a passthrough handle reached the daemon (%d reads)", m.srv.reads.Load()-before)
	}
}

// Many readers opening and closing while the prefetch completes the file:
// every open succeeds and every byte is right, across the switch to
// passthrough.
func TestOpensAcrossPrefetchCompletion(t *testing.T) {
	src := newSource(256 * chunk)
	src.Delay = 2 * time.Millisecond
	m := mountPattern(t, src, t.TempDir(), Options{Passthrough: true}, cache.Options{Pool: cache.NewPool(4)})
	m.file.StartPrefetch()
	var complete atomic.Bool
	var failures, opens atomic.Int64
	var firstErr sync.Once
	deadline := time.Now().Add(60 * time.Second)
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			buf := make([]byte, 16<<10)
			for after := 0; after < 30 && time.Now().Before(deadline); {
				if complete.Load() {
					after++
				}
				f, err := os.Open(m.path)
				opens.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.Do(func() { t.Errorf("open: %v", err) })
					continue
				}
				off := r.Int64N(src.Size() - int64(len(buf)))
				if _, err := f.ReadAt(buf, off); err != nil || !bytes.Equal(buf, pattern(off, int64(len(buf)))) {
					failures.Add(1)
					firstErr.Do(func() { t.Errorf("read at %d: %v, or wrong bytes", off, err) })
				}
				f.Close()
			}
		})
	}
	waitVerified(t, m.file, 50*time.Second)
	complete.Store(true)
	wg.Wait()
	if time.Now().After(deadline) {
		t.Error("the readers did not finish within 60 s")
	}
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d opens or reads failed", n, opens.Load())
	}
	t.Logf("%d opens", opens.Load())
}
