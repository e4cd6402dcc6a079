package archive

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"rangefs/fs/archive/archivetest"
)

// tarTree builds the usual tree plus what tar formats differ on: a path
// longer than 100 bytes, a long symlink target, a hard link and a sparse file.
func tarTree(t *testing.T, n int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, n, 5)
	long := filepath.Join(src, strings.Repeat("long-directory-name/", 8), strings.Repeat("n", 120)+".txt")
	writeFile(t, long, []byte("a member whose name needs pax or GNU long names\n"))
	if err := os.Symlink(strings.Repeat("../", 3)+strings.Repeat("t", 150), filepath.Join(src, "top", "longlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "d1/sub1/file 001-é.bin"), filepath.Join(src, "top", "hardlink")); err != nil {
		t.Fatal(err)
	}
	// A sparse file: 3 MiB with data at its start, middle and end.
	f, err := os.Create(filepath.Join(src, "sparse.img"))
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 1 << 20, 3<<20 - 4096} {
		if _, err := f.WriteAt([]byte(strings.Repeat("sparse data ", 341)), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	return src
}

func TestTarMatchesRealTools(t *testing.T) {
	for _, tc := range []struct {
		name string
		tool string
		args []string
	}{
		{"gnutar-gnu", "tar", []string{"--format=gnu", "--sparse", "-cf"}},
		{"gnutar-pax", "tar", []string{"--format=pax", "--sparse", "-cf"}},
		{"gnutar-ustar-dot", "tar", nil}, // built below from "." with the default format
		{"bsdtar", "bsdtar", []string{"-cf"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			archivetest.NeedTools(t, tc.tool, "tar")
			src := tarTree(t, 300)
			tp := filepath.Join(t.TempDir(), "a.tar")
			if tc.args == nil {
				archivetest.Run(t, src, "tar", "-cf", tp, ".")
			} else {
				entries, _ := os.ReadDir(src)
				args := append([]string{}, tc.args...)
				args = append(args, tp)
				for _, e := range entries {
					args = append(args, e.Name())
				}
				archivetest.Run(t, src, tc.tool, args...)
			}
			f, size := openFile(t, tp)
			cr := &countingReaderAt{r: f}
			a, err := OpenTar(cr, size, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Err(); err != nil {
				t.Fatalf("Err: %v", err)
			}
			members := a.Len()
			t.Logf("%d entries, %d reads, %d bytes read of %d", members, cr.calls.Load(), cr.bytes.Load(), size)
			if calls := cr.calls.Load(); calls > int64(members)*2 {
				t.Errorf("listing took %d reads for %d entries", calls, members)
			}
			archivetest.EqualNames(t, "listing vs tar tf", listedNames(a), toolListing(t, archivetest.Run(t, "", "tar", "tf", tp)))

			out := t.TempDir()
			archivetest.Run(t, out, "tar", "-xf", tp)
			if n := checkExtracted(t, a, out); n < 300 {
				t.Fatalf("compared %d members, want at least 300", n)
			}
			e, ok := a.Lookup("top/longlink")
			if !ok || e.Linkname != strings.Repeat("../", 3)+strings.Repeat("t", 150) || !e.LinkEscapes {
				t.Errorf("top/longlink: %+v", e)
			}
			if e, ok := a.Lookup("top/link0"); !ok || e.LinkEscapes || e.Linkname != "file 000-é.txt" {
				t.Errorf("top/link0: %+v", e)
			}
			want, _ := os.ReadFile(filepath.Join(out, "sparse.img"))
			randomReads(t, a, "sparse.img", want, 9)
			if e, _ := a.Lookup("sparse.img"); tc.name != "bsdtar" && tc.name != "gnutar-ustar-dot" {
				if _, ok := e.Span(); ok {
					t.Errorf("sparse member offers a plain span")
				}
			}
			big := "d1/sub1/file 001-é.bin"
			want, _ = os.ReadFile(filepath.Join(out, big))
			randomReads(t, a, big, want, 10)
			if e, _ := a.Lookup(big); true {
				off, ok := e.Span()
				buf := make([]byte, len(want))
				if _, err := f.ReadAt(buf, off); !ok || err != nil || sha(buf) != sha(want) {
					t.Errorf("span of %q (%d, %v) does not hold it", big, off, ok)
				}
			}
		})
	}
}
