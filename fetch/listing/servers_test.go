package listing

import (
	"context"
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

// specialNames are file names that index pages escape in different ways.
var specialNames = []string{
	"sp ace.txt", "a&b.txt", "café.bin", "100%.txt", "plus+sign.txt", "q?mark.txt",
	"hash#.txt", "semi;colon.txt", "quote'.txt", "<lt>.txt",
}

// treeFile is one file of a test tree: its path below the root and its size.
type treeFile struct {
	path string
	size int64
}

// makeTree writes a three-level tree of 1,000 files (d0..d9/e0..e9/f0..f9.bin, sizes
// 0 to a few KiB), a directory of specially named files, and one 3.5 MB file, and returns
// every file with its size.
func makeTree(t testing.TB) (string, []treeFile) {
	t.Helper()
	root := t.TempDir()
	var files []treeFile
	write := func(rel string, size int64) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(i*7 + len(rel))
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, treeFile{rel, size})
	}
	n := 0
	for d := range 10 {
		for e := range 10 {
			for f := range 10 {
				write(fmt.Sprintf("d%d/e%d/f%d.bin", d, e, f), int64(n*37%4100))
				n++
			}
		}
	}
	for i, name := range specialNames {
		write("special/"+name, int64(i+1))
	}
	write("special/big.bin", 3_500_000)
	return root, files
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening polls until addr accepts a connection: at most 100 tries over 10 s.
func waitListening(t testing.TB, addr string, exited <-chan struct{}) bool {
	t.Helper()
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

// startProcess runs cmd and kills it by PID when the test ends.
func startProcess(t testing.TB, cmd *exec.Cmd) <-chan struct{} {
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
	return exited
}

// nginxServer is a private nginx serving one tree under several autoindex locations.
type nginxServer struct {
	url string // http://127.0.0.1:PORT
	dir string // prefix: config and logs
}

// nginxLocations are the autoindex variants, each serving the same tree.
var nginxLocations = map[string]string{
	"html":   "autoindex on;",
	"htmlkb": "autoindex on; autoindex_exact_size off;",
	"json":   "autoindex on; autoindex_format json;",
	"xml":    "autoindex on; autoindex_format xml;",
}

// startNginx starts nginx on a free loopback port, or skips the test when nginx is missing.
func startNginx(t testing.TB, tree string) *nginxServer {
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
		t.Skip("nginx is not installed (apt-get install nginx-light): skipping the real-nginx test")
	}
	for attempt := 0; attempt < 5; attempt++ {
		dir := t.TempDir()
		port := freePort(t)
		var locs strings.Builder
		for name, directives := range nginxLocations {
			fmt.Fprintf(&locs, "    location /%s/ { alias %s/; %s }\n", name, tree, directives)
		}
		conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
  access_log %[1]s/access.log;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  types { text/plain txt; }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:%[2]d;
%[3]s  }
}
`, dir, port, locs.String())
		cf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-p", dir, "-c", cf, "-e", filepath.Join(dir, "error.log"))
		exited := startProcess(t, cmd)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if waitListening(t, addr, exited) {
			return &nginxServer{url: "http://" + addr, dir: dir}
		}
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		t.Logf("nginx did not start on %s (attempt %d): %s", addr, attempt+1, log)
	}
	t.Fatal("nginx did not start")
	return nil
}

// startPython runs python3 -m http.server on a free loopback port, or skips.
func startPython(t testing.TB, tree string) string {
	t.Helper()
	bin, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed (apt-get install python3): skipping the http.server test")
	}
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		cmd := exec.Command(bin, "-m", "http.server", "--bind", "127.0.0.1", "--directory", tree, strconv.Itoa(port))
		exited := startProcess(t, cmd)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if waitListening(t, addr, exited) {
			return "http://" + addr
		}
	}
	t.Fatal("python3 http.server did not start")
	return ""
}

// walk lists the whole tree below l breadth-first and returns every entry by path. It
// stops at 2,000,000 entries or a depth of 10, whatever the lister returns.
func walk(t testing.TB, ctx context.Context, l Lister) map[string]Entry {
	t.Helper()
	out := map[string]Entry{}
	queue := []string{""}
	for len(queue) > 0 && len(out) < 2_000_000 {
		dir := queue[0]
		queue = queue[1:]
		es, err := l.List(ctx, dir)
		if err != nil {
			t.Fatalf("List(%q): %v", dir, err)
		}
		for _, e := range es {
			p := e.Name
			if dir != "" {
				p = dir + "/" + e.Name
			}
			out[p] = e
			if e.IsDir && strings.Count(p, "/") < 10 {
				queue = append(queue, p)
			}
		}
	}
	return out
}

// checkTree compares a walked listing with the files written: the same paths, nothing else
// but their directories; exact sizes when exact is set.
func checkTree(t testing.TB, got map[string]Entry, files []treeFile, exact bool) {
	t.Helper()
	want := map[string]int64{}
	dirs := map[string]bool{}
	for _, f := range files {
		want[f.path] = f.size
		for d := filepath.Dir(f.path); d != "."; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for p, e := range got {
		if e.IsDir {
			if !dirs[p] {
				t.Errorf("unexpected directory %q", p)
			}
			continue
		}
		size, ok := want[p]
		if !ok {
			t.Errorf("unexpected file %q", p)
			continue
		}
		if exact && (!e.SizeExact || e.Size != size) {
			t.Errorf("%q: size %d exact %v, want exactly %d", p, e.Size, e.SizeExact, size)
		}
		if !exact && e.SizeExact {
			t.Errorf("%q: an HTML size claims to be exact", p)
		}
	}
	for p := range want {
		if e, ok := got[p]; !ok || e.IsDir {
			t.Errorf("file %q missing from the listing", p)
		}
	}
	for p := range dirs {
		if e, ok := got[p]; !ok || !e.IsDir {
			t.Errorf("directory %q missing from the listing", p)
		}
	}
}
