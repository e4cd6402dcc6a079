package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"rangefs/cache/cachetest"
)

// uncachedSHA256 reads path end to end after dropping its pages from the
// kernel's page cache, so every byte comes from the mount.
func uncachedSHA256(t *testing.T, path string) string {
	t.Helper()
	sum, err := uncachedSum(path)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// uncachedSum is uncachedSHA256 for goroutines other than the test's.
func uncachedSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func budgetSizes() (file, limit int64) {
	if testing.Short() {
		return 96 << 20, 16 << 20
	}
	return 512 << 20, 64 << 20
}

// A mount with --cache-max-size reads a file eight times its budget end to
// end, twice, with exact bytes, while du of the cache never passes the
// limit plus one chunk per connection.
func TestMountBoundedCache(t *testing.T) {
	needFUSE(t)
	size, limit := budgetSizes()
	srv, p := patternServer(t, size, 21)
	mnt, cdir := t.TempDir(), t.TempDir()
	startMount(t, "file", "--cache-dir", cdir, "--cache-max-size", strconv.FormatInt(limit, 10), srv.URL(), mnt)
	path := filepath.Join(mnt, "file")
	stop := cachetest.SamplePeak(cdir, 100*time.Millisecond)
	for pass := range 2 {
		if got := uncachedSHA256(t, path); got != p.SHA256() {
			t.Fatalf("pass %d: sha256 %s, want %s", pass, got, p.SHA256())
		}
	}
	peak, samples := stop()
	bound := limit + 8<<20 // 8 connections of 1 MiB chunks
	t.Logf("du peak %d bytes over %d samples; limit %d, bound %d", peak, samples, limit, bound)
	if peak > bound {
		t.Fatalf("du of the cache peaked at %d bytes, over %d", peak, bound)
	}
	if peak < limit/2 {
		t.Fatalf("du peaked at %d: the cache was hardly used (limit %d)", peak, limit)
	}
}

// Two mounts (two processes) share one cache directory and its cap.
func TestMountsShareBudget(t *testing.T) {
	needFUSE(t)
	size, limit := budgetSizes()
	size /= 2
	cdir := t.TempDir()
	type one struct {
		path string
		sum  string
	}
	var ms []one
	for i := range 2 {
		srv, p := patternServer(t, size, uint64(30+i))
		mnt := t.TempDir()
		startMount(t, "file", "--cache-dir", cdir, "--cache-max-size", strconv.FormatInt(limit, 10), srv.URL(), mnt)
		ms = append(ms, one{filepath.Join(mnt, "file"), p.SHA256()})
	}
	stop := cachetest.SamplePeak(cdir, 100*time.Millisecond)
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := uncachedSum(m.path); err != nil || got != m.sum {
				t.Errorf("%s: sha256 %s (%v), want %s", m.path, got, err, m.sum)
			}
		}()
	}
	wg.Wait()
	peak, samples := stop()
	bound := limit + 2*8<<20
	t.Logf("du peak %d over %d samples; bound %d", peak, samples, bound)
	if peak > bound {
		t.Fatalf("two mounts' cache peaked at %d, over %d", peak, bound)
	}
}

// A file the kernel may read by passthrough (complete and verified) keeps
// every chunk while open, though another file's reads press on the budget:
// a read through the open handle never meets a hole.
func TestMountPassthroughUnderEvictionPressure(t *testing.T) {
	needFUSE(t)
	const small = 8 << 20
	big, limit := budgetSizes()
	srvA, pa := patternServer(t, small, 41)
	srvB, pb := patternServer(t, big/2, 42)
	mnt, cdir := t.TempDir(), t.TempDir()
	m := startMount(t, "file", "--cache-dir", cdir, "--cache-max-size", strconv.FormatInt(limit, 10), "--no-prefetch",
		srvA.URL(), srvB.URL(), mnt)
	defer func() {
		if t.Failed() {
			t.Logf("mount's stderr:\n%s", m.stderr.String())
		}
	}()
	pathA, pathB := filepath.Join(mnt, "file"), filepath.Join(mnt, "file-2")
	if _, err := os.Stat(pathB); err != nil {
		t.Fatalf("names in the mount: %v", err)
	}
	if got := uncachedSHA256(t, pathA); got != pa.SHA256() {
		t.Fatalf("a: %s", got)
	}
	waitCached(t, pathA)
	fa, err := os.Open(pathA) // complete and verified now: passthrough if the kernel has it
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	done := make(chan string, 1)
	go func() {
		sum, err := uncachedSum(pathB)
		if err != nil {
			sum = err.Error()
		}
		done <- sum
	}()
	buf := make([]byte, 1<<20)
	for round := 0; ; round++ {
		unix.Fadvise(int(fa.Fd()), 0, 0, unix.FADV_DONTNEED)
		for off := int64(0); off < small; off += int64(len(buf)) {
			n, err := fa.ReadAt(buf, off)
			if err != nil && err != io.EOF {
				t.Fatalf("read a at %d: %v", off, err)
			}
			if !bytes.Equal(buf[:n], pa.Bytes(off, int64(n))) {
				t.Fatalf("round %d: a's bytes at %d are wrong under eviction pressure (a hole read as zeros?)", round, off)
			}
		}
		select {
		case got := <-done:
			if got != pb.SHA256() {
				t.Fatalf("b: %s", got)
			}
			return
		default:
		}
		if round > 10000 {
			t.Fatal("b's read did not finish")
		}
	}
}

