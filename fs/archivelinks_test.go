package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"rangefs/fs/archive/archivetest"
)

// TestArchiveSymlinksThroughMount: symlinks in archives made by GNU tar
// (plain and gzipped) and by zip -y are symlinks in the mount, whose
// readlink is the stored target and which the kernel resolves inside the
// archive's directory; ones leading out of the archive are left out and
// logged; a tar hard link is a regular file with its target's bytes. The
// listing equals the tool's, less the links that lead out.
func TestArchiveSymlinksThroughMount(t *testing.T) {
	archivetest.NeedTools(t, "tar", "gzip", "zip", "unzip", "ls", "readlink")
	work := t.TempDir()
	src := filepath.Join(work, "src")
	f := []byte("the target file\n")
	g := bytes.Repeat([]byte("g"), 5000)
	for name, data := range map[string][]byte{"a/f.txt": f, "a/b/g.txt": g} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	inside := map[string]string{ // link -> target, all resolving inside the archive
		"a/l1":     "f.txt",
		"a/b/l2":   "../f.txt",
		"top":      "a/b",
		"dangling": "missing/x",
	}
	outside := map[string]string{"abs": "/etc/passwd", "a/up": "../../outside"}
	for l, target := range inside {
		if err := os.Symlink(target, filepath.Join(src, l)); err != nil {
			t.Fatal(err)
		}
	}
	for l, target := range outside {
		if err := os.Symlink(target, filepath.Join(src, l)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(src, "a/f.txt"), filepath.Join(src, "a/hard")); err != nil {
		t.Fatal(err)
	}
	archives := toolArchives(t, src, "links")
	m := mountArchives(t, archives, t.TempDir(), nil)
	for n := range archives {
		t.Run(n, func(t *testing.T) {
			root := filepath.Join(m.dir, n)
			var listing string
			if strings.HasSuffix(n, ".zip") {
				listing = archivetest.Shell(t, work, "unzip -Z1 "+n)
			} else {
				listing = archivetest.Shell(t, work, "tar tf "+n)
			}
			want := slices.DeleteFunc(archivetest.ToolNames(listing), func(s string) bool { _, out := outside[s]; return out })
			archivetest.EqualNames(t, "listing of "+n+" (less the links that lead out)", archivetest.WalkNames(t, root), want)
			for l, target := range inside {
				p := filepath.Join(root, l)
				fi, err := os.Lstat(p)
				if err != nil {
					t.Fatalf("lstat %s: %v", l, err)
				}
				if fi.Mode()&os.ModeSymlink == 0 || fi.Size() != int64(len(target)) {
					t.Errorf("%s: mode %v size %d, want a symlink of %d bytes", l, fi.Mode(), fi.Size(), len(target))
				}
				if got, err := os.Readlink(p); err != nil || got != target {
					t.Errorf("readlink %s = %q, %v; want %q", l, got, err, target)
				}
				if got := strings.TrimSpace(archivetest.Shell(t, work, "readlink '"+filepath.Join(root, l)+"'")); got != target {
					t.Errorf("readlink(1) %s = %q, want %q", l, got, target)
				}
			}
			// Tools run from outside the mount: a child whose working directory
			// is in this process's own mount would wait on it between fork and exec.
			ls := archivetest.Shell(t, work, "ls -l '"+filepath.Join(root, "a")+"'")
			if !strings.Contains(ls, "l1 -> f.txt") || !strings.HasPrefix(lineWith(ls, " l1 "), "l") {
				t.Errorf("ls -l a does not show l1 as a symlink to f.txt:\n%s", ls)
			}
			// The kernel resolves the links inside the archive's directory.
			for p, data := range map[string][]byte{"a/l1": f, "a/b/l2": f, "top/g.txt": g, "a/hard": f} {
				if got, err := os.ReadFile(filepath.Join(root, p)); err != nil || !bytes.Equal(got, data) {
					t.Errorf("reading %s: %d bytes, %v", p, len(got), err)
				}
			}
			if _, err := os.Stat(filepath.Join(root, "dangling")); !os.IsNotExist(err) {
				t.Errorf("stat of the dangling link: %v, want ENOENT", err)
			}
			if fi, err := os.Lstat(filepath.Join(root, "a/hard")); err != nil || !fi.Mode().IsRegular() {
				t.Errorf("a/hard: %v, %v; want a regular file", fi, err)
			}
			for l := range outside {
				if _, err := os.Lstat(filepath.Join(root, l)); !os.IsNotExist(err) {
					t.Errorf("%s, leading out of the archive: lstat %v, want ENOENT", l, err)
				}
			}
		})
	}
	if !strings.Contains(m.log.String(), "lead out of the archive") {
		t.Errorf("the log does not say links that lead out were left out:\n%s", m.log.String())
	}
}

// toolArchives packs the tree src with GNU tar, tar with gzip and zip -y
// (symlinks kept), as NAME.tar, NAME.tar.gz and NAME.zip beside it, and
// returns their bytes by file name.
func toolArchives(t *testing.T, src, name string) map[string][]byte {
	t.Helper()
	archivetest.Shell(t, src, "tar --format=gnu -cf ../"+name+".tar . && tar -czf ../"+name+".tar.gz . && zip -q -r -y ../"+name+".zip .")
	archives := map[string][]byte{}
	for _, n := range []string{name + ".tar", name + ".tar.gz", name + ".zip"} {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(src), n))
		if err != nil {
			t.Fatal(err)
		}
		archives[n] = b
	}
	return archives
}

// lineWith returns the first line of s containing sub, or "".
func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
