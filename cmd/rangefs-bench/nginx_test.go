package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"rangefs/fetch/fetchtest/content"
)

func TestRenderNginxConf(t *testing.T) {
	text, err := renderNginxConf(nginxConf{Prefix: "/tmp/b/nginx", Root: "/tmp/b/www", Port: 18080, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"daemon off;",
		"worker_processes 2;",
		"pid /tmp/b/nginx/nginx.pid;",
		"error_log /tmp/b/nginx/error.log",
		"listen 127.0.0.1:18080;", // loopback only, never a wildcard address
		"root /tmp/b/www;",
		"autoindex on;",
		"log_format bench '" + accessLogFormat + "';",
		"access_log /tmp/b/nginx/access.log bench;",
		"client_body_temp_path /tmp/b/nginx/tmp/body;", // nothing outside the private prefix
	} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "limit_rate") {
		t.Error("config must not use limit_rate: the proxy caps per connection")
	}
	if strings.Count(text, "{") != strings.Count(text, "}") {
		t.Error("unbalanced braces")
	}
	if !strings.Contains(accessLogFormat, "$bytes_sent") {
		t.Error("log format must record bytes sent")
	}

	for _, bad := range []nginxConf{
		{Prefix: "relative", Root: "/www", Port: 80},
		{Prefix: "/p", Root: "/w w", Port: 80},
		{Prefix: "/p;", Root: "/www", Port: 80},
		{Prefix: "/p", Root: "/www{", Port: 80},
		{Prefix: "/p", Root: "/www", Port: 0},
		{Prefix: "/p", Root: "/www", Port: 70000},
	} {
		if _, err := renderNginxConf(bad); err == nil {
			t.Errorf("renderNginxConf(%+v) accepted a config nginx would misread", bad)
		}
	}
}

func TestParseAccessLog(t *testing.T) {
	log := `1700000000.123 5 206 1048910 1048576 "GET /data.bin HTTP/1.1" "bytes=0-1048575"
1700000000.456 5 206 1048910 1048576 "GET /data.bin HTTP/1.1" "bytes=1048576-2097151"
1700000000.789 9 200 412 180 "GET / HTTP/1.1" "-"
1700000001.000 11 206 99 0 "GET /data.bin HTTP/1.1" "bytes=` // a line still being written
	st, n, err := parseAccessLog(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	want := logStats{Requests: 3, BytesSent: 1048910*2 + 412, BodyBytes: 1048576*2 + 180, Conns: 2}
	if st != want {
		t.Errorf("stats = %+v, want %+v", st, want)
	}
	if complete := int64(strings.LastIndex(log, "\n") + 1); n != complete {
		t.Errorf("consumed %d bytes, want %d (up to the partial line)", n, complete)
	}
	if _, _, err := parseAccessLog(strings.NewReader("1 2 206 notanumber 0 \"x\" \"y\"\n")); err == nil {
		t.Error("a bad bytes_sent field must be an error")
	}
	if _, _, err := parseAccessLog(strings.NewReader("1 2 206 10 x \"x\" \"y\"\n")); err == nil {
		t.Error("a bad body_bytes_sent field must be an error")
	}
	if _, _, err := parseAccessLog(strings.NewReader("garbage\n")); err == nil {
		t.Error("a short line must be an error")
	}

	// readLogFrom picks up where the previous window ended.
	path := filepath.Join(t.TempDir(), "access.log")
	if err := os.WriteFile(path, []byte(log[:strings.Index(log, "\n")+1]), 0o644); err != nil {
		t.Fatal(err)
	}
	off := logSize(path)
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(log[strings.Index(log, "\n")+1:])
	f.Close()
	st, _, err = readLogFrom(path, off)
	if err != nil || st.Requests != 2 || st.BytesSent != 1048910+412 {
		t.Errorf("window after the first line = %+v, %v", st, err)
	}
	if st, _, err := readLogFrom(filepath.Join(t.TempDir(), "none"), 0); err != nil || st.Requests != 0 {
		t.Errorf("missing log: %+v, %v", st, err)
	}
}

// TestNginxThroughProxy runs the real thing when nginx is installed: private instance,
// a range request through the proxy, the access log's bytes matching the proxy's count,
// and the server gone after stop.
func TestNginxThroughProxy(t *testing.T) {
	if _, err := exec.LookPath(nginxBinary()); err != nil {
		t.Skip("nginx not installed")
	}
	dir := t.TempDir()
	// nginx workers run as an unprivileged user when the test is root: they must be able to
	// walk in (t.TempDir's parent is 0700).
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	www := filepath.Join(dir, "www")
	os.MkdirAll(www, 0o755)
	d, err := ensureDataFile(www, 1<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	sup := newSupervisor(io.Discard, false)
	defer sup.cleanup()
	srv, err := startNginx(sup, filepath.Join(dir, "nginx"), www)
	if err != nil {
		t.Fatal(err)
	}
	p, err := newProxy("127.0.0.1:0", srv.addr(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.Addr()+"/"+d.name, nil)
	req.Header.Set("Range", "bytes=4096-8191")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := make([]byte, 4096)
	content.Fill(want, 4096, 3)
	if resp.StatusCode != 206 || string(body) != string(want) {
		t.Fatalf("range GET: %s, %d bytes, content ok=%v", resp.Status, len(body), string(body) == string(want))
	}
	tr.CloseIdleConnections()
	if !p.WaitIdle(5 * time.Second) {
		t.Fatal("connection did not close")
	}
	var st logStats
	for i := 0; i < 50 && st.Requests == 0; i++ { // nginx writes the line when the request ends
		st, _, _ = readLogFrom(srv.logPath, 0)
		time.Sleep(20 * time.Millisecond)
	}
	if st.Requests != 1 || st.BytesSent != p.Stats().Served {
		t.Errorf("access log %+v vs proxy served %d: want one request with equal bytes", st, p.Stats().Served)
	}
	pid := srv.proc.cmd.Process.Pid
	sup.stop(srv.proc, 5*time.Second)
	if !srv.proc.exited() {
		t.Fatalf("nginx pid %d still running after stop", pid)
	}
}
