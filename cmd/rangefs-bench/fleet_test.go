package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"rangefs/fetch/fetchtest/content"
)

const shippedSliceConf = "../rangefs/deploy/nginx-slice-cache.conf"

// The shipped file renders into a config with the directives a slice cache needs, and a
// file the substitution no longer matches is refused.
func TestRenderSliceConf(t *testing.T) {
	shipped, err := os.ReadFile(shippedSliceConf)
	if err != nil {
		t.Fatal(err)
	}
	text, err := renderSliceConf(string(shipped), "127.0.0.1:18090", "127.0.0.1:18091", "/w/cache", "/w/access.log")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"listen 127.0.0.1:18090;",
		"server 127.0.0.1:18091;",
		"proxy_cache_path /w/cache ",
		"access_log /w/access.log rangefs_cache;",
		"slice 1m;",
		"proxy_cache_key $uri$is_args$args$slice_range;",
		"proxy_set_header Range $slice_range;",
		"proxy_cache_valid 200 206 ",
		"proxy_cache_lock on;",
		"log_subrequest on;",
		"log_format rangefs_cache '$msec $status $body_bytes_sent $upstream_cache_status ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("rendered config lacks %q", want)
		}
	}
	for _, bad := range []string{"example.com:80", "/var/cache", "/var/log", "listen 8080"} {
		if strings.Contains(text, bad) {
			t.Errorf("rendered config still has %q", bad)
		}
	}
	// What would hide a remote change or break ranges must never be in it.
	for _, line := range strings.Split(string(shipped), "\n") {
		code, _, _ := strings.Cut(line, "#")
		for _, bad := range []string{"proxy_hide_header", "gzip", "max_ranges", "proxy_ignore_headers"} {
			if strings.Contains(code, bad) {
				t.Errorf("shipped config uses %s: %q", bad, line)
			}
		}
	}
	main, err := renderSliceMain("/w", text)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(main, "{") != strings.Count(main, "}") || !strings.Contains(main, "pid /w/nginx.pid;") {
		t.Errorf("main config:\n%s", main)
	}
	if _, err := renderSliceMain("/w w", text); err == nil {
		t.Error("a prefix with a space was accepted")
	}

	for name, edit := range map[string]func(string) string{
		"value gone":  func(s string) string { return strings.Replace(s, "listen 8080;", "listen 9090;", 1) },
		"value twice": func(s string) string { return s + "\nserver origin.example.com:80;\n" },
		"second listener": func(s string) string {
			return strings.Replace(s, "log_subrequest on;", "log_subrequest on;\n    listen [::]:80;", 1)
		},
	} {
		if _, err := renderSliceConf(edit(string(shipped)), "127.0.0.1:1", "127.0.0.1:2", "/c", "/l"); err == nil {
			t.Errorf("%s: rendered without an error", name)
		}
	}
}

func TestParseCacheLog(t *testing.T) {
	log := `1700000000.1 200 0 MISS "HEAD /f HTTP/1.1" "-" "bytes=0-1048575" 1048576
1700000000.2 206 1048576 HIT "GET /f HTTP/1.1" "bytes=0-2097151" "-" -
1700000000.3 206 1048576 MISS "GET /f HTTP/1.1" "bytes=0-2097151" "bytes=1048576-2097151" 1048576
1700000000.4 404 153 - "GET /x HTTP/1.1" "-" "-" -
1700000000.5 206 1048576 HIT "GET /f HTTP/1.1" "bytes=1048576-2097151" "-" -
`
	st, err := parseCacheLog(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if st.Total != 4 || st.Hits != 2 || st.ByStatus["MISS"] != 2 || st.ratio() != 0.5 {
		t.Errorf("stats %+v, ratio %v; want 4 lookups, 2 hits", st, st.ratio())
	}
	if _, err := parseCacheLog(strings.NewReader("1 2 3\n")); err == nil {
		t.Error("a short line must be an error")
	}
	if (cacheStats{}).ratio() != 0 {
		t.Error("no lookups must give ratio 0, not NaN")
	}
}

func TestFleetNote(t *testing.T) {
	got := fleetNote(1<<30+(1<<20), 1<<30, cacheStats{Total: 8192, Hits: 7168}, []float64{90, 30, 60})
	for _, want := range []string{"origin served 1025.0 MiB = 1.00x the file", "hit ratio 87.5% (7168 of 8192", "min 30.0 median 60.0 max 90.0"} {
		if !strings.Contains(got, want) {
			t.Errorf("note %q lacks %q", got, want)
		}
	}
}

func TestFleetFlagAddsOrDropsTheRow(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{{nil, true}, {[]string{"--fleet", "0"}, false}, {[]string{"--fleet", "2"}, true}} {
		cfg, err := parseFlags(tc.args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		has := slices.ContainsFunc(buildRows(cfg), func(r row) bool { return r.id == "fleet" })
		if has != tc.want {
			t.Errorf("%q: fleet row present %v, want %v", tc.args, has, tc.want)
		}
	}
}

// TestSliceCacheStartsFromShippedConfig runs the shipped config in a private nginx in front
// of the bench's origin: the second read of a slice is a HIT in the log the fleet row
// parses, and the origin served the slice once.
func TestSliceCacheStartsFromShippedConfig(t *testing.T) {
	if _, err := exec.LookPath(nginxBinary()); err != nil {
		t.Skip("skipping: nginx is not installed (make bench-deps)")
	}
	if out, _ := exec.Command(nginxBinary(), "-V").CombinedOutput(); !strings.Contains(string(out), "http_slice_module") {
		t.Skip("skipping: nginx is built without the slice module")
	}
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755) // nginx workers run unprivileged when the test is root
	os.Chmod(dir, 0o755)
	www := filepath.Join(dir, "www")
	os.MkdirAll(www, 0o755)
	d, err := ensureDataFile(www, 3<<20, 4)
	if err != nil {
		t.Fatal(err)
	}
	sup := newSupervisor(io.Discard, false)
	defer sup.cleanup()
	origin, err := startNginx(sup, filepath.Join(dir, "origin"), www)
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{cfg: config{sliceConf: shippedSliceConf}, sup: sup}
	cacheSrv, err := b.startSliceCache(filepath.Join(dir, "slice"), origin.addr())
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+cacheSrv.addr()+"/"+d.name, nil)
		req.Header.Set("Range", "bytes=1048576-1052671") // 4 KiB inside slice 1
		resp, err := tr.RoundTrip(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		want := make([]byte, 4096)
		content.Fill(want, 1<<20, 4)
		if resp.StatusCode != 206 || string(body) != string(want) || resp.Header.Get("Etag") == "" {
			t.Fatalf("GET %d: %s, ETag %q, content ok=%v", i, resp.Status, resp.Header.Get("Etag"), string(body) == string(want))
		}
	}
	var cs cacheStats
	var st logStats
	for i := 0; i < 50 && (cs.Total < 2 || st.Requests < 1); i++ { // lines land when requests end
		time.Sleep(20 * time.Millisecond)
		if cs, err = readCacheLog(cacheSrv.logPath); err != nil {
			t.Fatal(err)
		}
		st, _, _ = readLogFrom(origin.logPath, 0)
	}
	if cs.Total != 2 || cs.Hits != 1 {
		t.Errorf("slice cache log: %+v; want one MISS then one HIT", cs)
	}
	if st.Requests != 1 || st.BodyBytes != 1<<20 {
		t.Errorf("origin log %+v: want one 1 MiB slice", st)
	}
}
