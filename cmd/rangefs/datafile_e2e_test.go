package main

// End-to-end tests of the cache's files: what an open handle sees of the
// data file when it outlives the daemon that gave it out, and which cache
// directories are refused.

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"rangefs/fetch/fetchtest"
)

// checkOldHandle reads the whole of old and fails unless it holds exactly
// want, or fails with an error: never zeros, never bytes of another version.
func checkOldHandle(t *testing.T, old *os.File, want []byte, when string) {
	t.Helper()
	got := make([]byte, len(want))
	n, err := old.ReadAt(got, 0)
	if err != nil && n < len(want) {
		t.Logf("%s: the old handle fails after %d bytes (%v): allowed", when, n, err)
	}
	for off := 0; off < n; off += 1 << 20 {
		end := min(off+1<<20, n)
		if !bytes.Equal(got[off:end], want[off:end]) {
			what := "bytes of another version"
			if bytes.Count(got[off:end], []byte{0}) == end-off {
				what = "zeros"
			}
			t.Fatalf("%s: the old handle reads %s in MiB %d", when, what, off>>20)
		}
	}
}

// A passthrough handle lives on in the kernel after its daemon is gone. A
// later mount on the same cache that discards it (the remote changed, or
// another --chunk-size) must not rewrite the data file under that handle:
// the handle reads the old version, or an error, never zeros or new bytes.
func TestPassthroughHandleOutlivesDaemon(t *testing.T) {
	needFUSE(t)
	const size = 4 << 20
	tests := []struct {
		name   string
		change func(srv *fetchtest.Server) // before the remount
		args   []string                    // of the remount
	}{
		{name: "remote changed", change: func(srv *fetchtest.Server) {
			srv.SetContent(fetchtest.DefaultPath, fetchtest.Pattern(size, 32), size)
		}, args: []string{"--chunk-size", "256K"}},
		{name: "other chunk size", args: []string{"--chunk-size", "512K"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, p := patternServer(t, size, 31)
			v1 := p.Bytes(0, size)
			mnt, cdir := t.TempDir(), t.TempDir()
			m := startMount(t, "file", "--cache-dir", cdir, "--chunk-size", "256K", srv.URL(), mnt)
			path := filepath.Join(mnt, "file")
			waitCached(t, path) // the prefetch fetched and so verified every chunk
			old, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			checkOldHandle(t, old, v1, "while mounted")

			m.cmd.Process.Signal(syscall.SIGTERM)
			if code := m.wait(t); code != 0 {
				t.Fatalf("exit %d after SIGTERM: %s", code, m.stderr.String())
			}
			if _, err := old.ReadAt(make([]byte, 4096), 0); err != nil {
				t.Skipf("skipping: the open handle died with its daemon (%v): kernel passthrough is not in effect here", err)
			}
			if tc.change != nil {
				tc.change(srv)
			}
			args := append([]string{"--cache-dir", cdir, "--no-prefetch"}, tc.args...)
			m2 := startMount(t, "file", append(args, srv.URL(), mnt)...)
			if !bytes.Contains([]byte(m2.stderr.String()), []byte("discarded")) {
				t.Fatalf("the remount did not discard the cache; the test proves nothing: %s", m2.stderr.String())
			}
			checkOldHandle(t, old, v1, "after the remount discarded the cache")
			if _, err := os.ReadFile(path); err != nil {
				t.Fatal(err)
			}
			waitCached(t, path)
			checkOldHandle(t, old, v1, "after the remount refilled the cache")
			m2.cmd.Process.Signal(syscall.SIGTERM)
			m2.wait(t)
		})
	}
}

// A --cache-dir that others can write is refused before anything is
// mounted or cached, with what to do about it.
func TestMountRefusesWritableCacheDir(t *testing.T) {
	needFUSE(t)
	srv, _ := patternServer(t, 1<<20, 33)
	mnt, cdir := t.TempDir(), t.TempDir()
	if err := os.Chmod(cdir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if isMounted(t, mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	r := rangefs(t, mnt, "mount", "--cache-dir", cdir, srv.URL(), mnt)
	if r.code == exitOK || !strings.Contains(r.stderr, "chmod 700") || !strings.Contains(r.stderr, cdir) {
		t.Fatalf("mount with a 0777 --cache-dir: exit %d, stderr %q; want a refusal naming it and saying chmod 700", r.code, r.stderr)
	}
	if ents, err := os.ReadDir(cdir); err != nil || len(ents) != 0 {
		t.Fatalf("the refused cache dir holds %v (%v), want nothing", ents, err)
	}
}
