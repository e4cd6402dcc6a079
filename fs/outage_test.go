package fs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"rangefs/cache"
)

// A buffered read during an outage waits one op timeout, whatever the
// kernel does with it: its read-ahead request times out, and the page it
// then asks for again fails at once instead of waiting a second time. Once
// the server is back, the same bytes read fine.
func TestBufferedOutageReadWaitsOneOpTimeout(t *testing.T) {
	src := newSource(200 * chunk)
	opTimeout := 2 * time.Second
	bound := opTimeout + time.Second
	m := mountPattern(t, src, t.TempDir(), Options{OpTimeout: opTimeout}, cache.Options{ReadAheadMax: chunk})
	gate := make(chan struct{})
	src.Hold(gate) // the server goes silent

	// A plain read(2) through os.File.
	f, err := os.Open(m.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off := int64(20 * chunk)
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	start := time.Now()
	_, err = f.Read(buf)
	if elapsed := time.Since(start); !errors.Is(err, syscall.EIO) || elapsed > bound {
		t.Errorf("buffered read during an outage: %v after %v, want EIO within %v", err, elapsed.Round(time.Millisecond), bound)
	}

	// cat, which reads from offset 0.
	if cat, err := exec.LookPath("cat"); err != nil {
		t.Logf("cat not found, that part skipped: %v", err)
	} else {
		start = time.Now()
		out, err := exec.Command(cat, m.path).CombinedOutput()
		if elapsed := time.Since(start); err == nil || elapsed > bound {
			t.Errorf("cat during an outage: %v (%q) after %v, want a failure within %v", err, out, elapsed.Round(time.Millisecond), bound)
		}
	}

	// Eight parallel readers of different places.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			r, err := os.Open(m.path)
			if err != nil {
				t.Error(err)
				return
			}
			defer r.Close()
			off := int64(60+15*i) * chunk
			r.Seek(off, io.SeekStart)
			start := time.Now()
			_, err = r.Read(make([]byte, 256<<10))
			if elapsed := time.Since(start); !errors.Is(err, syscall.EIO) || elapsed > bound {
				t.Errorf("parallel reader %d: %v after %v, want EIO within %v", i, err, elapsed.Round(time.Millisecond), bound)
			}
		})
	}
	wg.Wait()

	// The server is back: once the remembered failure has expired, the
	// same bytes read fine.
	src.Hold(nil)
	close(gate)
	time.Sleep(failMemory + 100*time.Millisecond)
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(f, buf); err != nil || !bytes.Equal(buf, pattern(off, int64(len(buf)))) {
		t.Errorf("read after the server recovered: %v, or wrong bytes", err)
	}
}

// A read that the kernel splits (through its page cache, or into several
// requests for O_DIRECT) can end short when a later part fails: it returns
// the bytes it already has, all correct, and the next read, at the offset
// where it stopped, reports the error. It never returns a wrong byte, and a
// short count is never the end of the file.
func TestOutageShortReadThenError(t *testing.T) {
	const cached, want = 4 << 20, 32 << 20
	for _, direct := range []bool{false, true} {
		name := map[bool]string{false: "buffered", true: "O_DIRECT"}[direct]
		t.Run(name, func(t *testing.T) {
			src := newSource(48 << 20)
			opTimeout := time.Second
			m := mountPattern(t, src, t.TempDir(), Options{OpTimeout: opTimeout}, cache.Options{ReadAheadMax: chunk})
			flag := 0
			if direct {
				flag = syscall.O_DIRECT
			}
			f, err := os.OpenFile(m.path, os.O_RDONLY|flag, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// An aligned buffer, which O_DIRECT may need.
			buf, err := syscall.Mmap(-1, 0, want, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
			if err != nil {
				t.Fatal(err)
			}
			defer syscall.Munmap(buf)
			if _, err := f.ReadAt(buf[:cached], 0); err != nil {
				t.Fatal(err)
			}
			src.Hold(make(chan struct{})) // the server goes silent
			clear(buf)

			n, err := syscall.Pread(int(f.Fd()), buf, 0)
			if err != nil {
				if !errors.Is(err, syscall.EIO) {
					t.Fatalf("pread of %d bytes: %v, want a short count or EIO", want, err)
				}
				t.Logf("pread of %d bytes failed with EIO", want)
				return
			}
			t.Logf("pread of %d bytes returned %d", want, n)
			if n <= 0 || n >= want {
				t.Fatalf("pread returned %d bytes of %d during an outage", n, want)
			}
			if !bytes.Equal(buf[:n], pattern(0, int64(n))) {
				t.Fatal("the bytes of a short read are wrong")
			}
			start := time.Now()
			_, err = syscall.Pread(int(f.Fd()), buf, int64(n))
			if elapsed := time.Since(start); !errors.Is(err, syscall.EIO) || elapsed > opTimeout+time.Second {
				t.Errorf("pread at %d, where the short read stopped: %v after %v, want EIO", n, err, elapsed)
			}
		})
	}
}
