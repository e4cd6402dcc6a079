package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runOut runs the binary and returns its exit code, stdout and stderr.
func runOut(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("rangefs %q did not finish in 30 s", args)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// `rangefs cache ls` lists each object with its URL, cached bytes and the
// PID holding it; rm removes one by URL (not while in use); prune removes
// the least recently used until the size fits, or nothing that is new.
func TestCacheLsRmPrune(t *testing.T) {
	needFUSE(t)
	cdir := t.TempDir()
	srvA, pa := patternServer(t, 3<<20, 51)
	srvB, pb := patternServer(t, 2<<20, 52)
	mnt := t.TempDir()
	m := startMount(t, "file", "--cache-dir", cdir, "--no-prefetch", srvA.URL(), srvB.URL(), mnt)
	if got := uncachedSHA256(t, filepath.Join(mnt, "file")); got != pa.SHA256() {
		t.Fatal("a: wrong bytes")
	}
	time.Sleep(1100 * time.Millisecond) // last use is kept in seconds: b is the later
	if got := uncachedSHA256(t, filepath.Join(mnt, "file-2")); got != pb.SHA256() {
		t.Fatal("b: wrong bytes")
	}
	code, out, errs := runOut(t, "cache", "ls", "--cache-dir", cdir)
	pid := strconv.Itoa(m.cmd.Process.Pid)
	if code != 0 || strings.Count(out, pid) != 2 {
		t.Fatalf("cache ls while mounted (exit %d): want pid %s twice:\n%s%s", code, pid, out, errs)
	}
	code, out, errs = runOut(t, "status", "--cache-dir", cdir)
	if code != 0 || !regexp.MustCompile(`cache budget: [0-9.]+ MiB used, no size limit, 2 object\(s\)`).MatchString(out) || strings.Contains(out, ".budget") {
		t.Fatalf("status with the budget line (exit %d):\n%s%s", code, out, errs)
	}
	if code, _, errs := runOut(t, "cache", "rm", "--cache-dir", cdir, srvA.URL()); code == 0 || !strings.Contains(errs, "in use") {
		t.Fatalf("cache rm of an object in use: exit %d, %s", code, errs)
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	if code := m.wait(t); code != 0 {
		t.Fatalf("mount exit %d", code)
	}
	code, out, errs = runOut(t, "cache", "ls", "--cache-dir", cdir)
	if code != 0 || !strings.Contains(out, srvA.URL()) || !strings.Contains(out, srvB.URL()) ||
		!strings.Contains(out, "3.0 MiB  3.0 MiB") || strings.Contains(out, pid) {
		t.Fatalf("cache ls after unmount (exit %d):\n%s%s", code, out, errs)
	}
	if code, out, errs := runOut(t, "cache", "prune", "--cache-dir", cdir, "--older-than", "1h"); code != 0 || !strings.Contains(out, "pruned 0 object") {
		t.Fatalf("prune --older-than 1h removed something new (exit %d): %s%s", code, out, errs)
	}
	if code, out, errs := runOut(t, "cache", "prune", "--cache-dir", cdir, "--max-size", "2MiB"); code != 0 ||
		!strings.Contains(out, srvA.URL()) || strings.Contains(out, srvB.URL()) {
		t.Fatalf("prune --max-size 2MiB should remove a (the least recently used) only (exit %d): %s%s", code, out, errs)
	}
	if code, out, errs := runOut(t, "cache", "rm", "--cache-dir", cdir, srvB.URL()); code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("cache rm (exit %d): %s%s", code, out, errs)
	}
	ents, _ := os.ReadDir(cdir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("left in the cache dir after rm and prune: %s", e.Name())
		}
	}
	if code, _, _ := runOut(t, "cache", "rm", "--cache-dir", cdir, "nothing-such"); code == 0 {
		t.Fatal("cache rm of an unknown object succeeded")
	}
}
