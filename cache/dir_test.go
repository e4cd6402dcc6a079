package cache

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestModesOfNewCache(t *testing.T) {
	dir := cacheDir(t)
	openT(t, dir, testMeta(testChunk), newFake(testChunk), Options{})
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("cache dir mode %v, want 0700", fi.Mode().Perm())
	}
	for _, name := range []string{dataName, indexName, ownerName} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
}

func TestWritableDirRefused(t *testing.T) {
	dir := cacheDir(t)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	f, err := Open(dir, testMeta(10), newFake(10), Options{})
	if err == nil {
		f.Close()
		t.Fatal("Open accepted a 0777 cache dir")
	}
	if !strings.Contains(err.Error(), "writable") {
		t.Fatalf("error %q does not say why", err)
	}
	if _, err := os.Stat(filepath.Join(dir, indexName)); !os.IsNotExist(err) {
		t.Fatal("Open created files in a refused dir")
	}
}

func TestSymlinkDirRefused(t *testing.T) {
	parent := t.TempDir()
	real := filepath.Join(parent, "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(parent, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if f, err := Open(link, testMeta(10), newFake(10), Options{}); err == nil {
		f.Close()
		t.Fatal("Open followed a symlinked cache dir")
	}
}

func TestSymlinkedFilesNotFollowed(t *testing.T) {
	for _, name := range []string{indexName, dataName, ownerName} {
		t.Run(name, func(t *testing.T) {
			m := testMeta(2 * testChunk)
			dir := cacheDir(t)
			fillAndClose(t, dir, m)
			victim := filepath.Join(t.TempDir(), "victim")
			precious := []byte("precious bytes, not a cache file")
			if err := os.WriteFile(victim, precious, 0o600); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, name)
			os.Remove(path)
			if err := os.Symlink(victim, path); err != nil {
				t.Fatal(err)
			}
			f, err := Open(dir, m, newFake(m.Size), Options{})
			if err == nil {
				f.Close()
				t.Fatalf("Open used a symlinked %s", name)
			}
			if !strings.Contains(err.Error(), "symlink") {
				t.Fatalf("error %q does not say why", err)
			}
			if got := fileBytes(t, victim); string(got) != string(precious) {
				t.Fatal("the symlink target was modified")
			}
			if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Fatal("the symlink was replaced or moved")
			}
			if name == indexName {
				if _, _, err := Inspect(dir); err == nil {
					t.Fatal("Inspect followed a symlinked index")
				}
			}
		})
	}
}

// The cache root (the directory holding one directory per object) is
// checked like the object directory: whoever can write it could swap an
// object directory for one of theirs.
func TestWritableRootRefused(t *testing.T) {
	for _, mode := range []os.FileMode{0o777, 0o770, 0o1777} {
		root := t.TempDir()
		if err := os.Chmod(root, mode); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(root, "obj")
		f, err := Open(dir, testMeta(10), newFake(10), Options{Root: root})
		if err == nil {
			f.Close()
			t.Fatalf("Open accepted a cache root of mode %v", mode)
		}
		if !strings.Contains(err.Error(), "writable") || !strings.Contains(err.Error(), "chmod 700") {
			t.Fatalf("mode %v: error %q does not say why and what to do", mode, err)
		}
		if _, err := os.Lstat(dir); !os.IsNotExist(err) {
			t.Fatalf("mode %v: Open created the object dir in a refused root", mode)
		}
	}
	// A root only we can write is fine (0755 too), and one that does not
	// exist yet is created 0700.
	for _, mode := range []os.FileMode{0o700, 0o755} {
		root := t.TempDir()
		if err := os.Chmod(root, mode); err != nil {
			t.Fatal(err)
		}
		f, err := Open(filepath.Join(root, "obj"), testMeta(10), newFake(10), Options{Root: root})
		if err != nil {
			t.Fatalf("a root of mode %v: %v", mode, err)
		}
		f.Close()
	}
	root := filepath.Join(t.TempDir(), "new")
	f, err := Open(filepath.Join(root, "obj"), testMeta(10), newFake(10), Options{Root: root})
	if err != nil {
		t.Fatalf("a new root: %v", err)
	}
	f.Close()
	if fi, err := os.Stat(root); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("new root: %v %v, want mode 0700", fi.Mode(), err)
	}
}
