package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stoppedMount starts a mount and SIGSTOPs its daemon: every request to the
// mount then waits. The daemon is continued before the cleanup kills it.
func stoppedMount(t *testing.T) string {
	t.Helper()
	srv, _ := patternServer(t, 1<<20, 61)
	mnt := t.TempDir()
	m := startMount(t, "file", "--cache-dir", t.TempDir(), "--no-prefetch", srv.URL(), mnt)
	if err := m.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.cmd.Process.Signal(syscall.SIGCONT) })
	return mnt
}

// startStatus runs `rangefs status` and returns a channel that receives once
// it exits; the cleanup kills it if it is still running.
func startStatus(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer, chan struct{}) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"status"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})
	return cmd, &out, done
}

// A mount whose daemon does not answer: status gives up after its timeout
// and says what to do.
func TestStatusOfStoppedMountTimesOut(t *testing.T) {
	needFUSE(t)
	mnt := stoppedMount(t)
	start := time.Now()
	cmd, out, done := startStatus(t, "--timeout", "1s", mnt)
	select {
	case <-done:
	case <-time.After(1*time.Second + 5*time.Second):
		t.Fatalf("status of a stopped mount still running after %v", time.Since(start))
	}
	if code := cmd.ProcessState.ExitCode(); code != exitFailure {
		t.Errorf("exit %d, want %d: %s", code, exitFailure, out)
	}
	if !strings.Contains(out.String(), "not answering") || !strings.Contains(out.String(), "fusermount3 -u "+mnt) {
		t.Errorf("the message does not say what to do: %s", out)
	}
	// What it says to do works on the stopped daemon's mount.
	fusermount, err := exec.LookPath("fusermount3")
	if err != nil {
		t.Log("fusermount3 is not installed (apt-get install fuse3): the advice is not tried")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if b, err := exec.CommandContext(ctx, fusermount, "-u", mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u %s, as advised: %v: %s", mnt, err, b)
	}
	if isMounted(t, mnt) {
		t.Error("still mounted after the advised fusermount3 -u")
	}
}

// One SIGTERM (or Ctrl-C) ends a status that waits on a stopped mount.
func TestStatusOfStoppedMountEndsOnSignal(t *testing.T) {
	needFUSE(t)
	mnt := stoppedMount(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd, out, done := startStatus(t, mnt)
		time.Sleep(300 * time.Millisecond) // it is now waiting on the mount
		cmd.Process.Signal(sig)
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			t.Fatalf("status still running 3 s after one %v", sig)
		}
		if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
			t.Errorf("%v: exit %d, want %d: %s", sig, code, exitInterrupted, out)
		}
	}
}

// status on a mount whose process died names the cure; on a cache
// directory that does not exist yet it says so and succeeds.
func TestStatusOfCrashedMountAndEmptyCache(t *testing.T) {
	dir := t.TempDir()
	r, out := rangefsOut(t, dir, nil, "status", "--cache-dir", dir+"/none")
	if r.code != exitOK || !strings.Contains(string(out), "no cache yet") {
		t.Errorf("status of a missing cache: exit %d, stdout %q, stderr %q", r.code, out, r.stderr)
	}
	r, out = rangefsOut(t, dir, []string{"HOME=" + dir, "XDG_CACHE_HOME="}, "status")
	if r.code != exitOK || !strings.Contains(string(out), "no cache yet") {
		t.Errorf("status with no default cache: exit %d, stdout %q, stderr %q", r.code, out, r.stderr)
	}

	needFUSE(t)
	srv, _ := patternServer(t, 1<<20, 100)
	mnt := t.TempDir()
	m := startMount(t, "file", "--cache-dir", t.TempDir(), "--no-prefetch", srv.URL(), mnt)
	m.cmd.Process.Kill()
	<-m.done
	m.done <- nil
	r = rangefs(t, dir, "status", mnt)
	if r.code != exitFailure || !strings.Contains(r.stderr, "process for "+mnt+" died") || !strings.Contains(r.stderr, "fusermount3 -u "+mnt) {
		t.Errorf("status of a crashed mount: exit %d, stderr %q", r.code, r.stderr)
	}
}
