package listing

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"rangefs/fetch/listing/listingtest"
)

// A real nginx serves one tree as autoindex html, html with exact_size off, json and xml.
// Each lists exactly the files written, with exact sizes and mtimes only from json and xml,
// by requesting directories only, and every file URL fetches that file's bytes.
func TestNginxTree(t *testing.T) {
	tree, files := makeTree(t)
	ng := listingtest.StartNginx(t, tree)
	// Requests are counted by a proxy in front of nginx: it sees each request before its
	// answer, where nginx's access log is written a moment after.
	target, _ := url.Parse(ng.URL)
	rl := &requestLog{}
	front := serve(t, rl.wrap(httputil.NewSingleHostReverseProxy(target)))
	ndirs := 1 + 10 + 100 + 1 // root, d*, d*/e*, special
	for _, loc := range []string{"html", "htmlkb", "json", "xml"} {
		t.Run(loc, func(t *testing.T) {
			log, lb := newLog()
			l, err := NewHTTP(front.URL+"/"+loc+"/", HTTPOptions{Options: Options{Logger: log}})
			if err != nil {
				t.Fatal(err)
			}
			before := len(rl.all())
			got := walk(t, testCtx(t), l)
			reqs := rl.all()[before:]
			exact := loc == "json" || loc == "xml"
			checkTree(t, got, files, exact)
			if len(reqs) != ndirs {
				t.Errorf("%d requests for %d directories", len(reqs), ndirs)
			}
			for _, r := range reqs {
				if !strings.HasPrefix(r, "GET /"+loc+"/") || !strings.HasSuffix(r, "/") {
					t.Errorf("listing made a request that is not a directory GET: %q", r)
				}
			}
			if s := lb.String(); s != "" {
				t.Errorf("warnings on a clean tree:\n%s", s)
			}
			big := got["special/big.bin"]
			switch loc {
			case "htmlkb":
				if big.SizeExact || big.Size < 3<<20 || big.Size > 4<<20 {
					t.Errorf("exact_size off: big.bin size %d exact %v, want a hint near 3M", big.Size, big.SizeExact)
				}
			case "html":
				if big.Size != 3_500_000 || big.SizeExact {
					t.Errorf("html: big.bin size %d exact %v, want the printed 3500000 as a hint", big.Size, big.SizeExact)
				}
			}
			if exact {
				for _, f := range files[:50] {
					st, err := os.Stat(filepath.Join(tree, f.path))
					if err != nil {
						t.Fatal(err)
					}
					if e := got[f.path]; !e.ModTime.Equal(st.ModTime().Truncate(time.Second)) {
						t.Errorf("%s: mtime %v, want %v", f.path, e.ModTime, st.ModTime().UTC())
					}
				}
			}
			for _, name := range append([]string{"d3/e4/f5.bin", "special/big.bin"}, specialNames...) {
				p := name
				if !strings.Contains(p, "/") {
					p = "special/" + name
				}
				e, ok := got[p]
				if !ok {
					t.Fatalf("%s missing", p)
				}
				checkURL(t, e.URL, filepath.Join(tree, p))
			}
		})
	}
}

// checkURL fetches u and compares it with the file at path.
func checkURL(t *testing.T, u, path string) {
	t.Helper()
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, want) {
		t.Errorf("GET %s: %d, %d bytes (err %v); want the %d bytes of %s", u, resp.StatusCode, len(got), err, len(want), path)
	}
}

// python's http.server lists the same tree (its page has names and no sizes).
func TestPythonHTTPServerTree(t *testing.T) {
	tree, files := makeTree(t)
	base := listingtest.StartPython(t, tree)
	log, lb := newLog()
	l, err := NewHTTP(base+"/", HTTPOptions{Options: Options{Logger: log}})
	if err != nil {
		t.Fatal(err)
	}
	got := walk(t, testCtx(t), l)
	checkTree(t, got, files, false)
	for _, e := range got {
		if !e.IsDir && e.Size != -1 {
			t.Errorf("%s: size %d from a page that prints none", e.Name, e.Size)
		}
	}
	for _, name := range specialNames {
		checkURL(t, got["special/"+name].URL, filepath.Join(tree, "special", name))
	}
	if s := lb.String(); s != "" {
		t.Errorf("warnings on a clean tree:\n%s", s)
	}
}

// nginx's JSON holds a name's bytes as they are: names that are not UTF-8
// keep their bytes (and so their URLs), instead of becoming one U+FFFD name
// that is neither file and merges them.
func TestNginxJSONKeepsNonUTF8Names(t *testing.T) {
	body := "[\n" +
		`{ "name":"caf` + "\xe9" + `.txt", "type":"file", "mtime":"Tue, 02 Jan 2024 03:04:05 GMT", "size":1 },` + "\n" +
		`{ "name":"caf` + "\xe8" + `.txt", "type":"file", "mtime":"Tue, 02 Jan 2024 03:04:05 GMT", "size":2 },` + "\n" +
		`{ "name":"café.txt", "type":"file", "mtime":"Tue, 02 Jan 2024 03:04:05 GMT", "size":3 },` + "\n" +
		`{ "name":"` + "\xff\xfe" + `", "type":"directory", "mtime":"Tue, 02 Jan 2024 03:04:05 GMT" }` + "\n]\n"
	dir, _ := url.Parse("http://127.0.0.1/d/")
	// Read one byte at a time, so runes and escapes are split across reads.
	es, err := parseNginxJSON(iotest.OneByteReader(strings.NewReader(body)), dir, 100, &skips{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range es {
		got[e.Name] = e.URL
	}
	want := map[string]string{
		"caf\xe9.txt": "http://127.0.0.1/d/caf%E9.txt",
		"caf\xe8.txt": "http://127.0.0.1/d/caf%E8.txt",
		"café.txt":    "http://127.0.0.1/d/caf%C3%A9.txt",
		"\xff\xfe":    "http://127.0.0.1/d/%FF%FE/",
	}
	if len(got) != len(want) {
		t.Fatalf("names %q, want %q", got, want)
	}
	for n, u := range want {
		if got[n] != u {
			t.Errorf("%q: URL %q, want %q", n, got[n], u)
		}
	}
}

// The names of nginx's JSON are unquoted as JSON strings, whatever bytes
// they hold: escapes (private-use runes and surrogate pairs included) mean
// what JSON says, raw bytes stay as they are.
func TestNginxJSONNameEscapes(t *testing.T) {
	for raw, want := range map[string]string{
		`"plain.txt"`:           "plain.txt",
		`"\uf7e9.txt"`:          "\uf7e9.txt",
		`"a\"b\\c\/d\te"`:       "a\"b\\c/d\te",
		`"\ud83d\ude00.png"`:    "😀.png",
		`"lone\ud83d.x"`:        "lone\ufffd.x",
		"\"caf\xe9\uf7e9.txt\"": "caf\xe9\uf7e9.txt",
	} {
		got, err := unquoteJSONName(json.RawMessage(raw))
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", raw, got, err, want)
		}
	}
	for _, bad := range []string{`12`, `"a\x"`, `"a\u12"`} {
		if got, err := unquoteJSONName(json.RawMessage(bad)); err == nil {
			t.Errorf("%s: %q, want an error", bad, got)
		}
	}
}
