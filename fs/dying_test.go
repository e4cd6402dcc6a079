package fs

import (
	"bufio"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"rangefs/cache"
)

// A program that handles a signal and is then killed while its read waits
// on a silent server exits at once: the kernel sends one interrupt, for the
// handled signal, which does not end the read, and the fatal signal after
// it is seen by watching the caller (dying).
func TestKilledAfterHandledSignalExitsAtOnce(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skipf("python3 not found: %v", err)
	}
	src := newSource(16 << 20)
	src.Hold(make(chan struct{}))
	m := mountPattern(t, src, t.TempDir(), Options{OpTimeout: 20 * time.Second}, cache.Options{ReadAheadMax: chunk})
	script := `
import os, signal, sys
signal.signal(signal.SIGUSR1, lambda *a: None)
fd = os.open(sys.argv[1], os.O_RDONLY)
print("reading", flush=True)
os.pread(fd, 65536, 4 << 20)
print("read returned", flush=True)
`
	cmd := exec.Command(py, "-c", script, m.path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Its output, line by line; exited follows once it is all read.
	lines := make(chan string, 2)
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	select {
	case l := <-lines:
		if l != "reading" {
			t.Fatalf("python printed %q before its read", l)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("python never got to its read")
	}
	time.Sleep(300 * time.Millisecond) // its handler is set and its read is waiting on the server
	cmd.Process.Signal(syscall.SIGUSR1)
	time.Sleep(400 * time.Millisecond) // past interruptGrace: the handled signal did not end the read
	select {
	case l, ok := <-lines:
		t.Fatalf("after a handled signal python printed %q (open %v): its read ended", l, ok)
	default:
	}
	sent := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if took := time.Since(sent); took > 2*time.Second {
			t.Errorf("python took %v to die of SIGTERM (%v)", took, err)
		}
		if l, ok := <-lines; ok {
			t.Errorf("python printed %q: want it killed in its read", l)
		}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatal("python never died of SIGTERM while its read waited")
	}
}

func TestParseDying(t *testing.T) {
	status := func(pnd, shd, blk, ign, cgt string) string {
		return "Name:\tx\nState:\tS (sleeping)\nSigQ:\t0/1\nSigPnd:\t" + pnd + "\nShdPnd:\t" + shd +
			"\nSigBlk:\t" + blk + "\nSigIgn:\t" + ign + "\nSigCgt:\t" + cgt + "\nCapInh:\t0\n"
	}
	const z = "0000000000000000"
	for _, c := range []struct {
		name, text string
		dead, ok   bool
	}{
		{"nothing pending", status(z, z, z, z, z), false, true},
		{"SIGKILL (a process ending)", status("0000000000000100", z, z, z, z), true, true},
		{"SIGINT, default", status(z, "0000000000000002", z, z, z), true, true},
		{"SIGINT, caught", status(z, "0000000000000002", z, z, "0000000000000002"), false, true},
		{"SIGTERM, blocked", status("0000000000004000", z, "0000000000004000", z, z), false, true},
		{"SIGTERM, ignored", status("0000000000004000", z, z, "0000000000004000", z), false, true},
		{"SIGCHLD and SIGWINCH, default", status("0000000008010000", z, z, z, z), false, true},
		{"SIGUSR1 caught, SIGKILL too", status("0000000000000300", z, z, z, "0000000000000200"), true, true},
		{"no masks", "Name:\tx\n", false, false},
		{"bad hex", status("zz", z, z, z, z), false, false},
	} {
		dead, ok := parseDying(strings.NewReader(c.text))
		if dead != c.dead || ok != c.ok {
			t.Errorf("%s: dying %v, ok %v; want %v, %v", c.name, dead, ok, c.dead, c.ok)
		}
	}
	if _, ok := dying(0); ok {
		t.Error("dying(0) claims to know")
	}
	if dead, ok := dying(uint32(syscall.Gettid())); !ok || dead {
		t.Errorf("dying(this thread) = %v, %v; want false, true", dead, ok)
	}
}
