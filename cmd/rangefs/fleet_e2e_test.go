package main

// Fleet tests: several real rangefs mounts behind the nginx slice cache this
// repository ships (deploy/nginx-slice-cache.conf), in front of a private
// nginx origin. Both nginx instances are started here on loopback ports and
// stopped by PID; the proxy's config is the shipped file with only its ADAPT
// values (listen port, origin address, cache and log paths) substituted.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"
)

// shippedSliceConf is the deployment config under test, relative to this package.
const shippedSliceConf = "deploy/nginx-slice-cache.conf"

// needNginx returns the nginx binary, or skips the test saying why it cannot run.
func needNginx(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			t.Skip("skipping: nginx is not installed (apt-get install nginx)")
		}
		bin = "/usr/sbin/nginx"
	}
	out, err := exec.Command(bin, "-V").CombinedOutput()
	if err != nil {
		t.Skipf("skipping: %s -V failed: %v: %s", bin, err, out)
	}
	if !bytes.Contains(out, []byte("http_slice_module")) {
		t.Skipf("skipping: %s is built without the slice module", bin)
	}
	return bin
}

// fleetDir makes a directory nginx's workers can enter: when the test runs as
// root they run as an unprivileged user, and t.TempDir's parent is 0700. It is
// removed after every nginx started in it has stopped (cleanups run in reverse).
func fleetDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "rangefs-fleet-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// nginxProc is one private nginx: its master is our child, in its own process group.
type nginxProc struct {
	prefix string
	port   int
	done   chan struct{}
}

func (n *nginxProc) addr() string        { return "127.0.0.1:" + strconv.Itoa(n.port) }
func (n *nginxProc) access() string      { return filepath.Join(n.prefix, "access.log") }
func (n *nginxProc) errorLog() string    { return filepath.Join(n.prefix, "error.log") }
func (n *nginxProc) url(p string) string { return "http://" + n.addr() + p }

