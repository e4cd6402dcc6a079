package cache

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// readHeld reads n bytes at off with ReadHeld and returns the Held, failing
// the test unless the bytes were left in the data file.
func readHeld(t *testing.T, r *Reader, off, n int64) *Held {
	t.Helper()
	got, h, err := r.ReadHeld(context.Background(), make([]byte, n), off)
	if h == nil {
		t.Fatalf("ReadHeld(%d, %d): n=%d err=%v and no Held: the bytes were copied", off, n, got, err)
	}
	if got != h.Len() {
		t.Fatalf("ReadHeld(%d, %d) = %d, but holds %d", off, n, got, h.Len())
	}
	return h
}

// heldBytes reads what h holds two ways: straight from its descriptor, as a
// splice would, and with ReadTo.
func heldBytes(t *testing.T, h *Held) (fromFd, copied []byte) {
	t.Helper()
	fd, off, n := h.Fd()
	fromFd = make([]byte, n)
	if m, err := syscall.Pread(int(fd), fromFd, off); err != nil || m != n {
		t.Fatalf("pread of the held descriptor: %d, %v", m, err)
	}
	copied = make([]byte, h.Len())
	if err := h.ReadTo(copied); err != nil {
		t.Fatalf("ReadTo: %v", err)
	}
	return fromFd, copied
}

// A read with ReadHeld leaves its bytes in the data file: a missing range
// is fetched first, and the descriptor and offset it gives hold exactly the
// file's bytes, also for a read ending at the end of the file (io.EOF).
func TestReadHeldGivesTheDataFilesBytes(t *testing.T) {
	const size = 5*testChunk + 1000
	f := openT(t, cacheDir(t), testMeta(size), newFake(size), Options{})
	r := f.NewReader()
	defer r.Close()
	for _, c := range []struct{ off, n int64 }{
		{testChunk + 100, 3000},    // inside one chunk, fetched on demand
		{2*testChunk - 10, 20},     // across a chunk boundary
		{0, 2 * testChunk},         // partly present already
		{5 * testChunk, testChunk}, // runs past the end
	} {
		got, h, err := r.ReadHeld(context.Background(), make([]byte, c.n), c.off)
		if h == nil {
			t.Fatalf("ReadHeld(%d, %d): n=%d err=%v, nothing held", c.off, c.n, got, err)
		}
		want := want(c.off, min(c.n, size-c.off))
		if c.off+c.n > size && err != io.EOF || c.off+c.n <= size && err != nil {
			t.Errorf("ReadHeld(%d, %d): err %v", c.off, c.n, err)
		}
		fromFd, copied := heldBytes(t, h)
		if !bytes.Equal(fromFd, want) || !bytes.Equal(copied, want) {
			t.Errorf("ReadHeld(%d, %d): held bytes differ from the file's (%d held, %d wanted)", c.off, c.n, h.Len(), len(want))
		}
		h.Release()
		h.Release() // idempotent
	}
}

// Held bytes are pinned: a budget that needs room evicts other chunks, never
// these, until Release; and Close waits for the Release, since the descriptor
// must stay open while the kernel may still splice from it.
func TestHeldBytesStayUntilRelease(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	const limit = 4 * testChunk
	b := newBudgetT(t, root, BudgetOptions{MaxSize: limit})
	a, _ := openUnder(t, b, "a", limit, Options{})
	ra := a.NewReader()
	h := readHeld(t, ra, testChunk, testChunk)
	readAll(t, a, testChunk)
	settle(t, a)

	// Another file reads enough to take every byte of the budget.
	bf, _ := openUnder(t, b, "b", 8*testChunk, Options{})
	readAll(t, bf, testChunk)
	settle(t, bf)
	if !a.tab.present.get(1) {
		t.Fatal("a held chunk was evicted")
	}
	if n := a.presentChunks(0, a.lay.chunks); n != 1 {
		t.Errorf("a keeps %d chunks, want only the held one", n)
	}
	fromFd, _ := heldBytes(t, h)
	if !bytes.Equal(fromFd, want(testChunk, testChunk)) {
		t.Fatal("the held bytes changed under the hold")
	}

	ra.Close()
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while bytes were held", err)
	case <-time.After(200 * time.Millisecond):
	}
	h.Release()
	if err := recv(t, closed, "Close after Release"); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// A data file behind a wrapper (a test's fault injector) is never held:
// every read goes through the wrapper, into p.
func TestReadHeldCopiesThroughAWrappedDataFile(t *testing.T) {
	const size = 2 * testChunk
	f := openT(t, cacheDir(t), testMeta(size), newFake(size), Options{wrapData: func(d dataFile) dataFile {
		return &faultyData{dataFile: d, budget: -1}
	}})
	r := f.NewReader()
	defer r.Close()
	p := make([]byte, 5000)
	n, h, err := r.ReadHeld(context.Background(), p, 700)
	if h != nil {
		h.Release()
		t.Fatal("bytes of a wrapped data file were held")
	}
	if err != nil || n != len(p) || !bytes.Equal(p, want(700, 5000)) {
		t.Fatalf("ReadHeld into p: %d, %v, or wrong bytes", n, err)
	}
}
