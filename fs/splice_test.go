package fs

import (
	"bytes"
	"io"
	"os"
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
