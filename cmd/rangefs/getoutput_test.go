package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// --force replaces a regular file only, and every output path that cannot
// take the file is refused before a byte of the body is fetched, leaving no
// state directory or temporary file behind.
func TestGetRefusesUnsuitableOutputBeforeDownloading(t *testing.T) {
	srv, _ := patternServer(t, 2<<20, 51)
	dir := t.TempDir()

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	os.WriteFile(filepath.Join(dir, "target"), []byte("target"), 0o600)
	if err := os.Symlink("target", link); err != nil {
		t.Fatal(err)
	}
	// A /dev/null of our own: a character device 1:3 when we may create
	// one, else a symlink to the real /dev/null.
	null := filepath.Join(dir, "null")
	nullKind := "a character device"
	if err := syscall.Mknod(null, syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Logf("cannot mknod here (%v); using a symlink to /dev/null", err)
		nullKind = "a symbolic link"
		if err := os.Symlink("/dev/null", null); err != nil {
			t.Fatal(err)
		}
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o700)
	os.Mkdir(filepath.Join(sub, "file"), 0o700) // where -o sub puts the URL's file
	os.WriteFile(filepath.Join(sub, "file", "keep"), []byte("keep"), 0o600)

	for _, tc := range []struct {
		name string
		out  string
		say  string
	}{
		{"FIFO", fifo, "a named pipe"},
		{"symlink", link, "a symbolic link"},
		{"device", null, nullKind},
		{"directory inside -o dir", sub, "a directory"},
		{"missing parent", filepath.Join(dir, "missing", "out.bin"), "does not exist"},
		{"new directory", filepath.Join(dir, "newdir") + "/", "is not a directory"},
	} {
		for _, force := range []bool{true, false} {
			srv.ResetStats()
			args := []string{"get", "-q", "-o", tc.out, srv.URL()}
			if force {
				args = append(args, "--force")
			}
			r := rangefs(t, dir, args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tc.say) {
				t.Errorf("%s (force %v): exit %d, stderr %q; want exit %d saying %q", tc.name, force, r.code, r.stderr, exitUsage, tc.say)
			}
			if n := srv.Stats().BytesSent; n != 0 {
				t.Errorf("%s (force %v): the server sent %d body bytes before the refusal", tc.name, force, n)
			}
		}
	}

	if fi, err := os.Lstat(fifo); err != nil || fi.Mode().Type() != os.ModeNamedPipe {
		t.Errorf("the FIFO was replaced: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode().Type() != os.ModeSymlink {
		t.Errorf("the symlink was replaced: %v %v", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "target")); string(b) != "target" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	if fi, err := os.Lstat(null); err != nil || fi.Mode().IsRegular() {
		t.Errorf("the device was replaced by a regular file: %v %v", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(filepath.Join(sub, "file", "keep")); string(b) != "keep" {
		t.Error("the directory was touched")
	}
	for _, p := range []string{filepath.Join(dir, "missing"), filepath.Join(dir, "newdir")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was created", p)
		}
	}
	// Nothing else appeared: no state directory, no temporary file.
	for _, d := range []string{dir, sub} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".rangefs") || strings.Contains(e.Name(), "partial") {
				t.Errorf("left behind in %s: %s", d, e.Name())
			}
		}
	}
}
