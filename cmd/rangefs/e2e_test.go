package main

// End-to-end tests: they build the real binary and drive it as a user would,
// against an in-process range server on loopback.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"rangefs/cache"
	"rangefs/fetch/fetchtest"
)

var binary string // path of the rangefs binary built by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rangefs-e2e-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "rangefs")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		panic("building rangefs: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code   int
	stderr string
}

// rangefs runs the binary in dir and waits for it, at most a minute.
func rangefs(t *testing.T, dir string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("rangefs %q did not finish within a minute; stderr:\n%s", args, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return result{cmd.ProcessState.ExitCode(), stderr.String()}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func patternServer(t *testing.T, size int64, seed uint64, opts ...fetchtest.Option) (*fetchtest.Server, *fetchtest.PatternReader) {
	p := fetchtest.Pattern(size, seed)
	s := fetchtest.NewServer(p, size, opts...)
	t.Cleanup(s.Close)
	return s, p
}

func TestGetDownloadsExactBytes(t *testing.T) {
	srv, p := patternServer(t, 20<<20+12345, 1)
	dir := t.TempDir()
	r := rangefs(t, dir, "get", "-q", "-j", "4", "-o", "out.bin", srv.URL())
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := fileSHA256(t, filepath.Join(dir, "out.bin")); got != p.SHA256() {
		t.Fatalf("sha256 %s, want %s", got, p.SHA256())
	}
	if _, err := os.Stat(filepath.Join(dir, "out.bin.rangefs")); !os.IsNotExist(err) {
		t.Errorf("state directory left behind: %v", err)
	}
	if r.stderr != "" {
		t.Errorf("-q printed: %s", r.stderr)
	}
	// The default name is the URL's base name, and the file exists only once complete.
	r = rangefs(t, dir, "get", "-q", srv.URL())
	if r.code != exitOK || fileSHA256(t, filepath.Join(dir, "file")) != p.SHA256() {
		t.Fatalf("default output name: exit %d: %s", r.code, r.stderr)
	}
}

// The download is killed with SIGKILL at random moments, many times; after
// every kill each chunk the index calls present must pass its checksum, and
// the run that finishes yields the exact bytes.
func TestGetSurvivesKillLoop(t *testing.T) {
	const size = 40<<20 + 777
	srv, p := patternServer(t, size, 7, fetchtest.WithConnRate(512<<10))
	dir := t.TempDir()
	state := filepath.Join(dir, "out.bin.rangefs")
	iterations := 50
	if testing.Short() {
		iterations = 8
	}
	rng := rand.New(rand.NewPCG(42, uint64(time.Now().UnixNano())))
	deadline := time.Now().Add(60 * time.Second)
	kills := 0
	for i := 0; i < iterations && time.Now().Before(deadline); i++ {
		cmd := exec.Command(binary, "get", "-q", "-j", "4", "--chunk-size", "256K", "-o", "out.bin", srv.URL())
		cmd.Dir = dir
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		if _, err := os.Stat(filepath.Join(dir, "out.bin")); err == nil {
			break // it finished before the kill
		}
		kills++
		checkStateVerifies(t, state)
	}
	srv.SetConnRate(0)
	if _, err := os.Stat(filepath.Join(dir, "out.bin")); err != nil {
		r := rangefs(t, dir, "get", "-q", "-j", "4", "--chunk-size", "256K", "-o", "out.bin", srv.URL())
		if r.code != exitOK {
			t.Fatalf("final run: exit %d: %s", r.code, r.stderr)
		}
	}
	if got := fileSHA256(t, filepath.Join(dir, "out.bin")); got != p.SHA256() {
		t.Fatalf("after %d kills: sha256 %s, want %s", kills, got, p.SHA256())
	}
	t.Logf("%d SIGKILLs, then a complete and exact file; server sent %d bytes for a %d-byte file",
		kills, srv.Stats().BytesSent, size)
}

// checkStateVerifies opens a download's state as the cache would and checks
// that every chunk the index marks present has the right checksum.
func checkStateVerifies(t *testing.T, state string) {
	t.Helper()
	meta, _, err := cache.Inspect(state)
	if err != nil {
		if os.IsNotExist(errors.Unwrap(err)) || os.IsNotExist(err) {
			return // killed before the state existed
		}
		if fi, serr := os.Stat(filepath.Join(state, "index.db")); os.IsNotExist(serr) || (serr == nil && fi.Size() == 0) {
			return // killed before bbolt wrote its first pages
		}
		if strings.Contains(err.Error(), "no cache meta recorded") {
			return // killed before the first commit: nothing is marked present
		}
		t.Fatalf("inspect after kill: %v", err)
	}
	f, err := cache.Open(state, meta, offline{}, cache.Options{})
	if err != nil {
		t.Fatalf("open after kill: %v", err)
	}
	defer f.Close()
	if why := f.Discarded(); why != "" {
		t.Fatalf("state discarded after a kill: %s", why)
	}
	if err := f.Verify(context.Background()); err != nil {
		t.Fatalf("a chunk marked present fails its checksum after a kill: %v", err)
	}
}

// offline is a Source for inspecting a cache without a network.
type offline struct{}

func (offline) Fetch(context.Context, int64, int64, io.Writer) error {
	return errors.New("offline: no fetching while inspecting")
}

func TestGetInterruptThenResume(t *testing.T) {
	const size = 16 << 20
	srv, p := patternServer(t, size, 3, fetchtest.WithConnRate(1<<20))
	dir := t.TempDir()
	cmd := exec.Command(binary, "get", "-j", "2", "--chunk-size", "256K", "-o", "out.bin", srv.URL())
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // about 4 MiB of 16 arrive
	cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("rangefs get did not exit within 10 s of SIGINT")
	}
	if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
		t.Fatalf("exit %d after SIGINT, want %d; stderr:\n%s", code, exitInterrupted, stderr.String())
	}
	if !strings.Contains(stderr.String(), "run the same command again") {
		t.Errorf("no resume hint in: %s", stderr.String())
	}
	// The server counts a response's bytes when its handler returns, which
	// for the interrupted ones is a moment after the client has gone.
	for i := 0; i < 200 && srv.Stats().InFlight > 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	first := srv.Stats().BytesSent
	if first == 0 {
		t.Fatal("nothing was sent before the interrupt; the test proves nothing")
	}
	srv.SetConnRate(0)
	srv.ResetStats()
	// One connection: no run is ever cut short, so the server sends exactly
	// what the resumed download asks for.
	r := rangefs(t, dir, "get", "-j", "1", "--chunk-size", "256K", "-o", "out.bin", srv.URL())
	if r.code != exitOK {
		t.Fatalf("resume: exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "resuming") {
		t.Errorf("resume not announced: %s", r.stderr)
	}
	if fileSHA256(t, filepath.Join(dir, "out.bin")) != p.SHA256() {
		t.Fatal("resumed download has the wrong bytes")
	}
	// What was committed before the interrupt is not fetched again; only the
	// chunk each of the two connections was in the middle of is lost.
	for i := 0; i < 200 && srv.Stats().InFlight > 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if second := srv.Stats().BytesSent; second > size-first+2*(256<<10) {
		t.Errorf("resume fetched %d bytes after %d had been sent before the interrupt (size %d)", second, first, size)
	}
}

func TestGetChecksumMismatchLeavesNothing(t *testing.T) {
	srv, _ := patternServer(t, 3<<20, 1)
	dir := t.TempDir()
	r := rangefs(t, dir, "get", "-q", "--sha256", strings.Repeat("ab", 32), "-o", "out.bin", srv.URL())
	if r.code != exitChecksum || !strings.Contains(r.stderr, "sha256") {
		t.Fatalf("exit %d, stderr %q; want exit %d naming the checksum", r.code, r.stderr, exitChecksum)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

func TestGetVerifiesGoodChecksum(t *testing.T) {
	srv, p := patternServer(t, 3<<20, 1)
	dir := t.TempDir()
	r := rangefs(t, dir, "get", "-q", "--sha256", strings.ToUpper(p.SHA256()), "-o", "out.bin", srv.URL())
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
}

func TestGetRefusesToOverwrite(t *testing.T) {
	srv, p := patternServer(t, 1<<20, 1)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "out.bin"), []byte("mine"), 0o644)
	r := rangefs(t, dir, "get", "-q", "-o", "out.bin", srv.URL())
	if r.code != exitUsage || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "out.bin")); string(b) != "mine" {
		t.Fatal("existing file was touched")
	}
	r = rangefs(t, dir, "get", "-q", "--force", "-o", "out.bin", srv.URL())
	if r.code != exitOK || fileSHA256(t, filepath.Join(dir, "out.bin")) != p.SHA256() {
		t.Fatalf("--force: exit %d: %s", r.code, r.stderr)
	}
}

