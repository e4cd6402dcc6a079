package main

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// writeBigManifest writes a manifest of n files (dDDD/eEE/fF.bin, 100
// directories of 100 of 10 files) pointing at base, and returns its path.
func writeBigManifest(tb testing.TB, n int, base string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "big.tsv")
	f, err := os.Create(p)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range n {
		path := fmt.Sprintf("d%03d/e%02d/f%d.bin", i/1000, i/10%100, i%10)
		fmt.Fprintf(w, "%s\t%s/%s\t%d\n", path, base, path, i%5000)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return p
}

// countingServer answers every request with 404 and counts them.
func countingServer(tb testing.TB) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		http.NotFound(w, r)
	}))
	tb.Cleanup(srv.Close)
	return srv, &n
}

// A manifest of 100,000 files mounts with no request, and find over the
// whole tree lists every file and sends no request either.
func TestManifest100kFindSendsNoRequest(t *testing.T) {
	needFUSE(t)
	srv, requests := countingServer(t)
	const n = 100_000
	manifest := writeBigManifest(t, n, srv.URL)
	mnt := t.TempDir()
	startMount(t, "d000", "--cache-dir", t.TempDir(), "--manifest", manifest, mnt)
	paths := findFiles(t, mnt)
	if len(paths) != n || paths[0] != "d000/e00/f0.bin" || paths[n-1] != "d099/e99/f9.bin" {
		t.Fatalf("find lists %d files (%q … %q), want %d", len(paths), paths[0], paths[len(paths)-1], n)
	}
	if got := requests.Load(); got != 0 {
		t.Fatalf("mount and find over a manifest sent %d requests, want 0", got)
	}
}

// peakRSS is the VmHWM of a process, in bytes.
func peakRSS(tb testing.TB, pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	tb.Fatal("no VmHWM")
	return 0
}

// BenchmarkMountManifest100k measures a mount of a 100,000-file manifest:
// the time until the mount is up, its peak RSS then, and the time and peak
// RSS of a find over the whole tree.
func BenchmarkMountManifest100k(b *testing.B) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		b.Skipf("no /dev/fuse: %v", err)
	}
	srv, requests := countingServer(b)
	manifest := writeBigManifest(b, 100_000, srv.URL)
	var mountTime, findTime time.Duration
	var rssMount, rssFind int64
	for b.Loop() {
		mnt := b.TempDir()
		cmd := exec.Command(binary, "mount", "--cache-dir", b.TempDir(), "--manifest", manifest, mnt)
		stderr := &syncBuffer{mark: "rangefs: mounted", ready: make(chan struct{})}
		cmd.Stderr = stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		select {
		case <-stderr.ready:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			b.Fatalf("not mounted within 30 s: %s", stderr.String())
		}
		mountTime += time.Since(start)
		rssMount = max(rssMount, peakRSS(b, cmd.Process.Pid))
		start = time.Now()
		out, err := exec.Command("find", mnt, "-type", "f").Output()
		findTime += time.Since(start)
		if err != nil || strings.Count(string(out), "\n") != 100_000 {
			b.Errorf("find: %d lines, %v", strings.Count(string(out), "\n"), err)
		}
		rssFind = max(rssFind, peakRSS(b, cmd.Process.Pid))
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	}
	if requests.Load() != 0 {
		b.Errorf("%d requests", requests.Load())
	}
	b.ReportMetric(float64(mountTime.Milliseconds())/float64(b.N), "mount-ms")
	b.ReportMetric(float64(rssMount)/(1<<20), "mount-peak-RSS-MiB")
	b.ReportMetric(float64(findTime.Milliseconds())/float64(b.N), "find-ms")
	b.ReportMetric(float64(rssFind)/(1<<20), "find-peak-RSS-MiB")
}
