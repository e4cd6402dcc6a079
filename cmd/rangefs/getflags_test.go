package main

// get's output modes and network flags, end to end against loopback servers.

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"
)

// rangefsOut runs the binary and returns its stdout as well.
func rangefsOut(t *testing.T, dir string, env []string, args ...string) (result, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("rangefs %q did not finish within a minute; stderr:\n%s", args, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return result{cmd.ProcessState.ExitCode(), stderr.String()}, stdout.Bytes()
}

// -o - writes the exact bytes to stdout, in order, with and without Range
// support, and leaves nothing in $TMPDIR or the current directory.
func TestGetToStdout(t *testing.T) {
	for _, ranges := range []bool{true, false} {
		srv, p := patternServer(t, 9<<20+333, 61)
		if !ranges {
			srv.Inject(fetchtest.Fault{Kind: fetchtest.IgnoreRange})
		}
		dir, tmp := t.TempDir(), t.TempDir()
		r, out := rangefsOut(t, dir, []string{"TMPDIR=" + tmp}, "get", "-j", "4", "--chunk-size", "256K", "-o", "-", srv.URL())
		if r.code != exitOK {
			t.Fatalf("ranges %v: exit %d: %s", ranges, r.code, r.stderr)
		}
		if !bytes.Equal(out, p.Bytes(0, p.Size())) {
			t.Fatalf("ranges %v: stdout has %d bytes, not the file's %d (or wrong ones)", ranges, len(out), p.Size())
		}
		for _, d := range []string{dir, tmp} {
			if ents, _ := os.ReadDir(d); len(ents) != 0 {
				t.Errorf("ranges %v: left behind in %s: %v", ranges, d, ents)
			}
		}
	}
	// A wrong --checksum on stdout is exit 5, said after the bytes.
	srv, p := patternServer(t, 1<<20, 62)
	r, _ := rangefsOut(t, t.TempDir(), nil, "get", "-q", "-o", "-", "--checksum", "sha-256="+strings.Repeat("0", 64), srv.URL())
	if r.code != exitChecksum || !strings.Contains(r.stderr, "stdout") {
		t.Errorf("bad checksum on stdout: exit %d %q", r.code, r.stderr)
	}
	r, _ = rangefsOut(t, t.TempDir(), nil, "get", "-q", "-c", "-o", "-", "--checksum", "sha-256="+p.SHA256(), srv.URL())
	if r.code != exitOK {
		t.Errorf("good checksum and -c: exit %d %q", r.code, r.stderr)
	}
}

// --output-dir creates the directory and saves under the URL's name;
// -o DIR/ saves into an existing directory.
func TestGetOutputDir(t *testing.T) {
	srv, p := patternServer(t, 1<<20+5, 63)
	dir := t.TempDir()
	if r := rangefs(t, dir, "get", "-q", "--output-dir", "a/b", srv.URL()); r.code != exitOK {
		t.Fatalf("--output-dir: exit %d: %s", r.code, r.stderr)
	}
	if fileSHA256(t, filepath.Join(dir, "a", "b", "file")) != p.SHA256() {
		t.Fatal("--output-dir: wrong bytes")
	}
	if r := rangefs(t, dir, "get", "-q", "-o", "a/", srv.URL()); r.code != exitOK {
		t.Fatalf("-o DIR/: exit %d: %s", r.code, r.stderr)
	}
	if fileSHA256(t, filepath.Join(dir, "a", "file")) != p.SHA256() {
		t.Fatal("-o DIR/: wrong bytes")
	}
}

// -i downloads every URL of a list, honours out= and checksum= lines, and a
// failed entry neither stops the others nor passes for success.
func TestGetInputList(t *testing.T) {
	var lines, urls, sums []string
	for i := range 3 {
		srv, p := patternServer(t, int64(2<<20+i*1000), uint64(70+i))
		lines = append(lines, srv.URL(), fmt.Sprintf("  out=f%d.bin", i))
		urls = append(urls, srv.URL())
		if i == 1 {
			lines = append(lines, "  checksum=sha-256="+p.SHA256())
		}
		sums = append(sums, p.SHA256())
	}
	dir := t.TempDir()
	list := filepath.Join(dir, "list")
	os.WriteFile(list, []byte("# three files\n\n"+strings.Join(lines, "\n")+"\n"), 0o600)
	r := rangefs(t, dir, "get", "-i", list, "--output-dir", "out", "--parallel", "2")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for i, want := range sums {
		if got := fileSHA256(t, filepath.Join(dir, "out", fmt.Sprintf("f%d.bin", i))); got != want {
			t.Errorf("file %d: wrong bytes", i)
		}
	}
	if n := strings.Count(r.stderr, "saved "); n != 3 {
		t.Errorf("%d summary lines, want 3:\n%s", n, r.stderr)
	}

	// One entry points where nothing listens: the others still arrive.
	dead := deadURL(t)
	os.WriteFile(list, []byte(urls[0]+"\n  out=g0.bin\n"+dead+"\n"+urls[2]+"\n  out=g2.bin\n"), 0o600)
	r = rangefs(t, dir, "get", "-q", "-i", list)
	if r.code != exitNetwork || !strings.Contains(r.stderr, "1 of 3 downloads failed") {
		t.Errorf("a dead entry: exit %d, stderr %q", r.code, r.stderr)
	}
	for i, name := range map[int]string{0: "g0.bin", 2: "g2.bin"} {
		if fileSHA256(t, filepath.Join(dir, name)) != sums[i] {
			t.Errorf("%s: wrong bytes", name)
		}
	}
	for _, args := range [][]string{
		{"-i", list, "http://127.0.0.1/x"},
		{"-i", list, "-o", "x"},
		{"-i", filepath.Join(dir, "missing")},
	} {
		if r := rangefs(t, dir, append([]string{"get"}, args...)...); r.code != exitUsage {
			t.Errorf("get %q: exit %d, want %d", args, r.code, exitUsage)
		}
	}
}

// Two URLs of a -i list that would save to one file never share it (and its
// partial download): two equal out= names are refused before any download,
// and two URLs whose own name is the same are caught when the second finds
// the first holding the file. out= tells them apart.
func TestGetInputListRefusesTwoURLsForOneFile(t *testing.T) {
	a, pa := patternServer(t, 1<<20, 81)
	b, pb := patternServer(t, 1<<20, 82)
	dir := t.TempDir()
	list := filepath.Join(dir, "list")
	os.WriteFile(list, []byte(a.URL()+"\n  out=x.bin\n"+b.URL()+"\n  out=x.bin\n"), 0o600)
	r := rangefs(t, dir, "get", "-q", "-i", list)
	if r.code != exitUsage || !strings.Contains(r.stderr, "both save to") {
		t.Fatalf("two equal out= names: exit %d, stderr %q; want %d and both named", r.code, r.stderr, exitUsage)
	}
	if n := a.Stats().Requests + b.Stats().Requests; n != 0 {
		t.Errorf("%d requests were made before the refusal", n)
	}
	// The same name from both URLs: one download fails, the file is the
	// other's, whole.
	os.WriteFile(list, []byte(a.URL()+"\n"+b.URL()+"\n"), 0o600)
	r = rangefs(t, dir, "get", "-q", "-i", list)
	if r.code == exitOK || !strings.Contains(r.stderr, "saves too") {
		t.Errorf("two URLs of one name: exit %d, stderr %q; want a failure naming the clash", r.code, r.stderr)
	}
	name := filepath.Base(fetchtest.DefaultPath)
	if sum := fileSHA256(t, filepath.Join(dir, name)); sum != pa.SHA256() && sum != pb.SHA256() {
		t.Errorf("%s is neither file", name)
	}
	os.Remove(filepath.Join(dir, name))
	os.WriteFile(list, []byte(a.URL()+"\n"+b.URL()+"\n  out=other.bin\n"), 0o600)
	if r := rangefs(t, dir, "get", "-q", "-i", list); r.code != exitOK {
		t.Fatalf("with out=: exit %d: %s", r.code, r.stderr)
	}
	// An out= naming a directory saves each file in it under its own name.
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	os.WriteFile(list, []byte(a.URL()+"\n  out=d\n"+b.URL()+"\n  out=d/b.bin\n"), 0o600)
	if r := rangefs(t, dir, "get", "-q", "-i", list); r.code != exitOK {
		t.Errorf("out= a directory and a file in it: exit %d: %s", r.code, r.stderr)
	}
}

// deadURL is a loopback URL where nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/gone.bin"
}