// A server that ignores Range still gets the file, in one stream.
func TestGetRangeIgnoredFallsBackToOneStream(t *testing.T) {
	srv, p := patternServer(t, 5<<20+3, 9)
	srv.Inject(fetchtest.Fault{Kind: fetchtest.IgnoreRange})
	dir := t.TempDir()
	r := rangefs(t, dir, "get", "-o", "out.bin", srv.URL())
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "ignores Range") {
		t.Errorf("no warning about the fallback: %s", r.stderr)
	}
	if fileSHA256(t, filepath.Join(dir, "out.bin")) != p.SHA256() {
		t.Fatal("wrong bytes from the one-stream fallback")
	}
}

// A remote that changed between two runs restarts the download from scratch;
// the result is entirely the new version.
// killedGet starts `rangefs get -q ARGS` in dir, lets it run 1.5 s (about
// 3 MiB at two connections of 1 MiB/s) and kills it, leaving a partial
// download.
func killedGet(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"get", "-q"}, args...)...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	cmd.Process.Kill()
	cmd.Wait()
}

func TestGetRemoteChangedBetweenRunsRestarts(t *testing.T) {
	const size = 8 << 20
	srv, _ := patternServer(t, size, 1, fetchtest.WithConnRate(1<<20))
	dir := t.TempDir()
	killedGet(t, dir, "-j", "2", "--chunk-size", "256K", "-o", "out.bin", srv.URL())

	v2 := fetchtest.Pattern(size, 2)
	srv.SetContent(fetchtest.DefaultPath, v2, size)
	srv.SetConnRate(0)
	r := rangefs(t, dir, "get", "-j", "2", "--chunk-size", "256K", "-o", "out.bin", srv.URL())
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "discarded") {
		t.Errorf("the restart was not announced: %s", r.stderr)
	}
	if fileSHA256(t, filepath.Join(dir, "out.bin")) != v2.SHA256() {
		t.Fatal("the result is not the new version")
	}
}

