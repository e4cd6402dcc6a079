package main

// Reliability scenarios of ../shared/RELIABILITY.md that need the real binary:
// crash loops, a full cache disk, secrets, exclusivity, unmount under load,
// remote change and expiry through a mount.

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"rangefs/cache"
	"rangefs/fetch/fetchtest"
)

// onlyCacheDir returns the one object directory inside a cache root.
func onlyCacheDir(t *testing.T, root string) string {
	t.Helper()
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") { // .budget holds the budget's ledger
			dirs = append(dirs, filepath.Join(root, e.Name()))
		}
	}
	if len(dirs) != 1 {
		t.Fatalf("cache root %s has %d object directories, want 1", root, len(dirs))
	}
	return dirs[0]
}

// A mount with the prefetcher running is SIGKILLed at random moments, many
// times. After each kill every chunk the index marks present verifies; in
// the end the file read through a fresh mount is exact.
func TestMountCrashLoopWithPrefetch(t *testing.T) {
	needFUSE(t)
	const size = 32<<20 + 4321
	srv, p := patternServer(t, size, 11, fetchtest.WithConnRate(1<<20))
	mnt, cdir := t.TempDir(), t.TempDir()
	iterations := 50
	if testing.Short() {
		iterations = 10
	}
	rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	deadline := time.Now().Add(60 * time.Second)
	kills := 0
	for i := 0; i < iterations && time.Now().Before(deadline); i++ {
		m := startMount(t, "file", "--cache-dir", cdir, "-j", "4", "--chunk-size", "256K", srv.URL(), mnt)
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		m.cmd.Process.Kill()
		m.wait(t)
		kills++
		checkStateVerifies(t, onlyCacheDir(t, cdir))
	}
	srv.SetConnRate(0)
	m := startMount(t, "file", "--cache-dir", cdir, "-j", "4", "--chunk-size", "256K", srv.URL(), mnt)
	if got := fileSHA256(t, filepath.Join(mnt, "file")); got != p.SHA256() {
		t.Fatalf("after %d kills the mounted file's sha256 is %s, want %s", kills, got, p.SHA256())
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	if code := m.wait(t); code != 0 {
		t.Fatalf("exit %d: %s", code, m.stderr.String())
	}
	t.Logf("%d SIGKILLs of a prefetching mount; every present chunk verified after each", kills)
}

// With the cache on a tiny tmpfs, reads through the mount still return the
// right bytes; nothing is marked present that was not written; the log says
// so once.
func TestMountDiskFullStillServes(t *testing.T) {
	needFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting a small tmpfs as the cache needs root")
	}
	cdir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", cdir).CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { syscall.Unmount(cdir, syscall.MNT_DETACH) })
	const size = 12 << 20
	srv, p := patternServer(t, size, 12)
	mnt := t.TempDir()
	m := startMount(t, "file", "--cache-dir", cdir, "--no-prefetch", "--chunk-size", "256K", srv.URL(), mnt)
	for range 2 {
		if got := fileSHA256(t, filepath.Join(mnt, "file")); got != p.SHA256() {
			t.Fatalf("read through a mount with a full cache disk: sha256 %s, want %s", got, p.SHA256())
		}
		// Drop the kernel's copy so the second pass asks the daemon again.
		os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	if code := m.wait(t); code != 0 {
		t.Fatalf("exit %d: %s", code, m.stderr.String())
	}
	if n := strings.Count(m.stderr.String(), "cache disk failed"); n != 1 {
		t.Errorf("the disk failure was logged %d times, want once:\n%s", n, m.stderr.String())
	}
	state := onlyCacheDir(t, cdir)
	checkStateVerifies(t, state)
	_, st, err := cache.Inspect(state)
	if err != nil {
		t.Fatal(err)
	}
	if st.BytesPresent >= size || st.BytesPresent > 2<<20 {
		t.Errorf("index claims %d bytes present on a 2 MiB disk", st.BytesPresent)
	}
}

// No secret from the URL (userinfo, signed query) or a header shows in
// logs, errors, the process's command line, or any byte of the cache.
func TestSecretsAppearNowhere(t *testing.T) {
	needFUSE(t)
	srv, p := patternServer(t, 3<<20, 13)
	secrets := []string{"s3cr3tpass", "SIGSECRET123", "CREDSECRET456", "TOKENSECRET789"}
	dir := t.TempDir()
	u := strings.Replace(srv.URL(), "http://", "http://alice:s3cr3tpass@", 1) +
		"?X-Amz-Credential=CREDSECRET456&X-Amz-Signature=SIGSECRET123"
	urlFile := filepath.Join(dir, "url")
	hdrFile := filepath.Join(dir, "headers")
	os.WriteFile(urlFile, []byte(u+"\n"), 0o600)
	os.WriteFile(hdrFile, []byte("Authorization: Bearer TOKENSECRET789\n"), 0o600)

	mnt, cdir := t.TempDir(), t.TempDir()
	m := startMount(t, "file", "-v", "--cache-dir", cdir, "--header-file", hdrFile, "@"+urlFile, mnt)
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(m.cmd.Process.Pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if fileSHA256(t, filepath.Join(mnt, "file")) != p.SHA256() {
		t.Fatal("wrong bytes")
	}
	xattr := make([]byte, 4096)
	n, _ := syscall.Getxattr(filepath.Join(mnt, "file"), "user.rangefs.url", xattr)
	status := exec.Command(binary, "status", mnt)
	statusOut, _ := status.CombinedOutput()
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.wait(t)

	// A failing download prints errors that name the URL.
	gone := strings.Replace(u, "/file?", "/missing?", 1)
	os.WriteFile(urlFile, []byte(gone+"\n"), 0o600)
	r := rangefs(t, dir, "get", "-v", "--header-file", hdrFile, "@"+urlFile)
	if r.code == exitOK {
		t.Fatal("get of a missing file succeeded")
	}
	// And a successful one logs its requests with -v.
	os.WriteFile(urlFile, []byte(u+"\n"), 0o600)
	r2 := rangefs(t, dir, "get", "-v", "-o", "got", "--header-file", hdrFile, "@"+urlFile)
	if r2.code != exitOK {
		t.Fatalf("get: %d %s", r2.code, r2.stderr)
	}

	places := map[string][]byte{
		"mount log":    []byte(m.stderr.String()),
		"cmdline":      cmdline,
		"xattr url":    xattr[:max(n, 0)],
		"status":       statusOut,
		"get errors":   []byte(r.stderr),
		"get -v log":   []byte(r2.stderr),
		"state dir ls": nil,
	}
	filepath.Walk(cdir, func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && info.Name() != "data" {
			b, _ := os.ReadFile(path)
			places["cache file "+info.Name()] = b
		}
		return nil
	})
	for where, b := range places {
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("secret %q found in %s", s, where)
			}
		}
	}
	if !strings.Contains(string(places["mount log"]), "level=DEBUG") {
		t.Errorf("-v logged nothing, so the test proves little:\n%s", places["mount log"])
	}
}

