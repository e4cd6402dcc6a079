package listing

import (
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// fixtureServer serves testdata/name as the HTML page of /pub/dir/ (HOST in it replaced by
// the server's host:port). Any other path is 404.
func fixtureServer(t *testing.T, name string) (string, *requestLog) {
	t.Helper()
	page, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	rl := &requestLog{}
	var host string
	s := serve(t, rl.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/pub/dir/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(strings.ReplaceAll(string(page), "HOST", host)))
	})))
	host = strings.TrimPrefix(s.URL, "http://")
	return s.URL, rl
}

func utc(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04", s)
	if err != nil {
		panic(err)
	}
	return t
}

// The three table-style servers list the same directory; each escapes names its own way
// and prints sizes its own way. All must give the same names, URLs that decode to them, and
// size hints that are never marked exact.
func TestHTMLServerFormats(t *testing.T) {
	type want struct {
		name  string
		dir   bool
		size  int64
		mtime time.Time
	}
	common := []want{
		{"100%.txt", false, 512, utc("2024-02-29 08:30")},
		{"a&b.txt", false, 1229, utc("2024-01-12 10:01")},
		{"café.bin", false, 12 << 20, utc("2023-12-31 23:59")},
		{"plus+sign?.txt", false, 0, utc("2024-03-01 00:00")},
		{"sub dir", true, -1, utc("2024-01-12 10:00")},
	}
	for _, tc := range []struct {
		fixture string
		sizes   map[string]int64 // where the page's rounding differs from common
	}{
		{"apache.html", nil},
		{"lighttpd.html", nil},
		{"caddy.html", map[string]int64{"a&b.txt": 1234}}, // Caddy's data-order holds bytes
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			root, rl := fixtureServer(t, tc.fixture)
			log, lb := newLog()
			l, err := NewHTTP(root+"/pub/dir/", HTTPOptions{Options: Options{Logger: log}})
			if err != nil {
				t.Fatal(err)
			}
			es, err := l.List(testCtx(t), "")
			if err != nil {
				t.Fatal(err)
			}
			got := byName(t, es)
			if len(es) != len(common) {
				t.Fatalf("entries %v, want %d", names(es), len(common))
			}
			for _, w := range common {
				e, ok := got[w.name]
				if !ok {
					t.Fatalf("missing %q in %v", w.name, names(es))
				}
				size := w.size
				if s, ok := tc.sizes[w.name]; ok {
					size = s
				}
				if e.IsDir != w.dir || e.Size != size || e.SizeExact || !e.ModTime.Equal(w.mtime) {
					t.Errorf("%q = dir %v size %d exact %v mtime %v; want dir %v size %d, hint, %v",
						w.name, e.IsDir, e.Size, e.SizeExact, e.ModTime, w.dir, size, w.mtime)
				}
				if !strings.HasPrefix(e.URL, root+"/pub/dir/") {
					t.Errorf("%q URL %s not below the directory", w.name, e.URL)
				}
			}
			if u := got["sub dir"].URL; u != root+"/pub/dir/sub%20dir/" {
				t.Errorf("directory URL %s", u)
			}
			if u := got["café.bin"].URL; !strings.EqualFold(u, root+"/pub/dir/caf%c3%a9.bin") {
				t.Errorf("file URL %s", u)
			}
			if u := got["100%.txt"].URL; u != root+"/pub/dir/100%25.txt" {
				t.Errorf("file URL %s", u)
			}
			if n := rl.n.Load(); n != 1 {
				t.Errorf("listing made %d requests, want 1: %v", n, rl.all())
			}
			if s := lb.String(); s != "" {
				t.Errorf("a normal page logged warnings:\n%s", s)
			}
		})
	}
}

// Every hostile link is skipped, each reason is logged once however many links share it,
// and what remains is exactly the good entries.
func TestHTMLHostileLinks(t *testing.T) {
	root, _ := fixtureServer(t, "hostile.html")
	log, lb := newLog()
	l, err := NewHTTP(root+"/pub/dir", HTTPOptions{Options: Options{Logger: log}})
	if err != nil {
		t.Fatal(err)
	}
	es, err := l.List(testCtx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"100%.txt", "abs.txt", "good.txt", "same/", "spaced.txt", "twice.txt"}
	if got := names(es); !slices.Equal(got, want) {
		t.Fatalf("entries %v, want %v", got, want)
	}
	m := byName(t, es)
	if e := m["good.txt"]; e.Size != 100 || e.SizeExact || e.URL != root+"/pub/dir/good.txt" {
		t.Errorf("good.txt = %+v", e)
	}
	if e := m["twice.txt"]; e.URL != root+"/pub/dir/twice.txt" || e.Size != 1 {
		t.Errorf("twice.txt: the first link must win: %+v", e)
	}
	if e := m["100%.txt"]; e.URL != root+"/pub/dir/100%25.txt" || e.Size != 3 {
		t.Errorf("100%%.txt = %+v", e)
	}
	for reason, n := range map[string]int{
		"link to another origin":     1,
		"link outside the directory": 1,
		"dot name":                   1,
		"name contains NUL":          1,
		"name contains '/'":          1,
		"link below a subdirectory":  1,
		"duplicate name":             1,
	} {
		if got := lb.count("reason=\"" + reason + "\""); got != n {
			t.Errorf("reason %q logged %d times, want %d\n%s", reason, got, n, lb)
		}
	}
	for reason, n := range map[string]string{
		"link to another origin":     "count=5",
		"link outside the directory": "count=2",
		"dot name":                   "count=2",
		"duplicate name":             "count=2",
		"link below a subdirectory":  "count=2",
	} {
		if lb.count("reason=\""+reason+"\"", n) != 1 {
			t.Errorf("reason %q: want %s\n%s", reason, n, lb)
		}
	}
	if strings.Contains(lb.String(), "\x00") {
		t.Error("a NUL byte reached the log")
	}
}

func TestParseHints(t *testing.T) {
	for _, tc := range []struct {
		text string
		size int64
		time string
	}{
		{"  12-Jan-2024 10:00    1234\n", 1234, "2024-01-12 10:00"},
		{"  12-Jan-2024 10:00     12M\n", 12 << 20, "2024-01-12 10:00"},
		{"  12-Jan-2024 10:00       -\n", -1, "2024-01-12 10:00"},
		{"2024-01-12 10:00 1.2K notes 3", 1229, "2024-01-12 10:00"},
		{"2024-Jan-12 10:00:00 4.0k text/plain", 4096, "2024-01-12 10:00"},
		{"1.2 KiB", 1229, ""},
		{"512 B", 512, ""},
		{"3 GB", 3 << 30, ""},
		{"", -1, ""},
		{"- ", -1, ""},
		{"1.5", -1, ""},
		{"10:00", -1, ""},
		{"99999999999999999999E", -1, ""},
	} {
		size, mt := parseHints(tc.text)
		var want time.Time
		if tc.time != "" {
			want = utc(tc.time)
		}
		if size != tc.size || !mt.Equal(want) {
			t.Errorf("parseHints(%q) = %d, %v; want %d, %v", tc.text, size, mt, tc.size, want)
		}
	}
}
