package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// --uid, --gid and --umask decide what the files look like.
func TestMountOwnershipAndUmask(t *testing.T) {
	needFUSE(t)
	srv, p := patternServer(t, 1<<20+3, 97)
	mnt := t.TempDir()
	m := startMount(t, "file", "--cache-dir", t.TempDir(), "--no-prefetch", "--uid", "1234", "--gid", "5678", "--umask", "027", srv.URL(), mnt)
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mnt, "file"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1234 || st.Gid != 5678 || st.Mode&0o777 != 0o440 {
		t.Errorf("file: uid %d gid %d mode %o; want 1234 5678 440", st.Uid, st.Gid, st.Mode&0o777)
	}
	if err := syscall.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1234 || st.Gid != 5678 || st.Mode&0o777 != 0o550 {
		t.Errorf("root: uid %d gid %d mode %o; want 1234 5678 550", st.Uid, st.Gid, st.Mode&0o777)
	}
	readsExact(t, filepath.Join(mnt, "file"), p, "with --uid")
	m.cmd.Process.Signal(syscall.SIGTERM)
	if code := m.wait(t); code != 0 {
		t.Fatalf("exit %d: %s", code, m.stderr.String())
	}
	for _, bad := range []string{"999", "abc", "-1"} {
		if r := rangefs(t, t.TempDir(), "mount", "--umask", bad, srv.URL(), t.TempDir()); r.code != exitUsage {
			t.Errorf("--umask %s: exit %d", bad, r.code)
		}
	}
}

// A mount point with files in it is refused (they would be hidden), unless
// --allow-non-empty; nothing is mounted and the files stay.
func TestMountRefusesNonEmptyMountpoint(t *testing.T) {
	needFUSE(t)
	srv, _ := patternServer(t, 1<<20, 98)
	mnt := t.TempDir()
	os.WriteFile(filepath.Join(mnt, "mine.txt"), []byte("keep"), 0o600)
	r := rangefs(t, t.TempDir(), "mount", "--cache-dir", t.TempDir(), srv.URL(), mnt)
	if r.code != exitUsage || !strings.Contains(r.stderr, "not empty") || !strings.Contains(r.stderr, "--allow-non-empty") {
		t.Errorf("exit %d, stderr %q; want %d saying it is not empty and naming --allow-non-empty", r.code, r.stderr, exitUsage)
	}
	if isMounted(t, mnt) {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		t.Fatal("mounted over a non-empty directory")
	}
	m := startMount(t, "file", "--cache-dir", t.TempDir(), "--allow-non-empty", srv.URL(), mnt)
	if _, err := os.Stat(filepath.Join(mnt, "mine.txt")); !os.IsNotExist(err) {
		t.Errorf("under the mount, mine.txt: %v", err)
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.wait(t)
	if b, err := os.ReadFile(filepath.Join(mnt, "mine.txt")); err != nil || string(b) != "keep" {
		t.Errorf("after the mount, mine.txt: %q %v", b, err)
	}
}
