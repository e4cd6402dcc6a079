package archive

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"rangefs/fs/archive/archivetest"
)

// zipFixture builds a tree of n files and zips it with the given zip flags.
func zipFixture(t *testing.T, n int, flags ...string) (src, zipPath string) {
	t.Helper()
	archivetest.NeedTools(t, "zip", "unzip")
	dir := t.TempDir()
	src = filepath.Join(dir, "src")
	makeTree(t, src, n, 7)
	zipPath = filepath.Join(dir, "a.zip")
	archivetest.Run(t, src, "zip", append(append([]string{"-q", "-r", "-y"}, flags...), zipPath, ".")...)
	return src, zipPath
}

func TestZipMatchesInfoZip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"deflated", nil},
		{"stored", []string{"-0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, zp := zipFixture(t, 300, tc.flags...)
			f, size := openFile(t, zp)
			cr := &countingReaderAt{r: f}
			a, err := OpenZip(cr, size, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Err(); err != nil {
				t.Fatalf("Err: %v", err)
			}
			if c := cr.calls.Load(); c > 2 {
				t.Errorf("listing took %d reads, want at most 2", c)
			}
			archivetest.EqualNames(t, "listing vs unzip -Z1", listedNames(a), toolListing(t, archivetest.Run(t, "", "unzip", "-Z1", zp)))

			out := t.TempDir()
			archivetest.Run(t, out, "unzip", "-q", zp)
			if n := checkExtracted(t, a, out); n < 300 {
				t.Fatalf("compared %d members, want 300", n)
			}
			// Symlinks stay symlinks, with the target zip stored.
			e, ok := a.Lookup("top/link1")
			if !ok || e.Mode&fs.ModeSymlink == 0 {
				t.Fatalf("top/link1: %+v, %v", e, ok)
			}
			if _, err := a.Open("top/link1"); err == nil {
				t.Errorf("Open of a symlink succeeded")
			}
			if target, err := a.Readlink("top/link1"); err != nil || target != "../d1/sub1" {
				t.Fatalf("Readlink = %q, %v", target, err)
			}
			if e, _ := a.Lookup("top/link1"); e.LinkEscapes {
				t.Errorf("top/link1 -> ../d1/sub1 marked as escaping")
			}
			if e, ok := a.Lookup("empty dir"); !ok || !e.IsDir() {
				t.Errorf("empty dir: %+v, %v", e, ok)
			}
			// Random preads of the big members, stored and deflated, with a
			// small window so that restarts happen.
			small, err := OpenZip(f, size, Limits{Window: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"d1/sub1/file 001-é.bin", "d2/sub2/file 002-é.dat", "d3/sub0/file 003-é.txt"} {
				want, err := os.ReadFile(filepath.Join(out, name))
				if err != nil {
					t.Fatal(err)
				}
				randomReads(t, small, name, want, 3)
				randomReads(t, a, name, want, 4)
				e, _ := a.Lookup(name)
				if off, ok := e.Span(); tc.name == "stored" && !ok {
					t.Errorf("%q: stored member has no span after open", name)
				} else if ok {
					buf := make([]byte, len(want))
					if _, err := f.ReadAt(buf, off); err != nil || sha(buf) != sha(want) {
						t.Errorf("%q: span at %d does not hold the member", name, off)
					}
				}
			}
		})
	}
}

// TestZip64FromPython lists and reads a zip whose every record is zip64:
// python's zipfile writes zip64 extras and end records above its limits,
// which the script lowers to a few bytes.
func TestZip64FromPython(t *testing.T) {
	archivetest.NeedTools(t, "python3", "unzip")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	files := makeTree(t, src, 200, 11)
	zp := filepath.Join(dir, "z64.zip")
	script := `
import os, sys, zipfile
zipfile.ZIP64_LIMIT = 100
zipfile.ZIP_FILECOUNT_LIMIT = 10
src, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as z:
    for root, dirs, names in os.walk(src):
        for n in sorted(names):
            p = os.path.join(root, n)
            if os.path.islink(p):
                continue
            z.write(p, os.path.relpath(p, src), compress_type=zipfile.ZIP_STORED if n.endswith(".bin") else zipfile.ZIP_DEFLATED)
`
	archivetest.Run(t, dir, "python3", "-c", script, src, zp)
	f, size := openFile(t, zp)
	raw, _ := os.ReadFile(zp)
	if !strings.Contains(string(raw), "PK\x06\x06") {
		t.Fatal("python did not write a zip64 end record")
	}
	cr := &countingReaderAt{r: f}
	a, err := OpenZip(cr, size, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Err(); err != nil {
		t.Fatal(err)
	}
	if c := cr.calls.Load(); c > 2 {
		t.Errorf("listing took %d reads, want at most 2", c)
	}
	archivetest.EqualNames(t, "listing vs unzip -Z1", listedNames(a), toolListing(t, archivetest.Run(t, "", "unzip", "-Z1", zp)))
	out := t.TempDir()
	archivetest.Run(t, out, "unzip", "-q", zp)
	if n := checkExtracted(t, a, out); n != len(files) {
		t.Fatalf("compared %d members, want %d", n, len(files))
	}
}
