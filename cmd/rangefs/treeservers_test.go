package main

// Servers for the tree tests: a private nginx and python3 -m http.server,
// started on loopback and killed by PID, and the content of the tree they
// serve.

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// treeFile is one file of a test tree: its slash path below the root.
type testTreeFile struct {
	path   string
	size   int64
	sha256 string
}

// fileContent is the deterministic content of a test tree file.
func fileContent(path string, size int64) []byte {
	b := make([]byte, size)
	h := sha256.Sum256([]byte(path))
	for i := range b {
		b[i] = h[i%len(h)] ^ byte(i>>8)
	}
	return b
}

// makeTestTree writes three levels of 1,000 files (d0..d9/e0..e9/f0..f9.bin,
// 0 to 9 KiB) and a flat directory of flat files under a new directory, and
// returns the root and every file.
func makeTestTree(t testing.TB, flat int) (string, []testTreeFile) {
	t.Helper()
	root := t.TempDir()
	var files []testTreeFile
	write := func(rel string, size int64) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := fileContent(rel, size)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		files = append(files, testTreeFile{rel, size, hex.EncodeToString(sum[:])})
	}
	n := 0
	for d := range 10 {
		for e := range 10 {
			for f := range 10 {
				write(fmt.Sprintf("d%d/e%d/f%d.bin", d, e, f), int64(n*97%9000))
				n++
			}
		}
	}
	for i := range flat {
		write(fmt.Sprintf("flat/%04d.dat", i), int64(i%300))
	}
	return root, files
}

// freeLoopbackPort returns a loopback port that was free a moment ago.
func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServerProcess runs cmd, waits (at most 10 s) until addr accepts
// connections, and kills it by PID when the test ends. It reports false when
// the process exited or never listened.
func startServerProcess(t testing.TB, cmd *exec.Cmd, addr string) bool {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after kill", cmd.Path, cmd.Process.Pid)
		}
	})
	for range 100 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return true
		}
		select {
		case <-exited:
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return false
}

// testNginx is a private nginx serving one tree at /html/ (autoindex) and
// /json/ (autoindex_format json), logging every request.
type testNginx struct {
	url string // http://127.0.0.1:PORT
	dir string // its prefix: config and logs
}

func startTestNginx(t testing.TB, tree string) *testNginx {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Skip("nginx is not installed (.ci/run installs nginx-light): skipping the real-nginx test")
	}
	for attempt := range 5 {
		dir := t.TempDir()
		port := freeLoopbackPort(t)
		conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 256; }
http {
  log_format req '$request_method $uri $status $body_bytes_sent';
  access_log %[1]s/access.log req;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:%[2]d;
    location /html/ { alias %[3]s/; autoindex on; }
    location /json/ { alias %[3]s/; autoindex on; autoindex_format json; }
  }
}
`, dir, port, tree)
		cf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if startServerProcess(t, exec.Command(bin, "-p", dir, "-c", cf, "-e", filepath.Join(dir, "error.log")), addr) {
			return &testNginx{url: "http://" + addr, dir: dir}
		}
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		t.Logf("nginx did not start on %s (attempt %d): %s", addr, attempt+1, log)
	}
	t.Fatal("nginx did not start")
	return nil
}

// request is one line of the nginx access log.
type request struct {
	method, uri string
	status      int
	bytes       int64
}

// requests returns what nginx has logged so far. nginx writes each line when
// the request ends, so a test reads it after the requests it cares about.
func (n *testNginx) requests(t testing.TB) []request {
	t.Helper()
	f, err := os.Open(filepath.Join(n.dir, "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []request
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 4 {
			t.Fatalf("access log line %q", sc.Text())
		}
		code, _ := strconv.Atoi(fs[2])
		size, _ := strconv.ParseInt(fs[3], 10, 64)
		out = append(out, request{fs[0], fs[1], code, size})
	}
	return out
}

// startPythonHTTP runs python3 -m http.server over tree, or skips.
func startPythonHTTP(t testing.TB, tree string) string {
	t.Helper()
	bin, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed (.ci/run installs python3): skipping the http.server test")
	}
	for range 5 {
		port := freeLoopbackPort(t)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		cmd := exec.Command(bin, "-m", "http.server", "--bind", "127.0.0.1", "--directory", tree, strconv.Itoa(port))
		if startServerProcess(t, cmd, addr) {
			return "http://" + addr
		}
	}
	t.Fatal("python3 -m http.server did not start")
	return ""
}