// Mistakes in the URL are usage errors before any request; a refused
// connection is reported at once (one quick retry at most), not after
// seconds of backoff.
func TestGetUsageErrorsAndRefusedFast(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ url, say string }{
		{"http://127.0.0.1:99999/f", "port 99999"},
		{"example.com/file", "https://example.com/file"},
		{"", "the URL is empty"},
		{"127.0.0.1:8080/file", "https://127.0.0.1:8080/file"},
	} {
		r := rangefs(t, dir, "get", tc.url)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.say) {
			t.Errorf("get %s: exit %d %q; want %d saying %q", tc.url, r.code, r.stderr, exitUsage, tc.say)
		}
	}
	start := time.Now()
	r := rangefs(t, dir, "get", deadURL(t))
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("a refused connection took %v to report, want well under the default retry schedule", took)
	}
	if r.code != exitNetwork || !strings.Contains(r.stderr, "refused") {
		t.Errorf("refused: exit %d %q", r.code, r.stderr)
	}
}

// rangeHandler serves content with Range support and counts what it saw.
type rangeHandler struct {
	content []byte
	agents  atomic.Value // last User-Agent
	auth    string       // required "user:password", "" for none
	served  atomic.Int64
}

func (h *rangeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.agents.Store(r.UserAgent())
	if h.auth != "" {
		u, p, ok := r.BasicAuth()
		if !ok || u+":"+p != h.auth {
			w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
	}
	h.served.Add(1)
	http.ServeContent(w, r, "f.bin", time.Unix(1e9, 0), bytes.NewReader(h.content))
}

// The User-Agent is rangefs/VERSION unless -A says otherwise, and --netrc
// supplies Basic credentials for the host.
func TestGetUserAgentAndNetrc(t *testing.T) {
	content := bytes.Repeat([]byte("rangefs"), 100000)
	h := &rangeHandler{content: content}
	srv := httptest.NewServer(h)
	defer srv.Close()
	dir := t.TempDir()
	if r := rangefs(t, dir, "get", "-q", "-o", "a", srv.URL+"/f.bin"); r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if ua := h.agents.Load(); ua != "rangefs/"+version {
		t.Errorf("default User-Agent %q, want rangefs/%s", ua, version)
	}
	if r := rangefs(t, dir, "get", "-q", "-A", "tester/1", "-o", "b", srv.URL+"/f.bin"); r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if ua := h.agents.Load(); ua != "tester/1" {
		t.Errorf("-A: User-Agent %q", ua)
	}

	h.auth = "alice:s3cret"
	netrc := filepath.Join(dir, "netrc")
	host, _, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	os.WriteFile(netrc, []byte("machine other.example login bob password nope\nmachine "+host+"\n  login alice\n  password s3cret\n"), 0o600)
	r, _ := rangefsOut(t, dir, []string{"NETRC=" + netrc}, "get", "-q", "-o", "c", srv.URL+"/f.bin")
	if r.code != exitNetwork {
		t.Errorf("without --netrc: exit %d, want %d (401)", r.code, exitNetwork)
	}
	r, _ = rangefsOut(t, dir, []string{"NETRC=" + netrc}, "get", "-q", "--netrc", "-o", "c", srv.URL+"/f.bin")
	if r.code != exitOK {
		t.Fatalf("--netrc: exit %d: %s", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "c")); !bytes.Equal(b, content) {
		t.Error("--netrc: wrong bytes")
	}
	if strings.Contains(r.stderr, "s3cret") {
		t.Error("the netrc password was printed")
	}
}

// A certificate the system does not trust: the error names --cacert and
// --insecure, and --cacert with the server's CA makes it work.
func TestGetCACert(t *testing.T) {
	srv, p := patternServer(t, 1<<20, 64, fetchtest.WithTLS())
	dir := t.TempDir()
	r := rangefs(t, dir, "get", "-q", "-o", "x", srv.URL())
	if r.code != exitNetwork || !strings.Contains(r.stderr, "--cacert") || !strings.Contains(r.stderr, "--insecure") {
		t.Errorf("untrusted certificate: exit %d, stderr %q; want %d naming --cacert and --insecure", r.code, r.stderr, exitNetwork)
	}
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	if r := rangefs(t, dir, "get", "-q", "--cacert", ca, "-o", "x", srv.URL()); r.code != exitOK {
		t.Fatalf("--cacert: exit %d: %s", r.code, r.stderr)
	}
	if fileSHA256(t, filepath.Join(dir, "x")) != p.SHA256() {
		t.Fatal("--cacert: wrong bytes")
	}
	os.WriteFile(filepath.Join(dir, "bad.pem"), []byte("not a certificate"), 0o600)
	if r := rangefs(t, dir, "get", "--cacert", filepath.Join(dir, "bad.pem"), srv.URL()); r.code != exitUsage {
		t.Errorf("--cacert with no certificate: exit %d", r.code)
	}
}

// --proxy sends every request through the proxy; --retry and
// --connect-timeout are accepted and checked.
func TestGetProxyAndRetryFlags(t *testing.T) {
	srv, p := patternServer(t, 3<<20, 65)
	var proxied atomic.Int64
	proxy := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		proxied.Add(1)
		r.Out.URL = r.In.URL // a forward proxy: the request carries the absolute URL
	}})
	defer proxy.Close()
	dir := t.TempDir()
	r := rangefs(t, dir, "get", "-q", "--proxy", proxy.URL, "--retry", "2", "--connect-timeout", "3s", "-o", "x", srv.URL())
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if fileSHA256(t, filepath.Join(dir, "x")) != p.SHA256() {
		t.Fatal("through the proxy: wrong bytes")
	}
	if n := proxied.Load(); n == 0 || n != srv.Stats().Requests {
		t.Errorf("the proxy saw %d requests, the server %d", n, srv.Stats().Requests)
	}
	for _, args := range [][]string{{"--retry", "-1"}, {"--connect-timeout", "0s"}, {"--proxy", "ftp://p:1"}, {"--checksum", "md5=abc"}} {
		if r := rangefs(t, dir, append(append([]string{"get"}, args...), srv.URL())...); r.code != exitUsage {
			t.Errorf("get %q: exit %d, want %d", args, r.code, exitUsage)
		}
	}
}