// startNginx renders a main config around the http-context text body(port)
// returns, starts nginx on a free loopback port and waits, bounded, until it
// listens. It tries another port if the one picked was taken meanwhile.
func startNginx(t *testing.T, bin, prefix string, body func(port int) (string, error)) *nginxProc {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(prefix, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	var last string
	for attempt := 0; attempt < 3; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		httpConf, err := body(port)
		if err != nil {
			t.Fatal(err)
		}
		conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    default_type application/octet-stream;
%[2]s
}
`, prefix, httpConf)
		confPath := filepath.Join(prefix, "nginx.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-p", prefix+"/", "-e", filepath.Join(prefix, "error.log"), "-c", confPath)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		// Its own group, so the fallback SIGKILL reaches the workers too; and
		// SIGTERM from the kernel should the test binary die first.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		n := &nginxProc{prefix: prefix, port: port, done: make(chan struct{})}
		go func() { cmd.Wait(); close(n.done) }()
		stop := func() {
			cmd.Process.Signal(syscall.SIGTERM) // fast shutdown: the master stops its workers
			select {
			case <-n.done:
				return
			case <-time.After(5 * time.Second):
			}
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-n.done:
			case <-time.After(5 * time.Second):
				t.Errorf("nginx (pid %d) not reaped 5 s after SIGKILL", cmd.Process.Pid)
			}
		}
		if err := waitTCP(n, 5*time.Second); err != nil {
			stop()
			el, _ := os.ReadFile(n.errorLog())
			last = fmt.Sprintf("%v: %s%s", err, out.String(), el)
			if bytes.Contains(el, []byte("Address already in use")) {
				continue
			}
			t.Fatalf("nginx in %s: %s", prefix, last)
		}
		t.Cleanup(stop)
		return n
	}
	t.Fatalf("nginx in %s did not start: %s", prefix, last)
	return nil
}

// waitTCP polls n's port until it accepts, n exits, or d passes.
func waitTCP(n *nginxProc, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", n.addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-n.done:
			return errors.New("nginx exited before listening")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %v", n.addr(), d)
		}
	}
}

// startOrigin serves root as the origin, logging $body_bytes_sent first on every line.
func startOrigin(t *testing.T, bin, prefix, root string) *nginxProc {
	return startNginx(t, bin, prefix, func(port int) (string, error) {
		return fmt.Sprintf(`    log_format origin '$body_bytes_sent $status "$request" "$http_range"';
    access_log %s/access.log origin;
    server {
        listen 127.0.0.1:%d;
        root %s;
        location / { }
    }`, prefix, port, root), nil
	})
}

// renderSliceConf is the shipped config with its ADAPT values replaced. Each
// value must occur exactly once, so an edit of the shipped file that this
// substitution no longer matches fails the test instead of testing something else.
func renderSliceConf(shipped, listen, origin, cacheDir, accessLog string) (string, error) {
	text := shipped
	for _, r := range [][2]string{
		{"listen 8080;", "listen " + listen + ";"},
		{"server origin.example.com:80;", "server " + origin + ";"},
		{"proxy_cache_path /var/cache/nginx/rangefs ", "proxy_cache_path " + cacheDir + " "},
		{"access_log /var/log/nginx/rangefs-cache.log ", "access_log " + accessLog + " "},
	} {
		if n := strings.Count(text, r[0]); n != 1 {
			return "", fmt.Errorf("%s: %q occurs %d times, want once", shippedSliceConf, r[0], n)
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "listen" && !strings.HasPrefix(f[1], "127.0.0.1:") {
			return "", fmt.Errorf("rendered config listens beyond loopback: %q", line)
		}
	}
	return text, nil
}

// startSliceCache starts the shipped slice cache in front of origin; edit, when
// not nil, changes the rendered text (a deliberately broken variant).
func startSliceCache(t *testing.T, bin, prefix string, origin *nginxProc, edit func(string) string) *nginxProc {
	t.Helper()
	shipped, err := os.ReadFile(shippedSliceConf)
	if err != nil {
		t.Fatal(err)
	}
	return startNginx(t, bin, prefix, func(port int) (string, error) {
		text, err := renderSliceConf(string(shipped), "127.0.0.1:"+strconv.Itoa(port), origin.addr(),
			filepath.Join(prefix, "cache"), filepath.Join(prefix, "access.log"))
		if err == nil && edit != nil {
			text = edit(text)
		}
		return text, err
	})
}

// writePattern writes the deterministic pattern p to path with mtime mt (nginx
// derives its ETag from mtime and size), replacing any old file atomically.
func writePattern(t *testing.T, path string, p *fetchtest.PatternReader, mt time.Time) {
	t.Helper()
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, io.NewSectionReader(p, 0, p.Size())); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, mt, mt); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// originBytes sums $body_bytes_sent over the origin's access log, after
// waiting (bounded) for it to stop growing: nginx writes a line when a request ends.
func originBytes(t *testing.T, path string) (sent int64, requests int) {
	t.Helper()
	var prev []byte
	for i := 0; i < 20; i++ {
		b, err := os.ReadFile(path)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if i > 0 && len(b) == len(prev) {
			break
		}
		prev = b
		time.Sleep(100 * time.Millisecond)
	}
	sc := bufio.NewScanner(bytes.NewReader(prev))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			t.Fatalf("origin access log line %q: %v", sc.Text(), err)
		}
		sent += n
		requests++
	}
	return sent, requests
}

// cacheStatus counts the slice cache's $upstream_cache_status values (the
// fourth field of the shipped rangefs_cache log format).
func cacheStatus(t *testing.T, path string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[3] != "-" {
			m[f[3]]++
		}
	}
	return m
}

func hashPath(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Four mounts with separate caches read one 64 MiB object at once through the
// shipped slice cache: every mount gets the exact bytes, and the origin sends
// the object about once.
func TestFleetSliceCacheServesOriginOnce(t *testing.T) {
	needFUSE(t)
	bin := needNginx(t)
	const size, mounts = 64 << 20, 4
	work := fleetDir(t)
	www := filepath.Join(work, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		t.Fatal(err)
	}
	p := fetchtest.Pattern(size, 15)
	writePattern(t, filepath.Join(www, "weights.bin"), p, time.Now().Add(-time.Hour))
	origin := startOrigin(t, bin, filepath.Join(work, "origin"), www)
	proxy := startSliceCache(t, bin, filepath.Join(work, "cache"), origin, nil)

	files := make([]string, mounts)
	for i := range files {
		mnt := t.TempDir()
		startMount(t, "weights.bin", "--cache-dir", t.TempDir(), proxy.url("/weights.bin"), mnt)
		files[i] = filepath.Join(mnt, "weights.bin")
	}
	sums := make([]string, mounts)
	errs := make([]error, mounts)
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Go(func() { sums[i], errs[i] = hashPath(f) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("four mounts did not read 64 MiB within 3 minutes") // cleanup kills them, ending the reads
	}
	for i := range files {
		if errs[i] != nil {
			t.Errorf("mount %d: %v", i, errs[i])
		} else if sums[i] != p.SHA256() {
			t.Errorf("mount %d: sha256 %s, want %s", i, sums[i], p.SHA256())
		}
	}
	sent, reqs := originBytes(t, origin.access())
	st := cacheStatus(t, proxy.access())
	t.Logf("origin sent %d bytes (%.3f x the object) in %d requests for %d mounts; proxy cache status per slice: %v",
		sent, float64(sent)/size, reqs, mounts, st)
	if sent > size*11/10 {
		t.Errorf("origin sent %d bytes for a %d-byte object read by %d mounts, more than 1.1x", sent, int64(size), mounts)
	}
	if sent < size {
		t.Errorf("origin sent only %d of %d bytes: the count misses requests", sent, int64(size))
	}
	if st["HIT"] == 0 {
		t.Errorf("the proxy logged no cache hit: %v", st)
	}
}

// The object is replaced at the origin (same size, new ETag) while the proxy
// still holds some of its old slices. A new mount pins the old version (its
// probe is answered from a cached slice). Then:
//   - a read whose range spans an old and a new slice: nginx sends the old
//     slice and aborts the response ("etag mismatch in slice response"); fetch
//     sees a short body and asks for the remainder;
//   - a range that starts in a new slice, with If-Range naming the old ETag:
//     nginx's slice module cannot send the full 200 that If-Range asks for and
//     closes the connection without an answer, so fetch sees only EOF, retries,
//     and gives up: EIO, without learning that the object changed. (A 206 with
//     the new ETag would be ESTALE; either is accepted.)
//
// Whatever the path, every byte returned is the old version, and reads past the
// cached slices fail. A mount through a cache key with no old slices reads the new version.
func TestFleetOriginChangeBehindSliceCacheIsDetected(t *testing.T) {
	needFUSE(t)
	bin := needNginx(t)
	const size, slice = 8 << 20, 1 << 20
	work := fleetDir(t)
	www := filepath.Join(work, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		t.Fatal(err)
	}
	v1, v2 := fetchtest.Pattern(size, 1), fetchtest.Pattern(size, 2)
	obj := filepath.Join(www, "obj")
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	writePattern(t, obj, v1, t0)
	origin := startOrigin(t, bin, filepath.Join(work, "origin"), www)
	proxy := startSliceCache(t, bin, filepath.Join(work, "cache"), origin, nil)

	// Slices 0..3 of v1 into the proxy's cache.
	e1 := getRange(t, proxy.url("/obj"), 0, 4*slice, v1)
	writePattern(t, obj, v2, t0.Add(time.Hour))
	resp, err := http.Head(origin.url("/obj"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if e2 := resp.Header.Get("Etag"); e2 == "" || e2 == e1 {
		t.Fatalf("origin ETag after the change %q, before %q: the test needs them to differ", e2, e1)
	}

	mnt := t.TempDir()
	m := startMount(t, "obj", "--cache-dir", t.TempDir(), "--no-prefetch", proxy.url("/obj"), mnt)
	f, err := os.Open(filepath.Join(mnt, "obj"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A read across the boundary of cached slice 3 and uncached slice 4, the
	// cached part in order, then one read inside each of two new slices.
	type span struct {
		off, n   int64
		mustFail bool
	}
	spans := []span{{4*slice - slice/2, slice, true}}
	for off := int64(0); off < 4*slice; off += 256 << 10 {
		spans = append(spans, span{off, 256 << 10, false})
	}
	spans = append(spans, span{4*slice + 100<<10, 64 << 10, true}, span{size - slice/2, 64 << 10, true})
	buf := make([]byte, slice)
	var firstErr error
	served := 0
	for _, s := range spans {
		n, err := f.ReadAt(buf[:s.n], s.off)
		if n > 0 && !bytes.Equal(buf[:n], v1.Bytes(s.off, int64(n))) {
			what := "neither version"
			if bytes.Equal(buf[:n], v2.Bytes(s.off, int64(n))) {
				what = "the new version"
			}
			t.Fatalf("read at %d returned %d bytes that are not the pinned (old) version: %s", s.off, n, what)
		}
		switch {
		case err == nil:
			served++
			if s.mustFail {
				t.Errorf("read at %d (+%d) succeeded with old bytes the proxy no longer has", s.off, s.n)
			}
		case !errors.Is(err, syscall.ESTALE):
			t.Errorf("read at %d failed with %v, want ESTALE (the retry without If-Range sees the new ETag)", s.off, err)
		case firstErr == nil:
			firstErr = err
		}
	}
	if firstErr == nil {
		t.Fatal("no read failed")
	}
	el, _ := os.ReadFile(proxy.errorLog())
	t.Logf("%d of %d reads served old bytes, the rest failed (first: %v); proxy error log has %d \"etag mismatch\" lines; the mount said:\n%s",
		served, len(spans), firstErr, bytes.Count(el, []byte("etag mismatch in slice response")), m.stderr.String())
	if !bytes.Contains(el, []byte("etag mismatch in slice response")) {
		t.Errorf("nginx never saw a response mixing slices: the test did not exercise the mix")
	}

	// A cache key with no old slices (what a purge gives): a new mount reads the new version.
	mnt2 := t.TempDir()
	startMount(t, "obj", "--cache-dir", t.TempDir(), proxy.url("/obj?after=purge"), mnt2)
	if got, err := hashPath(filepath.Join(mnt2, "obj")); err != nil || got != v2.SHA256() {
		t.Errorf("mount of a fresh cache key: sha256 %s, %v; want the new version %s", got, err, v2.SHA256())
	}
}

// getRange GETs [off, off+n) of url, checks the body against p and returns the ETag.
func getRange(t *testing.T, url string, off, n int64, p *fetchtest.PatternReader) string {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s %s: %v", url, req.Header.Get("Range"), err)
	}
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, p.Bytes(off, n)) {
		t.Fatalf("GET %s %s: %s, %d bytes, want 206 with the pattern's bytes", url, req.Header.Get("Range"), resp.Status, len(body))
	}
	return resp.Header.Get("Etag")
}

// A caching proxy configured to ignore ranges (the shipped config with its
// slice line replaced by "max_ranges 0") answers 200 to a Range request: the
// mount refuses it at mount time, naming the problem, as it does any such
// server; get still downloads the object in one stream.
func TestFleetProxyAnswering200ToRangeIsRefused(t *testing.T) {
	bin := needNginx(t)
	const size = 3<<20 + 17
	work := fleetDir(t)
	www := filepath.Join(work, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		t.Fatal(err)
	}
	p := fetchtest.Pattern(size, 5)
	writePattern(t, filepath.Join(www, "obj"), p, time.Now().Add(-time.Hour))
	origin := startOrigin(t, bin, filepath.Join(work, "origin"), www)
	proxy := startSliceCache(t, bin, filepath.Join(work, "cache"), origin, func(s string) string {
		if strings.Count(s, "slice 1m;") != 1 {
			t.Errorf("shipped config has no single %q line to replace", "slice 1m;")
		}
		return strings.Replace(s, "slice 1m;", "max_ranges 0;", 1)
	})

	dir := t.TempDir()
	if _, err := os.Stat("/dev/fuse"); err == nil {
		mnt := t.TempDir()
		r := rangefs(t, dir, "mount", "--cache-dir", t.TempDir(), proxy.url("/obj"), mnt)
		if r.code == exitOK || !strings.Contains(r.stderr, "Range") {
			t.Errorf("mount through a proxy that ignores ranges: exit %d, stderr %q; want a failure naming Range", r.code, r.stderr)
		}
		if isMounted(t, mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
			t.Error("the refused mount was left mounted")
		}
	} else {
		t.Logf("mount part skipped: /dev/fuse is not available (%v)", err)
	}
	r := rangefs(t, dir, "get", "-o", "out.bin", proxy.url("/obj"))
	if r.code != exitOK || !strings.Contains(r.stderr, "ignores Range") {
		t.Fatalf("get: exit %d, stderr %q; want success with the one-stream warning", r.code, r.stderr)
	}
	if got := fileSHA256(t, filepath.Join(dir, "out.bin")); got != p.SHA256() {
		t.Fatalf("get through the proxy: sha256 %s, want %s", got, p.SHA256())
	}
}
