package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"rangefs/fs/archive/archivetest"
)

// TestArchiveSymlinkChainsStayInside: links that each stay inside the
// archive can climb out together. With sub/u -> "..", the kernel turns
// every "u" of a target back into the archive's root, so a target that
// reads as deep inside ("u/sub/u/.../../..") climbs above the root for
// real and reaches the host's files. Such a link is left out; a chain that
// really ends inside is shown and read.
func TestArchiveSymlinkChainsStayInside(t *testing.T) {
	archivetest.NeedTools(t, "tar", "gzip", "zip")
	work := t.TempDir()
	secret := filepath.Join(work, "secret.txt")
	if err := os.WriteFile(secret, []byte("a host file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(work, "src")
	f := []byte("inside\n")
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(src, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a/f.txt"), f, 0o644); err != nil {
		t.Fatal(err)
	}
	// Textually 62 levels down, then 60 up: 2 levels inside to a lexical
	// check, 60 above the root to the kernel, enough to reach "/" from any
	// temporary directory.
	climb := "u/" + strings.Repeat("sub/u/", 30) + strings.Repeat("../", 60) + strings.TrimPrefix(secret, "/")
	links := map[string]string{
		"sub/u":    "..",
		"sub/out":  climb,
		"sub/loop": "loop/x",
		"sub/ok":   "u/a/f.txt", // the root's a/f.txt, through u
		"sub/ok2":  "u/sub/u/sub/ok",
	}
	for l, target := range links {
		if err := os.Symlink(target, filepath.Join(src, l)); err != nil {
			t.Fatal(err)
		}
	}
	archives := toolArchives(t, src, "chain")
	m := mountArchives(t, archives, t.TempDir(), nil)
	for n := range archives {
		t.Run(n, func(t *testing.T) {
			root := filepath.Join(m.dir, n)
			if _, err := os.Lstat(filepath.Join(root, "sub/out")); !os.IsNotExist(err) {
				got, rerr := os.ReadFile(filepath.Join(root, "sub/out"))
				t.Errorf("sub/out, whose chain climbs out of the archive: lstat %v, want ENOENT (reading it gave %q, %v)", err, got, rerr)
			}
			for _, l := range []string{"sub/ok", "sub/ok2"} {
				if got, err := os.ReadFile(filepath.Join(root, l)); err != nil || !bytes.Equal(got, f) {
					t.Errorf("reading %s, a chain that ends inside: %q, %v; want %q", l, got, err, f)
				}
			}
			if target, err := os.Readlink(filepath.Join(root, "sub/u")); err != nil || target != ".." {
				t.Errorf("readlink sub/u = %q, %v; want \"..\"", target, err)
			}
			if _, err := os.Stat(filepath.Join(root, "sub/loop")); err == nil {
				t.Errorf("stat of a link to itself succeeded")
			}
		})
	}
	if !strings.Contains(m.log.String(), "lead out of the archive") {
		t.Errorf("the log does not say links that lead out were left out:\n%s", m.log.String())
	}
}
