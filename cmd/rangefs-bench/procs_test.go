package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestIsMounted(t *testing.T) {
	if !isMounted("/") {
		t.Error(`isMounted("/") = false on a live system`)
	}
	if isMounted(t.TempDir()) {
		t.Error("a fresh temp dir is not a mountpoint")
	}
}

func TestSupervisorStopsByPID(t *testing.T) {
	dir := t.TempDir()
	sup := newSupervisor(io.Discard, false)
	defer sup.cleanup()

	// A child that ignores SIGTERM is killed after the grace period.
	stubborn, err := sup.start("stubborn", []string{"sh", "-c", "trap '' TERM; echo ready; sleep 30"}, dir, filepath.Join(dir, "stubborn.log"))
	if err != nil {
		t.Fatal(err)
	}
	waitForLog(t, filepath.Join(dir, "stubborn.log"), "ready")
	start := time.Now()
	sup.stop(stubborn, 300*time.Millisecond)
	if !stubborn.exited() {
		t.Fatal("stubborn child survived stop")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("stop took %v", took)
	}
	if ws, ok := stubborn.state.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Errorf("stubborn child ended with %v, want SIGKILL", stubborn.state)
	}

	// runTool: success with rusage, failure with the last output line, timeout.
	c, err := sup.runTool(context.Background(), "ok", []string{"sh", "-c", "head -c 20000000 /dev/zero | cat > /dev/null; echo done"}, dir, filepath.Join(dir, "ok.log"), 20*time.Second)
	if err != nil {
		t.Fatalf("runTool: %v", err)
	}
	if kib, _ := c.maxRSSKiB(); kib <= 0 || c.wall() <= 0 {
		t.Errorf("finished child: rss %d KiB, wall %v", kib, c.wall())
	}
	_, err = sup.runTool(context.Background(), "bad", []string{"sh", "-c", "echo first; echo 'the reason' >&2; exit 3"}, dir, filepath.Join(dir, "bad.log"), 20*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "the reason") {
		t.Errorf("failing tool error = %v, want exit status and last line", err)
	}
	c, err = sup.runTool(context.Background(), "slow", []string{"sleep", "30"}, dir, filepath.Join(dir, "slow.log"), 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "timed out") || !c.exited() {
		t.Errorf("slow tool: err %v, exited %v", err, c.exited())
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	c, err = sup.runTool(ctx, "cancelled", []string{"sleep", "30"}, dir, filepath.Join(dir, "c.log"), time.Minute)
	if err == nil || !c.exited() {
		t.Errorf("cancelled tool: err %v, exited %v", err, c.exited())
	}

	// cleanup stops whatever is left.
	left, err := sup.start("left", []string{"sleep", "30"}, dir, filepath.Join(dir, "left.log"))
	if err != nil {
		t.Fatal(err)
	}
	sup.cleanup()
	if !left.exited() {
		t.Error("cleanup left a child running")
	}
	if _, err := sup.start("missing", []string{filepath.Join(dir, "no-such-binary")}, dir, filepath.Join(dir, "m.log")); err == nil {
		t.Error("starting a missing binary succeeded")
	}
}

func TestBounded(t *testing.T) {
	v, err := bounded(context.Background(), time.Second, func() { t.Error("kill called on success") },
		func(ctx context.Context) (int, error) { return 42, nil })
	if v != 42 || err != nil {
		t.Errorf("bounded = %d, %v", v, err)
	}
	// f ignores its context and only returns once kill runs, like a read stuck in FUSE
	// that returns when the daemon dies.
	release := make(chan struct{})
	killed := false
	_, err = bounded(context.Background(), 100*time.Millisecond, func() { killed = true; close(release) },
		func(ctx context.Context) (int, error) { <-release; return 0, io.ErrUnexpectedEOF })
	if !killed || err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("stuck f: killed %v, err %v", killed, err)
	}
}

func TestTailFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	os.WriteFile(p, []byte("one\ntwo\n"+strings.Repeat("x", 300)+"\n\n"), 0o644)
	got := tailFile(p)
	if !strings.HasPrefix(got, "xxx") || len(got) > 210 {
		t.Errorf("tailFile = %q", got)
	}
	if tailFile(filepath.Join(t.TempDir(), "none")) != "" {
		t.Error("missing file must give an empty tail")
	}
}

func waitForLog(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never printed %q", path, want)
}

// TestChildRSSNotInheritedFromDriver: a tiny child must not report the driver's past peak
// (Linux folds the vfork parent's peak into the child's maxrss at exec).
func TestChildRSSNotInheritedFromDriver(t *testing.T) {
	// Raise the driver's peak by 256 MiB outside the Go heap (so the race detector's
	// shadow memory does not keep it resident), then give it back.
	big, err := syscall.Mmap(-1, 0, 256<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(big); i += 4096 {
		big[i] = 1
	}
	if err := syscall.Munmap(big); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sup := newSupervisor(io.Discard, false)
	defer sup.cleanup()
	c, err := sup.runTool(context.Background(), "true", []string{"true"}, dir, filepath.Join(dir, "true.log"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	kib, upper := c.maxRSSKiB()
	if kib >= 200<<10 {
		t.Errorf("true reported %d KiB peak RSS: the driver's 256 MiB peak leaked into it", kib)
	}
	if kib <= c.floor != upper {
		t.Errorf("upper = %v for %d KiB with floor %d KiB", upper, kib, c.floor)
	}
}

func TestParseStatusKiB(t *testing.T) {
	st := "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    2996 kB\nVmRSS:\t 2000 kB\n"
	if got := parseStatusKiB(st, "VmHWM:"); got != 2996 {
		t.Errorf("VmHWM = %d", got)
	}
	if got := parseStatusKiB(st, "VmSwap:"); got != 0 {
		t.Errorf("missing key = %d", got)
	}
}