// A partial download is of one URL: a get of another URL to the same
// output starts over, even when the two servers' validators are the same
// (nginx's ETag is the mtime and size, so two files of one size and mtime
// share it).
func TestGetResumeOfAnotherURLStartsOver(t *testing.T) {
	const size = 8 << 20
	a, _ := patternServer(t, size, 1, fetchtest.WithConnRate(1<<20))
	b, pb := patternServer(t, size, 2)
	if a.ETag(fetchtest.DefaultPath) != b.ETag(fetchtest.DefaultPath) {
		t.Fatalf("the servers' ETags differ (%s, %s): the test needs them equal", a.ETag(fetchtest.DefaultPath), b.ETag(fetchtest.DefaultPath))
	}
	dir := t.TempDir()
	killedGet(t, dir, "-j", "2", "--chunk-size", "256K", "-o", "out.bin", a.URL())
	if _, err := os.Stat(filepath.Join(dir, "out.bin.rangefs")); err != nil {
		t.Fatalf("no partial download to resume: %v", err)
	}
	r := rangefs(t, dir, "get", "-j", "2", "--chunk-size", "256K", "-o", "out.bin", b.URL())
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if fileSHA256(t, filepath.Join(dir, "out.bin")) != pb.SHA256() {
		t.Fatal("the result is not the second URL's file: the first one's partial download was resumed")
	}
	if !strings.Contains(r.stderr, "discarded") {
		t.Errorf("the restart was not announced: %s", r.stderr)
	}

	// A token in the query that changes between runs: with --volatile-query
	// the partial download is resumed; without it, it is started over and
	// the message says how to resume.
	for _, volatile := range []bool{false, true} {
		os.RemoveAll(filepath.Join(dir, "out.bin"))
		a.SetConnRate(1 << 20)
		args := []string{"-j", "2", "--chunk-size", "256K", "-o", "out.bin"}
		if volatile {
			args = append(args, "--volatile-query")
		}
		killedGet(t, dir, append(args, a.URL()+"?token=one")...)
		a.SetConnRate(0)
		r := rangefs(t, dir, append(append([]string{"get"}, args...), a.URL()+"?token=two")...)
		if r.code != exitOK {
			t.Fatalf("volatile %v: exit %d: %s", volatile, r.code, r.stderr)
		}
		if volatile == strings.Contains(r.stderr, "discarded") {
			t.Errorf("volatile %v: %q", volatile, r.stderr)
		}
		if !volatile && !strings.Contains(r.stderr, "--volatile-query") {
			t.Errorf("the restart does not say --volatile-query resumes it: %q", r.stderr)
		}
	}
}

