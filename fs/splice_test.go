package fs

import (
	"bytes"
	"context"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"rangefs/cache"
)

// readSequentially reads the whole file at path in reads of step bytes and
// checks every byte.
func readSequentially(t *testing.T, path string, step int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, step)
	var off int64
	for {
		n, err := f.Read(buf)
		if n > 0 && !bytes.Equal(buf[:n], pattern(off, int64(n))) {
			t.Fatalf("read of %d bytes at %d: wrong bytes", n, off)
		}
		off += int64(n)
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
}

// Reads whose bytes are in the cache's data file are spliced from it: a cold
// read (direct I/O, fetched on demand) and a read of the whole file through
// the page cache both come out right, go-fuse never had to copy a held read
// after all, and every pin is released (the file closes). With NoSplice no
// read is held.
func TestCachedBytesAreSpliced(t *testing.T) {
	m := mountPattern(t, newSource(24*chunk+321), t.TempDir(), Options{}, cache.Options{})
	tr := m.srv.tree
	if tr.spliceMax == 0 {
		t.Skip("this process may not size a pipe to a whole read (not root, or no room under pipe-max-size), so reads are copied")
	}
	readSequentially(t, m.path, 128<<10)
	m.file.StartPrefetch()
	waitComplete(t, m.file, 30*time.Second)
	readSequentially(t, m.path, 100_000)
	if tr.held.Load() == 0 {
		t.Error("no read was answered from the data file")
	}
	if n := tr.heldCopied.Load(); n != 0 {
		t.Errorf("go-fuse copied %d of %d held reads: its splice failed", n, tr.held.Load())
	}
	closed := make(chan error, 1)
	go func() { closed <- m.file.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cache did not close: a held read was never released")
	}

	off := mountPattern(t, newSource(8*chunk), t.TempDir(), Options{NoSplice: true}, cache.Options{})
	readSequentially(t, off.path, 128<<10)
	if off.srv.tree.spliceMax != 0 || off.srv.tree.held.Load() != 0 {
		t.Errorf("with NoSplice: spliceMax %d, %d reads held", off.srv.tree.spliceMax, off.srv.tree.held.Load())
	}
}

// A data file cut short under the mount (a cache cleaner, a full disk's
// repair) makes a splice of its bytes come up short. The read must still
// give the file's bytes (from the network), never a short reply: the kernel
// would hand the program an early end of file, and shrink the file's size
// to where the reply ended.
func TestSplicedReadOfTruncatedDataFile(t *testing.T) {
	const size = 16 * chunk
	m := mountPattern(t, newSource(size), t.TempDir(), Options{}, cache.Options{})
	if m.srv.tree.spliceMax == 0 {
		t.Skip("this process may not size a pipe to a whole read (not root, or no room under pipe-max-size), so reads are copied")
	}
	f, err := os.OpenFile(m.path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := alignedBuf(t, 2*chunk)
	// The whole file is cached (and no read-ahead still writes into the
	// data file), but the file stays filling: it is never complete until a
	// prefetch says so, and this handle reads it with O_DIRECT anyway.
	if _, err := m.file.ReadAt(context.Background(), make([]byte, size), 0); err != nil {
		t.Fatal(err)
	}
	held := m.srv.tree.held.Load()
	if err := os.Truncate(m.file.DataPath(), 2*chunk); err != nil {
		t.Fatal(err)
	}
	for off := int64(4 * chunk); off < 8*chunk; off += int64(len(buf)) {
		n, err := syscall.Pread(int(f.Fd()), buf, off)
		if err != nil || n != len(buf) || !bytes.Equal(buf, pattern(off, int64(n))) {
			t.Fatalf("read at %d of bytes cached before the data file was cut short: %d bytes (%d zero), %v (want %d of the file's bytes)", off, n, bytes.Count(buf[:max(n, 0)], []byte{0}), err, len(buf))
		}
	}
	if m.srv.tree.held.Load() == held {
		t.Log("no read after the cut was answered from the data file")
	}
	if st, err := os.Stat(m.path); err != nil || st.Size() != size {
		t.Fatalf("after the reads, the file's size is %v (%v), want %d", st.Size(), err, size)
	}
}

// A direct-I/O read at any offset and of any size comes whole: go-fuse
// splices a reply through a pipe sized to it plus a page, and the pages an
// unaligned read spans can need one pipe slot more than that.
func TestUnalignedSplicedReadsAreWhole(t *testing.T) {
	const size = 64 * chunk
	m := mountPattern(t, newSource(size), t.TempDir(), Options{}, cache.Options{})
	if m.srv.tree.spliceMax == 0 {
		t.Skip("this process may not size a pipe to a whole read (not root, or no room under pipe-max-size), so reads are copied")
	}
	// Cache the first 16 chunks, leaving the file filling: its opens get
	// direct I/O, so each read comes to us at the program's offset and size.
	if _, err := m.file.ReadAt(context.Background(), make([]byte, 16*chunk), 0); err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	// Each n makes go-fuse's pipe exactly slots pages (a power of two),
	// and a read starting on a page's last byte spans slots pages.
	for _, slots := range []int{32, 64, 128} {
		n := (slots-2)*page + 100
		if n > m.srv.tree.spliceMax {
			continue
		}
		off := int64(3*chunk + page - 1)
		f, err := os.Open(m.path)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, n)
		got, err := syscall.Pread(int(f.Fd()), buf, off)
		f.Close()
		if err != nil || got != n || !bytes.Equal(buf, pattern(off, int64(n))) {
			t.Errorf("read of %d bytes at %d: %d bytes, %v (want the file's %d)", n, off, got, err, n)
		}
	}
}