// budgetLineRE matches the budget line of `rangefs status MOUNTPOINT`.
var budgetLineRE = regexp.MustCompile(`cache budget: (.+) used of (.+) \(\d+%\), min free (.+), (.+) pinned, (\d+) chunk\(s\) evicted since mount`)

// mountBudget runs `rangefs status MOUNTPOINT` and returns its budget line's
// eviction count, failing the test if the line is missing or names another
// limit.
func mountBudget(t *testing.T, mnt, limit string) (evicted int64) {
	t.Helper()
	r, out := rangefsOut(t, t.TempDir(), nil, "status", mnt)
	if r.code != exitOK {
		t.Fatalf("status %s: exit %d: %s", mnt, r.code, r.stderr)
	}
	m := budgetLineRE.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("status of the mount shows no budget line:\n%s", out)
	}
	if m[2] != limit || m[3] != "5%" {
		t.Fatalf("status shows a cap of %q and min free %q, want %q and 5%%:\n%s", m[2], m[3], limit, out)
	}
	t.Logf("%s", m[0])
	n, _ := strconv.ParseInt(m[5], 10, 64)
	return n
}

// `rangefs status MOUNTPOINT` shows the mount's budget (use, cap, min free,
// pinned bytes, evictions since mount), and --metrics-addr exports its use,
// cap and evictions; both move as a read larger than the cap evicts.
func TestMountBudgetStatusAndMetrics(t *testing.T) {
	needFUSE(t)
	const size, limit = 32 << 20, 8 << 20
	srv, p := patternServer(t, size, 71)
	mnt, cdir, addr := t.TempDir(), t.TempDir(), freeAddr(t)
	startMount(t, "file", "--cache-dir", cdir, "--cache-max-size", strconv.Itoa(limit), "--no-prefetch",
		"--metrics-addr", addr, srv.URL(), mnt)
	if n := mountBudget(t, mnt, "8.0 MiB"); n != 0 {
		t.Fatalf("%d evictions before any read", n)
	}
	fams := scrape(t, addr)
	if got := value(t, fams, "rangefs_cache_budget_limit_bytes"); got != limit {
		t.Fatalf("rangefs_cache_budget_limit_bytes %v, want %d", got, limit)
	}
	if got := value(t, fams, "rangefs_cache_evictions_total"); got != 0 {
		t.Fatalf("rangefs_cache_evictions_total %v before any read", got)
	}
	if got := uncachedSHA256(t, filepath.Join(mnt, "file")); got != p.SHA256() {
		t.Fatalf("sha256 %s, want %s", got, p.SHA256())
	}
	evicted := mountBudget(t, mnt, "8.0 MiB")
	if evicted < (size-limit)>>20 {
		t.Fatalf("status shows %d evictions after reading %d MiB through a %d MiB cap", evicted, size>>20, limit>>20)
	}
	fams = scrape(t, addr)
	used := value(t, fams, "rangefs_cache_budget_used_bytes")
	if used <= 0 || used > limit {
		t.Fatalf("rangefs_cache_budget_used_bytes %v, want within (0, %d]", used, limit)
	}
	if got := value(t, fams, "rangefs_cache_evictions_total"); got < float64(evicted) {
		t.Fatalf("rangefs_cache_evictions_total %v, status showed %d", got, evicted)
	}
	value(t, fams, "rangefs_cache_budget_pinned_bytes") // present
}
