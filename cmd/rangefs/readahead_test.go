package main

import (
	"os"
	"strings"
	"syscall"
	"testing"

	rfs "rangefs/fs"
)

// --kernel-read-ahead sets the mount's read_ahead_kb (as root), the default
// being fs.DefaultKernelReadAhead; a size that is not whole KiB is a usage
// error.
func TestMountKernelReadAhead(t *testing.T) {
	needFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("setting a mount's read_ahead_kb needs root")
	}
	srv, p := patternServer(t, 1<<20, 5)
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{nil, "32"},
		{[]string{"--kernel-read-ahead", "1MiB"}, "1024"},
	} {
		mnt := t.TempDir()
		args := append(append([]string{"--cache-dir", t.TempDir(), "--no-prefetch"}, c.flags...), srv.URL(), mnt)
		m := startMount(t, "file", args...)
		e, ok := rfs.MountedAt(mnt)
		if !ok {
			t.Fatalf("%v: no mount at the mountpoint", c.flags)
		}
		b, err := os.ReadFile("/sys/class/bdi/" + e.Device + "/read_ahead_kb")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != c.want {
			t.Errorf("%v: read_ahead_kb %s, want %s", c.flags, got, c.want)
		}
		readsExact(t, mnt+"/file", p, "through the mount")
		m.cmd.Process.Signal(syscall.SIGTERM)
		if code := m.wait(t); code != 0 {
			t.Fatalf("exit %d: %s", code, m.stderr.String())
		}
	}
	for _, bad := range []string{"1.5KiB", "100", "128MiB", "x"} {
		if r := rangefs(t, t.TempDir(), "mount", "--kernel-read-ahead", bad, srv.URL(), t.TempDir()); r.code != exitUsage {
			t.Errorf("--kernel-read-ahead %s: exit %d, want %d", bad, r.code, exitUsage)
		}
	}
}
