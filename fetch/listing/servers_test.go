package listing

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
