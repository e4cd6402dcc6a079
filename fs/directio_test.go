package fs

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"rangefs/cache"
)

// directIOOffered skips a test of direct I/O on a kernel that cannot mmap
// such files (before Linux 6.6): the mount then keeps the page cache.
func directIOOffered(t *testing.T, m *testMount) {
	t.Helper()
	if m.srv.server.KernelSettings().Flags64()&fuse.CAP_DIRECT_IO_ALLOW_MMAP == 0 {
		t.Skip("this kernel does not offer FUSE_DIRECT_IO_ALLOW_MMAP, so every handle uses the page cache")
	}
}

// readTwice reads the same 4 KiB of one handle twice, checks the bytes and
// returns how many of the two reads reached the daemon.
func readTwice(t *testing.T, m *testMount, off int64) int64 {
	t.Helper()
	f, err := os.Open(m.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	before := m.srv.reads.Load()
	for i := 0; i < 2; i++ {
		if _, err := f.ReadAt(buf, off); err != nil || !bytes.Equal(buf, pattern(off, 4096)) {
			t.Fatalf("read %d at %d: %v, or wrong bytes", i, off, err)
		}
	}
	return m.srv.reads.Load() - before
}

// A file opened while it is not all cached is read with direct I/O: each
// read reaches the daemon at the program's size, also a second read of the
// same bytes, which the page cache would have answered. Once the file is
// whole, an open uses the page cache again; so does every open with
// NoDirectIO.
func TestFillingFileIsReadWithDirectIO(t *testing.T) {
	src := newSource(8 * chunk)
	m := mountPattern(t, src, t.TempDir(), Options{}, cache.Options{})
	directIOOffered(t, m)
	if n := readTwice(t, m, 3*chunk+4096); n != 2 {
		t.Errorf("a filling file's two reads of the same bytes reached the daemon %d times, want 2 (direct I/O)", n)
	}
	// A read of one byte at an odd offset comes as it is.
	f, err := os.Open(m.path)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 5*chunk+7); err != nil || b[0] != pattern(5*chunk+7, 1)[0] {
		t.Errorf("one-byte read: %v, %x", err, b)
	}
	f.Close()

	m.file.StartPrefetch()
	waitComplete(t, m.file, 30*time.Second)
	if n := readTwice(t, m, 6*chunk); n != 1 {
		t.Errorf("a whole file's two reads of the same bytes reached the daemon %d times, want 1 (page cache)", n)
	}

	off := mountPattern(t, newSource(8*chunk), t.TempDir(), Options{NoDirectIO: true}, cache.Options{})
	if n := readTwice(t, off, 3*chunk+4096); n != 1 {
		t.Errorf("with NoDirectIO, two reads of the same bytes reached the daemon %d times, want 1", n)
	}
}

// mmap of a file read with direct I/O works, shared or private, and shows
// the file's bytes (the kernel was told it may: FUSE_DIRECT_IO_ALLOW_MMAP).
// Another process maps it: a page fault of this one on its own mount would
// stall the Go runtime that has to answer it.
func TestMmapOfFillingFile(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skipf("python3 not found: %v", err)
	}
	src := newSource(8*chunk + 100)
	m := mountPattern(t, src, t.TempDir(), Options{}, cache.Options{})
	directIOOffered(t, m)
	script := `
import hashlib, mmap, sys
f = open(sys.argv[1], "rb")
for flag in (mmap.MAP_SHARED, mmap.MAP_PRIVATE):
    m = mmap.mmap(f.fileno(), 0, flags=flag, prot=mmap.PROT_READ)
    for off in (0, int(sys.argv[2]), len(m) - 100):
        print(flag, off, hashlib.sha256(m[off:off + 100]).hexdigest())
    m.close()
`
	mid := int64(3*chunk + 5)
	out, err := exec.Command(py, "-c", script, m.path, strconv.FormatInt(mid, 10)).CombinedOutput()
	if err != nil {
		t.Fatalf("mmap of a filling file: %v\n%s", err, out)
	}
	var want strings.Builder
	for _, flag := range []int{syscall.MAP_SHARED, syscall.MAP_PRIVATE} {
		for _, off := range []int64{0, mid, src.Size() - 100} {
			fmt.Fprintf(&want, "%d %d %x\n", flag, off, sha256.Sum256(pattern(off, 100)))
		}
	}
	if string(out) != want.String() {
		t.Errorf("mmap read\n%s\nwant\n%s", out, want.String())
	}
}