func TestGetErrorsAreOneClearLine(t *testing.T) {
	srv, _ := patternServer(t, 1<<20, 1)
	dead := fetchtest.NewSilentServer()
	dead.Close() // nothing listens there any more: connection refused
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		code int
		say  string
	}{
		{"bad scheme", []string{"get", "ftp://127.0.0.1/x"}, exitUsage, "only http"},
		{"not found", []string{"get", srv.URLFor("/missing")}, exitNetwork, "404"},
		{"refused", []string{"get", dead.URL("http", "/x")}, exitNetwork, "refused"},
		{"max size", []string{"get", "--max-size", "1K", srv.URL()}, exitFailure, "max-size"},
	} {
		r := rangefs(t, dir, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.say) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d mentioning %q", tc.name, r.code, r.stderr, tc.code, tc.say)
		}
		if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n > 0 {
			t.Errorf("%s: %d lines of error output, want one:\n%s", tc.name, n+1, r.stderr)
		}
	}
}

// ---- mount, end to end ----

func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping: /dev/fuse is not available here (%v)", err)
	}
}

// isMounted reports whether dir is a mount point, from /proc/self/mountinfo.
func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

type mountProc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error
	dir    string
}

// syncBuffer collects a process's stderr; it may be read while written, and
// closes ready when a line containing mark arrives.
type syncBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	mark  string
	ready chan struct{}
	once  sync.Once
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if strings.Contains(b.buf.String(), b.mark) {
		b.once.Do(func() { close(b.ready) })
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startMount runs `rangefs mount` and waits, bounded, until it says it is
// mounted. (Waiting for the file to appear is not enough: a dead mount's
// cached attributes can still answer stat.)
func startMount(t *testing.T, name string, args ...string) *mountProc {
	t.Helper()
	mnt := args[len(args)-1]
	cmd := exec.Command(binary, append([]string{"mount"}, args...)...)
	m := &mountProc{cmd: cmd, done: make(chan error, 1), dir: mnt,
		stderr: &syncBuffer{mark: "rangefs: mounted", ready: make(chan struct{})}}
	cmd.Stderr = m.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-m.done:
		default:
			cmd.Process.Kill()
			<-m.done
		}
		if isMounted(t, mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	select {
	case <-m.stderr.ready:
	case err := <-m.done:
		m.done <- err
		t.Fatalf("rangefs mount exited early (%v): %s", err, m.stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("rangefs mount did not say it was mounted within 10 s: %s", m.stderr.String())
	}
	if _, err := os.Stat(filepath.Join(mnt, name)); err != nil {
		t.Fatalf("%s is not in the mount: %v", name, err)
	}
	return m
}

// wait waits, bounded, for the mount process to exit and returns its code.
func (m *mountProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-m.done:
		m.done <- nil
		return m.cmd.ProcessState.ExitCode()
	case <-time.After(15 * time.Second):
		t.Fatalf("rangefs mount did not exit within 15 s: %s", m.stderr.String())
		return -1
	}
}

func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitCached waits, bounded, until the mounted file's xattr says every chunk
// is committed to the cache.
func waitCached(t *testing.T, path string) {
	t.Helper()
	var v string
	for i := 0; i < 200; i++ {
		b := make([]byte, 64)
		n, err := syscall.Getxattr(path, "user.rangefs.chunks", b)
		if err != nil {
			t.Fatal(err)
		}
		v = string(b[:n])
		if have, total, ok := strings.Cut(v, "/"); ok && have == total {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("%s: chunks %s still not all committed after 5 s", path, v)
}

func TestMountReadUnmountBySignal(t *testing.T) {
	needFUSE(t)
	srv, p := patternServer(t, 9<<20+5, 4)
	mnt, cdir := t.TempDir(), t.TempDir()
	m := startMount(t, "file", "--cache-dir", cdir, "--no-prefetch", srv.URL(), mnt)
	path := filepath.Join(mnt, "file")
	if got := fileSHA256(t, path); got != p.SHA256() {
		t.Fatalf("sha256 through the mount %s, want %s", got, p.SHA256())
	}
	// Opening and reading many times leaks no descriptor in the daemon.
	before := fdCount(t, m.cmd.Process.Pid)
	for i := range 50 {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4096)
		f.ReadAt(b, int64(i)*100000)
		f.Close()
	}
	// FUSE_RELEASE is asynchronous: give the last close a moment to land.
	after := fdCount(t, m.cmd.Process.Pid)
	for i := 0; i < 40 && after > before; i++ {
		time.Sleep(50 * time.Millisecond)
		after = fdCount(t, m.cmd.Process.Pid)
	}
	if after > before {
		t.Errorf("daemon fds grew from %d to %d over 50 open/close cycles", before, after)
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	if code := m.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM: %s", code, m.stderr.String())
	}
	if isMounted(t, mnt) {
		t.Fatal("mount left behind after SIGTERM")
	}
}

func TestMountUnmountByFusermount(t *testing.T) {
	needFUSE(t)
	fusermount, err := exec.LookPath("fusermount3")
	if err != nil {
		t.Skip("skipping: fusermount3 is not installed (apt-get install fuse3)")
	}
	srv, _ := patternServer(t, 1<<20, 4)
	mnt := t.TempDir()
	m := startMount(t, "file", "--cache-dir", t.TempDir(), srv.URL(), mnt)
	if out, err := exec.Command(fusermount, "-u", mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	if code := m.wait(t); code != 0 {
		t.Fatalf("exit %d after fusermount3 -u: %s", code, m.stderr.String())
	}
	if isMounted(t, mnt) {
		t.Fatal("mount left behind")
	}
}

// A mount whose daemon was killed leaves "Transport endpoint is not
// connected" behind; the next mount cleans it up and serves from the cache
// the first one filled.
func TestMountCleansStaleMountAndResumesCache(t *testing.T) {
	needFUSE(t)
	srv, p := patternServer(t, 6<<20, 5)
	mnt, cdir := t.TempDir(), t.TempDir()
	m := startMount(t, "file", "--cache-dir", cdir, "--no-prefetch", srv.URL(), mnt)
	if fileSHA256(t, filepath.Join(mnt, "file")) != p.SHA256() {
		t.Fatal("wrong bytes")
	}
	// A read may return before its chunk is committed; kill only once the
	// index holds everything, so the remount can be checked for refetches.
	waitCached(t, filepath.Join(mnt, "file"))
	m.cmd.Process.Kill()
	m.wait(t)
	if _, err := os.ReadDir(mnt); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after SIGKILL, readdir = %v; want ENOTCONN (a stale mount)", err)
	}
	m2 := startMount(t, "file", "--cache-dir", cdir, "--no-prefetch", srv.URL(), mnt)
	srv.ResetStats() // after the mount's own probe and range check
	if !strings.Contains(m2.stderr.String(), "stale mount") {
		t.Errorf("stale mount cleanup not reported: %s", m2.stderr.String())
	}
	if fileSHA256(t, filepath.Join(mnt, "file")) != p.SHA256() {
		t.Fatal("wrong bytes after remount")
	}
	if n := srv.Stats().RangeRequests; n > 0 {
		t.Errorf("remount re-fetched %d ranges of a fully cached file", n)
	}
	m2.cmd.Process.Signal(os.Interrupt)
	if code := m2.wait(t); code != 0 {
		t.Fatalf("exit %d: %s", code, m2.stderr.String())
	}
}

func TestStatusOfCacheDirAndMount(t *testing.T) {
	needFUSE(t)
	srv, _ := patternServer(t, 3<<20, 21)
	mnt, cdir := t.TempDir(), t.TempDir()
	m := startMount(t, "file", "--cache-dir", cdir, "--no-prefetch", srv.URL(), mnt)
	fileSHA256(t, filepath.Join(mnt, "file"))
	// A read is answered once its bytes are written, before the chunk is
	// committed (fdatasync, then the index): status counts committed chunks,
	// so it is asked until the last commit is in, for 10 s at most.
	var out []byte
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err = exec.Command(binary, "status", mnt).CombinedOutput()
		if err != nil || strings.Contains(string(out), "3/3") || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || !strings.Contains(string(out), "file") || !strings.Contains(string(out), "100.0") ||
		!strings.Contains(string(out), "3/3") {
		t.Errorf("status of the mount: %v\n%s", err, out)
	}
	out, _ = exec.Command(binary, "status", "--cache-dir", cdir).CombinedOutput()
	if !strings.Contains(string(out), "in use") {
		t.Errorf("status of a cache in use: %s", out)
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.wait(t)
	out, err = exec.Command(binary, "status", "--cache-dir", cdir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "100.0") || !strings.Contains(string(out), srv.URL()) {
		t.Errorf("status of an idle cache: %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "status", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not a rangefs mount") {
		t.Errorf("status of a plain directory: %v\n%s", err, out)
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"get", "--help"}, {"mount", "--help"}, {"status", "--help"}, {"version"}} {
		out, err := exec.Command(binary, args...).CombinedOutput()
		if err != nil || len(out) == 0 {
			t.Errorf("rangefs %q: %v\n%s", args, err, out)
		}
	}
	out, _ := exec.Command(binary, "mount", "--help").CombinedOutput()
	for _, flag := range []string{"--cache-dir", "--no-prefetch", "--op-timeout", "--allow-other", "--connections", "--chunk-size", "--header", "--insecure", "--max-size", "--limit-rate", "--verbose"} {
		if !strings.Contains(string(out), flag) {
			t.Errorf("mount --help does not list %s", flag)
		}
	}
	if code := rangefs(t, t.TempDir(), "frobnicate").code; code != exitUsage {
		t.Errorf("unknown command: exit %d, want %d", code, exitUsage)
	}
	if code := rangefs(t, t.TempDir()).code; code != exitUsage {
		t.Errorf("no command: exit %d, want %d", code, exitUsage)
	}
}
