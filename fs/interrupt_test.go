package fs

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"testing"
	"time"

	"rangefs/cache"
)

// signalledReader runs reads on one OS thread whose id it publishes, so a
// test can send that very thread signals. The process handles SIGUSR1 (Go
// installs its handlers with SA_RESTART, like a program's interval timer), so
// a read the kernel could restart would never show EINTR.
type signalledReader struct {
	tid  chan int
	done chan struct{}
}

func handleSIGUSR1(t *testing.T) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR1)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-c:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { signal.Stop(c); close(stop) })
}

// onThread runs fn on a locked OS thread and returns its thread id.
func onThread(fn func()) (tid int, done <-chan struct{}) {
	tids := make(chan int)
	d := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(d)
		tids <- syscall.Gettid()
		fn()
	}()
	return <-tids, d
}

func alignedBuf(t *testing.T, n int) []byte {
	t.Helper()
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Munmap(b) })
	return b
}

// An O_DIRECT reader whose thread takes a handled signal every millisecond
// while its reads wait for the network sees no EINTR: an interrupted wait
// goes on for a short grace, and the bytes arrive within it.
func TestSignalledDirectReadsSeeNoEINTR(t *testing.T) {
	src := newSource(16 << 20)
	src.Delay = 20 * time.Millisecond
	m := mountPattern(t, src, t.TempDir(), Options{OpTimeout: 20 * time.Second}, cache.Options{ReadAheadMax: chunk})
	handleSIGUSR1(t)
	f, err := os.OpenFile(m.path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := alignedBuf(t, 1<<20)
	var eintr, attempts int
	var readErr error
	tid, done := onThread(func() {
		for off := int64(0); off < src.Size() && attempts < 10000; {
			attempts++
			n, err := syscall.Pread(int(f.Fd()), buf, off)
			if err == syscall.EINTR {
				eintr++
				continue
			}
			if err != nil || n != len(buf) || !bytes.Equal(buf, pattern(off, int64(n))) {
				readErr = errors.Join(err, errors.New("short or wrong bytes"))
				return
			}
			off += int64(n)
		}
	})
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	signals := 0
loop:
	for {
		select {
		case <-done:
			break loop
		case <-deadline:
			t.Fatal("16 MiB of O_DIRECT reads did not finish within 60 s")
		case <-tick.C:
			syscall.Tgkill(os.Getpid(), tid, syscall.SIGUSR1)
			signals++
		}
	}
	if readErr != nil {
		t.Fatal(readErr)
	}
	t.Logf("%d signals, %d preads", signals, attempts)
	if eintr > 0 {
		t.Errorf("%d of %d O_DIRECT preads failed with EINTR under a handled SA_RESTART signal", eintr, attempts)
	}
}

// A handled signal (dd's and Python's SIGINT) ends an O_DIRECT read that
// waits on a silent server within a second, with EINTR.
func TestHandledSignalEndsDirectReadWithinASecond(t *testing.T) {
	src := newSource(16 << 20)
	src.Hold(make(chan struct{}))
	m := mountPattern(t, src, t.TempDir(), Options{OpTimeout: 20 * time.Second}, cache.Options{ReadAheadMax: chunk})
	handleSIGUSR1(t)
	f, err := os.OpenFile(m.path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := alignedBuf(t, 1<<20)
	var readErr error
	var returned time.Time
	tid, done := onThread(func() {
		_, readErr = syscall.Pread(int(f.Fd()), buf, 0)
		returned = time.Now()
	})
	time.Sleep(200 * time.Millisecond) // the read is waiting on the server
	sent := time.Now()
	syscall.Tgkill(os.Getpid(), tid, syscall.SIGUSR1)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the read never returned")
	}
	if took := returned.Sub(sent); readErr != syscall.EINTR || took > time.Second {
		t.Errorf("signalled O_DIRECT read: %v after %v, want EINTR within 1 s", readErr, took)
	}
}

// A read without O_DIRECT is not ended by a handled signal: it ends with
// the op timeout, as SEMANTICS.md says. A fatal signal (cat's SIGINT) ends
// it at once. Both with the page cache, where the kernel turned the read
// into read-ahead (a request it never interrupts; the reader's wait for the
// page ends only on a fatal signal), and with the direct I/O of a file not
// yet cached, where the daemon is interrupted and looks whether the caller
// is dying (followInterrupt).
func TestSignalsDuringBufferedRead(t *testing.T) {
	for _, noDirect := range []bool{false, true} {
		name := "direct I/O"
		if noDirect {
			name = "page cache"
		}
		t.Run(name, func(t *testing.T) { signalsDuringRead(t, Options{NoDirectIO: noDirect}) })
	}
}

func signalsDuringRead(t *testing.T, opts Options) {
	src := newSource(16 << 20)
	src.Hold(make(chan struct{}))
	opTimeout := 3 * time.Second
	opts.OpTimeout = opTimeout
	m := mountPattern(t, src, t.TempDir(), opts, cache.Options{ReadAheadMax: chunk})

	t.Run("handled", func(t *testing.T) {
		handleSIGUSR1(t)
		f, err := os.Open(m.path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		var readErr error
		start := time.Now()
		var returned time.Time
		tid, done := onThread(func() {
			_, readErr = syscall.Pread(int(f.Fd()), buf, 4<<20)
			returned = time.Now()
		})
		time.Sleep(200 * time.Millisecond)
		syscall.Tgkill(os.Getpid(), tid, syscall.SIGUSR1)
		select {
		case <-done:
		case <-time.After(opTimeout + 10*time.Second):
			t.Fatal("the read never returned")
		}
		took := returned.Sub(start)
		t.Logf("signalled buffered read: %v after %v", readErr, took.Round(time.Millisecond))
		if readErr != syscall.EIO || took < opTimeout-200*time.Millisecond || took > opTimeout+time.Second {
			t.Errorf("signalled buffered read: %v after %v, want EIO at the op timeout (%v) as SEMANTICS.md states", readErr, took, opTimeout)
		}
	})

	t.Run("fatal", func(t *testing.T) {
		cat, err := exec.LookPath("cat")
		if err != nil {
			t.Skipf("cat not found: %v", err)
		}
		// dd would be a handled SIGINT; cat dies of it.
		cmd := exec.Command(cat, m.path)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		time.Sleep(300 * time.Millisecond)
		sent := time.Now()
		cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if took := time.Since(sent); took > time.Second {
				t.Errorf("cat took %v to die of SIGINT (%v)", took, err)
			}
		case <-time.After(opTimeout + 10*time.Second):
			cmd.Process.Kill()
			<-exited
			t.Fatal("cat never exited")
		}
	})
}