// Two processes on one cache: the second fails within about a second and
// names the first.
func TestSecondProcessOnCacheFailsFast(t *testing.T) {
	needFUSE(t)
	srv, _ := patternServer(t, 1<<20, 14)
	cdir := t.TempDir()
	first := startMount(t, "file", "--cache-dir", cdir, srv.URL(), t.TempDir())
	start := time.Now()
	r := rangefs(t, t.TempDir(), "mount", "--cache-dir", cdir, srv.URL(), t.TempDir())
	elapsed := time.Since(start)
	if r.code == exitOK {
		t.Fatal("a second mount of the same cache succeeded")
	}
	if !strings.Contains(r.stderr, "pid "+strconv.Itoa(first.cmd.Process.Pid)) {
		t.Errorf("the error does not name the holder (pid %d): %s", first.cmd.Process.Pid, r.stderr)
	}
	if elapsed > 5*time.Second {
		t.Errorf("the second process took %v to fail", elapsed)
	}
}

// Unmounting while a read waits on a server that never answers: the daemon
// still exits promptly and cleanly, and the reader gets an error, not a hang.
func TestUnmountWithReadInFlight(t *testing.T) {
	needFUSE(t)
	srv, _ := patternServer(t, 8<<20, 15)
	mnt := t.TempDir()
	m := startMount(t, "file", "--cache-dir", t.TempDir(), "--no-prefetch", srv.URL(), mnt)
	srv.Inject(fetchtest.Fault{Kind: fetchtest.BlackHole, RangedOnly: true})
	reader := exec.Command("dd", "if="+filepath.Join(mnt, "file"), "of=/dev/null", "bs=4096", "count=1", "skip=1000")
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	readerDone := make(chan error, 1)
	go func() { readerDone <- reader.Wait() }()
	for i := 0; i < 100 && srv.Stats().InFlight == 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	start := time.Now()
	if code := m.wait(t); code != 0 {
		t.Errorf("exit %d: %s", code, m.stderr.String())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the daemon took %v to exit with a read in flight", d)
	}
	select {
	case err := <-readerDone:
		if err == nil {
			t.Error("the reader of an unanswered read succeeded")
		}
	case <-time.After(10 * time.Second):
		reader.Process.Kill()
		<-readerDone
		t.Error("the reader stayed blocked after the daemon exited")
	}
	if isMounted(t, mnt) {
		t.Error("mount left behind")
	}
}