// go-fuse refuses to grow its splice pipe past pipe-max-size, whatever the
// process may do: a read that needs more is copied after a logged
// "trySplice:" error. So the largest spliced read leaves room under it for
// the reply's header and go-fuse's extra page, also for a process with
// CAP_SYS_RESOURCE (one that may grow a pipe to any size).
func TestSpliceLimitFitsGoFusesPipe(t *testing.T) {
	const page = 4096
	for _, pipeMax := range []int{1 << 20, 2 << 20, 64 << 10, 256 << 10} {
		for _, capable := range []bool{true, false} {
			got := spliceLimit(pipeMax, page, func(want int) bool { return capable || want <= pipeMax })
			if got != 0 && got+fuseOutHeader+page > pipeMax {
				t.Errorf("pipe-max-size %d, grows past it %v: spliceMax %d, whose pipe (%d) go-fuse would refuse", pipeMax, capable, got, got+fuseOutHeader+page)
			}
			if got > maxWrite {
				t.Errorf("pipe-max-size %d: spliceMax %d past a whole READ", pipeMax, got)
			}
			if pipeMax >= 256<<10 && got == 0 {
				t.Errorf("pipe-max-size %d, grows past it %v: nothing spliced", pipeMax, capable)
			}
		}
	}
}

// A program's 1 MiB reads are spliced, most of each: a mount whose pipes
// cannot take a whole MiB asks the kernel for READs no larger than what
// they can take, so such a read comes as a spliced READ and a small copied
// one, not as one READ copied whole.
func TestMiBReadsAreSplicedUnderDefaultPipeLimit(t *testing.T) {
	m := mountPattern(t, newSource(32*chunk), t.TempDir(), Options{}, cache.Options{})
	tr := m.srv.tree
	if tr.spliceMax == 0 {
		t.Skip("this process may not size a pipe to a whole read (not root, or no room under pipe-max-size), so reads are copied")
	}
	directIOOffered(t, m)
	// Cache the first MiB; the file stays filling, so a read of it
	// reaches us at the program's size (direct I/O).
	if _, err := m.file.ReadAt(context.Background(), make([]byte, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(m.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	before := tr.held.Load()
	if n, err := f.ReadAt(buf, 0); err != nil || n != len(buf) || !bytes.Equal(buf, pattern(0, int64(n))) {
		t.Fatalf("1 MiB read: %d, %v, or wrong bytes", n, err)
	}
	if tr.held.Load() == before {
		t.Errorf("no part of a 1 MiB read was spliced (spliceMax %d)", tr.spliceMax)
	}
}
