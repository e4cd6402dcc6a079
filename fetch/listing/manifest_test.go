package listing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"slices"
	"strings"
	"testing"
)

// The 1,000-file tree as a manifest lists exactly, with exact sizes and the digests given.
func TestManifestTree(t *testing.T) {
	_, files := makeTree(t)
	var b strings.Builder
	b.WriteString("# a test manifest\n\n")
	for i, f := range files {
		// Every other line gives a digest, in upper case for some.
		sha := ""
		if i%2 == 0 {
			sha = fmt.Sprintf("\t%064x", i)
			if i%4 == 0 {
				sha = strings.ToUpper(sha)
			}
		}
		fmt.Fprintf(&b, "%s\thttps://example.com/files/%d\t%d%s\r\n", f.path, i, f.size, sha)
	}
	m, err := ParseManifest(strings.NewReader(b.String()), "test", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Len() != len(files) {
		t.Fatalf("Len %d, want %d", m.Len(), len(files))
	}
	got := walk(t, testCtx(t), m)
	checkTree(t, got, files, true)
	for i, f := range files {
		e := got[f.path]
		want := ""
		if i%2 == 0 {
			want = fmt.Sprintf("%064x", i)
		}
		if e.SHA256 != want || e.URL != fmt.Sprintf("https://example.com/files/%d", i) {
			t.Fatalf("%s: %+v", f.path, e)
		}
	}
	for p, e := range got {
		if e.IsDir && (e.URL != "" || e.Size != -1) {
			t.Errorf("directory %s: %+v", p, e)
		}
	}
}

func TestManifestNamesAndDuplicates(t *testing.T) {
	const text = `# comment
/lead.txt	http://h/lead	1
a/b.txt	http://h/first	2
a/b.txt	http://h/second	3
clash	http://h/clash-file	4
clash/inner	http://h/inner	5
a.txt	http://h/a.txt
a!	http://h/bang	-
bad/../x	http://h/x	1
./y	http://h/y	1
z//w	http://h/w	1
nul` + "\x00" + `	http://h/nul	1
trailing/	http://h/t	1
`
	log, lb := newLog()
	m, err := ParseManifest(strings.NewReader(text), "names", Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	root, err := m.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(root), []string{"a/", "a!", "a.txt", "clash/", "lead.txt"}; !slices.Equal(got, want) {
		t.Fatalf("root %v, want %v", got, want)
	}
	a, _ := m.List(ctx, "a")
	if len(a) != 1 || a[0].URL != "http://h/first" || a[0].Size != 2 || !a[0].SizeExact {
		t.Errorf("a/: %+v, want the first line's b.txt", a)
	}
	if e := byName(t, root)["a.txt"]; e.Size != -1 || e.SizeExact {
		t.Errorf("a.txt without a size: %+v", e)
	}
	for reason, count := range map[string]int{
		"path given twice: the first line wins":                  1,
		"a file and a directory of one name: the directory wins": 1,
		"dot name":          2,
		"empty name":        2,
		"name contains NUL": 1,
	} {
		if lb.count(`reason="`+reason+`"`, fmt.Sprintf("count=%d", count)) != 1 {
			t.Errorf("want one warning %q with count=%d:\n%s", reason, count, lb)
		}
	}
	if !strings.Contains(lb.String(), `line 9: bad/../x`) {
		t.Errorf("the warning does not name the line:\n%s", lb)
	}
	if _, err := m.List(ctx, "lead.txt"); !errors.Is(err, ErrNotDir) {
		t.Errorf("List of a file: %v, want ErrNotDir", err)
	}
	if _, err := m.List(ctx, "nothing/here"); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("List of nothing: %v, want fs.ErrNotExist", err)
	}
	if _, err := m.List(ctx, "../a"); err == nil {
		t.Error("List(../a) accepted")
	}
}

// A malformed line fails the manifest and names its line.
func TestManifestErrors(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"onlypath", "no URL"},
		{"p\tftp://h/x", "not an http(s) URL"},
		{"p\thttp:///x", "no host"},
		{"p\thttp://h/a b", "space or control"},
		{"p\thttp://h/x\t12k", "not a byte count"},
		{"p\thttp://h/x\t-5", "not a byte count"},
		{"p\thttp://h/x\t99999999999999999999", "not a byte count"},
		{"p\thttp://h/x\t1\tabc", "not 64 hex digits"},
		{"p\thttp://h/x\t1\t" + strings.Repeat("g", 64), "not 64 hex digits"},
		{"p\thttp://h/x\t1\t\textra", "more than four"},
		{"p\thttp://h/" + strings.Repeat("x", 70<<10), "longer than"},
	} {
		text := "ok\thttp://h/ok\t1\n" + tc.line + "\n"
		_, err := ParseManifest(strings.NewReader(text), "bad", Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%.40q: err = %v, want line 2 and %q", tc.line, err, tc.want)
		}
	}
}

// manifestText is n lines spread over a three-level tree of about 100 files per directory.
func manifestText(n int) []byte {
	var b bytes.Buffer
	b.Grow(n * 110)
	for i := range n {
		fmt.Fprintf(&b, "data/shard%03d/part%03d/file%07d.bin\thttps://cdn.example.com/datasets/v1/%07d.bin\t%d\n",
			i/10000, i/100%100, i, i, i*1000)
	}
	return b.Bytes()
}

// BenchmarkParseManifest parses 100,000 and 1,000,000 lines. held-B/entry is the memory
// the parsed Manifest holds per file, text and record (its lines are about 95 bytes).
func BenchmarkParseManifest(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			text := manifestText(n)
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			var m *Manifest
			for b.Loop() {
				var err error
				m, err = ParseManifest(bytes.NewReader(text), "bench", Options{})
				if err != nil || m.Len() != n {
					b.Fatal(err, m.Len())
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(m.memBytes())/float64(n), "held-B/entry")
		})
	}
}

// BenchmarkManifestListAll lists every directory of a 1,000,000-line manifest.
func BenchmarkManifestListAll(b *testing.B) {
	m, err := ParseManifest(bytes.NewReader(manifestText(1_000_000)), "bench", Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		got := walk(b, ctx, m)
		if len(got) != 1_000_000+1+100+10000 {
			b.Fatal(len(got))
		}
	}
}
