package listing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// endless writes an HTML listing that never ends: the body cap must end it.
func TestHTTPEndlessBodyIsCapped(t *testing.T) {
	for _, ct := range []string{"text/html", "application/json", "text/xml"} {
		t.Run(ct, func(t *testing.T) {
			s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ct)
				switch ct {
				case "application/json":
					w.Write([]byte("["))
				case "text/xml":
					w.Write([]byte("<?xml version=\"1.0\"?>\n<list>\n"))
				}
				line := []byte(`<a href="x">x</a>` + "\n")
				if ct == "application/json" {
					line = []byte(`{"name":"x","type":"file","size":1},`)
				} else if ct == "text/xml" {
					line = []byte(`<file size="1">x</file>` + "\n")
				}
				for i := 0; i < 1<<22; i++ { // 4M lines: far beyond the cap, bounded anyway
					if _, err := w.Write(line); err != nil {
						return
					}
				}
			}))
			l, _ := NewHTTP(s.URL+"/", HTTPOptions{Options: Options{MaxBody: 1 << 20}})
			_, err := l.List(testCtx(t), "")
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "1048576") {
				t.Fatalf("err = %v, want ErrTooLarge naming the 1048576-byte cap", err)
			}
		})
	}
}

// A body that trickles forever is ended by the List timeout.
func TestHTTPTrickleEndsAtTimeout(t *testing.T) {
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		for i := 0; i < 600; i++ { // at most 60 s
			if _, err := w.Write([]byte(" ")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}))
	l, _ := NewHTTP(s.URL+"/", HTTPOptions{Options: Options{Timeout: 500 * time.Millisecond}})
	start := time.Now()
	_, err := l.List(testCtx(t), "")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("List took %v with a 500ms timeout", d)
	}
}

// 100,000 entries are listed in full; one more than MaxEntries is an error, not a
// silently shortened directory.
func TestHTTPManyEntries(t *testing.T) {
	const n = 100_000
	for _, ct := range []string{"text/html", "application/json"} {
		s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ct)
			if ct == "application/json" {
				w.Write([]byte("[\n"))
				for i := range n {
					sep := ","
					if i == n-1 {
						sep = ""
					}
					fmt.Fprintf(w, `{"name":"file%06d","type":"file","mtime":"Fri, 12 Jan 2024 10:00:00 GMT","size":%d}%s`+"\n", i, i, sep)
				}
				w.Write([]byte("]\n"))
				return
			}
			w.Write([]byte("<html><body><pre>\n"))
			for i := range n {
				fmt.Fprintf(w, "<a href=\"file%06d\">file%06d</a>  12-Jan-2024 10:00  %d\n", i, i, i)
			}
			w.Write([]byte("</pre></body></html>\n"))
		}))
		l, _ := NewHTTP(s.URL+"/", HTTPOptions{})
		es, err := l.List(testCtx(t), "")
		if err != nil {
			t.Fatalf("%s: %v", ct, err)
		}
		if len(es) != n || es[n-1].Name != fmt.Sprintf("file%06d", n-1) || es[n-1].Size != n-1 {
			t.Fatalf("%s: %d entries, last %+v", ct, len(es), es[len(es)-1])
		}
		if exact := ct == "application/json"; es[7].SizeExact != exact {
			t.Errorf("%s: SizeExact %v", ct, es[7].SizeExact)
		}
		small, _ := NewHTTP(s.URL+"/", HTTPOptions{Options: Options{MaxEntries: n - 1}})
		if _, err := small.List(testCtx(t), ""); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s with MaxEntries %d: err = %v, want ErrTooLarge", ct, n-1, err)
		}
	}
}

// Redirects: a loop between two directories ends at the first repeat, an endless chain
// after 10 hops, and neither a forbidden address nor another scheme is followed.
func TestHTTPRedirects(t *testing.T) {
	var hops int
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hops++
		switch {
		case r.URL.Path == "/a/":
			http.Redirect(w, r, "/b/", http.StatusFound)
		case r.URL.Path == "/b/":
			http.Redirect(w, r, "/a/", http.StatusMovedPermanently)
		case strings.HasPrefix(r.URL.Path, "/chain/"):
			http.Redirect(w, r, fmt.Sprintf("/chain/%d/", hops), http.StatusFound)
		case r.URL.Path == "/meta/":
			http.Redirect(w, r, "http://169.254.169.254/latest/", http.StatusFound)
		case r.URL.Path == "/ftp/":
			http.Redirect(w, r, "ftp://127.0.0.1/", http.StatusFound)
		case r.URL.Path == "/moved/":
			http.Redirect(w, r, "/new/", http.StatusMovedPermanently)
		case r.URL.Path == "/new/":
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte(`<a href="f.txt">f.txt</a> <a href="/moved/g.txt">g</a>`))
		default:
			http.NotFound(w, r)
		}
	}))
	l, _ := NewHTTP(s.URL+"/", HTTPOptions{})
	ctx := testCtx(t)
	for dir, want := range map[string]string{
		"a":     "redirect loop",
		"chain": "more than 10 redirects",
		"meta":  "forbidden address 169.254.169.254",
		"ftp":   "non-HTTP scheme",
	} {
		hops = 0
		_, err := l.List(ctx, dir)
		if !errors.Is(err, ErrRedirect) || !strings.Contains(err.Error(), want) {
			t.Errorf("List(%q) = %v, want ErrRedirect saying %q", dir, err, want)
		}
		if hops > 12 {
			t.Errorf("List(%q) made %d requests", dir, hops)
		}
	}
	// A directory that moved is listed where it went; its links resolve there.
	es, err := l.List(ctx, "moved")
	if err != nil || len(es) != 1 || es[0].URL != s.URL+"/new/f.txt" {
		t.Errorf("moved directory: %v %+v", err, es)
	}
	if _, err := l.List(ctx, "nothing"); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("404: err = %v, want fs.ErrNotExist", err)
	}
}