// The remote is replaced by a same-size version with a new ETag while
// mounted: reads fail with ESTALE, never mixing versions; a new mount serves
// the new version.
func TestMountRemoteChangeIsESTALE(t *testing.T) {
	needFUSE(t)
	const size = 8 << 20
	srv, _ := patternServer(t, size, 16)
	mnt, cdir := t.TempDir(), t.TempDir()
	m := startMount(t, "file", "--cache-dir", cdir, "--no-prefetch", "--chunk-size", "256K", srv.URL(), mnt)
	f, err := os.Open(filepath.Join(mnt, "file"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	v2 := fetchtest.Pattern(size, 17)
	srv.SetContent(fetchtest.DefaultPath, v2, size)
	_, err = f.ReadAt(buf, 6<<20)
	f.Close()
	if !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("read of an uncached range after the remote changed: %v, want ESTALE", err)
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.wait(t)

	m2 := startMount(t, "file", "--cache-dir", cdir, "--no-prefetch", srv.URL(), mnt)
	if !strings.Contains(m2.stderr.String(), "discarded") {
		t.Errorf("the remount did not say it discarded the old version: %s", m2.stderr.String())
	}
	if got := fileSHA256(t, filepath.Join(mnt, "file")); got != v2.SHA256() {
		t.Fatalf("after remount: sha256 %s, want the new version %s", got, v2.SHA256())
	}
	m2.cmd.Process.Signal(syscall.SIGTERM)
	m2.wait(t)
}

// A presigned URL that expires: uncached reads fail (403 is not retried
// forever), cached reads go on, and a fresh URL with a new signature finds
// the same cache.
func TestPresignedURLExpiryKeepsCache(t *testing.T) {
	needFUSE(t)
	const size = 4 << 20
	srv, p := patternServer(t, size, 18)
	signed := func(sig string) string { return srv.URL() + "?X-Amz-Expires=60&X-Amz-Signature=" + sig }
	mnt, cdir := t.TempDir(), t.TempDir()
	m := startMount(t, "file", "--cache-dir", cdir, "--no-prefetch", "--chunk-size", "256K", "--op-timeout", "10s", signed("one"), mnt)
	f, err := os.Open(filepath.Join(mnt, "file"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 1<<20)
	if _, err := f.ReadAt(head, 0); err != nil {
		t.Fatal(err)
	}
	srv.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: 403})
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 3<<20); !errors.Is(err, syscall.EIO) {
		t.Errorf("uncached read with an expired URL: %v, want EIO", err)
	}
	// O_DIRECT, so the cached read reaches rangefs instead of the page cache.
	d, err := os.OpenFile(filepath.Join(mnt, "file"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadAt(buf, 4096); err != nil || !bytes.Equal(buf, p.Bytes(4096, 4096)) {
		t.Errorf("cached read with an expired URL: %v", err)
	}
	d.Close()
	f.Close()
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.wait(t)
	if !strings.Contains(m.stderr.String(), "403") {
		t.Errorf("the log does not say why reads failed:\n%s", m.stderr.String())
	}

	srv.ClearFaults()
	m2 := startMount(t, "file", "--cache-dir", cdir, "--no-prefetch", "--chunk-size", "256K", signed("two"), mnt)
	if strings.Contains(m2.stderr.String(), "discarded") {
		t.Errorf("re-signing discarded the cache: %s", m2.stderr.String())
	}
	srv.ResetStats() // after the mount's own probe and range check
	// O_DIRECT: no kernel read-ahead beyond the cached first MiB.
	f2, err := os.OpenFile(filepath.Join(mnt, "file"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if _, err := f2.ReadAt(buf, 8192); err != nil || !bytes.Equal(buf, p.Bytes(8192, 4096)) {
		t.Fatalf("read after re-signing: %v", err)
	}
	if n := srv.Stats().RangeRequests; n > 0 {
		t.Errorf("a fresh signature did not find the cache: %d range requests", n)
	}
	f2.Close()
	m2.cmd.Process.Signal(syscall.SIGTERM)
	m2.wait(t)
}

// A Content-Disposition name from the server never leads outside the
// target directory.
func TestGetContentDispositionStaysInside(t *testing.T) {
	srv, p := patternServer(t, 1<<20, 19)
	for _, name := range []string{"../../evil.sh", "/etc/evil.sh", "..", `..\\..\\evil.sh`, "."} {
		srv.SetBehavior(fetchtest.Behavior{ContentDisposition: `attachment; filename="` + name + `"`})
		parent := t.TempDir()
		dir := filepath.Join(parent, "a", "b")
		os.MkdirAll(dir, 0o755)
		r := rangefs(t, dir, "get", "-q", srv.URL())
		if r.code != exitOK {
			t.Fatalf("%q: exit %d: %s", name, r.code, r.stderr)
		}
		var found []string
		filepath.Walk(parent, func(path string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() {
				found = append(found, path)
			}
			return nil
		})
		if len(found) != 1 || filepath.Dir(found[0]) != dir || fileSHA256(t, found[0]) != p.SHA256() {
			t.Errorf("Content-Disposition %q: files %q, want one inside %s", name, found, dir)
		}
	}
}

// A declared size of 2^62 is refused with a clear message, by get (no room)
// and by mount (too many chunks), before anything is written.
func TestHugeDeclaredSizeRefused(t *testing.T) {
	srv, _ := patternServer(t, 1<<62, 20)
	dir := t.TempDir()
	r := rangefs(t, dir, "get", "-q", "-o", "x", srv.URL())
	if r.code != exitDiskFull || !strings.Contains(r.stderr, "space") {
		t.Errorf("get: exit %d %q, want %d about disk space", r.code, r.stderr, exitDiskFull)
	}
	r = rangefs(t, dir, "get", "-q", "--max-size", "1G", "-o", "y", srv.URL())
	if r.code == exitOK || !strings.Contains(r.stderr, "max-size") {
		t.Errorf("get --max-size: exit %d %q", r.code, r.stderr)
	}
	needFUSE(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mnt := t.TempDir()
	out, err := exec.CommandContext(ctx, binary, "mount", "--cache-dir", t.TempDir(), srv.URL(), mnt).CombinedOutput()
	if err == nil || isMounted(t, mnt) {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		t.Fatalf("a 2^62-byte file was mounted: %s", out)
	}
	if !strings.Contains(string(out), "too large") && !strings.Contains(string(out), "chunks") {
		t.Errorf("mount refusal does not say why: %s", out)
	}
}

// A server that ignores Range, or will not tell the size, or compresses its
// ranges, is refused at mount time with what it answered.
func TestMountRefusesUnsuitableServers(t *testing.T) {
	needFUSE(t)
	for _, tc := range []struct {
		name  string
		setup func(*fetchtest.Server)
		say   string
	}{
		{"range ignored", func(s *fetchtest.Server) {
			s.SetBehavior(fetchtest.Behavior{NoAcceptRanges: true})
			s.Inject(fetchtest.Fault{Kind: fetchtest.IgnoreRange})
		}, "Range"},
		{"ranges advertised on HEAD, ignored on GET", func(s *fetchtest.Server) {
			s.Inject(fetchtest.Fault{Kind: fetchtest.IgnoreRange})
		}, "Range"},
		{"no size", func(s *fetchtest.Server) {
			s.SetBehavior(fetchtest.Behavior{NoContentLength: true, NoAcceptRanges: true})
			s.Inject(fetchtest.Fault{Kind: fetchtest.IgnoreRange})
		}, "size"},
		{"gzip", func(s *fetchtest.Server) { s.SetBehavior(fetchtest.Behavior{Gzip: true, NoAcceptRanges: true}) }, "encod"},
	} {
		srv, _ := patternServer(t, 1<<20, 22)
		tc.setup(srv)
		mnt := t.TempDir()
		r := rangefs(t, t.TempDir(), "mount", "--cache-dir", t.TempDir(), srv.URL(), mnt)
		if isMounted(t, mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
			t.Errorf("%s: mounted", tc.name)
		}
		if r.code == exitOK || !strings.Contains(r.stderr, tc.say) {
			t.Errorf("%s: exit %d, stderr %q; want a failure mentioning %q", tc.name, r.code, r.stderr, tc.say)
		}
	}
}
