package main

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"rangefs/fetch/fetchtest"
)

// A server that restarts (connections refused for a couple of seconds)
// costs a read a wait, not an EIO: a demand read retries until its op
// timeout, not a fixed number of attempts (issue 8's rough edge; before the
// fix the retries were over in about 3 s, whatever --op-timeout said).
func TestMountReadSurvivesServerRestart(t *testing.T) {
	needFUSE(t)
	const size = 8 << 20
	srv, p := patternServer(t, size, 77)
	addr := srv.Addr()
	name := path.Base(srv.URL())
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	startMount(t, name, "--no-prefetch", "--op-timeout", "20s", "--cache-dir", filepath.Join(dir, "cache"),
		srv.URL(), mnt)

	// O_DIRECT: one read is one request to the daemon, with no kernel
	// retry of the page that could hide a give-up.
	f, err := os.OpenFile(filepath.Join(mnt, name), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srv.Close() // refused from now on, until the restart below

	// Longer than every backoff of the default retries together (at most
	// 0.25+0.5+1+2+4 s), so only retrying until the op timeout can ride it out.
	const down = 10 * time.Second
	t.Cleanup(fetchtest.RestartAfter(down, p, p.Size(), addr))

	const off = 5 << 20
	buf := alignedBuffer(64 << 10)
	start := time.Now()
	n, err := f.ReadAt(buf, off)
	if err != nil || n != len(buf) {
		t.Fatalf("read through a %v server restart, after %v: %d bytes, %v; want it to wait for the server",
			down, time.Since(start).Round(time.Millisecond), n, err)
	}
	want := make([]byte, len(buf))
	p.ReadAt(want, off)
	if !bytes.Equal(buf, want) {
		t.Fatalf("read through a restart: wrong bytes at %d", off)
	}
	if el := time.Since(start); el < down-time.Second {
		t.Fatalf("read returned after %v, before the server was back (%v): it cannot have waited", el, down)
	}
}

// alignedBuffer returns n bytes aligned for O_DIRECT.
func alignedBuffer(n int) []byte {
	const align = 4096
	b := make([]byte, n+align)
	off := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % align); r != 0 {
		off = align - r
	}
	return b[off : off+n]
}