// User headers go to the root's host only.
func TestHTTPHeaderNotSentToOtherHost(t *testing.T) {
	var otherSaw string
	other := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherSaw = r.Header.Get("X-Secret") + r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(`<a href="f">f</a>`))
	}))
	var rootSaw string
	root := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rootSaw = r.Header.Get("X-Secret")
		http.Redirect(w, r, other.URL+"/", http.StatusFound)
	}))
	h := http.Header{"X-Secret": {"s3cr3t"}, "Authorization": {"Bearer tok"}}
	l, _ := NewHTTP(root.URL+"/", HTTPOptions{Header: h})
	es, err := l.List(testCtx(t), "")
	if err != nil || len(es) != 1 {
		t.Fatalf("%v %v", err, es)
	}
	if rootSaw != "s3cr3t" || otherSaw != "" {
		t.Errorf("root saw %q, other host saw %q", rootSaw, otherSaw)
	}
}

// Answers that are not listings, malformed listings and bad directory paths are errors.
func TestHTTPNotListings(t *testing.T) {
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/file/":
			w.Header().Set("Content-Type", "video/mp4")
			w.Write(make([]byte, 1<<16))
		case "/badjson/":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`[{"name":"a","type":"file","size":1},{"name":`))
		case "/notarray/":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"name":"a"}`))
		case "/otherxml/":
			w.Header().Set("Content-Type", "application/xml")
			w.Write([]byte(`<?xml version="1.0"?><feed><entry/></feed>`))
		case "/sniffjson/":
			w.Write([]byte(` [{"name":"a b","type":"file","size":5},{"name":"..","type":"directory"},{"name":"c","type":"other"}]`))
		}
	}))
	l, _ := NewHTTP(s.URL+"/", HTTPOptions{})
	ctx := testCtx(t)
	for dir, want := range map[string]error{
		"file": ErrNotListing, "badjson": ErrBadListing, "notarray": ErrBadListing, "otherxml": ErrNotListing,
	} {
		if _, err := l.List(ctx, dir); !errors.Is(err, want) {
			t.Errorf("List(%q) = %v, want %v", dir, err, want)
		}
	}
	es, err := l.List(ctx, "sniffjson")
	if err != nil || len(es) != 1 || es[0].URL != s.URL+"/sniffjson/a%20b" || !es[0].SizeExact {
		t.Errorf("sniffed JSON: %v %+v", err, es)
	}
	for _, bad := range []string{"a//b", "../x", "a/./b", "/a", "a/", "x\x00y"} {
		if _, err := l.List(ctx, bad); err == nil || errors.Is(err, ErrNotListing) {
			t.Errorf("List(%q) = %v, want an invalid-path error", bad, err)
		}
	}
	deep := strings.Repeat("d/", 64) + "d"
	if _, err := l.List(ctx, deep); !errors.Is(err, ErrTooLarge) {
		t.Errorf("65 levels deep: err = %v, want ErrTooLarge", err)
	}
}

// 100,000 hostile links cost one warning, with their count.
func TestHTTPManyHostileLinksOneWarning(t *testing.T) {
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		for i := range 100_000 {
			fmt.Fprintf(w, "<a href=\"http://evil.example/%d\">x</a><a href=\"%%2e%%2e/%d\">y</a>\n", i, i)
		}
	}))
	log, lb := newLog()
	l, _ := NewHTTP(s.URL+"/", HTTPOptions{Options: Options{Logger: log}})
	es, err := l.List(testCtx(t), "")
	if err != nil || len(es) != 0 {
		t.Fatalf("%v, %d entries", err, len(es))
	}
	if lb.count("count=100000") != 2 || strings.Count(lb.String(), "\n") != 2 {
		t.Errorf("want two warnings with count=100000:\n%s", lb)
	}
}

// A name longer than FUSE's 1024 bytes is skipped and logged: shown, it
// makes a kernel before 6.15 refuse the whole directory's getdents (EIO for
// every name in it), and 4096 bytes any kernel. Listing requests carry
// Options.UserAgent, unless the user's headers have one.
func TestLongNamesSkippedAndUserAgentSent(t *testing.T) {
	long := strings.Repeat("n", 1025)
	var mu sync.Mutex
	var agents []string
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		agents = append(agents, r.UserAgent())
		mu.Unlock()
		fmt.Fprintf(w, `<html><body><a href="ok.bin">ok.bin</a> <a href="%s">%s</a> <a href="%s">x</a></body></html>`,
			long, long, strings.Repeat("m", 1024))
	}))
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	l, err := NewHTTP(s.URL+"/", HTTPOptions{Options: Options{Logger: log, UserAgent: "rangefs/test"}})
	if err != nil {
		t.Fatal(err)
	}
	es, err := l.List(testCtx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	m := byName(t, es)
	if _, ok := m[long]; ok || len(m) != 2 {
		t.Errorf("listed %d names (the 1025-byte one: %v); want ok.bin and the 1024-byte name", len(m), ok)
	}
	if !strings.Contains(logs.String(), "longer than 1024 bytes") {
		t.Errorf("the skip is not logged:\n%s", logs.String())
	}
	// A User-Agent among the user's headers wins over it.
	l, err = NewHTTP(s.URL+"/", HTTPOptions{Options: Options{Logger: log, UserAgent: "rangefs/test"},
		Header: http.Header{"User-Agent": {"Browser/1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.List(testCtx(t), ""); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(agents) != 2 || agents[0] != "rangefs/test" || agents[1] != "Browser/1" {
		t.Errorf("User-Agents %q, want rangefs/test, then the header's Browser/1", agents)
	}
}
