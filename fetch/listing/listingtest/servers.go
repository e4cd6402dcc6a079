// Package listingtest starts the real directory-listing servers that the listing and
// tree tests run against: a private nginx with its autoindex in every format, and python3's
// http.server. Both listen on a free loopback port, are started by the test and killed by
// PID when it ends; a test skips, saying why, when the program is not installed (.ci/run
// installs nginx-light and python3).
package listingtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NginxLocations are the autoindex variants a Nginx serves, each over the same tree at
// /NAME/: HTML with exact sizes, HTML with rounded sizes, JSON and XML.
var NginxLocations = map[string]string{
	"html":   "autoindex on;",
	"htmlkb": "autoindex on; autoindex_exact_size off;",
	"json":   "autoindex on; autoindex_format json;",
	"xml":    "autoindex on; autoindex_format xml;",
}

// Nginx is a private nginx serving one tree under NginxLocations, logging every request.
type Nginx struct {
	URL string // http://127.0.0.1:PORT
	Dir string // its prefix: config and logs
}

// StartNginx starts nginx over tree on a free loopback port (up to five ports, should
// another process take the one picked), or skips the test when nginx is missing.
func StartNginx(t testing.TB, tree string) *Nginx {
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
	names := make([]string, 0, len(NginxLocations))
	for name := range NginxLocations {
		names = append(names, name)
	}
	sort.Strings(names)
	for attempt := range 5 {
		dir := t.TempDir()
		port := FreePort(t)
		var locs strings.Builder
		for _, name := range names {
			fmt.Fprintf(&locs, "    location /%s/ { alias %s/; %s }\n", name, tree, NginxLocations[name])
		}
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
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if StartProcess(t, exec.Command(bin, "-p", dir, "-c", cf, "-e", filepath.Join(dir, "error.log")), addr) {
			return &Nginx{URL: "http://" + addr, Dir: dir}
		}
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		t.Logf("nginx did not start on %s (attempt %d): %s", addr, attempt+1, log)
	}
	t.Fatal("nginx did not start")
	return nil
}

// Request is one line of the nginx access log.
type Request struct {
	Method, URI string
	Status      int
	Bytes       int64
}

// Requests returns what nginx has logged so far. nginx writes each line when the request
// ends, so a test reads it after the requests it cares about.
func (n *Nginx) Requests(t testing.TB) []Request {
	t.Helper()
	f, err := os.Open(filepath.Join(n.Dir, "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Request
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 4 {
			t.Fatalf("access log line %q", sc.Text())
		}
		code, _ := strconv.Atoi(fs[2])
		size, _ := strconv.ParseInt(fs[3], 10, 64)
		out = append(out, Request{fs[0], fs[1], code, size})
	}
	return out
}

// StartPython runs python3 -m http.server over tree on a free loopback port and returns
// its base URL, or skips the test when python3 is missing.
func StartPython(t testing.TB, tree string) string {
	t.Helper()
	bin, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed (.ci/run installs python3): skipping the http.server test")
	}
	for range 5 {
		port := FreePort(t)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		cmd := exec.Command(bin, "-m", "http.server", "--bind", "127.0.0.1", "--directory", tree, strconv.Itoa(port))
		if StartProcess(t, cmd, addr) {
			return "http://" + addr
		}
	}
	t.Fatal("python3 -m http.server did not start")
	return ""
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartProcess runs cmd, waits (100 tries over at most 10 s) until addr accepts
// connections, and kills it by PID when the test ends, failing the test if it is not
// reaped 10 s after the kill. It reports false when the process exited or never listened.
func StartProcess(t testing.TB, cmd *exec.Cmd, addr string) bool {
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