// Disk full in the middle of a download: exit 6 with how much to free and
// to run again, no engine log line; after freeing space the same command
// resumes and finishes.
func TestGetDiskFullMidway(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	const size = 6 << 20
	srv, p := patternServer(t, size, 66, fetchtest.WithConnRate(1<<20))
	cmd := exec.Command(binary, "get", "-j", "2", "--chunk-size", "256K", "-o", "out.bin", srv.URL())
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	// Once the download has started, fill what is left of the disk.
	for i := 0; ; i++ {
		if i == 200 {
			t.Fatal("the download did not start within 10 s")
		}
		if fi, err := os.Stat(filepath.Join(dir, "out.bin.rangefs", "data")); err == nil && fi.Size() > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(filler, io.LimitReader(zeroReader{}, 16<<20)); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the tmpfs: %v", err)
	}
	filler.Close()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("get did not end within 30 s of the disk filling up")
	}
	code := cmd.ProcessState.ExitCode()
	if code != exitDiskFull || !strings.Contains(stderr.String(), "free at least") ||
		!strings.Contains(stderr.String(), "run the same command again") {
		t.Errorf("exit %d, stderr %q; want %d saying how much to free and to rerun", code, stderr.String(), exitDiskFull)
	}
	if strings.Contains(stderr.String(), "ERROR") || strings.Contains(stderr.String(), "level=") {
		t.Errorf("an engine log line on stderr: %q", stderr.String())
	}
	os.Remove(filepath.Join(dir, "filler"))
	if r := rangefs(t, dir, "get", "-q", "-o", "out.bin", srv.URL()); r.code != exitOK {
		t.Fatalf("rerun after freeing space: exit %d: %s", r.code, r.stderr)
	}
	if fileSHA256(t, filepath.Join(dir, "out.bin")) != p.SHA256() {
		t.Fatal("rerun: wrong bytes")
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
